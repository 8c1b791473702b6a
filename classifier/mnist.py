"""The MNIST source: its files (names, checksums of their content, public mirrors), what the
dataset is (28x28 grayscale digits in ten classes), the IDX format it is published in
(http://yann.lecun.com/exdb/mnist/), and the source ``prepare`` reads. Nothing after ``prepare``
imports this: the later stages read the same facts from ``data/prepared/dataset.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from classifier.errors import StageError
from classifier.files import file_md5
from classifier.sources import Source, listing_checksum


@dataclass(frozen=True)
class RawFile:
    name: str  # the extracted IDX file, as stored in data/raw
    md5: str  # md5 of the extracted bytes, as published with MNIST

    @property
    def archive(self) -> str:
        """The gzip file name used by every mirror."""
        return f"{self.name}.gz"


TRAIN_IMAGES = RawFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb")
TRAIN_LABELS = RawFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624")
TEST_IMAGES = RawFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea")
TEST_LABELS = RawFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637")
RAW_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Tried in order after $MNIST_MIRROR. The .gz bytes differ between mirrors; the extracted content
# does not, which is why only the extracted content is pinned.
PUBLIC_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_ENV = "MNIST_MIRROR"  # tried first: a directory or URL of your own
PUBLIC_MIRRORS_ENV = "MNIST_PUBLIC_MIRRORS"  # replaces PUBLIC_MIRRORS: space-separated, "" for none

SOURCE = "mnist"
IMAGE_SHAPE = (28, 28, 1)  # height, width, channels: white digits on black
CLASSES = tuple(str(digit) for digit in range(10))  # label i is the digit i
MNIST_MODEL_IO = (IMAGE_SHAPE, len(CLASSES))  # build_model's input_shape and num_classes


UBYTE = 0x08
IMAGES_NDIM = 3
LABELS_NDIM = 1
CHUNK_ITEMS = 4096  # images read at once


def idx_shape(path: Path, ndim: int) -> tuple[tuple[int, ...], int]:
    """The shape an unsigned-byte IDX file of ``ndim`` dimensions declares, and where its data
    starts, checked against the file's size without reading the data.

    The magic number is ``00 00 08 <ndim>``; then ``ndim`` big-endian uint32 sizes; then the data.
    """
    header_size = 4 + 4 * ndim
    try:
        with path.open("rb") as stream:
            header = stream.read(header_size)
        size = path.stat().st_size
    except FileNotFoundError:
        raise StageError(
            f"{path} is missing; run `dvc repro fetch` (or `dvc pull`) first"
        ) from None
    if len(header) < header_size:
        raise StageError(f"{path}: truncated IDX file ({size} bytes, shorter than its header)")
    magic = header[:4]
    expected_magic = bytes([0, 0, UBYTE, ndim])
    if magic != expected_magic:
        raise StageError(
            f"{path}: wrong IDX magic {magic.hex()}, expected {expected_magic.hex()}"
            " (not an MNIST file of this kind)"
        )
    shape = tuple(int(side) for side in np.frombuffer(header, ">u4", count=ndim, offset=4))
    expected_bytes = header_size + int(np.prod(shape))
    if size != expected_bytes:
        state = "truncated" if size < expected_bytes else "has trailing bytes"
        raise StageError(
            f"{path}: {state}: header says shape {shape} ({expected_bytes} bytes), file has {size}"
        )
    return shape, header_size


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The whole array of an IDX file (for labels: one byte an example)."""
    shape, offset = idx_shape(path, ndim)
    return np.fromfile(path, np.uint8, offset=offset).reshape(shape)


def idx_items(path: Path, ndim: int) -> Iterator[np.ndarray]:
    """The items of an IDX file (e.g. its images) one by one, read a few thousand at a time."""
    shape, offset = idx_shape(path, ndim)
    item_bytes = int(np.prod(shape[1:]))
    with path.open("rb") as stream:
        stream.seek(offset)
        while chunk := stream.read(CHUNK_ITEMS * item_bytes):
            yield from np.frombuffer(chunk, np.uint8).reshape(-1, *shape[1:])


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
