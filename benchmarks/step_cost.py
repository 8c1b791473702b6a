"""Per-image training cost of param variants, measured interleaved so that load hits all alike.

    .venv/bin/python -m benchmarks.step_cost \\
        --variant 'default=' --variant 'small=build.conv_filters=[16,32,64];train.batch_size=32'

Each variant (``name=`` then ``section.key=value`` overrides of ``params.yaml``, separated by
``;``) is built with ``classifier.model.build_model`` and fed by
``classifier.streams.training_batches``, the pipeline's own input pipeline, on random images.
After a warm-up, the variants take turns: ``--rounds`` rounds of ``--steps`` training steps each.
Reported per image: the median CPU time (all threads; steadier than wall time on a shared
machine) and the median wall time, each also relative to the first variant. On an idle machine
wall time is the cost that matters.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.time_to_accuracy import load_params_with
from classifier.dataset import write_splits
from classifier.errors import run_stage
from classifier.mnist import CLASSES, MNIST_MODEL_IO
from classifier.model import build_model
from classifier.streams import training_batches

IMAGES = 8192


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name=a.b=1;c.d=[1,2]`` -> ``("name", ["a.b=1", "c.d=[1,2]"])``."""
    name, _, overrides = text.partition("=")
    return name, [item for item in overrides.split(";") if item]


def cost_per_image(variants: dict[str, list[str]], steps: int, rounds: int) -> dict[str, dict]:
    """Median CPU and wall microseconds per training image of each variant, taken in turns."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGES, *MNIST_MODEL_IO[0]), dtype=np.uint8)
    labels = rng.integers(0, 10, IMAGES).astype(np.uint8)
    scratch = tempfile.TemporaryDirectory(prefix="step-cost-")  # the shards the batches read
    prepared = Path(scratch.name)
    dataset = write_splits(prepared, "random", "-", CLASSES, {"train": (images, labels)})
    runs = {}
    for name, overrides in variants.items():
        params = load_params_with(overrides, None)
        model = build_model(params.build, "float32", *MNIST_MODEL_IO)
        batch = params.train.batch_size
        batches = training_batches(dataset, prepared, batch, params.train.seed, 0, 10**6)
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)  # trace, warm caches
        runs[name] = (model, batches, batch)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (model, batches, batch) in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
            per_image = 1e6 / (steps * batch)
            samples[name].append(
                ((time.process_time() - cpu) * per_image, (time.perf_counter() - wall) * per_image)
            )
    scratch.cleanup()
    return {
        name: {
            "cpu_us": statistics.median(cpu for cpu, _ in values),
            "wall_us": statistics.median(wall for _, wall in values),
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES")
    parser.add_argument("--steps", type=int, default=64, help="training steps per turn")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    variants = dict(parse_variant(text) for text in args.variant)
    costs = cost_per_image(variants, args.steps, args.rounds)
    first = costs[next(iter(costs))]
    print("| variant | CPU µs/image | relative | wall µs/image | relative |\n|---|---|---|---|---|")
    for name, cost in costs.items():
        print(
            f"| {name} | {cost['cpu_us']:.0f} | {cost['cpu_us'] / first['cpu_us']:.2f}"
            f" | {cost['wall_us']:.0f} | {cost['wall_us'] / first['wall_us']:.2f} |"
        )


if __name__ == "__main__":
    run_stage("step_cost", main)
