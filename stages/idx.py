"""Reading the IDX format MNIST is published in (http://yann.lecun.com/exdb/mnist/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.cli import StageError

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
