"""Load a downloaded version once, the way TensorFlow Serving will, before it is put in place.

TF Serving loads a SavedModel in a TF1 session (the MetaGraph's saver restores the variables,
then the signature's tensors are fetched); an export can pass ``tf.saved_model.load`` and still
fail there. So the version runs ``serving_default`` on one blank image in that loader
(``stages.session_loader``), and its outputs must have the shapes the package documents
(``stages/package.py``: ``probabilities`` [N, 10], ``digit`` [N]).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from serving import Refused
from stages.task import IMAGE_SHAPE, NUM_CLASSES

EXPECTED_SHAPES = {"probabilities": (1, NUM_CLASSES), "digit": (1,)}
FIX = "release a fixed model as a new version"


def check_loads(directory: Path) -> None:
    """Refuse the SavedModel in ``directory`` unless it serves the documented signature."""
    # TensorFlow is imported only when a version is new: a sync with nothing to do stays quick.
    from stages.session_loader import LOAD_ERRORS, error_gist, run_signature_in_session

    # The TF1 loader is the point here; its deprecation notice would bury the sync's own lines.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    blank = np.zeros((1, *IMAGE_SHAPE), np.uint8)
    try:
        outputs = run_signature_in_session(directory, blank, batch_size=1)
    except LOAD_ERRORS as error:
        raise Refused(
            f"it does not load the way TensorFlow Serving loads it ({error_gist(error)}); {FIX}"
        ) from None
    shapes = {name: tuple(np.shape(value)) for name, value in outputs.items()}
    if shapes != EXPECTED_SHAPES:
        raise Refused(
            f"serving_default on one image returned shapes {shapes}, not {EXPECTED_SHAPES}; {FIX}"
        )
