"""From release to serving host: keep a TensorFlow Serving model base path in step with S3.

TensorFlow Serving has not read ``s3://`` itself since 2.7, so a host serves a local folder that
``python -m serving.sync`` mirrors from ``s3://<bucket>/releases/<model>/`` (verified against each
release's MANIFEST.json and loaded once before it is put in place), and ``python -m
serving.labels`` moves the ``stable`` and ``canary`` labels in TF Serving's model config file.
``serving.layout`` describes what lives in the base path.
"""


class Refused(Exception):
    """A published version that must not be served: which file, why, and what to do."""
