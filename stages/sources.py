"""Where ``prepare`` reads examples from: the MNIST files ``fetch`` verified, or a folder of
images (``stages/image_folder.py``), chosen by ``data.source`` in ``params.yaml``.

A source lists its labels first (one byte an example), then yields its images one at a time in
the same order, so ``prepare`` never holds the images.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from stages.artifacts import file_md5
from stages.cli import StageError
from stages.idx import IMAGES_NDIM, LABELS_NDIM, idx_items, idx_shape, read_idx
from stages.mnist import (
    CLASSES,
    RAW_FILES,
    SOURCE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
)


class Source(ABC):
    """Labelled images in a ``train`` split and, where the source has its own, a ``test`` split."""

    name: str
    classes: tuple[str, ...]

    @abstractmethod
    def labels(self) -> dict[str, np.ndarray]:
        """Per split, every example's class index, in the order :meth:`images` yields them."""

    @abstractmethod
    def images(self, split: str) -> Iterator[np.ndarray]:
        """The split's images, uint8 ``[H, W, C]`` in the dataset's shape, one at a time."""

    @abstractmethod
    def example_name(self, split: str, index: int) -> str:
        """Where example ``index`` of ``split`` comes from, for messages (e.g. its file)."""

    @abstractmethod
    def checksum(self) -> str:
        """One checksum of the source's content."""

    def report(self) -> dict:
        """What the data report records about the source itself."""
        return {"name": self.name}


def listing_checksum(md5s: dict[str, str]) -> str:
    """sha256 over each file's name and md5, sorted by name: one checksum for a set of files."""
    listing = "".join(f"{name} {md5}\n" for name, md5 in sorted(md5s.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


class MnistSource(Source):
    """The four IDX files in ``data/raw``: 60,000 training and 10,000 test digits."""

    name = SOURCE
    classes = CLASSES
    _files: ClassVar = {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}

    def __init__(self, raw_dir: Path):
        self.raw_dir = raw_dir

    def labels(self) -> dict[str, np.ndarray]:
        labels = {}
        for split, (images, label_file) in self._files.items():
            labels[split] = read_idx(self.raw_dir / label_file.name, LABELS_NDIM)
            count = idx_shape(self.raw_dir / images.name, IMAGES_NDIM)[0][0]
            if count != len(labels[split]):
                raise StageError(
                    f"{self.raw_dir}: {count} {split} images but {len(labels[split])} labels;"
                    " run `dvc repro fetch` (or `dvc pull`) again"
                )
            if labels[split].size and labels[split].max() >= len(CLASSES):
                first = int(np.flatnonzero(labels[split] >= len(CLASSES))[0])
                raise StageError(
                    f"{self.raw_dir / label_file.name}: label {int(labels[split][first])} at"
                    f" index {first} is not a digit; run `dvc repro fetch` again"
                )
        return labels

    def images(self, split: str) -> Iterator[np.ndarray]:
        for image in idx_items(self.raw_dir / self._files[split][0].name, IMAGES_NDIM):
            yield image[..., np.newaxis]

    def example_name(self, split: str, index: int) -> str:
        return f"{self.raw_dir / self._files[split][0].name} image {index}"

    def file_md5s(self) -> dict[str, str]:
        return {raw.name: file_md5(self.raw_dir / raw.name) for raw in RAW_FILES}

    def checksum(self) -> str:
        return listing_checksum(self.file_md5s())

    def report(self) -> dict:
        """The raw files' md5s and whether each is the pinned one (unless data/raw was edited)."""
        pinned = {raw.name: raw.md5 for raw in RAW_FILES}
        files = {
            name: {"md5": md5, "pinned": md5 == pinned[name]}
            for name, md5 in self.file_md5s().items()
        }
        return {"name": self.name, "files": files}
