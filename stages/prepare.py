"""Stage ``prepare``: validate the raw MNIST files; split train/validation, stratified and seeded.

Writes ``data/prepared/{train,validation,test}/{images,labels}.npy`` (uint8 ``[N, H, W, C]``, the
raw pixels with a channel axis), the dataset's description ``data/prepared/dataset.json``
(``stages/datasets.py``: shape, classes, counts, source and checksum: what every later stage
reads instead of MNIST constants) and the validation report ``reports/data_validation.json``. The
MNIST test set is copied through untouched; only the ``test`` stage reads it. Does not import
TensorFlow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from stages.artifacts import atomic_path, write_json
from stages.cli import run_stage
from stages.config import DataParams, PrepareParams, load_params
from stages.datasets import describe, write_prepared
from stages.idx import IMAGES_NDIM, LABELS_NDIM, read_idx
from stages.mnist import (
    CLASSES,
    IMAGE_SHAPE,
    RAW_FILES,
    SOURCE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
)
from stages.paths import DATA_REPORT, PREPARED_DIR, RAW_DIR
from stages.validate import Split, validate


def load_raw(raw_dir: Path) -> tuple[Split, Split]:
    """Parse the four IDX files of ``raw_dir`` into the train and test splits, images with a
    channel axis (``[N, 28, 28, 1]``)."""

    def images(raw):
        return read_idx(raw_dir / raw.name, IMAGES_NDIM)[..., np.newaxis]

    def labels(raw):
        return read_idx(raw_dir / raw.name, LABELS_NDIM)

    train = Split("train", images(TRAIN_IMAGES), labels(TRAIN_LABELS))
    test = Split("test", images(TEST_IMAGES), labels(TEST_LABELS))
    return train, test


def raw_checksums(raw_dir: Path) -> dict[str, dict]:
    """md5 of each raw file and whether it is the pinned one (it is, unless data/raw was edited)."""
    checksums = {}
    for raw in RAW_FILES:
        md5 = hashlib.md5((raw_dir / raw.name).read_bytes(), usedforsecurity=False).hexdigest()
        checksums[raw.name] = {"md5": md5, "pinned": md5 == raw.md5}
    return checksums


def content_checksum(checksums: dict[str, dict]) -> str:
    """One checksum of the source's content: sha256 over each raw file's name and md5."""
    listing = "".join(f"{name} {entry['md5']}\n" for name, entry in sorted(checksums.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation): ``fraction`` of every class, chosen by a seeded shuffle.

    Both index arrays are sorted, so the output keeps the raw order and depends only on the seed.
    """
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(len(members) * fraction)
        held_out.append(rng.permutation(members)[:count])
    validation = np.sort(np.concatenate(held_out))
    train = np.setdiff1d(np.arange(len(labels)), validation, assume_unique=True)
    return train, validation


def prepare(
    raw_dir: Path, prepared_dir: Path, report_file: Path, params: PrepareParams, data: DataParams
) -> dict:
    """Validate, split and write; return the validation report.

    ``data`` says what the images must be: the source (only ``mnist`` so far) and the shape
    (for MNIST, ``params.yaml`` validation allows only its own, 28x28 grayscale).
    """
    train, test = load_raw(raw_dir)
    shape = (*data.image_size, data.channels)
    assert data.source == SOURCE and shape == IMAGE_SHAPE  # parse_params allows nothing else
    report = validate(train, test, params, shape, len(CLASSES))
    report["raw_files"] = raw_checksums(raw_dir)
    fit_idx, val_idx = stratified_split(train.labels, params.validation_fraction, params.seed)
    report["split"] = {"train": len(fit_idx), "validation": len(val_idx), "seed": params.seed}
    splits = {
        "train": (train.images[fit_idx], train.labels[fit_idx]),
        "validation": (train.images[val_idx], train.labels[val_idx]),
        "test": (test.images, test.labels),
    }
    dataset = describe(SOURCE, content_checksum(report["raw_files"]), CLASSES, splits)
    with atomic_path(prepared_dir) as staged:
        write_prepared(staged, dataset, splits)
    write_json(report_file, report)
    return report


def main() -> None:
    config = load_params()
    report = prepare(RAW_DIR, PREPARED_DIR, DATA_REPORT, config.prepare, config.data)
    split = report["split"]
    print(
        f"prepare: train {split['train']}, validation {split['validation']}, test"
        f" {report['test']['count']}; train/test duplicates {report['train_test_duplicates']}"
    )


if __name__ == "__main__":
    run_stage("prepare", main)
