"""Reading the IDX format MNIST is published in (http://yann.lecun.com/exdb/mnist/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.cli import StageError

UBYTE = 0x08
IMAGES_NDIM = 3
LABELS_NDIM = 1


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file of ``ndim`` dimensions, checking its header against its size.

    The magic number is ``00 00 08 <ndim>``; then ``ndim`` big-endian uint32 sizes; then the data.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StageError(
            f"{path} is missing; run `dvc repro fetch` (or `dvc pull`) first"
        ) from None
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise StageError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its header)")
    magic = data[:4]
    expected_magic = bytes([0, 0, UBYTE, ndim])
    if magic != expected_magic:
        raise StageError(
            f"{path}: wrong IDX magic {magic.hex()}, expected {expected_magic.hex()}"
            " (not an MNIST file of this kind)"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected_bytes = header_size + int(np.prod(shape))
    if len(data) != expected_bytes:
        state = "truncated" if len(data) < expected_bytes else "has trailing bytes"
        raise StageError(
            f"{path}: {state}: header says shape {shape} ({expected_bytes} bytes),"
            f" file has {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)
