"""Where ``prepare`` reads examples from: the MNIST files ``fetch`` verified, or a folder of
images (``classifier/folder.py``), chosen by ``data.source`` in ``params.yaml``.

A source lists its labels first (one byte an example), then yields its images one at a time in
the same order, so ``prepare`` never holds the images.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np


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
