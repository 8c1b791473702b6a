"""The champion in the gate: the model in production scored on the same test images as the
challenger, the comparison recorded, and a challenger that is worse refused in one line per
failure naming both numbers. Models here are really trained (small params, a slice of MNIST)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from classifier.model import build_model, save_model
from classifier.params import parse_params
from classifier.paths import Paths
from serving.manifest import describe, render
from stages.train import train
from testbed.repo import write_params
from testbed.suite import (
    error_line,
    export_package,
    fast_params,
    run_module,
    stage_workspace,
    write_prepared_subset,
)

LENIENT = {"min_accuracy": 0.0, "min_class_recall": 0.0}  # only the champion can refuse


def trained(directory: Path, shuffle_labels: int | None = None, **train_params) -> Path:
    """A workspace trained from scratch with the fast params and ``train_params``."""
    from classifier.mnist import MNIST_MODEL_IO

    raw = fast_params(train=train_params)
    directory.mkdir()
    write_params(directory, raw)
    params = parse_params(raw)
    write_prepared_subset(
        directory / "data/prepared",
        train=3000,
        validation=500,
        test=1000,
        shuffle_labels=shuffle_labels,
    )
    save_model(
        build_model(params.build, "float32", *MNIST_MODEL_IO), directory / "models/untrained.keras"
    )
    train(params.train, Paths(directory))
    return directory


def with_champion(directory: Path, champion_workspace: Path, **test_params) -> Path:
    """``directory`` whose champion, ``champion/v1``, is ``champion_workspace``'s model."""
    export_package(
        champion_workspace / "models/model.keras",
        champion_workspace / "data/prepared",
        directory / "champion/v1",
    )
    write_params(directory, fast_params(test={"champion": "champion/v1", **test_params}))
    return directory


def read(directory: Path, name: str) -> dict | list:
    return json.loads((directory / name).read_text())


def test_the_same_model_as_champion_passes_with_no_change(
    tmp_path: Path, trained_workspace: Path
) -> None:
    directory = with_champion(stage_workspace(tmp_path, trained_workspace), trained_workspace)
    result = run_module("test", directory)
    assert result.returncode == 0, result.stderr
    metrics = read(directory, "metrics/test.json")
    assert list(metrics)[-2:] == ["champion_accuracy", "accuracy_change"]  # dvc exp show columns
    assert metrics["champion_accuracy"] == metrics["accuracy"] > 0.5
    assert metrics["accuracy_change"] == 0.0 and metrics["gate"] == "passed"
    report = read(directory, "reports/test.json")
    assert report["champion"]["source"] == "champion/v1" and report["champion"]["release"] is None
    assert report["champion"]["per_class"] == report["per_class"]
    assert {scores["change"] for scores in report["comparison"].values()} == {0.0}
    rows = read(directory, "plots/class_recall.json")
    assert [row["class"] for row in rows] == [str(digit) for digit in range(10)]
    assert all(row["challenger"] == row["champion"] > 0 for row in rows)
    assert f"champion {metrics['accuracy']:.4f} (change +0.0000)" in result.stdout


def test_without_a_champion_the_report_says_so(tmp_path: Path, trained_workspace: Path) -> None:
    directory = stage_workspace(tmp_path, trained_workspace)
    assert run_module("test", directory).returncode == 0
    assert "champion_accuracy" not in read(directory, "metrics/test.json")
    report = read(directory, "reports/test.json")
    assert report["champion"]["source"] is None
    assert "absolute gate alone" in report["champion"]["note"]
    assert {row["champion"] for row in read(directory, "plots/class_recall.json")} == {None}


def test_a_weaker_challenger_is_refused_naming_both_accuracies(
    tmp_path: Path, trained_workspace: Path
) -> None:
    """One epoch, half of it warming up, against the champion's two: it passes the absolute
    gate, not the comparison."""
    weaker = trained(tmp_path / "weaker", epochs=1, warmup_fraction=0.5)
    with_champion(weaker, trained_workspace, min_accuracy=0.5)
    result = run_module("test", weaker)
    assert result.returncode == 0, result.stderr
    metrics = read(weaker, "metrics/test.json")
    assert metrics["gate"] == "failed" and metrics["accuracy"] >= 0.5
    failures = read(weaker, "reports/test.json")["gate"]["failures"]
    assert not [f for f in failures if "test.min_" in f]  # the absolute gate passed
    assert failures[0] == (
        f"accuracy {metrics['accuracy']:.4f} is {-metrics['accuracy_change']:.4f} below the"
        f" champion's {metrics['champion_accuracy']:.4f}, more than test.max_accuracy_drop 0.002"
    )
    assert f"test: gate failed: {failures[0]}\n" in result.stderr


def test_a_challenger_trained_on_shuffled_labels_is_refused(
    tmp_path: Path, trained_workspace: Path
) -> None:
    shuffled = trained(tmp_path / "shuffled", shuffle_labels=7)
    with_champion(shuffled, trained_workspace, **LENIENT)
    assert run_module("test", shuffled).returncode == 0
    metrics = read(shuffled, "metrics/test.json")
    assert metrics["accuracy"] < 0.3 < metrics["champion_accuracy"]
    failures = read(shuffled, "reports/test.json")["gate"]["failures"]
    assert failures[0].startswith(f"accuracy {metrics['accuracy']:.4f} is ")
    assert sum("below the champion's" in failure for failure in failures) >= 5  # classes too


def test_a_champion_of_other_classes_is_one_line_and_writes_nothing(
    tmp_path: Path, trained_workspace: Path
) -> None:
    directory = with_champion(stage_workspace(tmp_path, trained_workspace), trained_workspace)
    card_path = directory / "champion/v1/assets.extra/model_card.json"
    card = json.loads(card_path.read_text())
    card["dataset"]["classes"] = ["cat", "dog"]
    card_path.write_text(json.dumps(card))
    result = run_module("test", directory)
    assert result.returncode == 1
    assert error_line(result) == (
        "test: error: the champion (champion/v1) classifies into cat, dog, the data into"
        " 0, 1, 2, 3, 4, 5, 6, 7, 8, 9: they cannot be compared; set test.champion to a model of"
        " these classes, or '' for none"
    )
    assert not (directory / "metrics").exists() and not (directory / "reports").exists()


def test_a_champion_folder_that_is_missing_is_one_line(
    tmp_path: Path, trained_workspace: Path
) -> None:
    directory = stage_workspace(tmp_path, trained_workspace)
    write_params(directory, fast_params(test={"champion": "champion/v9"}))
    result = run_module("test", directory)
    assert result.returncode == 1
    assert error_line(result).startswith("test: error: test.champion champion/v9 does not exist;")


def test_a_released_champion_is_checked_against_its_manifest(
    tmp_path: Path, trained_workspace: Path
) -> None:
    directory = stage_workspace(tmp_path, trained_workspace)
    release = export_package(
        trained_workspace / "models/model.keras",
        trained_workspace / "data/prepared",
        directory / "champion/mnist/3",
    )
    files = {p.relative_to(release).as_posix(): p for p in release.rglob("*") if p.is_file()}
    (release / "MANIFEST.json").write_bytes(render("mnist", 3, describe(files)))
    write_params(directory, fast_params(test={"champion": 3}))
    result = run_module("test", directory)
    assert result.returncode == 0, result.stderr
    assert read(directory, "reports/test.json")["champion"]["release"] == 3
    assert read(directory, "reports/test.json")["champion"]["source"] == "champion/mnist/3"

    shutil.rmtree(directory / "metrics")
    variables = next((release / "variables").glob("variables.data-*"))
    data = variables.read_bytes()
    variables.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed
    result = run_module("test", directory)
    assert result.returncode == 1
    assert error_line(result) == (
        f"test: error: {variables.relative_to(directory)} differs from its MANIFEST.json; run"
        " `python -m ci_jobs.champion` to bring release 3 again"
    )
    assert not (directory / "metrics").exists()


def test_a_release_that_was_never_brought_says_how(tmp_path: Path, trained_workspace: Path) -> None:
    directory = stage_workspace(tmp_path, trained_workspace)
    write_params(directory, fast_params(test={"champion": 4}))
    result = run_module("test", directory)
    assert result.returncode == 1
    assert "test.champion is release 4 but" in error_line(result)
    assert "run `python -m ci_jobs.champion` (it needs the bucket)" in error_line(result)
