"""Stage ``test``: evaluate the trained model on the MNIST test set and give the gate's verdict.

Writes ``metrics/test.json`` (the experiments table's numbers: accuracy, loss, errors, the
verdict and the model's size), ``reports/test.json`` (per-class precision/recall/F1 and every
failed gate), ``plots/confusion.json`` (one ``{actual, predicted}`` row per test image, for DVC's
confusion template) and ``plots/worst_misclassified.png``.

The gates: accuracy below ``test.min_accuracy``, any class recall below ``test.min_class_recall``,
or an accuracy more than ``test.max_accuracy_drop`` below ``test.baseline_accuracy``. Like TFX's
evaluator, this stage *records* the verdict and succeeds, so that every experiment of a sweep keeps
its metrics; ``package`` refuses a model whose verdict is "failed", which fails ``dvc repro``.
The verdict depends only on this stage's inputs and params, so a run-cache hit restores the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stages.artifacts import atomic_path, write_json
from stages.cli import run_stage
from stages.config import TestParams, load_params
from stages.datasets import load_split
from stages.keras_io import load_model
from stages.paths import (
    CONFUSION_PLOT,
    PREPARED_DIR,
    TEST_METRICS,
    TEST_REPORT,
    TRAINED_MODEL,
    WORST_PLOT,
)
from stages.task import NUM_CLASSES

PREDICT_BATCH = 1000
# Keras clips probabilities the same way in its cross-entropy.
EPSILON = 1e-7


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``matrix[actual, predicted]`` counts."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy loss and per-class precision, recall, F1 and support."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted)
    true_probability = probabilities[np.arange(len(labels)), labels]
    per_class = {}
    for digit in range(NUM_CLASSES):
        hits = matrix[digit, digit]
        precision = _ratio(hits, matrix[:, digit].sum())
        recall = _ratio(hits, matrix[digit, :].sum())
        per_class[str(digit)] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(_ratio(2 * precision * recall, precision + recall), 6),
            "support": int(matrix[digit, :].sum()),
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
    for digit, scores in metrics["per_class"].items():
        if scores["support"] and scores["recall"] < params.min_class_recall:
            failures.append(
                f"recall of digit {digit} {scores['recall']:.4f}"
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


def confusion_rows(labels: np.ndarray, predicted: np.ndarray) -> list[dict]:
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(labels, predicted, strict=True)]


def worst_misclassified_grid(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, count: int
) -> Image.Image:
    """The ``count`` most confident wrong predictions, captioned "<true> as <predicted> <conf>"."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][:count]
    scale, caption, columns = 3, 14, 6
    tile_w, tile_h = 28 * scale, 28 * scale + caption
    rows = max(1, -(-len(chosen) // columns))
    grid = Image.new("L", (columns * tile_w, rows * tile_h), color=255)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    if not len(chosen):
        draw.text((4, 4), "no misclassified digits", fill=0, font=font)
    for slot, index in enumerate(chosen):
        x, y = (slot % columns) * tile_w, (slot // columns) * tile_h
        digit = Image.fromarray(255 - images[index]).resize((tile_w, tile_w), Image.NEAREST)
        grid.paste(digit, (x, y))
        guess = predicted[index]
        label = f"{labels[index]} as {guess} {probabilities[index, guess]:.0%}"
        draw.text((x + 2, y + tile_w), label, fill=0, font=font)
    return grid


def evaluate(
    params: TestParams,
    model_file: Path = TRAINED_MODEL,
    prepared_dir: Path = PREPARED_DIR,
    metrics_file: Path = TEST_METRICS,
    report_file: Path = TEST_REPORT,
    confusion_file: Path = CONFUSION_PLOT,
    worst_file: Path = WORST_PLOT,
) -> tuple[dict, list[str]]:
    """Evaluate; write metrics, report and plots; return the metrics and the failed gates."""
    images, labels = load_split("test", prepared_dir)
    model = load_model(model_file)
    probabilities = model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
    details = classification_metrics(labels, probabilities)
    failures = gate_failures(details, params)
    metrics = {  # the experiments table's columns, in this order (`dvc exp show`)
        "accuracy": details["accuracy"],
        "loss": details["loss"],
        "errors": details["errors"],
        "gate": "failed" if failures else "passed",
        "parameters": model.count_params(),
    }
    write_json(metrics_file, metrics, sort_keys=False)
    write_json(report_file, {**details, "gate": {"passed": not failures, "failures": failures}})
    write_json(confusion_file, confusion_rows(labels, probabilities.argmax(axis=1)))
    with atomic_path(worst_file) as staged:
        grid = worst_misclassified_grid(images, labels, probabilities, params.worst_examples)
        grid.save(staged, format="PNG")
    return metrics, failures


def main() -> None:
    metrics, failures = evaluate(load_params().test)
    print(
        f"test: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f},"
        f" {metrics['errors']} errors; quality gate {metrics['gate']}"
    )
    if failures:
        print(
            "test: the model fails the quality gate: " + "; ".join(failures) + ";"
            f" `package` will refuse it (details in {TEST_REPORT})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run_stage("test", main)
