"""CircleCI's ``monitor`` job: one day of the served model's captured traffic against the release
in production; on drift, the retrain workflow started through CircleCI's API, once per day.

    python -m ci_jobs.monitor [--day 2026-12-06]     # default: yesterday (UTC)

1. The release the serving hosts label stable (``labels/<model>.json``; before any host published
   labels, the newest release) is downloaded from ``releases/<model>/<N>/`` and checked file by
   file against its manifest, as a serving host does: its reference travels inside it.
2. The day's capture files, ``monitoring/<model>/<day>/`` (``serving.upload_captures``), are
   downloaded and judged by ``serving.monitor`` (thresholds: params.yaml's ``monitor:``); the
   report is written to ``monitor-report/`` (report.json, report.html: the job's artifacts).
3. On drift, the window is claimed first: ``monitoring/<model>/<day>/retrain-requested.json`` is
   uploaded with ``If-None-Match: *``, so a second run for the same day (a re-run, a second
   schedule) finds it and starts nothing. Then CircleCI's API v2 starts a pipeline on main with
   ``{"retrain": true, "retrain-reason": "drift ..."}``: ``POST /project/<slug>/pipeline``, or,
   for a GitHub App project (``CIRCLECI_PIPELINE_DEFINITION_ID`` set),
   ``POST /project/<slug>/pipeline/run`` with that definition; the ``Circle-Token`` header is
   ``CIRCLE_TOKEN``, from the context ``circleci-api``. If the API refuses, the claim is withdrawn
   (deleted) so that the next run tries again, and the job fails in one line.

No drift, or too few captures for a verdict: exit 0, nothing started. Errors: one line, exit 1.
Credentials: the push role (main only), which may read ``releases/``, ``labels/`` and
``monitoring/`` and add or withdraw the claim.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ci_jobs.bucket import BucketError, dvc_bucket, put_once, s3_client
from ci_jobs.champion import wanted_release
from classifier.errors import StageError, run_stage
from classifier.params import load_params
from serving import Refused, published_labels
from serving.capture import SUFFIX
from serving.fetch import download, listing, save_object
from serving.manifest import NAME as MANIFEST
from serving.monitor import DRIFT, summary_lines, write_report
from serving.monitor import monitor as judge
from serving.upload_captures import PREFIX

WORK = Path("monitored")  # the release and the captures, downloaded
REPORT = Path("monitor-report")
CLAIM = "retrain-requested.json"
API_URL = "https://circleci.com/api/v2"


def day_prefix(model: str, day: date) -> str:
    return f"{PREFIX}/{model}/{day.isoformat()}/"


def stable_release(s3, bucket: str, model: str, target: Path) -> int:
    """Download the release in production into ``target``; its version."""
    versions = listing(s3, bucket, model)
    published = sorted(v for v, objects in versions.items() if MANIFEST in objects)
    stable = published_labels.stable_version(s3, bucket, model)
    version = wanted_release("stable", "", published, stable)
    if version is None or version not in published:
        raise StageError(
            f"no release of {model} to compare with in s3://{bucket}/releases/{model}/"
            f" (labelled stable: {stable}; published: {published or 'none'})"
        )
    shutil.rmtree(target, ignore_errors=True)
    download(s3, bucket, model, version, versions[version], target)
    return version


def download_captures(s3, bucket: str, prefix: str, target: Path) -> int:
    """Every capture file under ``prefix`` into ``target``; how many."""
    shutil.rmtree(target, ignore_errors=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"].removeprefix(prefix)
            if name.endswith(SUFFIX) and "/" not in name:
                save_object(s3, bucket, item["Key"], target / name)
                count += 1
    return count


def drift_reason(report: dict, day: date) -> str:
    """What the retrain's pull request says started it."""
    found = "; ".join(
        f"{label}: {', '.join(verdict['drifted'])}"
        for label, verdict in report["labels"].items()
        if verdict["verdict"] == DRIFT
    )
    return f"drift in {report['model']} version {report['version']} traffic of {day}: {found}"


def claim_window(s3, bucket: str, key: str, reason: str) -> bool:
    """True if this run claimed the day; False if another run already did."""
    body = json.dumps({"reason": reason, "claimed_at": datetime.now(UTC).isoformat()}).encode()
    return put_once(s3, bucket, key, body)


def project_slug() -> str:
    """``CIRCLE_PROJECT_SLUG`` if set (e.g. ``circleci/<org-id>/<project-id>`` for GitHub App
    projects), else ``gh/<user>/<repo>`` from CircleCI's built-in variables."""
    slug = os.environ.get("CIRCLE_PROJECT_SLUG")
    if slug:
        return slug
    user, repo = (os.environ.get(v) for v in ("CIRCLE_PROJECT_USERNAME", "CIRCLE_PROJECT_REPONAME"))
    if not (user and repo):
        raise StageError("set CIRCLE_PROJECT_SLUG (the project's slug, e.g. gh/<org>/<repo>)")
    return f"gh/{user}/{repo}"


def start_retrain(reason: str) -> dict:
    """Start the retrain workflow on main through CircleCI's API v2; the created pipeline."""
    token = os.environ.get("CIRCLE_TOKEN")
    if not token:
        raise StageError(
            "CIRCLE_TOKEN is not set: add a CircleCI API token to the context circleci-api"
            " (infra/README.md) to let drift start the retrain"
        )
    api = os.environ.get("CIRCLECI_API_URL", API_URL).rstrip("/")
    if not api.startswith(("http://", "https://")):
        raise StageError(f"CIRCLECI_API_URL {api} is not http(s)")
    parameters = {"retrain": True, "retrain-reason": reason}
    definition = os.environ.get("CIRCLECI_PIPELINE_DEFINITION_ID")
    if definition:  # GitHub App projects: a pipeline definition is run
        url = f"{api}/project/{project_slug()}/pipeline/run"
        main = {"branch": "main"}
        body = {"definition_id": definition, "config": main, "checkout": main}
    else:
        url = f"{api}/project/{project_slug()}/pipeline"
        body = {"branch": "main"}
    body["parameters"] = parameters
    request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
        url,
        data=json.dumps(body).encode(),
        headers={"Circle-Token": token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:200]
        raise StageError(
            f"CircleCI's API refused to start the retrain: {error.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise StageError(f"CircleCI's API at {url} cannot be reached ({error})") from None


def run(day: date) -> list[str]:
    """The job: the lines it prints."""
    params = load_params()
    model = params.package.model_name
    bucket = dvc_bucket()
    s3 = s3_client(bucket)
    version = stable_release(s3, bucket.name, model, WORK / "package")
    prefix = day_prefix(model, day)
    files = download_captures(s3, bucket.name, prefix, WORK / "captures")
    report = judge(WORK / "captures", WORK / "package", params.monitor)
    write_report(report, REPORT)
    lines = [
        f"monitor: release {version} of {model} against {files} capture"
        f" file{'' if files == 1 else 's'} of {day}"
        f" (s3://{bucket.name}/{prefix})",
        *summary_lines(report),
    ]
    if report["verdict"] != DRIFT:
        return [*lines, "monitor: no retrain started"]
    reason = drift_reason(report, day)
    claim = prefix + CLAIM
    if not claim_window(s3, bucket.name, claim, reason):
        return [*lines, f"monitor: a retrain was already started for {day} ({claim}); not again"]
    try:
        pipeline = start_retrain(reason)
    except StageError:
        s3.delete_object(Bucket=bucket.name, Key=claim)  # the next run tries again
        raise
    return [*lines, f"monitor: retrain started: pipeline {pipeline.get('number')} ({reason})"]


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.monitor", description=__doc__)
    parser.add_argument("--day", type=date.fromisoformat, help="YYYY-MM-DD (default: yesterday)")
    args = parser.parse_args(argv)
    try:
        lines = run(args.day or yesterday())
    except (StageError, BucketError, Refused, published_labels.LabelsError) as error:
        print(f"monitor: error: {error}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(
            f"monitor: error: the bucket refused or failed ({error}); check the role (it must"
            " read releases/, labels/ and monitoring/) and the endpoint",
            file=sys.stderr,
        )
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_stage("monitor", main)
