"""benchmarks/gpu_check.py: refuses a machine without a GPU; its logic dry-run on a CPU.

Run as a user runs it (``python -m benchmarks.gpu_check``), never imported: tests and benchmarks
are peers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classifier import runtime
from testbed.repo import REPO_ROOT
from testbed.suite import default_params


def test_without_a_gpu_it_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"],
        cwd=REPO_ROOT,
        env={**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": "-1"},  # hide any GPU
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "gpu_check: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty);"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_dry_run_on_a_cpu(tmp_path: Path, shared_mnist: Path) -> None:
    """The whole check, small: real MNIST from the mirror, the pipeline's split, two runs in
    two processes (build and train, as DVC runs them) that must end with the same weights."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--allow-cpu", "--epochs", "1",
         "--subset", "1000"],
        cwd=REPO_ROOT,
        env={**os.environ, "OUT": str(tmp_path / "out"), "MNIST_MIRROR": str(shared_mnist)},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert (report["epochs"], report["train_examples"], len(report["runs"])) == (1, 1000, 2)
    for run in report["runs"]:
        (epoch,) = run["epochs"]
        assert epoch["epoch"] == 1 and epoch["train_s"] > 0
        assert epoch["images_per_s"] == pytest.approx(1000 / epoch["train_s"], rel=1e-3)
        assert 0.5 < epoch["test_accuracy"] < 0.99  # learned, on 1000 test images; not 99% yet
        assert run["time_to_99_s"] is None
        assert run["final_accuracy"] == epoch["test_accuracy"]
    gpus = runtime.gpu_names()
    environment = report["runs"][0]["environment"]
    assert environment["device"] == (f"{len(gpus)} x GPU" if gpus else "CPU")
    batch = default_params()["train"]["batch_size"]
    assert environment["global_batch_size"] == batch * environment["replicas"]
    assert report["identical_weights"] is True
    assert (
        report["runs"][0]["epochs"][0]["test_accuracy"]
        == (report["runs"][1]["epochs"][0]["test_accuracy"])
    )
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "gpu_check.json",
        "gpu_check.md",
        "run1.log",
        "run2.log",
    ]
    steps = math.ceil(1000 / batch)  # 1000 images
    assert f"{steps}/{steps} - " in (tmp_path / "out/run2.log").read_text()
    markdown = (tmp_path / "out/gpu_check.md").read_text()
    assert "- identical weights after two runs: True" in markdown
    assert "- time to 99.0% test accuracy (training seconds): run 1: not reached" in markdown
    assert markdown in result.stdout
