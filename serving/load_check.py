"""Load a downloaded version once, the way TensorFlow Serving will, before it is put in place.

TF Serving loads a SavedModel in a TF1 session (the MetaGraph's saver restores the variables,
then the signature's tensors are fetched); an export can pass ``tf.saved_model.load`` and still
fail there. So the version runs ``serving_default`` on one blank image of the shape its
signature declares, in that loader (``classifier.savedmodel``), and its outputs must be what the
package documents (``stages/package.py``): ``probabilities`` [N, K] with K >= 2,
``class_index`` [N] and ``class_name`` [N], a string.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from serving import Refused

FIX = "release a fixed model as a new version"


def check_loads(directory: Path) -> None:
    """Refuse the SavedModel in ``directory`` unless it serves the documented signature."""
    # TensorFlow is imported only when a version is new: a sync with nothing to do stays quick.
    from classifier.savedmodel import (
        LOAD_ERRORS,
        error_gist,
        run_signature_in_session,
        signature_input_shape,
    )

    # The TF1 loader is the point here; its deprecation notice would bury the sync's own lines.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    try:
        shape = signature_input_shape(directory)
        if len(shape) != 4 or None in shape[1:]:
            raise ValueError(f"the images input is {list(shape)}, not [N, H, W, C]")
        blank = np.zeros((1, *shape[1:]), np.uint8)
        outputs = run_signature_in_session(directory, blank, batch_size=1)
    except (*LOAD_ERRORS, StopIteration) as error:
        raise Refused(
            f"it does not load the way TensorFlow Serving loads it ({error_gist(error)}); {FIX}"
        ) from None
    shapes = {name: tuple(np.shape(value)) for name, value in outputs.items()}
    classes = shapes.get("probabilities", (1, 0))[-1]
    expected = {"probabilities": (1, max(classes, 2)), "class_index": (1,), "class_name": (1,)}
    if shapes != expected or not isinstance(outputs["class_name"][0], bytes):
        raise Refused(
            f"serving_default on one image returned {shapes}, not {expected} with a string"
            f" class_name; {FIX}"
        )
