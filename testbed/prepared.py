"""The prepared data as benchmarks and tests make it: MNIST through ``prepare``, or cut down."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.config import Params
from stages.datasets import SPLITS, load_dataset, load_split, write_splits
from stages.idx import IMAGES_NDIM, LABELS_NDIM, read_idx
from stages.mnist import TRAIN_IMAGES, TRAIN_LABELS
from stages.prepare import prepare
from stages.sources import MnistSource


def prepare_mnist(raw_dir: Path, prepared_dir: Path, report_file: Path, params: Params) -> dict:
    """The prepare stage's work on the MNIST files in ``raw_dir``."""
    shape = (*params.data.image_size, params.data.channels)
    return prepare(MnistSource(raw_dir), prepared_dir, report_file, params.prepare, shape)


def mnist_train_arrays(raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training images ``[N, 28, 28, 1]`` and labels, in the files' order."""
    images = read_idx(raw_dir / TRAIN_IMAGES.name, IMAGES_NDIM)[..., np.newaxis]
    return images, read_idx(raw_dir / TRAIN_LABELS.name, LABELS_NDIM)


def keep_first(prepared_dir: Path, counts: dict[str, int]) -> None:
    """Cut the prepared splits named in ``counts`` to their first examples (the others stay)."""
    dataset = load_dataset(prepared_dir)
    splits = {name: load_split(name, prepared_dir, limit=counts.get(name)) for name in SPLITS}
    write_splits(prepared_dir, dataset.source, dataset.checksum, dataset.classes, splits)
