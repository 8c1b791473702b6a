"""``python -m stages.predict IMAGE.png ...``: classify digit images with the exported package.

Each image is read as grayscale and resized to 28x28. MNIST digits are white on black; an image
whose border is mostly light (a dark digit on paper) is inverted first. Uses only the SavedModel,
exactly as a server would, not the Keras model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.cli import StageError, run_stage
from stages.config import load_params
from stages.package import export_dir, predict_with_export
from stages.task import IMAGE_SHAPE


def load_digit(path: Path) -> np.ndarray:
    """A PNG (or any image Pillow reads) as a uint8 ``[28, 28]`` white-on-black digit."""
    try:
        with Image.open(path) as image:
            gray = image.convert("L").resize(IMAGE_SHAPE[::-1], Image.BILINEAR)
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as error:
        raise StageError(f"{path}: not a readable image ({error})") from None
    pixels = np.asarray(gray, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return 255 - pixels if border.mean() > 127 else pixels


def predict(model_dir: Path, paths: list[Path]) -> list[tuple[int, float]]:
    """(digit, confidence) per image."""
    if not (model_dir / "saved_model.pb").exists():
        raise StageError(f"no SavedModel in {model_dir}; run `dvc repro` (or `dvc pull`) first")
    images = np.stack([load_digit(path) for path in paths])
    outputs = predict_with_export(model_dir, images)
    return [
        (int(digit), float(probabilities[digit]))
        for digit, probabilities in zip(outputs["digit"], outputs["probabilities"], strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG files of single digits")
    parser.add_argument(
        "--model", type=Path, help="SavedModel directory (default: the one params.yaml names)"
    )
    args = parser.parse_args()
    model_dir = args.model or export_dir(load_params())
    for path, (digit, confidence) in zip(args.images, predict(model_dir, args.images), strict=True):
        print(f"{path}: {digit} ({confidence:.1%})")


if __name__ == "__main__":
    run_stage("predict", main)
