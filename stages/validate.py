"""Checks on the data before anything learns from it, on what ``prepare`` keeps of each image.

Hard errors (the data cannot be trusted) stop the pipeline in one line; soft findings (worth
knowing, not fatal) go to the data report, ``reports/data_validation.json``. Images are compared by
a 64-bit content digest of their pixels (as the model sees them: after conversion and resizing),
so the checks hold eight bytes per image, not the images.
"""

from __future__ import annotations

import hashlib

import numpy as np

from stages.cli import StageError
from stages.config import PrepareParams


def pixel_digest(pixels: bytes) -> int:
    """A content digest of one image, to find exact duplicates."""
    return int.from_bytes(hashlib.blake2b(pixels, digest_size=8).digest(), "little")


def duplicates_within(digests: np.ndarray) -> int:
    """How many images repeat an earlier image of the same split."""
    return len(digests) - len(np.unique(digests))


def class_imbalance(counts: dict[str, int]) -> float:
    """Largest / smallest class count (inf when a class has none)."""
    smallest = min(counts.values())
    return max(counts.values()) / smallest if smallest else float("inf")


def check_every_class_present(counts: dict[str, dict[str, int]], params: PrepareParams) -> None:
    """Each class needs training and test examples: too small a class cannot be split."""
    for name in counts["train"]:
        total = sum(split_counts[name] for split_counts in counts.values())
        if not counts["train"][name]:
            raise StageError(
                f"class {name!r} has no training images ({total} in all); add images of {name!r}"
            )
        if not counts["test"][name]:
            raise StageError(
                f"class {name!r} has {total} images, too few to hold out prepare.test_fraction"
                f" {params.test_fraction} of them for test; add images of {name!r}"
            )


def check_balance(counts: dict[str, int], params: PrepareParams) -> float:
    imbalance = class_imbalance(counts)
    if imbalance > params.max_class_imbalance:
        raise StageError(
            f"train class imbalance {imbalance:.3f} (largest/smallest class) exceeds"
            f" prepare.max_class_imbalance {params.max_class_imbalance}; counts {counts}; add"
            " images to the small classes or raise the limit"
        )
    return imbalance


def leaked(test_digests: np.ndarray, train_digests: np.ndarray) -> np.ndarray:
    """Indices of the test images that also appear among the training images (leakage)."""
    return np.flatnonzero(np.isin(test_digests, train_digests))


def leakage_error(leaked_names: list[str], count: int, params: PrepareParams) -> StageError:
    return StageError(
        f"{count} test images also appear in train (leakage), e.g. {', '.join(leaked_names)};"
        " remove them from one side or raise prepare.max_train_test_duplicates"
        f" (now {params.max_train_test_duplicates})"
    )
