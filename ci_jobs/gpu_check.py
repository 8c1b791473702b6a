"""Fail a GPU job early, with the reason, when TensorFlow cannot use the machine's GPU.

    python -m ci_jobs.gpu_check

If the image's NVIDIA driver and the CUDA libraries of ``tensorflow[and-cuda]`` disagree,
TensorFlow silently falls back to the CPU and a GPU job trains for hours on a few vCPUs. This
prints ``nvidia-smi`` (the driver and the GPUs the machine has), then what TensorFlow was built
for and the GPUs it sees, and exits 1 when it sees none.

``REHEARSAL_CPU_ONLY=1`` says "no GPU is expected here": the rehearsal of the CircleCI jobs on a
CPU machine (``testbed.rehearsal``) sets it, and the check then reports instead of failing. Never
set it in CircleCI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from classifier.errors import run_stage

CPU_ONLY_ENV = "REHEARSAL_CPU_ONLY"


@dataclass(frozen=True)
class Findings:
    """What the machine and TensorFlow say about GPUs."""

    nvidia_smi: str | None  # its output; None when the command is missing or fails
    tf_gpus: list[str]  # TensorFlow's physical GPU devices
    built_with_cuda: bool
    cuda_build: str  # e.g. "CUDA 12.5, cuDNN 9"


def problem(findings: Findings) -> str | None:
    """Why TensorFlow will not train on a GPU here, with what to do; None when it will."""
    if findings.tf_gpus:
        return None
    if not findings.built_with_cuda:
        return (
            "TensorFlow sees no GPU: this TensorFlow is built without CUDA; install"
            " tensorflow[and-cuda] in the GPU job"
        )
    if findings.nvidia_smi is None:
        return (
            "TensorFlow sees no GPU and nvidia-smi does not run: this machine has no usable NVIDIA"
            " driver; use a linux-cuda image and a gpu.nvidia.* resource class"
        )
    return (
        f"TensorFlow sees no GPU although nvidia-smi does ({findings.cuda_build} expected by"
        " TensorFlow): the driver is older than these CUDA libraries need or they failed to load"
        " (see TensorFlow's messages above); pin a newer linux-cuda-12 image"
    )


def run_nvidia_smi() -> str | None:
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        result = subprocess.run([command], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def gather() -> Findings:
    """Ask the machine and TensorFlow (imported here: it is slow to load)."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    versions = (build.get("cuda_version", "?"), build.get("cudnn_version", "?"))
    return Findings(
        nvidia_smi=run_nvidia_smi(),
        tf_gpus=[device.name for device in tf.config.list_physical_devices("GPU")],
        built_with_cuda=tf.test.is_built_with_cuda(),
        cuda_build="CUDA {}, cuDNN {}".format(*versions),
    )


def main(environ: dict[str, str], findings: Findings) -> int:
    print(findings.nvidia_smi or "nvidia-smi: not available (no NVIDIA driver, or it failed)")
    print(f"TensorFlow built for {findings.cuda_build}; GPUs it sees: {findings.tf_gpus or 'none'}")
    reason = problem(findings)
    if reason is None:
        return 0
    if environ.get(CPU_ONLY_ENV) == "1":
        print(f"gpu_check: {CPU_ONLY_ENV}=1, so no GPU is expected: {reason}")
        return 0
    print(f"gpu_check: error: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_stage("gpu_check", lambda: main(dict(os.environ), gather()))
