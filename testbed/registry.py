"""A data registry as a team keeps one: a git + DVC repository holding ``images/<class>/…``,
pushed to its own (local) DVC remote, from which projects ``dvc import`` their data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.images import write_class_folders
from testbed.repo import DvcRepo, commit_all, git


def checked(repo: DvcRepo, *args: str) -> str:
    """``dvc <args>`` in ``repo``, which must succeed; its output."""
    result = repo.dvc(*args)
    assert result.returncode == 0, f"dvc {' '.join(args)}\n{result.stdout}{result.stderr}"
    return result.stdout


def make_registry(
    root: Path, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
) -> DvcRepo:
    """The registry at ``root`` (its remote beside it, ``<root>-store``), holding the images."""
    repo = DvcRepo(root)
    root.mkdir()
    git(root, "init", "-q")
    checked(repo, "init", "-q")
    checked(repo, "remote", "add", "-d", "store", str(root.parent / f"{root.name}-store"))
    write_class_folders(root / "images", images, labels, classes)
    publish_images(repo, "images v1")
    return repo


def publish_images(repo: DvcRepo, message: str) -> str:
    """Track ``images/`` as it is now, commit and push it: the registry's new revision."""
    checked(repo, "add", "images")
    commit_all(repo.repo, message)
    checked(repo, "push")
    return git(repo.repo, "rev-parse", "HEAD").strip()
