"""The picture of the test set's worst mistakes (``plots/worst_misclassified.png``)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_PIXELS = 84  # a misclassified image's side in the grid, at least (MNIST's 28 x 3)
COLUMNS = 6
CAPTION_PIXELS = 14


def as_picture(image: np.ndarray) -> Image.Image:
    """A ``[H, W, C]`` uint8 image in its own channels: grayscale for 1, RGB for 3."""
    return Image.fromarray(image[..., 0]) if image.shape[-1] == 1 else Image.fromarray(image, "RGB")


def most_confident_errors(labels: np.ndarray, probabilities: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` wrong predictions made with the highest confidence."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def worst_misclassified_grid(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]
) -> Image.Image:
    """The given wrong predictions (``most_confident_errors``), each captioned "<true> as
    <predicted> <confidence>"."""
    predicted = probabilities.argmax(axis=1)
    chosen = range(len(images))
    height, width = images.shape[1:3]
    scale = max(1, -(-TILE_PIXELS // width))
    tile_w, tile_h = width * scale, height * scale + CAPTION_PIXELS
    rows = max(1, -(-len(chosen) // COLUMNS))
    mode = "L" if images.shape[-1] == 1 else "RGB"
    grid = Image.new(mode, (COLUMNS * tile_w, rows * tile_h), color="white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    if not len(chosen):
        draw.text((4, 4), "no misclassified images", fill="black", font=font)
    for slot, index in enumerate(chosen):
        x, y = (slot % COLUMNS) * tile_w, (slot // COLUMNS) * tile_h
        tile = as_picture(images[index]).resize((tile_w, height * scale), Image.NEAREST)
        grid.paste(tile, (x, y))
        guess = predicted[index]
        label = f"{classes[labels[index]]} as {classes[guess]} {probabilities[index, guess]:.0%}"
        draw.text((x + 2, y + height * scale), label, fill="black", font=font)
    return grid
