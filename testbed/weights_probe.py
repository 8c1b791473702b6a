"""``python -m testbed.weights_probe``: some training steps of the pipeline's model; print a hash.

The cheapest question to ask of the CPU recipe (``classifier.CPU_RECIPE``): do these settings, on
this machine, under this core count, give the same weights? It trains the default model (``build``
in params.yaml) with the pipeline's own input pipeline and determinism, for ``--steps`` batches of
fixed pseudo-random images, and prints the md5 of every weight's bytes and the seconds training
took. Run in a subprocess, so that the environment (recipe variables, ``taskset``) is the one
TensorFlow starts with. ``tests/test_determinism.py`` compares the hashes, ``benchmarks.cpu_recipe``
the times.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from classifier import runtime  # importing classifier sets the CPU recipe before TensorFlow loads
from classifier.dataset import write_splits
from classifier.mnist import CLASSES, MNIST_MODEL_IO
from classifier.model import build_model
from classifier.params import load_params
from classifier.runtime import FULL
from classifier.streams import training_batches
from testbed.repo import REPO_ROOT

BATCH = 64

X86_64 = {"x86_64", "amd64"}


def outside_the_promise(machine: str) -> str | None:
    """Why a machine cannot reproduce the committed bytes, or None if it must."""
    if machine.lower() not in X86_64:
        return (
            f"this is a {machine} machine: the committed dvc.lock was trained on x86-64, and"
            " TensorFlow's kernels for other architectures round differently"
            " (docs/reproducibility.md); run `dvc repro` to make this machine's own outputs"
        )
    return None


def probe(steps: int, seed: int = 42) -> tuple[str, float]:
    """Train ``steps`` batches from the same start: the md5 of the weights, and the seconds."""
    params = load_params(REPO_ROOT / "params.yaml")
    runtime.make_deterministic(seed)
    model = build_model(params.build, FULL, *MNIST_MODEL_IO)
    rng = np.random.default_rng(seed)
    count = steps * BATCH
    images = rng.integers(0, 256, size=(count, *MNIST_MODEL_IO[0]), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as prepared:
        dataset = write_splits(Path(prepared), "random", "-", CLASSES, {"train": (images, labels)})
        batches = training_batches(dataset, Path(prepared), BATCH, seed, 0, 1)
        started = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
    digest = hashlib.md5(usedforsecurity=False)
    for weight in model.weights:
        digest.update(np.asarray(weight.numpy()).tobytes())
    return digest.hexdigest(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    md5, seconds = probe(parser.parse_args().steps)
    print(md5, f"{seconds:.3f}")


if __name__ == "__main__":
    main()
