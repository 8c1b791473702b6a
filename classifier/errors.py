"""The one place that turns a stage's failure into a one-line message and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable


class StageError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do."""


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main`` and exit 1 with ``<name>: <cause>`` on a StageError."""
    try:
        main()
    except StageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
