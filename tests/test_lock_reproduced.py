"""The committed `dvc.lock` is what a fresh clone's `dvc repro` produces, hash for hash.

This is the pipeline's promise to anyone who clones it: same data, code and params give the same
bytes, the trained model and the SavedModel included, so `dvc.lock` never changes without a cause
and a clone can check out (or pull) exactly the outputs the lock names. It also catches a
`dvc.lock` left stale by a code or params change that was committed without re-running the
pipeline. Default params, real MNIST: the most expensive run in the suite.

It runs once, pinned to one core: the committed lock is made on all cores of a machine that has
several (docs/reproducibility.md), so one core is always another core count, and on any machine
but that one another CPU too. One core is the case that differs most: the recipe's two-thread
pools then share a core, while on two cores or sixteen each thread has its own.
(``tests/test_determinism.py`` checks one core against two on a small model.)

The promise is made for CPU training on x86-64 (docs/reproducibility.md): the CPU recipe
(``classifier.CPU_RECIPE``) fixes the thread pools and caps oneDNN at AVX, which every CPU that
TensorFlow's x86-64 wheels run on has, so neither the CPU nor its core count changes a byte. The
clone runs with the recipe whatever this shell sets, and with GPUs hidden: a GPU trains its own
bytes. On another architecture the test says so instead of listing every hash.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import pytest
import yaml

from classifier import CPU_RECIPE
from testbed.repo import ALL_STAGES, DvcRepo, copy_of_repository
from testbed.weights_probe import outside_the_promise

pytestmark = pytest.mark.slow


def differences(expected: dict, actual: dict, where: str = "") -> list[str]:
    """Every leaf where two parsed lock files disagree, as ``path: expected != actual``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(expected.keys() | actual.keys(), key=str):
            found += differences(expected.get(key), actual.get(key), f"{where}/{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        keyed = all(isinstance(item, dict) and "path" in item for item in expected + actual)
        pairs = (
            ((item["path"], item) for item in expected) if keyed else enumerate(expected),
            ((item["path"], item) for item in actual) if keyed else enumerate(actual),
        )
        return differences(dict(pairs[0]), dict(pairs[1]), where)
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


def test_differences_name_each_changed_hash() -> None:
    """The comparison itself can fail, and says where."""
    lock = {"stages": {"train": {"outs": [{"path": "models/model.keras", "md5": "a"}]}}}
    changed = {"stages": {"train": {"outs": [{"path": "models/model.keras", "md5": "b"}]}}}
    assert differences(lock, lock) == []
    assert differences(lock, changed) == ["/stages/train/outs/models/model.keras/md5: 'a' != 'b'"]


def test_only_x86_64_is_inside_the_promise() -> None:
    assert outside_the_promise("x86_64") is None
    assert outside_the_promise("AMD64") is None
    assert "aarch64 machine" in outside_the_promise("aarch64")


def test_a_fresh_clone_on_one_core_reproduces_the_committed_lock(
    tmp_path: Path, shared_mnist: Path
) -> None:
    reason = outside_the_promise(platform.machine())
    if reason:
        pytest.skip(reason)
    if not shutil.which("taskset"):
        pytest.skip("taskset (util-linux) is not installed: cannot pin the run to one core")
    clone = DvcRepo(
        copy_of_repository(tmp_path),
        MNIST_MIRROR=str(shared_mnist),
        CUDA_VISIBLE_DEVICES="",
        **CPU_RECIPE,
    )
    committed = yaml.safe_load((clone.repo / "dvc.lock").read_text())
    # taskset: Linux, where this process's CPUs are known (not always 0)
    launcher = ("taskset", "--cpu-list", str(min(os.sched_getaffinity(0))))
    ran, result = clone.repro(launcher=launcher)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == ALL_STAGES
    found = differences(committed, yaml.safe_load((clone.repo / "dvc.lock").read_text()))
    assert not found, (
        "a fresh clone's `dvc repro` does not reproduce the committed dvc.lock (run `dvc repro`"
        " and commit dvc.lock, or find what made an output differ):\n" + "\n".join(found)
    )
    assert clone.dvc("status").stdout.strip() == "Data and pipelines are up to date."
