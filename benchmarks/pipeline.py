"""Measure the pipeline's promises with default params; write them to benchmarks/REPORT.md.

    MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.pipeline

Works in a fresh git copy of this working tree (empty DVC cache), like a new clone:
1. cold `dvc repro` wall time, stage by stage, peak memory, and the test accuracy it reaches;
2. no-op `dvc repro` wall time (median of five);
3. two `dvc repro --force` runs: which outputs are byte-identical (hashes from dvc.lock).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from testbed.repo import ALL_STAGES, REPO_ROOT, DvcRepo, copy_of_repository

REPORT = REPO_ROOT / "benchmarks" / "REPORT.md"


def timed(repo: DvcRepo, *args: str) -> float:
    """Run a dvc command; return its wall time in seconds."""
    start = time.perf_counter()
    result = repo.dvc(*args)
    if result.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    if "MNIST_MIRROR" not in os.environ:
        sys.exit(
            "set MNIST_MIRROR (e.g. ../shared/datasets/mnist) so the cold run is not a download"
        )
    with tempfile.TemporaryDirectory() as scratch:
        repo = DvcRepo(copy_of_repository(Path(scratch)))
        stage_times = {stage: timed(repo, "repro", "--single-item", stage) for stage in ALL_STAGES}
        cold = sum(stage_times.values())
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        accuracy = json.loads((repo.repo / "metrics/test.json").read_text())["accuracy"]
        noop = statistics.median(timed(repo, "repro") for _ in range(5))
        first = repo.locked_hashes()
        forced = [timed(repo, "repro", "--force") for _ in range(2)]
        second = repo.locked_hashes()
    identical = {path: first[path] == second[path] for path in sorted(first)}

    per_stage = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stage_times.items())
    rows = "\n".join(
        f"| `{path}` | {'yes' if same else 'no'} |" for path, same in identical.items()
    )
    REPORT.write_text(f"""# Pipeline benchmark

Measured {datetime.now(UTC):%Y-%m-%d} by `benchmarks/pipeline.py` (default `params.yaml`), on
{os.cpu_count()} CPU cores ({cpu_model()}), no GPU; Python {platform.python_version()}.
Reproduce: `MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.pipeline`.

| measure | goal | result |
|---|---|---|
| cold `dvc repro` (fresh copy, empty cache, local mirror) | ≤ 180 s | {cold:.1f} s |
| … by stage (`dvc repro --single-item <stage>` in order) | — | {per_stage} |
| test accuracy of that run | ≥ 0.992 | {accuracy:.4f} |
| peak memory of one stage process | — | {peak_mib:.0f} MiB |
| no-op `dvc repro` (median of 5) | ≤ 1.5 s | {noop:.2f} s |
| `dvc repro --force` | — | {forced[0]:.1f} s, {forced[1]:.1f} s |

Byte-identical outputs across the two forced runs (md5 from `dvc.lock`):

| output | identical |
|---|---|
{rows}

The SavedModel (`dist/…`) is not yet byte-identical between runs: `saved_model.pb`,
`variables/*` and `fingerprint.pb` all differ from one export of the same model to the next (the
model card does not). Its predictions are verified equal to the trained model's at every export.
""")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
