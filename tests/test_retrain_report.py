"""The retrain pull request's title and body, from the pipeline's own reports."""

from __future__ import annotations

from ci_jobs.retrain_report import MARKER, body, title

METRICS = {"accuracy": 0.95, "loss": 0.2, "errors": 5, "gate": "passed"}
CHAMPION = {"source": "champion/mnist/2", "release": 2, "accuracy": 0.96, "loss": 0.18,
            "errors": 4}  # fmt: skip
REPORT = {
    "examples": 100,
    "champion": CHAMPION,
    "comparison": {
        "cat": {"recall": 0.9, "champion_recall": 0.94, "change": -0.04},
        "dog": {"recall": 1.0, "champion_recall": 0.98, "change": 0.02},
    },
    "gate": {"passed": True, "failures": []},
}
COMPARED = {**METRICS, "champion_accuracy": 0.96, "accuracy_change": -0.01}
UPDATED = [{"path": "data/images.dvc", "repo": "git@host:registry", "from": "a" * 40,
            "to": "b" * 40}]  # fmt: skip
BEFORE = {"classes": ["cat", "dog"], "counts": {"train": {"cat": 10, "dog": 12},
          "validation": {"cat": 1, "dog": 1}, "test": {"cat": 3, "dog": 3}}}  # fmt: skip
AFTER = {"classes": ["cat", "dog"], "counts": {"train": {"cat": 20, "dog": 12},
         "validation": {"cat": 2, "dog": 1}, "test": {"cat": 5, "dog": 3}}}  # fmt: skip


def test_titles_say_the_verdict_and_both_accuracies() -> None:
    assert title(COMPARED) == "Retrain on new data: accuracy 0.9500 vs champion 0.9600 (-0.0100)"
    refused = {**COMPARED, "gate": "failed"}
    assert title(refused).startswith("[refused] Retrain on new data: accuracy 0.9500 vs champion")
    assert title(METRICS) == "Retrain on new data: accuracy 0.9500 (no champion)"


def test_the_body_compares_per_class_and_counts_the_data_before_and_after() -> None:
    text = body(COMPARED, REPORT, UPDATED, BEFORE, AFTER, "a drift alarm")
    assert text.startswith(MARKER)
    assert "(started by: a drift alarm)" in text and "**Quality gate: passed.**" in text
    assert "Challenger against the champion (release 2), both scored on the same 100" in text
    assert "| accuracy | 0.9500 | 0.9600 | -0.0100 |" in text
    assert "| errors | 5 | 4 | +1 |" in text
    assert "| cat | 0.9000 | 0.9400 | -0.0400 |" in text
    assert "- `data/images.dvc`: git@host:registry at `aaaaaaaaaaaa` → `bbbbbbbbbbbb`" in text
    assert "| cat | 10 | 20 | 1 | 2 | 3 | 5 |" in text
    assert "| dog | 12 | 12 | 1 | 1 | 3 | 3 |" in text


def test_a_refused_body_lists_every_failure_and_says_not_to_merge() -> None:
    failures = ["accuracy 0.9500 is 0.0100 below the champion's 0.9600, more than x"]
    refused = {**REPORT, "gate": {"passed": False, "failures": failures}}
    text = body({**COMPARED, "gate": "failed"}, refused, UPDATED, BEFORE, AFTER, "schedule")
    assert "**Quality gate: refused.**" in text and "do not merge" in text
    assert f"- {failures[0]}" in text


def test_without_a_champion_there_is_nothing_before() -> None:
    alone = {**REPORT, "champion": {"source": None, "note": "no champion"}}
    text = body(METRICS, alone, UPDATED, None, AFTER, "schedule")
    assert "No champion to compare with (nothing released yet): accuracy 0.9500" in text
    assert "| cat | — | 20 | — | 2 | — | 5 |" in text
