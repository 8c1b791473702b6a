"""The one place that turns a stage's or a command's failure into a one-line message and a
non-zero exit: a StageError (bad input: its message says what to do) and a fault of the machine
(``classifier/faults.py``: a full disk, a read-only folder...). A bug keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from classifier.faults import fault_line


class StageError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do."""


def run_stage(name: str, main: Callable[[], int | None]) -> None:
    """Run a stage's or command's ``main``; exit with the status it returns if not 0 or None,
    or 1 with ``<name>: error: <cause>`` on a StageError or a fault of the machine."""
    try:
        status = main()
    except StageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        line = fault_line(error, name)
        if line is None:
            raise
        print(f"{name}: error: {line}", file=sys.stderr)
        sys.exit(1)
    if status:
        sys.exit(status)
