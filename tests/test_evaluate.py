"""The test stage: metrics computed right, gates that name metric, value and threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.dataset import load_split
from classifier.evaluation import classification_metrics, gate_failures
from classifier.params import TestParams
from classifier.pictures import most_confident_errors, worst_misclassified_grid
from testbed.suite import fast_params, run_module, stage_workspace

CLASSES = tuple(str(digit) for digit in range(10))

LABELS = np.array([0, 0, 1, 1, 2])
PROBABILITIES = np.array(
    [
        [0.9, 0.05, 0.05] + [0.0] * 7,
        [0.3, 0.6, 0.1] + [0.0] * 7,  # a 0 taken for a 1, with 60% confidence
        [0.1, 0.8, 0.1] + [0.0] * 7,
        [0.0, 1.0, 0.0] + [0.0] * 7,
        [0.2, 0.2, 0.6] + [0.0] * 7,
    ]
)


def _params(**changes) -> TestParams:
    return TestParams(**{**fast_params()["test"], **changes})


def test_classification_metrics_by_hand() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES, CLASSES)
    assert metrics["accuracy"] == 0.8
    assert metrics["errors"] == 1
    expected_loss = -np.mean(np.log([0.9, 0.3, 0.8, 1.0, 0.6]))
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-6)
    assert metrics["per_class"]["0"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.666667,
        "support": 2,
    }
    assert metrics["per_class"]["1"] == {
        "precision": 0.666667,
        "recall": 1.0,
        "f1": 0.8,
        "support": 2,
    }
    assert metrics["per_class"]["2"]["f1"] == 1.0
    assert metrics["per_class"]["7"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_gates_name_metric_value_and_threshold() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES, CLASSES)
    assert gate_failures(metrics, None, _params(min_accuracy=0.8, min_class_recall=0.5)) == []
    failures = gate_failures(metrics, None, _params(min_accuracy=0.9, min_class_recall=0.6))
    assert failures == [
        "accuracy 0.8000 < test.min_accuracy 0.9",
        "recall of class 0 0.5000 < test.min_class_recall 0.6",
    ]


def test_the_champion_gate_names_both_numbers() -> None:
    """The champion got every image right; the challenger missed one 0 (recall 0.5)."""
    challenger = classification_metrics(LABELS, PROBABILITIES, CLASSES)
    champion = classification_metrics(LABELS, np.eye(10)[LABELS], CLASSES)
    lenient = {"min_accuracy": 0.0, "min_class_recall": 0.0}
    failures = gate_failures(challenger, champion, _params(**lenient))
    assert failures == [
        "accuracy 0.8000 is 0.2000 below the champion's 1.0000, more than"
        " test.max_accuracy_drop 0.002",
        "recall of class 0 0.5000 is 0.5000 below the champion's 1.0000, more than"
        " test.max_class_recall_drop 0.01",
    ]
    allowing = _params(**lenient, max_accuracy_drop=0.2, max_class_recall_drop=0.5)
    assert gate_failures(challenger, champion, allowing) == []
    assert gate_failures(champion, challenger, _params(**lenient)) == []  # better: no drop


def test_worst_grid_shows_most_confident_errors_first() -> None:
    images = np.zeros((5, 28, 28, 1), np.uint8)
    for index in range(5):
        images[index, index, :] = 255  # each image marked by a white row at its index
    probabilities = np.tile(np.eye(10)[[0]], (5, 1)).astype(np.float32)
    probabilities[[1, 3]] = np.eye(10)[1] * 0.7 + np.eye(10)[0] * 0.3
    probabilities[3] = np.eye(10)[1] * 0.9 + np.eye(10)[0] * 0.1
    labels = np.zeros(5, np.int64)
    worst = most_confident_errors(labels, probabilities, 10)
    assert worst.tolist() == [3, 1]
    grid = worst_misclassified_grid(images[worst], labels[worst], probabilities[worst], CLASSES)
    assert grid.size == (6 * 84, 84 + 14)  # two errors fit one row of six 84-pixel tiles
    pixels = np.asarray(grid)
    # shown as they are (white row on black): first tile image 3 (90% sure), then image 1 (70%)
    assert pixels[3 * 3, 5] == 255 and pixels[1 * 3, 5] == 0
    assert pixels[1 * 3, 84 + 5] == 255 and pixels[3 * 3, 84 + 5] == 0
    none = most_confident_errors(labels, np.tile(np.eye(10)[[0]], (5, 1)), 10)
    empty = worst_misclassified_grid(images[none], labels[none], probabilities[none], CLASSES)
    assert empty.size == (6 * 84, 84 + 14)


def test_stage_passes_and_writes_everything(tmp_path: Path, trained_workspace: Path) -> None:
    directory = stage_workspace(tmp_path, trained_workspace)
    result = run_module("test", directory)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((directory / "metrics/test.json").read_text())
    assert list(metrics) == ["accuracy", "loss", "errors", "gate", "parameters"]  # table columns
    assert "no champion" in result.stdout
    assert metrics["parameters"] == 20618  # the fast params' model
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert metrics["gate"] == "passed"
    report = json.loads((directory / "reports/test.json").read_text())
    assert report["examples"] == 1000
    assert report["errors"] == metrics["errors"] == round(1000 * (1 - metrics["accuracy"]))
    assert sum(scores["support"] for scores in report["per_class"].values()) == 1000
    assert report["gate"] == {"passed": True, "failures": []}
    assert f"test: accuracy {metrics['accuracy']:.4f}" in result.stdout
    assert result.stdout.rstrip().endswith("quality gate passed")
    rows = json.loads((directory / "plots/confusion.json").read_text())
    assert len(rows) == 1000
    labels = load_split("test", directory / "data/prepared")[1]
    assert [row["actual"] for row in rows] == [str(label) for label in labels]
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert correct / 1000 == pytest.approx(metrics["accuracy"])
    with Image.open(directory / "plots/worst_misclassified.png") as grid:
        assert grid.size == (6 * 84, 2 * 98)  # fast params show 12 examples


def test_stage_records_a_failed_gate_and_succeeds(tmp_path: Path, trained_workspace: Path) -> None:
    """A sweep keeps every experiment's metrics: failing the gate is a verdict, not a crash."""
    directory = stage_workspace(tmp_path, trained_workspace, min_accuracy=0.999)
    result = run_module("test", directory)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((directory / "metrics/test.json").read_text())
    assert metrics["gate"] == "failed"
    failure = f"accuracy {metrics['accuracy']:.4f} < test.min_accuracy 0.999"
    report = json.loads((directory / "reports/test.json").read_text())
    assert report["gate"] == {"passed": False, "failures": [failure]}
    assert result.stdout.rstrip().endswith("quality gate failed")
    assert f"test: gate failed: {failure}\n" in result.stderr
    assert "`package` will refuse this model (details in reports/test.json)" in result.stderr
