"""The prepared data as benchmarks and tests make it: MNIST through ``prepare``, or cut down."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier.dataset import SPLITS, load_dataset, load_split, write_splits
from classifier.mnist import (
    IMAGES_NDIM,
    LABELS_NDIM,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    MnistSource,
    read_idx,
)
from classifier.params import Params
from classifier.paths import Paths
from stages.prepare import prepare


def prepare_mnist(raw_dir: Path, paths: Paths, params: Params) -> Path:
    """The prepare stage's work on the MNIST files in ``raw_dir``; the prepared directory."""
    shape = (*params.data.image_size, params.data.channels)
    prepare(MnistSource(raw_dir), params.prepare, shape, paths)
    return paths.prepared_dir


def mnist_train_arrays(raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training images ``[N, 28, 28, 1]`` and labels, in the files' order."""
    images = read_idx(raw_dir / TRAIN_IMAGES.name, IMAGES_NDIM)[..., np.newaxis]
    return images, read_idx(raw_dir / TRAIN_LABELS.name, LABELS_NDIM)


def keep_first(prepared_dir: Path, counts: dict[str, int]) -> None:
    """Cut the prepared splits named in ``counts`` to their first examples (the others stay)."""
    dataset = load_dataset(prepared_dir)
    splits = {name: load_split(name, prepared_dir, limit=counts.get(name)) for name in SPLITS}
    write_splits(prepared_dir, dataset.source, dataset.checksum, dataset.classes, splits)
