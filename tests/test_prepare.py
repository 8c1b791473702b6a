"""The prepare stage: IDX parsing, validation (hard errors and soft findings), the split."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.cli import StageError
from stages.config import DataParams, PrepareParams
from stages.datasets import describe
from stages.idx import read_idx
from stages.prepare import prepare, stratified_split
from stages.validate import Split, validate
from testbed.repo import REPO_ROOT, write_params
from tests.helpers import (
    default_params,
    error_line,
    idx_bytes,
    run_module,
    synthetic_digits,
    write_raw_dir,
)

TRAIN_COUNT, TEST_COUNT = 200, 50


def _params(**changes) -> PrepareParams:
    values = default_params()["prepare"]
    values.update(expected_train_count=TRAIN_COUNT, expected_test_count=TEST_COUNT, **changes)
    return PrepareParams(**values)


def _splits() -> tuple[Split, Split]:
    train_x, train_y = synthetic_digits(TRAIN_COUNT, seed=1)
    test_x, test_y = synthetic_digits(TEST_COUNT, seed=2)
    return Split("train", train_x[..., None], train_y), Split("test", test_x[..., None], test_y)


def _data() -> DataParams:
    return DataParams(**default_params()["data"])


def _validate(train: Split, test: Split, params: PrepareParams) -> dict:
    return validate(train, test, params, (28, 28, 1), 10)


# --- IDX -------------------------------------------------------------------------------------


def test_read_idx_round_trip(tmp_path: Path) -> None:
    images, _ = synthetic_digits(3, seed=0)
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(read_idx(path, 3), images)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5],
            "truncated: header says shape (2, 28, 28)",
        ),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"x", "has trailing bytes"),
        (b"\x00\x00\x08", "truncated IDX file (3 bytes, shorter than its header)"),
        (
            idx_bytes(np.zeros((2, 28, 28), np.uint8), magic=b"\x00\x00\x08\x01"),
            "wrong IDX magic 00000801, expected 00000803",
        ),
        (
            idx_bytes(np.zeros((2, 28, 28), np.uint8), magic=b"\x1f\x8b\x08\x03"),
            "wrong IDX magic 1f8b0803",
        ),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "images"
    path.write_bytes(content)
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_idx(path, 3)


# --- validation ------------------------------------------------------------------------------


def test_report_of_clean_data() -> None:
    train, test = _splits()
    report = _validate(train, test, _params())
    assert report["train"]["count"] == TRAIN_COUNT
    assert report["train"]["class_counts"] == [20] * 10
    assert report["train"]["class_imbalance"] == 1.0
    assert report["test"]["class_counts"] == [5] * 10
    assert report["train_test_duplicates"] == 0
    assert report["train"]["duplicate_images"] == 0
    assert report["train"]["pixel_mean"] == pytest.approx(train.images.mean(), abs=1e-3)


def test_soft_findings_are_reported_not_fatal() -> None:
    train, test = _splits()
    train.images[7] = train.images[3]  # a duplicate within train
    test.images[4] = train.images[10]  # a leaked test image, tolerated by the params below
    report = _validate(train, test, _params(max_train_test_duplicates=1))
    assert report["train"]["duplicate_images"] == 1
    assert report["train_test_duplicates"] == 1


def test_hard_errors_are_all_named() -> None:
    train, test = _splits()
    train.labels[17] = 10
    train.images[5] = 0
    test_short = Split("test", test.images[:-1], test.labels[:-1])
    with pytest.raises(StageError) as error:
        _validate(train, test_short, _params())
    message = str(error.value)
    assert "train has 1 labels outside 0-9 (first at index 17: 10)" in message
    assert "train has 1 empty (all-zero) images, at indices [5]" in message
    assert "test has 49 examples, expected 50 (prepare.expected_test_count)" in message


def test_leakage_and_imbalance_are_errors_beyond_their_limits() -> None:
    train, test = _splits()
    test.images[4] = train.images[10]
    train.labels[train.labels == 9] = 8  # class 9 vanishes
    with pytest.raises(StageError) as error:
        _validate(train, test, _params())
    message = str(error.value)
    assert "train class imbalance inf" in message
    assert "1 test images also appear in train (leakage), e.g. test indices [4]" in message


# --- split -----------------------------------------------------------------------------------


def test_stratified_split_is_seeded_disjoint_and_proportional() -> None:
    labels = np.repeat(
        np.arange(10, dtype=np.uint8), [100, 120, 80, 100, 100, 90, 110, 100, 100, 100]
    )
    train, validation = stratified_split(labels, 0.1, seed=7)
    assert len(set(train) & set(validation)) == 0
    assert len(train) + len(validation) == len(labels)
    assert np.bincount(labels[validation]).tolist() == [10, 12, 8, 10, 10, 9, 11, 10, 10, 10]
    again_train, again_validation = stratified_split(labels, 0.1, seed=7)
    np.testing.assert_array_equal(validation, again_validation)
    np.testing.assert_array_equal(train, again_train)
    _, other = stratified_split(labels, 0.1, seed=8)
    assert not np.array_equal(validation, other)


def test_prepare_writes_arrays_and_report(tmp_path: Path) -> None:
    train, test = _splits()
    raw = write_raw_dir(tmp_path / "raw", (train.images, train.labels), (test.images, test.labels))
    report = prepare(raw, tmp_path / "prepared", tmp_path / "report.json", _params(), _data())
    assert report["split"] == {"train": 180, "validation": 20, "seed": 42}
    fit_labels = np.load(tmp_path / "prepared/train/labels.npy")
    val_images = np.load(tmp_path / "prepared/validation/images.npy")
    test_images = np.load(tmp_path / "prepared/test/images.npy")
    assert fit_labels.dtype == np.uint8 and len(fit_labels) == 180
    assert val_images.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(test_images, test.images)
    dataset = json.loads((tmp_path / "prepared/dataset.json").read_text())
    assert dataset["source"] == "mnist" and dataset["classes"] == [str(d) for d in range(10)]
    assert (dataset["height"], dataset["width"], dataset["channels"]) == (28, 28, 1)
    assert dataset["counts"]["train"] == {str(d): 18 for d in range(10)}  # 20 a class, 10% held
    assert dataset["counts"]["test"] == {str(d): 5 for d in range(10)}
    assert dataset["counts"]["validation"] == {str(d): 2 for d in range(10)}
    pinned = sorted(f"{name} {entry['md5']}" for name, entry in report["raw_files"].items())
    assert dataset["checksum"] == hashlib.sha256(("\n".join(pinned) + "\n").encode()).hexdigest()

    written = json.loads((tmp_path / "report.json").read_text())
    assert written["raw_files"]["train-labels-idx1-ubyte"]["pinned"] is False  # synthetic data


@pytest.mark.parametrize(("border", "background"), [(0, "dark"), (255, "light")])
def test_the_description_records_whether_the_training_images_borders_are_dark(
    border: int, background: str
) -> None:
    images = np.full((4, 8, 8, 1), border, np.uint8)
    images[:, 2:6, 2:6] = 255 - border  # the subject, in the middle
    labels = np.array([0, 1, 0, 1], np.uint8)
    splits = {"train": (images, labels), "test": (images[:2], labels[:2])}
    dataset = describe("mnist", "sum", ("a", "b"), splits)
    assert dataset.background == background
    assert dataset.counts == {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}
    assert dataset.input_shape == (8, 8, 1) and dataset.num_classes == 2


# --- the stage, run as DVC runs it -----------------------------------------------------------


def _stage_dir(tmp_path: Path, train: Split, test: Split) -> Path:
    raw = default_params()
    raw["prepare"].update(expected_train_count=TRAIN_COUNT, expected_test_count=TEST_COUNT)
    write_params(tmp_path, raw)
    write_raw_dir(tmp_path / "data/raw", (train.images, train.labels), (test.images, test.labels))
    return tmp_path


def _leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


RAW_FILES = [
    "data/raw/t10k-images-idx3-ubyte",
    "data/raw/t10k-labels-idx1-ubyte",
    "data/raw/train-images-idx3-ubyte",
    "data/raw/train-labels-idx1-ubyte",
    "params.yaml",
]


def test_stage_success(tmp_path: Path) -> None:
    directory = _stage_dir(tmp_path, *_splits())
    result = run_module("prepare", directory)
    assert result.returncode == 0, result.stderr
    assert "prepare: train 180, validation 20, test 50" in result.stdout
    assert len(_leftovers(directory)) == len(RAW_FILES) + 8  # 6 arrays, dataset.json, report


def test_stage_label_10(tmp_path: Path) -> None:
    train, test = _splits()
    train.labels[3] = 10
    directory = _stage_dir(tmp_path, train, test)
    result = run_module("prepare", directory)
    assert result.returncode == 1
    assert error_line(result) == (
        "prepare: error: invalid raw data: train has 1 labels outside 0-9 (first at index 3: 10)"
    )
    assert _leftovers(directory) == RAW_FILES


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-100], "truncated: header says shape (50, 28, 28)"),
        (
            lambda data: b"\x00\x00\x08\x01" + data[4:],
            "wrong IDX magic 00000801, expected 00000803",
        ),
    ],
    ids=["truncated", "wrong-magic"],
)
def test_stage_damaged_idx(tmp_path: Path, damage, message: str) -> None:
    directory = _stage_dir(tmp_path, *_splits())
    path = directory / "data/raw/t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    result = run_module("prepare", directory)
    assert result.returncode == 1
    assert error_line(result).startswith(f"prepare: error: {path.relative_to(directory)}: ")
    assert message in error_line(result)
    assert _leftovers(directory) == RAW_FILES


def test_prepare_does_not_import_tensorflow() -> None:
    code = "import sys, stages.prepare; print(sorted(m for m in sys.modules if 'tensorflow' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
