"""``python -m stages.predict IMAGE.png ...``: classify image files with the exported package.

Each image is brought to what the model was trained on, as its model card describes the dataset
(``assets.extra/model_card.json``), read as ``prepare`` reads a folder of images
(``classifier/folder.py``: turned upright, converted to grayscale or RGB, resized to the
training images' height and width). A grayscale image whose border is light while the training
images' borders are dark (a dark digit on paper, for MNIST), or the reverse, is inverted first.
Prints each image's class name and confidence. Uses only the SavedModel, exactly as a server
would, not the Keras model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from classifier.dataset import border_brightness
from classifier.errors import StageError, run_stage
from classifier.folder import read_image
from classifier.model_card import CARD_JSON
from classifier.params import PARAMS_FILE, load_params
from classifier.paths import Paths
from classifier.savedmodel import predict_with_export


def trained_on(model_dir: Path) -> dict:
    """The dataset the package was trained on, from its model card."""
    try:
        return json.loads((model_dir / CARD_JSON).read_text())["dataset"]
    except (FileNotFoundError, KeyError, ValueError):
        raise StageError(
            f"{model_dir} has no model card describing its dataset; package it again with"
            " `dvc repro package`"
        ) from None


def load_image(path: Path, dataset: dict) -> np.ndarray:
    """An image file (any format Pillow reads) as uint8 ``[H, W, C]`` like the training images:
    read as ``prepare`` reads a folder's images, then brought to their border brightness."""
    shape = (dataset["height"], dataset["width"], dataset["channels"])
    pixels = read_image(path, shape, str(path), formats=None)
    light = border_brightness(pixels) > 127
    if shape[2] == 1 and light != (dataset["background"] == "light"):
        return 255 - pixels
    return pixels


def default_model_dir() -> Path:
    """The package ``params.yaml`` names, in the repository you are in, else in this code's own.

    Run from the repository root (or any copy of it), that repository's package is used; run
    from anywhere else, the one in the repository this code was loaded from.
    """
    here = Path.cwd()
    root = here if (here / PARAMS_FILE).exists() else Path(__file__).resolve().parent.parent
    if not (root / PARAMS_FILE).exists():
        raise StageError(
            f"no {PARAMS_FILE} here or in {root}; pass --model DIR (dist/<model_name>)"
        )
    directory = Paths().export_dir(load_params(root / PARAMS_FILE).package)
    return directory if root == here else root / directory


def predict(model_dir: Path, images: np.ndarray) -> list[tuple[str, float]]:
    """(class name, confidence) per image."""
    outputs = predict_with_export(model_dir, images)
    return [
        (name.decode(), float(probabilities[index]))
        for name, index, probabilities in zip(
            outputs["class_name"], outputs["class_index"], outputs["probabilities"], strict=True
        )
    ]


def classify_files(model_dir: Path, paths: list[Path]) -> list[tuple[Path, str, bool]]:
    """(path, what to report, whether it worked) per file: one unreadable file spoils no other."""
    if not (model_dir / "saved_model.pb").exists():
        raise StageError(
            f"no SavedModel in {model_dir}; run `dvc repro` (or `dvc pull`) there,"
            " or pass --model DIR"
        )
    dataset = trained_on(model_dir)
    images: dict[Path, np.ndarray] = {}
    problems: dict[Path, str] = {}
    for path in paths:
        try:
            images[path] = load_image(path, dataset)
        except StageError as error:
            problems[path] = str(error).removeprefix(f"{path}: ")
    predictions = predict(model_dir, np.stack(list(images.values()))) if images else []
    results = dict(zip(images, predictions, strict=True))
    return [
        (path, f"{results[path][0]} ({results[path][1]:.1%})", True)
        if path in results
        else (path, problems[path], False)
        for path in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
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
