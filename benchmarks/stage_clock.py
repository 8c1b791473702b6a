"""Run one stage as DVC runs it and print how long its work took, start-up and imports left out.

    python -m benchmarks.stage_clock prepare

The last line is ``stage_clock: <seconds>``: the time of the stage's ``main()`` in this process,
so a benchmark can compare the cost that grows with the data at scales where the interpreter's
start-up and the imports (about half a second) would otherwise be a large, noisy part of it.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path

from classifier.errors import run_stage

PREFIX = "stage_clock: "
STAGES = Path(__file__).resolve().parent.parent / "stages"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_clock", description=__doc__)
    stages = sorted(p.stem for p in STAGES.glob("*.py") if not p.stem.startswith("_"))
    parser.add_argument("stage", choices=stages, help="the stage to run and time")
    stage = importlib.import_module(f"stages.{parser.parse_args(argv).stage}")
    started = time.perf_counter()
    stage.main()
    print(f"{PREFIX}{time.perf_counter() - started:.6f}")


def clocked_seconds(output: str) -> float:
    """The seconds a ``stage_clock`` run printed last."""
    found = re.findall(rf"^{PREFIX}([\d.]+)$", output, re.MULTILINE)
    if not found:
        sys.exit(f"no '{PREFIX}' line in the stage's output:\n{output[-2000:]}")
    return float(found[-1])


if __name__ == "__main__":
    run_stage("stage_clock", main)
