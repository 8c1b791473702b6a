"""The machine a benchmark ran on, described the same way in every report."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Extra load per core, beyond the benchmark's own (it keeps every core busy, so its own load
# average is about the core count), above which a report warns that its times are inflated.
BUSY_LOAD = 0.5


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def busy_note(load: float) -> str:
    """A warning line when other work shared the CPUs: times are then inflated, quality is not."""
    cores = os.cpu_count() or 1
    if load <= (1 + BUSY_LOAD) * cores:
        return ""
    return (
        f"\n**The machine was busy** (load average {load:.2f} on {cores} cores): times are"
        " inflated; epochs, accuracies and memory are not affected.\n"
    )
