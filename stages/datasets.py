"""Loading the arrays written by ``prepare`` (shared by train, test and package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.cli import StageError
from stages.paths import PREPARED_DIR


def load_split(name: str, prepared_dir: Path = PREPARED_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` and labels ``[N]`` (both uint8) of the prepared split ``name``."""
    directory = prepared_dir / name
    try:
        images = np.load(directory / "images.npy", allow_pickle=False)
        labels = np.load(directory / "labels.npy", allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{directory} is incomplete; run `dvc repro prepare` first") from None
    return images, labels
