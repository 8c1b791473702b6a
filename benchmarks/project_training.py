"""The project's model built and trained by the pipeline's own functions, timed by the epoch clock.

Both benchmarks that time the project (``time_to_accuracy`` and ``gpu_check``) train it this way,
so they measure the same thing the ``build`` and ``train`` stages do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.epoch_clock import EpochClock
from stages import devices, runtime
from stages.config import Params
from stages.datasets import load_dataset
from stages.keras_io import save_model
from stages.model import build_model
from stages.train import train


def train_project(
    params: Params, prepared_dir: Path, work: Path, name: str, test: tuple[np.ndarray, np.ndarray]
) -> EpochClock:
    """Build (precision as the hardware calls for) and train in ``work``; the epochs' clock."""
    policy = runtime.precision_policy(params.build.mixed_precision, bool(devices.gpu_names()))
    untrained = work / "untrained.keras"
    dataset = load_dataset(prepared_dir)
    save_model(
        build_model(params.build, policy, dataset.input_shape, dataset.num_classes), untrained
    )
    clock = EpochClock(name, dataset.size("train"), *test)
    train(
        params.train,
        untrained_model=untrained,
        prepared_dir=prepared_dir,
        model_out=work / "model.keras",
        live_dir=work / "live",
        state_dir=work / "state",
        report_out=work / "train.json",
        extra_callbacks=(clock,),
    )
    return clock
