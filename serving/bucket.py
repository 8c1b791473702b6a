"""The bucket a serving host's commands talk to: ``--bucket`` (default ``$SERVING_BUCKET``) and
``--endpoint`` (an S3-compatible store; default botocore's own ``AWS_ENDPOINT_URL_S3``), with
credentials from the standard AWS chain (the serving role's instance profile on EC2)."""

from __future__ import annotations

import argparse
import os

from classifier.errors import StageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", default=os.environ.get("SERVING_BUCKET"))
    parser.add_argument("--endpoint", help="an S3-compatible store's URL")


def client(args: argparse.Namespace):
    """The S3 client the arguments name; a StageError without a bucket."""
    if not args.bucket:
        raise StageError("no bucket: pass --bucket or set SERVING_BUCKET")
    import botocore.session

    return botocore.session.get_session().create_client("s3", endpoint_url=args.endpoint)
