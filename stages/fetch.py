"""Stage ``fetch``: get the four raw MNIST files into ``data/raw``, verified against pinned md5s
(with ``data.source: folder``, only a note: your images are already in the repository).

Sources are tried per file, in order: ``$MNIST_MIRROR`` (a directory or an http(s)/file URL), then
the public mirrors (``$MNIST_PUBLIC_MIRRORS``, a space-separated list, replaces them: an
organisation's own mirrors, or none at all when set empty). A relative directory is taken from the
repository root, also in ``dvc exp run --temp`` and queued experiments, which run in a copy of the
repository elsewhere (DVC passes the root as ``$DVC_ROOT``). Each archive is extracted and its
content's md5 compared with the pinned one; on any failure the next source is tried. ``data/raw``
appears only once all four files are verified. Being a cached DVC output, it is fetched once and
then pulled from the DVC remote.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from classifier.errors import StageError, run_stage
from classifier.files import atomic_path
from classifier.mnist import (
    MIRROR_ENV,
    PUBLIC_MIRRORS,
    PUBLIC_MIRRORS_ENV,
    RAW_FILES,
    SOURCE,
    RawFile,
)
from classifier.params import load_params
from classifier.paths import Paths

CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30


class SourceFailure(Exception):
    """One source could not provide one file; the next source is tried."""


REPO_ROOT_ENV = "DVC_ROOT"  # set by DVC for every stage command: the user's repository root

Environ = dict[str, str] | os._Environ


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def _anchored(source: str, environ: Environ) -> str:
    """A relative directory, taken from the repository root rather than the stage's cwd."""
    root = environ.get(REPO_ROOT_ENV, "")
    if _is_url(source) or not root:
        return source
    return str(Path(root) / Path(source).expanduser())


def mirror_sources(environ: Environ = os.environ) -> list[str]:
    """The sources to try, in order: ``$MNIST_MIRROR`` if set, then the public mirrors."""
    override = environ.get(MIRROR_ENV, "").strip()
    public = environ.get(PUBLIC_MIRRORS_ENV)
    public_mirrors = PUBLIC_MIRRORS if public is None else tuple(public.split())
    return ([_anchored(override, environ)] if override else []) + list(public_mirrors)


def _copy_with_progress(stream: BinaryIO, target: BinaryIO, total: int | None, label: str) -> None:
    # tqdm's disable=None shows the bar on a terminal only, so CI logs stay clean.
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None, leave=False) as bar:
        while chunk := _read_source(stream):
            target.write(chunk)  # a fault of this machine's disk is not the source's: it goes up
            bar.update(len(chunk))


def _read_source(stream: BinaryIO) -> bytes:
    try:
        return stream.read(CHUNK)
    except (OSError, TimeoutError) as error:
        raise SourceFailure(f"read failed ({error})") from None


def open_source(source: str, archive: str) -> tuple[BinaryIO, int | None]:
    """``<source>/<archive>`` opened for reading, whether the source is a URL or a directory,
    and its length if known; a SourceFailure if it cannot be."""
    try:
        if _is_url(source):
            url = source.rstrip("/") + "/" + archive
            response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)  # noqa: S310
            length = response.headers.get("Content-Length")
            return response, int(length) if length else None
        path = Path(source).expanduser() / archive
        return path.open("rb"), path.stat().st_size
    except urllib.error.HTTPError as error:
        raise SourceFailure(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise SourceFailure(f"cannot connect ({error.reason})") from None
    except FileNotFoundError:
        raise SourceFailure(f"no file {archive} there") from None
    except (OSError, TimeoutError) as error:
        raise SourceFailure(f"read failed ({error})") from None


def download(source: str, archive: str, target: Path) -> None:
    """Copy ``<source>/<archive>`` to ``target``: what the source fails at is a SourceFailure
    (the next source is tried), what this machine fails at (a full disk) an OSError."""
    stream, length = open_source(source, archive)
    with stream, target.open("wb") as out:
        _copy_with_progress(stream, out, length, archive)


def extract_verified(archive_path: Path, raw_file: RawFile, target: Path) -> None:
    """Gunzip ``archive_path`` into ``target`` and check the extracted bytes' md5."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(archive_path, "rb") as stream, target.open("wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise SourceFailure(f"corrupt gzip archive ({error})") from None
    if digest.hexdigest() != raw_file.md5:
        raise SourceFailure(f"checksum mismatch: md5 {digest.hexdigest()}, expected {raw_file.md5}")


def fetch_file(raw_file: RawFile, sources: Sequence[str], directory: Path) -> str:
    """Put a verified ``raw_file`` into ``directory``; return the source that provided it."""
    failures = []
    archive_path = directory / raw_file.archive
    target = directory / raw_file.name
    for source in sources:
        try:
            download(source, raw_file.archive, archive_path)
            extract_verified(archive_path, raw_file, target)
            return source
        except SourceFailure as failure:
            failures.append(f"  {source}: {failure}")
            target.unlink(missing_ok=True)
        finally:
            archive_path.unlink(missing_ok=True)
    raise StageError(
        f"could not get a verified {raw_file.archive} from any source:\n"
        + "\n".join(failures)
        + f"\n  fix: set {MIRROR_ENV} to a directory or http(s) URL that holds the MNIST .gz files,"
        f" e.g. {MIRROR_ENV}=../shared/datasets/mnist"
    )


def fetch_all(raw_dir: Path, sources: Sequence[str]) -> dict[str, str]:
    """Fetch all four files into ``raw_dir`` atomically; return which source gave each file."""
    if not sources:
        raise StageError(
            f"no source to fetch MNIST from ({PUBLIC_MIRRORS_ENV} is set empty); set {MIRROR_ENV}"
            " to a directory or http(s) URL that holds the MNIST .gz files"
        )
    with atomic_path(raw_dir) as staged:
        staged.mkdir()
        return {raw.name: fetch_file(raw, sources, staged) for raw in RAW_FILES}


def placeholder(raw_dir: Path, folder: str) -> None:
    """What ``data/raw`` holds when the images come from a folder: a note, and no MNIST."""
    with atomic_path(raw_dir) as staged:
        staged.mkdir()
        (staged / "README.txt").write_text(
            f"data.source is folder: prepare reads {folder}; nothing was fetched\n"
        )


def main() -> None:
    data, paths = load_params().data, Paths()
    if data.source != SOURCE:
        placeholder(paths.raw_dir, data.folder)
        print(f"fetch: data.source is {data.source} ({data.folder}): nothing to fetch")
        return
    used = fetch_all(paths.raw_dir, mirror_sources())
    for name, source in used.items():
        print(f"fetch: {name} verified (from {source})")


if __name__ == "__main__":
    run_stage("fetch", main)
