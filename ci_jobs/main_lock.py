"""main's ``dvc.lock`` of record, so that pull requests can diff against what main's CI made.

    python -m ci_jobs.main_lock save          # main's repro job, after its push
    python -m ci_jobs.main_lock base <commit> # prints the revision to diff against

CI never commits ``dvc.lock``, so the lock committed at a main commit does not describe the
outputs main's CI pushed (they came from its own run, on its GPU): ``dvc metrics diff <main>``
would find no metrics for main. main's repro job therefore keeps the ``dvc.lock`` of its run
beside what it pushed, at ``s3://<bucket>/<prefix>/locks/<commit>.lock`` (the push role writes
only there, under the DVC remote's folder; ``dvc gc`` leaves it alone). A pull request's job
makes a local commit — the merge base with that lock in place, tagged ``main@<short commit>`` —
and diffs against it: DVC then reads main's metrics from the remote, as for any revision.

When main's run has not pushed yet (or failed its gate) there is no lock of record: ``base``
says so on stderr and prints the commit itself, and the diff has no values for main. A report
is never worth failing the job for, so ``base`` always prints a revision and exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ci_jobs.bucket import Bucket, BucketError, dvc_bucket, s3_client
from classifier.errors import run_stage

IDENTITY = {  # for the local commit only; it is never pushed
    "GIT_AUTHOR_NAME": "CI",
    "GIT_AUTHOR_EMAIL": "ci@localhost",
    "GIT_COMMITTER_NAME": "CI",
    "GIT_COMMITTER_EMAIL": "ci@localhost",
}


def lock_key(bucket: Bucket, commit: str) -> str:
    return f"{bucket.prefix}/locks/{commit}.lock".lstrip("/")


def git(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    return (
        subprocess.run(
            ["git", *args],  # noqa: S607 (the git on PATH, as the checkout step uses)
            input=stdin,
            env={**os.environ, **(env or {})},
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )


def save(commit: str, lock: Path = Path("dvc.lock")) -> str:
    """Upload this run's ``dvc.lock`` as main's lock of record for ``commit``; its URL."""
    bucket = dvc_bucket()
    key = lock_key(bucket, commit)
    s3_client(bucket).put_object(Bucket=bucket.name, Key=key, Body=lock.read_bytes())
    return f"s3://{bucket.name}/{key}"


def commit_with_lock(commit: str, lock: bytes) -> str:
    """A local commit on top of ``commit`` whose ``dvc.lock`` is ``lock``; tagged, its tag."""
    with tempfile.TemporaryDirectory() as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git("read-tree", commit, env=index)
        blob = git("hash-object", "-w", "--stdin", stdin=lock)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},dvc.lock", env=index)
        tree = git("write-tree", env=index)
    made = git(
        "commit-tree", "--no-gpg-sign", tree, "-p", commit,
        "-m", f"dvc.lock of main's CI run at {commit}",
        env=IDENTITY,
    )  # fmt: skip
    tag = f"main@{commit[:8]}"
    git("tag", "-f", tag, made)
    return tag


def base(commit: str) -> str:
    """The revision to diff against: ``commit`` with main's lock of record, or ``commit``."""
    try:
        bucket = dvc_bucket()
        answer = s3_client(bucket).get_object(Bucket=bucket.name, Key=lock_key(bucket, commit))
        return commit_with_lock(commit, answer["Body"].read())
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        reason = (
            "main's CI has not pushed one (yet) for it"
            if code in ("NoSuchKey", "404")
            else f"the bucket refused ({code or error})"
        )
    except Exception as error:  # DVC's config, git, botocore: a diff is never worth failing for
        reason = f"it could not be read ({type(error).__name__}: {error})"
    print(
        f"main_lock: no dvc.lock of record for {commit[:8]}: {reason}; the diff has no values"
        " for main",
        file=sys.stderr,
    )
    return commit


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.main_lock", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("save", help="keep this commit's dvc.lock as main's (CIRCLE_SHA1)")
    commands.add_parser("base", help="the main commit to compare with").add_argument("commit")
    args = parser.parse_args(argv)
    if args.command == "base":
        print(base(args.commit))
        return 0
    try:
        where = save(os.environ["CIRCLE_SHA1"])
    except (BotoCoreError, ClientError, BucketError, KeyError) as error:
        print(f"main_lock: error: main's dvc.lock was not kept ({error!r})", file=sys.stderr)
        return 1
    print(f"main_lock: dvc.lock kept at {where}")
    return 0


if __name__ == "__main__":
    run_stage("main_lock", lambda: main(sys.argv[1:]))
