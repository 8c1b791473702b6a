"""The prepared data: its description, ``dataset.json`` (the one dataset contract), and its splits.

``prepare`` writes both. Every later stage reads image shape and class names from the
description, never from constants, so only the source knows which dataset it is. Like Keras'
``mnist_convnet`` states it in two lines (``num_classes``, ``input_shape``), ``dataset.json``
states: height, width, channels; the class names in label order; the example count per split and
class; the source and a checksum of its content; whether the training images' borders are dark or
light (``predict`` brings a grayscale image to the same); and how the splits are stored.

Each split is a few large files of fixed-size records, ``<split>/00000.bin``, ``00001.bin``, ...:
one byte of label, then the image's ``H * W * C`` bytes (row-major, channels last). DVC handles a
few large files far faster than one file per image, and a shard is small enough to hold in
memory, so no stage holds a whole split (``classifier/streams.py`` reads them with ``tf.data``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from classifier.errors import StageError
from classifier.files import write_json

CONTRACT_FILE = "dataset.json"
SPLITS = ("train", "validation", "test")
SHARD_BYTES = 32 * 2**20  # records per shard: as many as fit in 32 MiB
LABEL_BYTES = 1
MAX_CLASSES = 2 ** (8 * LABEL_BYTES)
READ_CHUNK_BYTES = 8 * 2**20  # what the numpy readers hold at once


@dataclass(frozen=True)
class Dataset:
    """What the prepared data is: shapes, classes, counts, where it came from, how it is stored."""

    source: str
    height: int
    width: int
    channels: int
    classes: tuple[str, ...]  # label i is classes[i]
    counts: dict[str, dict[str, int]]  # split -> class name -> examples
    checksum: str  # of the source's content, as the source defines it
    background: str  # "dark" or "light": the mean border pixel of the training images
    examples_per_shard: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def record_bytes(self) -> int:
        return LABEL_BYTES + self.height * self.width * self.channels

    def size(self, split: str) -> int:
        return sum(self.counts[split].values())

    def shard_paths(self, prepared_dir: Path, split: str) -> list[Path]:
        shards = math.ceil(self.size(split) / self.examples_per_shard)
        return [prepared_dir / split / shard_name(index) for index in range(shards)]

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


def shard_name(index: int) -> str:
    return f"{index:05d}.bin"


def shard_capacity(image_shape: tuple[int, int, int]) -> int:
    """Records per shard for images of ``image_shape``."""
    return max(1, SHARD_BYTES // (LABEL_BYTES + math.prod(image_shape)))


def class_counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    return dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist(), strict=True))


def border_sums(images: np.ndarray) -> np.ndarray:
    """Per image of ``[N, H, W, C]``: the mean of its outermost rows and its outermost columns."""
    rows = images[:, [0, -1], :, :].mean(axis=(1, 2, 3))
    columns = images[:, :, [0, -1], :].mean(axis=(1, 2, 3))
    return (rows + columns) / 2


def border_brightness(images: np.ndarray) -> float:
    """Mean border pixel of ``images`` (``[N, H, W, C]`` or one ``[H, W, C]``)."""
    return float(border_sums(images.reshape(-1, *images.shape[-3:])).mean())


def background_of(mean_border: float) -> str:
    return "light" if mean_border > 127 else "dark"


class SplitWriter:
    """Writes each record straight to its final position in the split's preallocated shards, so
    a split can be written in any order without holding it."""

    def __init__(self, directory: Path, count: int, record_bytes: int, per_shard: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.record_bytes, self.per_shard = record_bytes, per_shard
        self.descriptors = []
        for index in range(math.ceil(count / per_shard)):
            descriptor = os.open(directory / shard_name(index), os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(descriptor, min(per_shard, count - index * per_shard) * record_bytes)
            self.descriptors.append(descriptor)

    def write(self, position: int, record: bytes) -> None:
        shard, slot = divmod(position, self.per_shard)
        os.pwrite(self.descriptors[shard], record, slot * self.record_bytes)

    def close(self) -> None:
        for descriptor in self.descriptors:
            os.fsync(descriptor)
            os.close(descriptor)
        self.descriptors = []


def records_of(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[N, record_bytes]``: each label byte followed by its image's bytes."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, np.newaxis], flat], axis=1)


def write_contract(directory: Path, dataset: Dataset) -> None:
    write_json(directory / CONTRACT_FILE, dataset.to_dict())


def write_splits(
    directory: Path,
    source: str,
    checksum: str,
    classes: tuple[str, ...],
    splits: dict[str, tuple],
    examples_per_shard: int | None = None,
) -> Dataset:
    """Write in-memory splits (name -> (images ``[N, H, W, C]``, labels ``[N]``)) in their given
    order, with their description: for tests and benchmarks, whose data is small (and which may
    ask for small shards, to have several)."""
    shape = next(iter(splits.values()))[0].shape[1:]
    dataset = Dataset(
        source,
        *(int(side) for side in shape),
        classes,
        {name: class_counts(labels, classes) for name, (_, labels) in splits.items()},
        checksum,
        background_of(border_brightness(splits["train"][0])),
        examples_per_shard or shard_capacity(shape),
    )
    for name, (images, labels) in splits.items():
        writer = SplitWriter(
            directory / name, len(labels), dataset.record_bytes, dataset.examples_per_shard
        )
        for position, record in enumerate(records_of(images, labels)):
            writer.write(position, record.tobytes())
        writer.close()
    write_contract(directory, dataset)
    return dataset


def load_dataset(prepared_dir: Path) -> Dataset:
    """The description ``prepare`` wrote."""
    path = prepared_dir / CONTRACT_FILE
    try:
        raw = json.loads(path.read_text())
        return Dataset(**{**raw, "classes": tuple(raw["classes"])})
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro prepare` first") from None
    except (ValueError, TypeError, KeyError) as error:
        raise StageError(
            f"{path} is not a dataset description ({error}); run `dvc repro prepare`"
        ) from None


def record_chunks(dataset: Dataset, prepared_dir: Path, split: str):
    """The split's records in order, as ``[k, record_bytes]`` arrays of a few MiB each."""
    per_chunk = max(1, READ_CHUNK_BYTES // dataset.record_bytes)
    for path in dataset.shard_paths(prepared_dir, split):
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(per_chunk * dataset.record_bytes):
                    yield np.frombuffer(chunk, np.uint8).reshape(-1, dataset.record_bytes)
        except FileNotFoundError:
            raise StageError(f"{path} is missing; run `dvc repro prepare` first") from None


def split_images(records: np.ndarray, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Records ``[k, record_bytes]`` as images ``[k, H, W, C]`` and labels ``[k]``."""
    return records[:, LABEL_BYTES:].reshape(-1, *dataset.input_shape), records[:, 0]


def read_labels(dataset: Dataset, prepared_dir: Path, split: str) -> np.ndarray:
    """Every label of ``split``, in order (one byte an example: small whatever the images)."""
    chunks = [chunk[:, 0].copy() for chunk in record_chunks(dataset, prepared_dir, split)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)


def read_examples(
    dataset: Dataset, prepared_dir: Path, split: str, indices: np.ndarray
) -> np.ndarray:
    """The images at ``indices`` of ``split`` (a few: each is read on its own)."""
    paths = dataset.shard_paths(prepared_dir, split)
    images = np.zeros((len(indices), *dataset.input_shape), np.uint8)
    for slot, index in enumerate(indices):
        shard, offset = divmod(int(index), dataset.examples_per_shard)
        with paths[shard].open("rb") as stream:
            stream.seek(offset * dataset.record_bytes + LABEL_BYTES)
            images[slot] = np.frombuffer(
                stream.read(dataset.record_bytes - LABEL_BYTES), np.uint8
            ).reshape(dataset.input_shape)
    return images


def load_split(
    name: str, prepared_dir: Path, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W, C]`` and labels ``[N]`` (uint8) of the first ``limit`` examples of the
    split ``name`` (all by default: only for data known to be small, e.g. in tests)."""
    dataset = load_dataset(prepared_dir)
    wanted = dataset.size(name) if limit is None else min(limit, dataset.size(name))
    images, labels, have = [], [], 0
    for chunk in record_chunks(dataset, prepared_dir, name):
        if have >= wanted:
            break
        chunk_images, chunk_labels = split_images(chunk[: wanted - have], dataset)
        images.append(chunk_images.copy())
        labels.append(chunk_labels.copy())
        have += len(chunk_labels)
    if not images:
        return np.zeros((0, *dataset.input_shape), np.uint8), np.zeros(0, np.uint8)
    return np.concatenate(images), np.concatenate(labels)
