"""Publish the packaged model as the next free version of the bucket's write-once release prefix.

    python -m ci_jobs.release

Uploads ``dist/<model_name>/`` (``package.model_name`` in params.yaml) to
``s3://<bucket>/releases/<model_name>/<N>/``, where ``N`` is assigned here: one more than the
highest version folder in the bucket. Nobody edits a version number, and two releases running at
once never take the same one: every upload carries ``If-None-Match: *``, and the first file
uploaded (``fingerprint.pb``, a hash of the model) claims the version; a release whose claim S3
refuses (412) because another took that number meanwhile tries the next.
The bucket is the DVC remote's (``url`` in .dvc/config, with ``endpointurl``/``region`` and any
``--local`` override). Credentials come from the standard web-identity chain (``AWS_ROLE_ARN`` =
the release role, ``AWS_WEB_IDENTITY_TOKEN_FILE``).

What is uploaded is the package plus what only the release knows: ``assets.extra/dvc.lock`` (the
lock that made it) and the model card with a ``release`` section (the version, the git commit,
the lock's sha256). ``MANIFEST.json`` (serving/manifest.py: sha256 and size of every file, the
commit and the lock's sha256) goes last, after ``saved_model.pb``: a version is published when its
manifest is in the bucket, and a serving host checks every byte against it (``serving.sync``).

A published version is never overwritten, and earlier versions stay for rollback. The same model
(the same ``fingerprint.pb``) is not published twice: published already, the job says which
version and succeeds; claimed by a release that died half-way, it is completed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ci_jobs.bucket import BucketError, dvc_bucket, put_once, s3_client
from ci_jobs.main_lock import git
from classifier.errors import StageError, run_stage
from classifier.model_card import CARD_DIR, CARD_JSON, CARD_MARKDOWN, released
from classifier.params import load_params
from classifier.paths import Paths
from serving.layout import parse_version
from serving.manifest import NAME as MANIFEST
from serving.manifest import describe_bytes, release_prefix, render

CLAIM = "fingerprint.pb"  # uploaded first: whoever writes it first owns the version
LAST = "saved_model.pb"  # what makes a folder a SavedModel: the last of the version's own files
LOCK_COPY = f"{CARD_DIR}/dvc.lock"
MAX_ATTEMPTS = 20  # versions tried when others keep taking the next number


class Refusal(Exception):
    """Why nothing (more) is published, and what to do."""


class Taken(Exception):
    """Another release claimed this version between our listing and our claim."""


class AlreadyPublished(Exception):
    """This very model is published already: nothing to do."""

    def __init__(self, version: int):
        super().__init__(version)
        self.version = version


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def package_files(directory: Path) -> dict[str, bytes]:
    """Relative path -> bytes, for everything in the package (a model folder: megabytes)."""
    files = {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    for required in (LAST, CLAIM, CARD_JSON):
        if required not in files:
            raise Refusal(f"{directory} holds no {required}; run `dvc repro` (package) first")
    if MANIFEST in files or LOCK_COPY in files:
        name = MANIFEST if MANIFEST in files else LOCK_COPY
        raise Refusal(f"{directory} holds a {name}, which is the release's own; remove it")
    return files


def release_files(package: dict[str, bytes], version: int, commit: str, lock: bytes) -> dict:
    """The package as released: its card with a ``release`` section, and the lock beside it."""
    release = {
        "version": version,
        "git_commit": commit,
        "dvc_lock_sha256": hashlib.sha256(lock).hexdigest(),
    }
    try:
        card, text = released(package[CARD_JSON], package.get(CARD_MARKDOWN, b""), release)
    except (ValueError, KeyError) as error:
        raise Refusal(
            f"the package's model card cannot take the release ({error}); run `dvc repro`"
        ) from None
    return {**package, CARD_JSON: card, CARD_MARKDOWN: text, LOCK_COPY: lock}


def versions_in_bucket(s3, bucket: str, model: str) -> dict[int, dict[str, str]]:
    """Version -> (relative key -> ETag, the MD5 of a single-part upload), published or not."""
    prefix = release_prefix(model)
    found: dict[int, dict[str, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            folder, _, relative = item["Key"].removeprefix(prefix).partition("/")
            version = parse_version(folder)
            if version is not None and relative:
                found.setdefault(version, {})[relative] = item["ETag"].strip('"')
    return found


def choose_version(versions: dict[int, dict[str, str]], fingerprint: str) -> int:
    """The version this model goes to: its own unfinished one, else the next free number."""
    for version, objects in sorted(versions.items()):
        if objects.get(CLAIM) == fingerprint:
            if MANIFEST in objects:
                raise AlreadyPublished(version)
            return version
    return max(versions, default=0) + 1


def upload_order(files: dict[str, bytes], remote: dict[str, str], where: str) -> list[str]:
    """What is left to upload: the claim first, ``saved_model.pb`` last."""
    for name, etag in remote.items():
        if name not in files or md5(files[name]) != etag:
            raise Refusal(
                f"{where} holds an unfinished release of this model whose {name} differs (made"
                " from another commit?); delete that unfinished version's objects, then release"
            )
    missing = [name for name in files if name not in remote]
    return sorted(missing, key=lambda name: (name != CLAIM, name == LAST, name))


def upload_version(
    s3, bucket: str, prefix: str, files: dict, remote: dict, manifest: bytes
) -> list:
    """Upload a version's missing files, claim first and manifest last; return the keys."""
    where = f"s3://{bucket}/{prefix}"
    keys = []
    for name in upload_order(files, remote, where):
        if not put_once(s3, bucket, prefix + name, files[name]):
            if name == CLAIM:
                raise Taken
            raise Refusal(f"s3://{bucket}/{prefix}{name} appeared meanwhile; {where} is taken")
        keys.append(prefix + name)
    if not put_once(s3, bucket, prefix + MANIFEST, manifest):
        raise Refusal(f"{where}{MANIFEST} appeared meanwhile; {where} is taken")
    return [*keys, prefix + MANIFEST]


def publish(
    s3, bucket: str, model: str, directory: Path, commit: str, lock: bytes
) -> tuple[int, list[str]]:
    """Publish the package as the next free version; return it and the keys written."""
    package = package_files(directory)
    versions = versions_in_bucket(s3, bucket, model)
    version = choose_version(versions, md5(package[CLAIM]))
    for _ in range(MAX_ATTEMPTS):
        files = release_files(package, version, commit, lock)
        provenance = {
            k: v for k, v in json.loads(files[CARD_JSON])["release"].items() if k != "version"
        }
        manifest = render(model, version, describe_bytes(files), provenance)
        prefix = f"{release_prefix(model)}{version}/"
        try:
            return version, upload_version(
                s3, bucket, prefix, files, versions.get(version, {}), manifest
            )
        except Taken:
            version += 1
    raise Refusal(
        f"{MAX_ATTEMPTS} versions in a row were taken by other releases meanwhile; run the job"
        " again"
    )


def git_commit() -> str:
    """The commit being released: CircleCI's ``CIRCLE_SHA1``, else the checkout's HEAD."""
    if commit := os.environ.get("CIRCLE_SHA1"):
        return commit
    try:
        return git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        raise Refusal(
            "no git commit to record: run the release in the repository's checkout (or set"
            " CIRCLE_SHA1)"
        ) from None


def read_lock(path: Path = Path("dvc.lock")) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Refusal(
            f"{path} is missing: the release records the dvc.lock that made the package; bring"
            " the repro job's (its workspace) or run `dvc repro`"
        ) from None


def main() -> int:
    try:
        package = load_params().package
        model, directory = package.model_name, Paths().export_dir(package)
        if not directory.is_dir():
            raise Refusal(
                f"{directory} does not exist; only a model that passed the quality gate is"
                " packaged, by the repro job of the same commit"
            )
        bucket = dvc_bucket()
        version, written = publish(
            s3_client(bucket), bucket.name, model, directory, git_commit(), read_lock()
        )
    except AlreadyPublished as done:
        print(f"release: this model is already published as version {done.version}; nothing to do")
        return 0
    except (Refusal, StageError, BucketError) as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(
            f"release: error: the bucket refused or failed ({error}); nothing was overwritten,"
            " run the job again once fixed",
            file=sys.stderr,
        )
        return 1
    where = f"s3://{bucket.name}/{release_prefix(model)}{version}/"
    print(f"release: version {version}: {len(written)} files published to {where}")
    return 0


if __name__ == "__main__":
    run_stage("release", main)
