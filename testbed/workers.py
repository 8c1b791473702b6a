"""``python -m stages.train`` as the workers of a cluster on 127.0.0.1: each in a workspace of its
own (as on its own machine, the prepared data pulled there), ``TF_CONFIG`` naming free ports
(``testbed.loopback.free_ports``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from testbed.repo import REPO_ROOT


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def worker_workspace(source: Path, target: Path) -> Path:
    """What a worker's machine holds before ``train``: params, prepared data, untrained model."""
    shutil.copytree(source / "data/prepared", target / "data/prepared")
    (target / "models").mkdir(parents=True)
    shutil.copy(source / "models/untrained.keras", target / "models/untrained.keras")
    shutil.copy(source / "params.yaml", target / "params.yaml")
    return target


class WorkerProcesses:
    """Workers started in a ``with`` block; any still running at its end (a test that failed
    half-way, a worker waiting for a peer) is killed then."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.communicate()

    def start(
        self, workspace: Path, ports: list[int], index: int, env: dict | None = None
    ) -> subprocess.Popen:
        """``python -m stages.train`` in ``workspace`` as worker ``index`` of ``ports``."""
        environment = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CONFIG": tf_config(ports, index),
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "stages.train"],
            cwd=workspace,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process
