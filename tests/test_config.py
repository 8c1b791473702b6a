"""params.yaml validation: every problem reported at once, with its path."""

from __future__ import annotations

from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides

from classifier.errors import StageError
from classifier.params import BuildParams, feature_map_size, load_params, parse_params
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import default_params, error_line, run_module


def test_repository_params_are_valid() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.train.epochs >= 1
    assert params.package.model_name == "mnist"


def test_all_problems_reported_with_their_paths() -> None:
    raw = default_params()
    raw["train"]["epochs"] = 0
    raw["train"]["epoch"] = 3
    raw["build"]["batch_norm"] = "yes"
    raw["test"]["min_accuracy"] = 1.5
    raw["prepare"]["validation_fraction"] = 0.0
    del raw["package"]["model_name"]
    raw["extra_section"] = {}
    with pytest.raises(StageError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "train.epochs: must be ≥ 1, got 0" in message
    assert "train.epoch: unknown key" in message
    assert "build.batch_norm: input should be a valid boolean, got 'yes'" in message
    assert "test.min_accuracy: must be ≤ 1, got 1.5" in message
    assert "prepare.validation_fraction: must be > 0, got 0.0" in message
    assert "package.model_name: missing" in message
    assert "extra_section: unknown key" in message
    assert "\n" not in message


def test_strings_are_not_numbers() -> None:
    raw = default_params()
    raw["train"]["batch_size"] = "128"
    with pytest.raises(StageError, match=r"train\.batch_size: input should be a valid integer"):
        parse_params(raw)


def test_model_name_must_be_a_safe_folder_name() -> None:
    raw = default_params()
    raw["package"]["model_name"] = "../escape"
    with pytest.raises(StageError, match=r"package\.model_name: string should match pattern"):
        parse_params(raw)


@pytest.mark.parametrize("champion", ["", "champion/v1", "champion/mnist/3", 3])
def test_a_champion_is_none_a_folder_in_champion_or_a_release(champion: str | int) -> None:
    raw = default_params()
    raw["test"]["champion"] = champion
    assert parse_params(raw).test.champion == champion


@pytest.mark.parametrize(
    ("champion", "why"),
    [
        ("dist/mnist", r"test\.champion 'dist/mnist' must be a folder inside champion/"),
        ("champion/../dist", r"must be a folder inside champion/"),
        ("/abs/champion", r"must be a folder inside champion/"),
        ("champion", r"not champion/ itself"),
        (0, r"test: test\.champion 0 is no release: versions start at 1"),
    ],
)
def test_a_champion_elsewhere_is_refused_in_one_line(champion: str | int, why: str) -> None:
    raw = default_params()
    raw["test"]["champion"] = champion
    with pytest.raises(StageError, match=why) as error:
        parse_params(raw)
    assert "\n" not in str(error.value)


def test_conv_blocks_must_leave_pixels() -> None:
    """Unpadded 5x5 convs take 28 -> 24, pool 12 -> 8, pool 4 -> 0: refused before any stage."""
    raw = default_params()
    raw["build"].update(conv_filters=[8, 16, 32], kernel_size=5, padding="valid")
    with pytest.raises(StageError) as error:
        parse_params(raw)
    assert str(error.value) == (
        "invalid params.yaml: build: 3 conv blocks of kernel 5 with padding 'valid' leave no"
        " pixels of a 28x28 image (data.image_size); use fewer blocks, a smaller kernel_size or"
        " padding 'same'"
    )
    raw["build"]["conv_filters"] = [8, 16]  # 28 -> 24, pool 12 -> 8: fits
    assert parse_params(raw).build.conv_filters == [8, 16]
    raw["build"].update(conv_filters=[8, 16, 32], padding="same")
    assert parse_params(raw).build.padding == "same"


def test_not_a_mapping_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(StageError, match="must be a mapping of sections, got list"):
        parse_params([1, 2])
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(StageError, match="is not valid YAML"):
        load_params(broken)
    with pytest.raises(StageError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_stage_refuses_bad_params_and_writes_nothing(tmp_path) -> None:
    raw = default_params()
    raw["prepare"]["seed"] = -1
    raw["train"]["epochs"] = 0
    write_params(tmp_path, raw)
    result = run_module("prepare", tmp_path)
    assert result.returncode == 1
    assert error_line(result) == (
        "prepare: error: invalid params.yaml: prepare.seed: must be ≥ 0, got -1;"
        " train.epochs: must be ≥ 1, got 0"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_dvc_exp_set_param_changes_values_only(tmp_path: Path) -> None:
    """`dvc exp run -S` rewrites the whole file in its own style; ours is that style already."""
    original = (REPO_ROOT / "params.yaml").read_text()
    copy = tmp_path / "params.yaml"
    copy.write_text(original)
    epochs = default_params()["train"]["epochs"]
    apply_overrides(str(copy), [f"train.epochs={epochs}"])  # what `-S` runs, with no change
    assert copy.read_text() == original

    apply_overrides(str(copy), [f"train.epochs={epochs + 1}", "build.conv_filters=[8,12]"])
    removed = [line for line in original.splitlines() if line not in copy.read_text().splitlines()]
    added = [line for line in copy.read_text().splitlines() if line not in original.splitlines()]
    assert [line.split(":")[0] for line in removed if ":" in line] == ["  epochs"]
    assert added == ["  - 8", "  - 12", f"  epochs: {epochs + 1}"]


def test_values_written_by_dvc_are_read_as_dvc_reads_them(tmp_path: Path) -> None:
    """DVC writes 0.000001 as `1e-06`: a number in YAML 1.2 (DVC's), a string in YAML 1.1."""
    copy = tmp_path / "params.yaml"
    copy.write_text((REPO_ROOT / "params.yaml").read_text())
    apply_overrides(str(copy), ["build.learning_rate=0.000001"])
    assert "  learning_rate: 1e-06\n" in copy.read_text()
    assert load_params(copy).build.learning_rate == 1e-06


@pytest.mark.parametrize(
    "change", [{"image_size": [32, 32]}, {"channels": 3}, {"source": "data/images"}]
)
def test_the_source_is_mnist_or_folder_and_mnist_only_28x28_grayscale(change: dict) -> None:
    raw = default_params()
    raw["data"].update(change)
    with pytest.raises(StageError) as error:
        parse_params(raw)
    if "source" in change:
        assert "data.source: input should be 'mnist' or 'folder'" in str(error.value)
    else:
        assert str(error.value) == (
            "invalid params.yaml: data: MNIST images are 28x28 grayscale: set data.image_size"
            " [28, 28] and data.channels 1"
        )


def test_feature_map_size_follows_the_image_side() -> None:
    """The check applies to each side of data.image_size: 28 leaves nothing, 64 leaves pixels."""
    raw = default_params()["build"]
    raw.update(conv_filters=[8, 16, 32], kernel_size=5, padding="valid")
    build = BuildParams(**raw)
    assert feature_map_size(build, 28) == 0 and feature_map_size(build, 64) == 9


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"folder": "data/images"},
            "data.folder must be data/raw for data.source mnist (where fetch puts the MNIST"
            " files); for your own images set data.source: folder",
        ),
        (
            {"source": "folder"},
            "data.folder data/raw is the fetch stage's output; put your images in another"
            " folder, e.g. data/images",
        ),
        (
            {"source": "folder", "folder": "data/prepared/mine"},
            "data.folder data/prepared/mine overlaps data/prepared, which the pipeline writes;"
            " put your images in another folder, e.g. data/images",
        ),
        (
            {"source": "folder", "folder": "data"},
            "data.folder data overlaps data/prepared, which the pipeline writes; put your"
            " images in another folder, e.g. data/images",
        ),
        (
            {"source": "folder", "folder": "../elsewhere"},
            "data.folder '../elsewhere' must be inside the repository",
        ),
    ],
    ids=["mnist-elsewhere", "folder-in-raw", "inside-an-output", "holding-an-output", "outside"],
)
def test_data_folder_must_fit_its_source(data: dict, message: str) -> None:
    raw = default_params()
    raw["data"].update(data)
    with pytest.raises(StageError) as error:
        parse_params(raw)
    assert str(error.value) == f"invalid params.yaml: data: {message}"


def test_an_absolute_data_folder_is_refused() -> None:
    raw = default_params()
    raw["data"].update(source="folder", folder="/home/me/images")
    with pytest.raises(StageError, match=r"data\.folder: string should match pattern"):
        parse_params(raw)
    assert parse_params({**raw, "data": {**raw["data"], "folder": "data/images"}})
