"""serving.manifest: what the release job writes is what the host reads back, and nothing else.

The host writes each file the manifest names into the version's folder, so a name that would
leave it (``..``, an absolute path) must be refused, as must any entry it cannot check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from serving.manifest import FileEntry, ManifestError, describe, parse, render

SHA = "ab" * 32
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_render_then_parse_round_trips(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "variables/variables.index").write_bytes(b"")
    files = {p.relative_to(tmp_path).as_posix(): p for p in tmp_path.rglob("*") if p.is_file()}
    entries = describe(files)
    assert entries == {
        "saved_model.pb": FileEntry(hashlib.sha256(b"graph").hexdigest(), 5),
        "variables/variables.index": FileEntry(EMPTY_SHA256, 0),
    }
    assert parse(render("mnist", 3, entries), "mnist", 3) == entries


def manifest(**changes) -> bytes:
    document = {
        "format": 1,
        "model": "mnist",
        "version": 3,
        "files": {"saved_model.pb": {"sha256": SHA, "size": 5}},
    }
    return json.dumps({**document, **changes}).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "it is not JSON"),
        (manifest(format=2), "it is not a format-1 manifest"),
        (manifest(version=4), "it describes 'mnist' version 4"),
        (manifest(model="other"), "it describes 'other' version 3"),
        (manifest(files={}), "it lists no files"),
        (manifest(files={"../evil": {"sha256": SHA, "size": 1}}), "it lists '../evil', which"),
        (manifest(files={"/etc/cron.d/x": {"sha256": SHA, "size": 1}}), "it lists '/etc/cron.d/x'"),
        (manifest(files={"a//b": {"sha256": SHA, "size": 1}}), "it lists 'a//b'"),
        (manifest(files={"MANIFEST.json": {"sha256": SHA, "size": 1}}), "it lists 'MANIFEST.json'"),
        (manifest(files={"x": {"sha256": "AB" * 32, "size": 1}}), "its sha256 of x is not 64 hex"),
        (manifest(files={"x": {"sha256": SHA, "size": True}}), "its size of x is not a byte count"),
        (manifest(files={"x": {"sha256": SHA, "size": -1}}), "its size of x is not a byte count"),
        (manifest(files={"x": "sha"}), "its sha256 of x is not 64 hex digits"),
        (manifest(files={"a\x00b": {"sha256": SHA, "size": 1}}), "it lists 'a\\x00b'"),
        (manifest(files={"n" * 256: {"sha256": SHA, "size": 1}}), f"it lists '{'n' * 256}'"),
        (
            manifest(files={"a": {"sha256": SHA, "size": 1}, "a/b": {"sha256": SHA, "size": 1}}),
            "it lists 'a' both as a file and as a folder",
        ),
    ],
)
def test_what_the_host_cannot_check_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ManifestError) as refused:
        parse(data, "mnist", 3)
    assert str(refused.value).startswith(reason)
