"""Faults of the machine (a full disk, a read-only or forbidden folder, too many open files) in
one line: what the step was writing, the path, the cause in words and what to do.

A programming error is not a fault: only an ``OSError`` whose errno is one of ``FAULTS`` is
described; anything else keeps its traceback, which is how a bug gets fixed. ``atomic_path``
(``classifier/files.py``), which every output goes through, records on the error the output it
was writing (``error.target``), so the line names what the user knows (``data/prepared``), not
the scratch file beside it. The outputs are as they were: an atomic write that fails leaves the
old output and removes its scratch copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

FULL = {errno.ENOSPC, errno.EDQUOT}
FORBIDDEN = {errno.EACCES, errno.EPERM}
FAULTS = FULL | FORBIDDEN | {errno.EROFS, errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.EIO}
# TensorFlow's C++ file system raises its own errors (not OSError) with the C library's words
# in the message: these are the faults among them, by the errno whose words they carry.
TENSORFLOW_ERRORS = "tensorflow.python.framework.errors_impl"
MB = 1 << 20


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Record on whatever fails in the block the output it was writing (the innermost wins)."""
    try:
        yield
    except Exception as error:
        if not hasattr(error, "target"):
            error.target = target
        raise


def as_os_error(error: BaseException) -> OSError | None:
    """``error`` if it is an OSError; a TensorFlow file-system error as the OSError it reports
    (its message carries the C library's words for the errno); else None."""
    if isinstance(error, OSError):
        return error
    if type(error).__module__ != TENSORFLOW_ERRORS:
        return None
    message = str(error)  # "{{...}} <file>; No space left on device [Op:SaveV2]"
    for number in FAULTS:
        words = os.strerror(number)
        if f"; {words}" in message:
            before = message.split(f"; {words}")[0].split()
            converted = OSError(number, words, before[-1] if before else None)
            target = getattr(error, "target", None)
            if target is not None:
                converted.target = target
            return converted
    return None


def fault_line(error: BaseException, step: str, cwd: Path | None = None) -> str | None:
    """The one line for a fault of the machine; None for anything else (a bug: let it show)."""
    fault = as_os_error(error)
    if fault is None or fault.errno not in FAULTS:
        return None
    cwd = cwd or Path.cwd()
    target = getattr(fault, "target", None)
    path = Path(target if target is not None else fault.filename or ".")
    shown = shown_path(path, cwd)
    doing = f"cannot write {shown}" if target is not None else shown
    cause = os.strerror(fault.errno).lower()
    return f"{doing}: {cause}; {advice(fault.errno, path, step, cwd)}"


def shown_path(path: Path, cwd: Path) -> str:
    """``path`` relative to the folder the step runs in, where it is inside it."""
    try:
        relative = path.resolve().relative_to(cwd.resolve())
    except ValueError:
        return str(path)
    return "the current folder" if relative == Path() else str(relative)


def advice(number: int, path: Path, step: str, cwd: Path) -> str:
    """What to do, with what was measured: the room free and the room the step needs."""
    if number in FULL:
        where = existing_parent(path)
        free = shutil.disk_usage(where).free / MB
        needs = outputs_bytes(step, cwd)
        room = f"; the step writes about {needs / MB:.1f} MB (dvc.lock's sizes)" if needs else ""
        return (
            f"{free:.1f} MB free on the file system of {shown_path(where, cwd)}{room}: free some"
            " room there (or work on a larger disk) and run it again"
        )
    if number in FORBIDDEN:
        where = existing_parent(path)
        return (
            f"this user (uid {os.getuid()}) is refused there ({shown_path(where, cwd)}): fix the"
            " owner or mode (ls -ld shows them), or work in a copy of your own"
        )
    if number == errno.EROFS:
        return (
            f"{shown_path(existing_parent(path), cwd)} is on a read-only file system: run the"
            " step in a writable copy of the project"
        )
    if number in (errno.EMFILE, errno.ENFILE):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f"raise the limit of open files (ulimit -n, now {soft}) and run it again"
    if number == errno.EFBIG:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft} bytes"
        return f"raise the file size limit (ulimit -f, now {limit}) and run it again"
    return "the disk reported an input/output error: check it (dmesg) before running again"


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a scratch folder is gone by now)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def outputs_bytes(step: str, cwd: Path) -> int:
    """The bytes of the step's outputs as ``dvc.lock`` in ``cwd`` recorded them (0 if it is not a
    DVC stage there): what it will write again."""
    try:
        lock = yaml.safe_load((cwd / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return 0
    stage = lock.get("stages", {}).get(step, {})
    return sum(int(out.get("size", 0)) for out in stage.get("outs", []))
