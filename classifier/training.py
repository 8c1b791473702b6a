"""How the model is fitted, apart from the data: the learning-rate schedule (scaled for data
parallelism) and a guard that stops a diverging run with its cause."""

from __future__ import annotations

import math

import keras

from classifier.errors import StageError
from classifier.params import TrainParams


def learning_rate_schedule(
    base_rate: float, params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``build.learning_rate`` held constant, or warmed up linearly then cosine-decayed per step."""
    if params.lr_schedule == "constant":
        return base_rate
    total = params.epochs * steps_per_epoch
    warmup = round(total * params.warmup_fraction)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(base_rate, total)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, warmup_target=base_rate, warmup_steps=warmup
    )


class StopOnNaN(keras.callbacks.Callback):
    """Fail fast, with the cause, instead of Keras' silent ``TerminateOnNaN``."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise StageError(
                f"training loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1};"
                " lower build.learning_rate (or check the data) and run again"
            )


def scaled_learning_rate(base_rate: float, replicas: int) -> float:
    """``build.learning_rate`` is for one replica's batch; k replicas make a k times larger global
    batch, so the rate grows k times too (linear scaling rule, Goyal et al. 2017)."""
    return base_rate * replicas
