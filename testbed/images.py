"""Folders of image files, as a user of the folder source would have them: MNIST's digits as PNGs,
and coloured shapes (an RGB dataset with three classes) drawn here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def save_image(path: Path, pixels: np.ndarray, image_format: str = "PNG") -> Path:
    """``pixels`` (``[H, W, 1]`` or ``[H, W, 3]`` uint8) as an image file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    picture.save(path, format=image_format)
    return path


def write_class_folders(
    root: Path, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], suffix=".png"
) -> Path:
    """``root/<class>/<index>.png`` for every image (index: its position in ``images``)."""
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        save_image(root / classes[label] / f"{index:05d}{suffix}", pixels)
    return root


def coloured_shapes(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB images ``[N, size, size, 3]`` of a circle, a square or a triangle (label 0, 1, 2) of
    random size and place on a noisy background, ``per_class`` of each; each shape has its own
    dominant colour (red, green, blue), so that a small model learns them in a few steps."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            background = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            picture = Image.fromarray(background)
            draw = ImageDraw.Draw(picture)
            side = int(rng.integers(size // 3, size * 2 // 3))
            x, y = (int(v) for v in rng.integers(1, size - side - 1, 2))
            colour = [int(c) for c in rng.integers(0, 100, 3)]
            colour[label] = int(rng.integers(180, 256))
            box = (x, y, x + side, y + side)
            if shape == "circle":
                draw.ellipse(box, fill=tuple(colour))
            elif shape == "square":
                draw.rectangle(box, fill=tuple(colour))
            else:
                draw.polygon(
                    [(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=tuple(colour)
                )
            images.append(np.asarray(picture))
            labels.append(label)
    return np.stack(images), np.array(labels, np.uint8)
