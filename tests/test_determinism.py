"""The CPU recipe (``classifier.CPU_RECIPE``) is what makes training independent of the machine.

Each run trains a few steps of the default model in a fresh process (``testbed.weights_probe``),
so TensorFlow starts with exactly the environment given; the weights' md5 is compared. Under the
recipe, one core and two give the same weights; changing either thing the recipe pins, the
thread pool's size or oneDNN's instruction-set cap, changes them: the recipe is what pins them.
(The committed ``dvc.lock`` itself is checked on one core in test_lock_reproduced.py.)
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys

import pytest

from classifier import CPU_RECIPE
from testbed.repo import REPO_ROOT
from testbed.weights_probe import outside_the_promise


@functools.cache
def probe(launcher: tuple[str, ...] = (), **changes: str) -> str:
    """The probe's weights md5 with the recipe, ``changes`` to it, under ``launcher``."""
    env = {**os.environ, **CPU_RECIPE, **changes, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [*launcher, sys.executable, "-m", "testbed.weights_probe"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()[0]


def test_one_core_and_two_give_the_same_weights() -> None:
    if not shutil.which("taskset"):
        pytest.skip("taskset (util-linux) is not installed")
    cpus = sorted(os.sched_getaffinity(0))  # the CPUs this process may use, not always 0 and 1
    if len(cpus) < 2:
        pytest.skip("this machine gives the test one core")
    one, two = f"{cpus[0]}", f"{cpus[0]},{cpus[1]}"
    assert probe(("taskset", "--cpu-list", one)) == probe(("taskset", "--cpu-list", two))


def test_the_thread_pool_size_changes_the_weights() -> None:
    """Without a fixed pool, TensorFlow sizes it by the cores, so the core count would matter."""
    assert probe(TF_NUM_INTRAOP_THREADS="1") != probe()


def test_lowering_the_onednn_cap_changes_the_weights() -> None:
    """oneDNN's kernels follow the instruction set: the cap, not the CPU, decides them."""
    reason = outside_the_promise(platform.machine())
    if reason:  # the cap names x86-64 instruction sets
        pytest.skip(reason)
    assert probe(ONEDNN_MAX_CPU_ISA="SSE41") != probe()


def test_the_recipe_needs_stages_imported_before_tensorflow() -> None:
    """Imported later, the recipe could not take effect: the import says so instead."""
    env = {k: v for k, v in os.environ.items() if k not in CPU_RECIPE}

    def python(code: str) -> subprocess.CompletedProcess:
        run = [sys.executable, "-c", code]
        return subprocess.run(run, cwd=REPO_ROOT, env=env, capture_output=True, text=True)

    late = python("import tensorflow, classifier")
    assert late.returncode == 1
    assert "TensorFlow was imported before the classifier package" in late.stderr.splitlines()[-1]
    first = python("import classifier, os; print(os.environ['ONEDNN_MAX_CPU_ISA'])")
    assert first.stdout.strip() == "AVX"
