"""The bucket of the DVC remote, as DVC resolves it: named once, in ``.dvc/config``.

``url = s3://<bucket>/<prefix>`` with ``endpointurl``/``region`` and any ``--local`` override.
The release job writes under ``releases/`` of that bucket and main's repro job keeps its
``dvc.lock`` under ``<prefix>/locks/``; both reach it with the standard AWS credential chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from botocore.exceptions import ClientError


class BucketError(Exception):
    """The DVC remote is not an S3 bucket."""


@dataclass(frozen=True)
class Bucket:
    name: str
    endpoint: str | None
    region: str | None
    prefix: str = ""  # the DVC remote's folder in the bucket, e.g. "dvc"


def dvc_bucket(repo_root: Path = Path()) -> Bucket:
    """The bucket of the default DVC remote, as DVC itself resolves its config."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        remote = config["remote"].get(name, {}) if name else {}
    url = urlparse(remote.get("url", ""))
    if url.scheme != "s3" or not url.netloc:
        raise BucketError(
            "the default DVC remote is not s3://<bucket>/...; fix `url` in .dvc/config"
        )
    return Bucket(url.netloc, remote.get("endpointurl"), remote.get("region"), url.path.strip("/"))


def s3_client(bucket: Bucket):
    import botocore.session

    session = botocore.session.get_session()
    return session.create_client("s3", endpoint_url=bucket.endpoint, region_name=bucket.region)


def put_once(s3, bucket: str, key: str, body: bytes) -> bool:
    """Upload ``key`` unless it exists (If-None-Match: *); False when S3 answers 412."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    except ClientError as error:
        if error.response["Error"]["Code"] in ("PreconditionFailed", "412"):
            return False
        raise
    return True
