"""Stage ``test``: score the trained model, and the champion if there is one, on the test split;
record the quality gate's verdict.

Writes ``metrics/test.json`` (the experiments table's numbers: accuracy, loss, errors, the
verdict, the model's size and, with a champion, its accuracy and the change), ``reports/test.json``
(per-class scores of both, every failed gate), ``plots/confusion.json`` (one ``{actual,
predicted}`` row per test image, for DVC's confusion template), ``plots/class_recall.json`` (each
class's recall, and the champion's) and ``plots/worst_misclassified.png``.

The gate and the champion are explained in ``classifier/evaluation.py`` and
``classifier/champion.py``. Like TFX's evaluator, this stage *records* the verdict and succeeds,
so that every experiment of a sweep keeps its metrics; ``package`` refuses a model whose verdict is
"failed", which fails ``dvc repro``.
"""

from __future__ import annotations

import sys

import numpy as np

from classifier.champion import Champion, champion_probabilities, check_comparable, resolve
from classifier.dataset import Dataset, load_dataset, read_examples, read_labels
from classifier.errors import run_stage
from classifier.evaluation import classification_metrics, gate_failures, per_class_comparison
from classifier.files import atomic_path, write_json
from classifier.model import load_model
from classifier.params import TestParams, load_params
from classifier.paths import Paths
from classifier.pictures import most_confident_errors, worst_misclassified_grid
from classifier.savedmodel import PREDICT_BATCH
from classifier.streams import split_batches

NO_CHAMPION = "no champion (test.champion is ''): the absolute gate alone"


def scoring_batches(dataset: Dataset, paths: Paths):
    """The test split's images in batches, in the shards' order (labels read apart)."""
    return split_batches(dataset, paths.prepared_dir, "test", PREDICT_BATCH).map(
        lambda images, _: images
    )


def score_champion(champion: Champion, dataset: Dataset, paths: Paths, labels: np.ndarray) -> dict:
    probabilities = champion_probabilities(
        champion, scoring_batches(dataset, paths).as_numpy_iterator()
    )
    return {**champion.describe(), **classification_metrics(labels, probabilities, dataset.classes)}


def recall_rows(challenger: dict, champion: dict | None) -> list[dict]:
    """One row per class: the challenger's recall and the champion's (null with none)."""
    return [
        {
            "class": name,
            "challenger": scores["recall"],
            "champion": champion["per_class"][name]["recall"] if champion else None,
        }
        for name, scores in challenger["per_class"].items()
    ]


def write_worst_plot(
    paths: Paths, dataset: Dataset, labels: np.ndarray, probabilities: np.ndarray, count: int
) -> None:
    worst = most_confident_errors(labels, probabilities, count)
    grid = worst_misclassified_grid(
        read_examples(dataset, paths.prepared_dir, "test", worst),
        labels[worst],
        probabilities[worst],
        dataset.classes,
    )
    with atomic_path(paths.worst_plot) as staged:
        grid.save(staged, format="PNG")


def evaluate(params: TestParams, model_name: str, paths: Paths) -> tuple[dict, list[str]]:
    """Score, judge, write metrics, report and plots; return the metrics and the failed gates.

    ``model_name`` says where a released champion is kept (``champion/<model_name>/<N>``)."""
    dataset = load_dataset(paths.prepared_dir)
    labels = read_labels(dataset, paths.prepared_dir, "test")
    champion = resolve(params.champion, model_name, paths)
    if champion:
        check_comparable(champion, dataset)  # before anything is computed
    model = load_model(paths.trained_model)
    probabilities = model.predict(scoring_batches(dataset, paths), verbose=0)
    challenger = classification_metrics(labels, probabilities, dataset.classes)
    rival = score_champion(champion, dataset, paths, labels) if champion else None
    failures = gate_failures(challenger, rival, params)
    metrics = {  # the experiments table's columns, in this order (`dvc exp show`)
        "accuracy": challenger["accuracy"],
        "loss": challenger["loss"],
        "errors": challenger["errors"],
        "gate": "failed" if failures else "passed",
        "parameters": model.count_params(),
    }
    if rival:
        metrics["champion_accuracy"] = rival["accuracy"]
        metrics["accuracy_change"] = round(challenger["accuracy"] - rival["accuracy"], 6)
    report = {
        **challenger,
        "champion": rival or {"source": None, "note": NO_CHAMPION},
        "gate": {"passed": not failures, "failures": failures},
    }
    if rival:
        report["comparison"] = per_class_comparison(challenger, rival)
    write_json(paths.test_metrics, metrics, sort_keys=False)
    write_json(paths.test_report, report)
    predicted = probabilities.argmax(axis=1)
    write_json(
        paths.confusion_plot,
        [
            {"actual": dataset.classes[a], "predicted": dataset.classes[p]}
            for a, p in zip(labels, predicted, strict=True)
        ],
    )
    write_json(paths.class_recall_plot, recall_rows(challenger, rival))
    write_worst_plot(paths, dataset, labels, probabilities, params.worst_examples)
    return metrics, failures


def main() -> None:
    settings = load_params()
    metrics, failures = evaluate(settings.test, settings.package.model_name, Paths())
    against = (
        f"; champion {metrics['champion_accuracy']:.4f} (change {metrics['accuracy_change']:+.4f})"
        if "champion_accuracy" in metrics
        else "; no champion"
    )
    print(
        f"test: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f},"
        f" {metrics['errors']} errors{against}; quality gate {metrics['gate']}"
    )
    for failure in failures:
        print(f"test: gate failed: {failure}", file=sys.stderr)
    if failures:
        print(
            f"test: `package` will refuse this model (details in {Paths.test_report})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    run_stage("test", main)
