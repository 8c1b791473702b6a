"""Stage ``train``: fit the built model on the prepared splits, streamed shard by shard
(``classifier/streams.py``); log every epoch with DVCLive.

Deterministic: seeded, TensorFlow op determinism on, and each epoch's example order a pure function
of ``(train.seed, epoch)``. That last point is what makes resuming exact: after every epoch the
model (with optimizer state) and the metric history are checkpointed to ``.train-state/``; if the
stage is killed, running it again continues from the last finished epoch and ends with the same
model, byte for byte, as an uninterrupted run. A NaN or infinite loss stops training with an error.

With several GPUs, training is data-parallel (``tf.distribute.MirroredStrategy``): each replica
takes ``train.batch_size`` examples per step, so the global batch is ``train.batch_size`` x
replicas, and the learning rate is scaled by the same factor (the linear scaling rule of Goyal et
al. 2017, "Accurate, Large Minibatch SGD", with the warm-up the schedule already has). One device
(a CPU, one GPU) is one replica: nothing is scaled. Where it ran is written to
``reports/train.json`` (``classifier/runtime.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from classifier import runtime
from classifier.dataset import CONTRACT_FILE, load_dataset
from classifier.errors import StageError, run_stage
from classifier.files import remove, write_json
from classifier.model import load_model, save_model
from classifier.params import TrainParams, load_params
from classifier.paths import Paths
from classifier.streams import one_hot, split_batches, training_batches


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


def fingerprint(params: TrainParams, inputs: list[Path], environment: dict) -> str:
    """Identifies a training run: a checkpoint is only resumed by the run that made it.

    The environment is part of it: a checkpoint made on other hardware (e.g. another replica
    count, hence another global batch) would not continue the same run.
    """
    digest = hashlib.sha256(params.model_dump_json().encode())
    digest.update(json.dumps(environment, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    for path in inputs:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def unsaved_state(model: keras.Model) -> list:
    """Variables the ``.keras`` format leaves out: the random-number state of e.g. Dropout.

    Restoring them is what makes a resumed epoch drop the same units as an uninterrupted one.
    """
    saved = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


class TrainingState:
    """The resume checkpoint: model + optimizer after the last finished epoch, and the history."""

    def __init__(self, directory: Path, run_fingerprint: str):
        self.directory = directory
        self.model_file = directory / "checkpoint.keras"
        self.progress_file = directory / "progress.json"
        self.run_fingerprint = run_fingerprint

    def load(self) -> tuple[keras.Model, list[dict]] | None:
        """The checkpoint of this same run, if there is one; any other checkpoint is discarded.

        A checkpoint of other params, code or inputs is superseded: it can never be resumed.
        """
        if not self.directory.exists():
            return None
        try:
            progress = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = {}
        if progress.get("fingerprint") != self.run_fingerprint or not self.model_file.exists():
            print(f"train: discarding {self.directory}/, the checkpoint of another run")
            self.clear()
            return None
        model = load_model(self.model_file)
        for variable, value in zip(unsaved_state(model), progress["unsaved_state"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return model, progress["history"]

    def save(self, model: keras.Model, history: list[dict]) -> None:
        # Model first, then progress: progress never points at a checkpoint that isn't complete.
        save_model(model, self.model_file)
        progress = {
            "fingerprint": self.run_fingerprint,
            "history": history,
            "unsaved_state": [keras.ops.convert_to_numpy(v).tolist() for v in unsaved_state(model)],
        }
        write_json(self.progress_file, progress)

    def clear(self) -> None:
        remove(self.directory)


class Checkpoint(keras.callbacks.Callback):
    def __init__(self, state: TrainingState, history: list[dict]):
        super().__init__()
        self.state, self.history = state, history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.append({name: float(value) for name, value in (logs or {}).items()})
        self.state.save(self.model, self.history)


def train(
    params: TrainParams,
    paths: Paths,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
    strategy: tf.distribute.Strategy | None = None,
) -> list[dict]:
    """Train (or resume training) and save the model; return the per-epoch metric history.

    ``strategy`` defaults to the one the visible devices call for (``runtime.choose_strategy``);
    tests pass ``MirroredStrategy(["/cpu:0"])`` to run the distributed path on a CPU.
    """
    runtime.make_deterministic(params.seed)
    prepared_dir, untrained_model = paths.prepared_dir, paths.untrained_model
    gpus = runtime.gpu_names()
    if strategy is None:
        strategy = runtime.make_strategy(runtime.choose_strategy(gpus))
    replicas = strategy.num_replicas_in_sync
    global_batch = params.batch_size * replicas
    dataset = load_dataset(prepared_dir)
    inputs = [untrained_model, prepared_dir / CONTRACT_FILE] + [
        path
        for split in ("train", "validation")
        for path in dataset.shard_paths(prepared_dir, split)
    ]
    with strategy.scope():  # variables (model, optimizer slots) are created per replica
        model = load_model(untrained_model)
        environment = runtime.environment_record(gpus, strategy, model)
        state = TrainingState(paths.train_state_dir, fingerprint(params, inputs, environment))
        base_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        peak_rate = scaled_learning_rate(base_rate, replicas)
        resumed = state.load()
        history: list[dict] = []
        if resumed:
            model, history = resumed
            print(f"train: resuming after epoch {len(history)} of {params.epochs}")
        steps_per_epoch = math.ceil(dataset.size("train") / global_batch)
        model.optimizer.learning_rate = learning_rate_schedule(peak_rate, params, steps_per_epoch)

    live = Live(dir=str(paths.train_log_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    live.step = 1  # the plots' x axis counts epochs from 1, as the training log does
    logger = DVCLiveCallback(live=live)
    for epoch, logs in enumerate(history):  # replay finished epochs into a fresh log
        logger.on_epoch_end(epoch, dict(logs))

    model.fit(
        training_batches(
            dataset, prepared_dir, global_batch, params.seed, len(history), params.epochs
        ),
        epochs=params.epochs,
        initial_epoch=len(history),
        steps_per_epoch=steps_per_epoch,
        validation_data=split_batches(dataset, prepared_dir, "validation", global_batch).map(
            lambda images, labels: (images, one_hot(labels, dataset.num_classes))
        ),
        shuffle=False,  # the dataset is already in its seeded per-epoch order
        callbacks=[StopOnNaN(), Checkpoint(state, history), logger, *extra_callbacks],
        verbose=2,
    )
    if len(history) == params.epochs:  # a callback may have stopped training early
        live.end()
    save_model(model, paths.trained_model)
    write_json(
        paths.train_report,
        {**environment, "global_batch_size": global_batch, "peak_learning_rate": peak_rate},
    )
    state.clear()
    return history


def main() -> None:
    paths = Paths()
    history = train(load_params().train, paths)
    environment = json.loads(paths.train_report.read_text())
    print(
        f"train: on {environment['device']}, {environment['strategy']} strategy with"
        f" {environment['replicas']} replica(s), {environment['precision_policy']}"
    )
    final = history[-1]
    print(f"train: val_accuracy {final['val_accuracy']:.4f}, val_loss {final['val_loss']:.4f}")


if __name__ == "__main__":
    run_stage("train", main)
