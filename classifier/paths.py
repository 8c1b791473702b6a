"""Where every artifact of the pipeline lives under a repository root, in one object.

``Paths()`` is the repository the stages run in (DVC runs them from its root); ``Paths(tmp)`` the
same layout anywhere else, for tests and benchmarks. On the class itself each path is relative,
as ``dvc.yaml`` names it: ``Paths.trained_model == Path("models/model.keras")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from classifier.params import PackageParams


class _Under:
    """A path relative to the root of the ``Paths`` it is read from."""

    def __init__(self, relative: str):
        self.relative = Path(relative)

    def __get__(self, paths: Paths | None, owner: type) -> Path:
        return self.relative if paths is None else paths.root / self.relative


class Paths:
    """Every path a stage reads or writes, under ``root``."""

    raw_dir = _Under("data/raw")  # fetch: the four extracted MNIST IDX files
    prepared_dir = _Under("data/prepared")  # prepare: dataset.json, {train,validation,test}/*.bin
    data_report = _Under("reports/data_validation.json")  # prepare: findings, checksums
    untrained_model = _Under("models/untrained.keras")  # build
    model_summary = _Under("models/summary.txt")  # build
    trained_model = _Under("models/model.keras")  # train
    train_log_dir = _Under("metrics/train")  # train: DVCLive metrics.json and per-epoch plots
    train_report = _Under("reports/train.json")  # train: where it ran (devices, precision, TF)
    train_state_dir = _Under(".train-state")  # train: resume checkpoint (git-ignored)
    test_metrics = _Under("metrics/test.json")  # test: the experiments table's numbers, verdict
    test_report = _Under("reports/test.json")  # test: per-class scores and the failed gates
    confusion_plot = _Under("plots/confusion.json")  # test
    worst_plot = _Under("plots/worst_misclassified.png")  # test
    champion_dir = _Under("champion")  # test: the model to beat (classifier/champion.py)
    class_recall_plot = _Under("plots/class_recall.json")  # test: challenger and champion
    dist_dir = _Under("dist")  # package: dist/<model_name>/, a SavedModel (releases number it)

    def __init__(self, root: Path | str = "."):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Paths({str(self.root)!r})"

    def export_dir(self, package: PackageParams) -> Path:
        """``dist/<model_name>``: the SavedModel; the release gives it its version number."""
        return self.dist_dir / package.model_name
