"""ci_jobs.sweep: param sets over parallel nodes, and the one table that compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_jobs import sweep

SETS = "train.epochs=10 build.learning_rate=0.002; train.epochs=12 ;train.epochs=3"


def test_each_node_takes_its_own_set(capsys: pytest.CaptureFixture) -> None:
    assert sweep.parse_sets(SETS) == [
        ["train.epochs=10", "build.learning_rate=0.002"],
        ["train.epochs=12"],
        ["train.epochs=3"],
    ]
    environ = {"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "3"}
    assert sweep.main(["args", SETS], environ) == 0
    assert capsys.readouterr().out == "-S train.epochs=10 -S build.learning_rate=0.002\n"
    assert sweep.main(["args", SETS], {**environ, "CIRCLE_NODE_INDEX": "2"}) == 0
    assert capsys.readouterr().out == "-S train.epochs=3\n"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("a=1;;a=2", {}, "empty param set in 'a=1;;a=2'"),
        ("", {}, "empty param set in ''"),
        ("train.epochs10", {}, "'train.epochs10' is not name=value"),
        ("a=1; a=2", {"CIRCLE_NODE_TOTAL": "3"}, "2 param sets but 3 parallel nodes"),
    ],
    ids=["empty-set", "nothing", "no-equals", "node-count"],
)
def test_refusals(text: str, environ: dict, message: str, capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["args", text], environ) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"sweep: error: {message}")
    assert error.count("\n") == 1


def write_metrics(root: Path, accuracy: float, gate: str) -> None:
    (root / "metrics/train").mkdir(parents=True, exist_ok=True)
    test = {
        "accuracy": accuracy,
        "loss": 0.1,
        "errors": round((1 - accuracy) * 10000),
        "gate": gate,
    }
    (root / "metrics/test.json").write_text(json.dumps(test))
    (root / "metrics/train/metrics.json").write_text(json.dumps({"val_accuracy": accuracy}))


def test_table_compares_every_set_and_marks_the_best_that_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "workspace/sweep-results"
    for index, (accuracy, gate) in enumerate([(0.9912, "passed"), (0.9951, "failed")]):
        write_metrics(tmp_path, accuracy, gate)
        environ = {"CIRCLE_NODE_INDEX": str(index), "CIRCLE_NODE_TOTAL": "3"}
        assert sweep.record(SETS, environ, results) == results / f"node-{index}.json"
    # node 2 never reported (it failed)
    assert sweep.table(SETS, results).splitlines() == [
        "# Sweep",
        "",
        "| # | params | accuracy | loss | errors | gate |",
        "|---|---|---|---|---|---|",
        "| 0 | `train.epochs=10 build.learning_rate=0.002` | **0.9912** | 0.1000 | 88 | passed |",
        "| 1 | `train.epochs=12` | 0.9951 | 0.1000 | 49 | failed |",
        "| 2 | `train.epochs=3` | no result | no result | no result | no result |",
        "",
        "Bold: the best accuracy among the sets that passed the quality gate.",
    ]
    recorded = json.loads((results / "node-1.json").read_text())
    assert recorded["set"] == "train.epochs=12"
    assert recorded["train"] == {"val_accuracy": 0.9951}
