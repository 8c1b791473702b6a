"""The fetch stage: mirrors tried in order, content verified, nothing unverified left behind."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest

from stages.cli import StageError
from stages.fetch import fetch_all, mirror_sources
from stages.mnist import PUBLIC_MIRRORS, RAW_FILES, TRAIN_LABELS
from tests.helpers import error_line, run_module


def _copy_mirror(source: Path, target: Path) -> Path:
    target.mkdir()
    for raw in RAW_FILES:
        shutil.copy(source / raw.archive, target / raw.archive)
    return target


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_sources_put_mnist_mirror_first() -> None:
    assert mirror_sources({"MNIST_MIRROR": "/data/mnist"}) == ["/data/mnist", *PUBLIC_MIRRORS]
    assert mirror_sources({}) == list(PUBLIC_MIRRORS)
    assert mirror_sources({"MNIST_MIRROR": "  "}) == list(PUBLIC_MIRRORS)


def test_fetch_from_a_directory(tmp_path: Path, shared_mnist: Path) -> None:
    raw_dir = tmp_path / "raw"
    used = fetch_all(raw_dir, [str(shared_mnist)])
    assert set(used.values()) == {str(shared_mnist)}
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(raw.name for raw in RAW_FILES)
    for raw in RAW_FILES:
        assert _md5(raw_dir / raw.name) == raw.md5


def test_fetch_over_http(tmp_path: Path, http_mirror: str) -> None:
    raw_dir = tmp_path / "raw"
    fetch_all(raw_dir, [http_mirror])
    assert _md5(raw_dir / TRAIN_LABELS.name) == TRAIN_LABELS.md5


def test_bad_source_falls_through_to_the_next(tmp_path: Path, shared_mnist: Path, serve) -> None:
    corrupt = _copy_mirror(shared_mnist, tmp_path / "corrupt")
    (corrupt / TRAIN_LABELS.archive).write_bytes(b"not gzip at all")
    missing_url = serve(tmp_path / "corrupt") + "nothing-here/"
    raw_dir = tmp_path / "raw"
    used = fetch_all(raw_dir, [missing_url, str(corrupt), str(shared_mnist)])
    assert used[TRAIN_LABELS.name] == str(shared_mnist)
    assert used["train-images-idx3-ubyte"] == str(corrupt)
    assert _md5(raw_dir / TRAIN_LABELS.name) == TRAIN_LABELS.md5


def test_every_failure_named_and_nothing_left(tmp_path: Path, shared_mnist: Path, serve) -> None:
    corrupt = _copy_mirror(shared_mnist, tmp_path / "corrupt")
    (corrupt / TRAIN_LABELS.archive).write_bytes(b"not gzip at all")
    tampered = _copy_mirror(shared_mnist, tmp_path / "tampered")
    labels = bytearray(gzip.decompress((shared_mnist / TRAIN_LABELS.archive).read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one label changed: valid gzip, valid IDX, wrong data
    (tampered / TRAIN_LABELS.archive).write_bytes(gzip.compress(bytes(labels)))
    truncated = _copy_mirror(shared_mnist, tmp_path / "truncated")
    archive = (truncated / TRAIN_LABELS.archive).read_bytes()
    (truncated / TRAIN_LABELS.archive).write_bytes(archive[: len(archive) // 2])
    (tmp_path / "empty-site").mkdir()
    empty_url = serve(tmp_path / "empty-site")
    raw_dir = tmp_path / "raw"

    with pytest.raises(StageError) as error:
        fetch_all(raw_dir, [str(corrupt), str(tampered), str(truncated), empty_url])
    lines = str(error.value).splitlines()
    assert lines[0] == "could not get a verified train-labels-idx1-ubyte.gz from any source:"
    assert lines[1].startswith(f"  {corrupt}: corrupt gzip archive")
    assert lines[2].startswith(f"  {tampered}: checksum mismatch: md5 ")
    assert lines[2].endswith(f"expected {TRAIN_LABELS.md5}")
    assert lines[3].startswith(f"  {truncated}: corrupt gzip archive")
    assert lines[4] == f"  {empty_url}: HTTP 404 File not found"
    assert "set MNIST_MIRROR" in lines[5]
    assert not raw_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corrupt",
        "empty-site",
        "tampered",
        "truncated",
    ]


def test_cli_exits_nonzero_with_one_line_per_source(tmp_path: Path) -> None:
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    result = run_module("fetch", tmp_path, env={"MNIST_MIRROR": str(empty_mirror)})
    assert result.returncode == 1
    stderr = result.stderr.splitlines()
    start = stderr.index(error_line(result))
    assert stderr[start].endswith("from any source:")
    assert stderr[start + 1] == f"  {empty_mirror}: no file train-images-idx3-ubyte.gz there"
    # then one line per public mirror (unreachable on this offline machine), then the fix
    for offset, mirror in enumerate(PUBLIC_MIRRORS, start=2):
        assert stderr[start + offset].startswith(f"  {mirror}: ")
    assert stderr[start + 2 + len(PUBLIC_MIRRORS)].startswith("  fix: set MNIST_MIRROR")
    assert not (tmp_path / "data" / "raw").exists()
