"""Upload the gateway's closed capture files to the bucket, then delete them from the host.

    python -m serving.upload_captures --capture-dir /var/lib/mnist-gateway [--bucket B]

Each ``<capture-dir>/<model>/closed/capture-<YYYYMMDD>T…jsonl.gz`` (``serving/capture.py``) goes
to ``s3://<bucket>/monitoring/<model>/<YYYY-MM-DD>/<file>``, where the monitor reads a window of
them. Uploads are write-once (``If-None-Match: *``, which the bucket policy requires under
``monitoring/``): a file already there (an upload whose deletion was interrupted) is not sent
again, only deleted here. A file that fails is kept for the next run and named in one line; the
exit status is then 1. ``--bucket`` defaults to ``$SERVING_BUCKET``; credentials come from the
standard AWS chain (the serving role, which may add objects under ``monitoring/`` and nothing
more there). Run it from cron beside the sync.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from classifier.errors import StageError, run_stage
from serving.bucket import add_arguments as add_bucket_arguments
from serving.bucket import client as bucket_client
from serving.capture import CLOSED, SUFFIX

PREFIX = "monitoring"
NAME = re.compile(r"capture-(\d{4})(\d{2})(\d{2})T\d{6}-.*" + re.escape(SUFFIX))


def key_for(model: str, path: Path) -> str | None:
    """Where a closed capture file goes, or None for a file that is not one."""
    found = NAME.fullmatch(path.name)
    if not found:
        return None
    year, month, day = found.groups()
    return f"{PREFIX}/{model}/{year}-{month}-{day}/{path.name}"


def closed_files(capture_dir: Path) -> list[tuple[str, Path]]:
    """(model, file) for every closed capture file, oldest first."""
    return [
        (model_dir.name, path)
        for model_dir in sorted(p for p in capture_dir.iterdir() if p.is_dir())
        for path in sorted((model_dir / CLOSED).glob(f"*{SUFFIX}"))
    ]


def upload(s3, bucket: str, capture_dir: Path) -> tuple[list[str], list[str]]:
    """Upload and delete every closed file; the keys done and the failures, one line each."""
    done, failed = [], []
    for model, path in closed_files(capture_dir):
        key = key_for(model, path)
        if key is None:
            failed.append(f"{path}: not a capture file's name; move it away")
            continue
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), IfNoneMatch="*")
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("PreconditionFailed", "412"):
                failed.append(f"{path}: not uploaded to s3://{bucket}/{key} ({error}); kept")
                continue  # 412: already there, from a run that did not get to delete it
        except (BotoCoreError, OSError) as error:
            failed.append(f"{path}: not uploaded to s3://{bucket}/{key} ({error}); kept")
            continue
        path.unlink()
        done.append(key)
    return done, failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.upload_captures", description=__doc__)
    parser.add_argument("--capture-dir", type=Path, required=True, help="the gateway's")
    add_bucket_arguments(parser)
    args = parser.parse_args(argv)
    s3 = bucket_client(args)
    if not args.capture_dir.is_dir():
        raise StageError(f"{args.capture_dir} is not a folder; pass the gateway's --capture-dir")
    done, failed = upload(s3, args.bucket, args.capture_dir)
    for line in failed:
        print(f"upload_captures: error: {line}", file=sys.stderr)
    print(f"upload_captures: {len(done)} files uploaded to s3://{args.bucket}/{PREFIX}/")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage("upload_captures", main)
