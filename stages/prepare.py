"""Stage ``prepare``: validate the raw MNIST files; split train/validation, stratified and seeded.

Writes ``data/prepared/{train,validation,test}/{images,labels}.npy`` (uint8, exactly as in the raw
files) and the validation report ``reports/data_validation.json``. The MNIST test set is copied
through untouched; only the ``test`` stage reads it. Does not import TensorFlow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from stages.artifacts import atomic_path, save_arrays, write_json
from stages.cli import run_stage
from stages.config import PrepareParams, load_params
from stages.idx import IMAGES_NDIM, LABELS_NDIM, read_idx
from stages.mnist import RAW_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from stages.paths import DATA_REPORT, PREPARED_DIR, RAW_DIR
from stages.validate import Split, validate


def load_raw(raw_dir: Path) -> tuple[Split, Split]:
    """Parse the four IDX files of ``raw_dir`` into the train and test splits."""

    def read(raw, ndim):
        return read_idx(raw_dir / raw.name, ndim)

    train = Split("train", read(TRAIN_IMAGES, IMAGES_NDIM), read(TRAIN_LABELS, LABELS_NDIM))
    test = Split("test", read(TEST_IMAGES, IMAGES_NDIM), read(TEST_LABELS, LABELS_NDIM))
    return train, test


def raw_checksums(raw_dir: Path) -> dict[str, dict]:
    """md5 of each raw file and whether it is the pinned one (it is, unless data/raw was edited)."""
    checksums = {}
    for raw in RAW_FILES:
        md5 = hashlib.md5((raw_dir / raw.name).read_bytes(), usedforsecurity=False).hexdigest()
        checksums[raw.name] = {"md5": md5, "pinned": md5 == raw.md5}
    return checksums


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


def prepare(raw_dir: Path, prepared_dir: Path, report_file: Path, params: PrepareParams) -> dict:
    """Validate, split and write; return the validation report."""
    train, test = load_raw(raw_dir)
    report = validate(train, test, params)
    report["raw_files"] = raw_checksums(raw_dir)
    fit_idx, val_idx = stratified_split(train.labels, params.validation_fraction, params.seed)
    report["split"] = {"train": len(fit_idx), "validation": len(val_idx), "seed": params.seed}

    with atomic_path(prepared_dir) as staged:
        for name, images, labels in (
            ("train", train.images[fit_idx], train.labels[fit_idx]),
            ("validation", train.images[val_idx], train.labels[val_idx]),
            ("test", test.images, test.labels),
        ):
            save_arrays(staged / name, {"images": images, "labels": labels})
    write_json(report_file, report)
    return report


def main() -> None:
    params = load_params().prepare
    report = prepare(RAW_DIR, PREPARED_DIR, DATA_REPORT, params)
    split = report["split"]
    print(
        f"prepare: train {split['train']}, validation {split['validation']}, test"
        f" {report['test']['count']}; train/test duplicates {report['train_test_duplicates']}"
    )


if __name__ == "__main__":
    run_stage("prepare", main)
