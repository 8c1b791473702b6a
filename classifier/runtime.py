"""TensorFlow at run time: seeds and determinism, the precision policy, and where training runs
(the visible GPUs, the distribution strategy for them, and a record of both).

``build.mixed_precision: auto`` and the strategy depend on the hardware, which DVC's run-cache
cannot see; the record written beside the trained model (``reports/train.json``, copied into the
model card) says where a restored model was made. It holds no timestamps, host names or timings,
and on a CPU no CPU model either, so every CPU machine writes the same bytes; it does hold the CPU
recipe in effect (``classifier.CPU_RECIPE``, or what the environment set instead), on which they
depend. The strategy is a pure function of the visible GPUs, so its branches are tested with fake
lists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from classifier import CPU_RECIPE

MIXED = "mixed_float16"
FULL = "float32"


def precision_policy(setting: str, gpu: bool) -> str:
    """The Keras dtype policy for ``build.mixed_precision``.

    ``auto`` uses float16 compute only where it pays off (a GPU); on a CPU it is slower and less
    exact, so ``auto`` keeps float32 there. ``on``/``off`` force either.
    """
    if setting == "on" or (setting == "auto" and gpu):
        return MIXED
    return FULL


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF pick deterministic kernels.

    With this and the CPU recipe that importing ``stages`` sets (fixed thread pools, oneDNN
    capped at AVX), a CPU run's results depend only on data, code and params, on any x86-64 CPU.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


MIRRORED = "MirroredStrategy"
MULTI_WORKER = "MultiWorkerMirroredStrategy"
DEFAULT = "default"


@dataclass(frozen=True)
class StrategyChoice:
    name: str  # DEFAULT (one device: nothing to distribute) or MIRRORED
    devices: tuple[str, ...]  # the devices MIRRORED replicates over; () for DEFAULT


def gpu_names() -> list[str]:
    """The visible GPUs by model name (e.g. ``NVIDIA H200``), in device order."""
    return [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def choose_strategy(gpus: Sequence[str]) -> StrategyChoice:
    """Data-parallel over every GPU when there are several; otherwise TF's default strategy.

    One device (a CPU, or one GPU) gains nothing from replication and would pay its overhead.
    """
    if len(gpus) < 2:
        return StrategyChoice(DEFAULT, ())
    return StrategyChoice(MIRRORED, tuple(f"/gpu:{index}" for index in range(len(gpus))))


def make_strategy(choice: StrategyChoice) -> tf.distribute.Strategy:
    if choice.name == MIRRORED:
        return tf.distribute.MirroredStrategy(list(choice.devices))
    return tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return MULTI_WORKER
    return MIRRORED if isinstance(strategy, tf.distribute.MirroredStrategy) else DEFAULT


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """The machines training together: 1 unless the strategy spans a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(len(spec.get("worker", [])), 1)


def tensorflow_build() -> dict:
    """The TensorFlow build: its version and the CUDA/cuDNN it was compiled against, if any."""
    info = tf.sysconfig.get_build_info()
    return {
        "version": tf.__version__,
        "cuda_build": bool(info.get("is_cuda_build", False)),
        "cuda_version": info.get("cuda_version"),
        "cudnn_version": info.get("cudnn_version"),
    }


def environment_record(
    gpus: Sequence[str], strategy: tf.distribute.Strategy, model: keras.Model
) -> dict:
    """What the trained weights depend on besides data, code and params."""
    return {
        "device": f"{len(gpus)} x GPU" if gpus else "CPU",
        "gpus": list(gpus),
        "gpu_count": len(gpus),
        "precision_policy": model.dtype_policy.name,
        "xla": bool(model.jit_compile),
        "strategy": strategy_name(strategy),
        "workers": worker_count(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "tensorflow": tensorflow_build(),
        "cpu_recipe": cpu_recipe_in_effect(),
    }


def cpu_recipe_in_effect() -> dict[str, str | None]:
    """The thread-pool and oneDNN settings this process runs with (``classifier.CPU_RECIPE``'s
    variables, as the environment has them: the recipe unless something set them before)."""
    return {name: os.environ.get(name) for name in CPU_RECIPE}
