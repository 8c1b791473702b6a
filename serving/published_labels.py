"""``labels/<model>.json`` in the bucket: which release the serving hosts label stable and canary.

Labels move on the host (``serving.labels``); ``serving.sync`` publishes the host's labels there
whenever they changed since it last did (it keeps the sha256 of what it published in
``.labels.published``), so that CI knows the model in production: ``ci_jobs.champion --release
stable`` makes it the champion a retrain must beat. The serving role may write ``labels/``; the
CI roles may read it. With several hosts serving one model, label them alike.
"""

from __future__ import annotations

import hashlib
import json

from serving.labels import Labels
from serving.layout import Host

PREFIX = "labels"
MARKER = ".labels.published"


class LabelsError(Exception):
    """A labels object that does not say, in the expected form, which version is stable."""


def key(model: str) -> str:
    return f"{PREFIX}/{model}.json"


def render(model: str, labels: Labels) -> bytes:
    document = {"model": model, "stable": labels.stable, "canary": labels.canary}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def publish(s3, bucket: str, host: Host, labels: Labels) -> bool:
    """Put the host's labels in the bucket unless they are what was last published; whether it
    did. botocore's errors propagate: the caller reports them."""
    body = render(host.model, labels)
    digest = hashlib.sha256(body).hexdigest()
    marker = host.base / MARKER
    if marker.exists() and marker.read_text().strip() == digest:
        return False
    s3.put_object(Bucket=bucket, Key=key(host.model), Body=body)
    marker.write_text(digest + "\n")
    return True


def stable_version(s3, bucket: str, model: str) -> int | None:
    """The version the hosts label stable, or None when no host published labels yet."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key(model))["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    try:
        document = json.loads(body)
        stable = document["stable"]
    except (ValueError, KeyError, TypeError) as error:
        raise LabelsError(f"s3://{bucket}/{key(model)} is not a labels object ({error})") from None
    if document.get("model") != model or not (stable is None or type(stable) is int):
        raise LabelsError(f"s3://{bucket}/{key(model)} does not name {model}'s stable version")
    return stable
