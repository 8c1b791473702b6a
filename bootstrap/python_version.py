"""``python3 -m bootstrap.python_version``: refuse, in one line, a Python the lock cannot install.

The README's set-up commands, ``.ci/run`` and the CircleCI jobs run it before ``python3 -m venv``:
otherwise pip would stop half-way through the lock with "No matching distribution" for whichever
wheel is missing first. The range is the lock's: ``numpy==2.4.6`` has no wheel for Python 3.10,
``tensorflow==2.21.0`` none for 3.14.
"""

import sys

OLDEST = (3, 11)
NEWEST = (3, 13)


def problem(version: "tuple[int, ...]") -> "str | None":
    """Why ``version`` cannot run the pipeline, or None if it can (annotations quoted: this
    module must load on Pythons that cannot evaluate them)."""
    if OLDEST <= tuple(version[:2]) <= NEWEST:
        return None
    return (
        "error: Python {}.{} cannot install requirements.lock: it supports Python {}.{} to {}.{};"
        " run the set-up commands with one of those (python3.11, say, in place of python3)".format(
            version[0], version[1], *OLDEST, *NEWEST
        )
    )


def main() -> int:
    found = problem(sys.version_info)
    if found:
        print("python_version: " + found, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
