"""The package's SavedModel as its clients run it: ``predict_with_export`` through TF2's
``tf.saved_model.load``, ``run_signature_in_session`` the way TensorFlow Serving loads it.

TensorFlow Serving's C++ loader (``SavedModelBundle``, as ``saved_model_cli run``) does not
rebuild Python objects as ``tf.saved_model.load`` does: it imports the MetaGraph into a TF1
session, runs the saver's restore op to fill the variables, then feeds and fetches the
signature's tensors by name. An export can pass the TF2 loader and still fail there (a function
reading variable handles that the saver does not restore), so the ``package`` stage checks both,
and a serving host can check a synced model before a server loads it. Needs only TensorFlow and
NumPy, not Keras or the rest of the pipeline. TensorFlow logs that this loader is deprecated for
``tf.saved_model.load``: that is the TF2 loader, not the one TensorFlow Serving uses, so that one
note is left out of the output (:class:`WithoutDeprecationNote`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

# What a SavedModel TensorFlow Serving could not serve raises here: TensorFlow's own errors (a
# variable nothing restored), OSError (a saved_model.pb that does not parse), RuntimeError (no
# MetaGraph with the serve tag), KeyError (no such signature or input), ValueError (inputs of
# another shape or type).
LOAD_ERRORS = (tf.errors.OpError, OSError, RuntimeError, KeyError, ValueError)
SERVING_TAG = "serve"  # the MetaGraph TensorFlow Serving loads (tf.saved_model.SERVING)
SIGNATURE = "serving_default"
INPUT = "images"
PREDICT_BATCH = 1000  # images per inference call: bounds the memory predicting takes


class WithoutDeprecationNote(logging.Filter):
    """Drops TensorFlow's note that the TF1 loader is deprecated: it is used on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "saved_model.loader_impl) is deprecated" not in record.getMessage()


tf.get_logger().addFilter(WithoutDeprecationNote())


def signature_input_shape(directory: Path) -> tuple[int | None, ...]:
    """The ``images`` input's shape as the SavedModel declares it (``None``: any size), read
    from ``saved_model.pb`` as TensorFlow Serving reads it, without loading the model."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = directory / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except DecodeError:
        raise OSError(f"Cannot parse file {path}: not a SavedModel") from None
    meta_graph = next(
        graph for graph in saved_model.meta_graphs if SERVING_TAG in graph.meta_info_def.tags
    )
    dims = meta_graph.signature_def[SIGNATURE].inputs[INPUT].tensor_shape.dim
    return tuple(None if dim.size < 0 else dim.size for dim in dims)


def run_signature_in_session(
    directory: Path, images: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """The signature's outputs for ``images``, run ``batch_size`` at a time in a fresh session.

    TensorFlow's own errors (e.g. ``FailedPreconditionError`` for a variable the saver did not
    restore) propagate unchanged: the caller decides how to report them.
    """
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVING_TAG], str(directory))
        signature = meta_graph.signature_def[SIGNATURE]
        feed = signature.inputs[INPUT].name
        fetches = {name: output.name for name, output in signature.outputs.items()}
        batches = [
            session.run(fetches, feed_dict={feed: images[start : start + batch_size]})
            for start in range(0, len(images), batch_size)
        ]
    return {name: np.concatenate([batch[name] for batch in batches]) for name in fetches}


def error_gist(error: Exception) -> str:
    """What a TensorFlow error says went wrong, in one line: its message is a header ending in
    ':', then the cause, then the failing node, too long for a one-line refusal."""
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    cause = next((line for line in lines if line and not line.endswith(":")), "")
    return f"{type(error).__name__}: {cause.split('. ')[0]}" if cause else type(error).__name__


def predict_with_export(directory: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported ``serving_default`` signature, as a server would, in batches.

    One call on the whole test set made TensorFlow allocate every layer's activations (and the
    convolutions' scratch buffers) for 10,000 images at once: 1.8 GB, the pipeline's peak.
    """
    signature = tf.saved_model.load(str(directory)).signatures[SIGNATURE]
    batches = [
        signature(images=tf.constant(images[start : start + PREDICT_BATCH], dtype=tf.uint8))
        for start in range(0, len(images), PREDICT_BATCH)
    ]
    return {name: np.concatenate([batch[name].numpy() for batch in batches]) for name in batches[0]}
