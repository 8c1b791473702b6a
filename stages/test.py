"""Stage ``test``: evaluate the trained model on the test split and give the gate's verdict.

Writes ``metrics/test.json`` (the experiments table's numbers: accuracy, loss, errors, the
verdict and the model's size), ``reports/test.json`` (per-class precision/recall/F1 and every
failed gate), ``plots/confusion.json`` (one ``{actual, predicted}`` row of class names per test
image, for DVC's confusion template) and ``plots/worst_misclassified.png``. Classes are named as in
``data/prepared/dataset.json``.

The gates: accuracy below ``test.min_accuracy``, any class recall below ``test.min_class_recall``,
or an accuracy more than ``test.max_accuracy_drop`` below ``test.baseline_accuracy``. Like TFX's
evaluator, this stage *records* the verdict and succeeds, so that every experiment of a sweep keeps
its metrics; ``package`` refuses a model whose verdict is "failed", which fails ``dvc repro``.
The verdict depends only on this stage's inputs and params, so a run-cache hit restores the same.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from classifier.dataset import load_dataset, read_examples, read_labels
from classifier.errors import run_stage
from classifier.files import atomic_path, write_json
from classifier.model import load_model
from classifier.params import TestParams, load_params
from classifier.paths import Paths
from classifier.streams import split_batches

PREDICT_BATCH = 1000
TILE_PIXELS = 84  # a misclassified image's side in the grid, at least (MNIST's 28 x 3)
# Keras clips probabilities the same way in its cross-entropy.
EPSILON = 1e-7


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[actual, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]
) -> dict:
    """Accuracy, mean cross-entropy loss and per-class precision, recall, F1 and support, the
    classes by name."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    true_probability = probabilities[np.arange(len(labels)), labels]
    per_class = {}
    for index, name in enumerate(classes):
        hits = matrix[index, index]
        precision = _ratio(hits, matrix[:, index].sum())
        recall = _ratio(hits, matrix[index, :].sum())
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(_ratio(2 * precision * recall, precision + recall), 6),
            "support": int(matrix[index, :].sum()),
        }
    return {
        "accuracy": round(float((predicted == labels).mean()), 6),
        "loss": round(float(-np.log(np.clip(true_probability, EPSILON, 1.0)).mean()), 6),
        "examples": len(labels),
        "errors": int((predicted != labels).sum()),
        "per_class": per_class,
    }


def gate_failures(metrics: dict, params: TestParams) -> list[str]:
    """Every gate the metrics fail, each naming the metric, its value and the threshold."""
    failures = []
    if metrics["accuracy"] < params.min_accuracy:
        failures.append(
            f"accuracy {metrics['accuracy']:.4f} < test.min_accuracy {params.min_accuracy}"
        )
    for name, scores in metrics["per_class"].items():
        if scores["support"] and scores["recall"] < params.min_class_recall:
            failures.append(
                f"recall of class {name} {scores['recall']:.4f}"
                f" < test.min_class_recall {params.min_class_recall}"
            )
    baseline = params.baseline_accuracy
    if baseline and baseline - metrics["accuracy"] > params.max_accuracy_drop:
        failures.append(
            f"accuracy {metrics['accuracy']:.4f} is {baseline - metrics['accuracy']:.4f} below"
            f" test.baseline_accuracy {baseline}, more than test.max_accuracy_drop"
            f" {params.max_accuracy_drop}"
        )
    return failures


def confusion_rows(
    labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]
) -> list[dict]:
    return [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(labels, predicted, strict=True)
    ]


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
    caption, columns = 14, 6
    tile_w, tile_h = width * scale, height * scale + caption
    rows = max(1, -(-len(chosen) // columns))
    mode = "L" if images.shape[-1] == 1 else "RGB"
    grid = Image.new(mode, (columns * tile_w, rows * tile_h), color="white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    if not len(chosen):
        draw.text((4, 4), "no misclassified images", fill="black", font=font)
    for slot, index in enumerate(chosen):
        x, y = (slot % columns) * tile_w, (slot // columns) * tile_h
        tile = as_picture(images[index]).resize((tile_w, height * scale), Image.NEAREST)
        grid.paste(tile, (x, y))
        guess = predicted[index]
        label = f"{classes[labels[index]]} as {classes[guess]} {probabilities[index, guess]:.0%}"
        draw.text((x + 2, y + height * scale), label, fill="black", font=font)
    return grid


def evaluate(params: TestParams, paths: Paths) -> tuple[dict, list[str]]:
    """Evaluate; write metrics, report and plots; return the metrics and the failed gates."""
    prepared_dir = paths.prepared_dir
    dataset = load_dataset(prepared_dir)
    classes = dataset.classes
    labels = read_labels(dataset, prepared_dir, "test")
    model = load_model(paths.trained_model)
    images = split_batches(dataset, prepared_dir, "test", PREDICT_BATCH)
    probabilities = model.predict(images.map(lambda batch, _: batch), verbose=0)
    details = classification_metrics(labels, probabilities, classes)
    failures = gate_failures(details, params)
    metrics = {  # the experiments table's columns, in this order (`dvc exp show`)
        "accuracy": details["accuracy"],
        "loss": details["loss"],
        "errors": details["errors"],
        "gate": "failed" if failures else "passed",
        "parameters": model.count_params(),
    }
    write_json(paths.test_metrics, metrics, sort_keys=False)
    write_json(
        paths.test_report, {**details, "gate": {"passed": not failures, "failures": failures}}
    )
    write_json(paths.confusion_plot, confusion_rows(labels, probabilities.argmax(axis=1), classes))
    with atomic_path(paths.worst_plot) as staged:
        worst = most_confident_errors(labels, probabilities, params.worst_examples)
        grid = worst_misclassified_grid(
            read_examples(dataset, prepared_dir, "test", worst),
            labels[worst],
            probabilities[worst],
            classes,
        )
        grid.save(staged, format="PNG")
    return metrics, failures


def main() -> None:
    metrics, failures = evaluate(load_params().test, Paths())
    print(
        f"test: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f},"
        f" {metrics['errors']} errors; quality gate {metrics['gate']}"
    )
    if failures:
        print(
            "test: the model fails the quality gate: " + "; ".join(failures) + ";"
            f" `package` will refuse it (details in {Paths.test_report})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run_stage("test", main)
