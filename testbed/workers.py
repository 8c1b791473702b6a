"""``python -m stages.train`` as the workers of a cluster on 127.0.0.1: each in a workspace of its
own (as on its own machine, the prepared data pulled there), ``TF_CONFIG`` naming free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from testbed.repo import REPO_ROOT


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


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


def start_worker(
    workspace: Path, ports: list[int], index: int, env: dict | None = None
) -> subprocess.Popen:
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CONFIG": tf_config(ports, index),
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=workspace,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
