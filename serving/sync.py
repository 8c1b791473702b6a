"""Mirror the published releases of a model into the base path a TensorFlow Serving host polls.

    python -m serving.sync --base-path /models/mnist [--bucket B] [--endpoint URL]

The base path's name is the model's name: ``s3://<bucket>/releases/<name>/`` is mirrored.
``--bucket`` defaults to ``$SERVING_BUCKET``; ``--endpoint`` (an S3-compatible store) to
botocore's own ``AWS_ENDPOINT_URL_S3``. Credentials come from the standard AWS chain: on EC2 the
instance profile of the serving role (infra/README.md, "Serving host"), never a CI role.

Each published version (one with a MANIFEST.json) that the host lacks is downloaded into a
staging folder beside its target, checked file by file against the manifest, loaded once in a
TF1 session as TF Serving will load it, and only then renamed into place. A version that fails
is refused in one line and its staging folder removed; the others are still synced, and the
exit status is 1. A sync killed half-way leaves only a staging folder, which the next one
removes. Versions already on the host are not downloaded again.

A version is removed from the host only when it is no longer published (releases cannot be
deleted from the bucket, so only a deliberate retraction does this) and no label points at it:
the host serves what the bucket publishes, and never drops a version clients are sent to.
Then the model config file is written: every version on the host, with the labels of
``serving.labels`` (the first time: the highest version is stable), and the labels are published
to the bucket when they changed (``serving/published_labels.py``: how CI learns which release is
in production).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from classifier.errors import StageError, run_stage
from classifier.faults import fault_line, writing
from classifier.files import fsync
from serving import Refused, labels, published_labels
from serving.bucket import add_arguments as add_bucket_arguments
from serving.bucket import client as bucket_client
from serving.fetch import download, listing
from serving.layout import Host
from serving.load_check import check_loads
from serving.manifest import NAME, release_prefix


def add_version(s3, bucket: str, host: Host, version: int, objects: dict[str, int]) -> int:
    """Download, verify, load and put one version in place; return its file count."""
    staging = host.new_staging(version)
    try:
        with writing(host.version_dir(version)):  # a full disk's line names the version
            entries = download(s3, bucket, host.model, version, objects, staging)
            check_loads(staging)
            for directory in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
                fsync(directory)  # the files are; their names too, before they appear
            staging.rename(host.version_dir(version))
            fsync(host.base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(entries)


def retire(host: Host, published: set[int], current: labels.Labels) -> list[int]:
    """Remove versions no longer published that no label points at; return them."""
    labelled = set(current.in_config().values())
    retired = [v for v in host.versions() if v not in published and v not in labelled]
    for version in retired:  # out of sight in one rename, then deleted: never half a version
        shutil.rmtree(host.retire(version))
    for version in sorted(labelled - published):
        print(
            f"sync: warning: version {version} is no longer published but is labelled; kept"
            " until its label moves (python -m serving.labels)",
            file=sys.stderr,
        )
    return retired


def add_versions(
    s3, bucket: str, host: Host, versions: dict[int, dict[str, int]], wanted: list[int]
) -> list[int]:
    """Add each wanted version, refusing each that fails in one line; return those that did."""
    failed = []
    for version in wanted:
        try:
            count = add_version(s3, bucket, host, version, versions[version])
        except Refused as refusal:
            print(f"sync: error: version {version} refused: {refusal}", file=sys.stderr)
            failed.append(version)
        except (BotoCoreError, ClientError) as error:
            print(
                f"sync: error: version {version} not synced: the bucket failed ({error}); run"
                " the sync again",
                file=sys.stderr,
            )
            failed.append(version)
        except OSError as error:  # e.g. a full disk: this host's trouble, not the release's
            fault = fault_line(error, "sync")
            if fault is None:
                raise
            print(f"sync: error: version {version} not synced: {fault}", file=sys.stderr)
            failed.append(version)
        else:
            print(f"sync: version {version}: {count} files verified and loaded; in place")
    return failed


def sync(s3, bucket: str, host: Host) -> list[int]:
    """Bring the host in step with the bucket; return the versions that failed."""
    host.base.mkdir(parents=True, exist_ok=True)
    with host.lock("sync", wait=False):
        for stale in host.stale_staging():
            shutil.rmtree(stale)
            print(f"sync: removed {stale.name}, left by an interrupted sync")
        where = f"s3://{bucket}/{release_prefix(host.model)}"
        try:
            versions = listing(s3, bucket, host.model)
        except (BotoCoreError, ClientError) as error:
            raise StageError(
                f"cannot list {where} ({error}); check --bucket and the host's credentials (the"
                " serving role, infra/README.md)"
            ) from None
        published = {version for version, objects in versions.items() if NAME in objects}
        if not published:
            raise StageError(
                f"{where} holds no published version (no {NAME}); check --bucket and that the"
                f" base path's name, {host.model!r}, is the model's; nothing was changed"
            )
        for version in sorted(set(versions) - published):
            print(f"sync: version {version} is not completely published yet (no {NAME}); skipped")
        failed = add_versions(s3, bucket, host, versions, sorted(published - set(host.versions())))
        with host.lock("labels"):
            current = labels.with_default_stable(labels.load(host), host.versions())
            for version in retire(host, published, current):
                print(f"sync: version {version} removed: no longer published, not labelled")
            if host.versions():
                labels.apply(host, current)
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.sync", description=__doc__)
    parser.add_argument("--base-path", type=Path, required=True, help="the model's base path")
    add_bucket_arguments(parser)
    args = parser.parse_args(argv)
    s3 = bucket_client(args)
    host = Host(args.base_path.absolute())
    failed = sync(s3, args.bucket, host)
    current = labels.load(host)
    published = publish_labels(s3, args.bucket, host, current)
    print(
        f"sync: {host.base} serves versions {', '.join(map(str, host.versions())) or 'none'};"
        f" {current.describe()}"
    )
    if failed or not published:
        raise SystemExit(1)


def publish_labels(s3, bucket: str, host: Host, current: labels.Labels) -> bool:
    """Tell the bucket which versions this host labels (CI's champion); False if it failed."""
    if current.stable is None:
        return True  # nothing served yet: nothing to say
    where = f"s3://{bucket}/{published_labels.key(host.model)}"
    try:
        if published_labels.publish(s3, bucket, host, current):
            print(f"sync: labels published to {where}: {current.describe()}")
    except (BotoCoreError, ClientError) as error:
        print(
            f"sync: error: the labels were not published to {where} ({error}); the serving role"
            " must be allowed to write labels/ (infra/README.md); versions are served as synced",
            file=sys.stderr,
        )
        return False
    return True


if __name__ == "__main__":
    run_stage("sync", main)
