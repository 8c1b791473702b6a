"""The served model's reference: what its inputs and its answers look like on held-out images,
recorded by ``package`` in ``assets.extra/reference.json`` so that the monitor
(``serving/monitor.py``) can compare live traffic with it from the package alone.

Per image, the statistics a shift in what users send shows up in (digits photographed dark on
light paper, another scanner's contrast, thicker pens, one class suddenly dominating):

- ``mean_brightness``: the mean pixel value (0-255);
- ``border_brightness``: the mean of the outermost rows and columns (the background);
- ``ink_share``: the share of pixels brighter than the middle grey (127);
- ``confidence``: the probability of the predicted class;

and ``predicted_class``: how many images the model gave each class. Only numpy: the monitor runs
on the serving host, without TensorFlow. Image statistics are sums of whole pixel values divided
once and means are exactly rounded sums (``math.fsum``), so equal images give equal bytes on any
CPU; confidences are the model's, as reproducible as it is.
"""

from __future__ import annotations

import math

import numpy as np

from classifier.dataset import border_sums

REFERENCE_JSON = "assets.extra/reference.json"  # inside the package, beside the model card
FORMAT = 1
INK_THRESHOLD = 127
DIGITS = 6  # values are rounded to this many decimals, as the metrics are

IMAGE_STATISTICS = {
    "mean_brightness": "mean pixel value, 0-255",
    "border_brightness": "mean of the outermost rows and columns, 0-255 (the background)",
    "ink_share": f"share of pixels brighter than {INK_THRESHOLD}",
}
ANSWER_STATISTICS = {"confidence": "probability of the predicted class"}
CONTINUOUS = {**IMAGE_STATISTICS, **ANSWER_STATISTICS}


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of ``[N, H, W, C]`` (any numeric type): each of ``IMAGE_STATISTICS``."""
    pixels = np.asarray(images, dtype=np.float64)
    flat = pixels.reshape(len(pixels), -1)
    return {
        "mean_brightness": flat.mean(axis=1),
        "border_brightness": border_sums(pixels),
        "ink_share": (flat > INK_THRESHOLD).mean(axis=1),
    }


def answer_statistics(confidences: np.ndarray) -> dict[str, np.ndarray]:
    return {"confidence": np.asarray(confidences, dtype=np.float64)}


def reference(
    images: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...], split: str
) -> dict:
    """The reference of a model whose ``probabilities`` on ``images`` (of ``split``) are given.

    Each continuous statistic keeps every image's value, sorted (the monitor's KS test compares
    whole distributions; the order of images carries nothing)."""
    values = {
        **image_statistics(images),
        **answer_statistics(probabilities.max(axis=1)),
    }
    predicted = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
    return {
        "format": FORMAT,
        "split": split,
        "images": len(images),
        "image_shape": list(images.shape[1:]),
        "classes": list(classes),
        "predicted_class": dict(zip(classes, predicted.tolist(), strict=True)),
        "statistics": {
            name: {
                "description": CONTINUOUS[name],
                "mean": round(math.fsum(series.tolist()) / max(len(series), 1), DIGITS),
                "values": np.round(np.sort(series), DIGITS).tolist(),
            }
            for name, series in values.items()
        },
    }
