"""``python -m stages.predict IMAGE.png ...``: classify digit images with the exported package.

Each image is read as grayscale and resized to 28x28. MNIST digits are white on black; an image
whose border is mostly light (a dark digit on paper) is inverted first. Uses only the SavedModel,
exactly as a server would, not the Keras model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.cli import StageError, run_stage
from stages.config import PARAMS_FILE, load_params
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


def default_model_dir() -> Path:
    """The package ``params.yaml`` names, in the repository you are in, else in this code's own.

    Run from the repository root (or any copy of it), that repository's package is used; run
    from anywhere else, the one in the repository this code was loaded from.
    """
    here = Path.cwd()
    root = here if (here / PARAMS_FILE).exists() else Path(__file__).resolve().parent.parent
    if not (root / PARAMS_FILE).exists():
        raise StageError(f"no {PARAMS_FILE} here or in {root}; pass --model DIR (dist/<name>/<n>)")
    directory = export_dir(load_params(root / PARAMS_FILE))
    return directory if root == here else root / directory


def predict(model_dir: Path, images: np.ndarray) -> list[tuple[int, float]]:
    """(digit, confidence) per image."""
    outputs = predict_with_export(model_dir, images)
    return [
        (int(digit), float(probabilities[digit]))
        for digit, probabilities in zip(outputs["digit"], outputs["probabilities"], strict=True)
    ]


def classify_files(model_dir: Path, paths: list[Path]) -> list[tuple[Path, str, bool]]:
    """(path, what to report, whether it worked) per file: one unreadable file spoils no other."""
    if not (model_dir / "saved_model.pb").exists():
        raise StageError(
            f"no SavedModel in {model_dir}; run `dvc repro` (or `dvc pull`) there,"
            " or pass --model DIR"
        )
    digits: dict[Path, np.ndarray] = {}
    problems: dict[Path, str] = {}
    for path in paths:
        try:
            digits[path] = load_digit(path)
        except StageError as error:
            problems[path] = str(error).removeprefix(f"{path}: ")
    predictions = predict(model_dir, np.stack(list(digits.values()))) if digits else []
    results = dict(zip(digits, predictions, strict=True))
    return [
        (path, f"{results[path][0]} ({results[path][1]:.1%})", True)
        if path in results
        else (path, problems[path], False)
        for path in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG files of single digits")
    parser.add_argument(
        "--model",
        type=Path,
        help="SavedModel directory (default: the one params.yaml names, see default_model_dir)",
    )
    args = parser.parse_args()
    reports = classify_files(args.model or default_model_dir(), args.images)
    for path, report, worked in reports:
        if worked:
            print(f"{path}: {report}")
        else:
            print(f"predict: error: {path}: {report}", file=sys.stderr)
    failed = sum(not worked for _, _, worked in reports)
    if failed:
        raise StageError(f"{failed} of {len(reports)} images could not be classified")


if __name__ == "__main__":
    run_stage("predict", main)
