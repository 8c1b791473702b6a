"""The pipeline's stages, one module each as ``dvc.yaml`` runs them (``python -m stages.<name>``),
and ``predict``. Their shared code is the ``classifier`` package, imported first: its CPU recipe
must be in place before TensorFlow loads."""

import classifier  # noqa: F401
