"""The package's SavedModel: written so that equal models give equal bytes, then checked in both
loaders a SavedModel meets (TF2's ``tf.saved_model.load``; a TF1 session, as TensorFlow Serving).

The export holds only the model's weights (their underlying TensorFlow variables, in the model's
own order) and the ``serving_default`` function: raw uint8 images ``[N, H, W, C]`` in;
``probabilities`` ``[N, K]``, ``class_index`` ``[N]`` and ``class_name`` ``[N]`` out, so no client
needs a label map. Before the ``package`` stage moves it into place it is loaded back both ways,
independently of Keras, and must predict exactly what the trained model does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2

from classifier.errors import StageError
from classifier.savedmodel import (
    LOAD_ERRORS,
    PREDICT_BATCH,
    SERVING_TAG,
    SIGNATURE,
    error_gist,
    predict_with_export,
    run_signature_in_session,
)
from serving.signature import describe_signature

FINGERPRINT_FILE = "fingerprint.pb"
PROBABILITY_TOLERANCE = 1e-5
SINGLE_IMAGES = 8  # test images also run one at a time in the session, a server's usual request
TF2_LOADER = "tf.saved_model.load"
SESSION_LOADER = "tf.compat.v1.saved_model.loader.load"  # a TF1 session, as TensorFlow Serving


def export_savedmodel(model: keras.Model, directory: Path, classes: tuple[str, ...]) -> None:
    """Write ``model`` as a SavedModel whose ``serving_default`` takes raw uint8 images and
    answers with the probabilities, the most probable class's index and its name in ``classes``.

    The same model gives the same bytes, in any process. ``keras.export.ExportArchive`` does not:

    - it saves the variables the endpoint reads, under ``_all_variables/<i>``, in the order of
      ``ConcreteFunction.variables``, which TensorFlow keeps in a set keyed by ``id()``
      (``FuncGraph._watched_variables``), so the order, the checkpoint keys and the graph's
      variable nodes change from one process to the next;
    - it also saves all of ``model.variables``, which include the Dropout layers' seed-generator
      state: not stored in the ``.keras`` file, it is drawn at random on every load.

    So we save only ``model.weights`` (no seeds, no metrics), in the model's own order, from a
    plain ``tf.Module``; each weight is stored once (the archive stored it twice). Were ``serve``
    to read any other variable, saving would fail (an untracked resource), not vary. Function
    names in ``saved_model.pb`` carry TensorFlow's process-wide trace counter, so the bytes are
    equal between processes that run the same code, as DVC runs this stage, not within one.

    We track each weight's underlying ``tf.Variable`` (``.value``), not the ``keras.Variable``
    wrapping it: saving a wrapper exports its ``tf.Variable`` (the handle ``serve`` reads) and then
    a new ``tf.Variable`` copy of it (``Variable``, ``Variable_1``, ...) as the wrapper's own, and
    the graph's saver restores only those copies. ``tf.saved_model.load`` did not mind (it binds the
    function to objects, not graph handles), but TensorFlow Serving's session loader then ran
    ``serve`` on variables nobody restored ("Could not find variable probabilities/kernel").
    """

    names = tf.constant(classes)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(names, class_index),
        }

    signature = tf.function(
        serve,
        input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, "images")],
        autograph=False,
    ).get_concrete_function()
    root = tf.Module()
    root.model_weights = [weight.value for weight in model.weights]
    tf.saved_model.save(root, str(directory), signatures={SIGNATURE: signature})
    make_fingerprint_uuid_content_derived(directory)


def make_fingerprint_uuid_content_derived(directory: Path) -> None:
    """Replace the random ``uuid`` of ``fingerprint.pb`` by one derived from its content hashes.

    TensorFlow writes a fresh random UUID into every fingerprint and has no option to fix it;
    the other fields hash ``saved_model.pb`` and the checkpoint. A UUID made from those hashes
    still names this SavedModel, but the same model now gets the same one. Rewriting is safe:
    loading reads the fingerprint only for its hashes (metrics), never the uuid.
    """
    path = directory / FINGERPRINT_FILE
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))  # TF's form: a 128-bit decimal
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def predict_in_session(directory: Path, images: np.ndarray, batch_size: int) -> dict:
    """The session loader's outputs, or a StageError if the export does not run there."""
    try:
        return run_signature_in_session(directory, images, batch_size)
    except LOAD_ERRORS as error:
        raise StageError(
            f"exported model does not run in a TF1 session, as TensorFlow Serving loads it"
            f" ({error_gist(error)}); the export was not written"
        ) from None


def compare(
    loader: str, outputs: dict, expected: np.ndarray, batch_size: int, classes: tuple[str, ...]
) -> dict:
    """One check's record, or a StageError if ``outputs`` differ from the trained model's."""
    index = expected.argmax(axis=1)
    names = np.array([name.encode() for name in classes], dtype=object)[index]
    mismatches = int(
        ((outputs["class_index"] != index) | (np.asarray(outputs["class_name"]) != names)).sum()
    )
    max_difference = float(np.abs(outputs["probabilities"] - expected).max())
    if mismatches or max_difference > PROBABILITY_TOLERANCE:
        raise StageError(
            f"exported model disagrees with the trained model when loaded by {loader} (batches"
            f" of {batch_size}): {mismatches} different classes, probabilities differ by up to"
            f" {max_difference:.2e} (tolerance {PROBABILITY_TOLERANCE}); the export was not"
            " written"
        )
    return {
        "loader": loader,
        "examples": len(expected),
        "batch_size": batch_size,
        "max_probability_difference": max_difference,
    }


def verify_export(
    directory: Path, expected: np.ndarray, images: np.ndarray, classes: tuple[str, ...]
) -> dict:
    """Check the export predicts exactly what the trained model does (``expected``: its
    probabilities on ``images``), loaded either way a SavedModel is (TF2 objects; a TF1 session,
    as TensorFlow Serving, in full batches and one image at a time); return what was checked."""
    single = slice(0, SINGLE_IMAGES)
    checks = [
        compare(
            TF2_LOADER, predict_with_export(directory, images), expected, PREDICT_BATCH, classes
        ),
        compare(
            SESSION_LOADER,
            predict_in_session(directory, images, PREDICT_BATCH),
            expected,
            PREDICT_BATCH,
            classes,
        ),
        compare(
            SESSION_LOADER,
            predict_in_session(directory, images[single], 1),
            expected[single],
            1,
            classes,
        ),
    ]
    return {
        "examples": len(images),
        "classes_equal": True,
        "tolerance": PROBABILITY_TOLERANCE,
        "max_probability_difference": max(c["max_probability_difference"] for c in checks),
        "checks": checks,
    }


def serving_signature(directory: Path) -> dict:
    """The ``serving_default`` signature as TensorFlow Serving's metadata API reports it,
    reduced to input and output names, dtypes and shapes (``serving/signature.py``)."""
    saved_model = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    meta_graph = next(g for g in saved_model.meta_graphs if SERVING_TAG in g.meta_info_def.tags)
    signature = json_format.MessageToDict(
        meta_graph.signature_def[SIGNATURE], preserving_proto_field_name=True
    )
    return {"name": SIGNATURE, **describe_signature(signature)}
