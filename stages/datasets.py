"""The prepared data: its description, ``dataset.json`` (the one dataset contract), and its splits.

``prepare`` writes both. Every later stage reads image shape and class names from the
description, never from constants, so only the source (``stages/mnist.py``) knows which dataset
it is. Like Keras' ``mnist_convnet`` states it in two lines (``num_classes``, ``input_shape``),
``dataset.json`` states: height, width, channels; the class names in label order; the example
count per split and class; the source and a checksum of its content; and whether the training
images' borders are dark or light (``predict`` brings a grayscale image to the same).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stages.artifacts import save_arrays, write_json
from stages.cli import StageError
from stages.paths import PREPARED_DIR

CONTRACT_FILE = "dataset.json"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Dataset:
    """What the prepared data is: shapes, classes, counts and where it came from."""

    source: str
    height: int
    width: int
    channels: int
    classes: tuple[str, ...]  # label i is classes[i]
    counts: dict[str, dict[str, int]]  # split -> class name -> examples
    checksum: str  # of the source's content, as the source defines it
    background: str  # "dark" or "light": the mean border pixel of the training images

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


def describe(
    source: str, checksum: str, classes: tuple[str, ...], splits: dict[str, tuple]
) -> Dataset:
    """The description of ``splits`` (name -> (images ``[N, H, W, C]``, labels ``[N]``))."""
    height, width, channels = next(iter(splits.values()))[0].shape[1:]
    counts = {
        name: dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist(), strict=True))
        for name, (_, labels) in splits.items()
    }
    background = "light" if border_brightness(splits["train"][0]) > 127 else "dark"
    return Dataset(
        source, int(height), int(width), int(channels), classes, counts, checksum, background
    )


def border_brightness(images: np.ndarray) -> float:
    """Mean pixel value of the outermost rows and columns of ``images`` (``[N, H, W, C]`` or
    ``[H, W, C]``)."""
    frame = images[..., [0, -1], :, :].mean(), images[..., :, [0, -1], :].mean()
    return float(sum(frame) / 2)


def write_prepared(directory: Path, dataset: Dataset, splits: dict[str, tuple]) -> None:
    """Each split's ``images.npy``/``labels.npy`` and ``dataset.json`` into ``directory``."""
    for name, (images, labels) in splits.items():
        save_arrays(directory / name, {"images": images, "labels": labels})
    write_json(directory / CONTRACT_FILE, dataset.to_dict())


def load_dataset(prepared_dir: Path = PREPARED_DIR) -> Dataset:
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


def load_split(name: str, prepared_dir: Path = PREPARED_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W, C]`` and labels ``[N]`` (both uint8) of the prepared split ``name``."""
    directory = prepared_dir / name
    try:
        images = np.load(directory / "images.npy", allow_pickle=False)
        labels = np.load(directory / "labels.npy", allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{directory} is incomplete; run `dvc repro prepare` first") from None
    return images, labels
