"""Atomic file and directory writes, so that a failed stage never leaves a half-written artifact.

Everything is written to a temporary sibling first and renamed into place only when complete;
a rename within one directory is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from classifier.faults import writing


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only if the block succeeds.

    Works for a file or a directory written by the caller at the yielded path. A file replaces
    its target in one rename, so a reader (or a process killed at any moment) sees the old file or
    the new one, never none; it is flushed to disk first. A directory cannot be renamed over a
    non-empty one, so an existing target directory is removed just before.
    """
    target = Path(target)
    with writing(target):  # a full disk's one line names this output, not its scratch copy
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_scratch(target)
        prefix = f".{target.name}.{os.getpid()}."
        scratch = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    staged = scratch / target.name
    try:
        with writing(target):
            yield staged
            if not staged.exists():
                raise FileNotFoundError(f"nothing was written for {target}")
            if staged.is_file():
                fsync(staged)
            if staged.is_dir() or (target.is_dir() and not target.is_symlink()):
                remove(target)
            os.replace(staged, target)
            fsync(target.parent)  # the rename itself
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_abandoned_scratch(target: Path) -> None:
    """Delete the scratch copies of ``target`` left by processes that no longer run (killed
    mid-write: their ``finally`` never ran). Each scratch name carries its writer's pid."""
    for scratch in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = scratch.name[len(target.name) + 2 :].split(".")[0]
        if pid.isdigit() and not running(int(pid)):
            shutil.rmtree(scratch, ignore_errors=True)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def fsync(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(path: Path) -> None:
    """Delete a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as staged:
        staged.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def to_json(value: Any, sort_keys: bool = True) -> str:
    """Stable JSON (fixed indent, final newline): equal content gives equal bytes.

    Keys are sorted unless the caller's order matters (e.g. the columns of `dvc exp show`).
    """
    return json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def write_json(path: Path | str, value: Any, sort_keys: bool = True) -> None:
    write_text(path, to_json(value, sort_keys))


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write each array as ``<name>.npy`` (a format whose bytes depend only on the array)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        # Through Python's own write, not numpy's: ndarray.tofile reports a full disk as a short
        # write without errno ("235200 requested and 135040 written"), not as ENOSPC.
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        (directory / f"{name}.npy").write_bytes(buffer.getvalue())


def file_md5(path: Path) -> str:
    """md5 of a file's bytes, read a chunk at a time (what DVC records for a file)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
