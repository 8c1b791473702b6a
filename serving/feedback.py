"""Labelled feedback: captured images whose true class people supplied, and the live accuracy it
measures.

The loop is two commands. ``python -m serving.monitor … --export DIR`` writes every captured
image of the window as a PNG, ``DIR/<label>/<digest>.png`` (the digest: sha256 of its pixels);
people move the ones they can judge into a feedback folder, one folder per true class
(``feedback/<class>/<any name>.png``, the layout of the pipeline's own image folders). Then
``python -m serving.monitor … --feedback feedback/`` matches each feedback image to the captured
requests by its pixels (a PNG keeps them exactly) and reports, per label, how often the model's
answer was the true class, overall and per class. An image that matches no captured request
(another window, resized, re-encoded as JPEG) is counted as unmatched, not guessed at.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.errors import StageError
from classifier.folder import read_image


def pixel_digest(image: np.ndarray) -> str:
    """sha256 of an image's pixels as uint8 ``[H, W, C]``: the same for a captured request and
    for the PNG it was exported to."""
    pixels = np.asarray(image)
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.round(pixels)):
        return ""  # not an 8-bit image: cannot be exported, cannot be matched
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def export_image(image: np.ndarray, folder: Path) -> Path:
    """``image`` as ``folder/<digest>.png``; its path."""
    pixels = np.asarray(image, dtype=np.uint8)
    path = folder / f"{pixel_digest(pixels)}.png"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
    return path


def read_feedback(
    folder: Path, shape: tuple[int, ...], classes: tuple[str, ...]
) -> tuple[dict[str, int], int]:
    """Pixel digest -> true class index for every image under ``folder/<class>/``, and how many
    images are not of ``shape`` (they cannot be a captured request as it was sent)."""
    if not folder.is_dir():
        raise StageError(f"--feedback {folder} is not a folder of class folders")
    truth, other_shape = {}, 0
    for class_folder in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if class_folder.name not in classes or not class_folder.is_dir():
            raise StageError(
                f"{class_folder}: feedback goes in {folder}/<class>/, <class> one of the model's"
                f" classes ({', '.join(classes)})"
            )
        for path in sorted(class_folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            with Image.open(path) as image:
                size = image.size
            if size != (shape[1], shape[0]):
                other_shape += 1
                continue
            pixels = read_image(path, tuple(shape), str(path), formats=None)
            truth[pixel_digest(pixels)] = classes.index(class_folder.name)
    return truth, other_shape


def live_accuracy(
    answered: dict[str, int], truth: dict[str, int], classes: tuple[str, ...]
) -> dict:
    """How often the answers (digest -> predicted class) were the true class, overall and per
    true class, over the feedback images that match a captured request."""
    matched = [(truth[digest], answered[digest]) for digest in truth if digest in answered]
    per_class = {}
    for index, name in enumerate(classes):
        answers = [predicted for true, predicted in matched if true == index]
        if answers:
            hits = sum(predicted == index for predicted in answers)
            per_class[name] = {"images": len(answers), "recall": round(hits / len(answers), 6)}
    hits = sum(true == predicted for true, predicted in matched)
    return {
        "images": len(matched),
        "accuracy": round(hits / len(matched), 6) if matched else None,
        "per_class": per_class,
    }
