"""The benchmark scripts, run in smoke mode: they work and report what they promise.

They are run as a user runs them (``python -m benchmarks.<name>``), never imported: benchmarks
and tests share only ``testbed``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.repo import REPO_ROOT

pytestmark = pytest.mark.benchmark


def test_time_to_accuracy_smoke_run_writes_both_reports(tmp_path: Path, shared_mnist: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.time_to_accuracy", "--mirror", str(shared_mnist),
         "--out-dir", str(tmp_path), "--max-epochs", "1", "--train-subset", "600",
         "--test-subset", "500"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "TIME_TO_ACCURACY.json").read_text())
    assert report["test_images"] == 500
    assert report["environment"]["cpu_recipe"]["ONEDNN_MAX_CPU_ISA"] == "AVX"  # the pipeline's
    for name, images in (("reference", 540), ("project", 600)):  # the example holds out 10%
        run = report[name]
        assert run["train_images"] == images
        assert len(run["epochs"]) == 1
        epoch = run["epochs"][0]
        assert epoch["seconds"] > 0 and epoch["images_per_s"] > 0
        assert 0.1 < run["final_accuracy"] == epoch["test_accuracy"] <= 1  # learned something
        # 600 images for one epoch cannot reach 99%; the time is then absent, not made up
        assert run["time_to_99_s"] is None and run["epochs_to_99"] is None
    assert report["ratio"] is None
    markdown = (tmp_path / "TIME_TO_ACCURACY.md").read_text()
    assert "| reference | Keras mnist_convnet example | not reached |" in markdown
    assert "**Ratio (project / reference): —**" in markdown


def test_gateway_load_test_short_run(tmp_path: Path) -> None:
    """The load test, bounded: 40 requests per path saturated, 20 at a fixed rate and 20 in front
    of the instant server, 4 connections; none lost, none changed, and with the capture's disk
    budget used up every request still answered and each drop counted."""
    report = tmp_path / "GATEWAY.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--requests", "40", "--concurrency", "4",
         "--out", str(report)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    for path in ("direct", "gateway"):
        assert f"\n| saturated | {path} | 40 | 0 | " in text  # all answered, none lost
        assert re.search(rf"\n\| \d+/s \| {path} \| 20 \| 0 \| ", text)
        assert f"\n| instant server, saturated | {path} | 20 | 0 | " in text
    assert "differ from the server's own for the same request:\n**0** of 80" in text
    assert "10 of 10 requests answered, 10 answers the\nserver's own, 10 captures dropped" in text
    captured = float(text.split("Captured: ")[1].split()[0])
    assert captured > 500  # 784 random pixels and the predictions, gzip JSON
