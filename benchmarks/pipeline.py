"""Measure the pipeline's promises with default params; write them to benchmarks/REPORT.md.

    MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.pipeline

Works in a fresh git copy of this working tree (empty DVC cache), like a new clone:
1. cold `dvc repro`, stage by stage: wall time and peak memory (RSS) of each stage's process,
   and the test accuracy it reaches;
2. no-op `dvc repro` against `dvc status` (interleaved, median of seven each), and a cProfile of
   one of each, split into where DVC spends the time;
3. two `dvc repro --force` runs: which outputs are byte-identical (hashes from dvc.lock).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import busy_note, cpu_model
from benchmarks.overheads import Measured, measure, profile_command, profile_parts, profiled_total
from classifier.errors import run_stage
from testbed.repo import ALL_STAGES, BIN, REPO_ROOT, DvcRepo, absolute_mirror, copy_of_repository

REPORT = REPO_ROOT / "benchmarks" / "REPORT.md"
NOOP_RUNS = 7
STAGE_RSS_GOAL_MIB = 1200 * 1000**2 / 1024**2  # 1.2 GB

NOTES = """Notes (from the investigation of the stages' time and memory):

- Memory: a stage that imports TensorFlow starts at about 0.6 GB (importing `tensorflow` and
  `keras` alone peaks at 592 MiB here); training adds the data and the model. `package` peaked at
  1.85 GB: it ran the exported signature on all 10,000 test images in one call (the feature maps
  alone are about 0.2 GB; the convolutions' working memory and TensorFlow's allocator made up the
  rest, not broken down further). It now predicts in batches of 1,000 (`stages/package.py`):
  0.82 GB in the same conditions (`test`, which always predicted in batches: 0.82 GB too).
- No-op `dvc repro` against `dvc status`: the difference is DVC's own work. `repro` imports about
  380 more modules, and loads `dvc.yaml` and `dvc.lock` twice (once to collect the target stages,
  once more for the index and graph: 11 YAML documents parsed by ruamel.yaml's pure-Python
  parser, against 8), before it checks the same stages that `status` checks. No pipeline stage
  runs, and nothing of this project's code is involved.
"""


def dvc(repo: DvcRepo, *args: str) -> Measured:
    """Run a dvc command in ``repo``; exit with its output if it fails."""
    result = measure([str(BIN / "dvc"), *args], repo.repo, repo.env)
    if result.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{result.output[-3000:]}")
    return result


def noop_medians(repo: DvcRepo) -> dict[str, float]:
    """Median wall time of no-op `dvc repro` and `dvc status`, run alternately."""
    times: dict[str, list[float]] = {"repro": [], "status": []}
    for _ in range(NOOP_RUNS):
        for command in times:
            times[command].append(dvc(repo, command).seconds)
    return {command: statistics.median(values) for command, values in times.items()}


def noop_profile(repo: DvcRepo, scratch: Path) -> str:
    """A Markdown table: where one profiled no-op `dvc repro` and `dvc status` spend their time."""
    profiles = {
        command: profile_command(["dvc", command], repo.repo, repo.env, scratch / command)
        for command in ("repro", "status")
    }
    parts = {command: profile_parts(path) for command, path in profiles.items()}
    rows = [
        "| whole command, under the profiler | "
        + " | ".join(f"{profiled_total(path):.2f} s" for path in profiles.values())
        + " |"
    ]
    for label in parts["repro"]:
        cells = [parts[command][label] for command in profiles]
        shown = [f"{seconds:.2f} s ({calls}×)" if calls else "—" for seconds, calls in cells]
        rows.append(f"| {label} | " + " | ".join(shown) + " |")
    return "| part | no-op `dvc repro` | `dvc status` |\n|---|---|---|\n" + "\n".join(rows)


def main() -> None:
    if "MNIST_MIRROR" not in os.environ:
        sys.exit(
            "set MNIST_MIRROR (e.g. ../shared/datasets/mnist) so the cold run is not a download"
        )
    with tempfile.TemporaryDirectory() as scratch:
        source = absolute_mirror(os.environ["MNIST_MIRROR"])  # the copy runs elsewhere
        repo = DvcRepo(copy_of_repository(Path(scratch) / "repo"), MNIST_MIRROR=source)
        stages = {stage: dvc(repo, "repro", "--single-item", stage) for stage in ALL_STAGES}
        cold = sum(run.seconds for run in stages.values())
        accuracy = json.loads((repo.repo / "metrics/test.json").read_text())["accuracy"]
        noop = noop_medians(repo)
        profile = noop_profile(repo, Path(scratch))
        first = repo.locked_hashes()
        forced = [dvc(repo, "repro", "--force").seconds for _ in range(2)]
        second = repo.locked_hashes()
    identical = {path: first[path] == second[path] for path in sorted(first)}

    stage_rows = "\n".join(
        f"| `{stage}` | {run.seconds:.1f} s | {run.peak_rss_mib:.0f} MiB"
        f" | {'yes' if run.peak_rss_mib <= STAGE_RSS_GOAL_MIB else '**no**'} |"
        for stage, run in stages.items()
    )
    rows = "\n".join(
        f"| `{path}` | {'yes' if same else '**no**'} |" for path, same in identical.items()
    )
    differing = [path for path, same in identical.items() if not same]
    ratio = noop["repro"] / noop["status"]
    REPORT.write_text(f"""# Pipeline benchmark

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/pipeline.py` (default
`params.yaml`), on {os.cpu_count()} CPU cores ({cpu_model()}), no GPU; Python
{platform.python_version()}; load average at the end {os.getloadavg()[0]:.2f}.
Reproduce: `MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.pipeline`.
{busy_note(os.getloadavg()[0])}
| measure | goal | result |
|---|---|---|
| cold `dvc repro` (fresh copy, empty cache, local mirror) | ≤ 180 s | {cold:.1f} s |
| test accuracy of that run | ≥ 0.994 | {accuracy:.4f} |
| peak memory of the largest stage process | ≤ 1.2 GB | {max(r.peak_rss_mib for r in stages.values()):.0f} MiB |
| no-op `dvc repro` (median of {NOOP_RUNS}) | ≤ 1.2 × status | {noop["repro"]:.2f} s ({ratio:.2f} × status) |
| `dvc status` (median of {NOOP_RUNS}, interleaved with the above) | — | {noop["status"]:.2f} s |
| `dvc repro --force` | — | {forced[0]:.1f} s, {forced[1]:.1f} s |

Each stage of the cold run (`dvc repro --single-item <stage>`, in order), with the peak resident
memory of its process tree (the stage's Python process; DVC's own is smaller):

| stage | wall time | peak RSS | ≤ 1.2 GB |
|---|---|---|---|
{stage_rows}

Where a no-op run goes (one cProfile run of each; the profiler slows both alike):

{profile}

Byte-identical outputs across the two forced runs (md5 from `dvc.lock`):

| output | identical |
|---|---|
{rows}

{"Every output is byte-identical." if not differing else "Not identical: " + ", ".join(differing)}

{NOTES}""")  # noqa: E501
    print(REPORT.read_text())


if __name__ == "__main__":
    run_stage("pipeline", main)
