"""TensorFlow's start-up chatter kept out of the stages' and commands' output.

Importing TensorFlow and looking for devices prints, through its C++ logging, lines no user of
this project asked for: "All log messages before absl::InitializeLog() is called are written to
STDERR", "Could not find cuda drivers on your machine", and on a machine without a GPU "failed
call to cuInit: ... UNKNOWN ERROR (303)" (at error level). ``TF_CPP_MIN_LOG_LEVEL`` does not reach
the first two (tensorflow/tensorflow#100442), so the first import of TensorFlow, and its device
discovery, run with the process's stderr (file descriptor 2, which C++ writes to) sent to a
temporary file; if the import fails, what it printed is shown after all. Which device training
used is in ``reports/train.json``.

After the start, TensorFlow's C++ logs errors only (level 2). A ``TF_CPP_MIN_LOG_LEVEL`` set in
the environment (any value, e.g. 0) means the user asked for TensorFlow's logging: then nothing is
hidden and their level holds.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Iterator

USER_ASKED = "TF_CPP_MIN_LOG_LEVEL" in os.environ
DEFAULT_LEVEL = "2"  # after the start: errors only (no info, no warnings)


@contextlib.contextmanager
def stderr_held() -> Iterator[None]:
    """File descriptor 2 sent to a temporary file for the block; its content written back to
    stderr if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with stderr held, then its devices discovered."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # TensorFlow reads its log level once, at its first log line (during the import): info
        # and warnings stay hidden afterwards too. Not left in the environment, where a child
        # process (a stage a test runs) would take it for the user's own setting.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = DEFAULT_LEVEL
        try:
            with stderr_held():
                self.loader.exec_module(module)
                module.config.list_physical_devices()  # CUDA's probing, logged now, not later
        finally:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]


class QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and hands it to :class:`QuietLoader`."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: TensorFlow's own imports go the usual way
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Hide TensorFlow's start-up chatter in this process, unless the user asked for it or
    TensorFlow is already imported."""
    if not USER_ASKED and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, QuietImport())
