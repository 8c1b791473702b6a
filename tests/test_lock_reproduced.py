"""The committed `dvc.lock` is what a fresh clone's `dvc repro` produces, hash for hash.

This is the pipeline's promise to anyone who clones it: same data, code and params give the same
bytes, the trained model and the SavedModel included, so `dvc.lock` never changes without a cause
and a clone can check out (or pull) exactly the outputs the lock names. It also catches a
`dvc.lock` left stale by a code or params change that was committed without re-running the
pipeline. Default params, real MNIST: the most expensive run in the suite (~1 minute here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.repo import ALL_STAGES, DvcRepo, copy_of_repository

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


def test_fresh_clone_reproduces_the_committed_lock(tmp_path: Path, shared_mnist: Path) -> None:
    clone = DvcRepo(copy_of_repository(tmp_path), MNIST_MIRROR=str(shared_mnist))
    committed = yaml.safe_load((clone.repo / "dvc.lock").read_text())
    ran, result = clone.repro()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == ALL_STAGES
    found = differences(committed, yaml.safe_load((clone.repo / "dvc.lock").read_text()))
    assert not found, (
        "a fresh clone's `dvc repro` does not reproduce the committed dvc.lock (run `dvc repro`"
        " and commit dvc.lock, or find what made an output differ):\n" + "\n".join(found)
    )
    assert clone.dvc("status").stdout.strip() == "Data and pipelines are up to date."
