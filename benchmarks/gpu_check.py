"""One-command check of training on a GPU machine: speed, time to 99.0%, and determinism.

    OUT=/some/dir python -m benchmarks.gpu_check [--epochs N]

Runs the pipeline's own code (stages.fetch/prepare for the split, classifier.model to build,
stages.train to train, on whatever devices TensorFlow sees) twice, each run in its own process
as `dvc repro` runs build and train, and writes ``gpu_check.md``, ``gpu_check.json`` and each
run's log to ``$OUT``: images/s per epoch, test accuracy after every epoch, the training time at
which it first reaches 99.0% on the MNIST test set, and whether the two runs end with identical
weights. Training time is ``benchmarks.epoch_clock``'s, as in ``time_to_accuracy``: all that
``fit`` does in an epoch, its validation and checkpoint included, but not the test evaluation.
MNIST comes from ``$MNIST_MIRROR`` or ``../shared/datasets/mnist``; no network. Bounded to finish
within 5 minutes on one H200-class GPU: at most ``MAX_EPOCHS`` epochs, and the second run is
skipped (and said so) if the first leaves too little of ``--budget-s``. This process itself never
touches a GPU (TensorFlow would reserve its memory): it prepares the data and compares the runs.

Without a GPU it stops with one line; ``--allow-cpu`` (with ``--subset``) dry-runs it on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.epoch_clock import TARGET_ACCURACY, first_reaching
from benchmarks.project_training import train_project
from classifier import runtime
from classifier.dataset import load_dataset, load_split
from classifier.errors import StageError, run_stage
from classifier.files import to_json
from classifier.model import load_model
from classifier.params import Params, load_params
from classifier.paths import Paths
from stages.fetch import fetch_all
from testbed.prepared import keep_first, prepare_mnist
from testbed.repo import REPO_ROOT

MAX_EPOCHS = 15
NO_GPU = (
    "gpu_check: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty);"
    " run it on a GPU machine with TensorFlow's CUDA libraries, or pass --allow-cpu for a dry run"
)


def report_epochs(epochs: list[dict]) -> list[dict]:
    """The clock's epochs under this report's keys (``train_s`` for the epoch's seconds)."""
    return [
        {
            "epoch": epoch["epoch"],
            "train_s": epoch["seconds"],
            "images_per_s": epoch["images_per_s"],
            "test_accuracy": epoch["test_accuracy"],
        }
        for epoch in epochs
    ]


def prepared_workspace(root: Path, params: Params, mirror: str, subset: int | None) -> Path:
    """``data/prepared`` as the pipeline makes it; with ``subset``, only the first examples."""
    fetch_all(root / "raw", [mirror])
    prepared = prepare_mnist(root / "raw", Paths(root), params)
    if subset:
        keep_first(prepared, dict.fromkeys(("train", "validation", "test"), subset))
    return prepared


def training_run(run_dir: Path, params: Params) -> dict:
    """Build and train as the pipeline does, in ``run_dir`` beside the prepared data; the
    result."""
    prepared = Paths(run_dir.parent).prepared_dir
    clock = train_project(params, prepared, run_dir, run_dir.name, load_split("test", prepared))
    reached = first_reaching(clock.epochs)
    return {
        "epochs": report_epochs(clock.epochs),
        "time_to_99_s": None if reached is None else reached["elapsed_s"],
        "final_accuracy": clock.epochs[-1]["test_accuracy"],
        "environment": json.loads(Paths(run_dir).train_report.read_text()),
    }


def run_in_own_process(run_dir: Path, epochs: int, log: Path, timeout_s: float) -> dict:
    """One training run in a fresh process (``--run-in``); its output goes to ``log``."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--run-in", str(run_dir)]
    try:
        with log.open("w") as output:
            result = subprocess.run(
                [*command, "--epochs", str(epochs)],
                cwd=REPO_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=timeout_s,
            )
    except subprocess.TimeoutExpired:
        raise StageError(f"{run_dir.name} did not finish in {timeout_s:.0f} s; see {log}") from None
    if result.returncode:
        last = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise StageError(f"{run_dir.name} failed (exit {result.returncode}): {last[0]}; see {log}")
    return json.loads((run_dir / "run.json").read_text())


def same_weights(first: Path, second: Path) -> bool:
    pairs = zip(load_model(first).get_weights(), load_model(second).get_weights(), strict=True)
    return all(np.array_equal(a, b) for a, b in pairs)


def markdown(report: dict) -> str:
    environment = report["runs"][0]["environment"]
    tensorflow = environment["tensorflow"]
    gpus = ", ".join(environment["gpus"])
    rows = "\n".join(
        f"| {number} | {e['epoch']} | {e['train_s']:.2f} | {e['images_per_s']:.0f} |"
        f" {e['test_accuracy']:.4f} |"
        for number, run in enumerate(report["runs"], start=1)
        for e in run["epochs"]
    )
    reached = "; ".join(
        f"run {number}: "
        + (f"{run['time_to_99_s']:.1f} s" if run["time_to_99_s"] is not None else "not reached")
        for number, run in enumerate(report["runs"], start=1)
    )
    return "\n".join(
        [
            "# GPU check",
            "",
            f"`python -m benchmarks.gpu_check`: {report['epochs']} epoch(s),"
            f" {report['train_examples']} training images.",
            f"Device: {environment['device']}{f' ({gpus})' if gpus else ''};"
            f" {environment['strategy']} strategy, {environment['replicas']} replica(s),"
            f" global batch {environment['global_batch_size']};"
            f" dtype policy {environment['precision_policy']};"
            f" XLA {'on' if environment['xla'] else 'off'}.",
            f"TensorFlow {tensorflow['version']} (CUDA {tensorflow['cuda_version']},"
            f" cuDNN {tensorflow['cudnn_version']}), Python {report['python']}.",
            "Training seconds count all that `fit` does in an epoch (its validation and the"
            " checkpoint included); the test evaluation after each epoch is not timed.",
            "",
            f"- time to {TARGET_ACCURACY:.1%} test accuracy (training seconds): {reached}",
            f"- identical weights after two runs: {report['identical_weights']}",
            f"- wall time of the check: {report['wall_s']:.0f} s",
            "",
            "| run | epoch | train s | images/s | test accuracy |",
            "|---|---|---|---|---|",
            rows,
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="default: train.epochs of params.yaml")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run without a GPU")
    parser.add_argument("--subset", type=int, help="use only the first N examples of each split")
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip run 2 past this")
    parser.add_argument("--run-in", type=Path, help=argparse.SUPPRESS)  # one run, internal
    args = parser.parse_args(argv)
    if args.epochs is not None and not 1 <= args.epochs <= MAX_EPOCHS:
        parser.error(f"--epochs must be 1-{MAX_EPOCHS}")
    return args


def check_params(epochs: int | None) -> Params:
    """The repository's params, with ``epochs`` (default ``train.epochs``, at most MAX_EPOCHS)."""
    params = load_params(REPO_ROOT / "params.yaml")
    epochs = epochs or min(params.train.epochs, MAX_EPOCHS)
    return params.model_copy(update={"train": params.train.model_copy(update={"epochs": epochs})})


def run_check(args: argparse.Namespace, out: Path) -> dict:
    """Prepare, then build and train twice; write the report to ``out`` and return it."""
    started = time.perf_counter()
    mirror = os.environ.get("MNIST_MIRROR") or str(REPO_ROOT.parent / "shared/datasets/mnist")
    params = check_params(args.epochs)
    epochs = params.train.epochs
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as scratch:
        root = Path(scratch)
        prepared = prepared_workspace(root, params, mirror, args.subset)
        runs = [run_in_own_process(root / "run1", epochs, out / "run1.log", args.budget_s)]
        first_run_s = time.perf_counter() - started
        if first_run_s * 2 < args.budget_s:
            left_s = args.budget_s - first_run_s
            runs.append(run_in_own_process(root / "run2", epochs, out / "run2.log", left_s))
            identical = same_weights(
                Paths(root / "run1").trained_model, Paths(root / "run2").trained_model
            )
        else:
            identical = f"not checked: run 1 took {first_run_s:.0f} s of {args.budget_s:.0f} s"
        report = {
            "epochs": epochs,
            "train_examples": load_dataset(prepared).size("train"),
            "python": platform.python_version(),
            "runs": runs,
            "identical_weights": identical,
            "wall_s": round(time.perf_counter() - started, 1),
        }
    (out / "gpu_check.json").write_text(to_json(report))
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run_in:
        args.run_in.mkdir(parents=True)
        result = training_run(args.run_in, check_params(args.epochs))
        (args.run_in / "run.json").write_text(to_json(result))
        return
    if not args.allow_cpu and not runtime.gpu_names():
        sys.exit(NO_GPU)
    if not os.environ.get("OUT"):
        sys.exit("gpu_check: set OUT to the directory to write the report to")
    print(markdown(run_check(args, Path(os.environ["OUT"]))))


if __name__ == "__main__":
    run_stage("gpu_check", main)
