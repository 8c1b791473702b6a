"""What a command costs beyond its wall time: peak memory, and where a no-op ``dvc repro`` goes.

Used by ``benchmarks/pipeline.py``. Peak memory is read from the kernel's accounting of the
finished process tree (``wait4``), so each stage run as its own process gets its own number.
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Where a no-op `dvc repro` / `dvc status` spends its time: (label, file suffix, function).
PROFILE_PARTS = (
    ("Python imports (wherever they happen)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("repro only: collect the target stages (loads dvc.yaml and dvc.lock)", "repo/reproduce.py",
     "collect_stages"),
    ("the index: every stage and the graph (loads dvc.yaml and dvc.lock)", "repo/index.py",
     "from_repo"),
    ("repro: check every stage, skip it (the index is already built)", "repo/reproduce.py",
     "_reproduce"),
    ("status: build the index, check every stage", "repo/status.py", "_joint_status"),
    ("YAML documents parsed (ruamel.yaml, pure Python), inside the above", "serialize/_yaml.py",
     "parse_yaml"),
)  # fmt: skip


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mib: float
    returncode: int
    output: str


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> Measured:
    """Run ``command``; its wall time and the peak resident memory of its process tree.

    ``wait4`` reports the largest ``maxrss`` among the process and the descendants it waited
    for (DVC waits for its stage's process), so this is the peak of the stage, or of DVC itself.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(time.perf_counter() - start, usage.ru_maxrss / 1024, process.returncode, output)


def profile_parts(profile_file: Path) -> dict[str, tuple[float, int]]:
    """Cumulative seconds and calls of each of ``PROFILE_PARTS`` in a cProfile dump.

    The parts overlap (imports and YAML parsing happen inside the others); cProfile counts a
    recursive function's time once, at its outermost call.
    """
    stats = pstats.Stats(str(profile_file)).stats  # type: ignore[attr-defined]
    parts = {}
    for label, suffix, function in PROFILE_PARTS:
        matches = [
            (cumulative, calls)
            for (path, _, name), (_, calls, _, cumulative, _) in stats.items()
            if path.endswith(suffix) and name == function
        ]
        parts[label] = (sum(c for c, _ in matches), sum(n for _, n in matches))
    return parts


def profiled_total(profile_file: Path) -> float:
    return pstats.Stats(str(profile_file)).total_tt  # type: ignore[attr-defined]


def profile_command(args: list[str], cwd: Path, env: dict[str, str], out: Path) -> Path:
    """Run ``python -m cProfile -o out -m <args>`` in ``cwd``; return ``out``."""
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed under the profiler:\n{result.stderr[-2000:]}")
    return out
