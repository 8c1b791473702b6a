"""The MNIST source: its files (names, checksums of their content, public mirrors) and what the
dataset is (28x28 grayscale digits in ten classes). Nothing after ``prepare`` imports this: the
later stages read the same facts from ``data/prepared/dataset.json``."""

from __future__ import annotations

from dataclasses import dataclass


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
