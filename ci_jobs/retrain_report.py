"""The retrain pull request's title and body: challenger against champion, overall and per class,
and what changed in the data (images per class and split, the champion's data against the new).

Pure functions of the pipeline's own reports (``metrics/test.json``, ``reports/test.json``,
``data/prepared/dataset.json``) and the champion's model card, so the report says exactly what
the gate judged.
"""

from __future__ import annotations

MARKER = "<!-- retrain report: written by ci_jobs.retrain -->"
SPLITS = ("train", "validation", "test")


def title(metrics: dict) -> str:
    refused = "[refused] " if metrics["gate"] != "passed" else ""
    if "champion_accuracy" not in metrics:
        return f"{refused}Retrain on new data: accuracy {metrics['accuracy']:.4f} (no champion)"
    return (
        f"{refused}Retrain on new data: accuracy {metrics['accuracy']:.4f} vs champion"
        f" {metrics['champion_accuracy']:.4f} ({metrics['accuracy_change']:+.4f})"
    )


def verdict(metrics: dict, report: dict) -> str:
    if metrics["gate"] == "passed":
        return (
            "**Quality gate: passed.** Merging this is the approval of the change: main's pipeline"
            " then reproduces it from the pushed outputs and releases it after `approve-release`."
        )
    failures = "\n".join(f"- {failure}" for failure in report["gate"]["failures"])
    return (
        "**Quality gate: refused.** This model is not packaged, and main's pipeline would refuse"
        f" it too: do not merge; see why, fix the data, and let the next retrain try.\n\n{failures}"
    )


def comparison(metrics: dict, report: dict) -> str:
    champion = report["champion"]
    images = f"the same {report['examples']} test images"
    if champion.get("source") is None:
        return (
            f"No champion to compare with (nothing released yet): accuracy"
            f" {metrics['accuracy']:.4f} on {images}."
        )
    name = (
        f"release {champion['release']}" if champion.get("release") else f"`{champion['source']}`"
    )
    rows = [
        "| | challenger | champion | change |",
        "|---|---|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} | {champion['accuracy']:.4f} |"
        f" {metrics['accuracy_change']:+.4f} |",
        f"| loss | {metrics['loss']:.4f} | {champion['loss']:.4f} |"
        f" {metrics['loss'] - champion['loss']:+.4f} |",
        f"| errors | {metrics['errors']} | {champion['errors']} |"
        f" {metrics['errors'] - champion['errors']:+d} |",
        "",
        "| class | recall | champion's recall | change |",
        "|---|---|---|---|",
    ]
    rows += [
        f"| {cls} | {c['recall']:.4f} | {c['champion_recall']:.4f} | {c['change']:+.4f} |"
        for cls, c in report["comparison"].items()
    ]
    return f"Challenger against the champion ({name}), both scored on {images}:\n\n" + "\n".join(
        rows
    )


def data_changes(updated: list[dict], before: dict | None, after: dict) -> str:
    """The imports moved, and images per class and split: the champion's data, then the new."""
    moved = "\n".join(
        f"- `{u['path']}`: {u['repo']} at `{u['from'][:12]}` → `{u['to'][:12]}`" for u in updated
    )
    head = "| class |" + "".join(f" {split} before | {split} after |" for split in SPLITS)
    rule = "|---|" + "---|---|" * len(SPLITS)
    old = (before or {}).get("counts", {})
    rows = []
    for cls in after["classes"]:
        cells = "".join(
            f" {old.get(split, {}).get(cls, '—')} | {after['counts'][split].get(cls, 0)} |"
            for split in SPLITS
        )
        rows.append(f"| {cls} |{cells}")
    source = "the champion's model card" if before else "no champion: nothing before"
    return f"{moved}\n\nImages per class (before: {source}):\n\n" + "\n".join([head, rule, *rows])


def body(
    metrics: dict,
    report: dict,
    updated: list[dict],
    champion_dataset: dict | None,
    dataset: dict,
    reason: str,
) -> str:
    return (
        "\n\n".join(
            [
                MARKER,
                f"Retrained by CircleCI's `retrain` workflow (started by: {reason}).",
                verdict(metrics, report),
                "## Challenger against champion",
                comparison(metrics, report),
                "## What changed in the data",
                data_changes(updated, champion_dataset, dataset),
            ]
        )
        + "\n"
    )
