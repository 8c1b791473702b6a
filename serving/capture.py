"""Captured requests on the gateway's disk: gzip-compressed JSON lines, rotated, bounded.

One record per captured predict request (``serving/gateway.py`` chooses which, at its sample
rate)::

    {"time": "2026-12-07T08:00:00.123Z", "model": "mnist", "label": "stable", "version": 3,
     "status": 200, "latency_ms": 4.2,
     "predictions": [{"class_index": 7, "class_name": "7", "confidence": 0.998}, ...],
     "request": {"instances": [[[[0], ...]]]}}         # the request's body, as sent

``request`` is the predict request's JSON exactly as the client sent it (row format
``instances`` or columnar ``inputs``; ``request_instances`` reads either), spliced into the line
without being parsed: decoding and re-encoding 784 numbers per image was a third of the gateway's
CPU per request under load.

Records go to ``<dir>/open/capture-<start>-<pid>-<n>.jsonl.gz`` (the gateway keeps one ``<dir>``
per model, ``<capture-dir>/<model>/``); a file is closed after
``max_records`` records or ``max_age_s`` seconds and moved to ``<dir>/closed/`` (what an uploader
takes, then deletes). The folder never holds more than ``max_bytes``: a record that would pass it
is dropped and counted, as is any record whose write fails (disk full, permissions): capture is
a courtesy to the monitor, never a reason to fail or slow a request. After a failed write the
file is closed and a new one started with the next record, so capturing resumes by itself.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OPEN, CLOSED = "open", "closed"
FILES_OPENED = itertools.count(1)  # by this process: part of each name, which never repeats
# zlib's fastest level: 0.04 ms a record of one image of random pixels (the worst case) and 1.5 kB
# on disk, where gzip's default, 9, takes 3.5 ms (more than the gateway's whole budget per
# request under load) for 1.2 kB; measured here on the 2-core test machine.
COMPRESS_LEVEL = 1
BUDGET_LOOK_S = 1.0
SUFFIX = ".jsonl.gz"


@dataclass
class CaptureFiles:
    """The writer of one gateway process; not thread-safe (the gateway writes from one task)."""

    directory: Path
    max_bytes: int  # for everything under budget_root (default: directory)
    max_records: int = 1000
    max_age_s: float = 300.0
    clock: Callable[[], float] = time.time
    on_drop: Callable[[str], None] = lambda reason: None
    budget_root: Path | None = None  # the folder the budget counts: one model's, or all models'
    _file: gzip.GzipFile | None = field(default=None, repr=False)
    _path: Path | None = field(default=None, repr=False)
    _records: int = 0
    _opened_at: float = 0.0
    _used: int = 0  # the budget's bytes at the last look, plus the lines written since
    _looked_at: float = -math.inf

    def __post_init__(self) -> None:
        for name in (OPEN, CLOSED):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        for stale in (self.directory / OPEN).glob(f"*{SUFFIX}"):  # a previous process's: finished
            self._move_to_closed(stale)

    def used_bytes(self) -> int:
        """Bytes of capture files under the budget's root: looked up on disk at most once every
        ``BUDGET_LOOK_S`` (the uploader deletes files meanwhile; a look at hundreds of files on
        every record would cost more than the record), with each line written since counted
        whole, uncompressed: an over-estimate, never an under-one."""
        now = self.clock()
        if now - self._looked_at >= BUDGET_LOOK_S:
            root = self.budget_root or self.directory
            self._used = sum(map(size_of, root.rglob(f"*{SUFFIX}")))
            self._looked_at = now
        return self._used

    def write(self, record: dict) -> bool:
        """Append one record; False (and ``on_drop`` told why) if it was not kept."""
        return self.write_lines([record_line(record)]) == 1

    def write_lines(self, lines: list[bytes]) -> int:
        """Append whole lines (``record_line``), flushed once at the end so that a reader sees
        them all: how many were kept (``on_drop`` told why for each that was not)."""
        kept = 0
        for line in lines:
            if self.used_bytes() + len(line) > self.max_bytes:
                self.on_drop("disk_budget")
                continue
            try:
                if self._file is None or self._due():
                    self.close()
                    self._open()
                self._file.write(line)
                self._records += 1
                self._used += len(line)
                kept += 1
            except OSError:
                self.on_drop("write_failed")
                self._abandon()
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                self.on_drop("write_failed")
                self._abandon()
        return kept

    def close(self) -> Path | None:
        """Close the open file and move it to ``closed/``; its new path."""
        if self._file is None:
            return None
        path = self._path
        try:
            self._file.close()
        except OSError:
            self.on_drop("write_failed")
        self._file, self._path, self._records = None, None, 0
        return self._move_to_closed(path)

    def closed_files(self) -> list[Path]:
        return sorted((self.directory / CLOSED).glob(f"*{SUFFIX}"))

    def _due(self) -> bool:
        return self._records >= self.max_records or self.clock() - self._opened_at >= self.max_age_s

    def _open(self) -> None:
        now = self.clock()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        name = f"capture-{stamp}-{os.getpid()}-{next(FILES_OPENED):06d}{SUFFIX}"
        self._path = self.directory / OPEN / name
        self._file = gzip.GzipFile(self._path, "wb", compresslevel=COMPRESS_LEVEL, mtime=0)
        self._opened_at = now

    def _abandon(self) -> None:
        """After a failed write: drop the broken file's handle; what it holds stays readable
        up to its last complete gzip member, and it is closed like any other."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        path = self._path
        self._file, self._path, self._records = None, None, 0
        if path is not None and path.exists():
            with contextlib.suppress(OSError):
                self._move_to_closed(path)

    def _move_to_closed(self, path: Path) -> Path:
        target = self.directory / CLOSED / path.name
        os.replace(path, target)
        return target


def size_of(path: Path) -> int:
    """A file's size; 0 for one the uploader deleted since it was listed."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def record_line(record: dict, request: bytes | None = None) -> bytes:
    """One JSON line: ``record``, and with ``request`` (a JSON object's bytes, which the server
    accepted) that body spliced in as the ``request`` field unparsed. A JSON text has line
    breaks only between tokens (inside strings they are escaped), so turning them into spaces
    keeps it one line and the same value."""
    text = json.dumps(record, separators=(",", ":")).encode()
    if request is None:
        return text + b"\n"
    body = request.replace(b"\r", b" ").replace(b"\n", b" ")
    return text[:-1] + b',"request":' + body + b"}\n"


def request_instances(record: dict) -> list:
    """The captured request's inputs, one per instance: the row format's ``instances``, or the
    columnar ``inputs`` (a single input's tensor, or the one named input's); [] if neither.
    Records written before the request was kept whole hold ``instances`` at the top level."""
    request = record.get("request", {"instances": record.get("instances")})
    if not isinstance(request, dict):
        return []
    inputs = request.get("instances", request.get("inputs"))
    if isinstance(inputs, dict) and len(inputs) == 1:
        (inputs,) = inputs.values()
    return inputs if isinstance(inputs, list) else []


def read_records(path: Path) -> list[dict]:
    """Every record of a closed capture file (the format above)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
