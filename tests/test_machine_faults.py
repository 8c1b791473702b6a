"""Faults of the machine, injected for real: each stage runs on a small file system (a tmpfs where
the test may mount one, ``testbed/faults.py``) that fills up or is read-only under it. Each must
end in one line naming the step, the output and the cause, exit 1, and leave every file as it was
with no scratch copy behind; a fault's traceback instead fails these tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from testbed.faults import SmallDisk, small_disk, snapshot
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import SHARED_MNIST, error_line, fast_params, write_raw_dir


@pytest.fixture
def disk(tmp_path: Path):
    with small_disk(tmp_path / "disk", size_mb=64) as mounted:
        yield mounted


def workspace(disk: SmallDisk, source: Path | None = None, *folders: str) -> Path:
    """The stage's folder on the small disk: fast params, the repository's dvc.lock (the room a
    step needs is read from it), and ``folders`` copied from ``source``."""
    root = disk.root
    write_params(root, fast_params())
    shutil.copy(REPO_ROOT / "dvc.lock", root / "dvc.lock")
    for folder in folders:
        shutil.copytree(source / folder, root / folder)
    return root


def run_failing(disk: SmallDisk, module: str, leave_bytes: int, env: dict | None = None) -> str:
    """Run ``module`` with ``leave_bytes`` of room; its one error line, after checking that it
    failed with status 1 and left every file as it was, no scratch folder included."""
    disk.fill(leave_bytes)
    before = snapshot(disk.root)
    result = disk.run(module, cwd=disk.root, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert snapshot(disk.root) == before
    assert not [path for path in disk.root.rglob("*") if path.name.endswith(".tmp")]
    return error_line(result)


def expect(line: str, step: str, output: str, disk: SmallDisk) -> None:
    prefix = f"{step}: error: cannot write {output}: {disk.cause}; "
    assert line.startswith(prefix), line
    if disk.mounted:  # the room free and the room needed, measured
        assert re.search(r"; \d+\.\d MB free on the file system of ", line), line
        assert "free some room there (or work on a larger disk) and run it again" in line


def test_fetch_on_a_full_disk(disk: SmallDisk) -> None:
    workspace(disk)
    line = run_failing(disk, "stages.fetch", 5 << 20, env={"MNIST_MIRROR": str(SHARED_MNIST)})
    expect(line, "fetch", "data/raw", disk)
    if disk.mounted:
        assert "; the step writes about 52.4 MB (dvc.lock's sizes)" in line


def test_prepare_on_a_full_disk(disk: SmallDisk) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    labels = np.arange(3000, dtype=np.uint8) % 10
    write_raw_dir(workspace(disk) / "data/raw", (images, labels), (images[:500], labels[:500]))
    line = run_failing(disk, "stages.prepare", 256 << 10)
    expect(line, "prepare", "data/prepared", disk)


@pytest.mark.parametrize(
    ("step", "inputs", "leave_kb", "output"),
    [
        ("build", ("data/prepared",), 16, "models/untrained.keras"),
        ("train", ("data/prepared", "models"), 16, ".train-state/checkpoint.keras"),
        ("test", ("data/prepared", "models"), 0, "metrics/test.json"),
    ],
)
def test_a_stage_on_a_full_disk(
    disk: SmallDisk, trained_workspace: Path, step: str, inputs: tuple, leave_kb: int, output: str
) -> None:
    workspace(disk, trained_workspace, *inputs)
    line = run_failing(disk, f"stages.{step}", leave_kb << 10)
    expect(line, step, output, disk)


@pytest.mark.parametrize("leave_kb", [8, 256], ids=["in-the-savedmodel", "in-the-sample"])
def test_package_on_a_full_disk(disk: SmallDisk, trained_workspace: Path, leave_kb: int) -> None:
    """With 8 kB left TensorFlow's own writer meets the full disk (its error is not an OSError),
    with 256 kB the package's sample of test images."""
    workspace(disk, trained_workspace, "data/prepared", "models")
    tested = disk.run("stages.test", cwd=disk.root)  # what package reads: the gate's verdict
    assert tested.returncode == 0, tested.stderr[-3000:]
    line = run_failing(disk, "stages.package", leave_kb << 10)
    expect(line, "package", "dist/mnist", disk)


def test_a_stage_on_a_read_only_disk(disk: SmallDisk, trained_workspace: Path) -> None:
    workspace(disk, trained_workspace, "data/prepared", "models")
    disk.read_only()
    before = snapshot(disk.root)
    result = disk.run("stages.test", cwd=disk.root)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = error_line(result)
    assert line.startswith(f"test: error: cannot write metrics/test.json: {disk.read_only_cause}; ")
    assert snapshot(disk.root) == before
