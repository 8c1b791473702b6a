"""The MNIST pipeline's stages, one module each, plus the helpers they share.

Every stage is run by DVC as ``python -m stages.<name>``; its logic lives in plain functions that
the tests call directly.
"""

import os

# Set before any stage imports TensorFlow: hide its C++ info/warning chatter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
