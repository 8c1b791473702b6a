"""Checks on the raw dataset before anything learns from it.

Hard errors (the data cannot be trusted) stop the pipeline; soft findings (worth knowing, not fatal)
are returned as a report that ``dvc.yaml`` declares as a metric, so they show in ``dvc metrics``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from stages.cli import StageError
from stages.config import PrepareParams


@dataclass(frozen=True)
class Split:
    """Images ``[N, H, W, C]`` uint8 and labels ``[N]`` uint8 of one part of the dataset."""

    name: str
    images: np.ndarray
    labels: np.ndarray


def image_digests(images: np.ndarray) -> list[bytes]:
    """A content hash per image, to find exact duplicates."""
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]


def _first_indices(mask: np.ndarray, limit: int = 5) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:limit]]


def check_split(
    split: Split, expected_count: int, image_shape: tuple[int, ...], num_classes: int
) -> list[str]:
    """Hard errors of one split: shapes, counts, label range, empty images."""
    errors = []
    if split.images.shape[1:] != image_shape:
        errors.append(f"{split.name} images are {split.images.shape[1:]}, expected {image_shape}")
    if len(split.images) != len(split.labels):
        errors.append(f"{split.name} has {len(split.images)} images but {len(split.labels)} labels")
    if len(split.labels) != expected_count:
        errors.append(
            f"{split.name} has {len(split.labels)} examples, expected {expected_count}"
            f" (prepare.expected_{split.name}_count)"
        )
    bad_labels = split.labels >= num_classes
    if bad_labels.any():
        first = _first_indices(bad_labels, 1)[0]
        errors.append(
            f"{split.name} has {int(bad_labels.sum())} labels outside 0-{num_classes - 1}"
            f" (first at index {first}: {int(split.labels[first])})"
        )
    if split.images.ndim == len(image_shape) + 1 and len(split.images):
        empty = split.images.reshape(len(split.images), -1).max(axis=1) == 0
        if empty.any():
            errors.append(
                f"{split.name} has {int(empty.sum())} empty (all-zero) images,"
                f" at indices {_first_indices(empty)}"
            )
    return errors


def class_balance(labels: np.ndarray, num_classes: int) -> tuple[list[int], float]:
    """Per-class counts and the largest/smallest count ratio (inf when a class is missing)."""
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    smallest = int(counts.min())
    ratio = float(counts.max() / smallest) if smallest else float("inf")
    return [int(c) for c in counts], ratio


def duplicates_within(digests: list[bytes]) -> int:
    """How many images repeat an earlier image of the same split."""
    return len(digests) - len(set(digests))


def validate(
    train: Split, test: Split, params: PrepareParams, image_shape: tuple[int, ...], num_classes: int
) -> dict:
    """Run every check; raise StageError naming all hard errors, else return the findings."""
    errors = check_split(train, params.expected_train_count, image_shape, num_classes)
    errors += check_split(test, params.expected_test_count, image_shape, num_classes)
    if errors:  # the checks below assume well-formed arrays
        raise StageError("invalid raw data: " + "; ".join(errors))

    train_counts, imbalance = class_balance(train.labels, num_classes)
    test_counts, _ = class_balance(test.labels, num_classes)
    if imbalance > params.max_class_imbalance:
        errors.append(
            f"train class imbalance {imbalance:.3f} (largest/smallest class) exceeds"
            f" prepare.max_class_imbalance {params.max_class_imbalance}; counts {train_counts}"
        )
    train_digests, test_digests = image_digests(train.images), image_digests(test.images)
    leaked = set(train_digests) & set(test_digests)
    leaked_test_images = [i for i, digest in enumerate(test_digests) if digest in leaked]
    if len(leaked_test_images) > params.max_train_test_duplicates:
        errors.append(
            f"{len(leaked_test_images)} test images also appear in train (leakage), e.g. test"
            f" indices {leaked_test_images[:5]}; allowed: prepare.max_train_test_duplicates"
            f" = {params.max_train_test_duplicates}"
        )
    if errors:
        raise StageError("invalid raw data: " + "; ".join(errors))

    return {
        "train": {
            "count": len(train.labels),
            "class_counts": train_counts,
            "class_imbalance": round(imbalance, 4),
            "duplicate_images": duplicates_within(train_digests),
            "pixel_mean": round(float(train.images.mean()), 4),
        },
        "test": {
            "count": len(test.labels),
            "class_counts": test_counts,
            "duplicate_images": duplicates_within(test_digests),
            "pixel_mean": round(float(test.images.mean()), 4),
        },
        "train_test_duplicates": len(leaked_test_images),
    }
