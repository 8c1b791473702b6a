"""The project's model built and trained by the pipeline's own functions, timed by the epoch clock.

Both benchmarks that time the project (``time_to_accuracy`` and ``gpu_check``) train it this way,
so they measure the same thing the ``build`` and ``train`` stages do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.epoch_clock import EpochClock
from classifier import runtime
from classifier.dataset import load_dataset
from classifier.model import build_model, save_model
from classifier.params import Params
from classifier.paths import Paths
from stages.train import train


def train_project(
    params: Params, prepared_dir: Path, work: Path, name: str, test: tuple[np.ndarray, np.ndarray]
) -> EpochClock:
    """Build (precision as the hardware calls for) and train in ``work`` (the prepared data
    linked in); the epochs' clock."""
    policy = runtime.precision_policy(params.build.mixed_precision, bool(runtime.gpu_names()))
    paths = Paths(work)
    if paths.prepared_dir.resolve() != prepared_dir.resolve():
        paths.prepared_dir.parent.mkdir(parents=True, exist_ok=True)
        paths.prepared_dir.symlink_to(prepared_dir.resolve(), target_is_directory=True)
    dataset = load_dataset(paths.prepared_dir)
    model = build_model(params.build, policy, dataset.input_shape, dataset.num_classes)
    paths.untrained_model.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, paths.untrained_model)
    clock = EpochClock(name, dataset.size("train"), *test)
    train(params.train, paths, extra_callbacks=(clock,))
    return clock
