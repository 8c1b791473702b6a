"""Training on several machines: the cluster ``TF_CONFIG`` names, as Kubernetes (an indexed Job,
``infra/kubernetes/``) or Kubeflow's trainer sets it for each worker, read and checked before
TensorFlow waits on it.

``TF_CONFIG`` is TensorFlow's own variable: ``{"cluster": {"worker": ["host:port", ...]},
"task": {"type": "worker", "index": i}}``. Worker 0 is the chief: it alone writes the model,
metrics and reports; the others train the same model in step and keep only their own resume
state, under ``.train-state/worker-<i>/``.

TensorFlow's ``MultiWorkerMirroredStrategy`` waits without end for every worker to start; here a
worker that has not met the others within ``TRAIN_CLUSTER_TIMEOUT_S`` (default 120 s) stops with
one line naming each address it could not reach (``classifier/cluster_watch.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow as tf

from classifier.cluster_watch import TIMEOUT_ENV
from classifier.errors import StageError

TF_CONFIG = "TF_CONFIG"
DEFAULT_TIMEOUT_S = 120.0
REDUCIBLE = (tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)  # collectives'


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...]  # host:port of each worker, in TF_CONFIG's order
    index: int  # this worker's

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def peers(self) -> dict[int, str]:
        return {i: address for i, address in enumerate(self.workers) if i != self.index}

    def lost_worker(self, message: str) -> str:
        """Which worker an UnavailableError lost: the one TensorFlow's message names, else the
        only peer there is (TensorFlow names it in some runs and not in others), else "a
        worker"."""
        named = re.search(r"/job:worker(?:/replica:\d+)?/task:(\d+)", message)
        if named:
            return f"worker {named[1]}"
        if len(self.peers) == 1:
            return f"worker {next(iter(self.peers))}"
        return "a worker"


def read_cluster(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster ``TF_CONFIG`` names; None when it is unset (one machine). A malformed one is
    a StageError saying what is wrong, before TensorFlow reads it."""
    text = environ.get(TF_CONFIG, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise StageError(
            f"{TF_CONFIG} is not a cluster ({type(error).__name__}: {error}); it must be"
            ' {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
        ) from None
    if set(config["cluster"]) != {"worker"} or kind != "worker":
        raise StageError(
            f"{TF_CONFIG} names jobs {sorted(config['cluster'])} and task type {kind!r}: train"
            " runs as workers only (worker 0 is the chief), no chief, ps or evaluator job"
        )
    if not isinstance(workers, list) or not all(is_address(w) for w in workers):
        raise StageError(f"{TF_CONFIG}'s workers must be host:port addresses; got {workers!r}")
    if not isinstance(index, int) or not 0 <= index < len(workers):
        raise StageError(
            f"{TF_CONFIG}'s task index {index!r} is not one of its {len(workers)} workers"
        )
    return Cluster(tuple(workers), index)


def is_address(text: object) -> bool:
    if not isinstance(text, str):
        return False
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit()


class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy as Keras 3's ``fit`` calls it. Keras (3.15) reduces a nested
    data batch in one call, only to learn its shapes before building the model, and scalar
    metrics along axis 0 (keras-team/keras#20585); TensorFlow's collective reduce refuses both,
    and the batch's uint8 images too. Reduced here one value at a time, a scalar across workers
    only, and a value collectives cannot carry (the images) is this worker's own: what Keras
    needs from each call."""

    def reduce(
        self, reduce_op: str | tf.distribute.ReduceOp, value: object, axis: int | None = None
    ) -> object:
        parent = super()

        def one(single: object) -> object:
            local = self.experimental_local_results(single)[0]
            if getattr(local, "dtype", None) not in REDUCIBLE:
                return local
            return parent.reduce(reduce_op, single, None if local.shape.rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def resumed_together(strategy: tf.distribute.Strategy, finished_epochs: int) -> None:
    """Every worker resumes from the same epoch, or none trains. A worker that lost its resume
    state (a pod replaced with an empty volume) would start again from epoch 0 while the others
    go on, and the gradients averaged at each step would come from two different models."""
    mine = strategy.run(lambda: tf.constant([finished_epochs], tf.int64))
    by_replica = strategy.gather(mine, axis=0).numpy().tolist()  # replicas in worker order
    if len(set(by_replica)) > 1:
        raise StageError(
            f"the workers resume from different epochs ({by_replica} finished, replica by"
            " replica): one lost its resume state; remove .train-state on every worker and"
            " start them all again"
        )


def join(cluster: Cluster, timeout_s: float | None = None) -> tf.distribute.Strategy:
    """This worker's strategy, once every worker has started; after ``timeout_s`` without them,
    one line naming the unreachable addresses, from a watch in a process of its own
    (``classifier/cluster_watch.py``: TensorFlow waits holding the GIL)."""
    timeout_s = timeout_s or float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    watch = subprocess.Popen(
        [sys.executable, "-m", "classifier.cluster_watch", str(os.getpid()), f"{timeout_s:g}",
         str(cluster.index), *cluster.workers],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        return KerasMultiWorkerStrategy()
    finally:
        watch.stdin.close()  # the cluster met: the watch ends
        watch.wait()
