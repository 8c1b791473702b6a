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

On several machines (``TF_CONFIG`` names the cluster: ``classifier/cluster.py``), each runs this
stage as one worker of ``MultiWorkerMirroredStrategy``: every worker reads the same prepared
shards in the same seeded order and takes its own part of each global batch (tf.data's DATA
sharding), the replicas are all the workers' devices, and only the chief (worker 0) writes the
model, metrics and reports; the others keep their resume state under ``.train-state/worker-<i>/``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from classifier import runtime
from classifier.cluster import Cluster, join, read_cluster, resumed_together
from classifier.dataset import CONTRACT_FILE, load_dataset
from classifier.errors import StageError, run_stage
from classifier.files import write_json
from classifier.model import load_model, save_model
from classifier.params import TrainParams, load_params
from classifier.paths import Paths
from classifier.resume import Checkpoint, TrainingState, fingerprint
from classifier.streams import one_hot, split_batches, training_batches
from classifier.training import StopOnNaN, learning_rate_schedule, scaled_learning_rate


@dataclass(frozen=True)
class Trained:
    history: list[dict]  # per epoch, the metrics Keras logged
    report: dict  # what reports/train.json says: where and how it trained


def train(
    params: TrainParams,
    paths: Paths,
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = (),
    strategy: tf.distribute.Strategy | None = None,
    cluster: Cluster | None = None,
) -> Trained:
    """Train (or resume training: ``classifier/resume.py``) and save the model; return the
    per-epoch metric history and the report of where and how it trained.

    ``strategy`` defaults to the one the visible devices call for (``runtime.choose_strategy``);
    tests pass ``MirroredStrategy(["/cpu:0"])`` to run the distributed path on a CPU. With a
    ``cluster`` (its strategy from ``cluster.join``), a worker other than the chief writes only to
    its scratch folder, removed once training ends.
    """
    outputs = paths if cluster is None or cluster.is_chief else worker_scratch(paths, cluster)
    runtime.make_deterministic(params.seed)
    prepared_dir, untrained_model = paths.prepared_dir, paths.untrained_model
    gpus = runtime.gpu_names()
    if strategy is None:
        strategy = runtime.make_strategy(runtime.choose_strategy(gpus))
    replicas = strategy.num_replicas_in_sync
    global_batch = params.batch_size * replicas
    dataset = load_dataset(prepared_dir)
    inputs = [Path(__file__), untrained_model, prepared_dir / CONTRACT_FILE] + [
        path
        for split in ("train", "validation")
        for path in dataset.shard_paths(prepared_dir, split)
    ]
    with strategy.scope():  # variables (model, optimizer slots) are created per replica
        model = load_model(untrained_model)
        environment = runtime.environment_record(gpus, strategy, model)
        state = TrainingState(outputs.train_state_dir, fingerprint(params, inputs, environment))
        base_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        peak_rate = scaled_learning_rate(base_rate, replicas)
        if cluster is not None:  # before a resumed model's variables: all workers or none
            resumed_together(strategy, state.finished_epochs())
        resumed = state.load()
        history: list[dict] = []
        if resumed:
            model, history = resumed
            print(f"train: resuming after epoch {len(history)} of {params.epochs}")
        steps_per_epoch = math.ceil(dataset.size("train") / global_batch)
        model.optimizer.learning_rate = learning_rate_schedule(peak_rate, params, steps_per_epoch)

    live = Live(dir=str(outputs.train_log_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    live.step = 1  # the plots' x axis counts epochs from 1, as the training log does
    logger = DVCLiveCallback(live=live)
    for epoch, logs in enumerate(history):  # replay finished epochs into a fresh log
        logger.on_epoch_end(epoch, dict(logs))

    batches = training_batches(
        dataset, prepared_dir, global_batch, params.seed, len(history), params.epochs
    )
    validation = split_batches(dataset, prepared_dir, "validation", global_batch).map(
        lambda images, labels: (images, one_hot(labels, dataset.num_classes))
    )
    if cluster is not None:  # each worker its part of every global batch, in the same order
        batches, validation = shard_by_data(batches), shard_by_data(validation)
    try:
        model.fit(
            batches,
            epochs=params.epochs,
            initial_epoch=len(history),
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            shuffle=False,  # the dataset is already in its seeded per-epoch order
            callbacks=[StopOnNaN(), Checkpoint(state, history), logger, *extra_callbacks],
            verbose=2,
        )
    except tf.errors.UnavailableError as error:
        if cluster is None:
            raise
        raise StageError(
            f"{cluster.lost_worker(error.message)} of the cluster stopped answering"
            f" (TensorFlow: {type(error).__name__}); start every worker again: each resumes after"
            f" epoch {len(history)}, the last one all of them finished"
        ) from None
    if len(history) == params.epochs:  # a callback may have stopped training early
        live.end()
    report = {**environment, "global_batch_size": global_batch, "peak_learning_rate": peak_rate}
    if outputs is paths:
        save_model(model, paths.trained_model)
        write_json(paths.train_report, report)
        state.clear()
    else:
        shutil.rmtree(outputs.root)
    return Trained(history, report)


def worker_scratch(paths: Paths, cluster: Cluster) -> Paths:
    """Where a worker other than the chief writes: inside the git-ignored resume folder."""
    return Paths(paths.train_state_dir / f"worker-{cluster.index}")


def shard_by_data(batches: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options)


def main() -> None:
    cluster = read_cluster()
    strategy = join(cluster) if cluster else None  # before TensorFlow does anything else
    trained = train(load_params().train, Paths(), strategy=strategy, cluster=cluster)
    environment, history = trained.report, trained.history
    worker = f"worker {cluster.index} of {len(cluster.workers)}, " if cluster else ""
    print(
        f"train: {worker}on {environment['device']}, {environment['strategy']} strategy with"
        f" {environment['replicas']} replica(s), {environment['precision_policy']}"
    )
    final = history[-1]
    print(f"train: val_accuracy {final['val_accuracy']:.4f}, val_loss {final['val_loss']:.4f}")


if __name__ == "__main__":
    run_stage("train", main)
