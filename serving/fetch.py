"""What is published under ``releases/<model>/``, and one version downloaded and checked.

A version is downloaded into its staging folder, file by file, hashing as it streams; every file
must be in its MANIFEST.json with the same size and sha256, and every file the manifest lists
must be there. Anything else refuses the version: the bucket no longer holds what was released.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from serving import Refused
from serving.layout import parse_version
from serving.manifest import (
    CHUNK,
    NAME,
    FileEntry,
    ManifestError,
    digest,
    parse,
    release_prefix,
)

AGAIN = (
    "the bucket no longer holds what was released (its object versions show what changed):"
    " publish the model again as a new version"
)


def listing(s3, bucket: str, model: str) -> dict[int, dict[str, int]]:
    """Version -> (path inside the version -> size), for every version folder in the bucket."""
    prefix = release_prefix(model)
    versions: dict[int, dict[str, int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            folder, _, relative = item["Key"].removeprefix(prefix).partition("/")
            version = parse_version(folder)
            if version is not None and relative:
                versions.setdefault(version, {})[relative] = item["Size"]
    return versions


def written_to(out: BinaryIO, chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        out.write(chunk)
        yield chunk


def save_object(s3, bucket: str, key: str, path: Path) -> FileEntry:
    """Stream one object to ``path`` (made durable), returning what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with path.open("xb") as out:
        entry = digest(written_to(out, body.iter_chunks(CHUNK)))
        out.flush()
        os.fsync(out.fileno())
    return entry


def check_listing(entries: dict[str, FileEntry], objects: dict[str, int]) -> None:
    """Refuse before downloading when the bucket's files are not the manifest's."""
    extra = sorted(set(objects) - set(entries) - {NAME})
    if extra:
        raise Refused(f"{extra[0]} is in the bucket but not in its {NAME}; {AGAIN}")
    missing = sorted(set(entries) - set(objects))
    if missing:
        raise Refused(f"{missing[0]} is in its {NAME} but not in the bucket; {AGAIN}")
    for name, entry in sorted(entries.items()):
        if objects[name] != entry.size:
            raise Refused(
                f"{name} is {objects[name]} bytes in the bucket, {entry.size} in its {NAME};"
                f" {AGAIN}"
            )


def download(
    s3, bucket: str, model: str, version: int, objects: dict[str, int], staging: Path
) -> dict[str, FileEntry]:
    """Download ``version`` into ``staging`` and check it against its manifest, or refuse it."""
    prefix = f"{release_prefix(model)}{version}/"
    save_object(s3, bucket, prefix + NAME, staging / NAME)  # kept: what the host checked
    try:
        entries = parse((staging / NAME).read_bytes(), model, version)
    except ManifestError as error:
        raise Refused(f"its {NAME} is not a release manifest: {error}; {AGAIN}") from None
    check_listing(entries, objects)
    for name, expected in sorted(entries.items()):
        got = save_object(s3, bucket, prefix + name, staging / name)
        if got != expected:
            raise Refused(
                f"{name} has sha256 {got.sha256[:12]}… ({got.size} bytes), its {NAME} says"
                f" {expected.sha256[:12]}… ({expected.size} bytes); {AGAIN}"
            )
    return entries
