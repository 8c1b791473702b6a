"""Measure the CI cycle against a real S3 (SeaweedFS) with OIDC role sessions; write REMOTE.md.

    MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.remote

Default params. Measures a full cold `dvc repro`; the first push; a second push with nothing
changed (what our push uploads, and what plain `dvc push --run-cache` would upload); and a
no-change CI cycle: fresh clone, pull with run-cache, repro, push; and what the remote's
``verify = true`` costs a fresh clone's pull (three pulls each way, in turn).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from classifier.errors import run_stage
from testbed.repo import (
    REPO_ROOT,
    DvcRepo,
    absolute_mirror,
    commit_all,
    copy_of_repository,
    git,
)
from testbed.s3 import (
    PUSH_ROLE,
    READ_ROLE,
    OidcIssuer,
    SeaweedFS,
    iam_config,
    remote,
    use_test_bucket,
    with_credentials,
)

REPORT = REPO_ROOT / "benchmarks" / "REMOTE.md"


def timed(action, *args) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = action(*args)
    if result.returncode:
        sys.exit(f"failed: {args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result


def uploads(output: str) -> int:
    files = re.search(r"(\d+) files? pushed", output)
    entries = re.search(r"(\d+) run-cache entries pushed", output)
    return (int(files.group(1)) if files else 0) + (int(entries.group(1)) if entries else 0)


def fresh_pull_seconds(
    root: Path, origin: DvcRepo, bed: SeaweedFS, issuer: OidcIssuer, verify: bool, attempt: int
) -> float:
    """Seconds a fresh clone's ``ci_jobs.remote pull`` takes, with ``verify`` on or off."""
    path = root / f"verify-{verify}-{attempt}"
    git(root, "clone", "-q", str(origin.repo), str(path))
    clone = DvcRepo(path)
    use_test_bucket(clone, bed)
    clone.dvc("remote", "modify", "--local", "storage", "verify", str(verify).lower())
    reader = with_credentials(clone, bed, issuer.mint(), READ_ROLE)
    seconds, _ = timed(remote, clone, "pull", reader)
    return seconds


def main() -> None:
    if "MNIST_MIRROR" not in os.environ:
        sys.exit("set MNIST_MIRROR (e.g. ../shared/datasets/mnist)")
    issuer = OidcIssuer().start()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        bed = SeaweedFS(root / "s3", iam_config(issuer.url)).start()
        try:
            source = absolute_mirror(os.environ["MNIST_MIRROR"])  # the copies run elsewhere
            origin = DvcRepo(copy_of_repository(root / "origin"), MNIST_MIRROR=source)
            full, _ = timed(origin.dvc, "repro")
            commit_all(origin.repo, "run the pipeline")
            use_test_bucket(origin, bed)
            main_env = with_credentials(origin, bed, issuer.mint(), PUSH_ROLE)
            first_push, first = timed(remote, origin, "push", main_env)
            _, second = timed(remote, origin, "push", main_env)
            _, plain = timed(lambda: origin.dvc("push", "--run-cache", env=main_env))
            runs = origin.repo / ".dvc/cache/runs"
            run_cache_bytes = sum(p.stat().st_size for p in runs.rglob("*") if p.is_file())

            clone_path = root / "clone"
            git(root, "clone", "-q", str(origin.repo), str(clone_path))
            clone = DvcRepo(clone_path)
            use_test_bucket(clone, bed)
            start = time.perf_counter()
            branch_env = with_credentials(clone, bed, issuer.mint(), READ_ROLE)
            pull, _ = timed(remote, clone, "pull", branch_env)
            repro, result = timed(clone.dvc, "repro")
            ran = re.findall(r"Running stage '(\w+)'", result.stdout)
            push_env = with_credentials(clone, bed, issuer.mint(), PUSH_ROLE)
            push, cycle_push = timed(remote, clone, "push", push_env)
            cycle = time.perf_counter() - start
            verified = {True: [], False: []}  # pull time of fresh clones, verify on/off in turn
            for attempt in range(3):
                for verify in (True, False):
                    seconds = fresh_pull_seconds(root, origin, bed, issuer, verify, attempt)
                    verified[verify].append(seconds)
        finally:
            bed.stop()
            issuer.stop()

    rows = [
        ("full cold `dvc repro`", f"{full:.1f} s"),
        (
            "first push (`python -m ci_jobs.remote push`)",
            f"{first_push:.1f} s, {uploads(first.stdout)} uploads",
        ),
        (
            "**no-change CI cycle**: fresh clone, pull with run-cache, repro, push",
            f"**{cycle:.1f} s** (pull {pull:.1f} s, repro {repro:.1f} s, push {push:.1f} s)",
        ),
        ("stages the no-change cycle ran", ", ".join(ran) or "none"),
        ("second push, nothing changed: our push", f"{uploads(second.stdout)} uploads"),
        (
            "second push, nothing changed: plain `dvc push --run-cache`",
            f"{uploads(plain.stdout)} uploads ({run_cache_bytes} bytes of run-cache sent again)",
        ),
        ("push at the end of the no-change cycle", f"{uploads(cycle_push.stdout)} uploads"),
        (
            "pull into a fresh clone, `verify = true` (.dvc/config: every download re-hashed)",
            f"{statistics.median(verified[True]):.1f} s (median of 3)",
        ),
        (
            "the same with `verify = false` (DVC's default), in turn with the above",
            f"{statistics.median(verified[False]):.1f} s (median of 3)",
        ),
    ]
    table = "\n".join(f"| {measure} | {result} |" for measure, result in rows)
    REPORT.write_text(f"""# Remote (S3 via OIDC) benchmark

Measured {datetime.now(UTC):%Y-%m-%d} by `benchmarks/remote.py` (default `params.yaml`) on
{os.cpu_count()} CPU cores, no GPU, against SeaweedFS 4.48 (`weed mini`) on 127.0.0.1 with STS
role sessions from a local OIDC issuer.
Reproduce: `MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.remote`.

| measure | result |
|---|---|
{table}

Plain `dvc push --run-cache` (DVC 3.67) re-sends every run-cache entry on every push;
`python -m ci_jobs.remote push` pushes data with `dvc push` and the run-cache with DVC's own
transfer in its skip-existing mode, so a push with nothing new uploads nothing.
""")
    print(REPORT.read_text())


if __name__ == "__main__":
    run_stage("remote", main)
