"""docs/your-data.md's data registry: images `dvc import`ed from another DVC repository instead of
copied and `dvc add`ed. The pipeline reads them the same way, and `dvc update` after a change in
the registry re-runs `prepare` (only `prepare` is run here, `dvc repro prepare`: a folder source is
its only upstream; what follows `prepare` on a change of the images is test_own_data's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from testbed.images import SHAPES, coloured_shapes, save_image
from testbed.registry import checked, make_registry, publish_images
from testbed.repo import DvcRepo, copy_of_repository, git

pytestmark = pytest.mark.slow
SIZE = 32


def registry(root: Path) -> DvcRepo:
    images, labels = coloured_shapes(20, SIZE, seed=0)
    return make_registry(root, images, labels, SHAPES)


def imported_revision(project: DvcRepo) -> str:
    (dependency,) = yaml.safe_load((project.repo / "data/images.dvc").read_text())["deps"]
    return dependency["repo"]["rev_lock"]


def test_imported_images_are_prepared_and_an_update_reruns_prepare(tmp_path: Path) -> None:
    source = registry(tmp_path / "registry")
    project = DvcRepo(
        copy_of_repository(tmp_path / "project"), MNIST_MIRROR=str(tmp_path / "no-mnist-here")
    )
    checked(project, "import", str(source.repo), "images", "-o", "data/images")
    assert imported_revision(project) == git(source.repo, "rev-parse", "HEAD").strip()
    folder = {"source": "folder", "folder": "data/images", "image_size": [SIZE, SIZE]}
    project.set_params(data={**folder, "channels": 3})
    ran, result = project.repro("prepare")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran == ["prepare"]
    contract = project.repo / "data/prepared/dataset.json"
    first = json.loads(contract.read_text())
    assert first["classes"] == list(SHAPES)
    assert sum(sum(counts.values()) for counts in first["counts"].values()) == 60

    changed = source.repo / "images/square/00025.png"
    save_image(changed, coloured_shapes(2, SIZE, seed=5)[0][1])
    publish_images(source, "images v2: one square redrawn")

    checked(project, "update", "data/images.dvc")
    assert imported_revision(project) == git(source.repo, "rev-parse", "HEAD").strip()
    assert (project.repo / "data/images/square/00025.png").read_bytes() == changed.read_bytes()
    status = checked(project, "status", "prepare")  # before anything runs
    assert re.search(r"^prepare:\n\tchanged deps:\n\t\tmodified:\s+data/images$", status, re.M)
    ran, result = project.repro("prepare")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran == ["prepare"]
    assert json.loads(contract.read_text())["checksum"] != first["checksum"]
