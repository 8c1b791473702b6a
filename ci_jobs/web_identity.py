"""Hand the CircleCI job's OIDC token to AWS's standard web-identity credential chain.

    export AWS_ROLE_ARN=arn:aws:iam::123456789012:role/mnist-pipeline-push
    export AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/aws-web-identity-token
    python -m ci_jobs.web_identity                      # the job's start token
    python -m ci_jobs.web_identity --fresh              # a token minted now (before a late push)
    python -m ci_jobs.web_identity --fresh --every 1200 &   # one every 20 minutes from now

Reads the job's token from ``CIRCLE_OIDC_TOKEN_V2`` and writes it to
``$AWS_WEB_IDENTITY_TOKEN_FILE`` (mode 0600, atomically). botocore, and so ``dvc push``/``pull``,
exchanges it for a short-lived role session (AssumeRoleWithWebIdentity); no AWS key is stored
anywhere. Refuses, with one line and exit status 1, when the token is missing, is not a JWT, or
has expired; never prints the token.

The job's token is minted when the job starts and lives one hour, and the variable never
changes. So a step that needs AWS after a long training asks for a new one with ``--fresh``:
``circleci run oidc get --claims '{"aud": <org id>}'`` (the org id is the start token's own
audience). botocore re-reads the file whenever it renews its session, so rewriting it is enough;
``--every`` keeps rewriting it in the background while ``dvc repro --pull`` trains for hours and
then talks to the remote again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import jwt

from classifier.errors import run_stage

TOKEN_ENV = "CIRCLE_OIDC_TOKEN_V2"  # noqa: S105 (the name of a variable, not a secret)
TARGET_ENV = "AWS_WEB_IDENTITY_TOKEN_FILE"
ROLE_ENV = "AWS_ROLE_ARN"
MIN_LIFETIME_S = 60  # a token this close to expiry would die during the exchange


class Refusal(Exception):
    """Why the token cannot be used, and what to do."""


def token_claims(token: str, now: float) -> dict:
    """The token's claims, after checking its shape and lifetime (STS checks the signature)."""
    try:
        claims = jwt.decode(
            token,
            options={
                "verify_signature": False,
                "verify_exp": False,
                "verify_aud": False,
                "require": ["exp", "iss", "aud", "sub"],
            },
        )
    except jwt.MissingRequiredClaimError as error:
        raise Refusal(
            f"{TOKEN_ENV} lacks the '{error.claim}' claim; it is not a CircleCI OIDC token"
        ) from None
    except jwt.PyJWTError as error:
        raise Refusal(f"{TOKEN_ENV} is not a valid JWT ({error})") from None
    expires = claims["exp"]
    if not isinstance(expires, int | float):
        raise Refusal(f"{TOKEN_ENV} has a non-numeric 'exp' claim")
    if expires - now < MIN_LIFETIME_S:
        when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise Refusal(
            f"{TOKEN_ENV} expired at {when} (or expires within {MIN_LIFETIME_S} s);"
            " re-run the job to get a fresh token"
        )
    return claims


def write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` with mode 0600, all at once (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def start_token(environ: dict[str, str]) -> str:
    """The token CircleCI minted when the job started."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise Refusal(
            f"{TOKEN_ENV} is not set; run this in a CircleCI job (OIDC tokens are issued to jobs"
            " of projects with OIDC enabled)"
        )
    return token


def fresh_token(environ: dict[str, str]) -> str:
    """A token minted now by ``circleci run oidc get``, for the start token's audience (org id).

    The start token may have expired: only its ``aud`` is read, never trusted for anything else.
    """
    try:
        audience = jwt.decode(start_token(environ), options={"verify_signature": False})["aud"]
    except (jwt.PyJWTError, KeyError):
        raise Refusal(f"{TOKEN_ENV} is not a JWT with an 'aud' claim") from None
    command = ["circleci", "run", "oidc", "get", "--claims", json.dumps({"aud": audience})]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise Refusal(
            "the circleci command is not on PATH; --fresh works only inside a CircleCI job"
        ) from None
    if result.returncode:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise Refusal(f"circleci run oidc get failed ({reason}); is OIDC enabled for this project?")
    return result.stdout.strip()


def write_token_file(
    environ: dict[str, str], now: float, token: str | None = None
) -> tuple[Path, dict]:
    """Validate the token (the job's start token by default) and write it where the AWS SDKs
    look; return path and claims."""
    token = token or start_token(environ)
    target = environ.get(TARGET_ENV, "").strip()
    if not target:
        raise Refusal(f"{TARGET_ENV} is not set; export the path the token should be written to")
    if not environ.get(ROLE_ENV, "").strip():
        raise Refusal(f"{ROLE_ENV} is not set; export the ARN of the role to assume")
    claims = token_claims(token, now)
    write_private(Path(target), token)
    return Path(target), claims


def hand_over(environ: dict[str, str], fresh: bool) -> int:
    """Write the start token (or a fresh one); one line saying what was done, or why not."""
    try:
        token = fresh_token(environ) if fresh else None
        path, claims = write_token_file(environ, time.time(), token)
    except Refusal as refusal:
        print(f"web_identity: error: {refusal}", file=sys.stderr)
        return 1
    expires = datetime.fromtimestamp(claims["exp"], UTC).strftime("%H:%M:%S UTC")
    kind = "fresh token" if fresh else "token"
    print(f"web_identity: {kind} for {claims['sub']} (valid until {expires}) written to {path}")
    return 0


def keep_fresh(environ: dict[str, str], every_s: float, rounds: int | None = None) -> None:
    """Every ``every_s`` seconds (``rounds`` times, or until killed), a fresh token; the file
    already holds a valid one when this starts. A failed round is reported and retried at the
    next, while the current token may still be good."""
    done = 0
    while rounds is None or done < rounds:
        time.sleep(every_s)
        hand_over(environ, fresh=True)
        sys.stdout.flush()
        done += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ci_jobs.web_identity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--fresh", action="store_true", help="mint a new token with circleci")
    parser.add_argument("--every", type=float, metavar="SECONDS", help="with --fresh: repeat")
    options = parser.parse_args(argv)
    if options.every is not None:
        if not options.fresh or options.every <= 0:
            parser.error("--every needs --fresh and a positive number of seconds")
        keep_fresh(dict(os.environ), options.every)  # until the step ends and kills it
    return hand_over(dict(os.environ), options.fresh)


if __name__ == "__main__":
    run_stage("web_identity", lambda: main(sys.argv[1:]))
