"""Push or pull the pipeline's outputs and DVC's run-cache; explain a failure in one line.

    python -m ci_jobs.remote push [dvc options]    # dvc push, then the run-cache
    python -m ci_jobs.remote pull [dvc options]    # dvc pull --run-cache
    python -m ci_jobs.remote dvc <dvc arguments>   # e.g. repro --pull: stopped at a tampered object

The run-cache is what lets a fresh clone (or another CI job) skip every stage whose inputs it has
seen before. Two things DVC does not do well are handled here:

- DVC reports credential and permission problems as botocore tracebacks ending in "unexpected
  error"; this wrapper names the cause and the fix instead, and exits non-zero.
- ``dvc push --run-cache`` uploads every run-cache entry again on every push (DVC 3.67:
  ``StageCache.push`` transfers with ``force=True``), so a push with nothing new still uploads.
  We push the data with ``dvc push`` and then make DVC's own run-cache transfer with
  ``force=False``, which skips entries the remote already holds.
- With ``verify = true`` DVC re-hashes what it downloads and drops an object that does not hash
  to its name, but ``dvc repro --pull`` (or ``dvc exp run --pull``) then silently re-runs the
  stage whose output it was: on a GPU, hours of training, and the tampering goes unnoticed.
  ``dvc`` runs DVC's own command line in this process, listening to DVC's log for the dropped
  object (``dvc_data``'s "corrupted cache file" record), and stops it at once with one line
  naming the output.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from classifier.errors import run_stage

# (pattern in DVC's output, explanation); the first match wins, so specific causes come first.
EXPLANATIONS = [
    (
        r"\(ExpiredToken(Exception)?\) when calling the AssumeRoleWithWebIdentity",
        "the OIDC token has expired; re-run the job to get a fresh one",
    ),
    (
        r"\((InvalidParameterValue|InvalidIdentityToken)\) when calling the"
        r" AssumeRoleWithWebIdentity",
        "the OIDC token was rejected as invalid (bad signature or format): it was not issued by"
        " the identity provider that {role} trusts",
    ),
    (
        r"\(AccessDenied\) when calling the AssumeRoleWithWebIdentity",
        "{role} does not trust this token: its trust policy rejects the token's audience,"
        " project or branch (the push role accepts only main); use the read-only role on"
        " branches, or check AWS_ROLE_ARN",
    ),
    (
        r"\(AccessDenied\) when calling the (PutObject|CreateMultipartUpload|UploadPart)",
        "{role} may not write to the remote; pushing needs the push role, which only main's"
        " jobs can assume",
    ),
    (
        r"\(AccessDenied\)|Access Denied",
        "{role} is not allowed to do this on the remote; check the role's policy",
    ),
    (r"NoSuchBucket", "the bucket does not exist; create it, or fix `url` in .dvc/config"),
    (
        r"Could not connect to the endpoint URL|Connection refused|Cannot connect to host",
        "cannot reach the S3 endpoint; check the network (or `endpointurl`), then run the same"
        " command again: it transfers only what is missing",
    ),
    (
        r"Unable to locate credentials|NoCredentialsError",
        "no AWS credentials: in CI set AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE"
        " (ci_jobs/web_identity.py); on a laptop `dvc remote modify --local storage profile"
        " <name>`",
    ),
]


# With ``verify = true`` (.dvc/config) DVC re-hashes every object it downloads and drops one that
# does not hash to its name: the pull then fails naming the outputs it could not check out.
UNCHECKED = re.compile(
    r"Checkout failed for following targets:\n(.+?)\nIs your cache up to date\?", re.S
)


def explain(output: str, environ: dict[str, str]) -> str:
    """One line saying why DVC failed and what to do."""
    role = f"role {environ['AWS_ROLE_ARN']}" if environ.get("AWS_ROLE_ARN") else "the role"
    unchecked = UNCHECKED.search(output)
    if unchecked:
        targets = ", ".join(unchecked.group(1).split())
        return (
            f"{targets}: not checked out: the remote lacks it, or its copy does not hash to what"
            " dvc.lock records (every download is re-hashed; if it was pushed, someone changed it"
            " in the bucket); push it again from a trusted copy (main's CI), or re-run its stage"
        )
    for pattern, explanation in EXPLANATIONS:
        if re.search(pattern, output):
            return explanation.format(role=role)
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    return errors[-1].removeprefix("ERROR: ") if errors else "dvc failed; see its output above"


def dvc_command(action: str, extra: list[str]) -> list[str]:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    run_cache = ["--run-cache"] if action == "pull" else []
    return [dvc, action, *run_cache, *extra]


def push_run_cache() -> int:
    """Upload the run-cache entries the remote lacks; return how many were uploaded."""
    from dvc.repo import Repo

    with Repo() as repo:
        remote = repo.cloud.get_remote_odb(None, "push --run-cache", hash_name="md5-dos2unix")
        return len(repo.stage_cache.transfer(repo.cache.legacy, remote, force=False))


class TamperedObject(BaseException):  # not an Exception: DVC catches those
    """A downloaded object failed verification; carries its cache path."""


class StopAtTampering(logging.Handler):
    """Raises, from inside DVC, at its record of an object that does not hash to its name."""

    RECORD = "corrupted cache file '%s'."

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.RECORD:
            raise TamperedObject(str(record.args[0]))


def output_named(md5: str, repo_root: Path = Path()) -> str:
    """The output the run-cache entries know by ``md5`` (else the object itself)."""
    for entry in sorted((repo_root / ".dvc/cache/runs").glob("*/*/*")):
        for out in (yaml.safe_load(entry.read_text()) or {}).get("outs", []):
            if out.get("md5") == md5:
                return out["path"]
    return f"the object {md5}"


def guarded(arguments: list[str]) -> int:
    """``dvc <arguments>``, stopped at the first downloaded object that fails verification."""
    from dvc.cli import main as dvc_main

    verification = logging.getLogger("dvc_data.hashfile.db")
    verification.setLevel(logging.DEBUG)
    verification.propagate = False  # DVC's own handlers would print every debug record
    verification.addHandler(StopAtTampering())
    try:
        return dvc_main(arguments)
    except TamperedObject as tampered:
        parts = Path(tampered.args[0]).parts
        md5 = parts[-2] + parts[-1]
        print(
            f"remote: stopped `dvc {' '.join(arguments)}`: {output_named(md5)}: its copy"
            " (downloaded from the remote, or in the local cache) does not hash to what the"
            f" run-cache records (md5 {md5}): someone changed it; nothing was trained or"
            " packaged from it; restore the object from a trusted copy (bucket versioning, or a"
            " push from main's CI), then re-run",
            file=sys.stderr,
        )
        return 1


def fail(action: str, output: str) -> int:
    detail = [line for line in output.splitlines() if line.startswith("ERROR:")]
    if detail:
        print(f"  dvc said: {detail[-1][:400]}", file=sys.stderr)
    print(f"remote: {action} failed: {explain(output, dict(os.environ))}", file=sys.stderr)
    return 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.remote", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    for action, what in (
        ("push", "dvc push, then the run-cache; [dvc push options]"),
        ("pull", "dvc pull; [dvc pull options]"),
        ("dvc", "any dvc command, its remote failures explained; <dvc arguments>"),
    ):
        command = commands.add_parser(action, help=what, prefix_chars="\0")  # all passed to dvc
        command.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    action = args.action
    if action == "dvc":
        return guarded(args.arguments)
    result = subprocess.run(dvc_command(action, args.arguments), capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode:
        return fail(action, result.stderr)
    if action == "push":
        try:
            uploaded = push_run_cache()
        except Exception as error:  # DVC and botocore raise many kinds; all are explained
            return fail(action, f"{error!r} {error.__cause__!r}")
        print(f"{uploaded} run-cache entries pushed")
    return 0


if __name__ == "__main__":
    run_stage("remote", lambda: main(sys.argv[1:]))
