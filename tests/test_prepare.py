"""The prepare stage: IDX parsing, the MNIST source, the checks, the split and the shards."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier.dataset import load_dataset, load_split
from classifier.errors import StageError
from classifier.mnist import MnistSource, read_idx
from classifier.params import PrepareParams
from classifier.paths import Paths
from stages.prepare import content_keys, prepare, stratified_split
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import (
    default_params,
    error_line,
    idx_bytes,
    run_module,
    synthetic_digits,
    write_raw_dir,
)

TRAIN_COUNT, TEST_COUNT = 200, 50
SHAPE = (28, 28, 1)


def _params(**changes) -> PrepareParams:
    return PrepareParams(**{**default_params()["prepare"], **changes})


def _arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    train_x, train_y = synthetic_digits(TRAIN_COUNT, seed=1)
    test_x, test_y = synthetic_digits(TEST_COUNT, seed=2)
    return (train_x[..., None], train_y), (test_x[..., None], test_y)


def _prepare(tmp_path: Path, train, test, **changes) -> dict:
    raw = write_raw_dir(tmp_path / "raw", train, test)
    return prepare(MnistSource(raw), _params(**changes), SHAPE, Paths(tmp_path))


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


# --- the split ------------------------------------------------------------------------------


def test_stratified_split_is_keyed_disjoint_and_proportional() -> None:
    labels = np.repeat(
        np.arange(10, dtype=np.uint8), [100, 120, 80, 100, 100, 90, 110, 100, 100, 100]
    )
    digests = np.arange(len(labels), dtype=np.uint64) * np.uint64(7919)
    kept, held = stratified_split(labels, 0.1, content_keys(digests, 7, 1))
    assert len(set(kept) & set(held)) == 0 and len(kept) + len(held) == len(labels)
    assert np.bincount(labels[held]).tolist() == [10, 12, 8, 10, 10, 9, 11, 10, 10, 10]
    again = stratified_split(labels, 0.1, content_keys(digests, 7, 1))
    np.testing.assert_array_equal(held, again[1])
    assert not np.array_equal(held, stratified_split(labels, 0.1, content_keys(digests, 8, 1))[1])


def test_prepare_writes_shards_description_and_report(tmp_path: Path) -> None:
    train, test = _arrays()
    report = _prepare(tmp_path, train, test)
    assert report["split"] == {
        "train": 180,
        "validation": 20,
        "test": 50,
        "seed": 42,
        "sample_fraction": 1.0,
        "test_from": "source",
    }
    prepared = Paths(tmp_path).prepared_dir
    dataset = load_dataset(prepared)
    assert dataset.source == "mnist" and dataset.classes == tuple(str(d) for d in range(10))
    assert dataset.input_shape == SHAPE
    assert dataset.counts["train"] == {str(d): 18 for d in range(10)}  # 20 a class, 10% held
    assert dataset.counts["validation"] == {str(d): 2 for d in range(10)}
    assert dataset.counts["test"] == {str(d): 5 for d in range(10)}
    assert sorted(p.name for p in (prepared / "train").iterdir()) == ["00000.bin"]
    assert (prepared / "train/00000.bin").stat().st_size == 180 * (1 + 28 * 28)
    # every image lands once, with its label: the splits are the source's examples, reordered
    fit_x, fit_y = load_split("train", prepared)
    val_x, val_y = load_split("validation", prepared)
    test_x, _ = load_split("test", prepared)
    source = {image.tobytes(): label for image, label in zip(*train, strict=True)}
    assert {x.tobytes(): y for x, y in zip(fit_x, fit_y, strict=True)} | {
        x.tobytes(): y for x, y in zip(val_x, val_y, strict=True)
    } == source
    assert sorted(x.tobytes() for x in test_x) == sorted(x.tobytes() for x in test[0])
    assert not np.array_equal(test_x, test[0])  # shuffled, not copied through
    files = {name: entry["md5"] for name, entry in report["source"]["files"].items()}
    listing = "".join(f"{name} {md5}\n" for name, md5 in sorted(files.items()))
    assert dataset.checksum == hashlib.sha256(listing.encode()).hexdigest()
    assert report["source"]["files"]["train-labels-idx1-ubyte"]["pinned"] is False  # synthetic
    assert json.loads(Paths(tmp_path).data_report.read_text()) == json.loads(json.dumps(report))


def test_the_prepared_bytes_do_not_depend_on_the_sources_order(tmp_path: Path) -> None:
    """Which split an image goes to, and where, follows from its pixels and the seed."""
    train, test = _arrays()
    _prepare(tmp_path / "a", train, test)
    order = np.random.default_rng(0).permutation(TRAIN_COUNT)
    _prepare(tmp_path / "b", (train[0][order], train[1][order]), test)
    _prepare(tmp_path / "c", train, test, seed=43)

    def shards(name: str) -> list[bytes]:
        return [p.read_bytes() for p in sorted(Paths(tmp_path / name).prepared_dir.rglob("*.bin"))]

    assert shards("a") == shards("b")
    assert shards("a") != shards("c")


def test_a_sample_keeps_a_share_of_every_class_of_every_split_and_only_images_of_the_whole(
    tmp_path: Path,
) -> None:
    """``prepare.sample_fraction``: a quick run's data, stratified, each split a subset of the
    same split of the whole data (at least one image a class), chosen by the seed."""
    train, test = _arrays()
    whole = _prepare(tmp_path / "whole", train, test)
    sample = _prepare(tmp_path / "sample", train, test, sample_fraction=0.3)
    assert sample["split"] | {"sample_fraction": 1.0} == whole["split"] | {
        "train": 50,  # 18 a class x 0.3 = 5.4, rounded to 5
        "validation": 10,  # 2 a class x 0.3 = 0.6, rounded to 1
        "test": 20,  # 5 a class x 0.3 = 1.5, rounded to 2
    }
    for split, per_class in {"train": 5, "validation": 1, "test": 2}.items():
        assert sample[split]["class_counts"] == {str(d): per_class for d in range(10)}
        images = {x.tobytes() for x in load_split(split, Paths(tmp_path / "whole").prepared_dir)[0]}
        kept = load_split(split, Paths(tmp_path / "sample").prepared_dir)[0]
        assert {x.tobytes() for x in kept} < images
    # another seed samples other images of the same (source) test split, not only another order
    other_seed = _prepare(tmp_path / "seed", train, test, sample_fraction=0.3, seed=43)
    assert other_seed["split"]["test"] == 20

    def test_images(name: str) -> set[bytes]:
        return {x.tobytes() for x in load_split("test", Paths(tmp_path / name).prepared_dir)[0]}

    assert test_images("seed") != test_images("sample")


@pytest.mark.parametrize(("border", "background"), [(0, "dark"), (255, "light")])
def test_the_description_records_whether_the_training_images_borders_are_dark(
    tmp_path: Path, border: int, background: str
) -> None:
    images = np.full((TRAIN_COUNT, 28, 28, 1), border, np.uint8)
    images[:, 8:20, 8:20] = np.arange(TRAIN_COUNT, dtype=np.uint8)[:, None, None, None]
    images[:, 10, 10] = 255 - border  # never all zero
    labels = (np.arange(TRAIN_COUNT) % 10).astype(np.uint8)
    test_images = images[:TEST_COUNT].copy()
    test_images[:, 20:24, 20:24] = 255 - border  # unlike every training image
    _prepare(tmp_path, (images, labels), (test_images, labels[:TEST_COUNT]))
    assert load_dataset(Paths(tmp_path).prepared_dir).background == background


# --- the checks ------------------------------------------------------------------------------


def test_soft_findings_are_reported_not_fatal(tmp_path: Path) -> None:
    train, test = _arrays()
    train[0][7] = train[0][3]  # a duplicate within the training images
    test[0][4] = train[0][10]  # a leaked test image, tolerated by the params below
    report = _prepare(tmp_path, train, test, max_train_test_duplicates=1)
    assert report["train"]["duplicate_images"] + report["validation"]["duplicate_images"] <= 1
    assert report["train_test_duplicates"] == 1
    assert report["class_imbalance"] == 1.0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda train, test: test[0].__setitem__(4, train[0][10]),
            "1 test images also appear in train (leakage), e.g. {raw}/t10k-images-idx3-ubyte"
            " image 4; remove them from one side or raise prepare.max_train_test_duplicates"
            " (now 0)",
        ),
        (
            lambda train, test: train[1].__setitem__(train[1] == 9, 8),
            "class '9' has no training images (5 in all); add images of '9'",
        ),
        (
            lambda train, test: train[0].__setitem__(5, 0),
            "{raw}/train-images-idx3-ubyte image 5 is an empty (all-zero) image; remove it",
        ),
        (
            lambda train, test: train[1].__setitem__(17, 10),
            "{raw}/train-labels-idx1-ubyte: label 10 at index 17 is not a digit; run `dvc repro"
            " fetch` again",
        ),
    ],
    ids=["leakage", "missing-class", "empty-image", "label-10"],
)
def test_bad_data_is_one_line_and_nothing_is_written(tmp_path: Path, damage, message) -> None:
    train, test = _arrays()
    damage(train, test)
    with pytest.raises(StageError) as error:
        _prepare(tmp_path, train, test)
    assert str(error.value) == message.format(raw=tmp_path / "raw")
    assert (
        not (Paths(tmp_path).prepared_dir).exists() and not (Paths(tmp_path).data_report).exists()
    )
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "raw" not in p.parts]
    assert written == []  # no prepared data, no report, no scratch left behind


def test_imbalance_beyond_the_limit_is_an_error(tmp_path: Path) -> None:
    train, test = _arrays()
    train[1][:30] = 0  # class 0 grows to 47 examples, the others shrink
    with pytest.raises(StageError, match=r"^train class imbalance \d\.\d{3} \(largest/smallest"):
        _prepare(tmp_path, train, test)


# --- the stage, run as DVC runs it -----------------------------------------------------------


def _stage_dir(tmp_path: Path, train, test) -> Path:
    write_params(tmp_path, default_params())
    write_raw_dir(tmp_path / "data/raw", train, test)
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
    directory = _stage_dir(tmp_path, *_arrays())
    result = run_module("prepare", directory)
    assert result.returncode == 0, result.stderr
    assert "prepare: mnist: train 180, validation 20, test 50" in result.stdout
    assert _leftovers(directory) == sorted(
        [*RAW_FILES, "reports/data_validation.json", "data/prepared/dataset.json"]
        + [f"data/prepared/{split}/00000.bin" for split in ("train", "validation", "test")]
    )


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
    directory = _stage_dir(tmp_path, *_arrays())
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
