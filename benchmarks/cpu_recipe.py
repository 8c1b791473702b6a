"""What the CPU recipe costs: training time with it and with what this machine would pick alone.

    .venv/bin/python -m benchmarks.cpu_recipe            # -> benchmarks/CPU_RECIPE.{md,json}

Each variant trains the default model for ``--steps`` batches of 64 (``testbed.weights_probe``)
in a fresh process started with its environment; the variants take turns for ``--rounds``
rounds, so load hits all alike, and the median is reported. The variants:

- ``recipe``: ``classifier.CPU_RECIPE`` (pools of 2, oneDNN custom ops off, oneDNN capped at AVX);
- ``machine default``: what TensorFlow picks here without it (pools as large as the cores,
  oneDNN uncapped, custom ops as TensorFlow turns them on for this CPU);
- the recipe with oneDNN capped at AVX2, and uncapped: where the cost lies.

Every variant's weights md5 is reported too: the recipe's must be the same in every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import busy_note, cpu_model
from classifier import CPU_RECIPE
from classifier.errors import run_stage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# TensorFlow turns its oneDNN custom ops on by default on CPUs with any of these (its own rule).
ONEDNN_OPTS_FLAGS = {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machine_default() -> dict[str, str]:
    """The recipe's variables as TensorFlow and oneDNN would set themselves on this machine."""
    cores = str(len(os.sched_getaffinity(0)))
    return {
        "TF_NUM_INTRAOP_THREADS": cores,
        "TF_NUM_INTEROP_THREADS": cores,
        "TF_ENABLE_ONEDNN_OPTS": "1" if cpu_flags() & ONEDNN_OPTS_FLAGS else "0",
        "ONEDNN_MAX_CPU_ISA": "ALL",
    }


def variants() -> dict[str, dict[str, str]]:
    return {
        "recipe": dict(CPU_RECIPE),
        "machine default": machine_default(),
        "recipe, oneDNN capped at AVX2": {**CPU_RECIPE, "ONEDNN_MAX_CPU_ISA": "AVX2"},
        "recipe, oneDNN uncapped": {**CPU_RECIPE, "ONEDNN_MAX_CPU_ISA": "ALL"},
    }


def run_probe(environment: dict[str, str], steps: int) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "testbed.weights_probe", "--steps", str(steps)],
        cwd=ROOT,
        env={**os.environ, **environment, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    md5, seconds = result.stdout.split()
    return md5, float(seconds)


def measure(steps: int, rounds: int) -> dict[str, dict]:
    runs: dict[str, list[tuple[str, float]]] = {name: [] for name in variants()}
    for _ in range(rounds):
        for name, environment in variants().items():
            runs[name].append(run_probe(environment, steps))
    recipe_seconds = statistics.median(seconds for _, seconds in runs["recipe"])
    return {
        name: {
            "environment": variants()[name],
            "median_seconds": statistics.median(seconds for _, seconds in results),
            "seconds": [seconds for _, seconds in results],
            "relative_to_recipe": statistics.median(s for _, s in results) / recipe_seconds,
            "weights_md5": sorted({md5 for md5, _ in results}),
        }
        for name, results in runs.items()
    }


def report(results: dict[str, dict], steps: int, rounds: int, load: float) -> str:
    rows = "\n".join(
        f"| {name} | {', '.join(f'{k}={v}' for k, v in r['environment'].items())} |"
        f" {r['median_seconds']:.2f} | {r['relative_to_recipe']:.2f} |"
        f" {', '.join(md5[:8] for md5 in r['weights_md5'])} |"
        for name, r in results.items()
    )
    return f"""# The CPU recipe's cost

- Made by `.venv/bin/python -m benchmarks.cpu_recipe` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}
- Each variant: the default model trained for {steps} batches of 64 ({steps * 64:,} images),
  in a fresh process; {rounds} rounds, the variants in turn; median wall time of training
{busy_note(load)}
| variant | settings | seconds | × recipe | weights md5 |
|---|---|---|---|---|
{rows}

One md5 per variant means every round trained the same weights. Only the recipe's weights are
the same on every x86-64 machine (docs/reproducibility.md); the others depend on this one.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "CPU_RECIPE")
    options = parser.parse_args()
    results = measure(options.steps, options.rounds)
    load = os.getloadavg()[0]
    options.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    options.out.with_suffix(".md").write_text(report(results, options.steps, options.rounds, load))
    print(options.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    run_stage("cpu_recipe", main)
