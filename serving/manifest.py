"""MANIFEST.json: every file of a release with its sha256 and size.

A release is ``releases/<model>/<version>/`` in the bucket. ``ci_jobs.release`` writes the
manifest there, last, so a version is
published exactly when its manifest is there; ``serving.sync`` downloads only versions that have
one and checks every byte against it. S3's ETags cannot serve instead: a multipart upload's ETag
is not a hash of the content, and a file changed after publication keeps a valid ETag of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PREFIX = "releases"
NAME = "MANIFEST.json"
FORMAT = 1
CHUNK = 1 << 20


def release_prefix(model: str) -> str:
    """Where the releases of ``model`` are in the bucket."""
    return f"{PREFIX}/{model}/"


class ManifestError(Exception):
    """A manifest that does not say, in the expected form, what its release holds."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


def digest(chunks: Iterable[bytes]) -> FileEntry:
    """sha256 and size of a stream of byte chunks."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return FileEntry(hasher.hexdigest(), size)


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def describe(files: dict[str, Path]) -> dict[str, FileEntry]:
    """Relative path -> entry, for the files of a version folder."""
    return {name: digest(file_chunks(path)) for name, path in files.items()}


def describe_bytes(files: dict[str, bytes]) -> dict[str, FileEntry]:
    """Relative path -> entry, for files held in memory."""
    return {name: digest([data]) for name, data in files.items()}


def render(
    model: str, version: int, files: dict[str, FileEntry], provenance: dict | None = None
) -> bytes:
    """The manifest's bytes: the same files give the same bytes, so a re-run uploads the same.

    ``provenance`` (the release's git commit and its ``dvc.lock``'s sha256) is recorded beside
    the files; readers check only the files."""
    document = {
        **(provenance or {}),
        "format": FORMAT,
        "model": model,
        "version": version,
        "files": {
            name: {"sha256": entry.sha256, "size": entry.size}
            for name, entry in sorted(files.items())
        },
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


MAX_PART = 255  # bytes in one file or folder name, on every common Linux file system


def safe_relative(name: str) -> bool:
    """A path that stays inside the version folder once joined to it, and can be written there."""
    path = PurePosixPath(name)
    return (
        bool(name)
        and not path.is_absolute()
        and all(part not in ("", ".", "..") for part in name.split("/"))
        and all(len(part.encode()) <= MAX_PART for part in name.split("/"))
        and not any(ord(character) < 32 or character == "\x7f" for character in name)
        and name != NAME
    )


def clashing(names: Iterable[str]) -> str | None:
    """A name that is also another name's folder (``a`` and ``a/b``): not both can be written."""
    listed = set(names)
    for name in sorted(listed):
        parents = PurePosixPath(name).parents
        clash = next((str(p) for p in parents if str(p) in listed), None)
        if clash:
            return clash
    return None


def parse(data: bytes, model: str, version: int) -> dict[str, FileEntry]:
    """The files the manifest of ``model`` ``version`` lists; ManifestError if it is not one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"it is not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f"it is not a format-{FORMAT} manifest")
    if document.get("model") != model or document.get("version") != version:
        raise ManifestError(
            f"it describes {document.get('model')!r} version {document.get('version')!r}"
        )
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        raise ManifestError("it lists no files")
    entries = {}
    for name, entry in files.items():
        if not safe_relative(name):
            raise ManifestError(f"it lists {name!r}, which is not a path inside the version")
        sha256 = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise ManifestError(f"its sha256 of {name} is not 64 hex digits")
        if not (type(size) is int and size >= 0):
            raise ManifestError(f"its size of {name} is not a byte count")
        entries[name] = FileEntry(sha256, size)
    clash = clashing(entries)
    if clash:
        raise ManifestError(f"it lists {clash!r} both as a file and as a folder")
    return entries
