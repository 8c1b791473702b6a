"""A sweep of param sets over CircleCI's parallel nodes, and one table comparing them.

    python -m ci_jobs.sweep args "SETS"            # this node's `-S name=value` arguments
    python -m ci_jobs.sweep record "SETS" DIR      # this node's metrics -> DIR/node-<index>.json
    python -m ci_jobs.sweep table "SETS" DIR OUT   # every node's metrics -> one Markdown table

SETS is the pipeline parameter, param sets separated by ``;``, each a whitespace-separated list
of ``name=value`` (``"train.epochs=10 build.learning_rate=0.002; train.epochs=12"``). CircleCI
fixes matrix values when it compiles the config, so a list given at run time is spread over
``parallelism`` nodes instead: node ``CIRCLE_NODE_INDEX`` takes set number ``CIRCLE_NODE_INDEX``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from classifier.errors import run_stage
from classifier.paths import Paths

COLUMNS = ("accuracy", "loss", "errors", "gate")  # from metrics/test.json


class SweepError(Exception):
    """A sweep that cannot run as given, and what to do."""


def parse_sets(text: str) -> list[list[str]]:
    """``"a=1 b=2; a=3"`` -> ``[["a=1", "b=2"], ["a=3"]]``, every override checked for shape."""
    sets = [part.split() for part in text.split(";")]
    if not text.strip() or any(not overrides for overrides in sets):
        raise SweepError(
            f"empty param set in {text!r}; give sets separated by ';', e.g."
            " 'train.epochs=10 build.learning_rate=0.002; train.epochs=12'"
        )
    for override in (o for overrides in sets for o in overrides):
        name, equals, value = override.partition("=")
        if not (equals and name and value):
            raise SweepError(f"{override!r} is not name=value; write e.g. train.epochs=10")
    return sets


def node_set(sets: list[list[str]], environ: dict[str, str]) -> tuple[int, list[str]]:
    """This node's index and param set; the node count must equal the number of sets."""
    index = int(environ.get("CIRCLE_NODE_INDEX", "0"))
    total = int(environ.get("CIRCLE_NODE_TOTAL", "1"))
    if total != len(sets):
        raise SweepError(
            f"{len(sets)} param sets but {total} parallel nodes; start the pipeline with"
            f" sweep-nodes={len(sets)}"
        )
    return index, sets[index]


def record(text: str, environ: dict[str, str], directory: Path) -> Path:
    """Write this node's set and metrics (test and last training epoch) for the table job."""
    index, overrides = node_set(parse_sets(text), environ)
    result = {
        "index": index,
        "set": " ".join(overrides),
        "test": json.loads(Paths.test_metrics.read_text()),
        "train": json.loads((Paths.train_log_dir / "metrics.json").read_text()),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"node-{index}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table(text: str, directory: Path) -> str:
    """One Markdown row per set, in the order given; the best accuracy that passed in bold."""
    sets = parse_sets(text)
    results = {}
    for path in directory.glob("node-*.json"):
        result = json.loads(path.read_text())
        results[result["index"]] = result
    passed = [r["test"]["accuracy"] for r in results.values() if r["test"]["gate"] == "passed"]
    best = max(passed, default=None)
    lines = [
        "| # | params | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for index, overrides in enumerate(sets):
        params = "`" + " ".join(overrides) + "`"
        if index not in results:
            lines.append(
                f"| {index} | {params} | " + " | ".join(["no result"] * len(COLUMNS)) + " |"
            )
            continue
        metrics = results[index]["test"]
        cells = [cell(metrics[column]) for column in COLUMNS]
        if metrics["accuracy"] == best and metrics["gate"] == "passed":
            cells[0] = f"**{cells[0]}**"
        lines.append(f"| {index} | {params} | " + " | ".join(cells) + " |")
    note = "Bold: the best accuracy among the sets that passed the quality gate."
    return "\n".join(["# Sweep", "", *lines, "", note, ""])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.sweep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    node = commands.add_parser("args", help="this node's `dvc exp run` options")
    node.add_argument("sets", help="the param sets, separated by ';'")
    keep = commands.add_parser("record", help="write this node's metrics to DIR")
    keep.add_argument("sets")
    keep.add_argument("folder", type=Path)
    tabled = commands.add_parser("table", help="the nodes' metrics as a Markdown table, to OUT")
    tabled.add_argument("sets")
    tabled.add_argument("folder", type=Path)
    tabled.add_argument("out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str], environ: dict[str, str]) -> int:
    args = parse_args(argv)
    try:
        if args.command == "args":
            _, overrides = node_set(parse_sets(args.sets), environ)
            print(" ".join(f"-S {override}" for override in overrides))
        elif args.command == "record":
            print(f"sweep: metrics written to {record(args.sets, environ, args.folder)}")
        else:
            args.out.write_text(table(args.sets, args.folder))
            print(args.out.read_text())
    except SweepError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_stage("sweep", lambda: main(sys.argv[1:], dict(os.environ)))
