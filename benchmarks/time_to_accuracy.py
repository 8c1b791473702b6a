"""Time to 99% MNIST test accuracy: the Keras ``mnist_convnet`` example against this pipeline.

    .venv/bin/python -m benchmarks.time_to_accuracy            # full run, writes the report
    .venv/bin/python -m benchmarks.time_to_accuracy --max-epochs 1 --train-subset 512  # smoke

In one process (same machine, same threads), from the same raw MNIST files:

- **reference**: the Keras example (Conv32-Pool-Conv64-Pool-Flatten-Dropout(0.5)-Dense10 softmax,
  Adam at its default rate, categorical cross-entropy, batch 128, up to 15 epochs, inputs scaled
  to [0, 1]), fitted as the example fits it: on the 60,000 training images with
  ``validation_split=0.1`` (so it learns from the first 54,000 and validates on the last 6,000);
- **project**: ``classifier.model.build_model`` and ``stages.train.train`` with ``params.yaml``
  (``-S section.key=value`` overrides it), on the split ``stages.prepare`` makes (54,001 / 5,999).

Both are evaluated on the 10,000 MNIST test images after every epoch; the evaluation's time is
excluded from the training time, which otherwise counts everything ``fit`` does (its validation,
and the project's per-epoch checkpoint). Writes ``TIME_TO_ACCURACY.{json,md}`` to ``--out-dir``;
the Markdown ends with ``TIME_TO_ACCURACY_IDEAS.md``, the hand-kept table of ideas tried.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
from keras import layers
from ruamel.yaml import YAML

from benchmarks.epoch_clock import EpochClock, first_reaching
from benchmarks.machine import busy_note, cpu_model
from benchmarks.project_training import train_project
from classifier import runtime
from classifier.dataset import load_split
from classifier.errors import run_stage
from classifier.mnist import CLASSES
from classifier.params import PARAMS_FILE, Params, parse_params
from classifier.paths import Paths
from stages.fetch import fetch_all
from testbed.prepared import keep_first, mnist_train_arrays, prepare_mnist
from testbed.repo import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
IDEAS = BENCHMARKS / "TIME_TO_ACCURACY_IDEAS.md"
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"
REFERENCE_EPOCHS = 15
REFERENCE_BATCH = 128


@dataclass
class Run:
    """One model's training curve on the test set, and when it first reached 99%."""

    name: str
    description: str
    train_images: int
    epochs: list[dict]
    time_to_99_s: float | None
    epochs_to_99: int | None
    final_accuracy: float

    @classmethod
    def timed_by(cls, clock: EpochClock, description: str) -> Run:
        """The run ``clock`` timed, once ``fit`` has finished."""
        reached = first_reaching(clock.epochs)
        return cls(
            clock.name,
            description,
            clock.train_images,
            clock.epochs,
            time_to_99_s=None if reached is None else reached["elapsed_s"],
            epochs_to_99=None if reached is None else reached["epoch"],
            final_accuracy=clock.epochs[-1]["test_accuracy"],
        )


def reference_model() -> keras.Model:
    """The Keras example ``mnist_convnet`` (keras.io/examples/vision/mnist_convnet), as written."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def run_reference(
    raw_dir: Path, epochs: int, subset: int | None, test: tuple[np.ndarray, np.ndarray]
) -> Run:
    """Train the example as it is written, on the raw training images (first ``subset``)."""
    train_images, train_labels = mnist_train_arrays(raw_dir)
    images = train_images[:subset].astype("float32") / 255
    labels = keras.utils.to_categorical(train_labels[:subset], len(CLASSES))
    test_images = test[0].astype("float32") / 255
    keras.utils.set_random_seed(42)
    fitted = len(labels) - int(len(labels) * 0.1)  # what validation_split leaves to train on
    clock = EpochClock("reference", fitted, test_images, test[1])
    reference_model().fit(
        images,
        labels,
        batch_size=REFERENCE_BATCH,
        epochs=epochs,
        validation_split=0.1,
        callbacks=[clock],
        verbose=0,
    )
    return Run.timed_by(clock, "Keras mnist_convnet example")


def run_project(params: Params, prepared_dir: Path, work: Path, test: tuple) -> Run:
    """Build and train the project's model with the pipeline's own functions."""
    filters = "/".join(map(str, params.build.conv_filters))
    description = (
        f"conv {filters} ({params.build.padding}), dense {params.build.dense_units},"
        f" batch norm {params.build.batch_norm},"
        f" label smoothing {params.build.label_smoothing}, {params.train.epochs} epochs,"
        f" batch {params.train.batch_size}, {params.build.optimizer} {params.build.learning_rate}"
        f" {params.train.lr_schedule}"
    )
    clock = train_project(params, prepared_dir, work, "project", test)
    return Run.timed_by(clock, description)


def load_params_with(overrides: list[str], max_epochs: int | None) -> Params:
    """``params.yaml`` with ``section.key=value`` overrides (values read as YAML, like ``-S``)."""
    raw = YAML(typ="safe", pure=True).load((REPO_ROOT / PARAMS_FILE).read_text())
    for override in overrides:
        key, _, value = override.partition("=")
        section, _, name = key.partition(".")
        raw[section][name] = YAML(typ="safe", pure=True).load(value)
    if max_epochs is not None:
        raw["train"]["epochs"] = min(raw["train"]["epochs"], max_epochs)
    return parse_params(raw)


def prepared_data(mirror: str, work: Path, params: Params, subset: int | None) -> Path:
    """MNIST from ``mirror``, split by ``prepare`` in ``work``; train cut to ``subset``."""
    raw_dir = work / "raw"
    fetch_all(raw_dir, [mirror])
    prepared_dir = prepare_mnist(raw_dir, Paths(work), params)
    if subset is not None:
        keep_first(prepared_dir, {"train": subset})
    return prepared_dir


def environment() -> dict:
    """Where and with what the numbers were measured."""
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{os.cpu_count()} CPU cores ({cpu_model()}), GPUs: {len(runtime.gpu_names())}",
        "cpu_recipe": runtime.cpu_recipe_in_effect(),  # thread pools and oneDNN, both runs
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "versions": {
            "python": platform.python_version(),
            **{name: metadata.version(name) for name in ("tensorflow", "keras", "numpy")},
        },
    }


def benchmark(args: argparse.Namespace) -> dict:
    """Run both models; return the report (``ratio`` is project / reference time to 99%)."""
    params = load_params_with(args.set, args.max_epochs)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prepared_dir = prepared_data(args.mirror, work, params, args.train_subset)
        test = load_split("test", prepared_dir)
        test = (test[0][: args.test_subset], test[1][: args.test_subset])
        if not args.project_only:
            epochs = min(REFERENCE_EPOCHS, args.max_epochs or REFERENCE_EPOCHS)
            runs["reference"] = run_reference(work / "raw", epochs, args.train_subset, test)
        runs["project"] = run_project(params, prepared_dir, work, test)
    report = {"environment": environment(), "test_images": len(test[1])}
    report.update({name: asdict(run) for name, run in runs.items()})
    times = [runs[name].time_to_99_s if name in runs else None for name in ("project", "reference")]
    report["ratio"] = round(times[0] / times[1], 4) if None not in times else None
    return report


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def markdown(report: dict, command: str) -> str:
    """The report as Markdown, followed by the hand-kept table of ideas tried."""
    env = report["environment"]
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    runs = [report[name] for name in ("reference", "project") if name in report]
    summary = "\n".join(
        f"| {run['name']} | {run['description']} | {_seconds(run['time_to_99_s'])}"
        f" | {run['epochs_to_99'] or '—'} | {run['final_accuracy']:.4f} |"
        for run in runs
    )
    curves = "\n\n".join(
        f"**{run['name']}** ({run['train_images']} training images per epoch)\n\n"
        "| epoch | seconds | CPU seconds | images/s | test accuracy |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {e['epoch']} | {e['seconds']:.1f} | {e['cpu_seconds']:.1f}"
            f" | {e['images_per_s']:.0f} | {e['test_accuracy']:.4f} |"
            for e in run["epochs"]
        )
        for run in runs
    )
    ratio = "—" if report["ratio"] is None else f"{report['ratio']:.3f}"
    ideas = IDEAS.read_text() if IDEAS.exists() else ""
    load = env["load_average_1m_at_end"]
    busy = busy_note(load)
    return f"""# Time to 99% test accuracy

- measured {env["date"]} by `{command}`
- machine: {env["machine"]}; load average at the end {load}
- CPU recipe (both runs): {", ".join(f"{k}={v}" for k, v in env["cpu_recipe"].items())}
- {versions}
- test set: {report["test_images"]} MNIST test images, evaluated after every epoch (not timed)
{busy}
| model | what | time to 99.0% (training only) | epochs | final test accuracy |
|---|---|---|---|---|
{summary}

**Ratio (project / reference): {ratio}** (goal ≤ 0.167, record 0.125).

{curves}

{ideas}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("MNIST_MIRROR", str(DEFAULT_MIRROR)))
    parser.add_argument("--out-dir", type=Path, default=BENCHMARKS)
    parser.add_argument("--max-epochs", type=int, help="cap both models' epochs (smoke runs)")
    parser.add_argument("--train-subset", type=int, help="train on the first N images only")
    parser.add_argument("--test-subset", type=int, help="evaluate on the first N test images")
    parser.add_argument("--project-only", action="store_true", help="skip the reference")
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a param of params.yaml, as `dvc exp run -S` does",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    report = benchmark(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "TIME_TO_ACCURACY.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python -m benchmarks.time_to_accuracy", *argv])
    (args.out_dir / "TIME_TO_ACCURACY.md").write_text(markdown(report, command))
    print(json.dumps({k: report[k] for k in ("ratio",)}), flush=True)


if __name__ == "__main__":
    run_stage("time_to_accuracy", main)
