"""The README's "Use your own data", run as written in a fresh copy of the repository, on an RGB
dataset of three classes drawn here: the pipeline trains, gates and packages a classifier of
``[N, 64, 64, 3]`` images that names its classes, with no MNIST anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.images import SHAPES, coloured_shapes, save_image, write_class_folders
from testbed.repo import DvcRepo, copy_of_repository
from testbed.suite import readme_commands, saved_model_cli_run

PER_CLASS = 120
SIZE = 64
EXPORT = "dist/my-model"


@pytest.fixture(scope="module")
def own_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[DvcRepo, list[str]]:
    """The repository after the README's commands, with the images in ``data/images``."""
    repo = copy_of_repository(tmp_path_factory.mktemp("own-data"))
    # no MNIST source at all: a folder source must not need one
    project = DvcRepo(repo, MNIST_MIRROR=str(repo / "no-mnist-here"), MNIST_PUBLIC_MIRRORS="")
    images, labels = coloured_shapes(PER_CLASS, SIZE, seed=0)
    write_class_folders(repo / "data/images", images, labels, SHAPES)
    commands = readme_commands("Use your own data")
    assert commands[0].startswith("cp -r ~/my-images data/images")  # what the test did above
    outputs = []
    for command in commands[1:]:
        command = command.replace("<class>/<image>", "circle/00001.png")
        result = project.run("bash", "-c", command)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    return project, outputs


def test_the_readme_commands_train_gate_and_package_a_classifier_of_the_folder(
    own_data: tuple[DvcRepo, list[str]],
) -> None:
    project, outputs = own_data
    repo = project.repo
    assert "fetch: data.source is folder (data/images): nothing to fetch" in outputs[1]
    assert "prepare: folder: train 258, validation 30, test 72" in outputs[1]
    assert not any((repo / "data/raw").glob("*-ubyte"))
    dataset = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert dataset["classes"] == list(SHAPES)
    assert (dataset["height"], dataset["width"], dataset["channels"]) == (SIZE, SIZE, 3)
    metrics = json.loads((repo / "metrics/test.json").read_text())
    assert metrics["gate"] == "passed" and metrics["accuracy"] >= 0.99  # the default gate
    report = json.loads((repo / "reports/test.json").read_text())
    assert set(report["per_class"]) == set(SHAPES)
    card = json.loads((repo / EXPORT / "assets.extra/model_card.json").read_text())
    assert card["dataset"]["checksum"] == dataset["checksum"]
    assert card["signature"]["inputs"]["images"].startswith(f"uint8 [N, {SIZE}, {SIZE}, 3]")
    assert outputs[2].startswith("data/images/circle/00001.png: circle (")


def test_the_package_takes_rgb_images_and_names_the_classes_in_tf_servings_loader(
    own_data: tuple[DvcRepo, list[str]], tmp_path: Path
) -> None:
    project, _ = own_data
    cli = project.run(
        "saved_model_cli", "show", "--dir", EXPORT, "--tag_set", "serve",
        "--signature_def", "serving_default",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"shape: (-1, {SIZE}, {SIZE}, 3)" in cli.stdout and "dtype: DT_STRING" in cli.stdout
    images, labels = coloured_shapes(20, SIZE, seed=99)  # new pictures, never seen
    outputs = saved_model_cli_run(project.repo / EXPORT, images, tmp_path / "served")
    assert outputs["probabilities"].shape == (60, 3)
    assert outputs["class_name"] == [SHAPES[i] for i in outputs["class_index"]]
    assert np.mean(outputs["class_index"] == labels) >= 0.95


def test_a_changed_image_reruns_prepare_and_what_follows_it_only(
    own_data: tuple[DvcRepo, list[str]],
) -> None:
    project, _ = own_data
    assert project.repro()[0] == []  # nothing changed yet
    contract = project.repo / "data/prepared/dataset.json"
    before = json.loads(contract.read_text())["checksum"]
    changed = project.repo / "data/images/square/00130.png"
    save_image(changed, coloured_shapes(2, SIZE, seed=5)[0][1])
    result = project.run("bash", "-c", "dvc add data/images")
    assert result.returncode == 0, result.stderr
    ran, result = project.repro()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran == ["prepare", "build", "train", "test", "package"]  # not fetch
    assert json.loads(contract.read_text())["checksum"] != before
