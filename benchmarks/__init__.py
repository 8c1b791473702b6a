"""Benchmark scripts (``python -m benchmarks.<name>``); their reports are kept beside them.

``stages`` is imported first so that its CPU recipe (fixed thread pools, oneDNN capped at AVX) is
set before any benchmark loads TensorFlow: they measure what the pipeline runs.
"""

import classifier  # noqa: F401
