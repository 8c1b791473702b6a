"""Publish the packaged model to the bucket's write-once release prefix.

    python -m ci_jobs.release

Uploads ``dist/<model_name>/<version>/`` (``package`` in params.yaml) to
``s3://<bucket>/releases/<model_name>/<version>/``, where a TensorFlow Serving host can sync it.
The bucket is the DVC remote's (``url`` in .dvc/config, with ``endpointurl``/``region`` and any
``--local`` override): named in one place. Credentials come from the standard web-identity chain
(``AWS_ROLE_ARN`` = the release role, ``AWS_WEB_IDENTITY_TOKEN_FILE``).

The version's files are followed by ``MANIFEST.json`` (serving/manifest.py: the sha256 and size
of each), which a serving host checks every byte against before it serves the version
(``python -m serving.sync``). A version is published when its manifest is in the bucket.

A published version is never overwritten, and earlier versions are left alone for rollback:
- a version whose ``MANIFEST.json`` is in the bucket is refused before anything is uploaded;
- every upload carries ``If-None-Match: *``, so S3 itself refuses (412) to replace a key that
  appeared meanwhile (the bucket policy in infra/ denies uploads under ``releases/`` without it);
- ``saved_model.pb`` goes after the other files and ``MANIFEST.json`` last: until the manifest is
  there, no host syncs the version, and a release that failed half-way is completed by running
  the job again (keys already there must hold the same bytes, else it is refused).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ci_jobs.bucket import BucketError, dvc_bucket, s3_client
from classifier.errors import StageError
from classifier.params import load_params
from classifier.paths import Paths
from serving.manifest import NAME as MANIFEST
from serving.manifest import describe, release_prefix, render

LAST = "saved_model.pb"  # what makes a folder a SavedModel: the last of the version's own files


class Refusal(Exception):
    """Why nothing (more) is published, and what to do."""


def local_files(directory: Path) -> dict[str, Path]:
    """Relative path -> file, for everything in the packaged version."""
    return {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def to_upload(local: dict[str, str], remote: dict[str, str], where: str) -> list[str]:
    """What is left to upload (relative path -> md5 on both sides), ``saved_model.pb`` last."""
    if MANIFEST in remote:
        raise Refusal(
            f"{where} is already published; versions are never overwritten: raise"
            " package.version in params.yaml to release a new one"
        )
    for name, etag in remote.items():
        if local.get(name) != etag:
            raise Refusal(
                f"{where} holds an unfinished release whose {name} differs from dist/; publish"
                " this model as a new package.version"
            )
    missing = [name for name in local if name not in remote]
    return sorted(missing, key=lambda name: (name == LAST, name))


def published(s3, bucket: str, prefix: str) -> dict[str, str]:
    """Relative key -> ETag (the MD5 of a single-part upload) under ``prefix``."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"].removeprefix(prefix)] = item["ETag"].strip('"')
    return found


def put_once(s3, bucket: str, key: str, body: bytes, where: str) -> None:
    """Upload ``key`` unless it exists (If-None-Match: *); a 412 means the version is taken."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    except ClientError as error:
        if error.response["Error"]["Code"] in ("PreconditionFailed", "412"):
            raise Refusal(f"s3://{bucket}/{key} appeared meanwhile; {where} is taken") from None
        raise


def publish(s3, bucket: str, name: str, version: int, directory: Path) -> list[str]:
    """Upload the version's missing files, then its manifest, write-once; return the keys."""
    prefix = f"{release_prefix(name)}{version}/"
    where = f"s3://{bucket}/{prefix}"
    files = local_files(directory)
    if LAST not in files:
        raise Refusal(f"{directory} holds no {LAST}; run `dvc repro` (package) first")
    if MANIFEST in files:
        raise Refusal(f"{directory} holds a {MANIFEST}, which is the release's own; remove it")
    remaining = to_upload(
        {n: md5(p) for n, p in files.items()}, published(s3, bucket, prefix), where
    )
    manifest = render(name, version, describe(files))
    for relative in remaining:
        put_once(s3, bucket, prefix + relative, files[relative].read_bytes(), where)
    put_once(s3, bucket, prefix + MANIFEST, manifest, where)
    return [prefix + relative for relative in [*remaining, MANIFEST]]


def main() -> int:
    try:
        package = load_params().package
        directory = Paths().export_dir(package)
        if not directory.is_dir():
            raise Refusal(
                f"{directory} does not exist; only a model that passed the quality gate is"
                " packaged, by the repro job of the same commit"
            )
        bucket = dvc_bucket()
        written = publish(
            s3_client(bucket), bucket.name, package.model_name, package.version, directory
        )
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
    where = f"s3://{bucket.name}/{release_prefix(package.model_name)}{package.version}/"
    print(f"release: {len(written)} files published to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
