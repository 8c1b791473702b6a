"""TensorFlow set-up shared by the stages that use it: seeds, determinism, precision."""

from __future__ import annotations

import keras
import tensorflow as tf

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
