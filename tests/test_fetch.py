"""The fetch stage: mirrors tried in order, content verified, nothing unverified left behind."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from classifier.errors import StageError
from classifier.mnist import PUBLIC_MIRRORS, RAW_FILES, TRAIN_LABELS
from stages.fetch import fetch_all, mirror_sources
from testbed.repo import write_params
from testbed.suite import default_params, error_line, run_module


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


def test_public_mirrors_can_be_replaced_or_removed() -> None:
    replaced = {"MNIST_PUBLIC_MIRRORS": " https://a.example/mnist/  https://b.example/mnist/ "}
    assert mirror_sources(replaced) == ["https://a.example/mnist/", "https://b.example/mnist/"]
    assert mirror_sources({"MNIST_PUBLIC_MIRRORS": "", "MNIST_MIRROR": "/data/mnist"}) == [
        "/data/mnist"
    ]


def test_relative_mirror_is_taken_from_the_repository_root() -> None:
    """DVC runs experiments in a copy elsewhere and passes the user's root as DVC_ROOT."""
    env = {"DVC_ROOT": "/home/me/project", "MNIST_PUBLIC_MIRRORS": ""}
    assert mirror_sources({**env, "MNIST_MIRROR": "../shared/mnist"}) == [
        "/home/me/project/../shared/mnist"
    ]
    assert mirror_sources({**env, "MNIST_MIRROR": "/data/mnist"}) == ["/data/mnist"]
    assert mirror_sources({**env, "MNIST_MIRROR": "http://h/mnist/"}) == ["http://h/mnist/"]
    assert mirror_sources({"MNIST_MIRROR": "../m", "MNIST_PUBLIC_MIRRORS": ""}) == ["../m"]


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


def _closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting fails at once, online or offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_cli_exits_nonzero_with_one_line_per_source(tmp_path: Path, serve) -> None:
    """The public mirrors are replaced by loopback ones that fail: one that refuses connections,
    one that answers 404. The same code path as the real mirrors, whatever the network."""
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    refusing, not_found = _closed_port_url(), serve(empty_mirror) + "mnist/"
    env = {"MNIST_MIRROR": str(empty_mirror), "MNIST_PUBLIC_MIRRORS": f"{refusing} {not_found}"}
    write_params(tmp_path, default_params())
    result = run_module("fetch", tmp_path, env=env)
    assert result.returncode == 1
    stderr = result.stderr.splitlines()
    start = stderr.index(error_line(result))
    assert stderr[start] == (
        "fetch: error: could not get a verified train-images-idx3-ubyte.gz from any source:"
    )
    assert stderr[start + 1 :] == [
        f"  {empty_mirror}: no file train-images-idx3-ubyte.gz there",
        f"  {refusing}: cannot connect ([Errno 111] Connection refused)",
        f"  {not_found}: HTTP 404 File not found",
        "  fix: set MNIST_MIRROR to a directory or http(s) URL that holds the MNIST .gz files,"
        " e.g. MNIST_MIRROR=../shared/datasets/mnist",
    ]
    assert not (tmp_path / "data" / "raw").exists()


def test_cli_falls_back_to_a_public_mirror_that_serves(
    tmp_path: Path, shared_mnist: Path, serve
) -> None:
    """What happens on a machine with internet: no MNIST_MIRROR, a public mirror answers."""
    site = tmp_path / "site"
    site.mkdir()
    _copy_mirror(shared_mnist, site / "mnist")  # served at /mnist/, as the public mirrors are
    refusing, serving = _closed_port_url(), serve(site) + "mnist/"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    write_params(workspace, default_params())
    env = {"MNIST_MIRROR": "", "MNIST_PUBLIC_MIRRORS": f"{refusing} {serving}"}
    result = run_module("fetch", workspace, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"fetch: {raw.name} verified (from {serving})" for raw in RAW_FILES
    ]
    for raw in RAW_FILES:
        assert _md5(workspace / "data/raw" / raw.name) == raw.md5


def test_no_source_at_all_is_explained(tmp_path: Path) -> None:
    write_params(tmp_path, default_params())
    result = run_module("fetch", tmp_path, env={"MNIST_MIRROR": "", "MNIST_PUBLIC_MIRRORS": ""})
    assert result.returncode == 1
    assert error_line(result) == (
        "fetch: error: no source to fetch MNIST from (MNIST_PUBLIC_MIRRORS is set empty);"
        " set MNIST_MIRROR to a directory or http(s) URL that holds the MNIST .gz files"
    )
    assert not (tmp_path / "data").exists()


def test_a_folder_source_needs_nothing_fetched(tmp_path: Path) -> None:
    """Your own images need no MNIST: no mirror is tried (all of these would fail)."""
    params = default_params()
    params["data"].update(source="folder", folder="data/images")
    write_params(tmp_path, params)
    env = {"MNIST_MIRROR": str(tmp_path / "none"), "MNIST_PUBLIC_MIRRORS": _closed_port_url()}
    result = run_module("fetch", tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fetch: data.source is folder (data/images): nothing to fetch\n"
    assert [p.name for p in (tmp_path / "data/raw").iterdir()] == ["README.txt"]
