"""Faults of the machine, injected for real: each stage runs on a small file system (a tmpfs where
the test may mount one, ``testbed/faults.py``) that fills up or is read-only under it. Each must
end in one line naming the step, the output and the cause, exit 1, and leave every file as it was
with no scratch copy behind; a fault's traceback instead fails these tests."""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from classifier.errors import run_stage
from classifier.faults import TENSORFLOW_ERRORS, fault_line, writing
from classifier.files import save_arrays
from testbed.faults import SmallDisk, small_disk, snapshot
from testbed.repo import REPO_ROOT, DvcRepo, write_params
from testbed.suite import (
    SHARED_MNIST,
    error_line,
    fast_params,
    run_module,
    small_project,
    write_raw_dir,
)


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
    synthetic_raw(workspace(disk))
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


def test_package_on_a_full_disk(disk: SmallDisk, trained_workspace: Path) -> None:
    """With 8 kB left TensorFlow's own writer meets the full disk (its error is not an
    OSError)."""
    workspace(disk, trained_workspace, "data/prepared", "models")
    tested = disk.run("stages.test", cwd=disk.root)  # what package reads: the gate's verdict
    assert tested.returncode == 0, tested.stderr[-3000:]
    line = run_failing(disk, "stages.package", 8 << 10)
    expect(line, "package", "dist/mnist", disk)


def test_arrays_on_a_full_disk_raise_the_full_disk(disk: SmallDisk) -> None:
    """numpy's own writer says "235200 requested and 135040 written", no errno; the package's
    sample goes through Python's, which says ENOSPC."""
    if not disk.mounted:
        pytest.skip("needs a tmpfs: this runs in the test's own process")
    disk.fill(64 << 10)
    with pytest.raises(OSError) as raised:
        save_arrays(disk.root / "sample", {"images": np.zeros((300, 28, 28, 1), np.uint8)})
    assert raised.value.errno == errno.ENOSPC


def test_a_stage_on_a_read_only_disk(disk: SmallDisk, trained_workspace: Path) -> None:
    workspace(disk, trained_workspace, "data/prepared", "models")
    disk.read_only()
    before = snapshot(disk.root)
    result = disk.run("stages.test", cwd=disk.root)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = error_line(result)
    assert line.startswith(f"test: error: cannot write metrics/test.json: {disk.read_only_cause}; ")
    assert snapshot(disk.root) == before


def synthetic_raw(root: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3500, 28, 28), dtype=np.uint8)
    labels = np.arange(3500, dtype=np.uint8) % 10
    train, test = (images[:3000], labels[:3000]), (images[3000:], labels[3000:])
    return write_raw_dir(root / "data/raw", train, test)


def test_a_stage_killed_mid_write_and_run_again_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """``prepare`` killed (SIGKILL: no clean-up of its own) once its scratch copy exists and a
    random moment more: the next run removes what the killed one left and writes the same bytes
    (``build``, ``test`` and ``package`` write through the same ``atomic_path``; ``train``'s
    resume has its own test)."""
    step, output = "prepare", "data/prepared"
    runs = {}
    for name in ("uninterrupted", "killed"):
        root = tmp_path / name
        root.mkdir()
        write_params(root, fast_params())
        synthetic_raw(root)
        runs[name] = root
    assert run_module(step, runs["uninterrupted"]).returncode == 0

    target = runs["killed"] / output
    child = subprocess.Popen(
        [sys.executable, "-m", f"stages.{step}"], cwd=runs["killed"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(target.parent.glob(f".{target.name}.*.tmp")) and child.poll() is None:
            assert time.monotonic() < deadline, "the stage never began writing"
            time.sleep(0.005)
        time.sleep(random.Random(step).uniform(0, 0.05))  # a random moment, the same each run
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    again = run_module(step, runs["killed"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(runs["killed"]) == snapshot(runs["uninterrupted"])


def test_dvc_repro_with_room_for_fetch_but_not_for_prepare(tmp_path: Path) -> None:
    """The issue's own case, as a user meets it: ``dvc repro`` in a fresh copy on a small disk.
    ``prepare``'s one line reaches the terminal, and neither the workspace nor DVC's cache holds
    any of it afterwards (DVC's own logs in ``.dvc/tmp`` aside)."""
    with small_disk(tmp_path / "disk", size_mb=160) as disk:
        if not disk.mounted:
            pytest.skip("needs a tmpfs: DVC's own writes do not go through a file size limit")
        repo = small_project(disk.root)
        dvc = DvcRepo(repo, MNIST_MIRROR=str(SHARED_MNIST))
        ran, fetched = dvc.repro("fetch")
        assert ran == ["fetch"], fetched.stdout + fetched.stderr
        disk.fill(1 << 20)
        before = snapshot(repo)
        ran, result = dvc.repro("prepare")
        after = snapshot(repo)
    assert ran == ["prepare"] and result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("prepare: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("prepare: error: cannot write data/prepared: no space left on")
    assert "; the step writes about 52.4 MB (dvc.lock's sizes)" in lines[0]
    assert without_dvc_logs(after) == without_dvc_logs(before)


def without_dvc_logs(files: dict[str, str]) -> dict[str, str]:
    return {name: md5 for name, md5 in files.items() if not name.startswith(".dvc/tmp/")}


def test_each_fault_is_said_in_words_and_a_bug_is_not_a_fault(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".x.tmp/x"))
    with pytest.raises(OSError) as raised, writing(tmp_path / "x"):
        raise full
    assert fault_line(raised.value, "step", cwd=tmp_path).startswith(
        "cannot write x: no space left on device; "
    )
    many = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert f"raise the limit of open files (ulimit -n, now {soft})" in fault_line(many, "step")
    broken = OSError(errno.EIO, os.strerror(errno.EIO), "/dev/sdz")
    assert fault_line(broken, "step").startswith("/dev/sdz: input/output error; ")
    tensorflow_error = type(
        "ResourceExhaustedError", (Exception,), {"__module__": TENSORFLOW_ERRORS}
    )
    saving = tensorflow_error("{{node SaveV2}} /m/variables/x.index.tmp; No space left on device")
    assert fault_line(saving, "step").startswith(
        "/m/variables/x.index.tmp: no space left on device"
    )
    assert fault_line(FileNotFoundError(errno.ENOENT, "No such file", "x"), "step") is None
    assert fault_line(ValueError("a bug"), "step") is None


def test_a_bug_keeps_its_traceback() -> None:
    def buggy() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_stage("step", buggy)
