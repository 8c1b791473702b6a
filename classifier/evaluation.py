"""Scores and the quality gate: what the ``test`` stage measures and how it judges a model.

The gate has two parts, as TFX's evaluator: absolute thresholds (``test.min_accuracy``,
``test.min_class_recall``) and, when there is a champion (the model in production, scored on the
same test images), the largest drops allowed below it (``test.max_accuracy_drop`` overall,
``test.max_class_recall_drop`` for each class). With no champion only the absolute part applies.
"""

from __future__ import annotations

import numpy as np

from classifier.params import TestParams

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


def absolute_failures(metrics: dict, params: TestParams) -> list[str]:
    """Every absolute threshold the metrics fail, each naming the metric, value and threshold."""
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
    return failures


def champion_failures(challenger: dict, champion: dict, params: TestParams) -> list[str]:
    """Every drop below the champion (scored on the same images) larger than allowed, each
    naming both numbers and the allowance."""
    failures = []
    drop = champion["accuracy"] - challenger["accuracy"]
    if drop > params.max_accuracy_drop + EPSILON:
        failures.append(
            f"accuracy {challenger['accuracy']:.4f} is {drop:.4f} below the champion's"
            f" {champion['accuracy']:.4f}, more than test.max_accuracy_drop"
            f" {params.max_accuracy_drop}"
        )
    for name, scores in challenger["per_class"].items():
        theirs = champion["per_class"][name]
        drop = theirs["recall"] - scores["recall"]
        if scores["support"] and drop > params.max_class_recall_drop + EPSILON:
            failures.append(
                f"recall of class {name} {scores['recall']:.4f} is {drop:.4f} below the"
                f" champion's {theirs['recall']:.4f}, more than test.max_class_recall_drop"
                f" {params.max_class_recall_drop}"
            )
    return failures


def gate_failures(challenger: dict, champion: dict | None, params: TestParams) -> list[str]:
    """The whole gate: absolute thresholds, then the comparison with the champion if any."""
    failures = absolute_failures(challenger, params)
    if champion is not None:
        failures += champion_failures(challenger, champion, params)
    return failures


def per_class_comparison(challenger: dict, champion: dict) -> dict[str, dict]:
    """Class -> both recalls and the change, for the report, the model card and the plots."""
    return {
        name: {
            "recall": scores["recall"],
            "champion_recall": champion["per_class"][name]["recall"],
            "change": round(scores["recall"] - champion["per_class"][name]["recall"], 6),
        }
        for name, scores in challenger["per_class"].items()
    }
