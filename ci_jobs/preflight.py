"""``python3 -m ci_jobs.preflight``: a GPU job's first step: stop now what could only fail later.

A GPU job trains for up to hours, then talks to the remote. Two things would make it fail only
then, so they are checked before anything is installed (standard library only: it runs on the
machine image's own ``python3``; signatures are STS's to check, the claims are read here):

1. **No OIDC token.** CircleCI gives a build of a pull request from a fork no
   ``CIRCLE_OIDC_TOKEN_V2`` unless the project's "Pass secrets to builds from forked pull
   requests" is on: the job says so in one line and trains nothing.
2. **A fresh token the push role would refuse.** On main, the push after training uses a token
   minted then by ``circleci run oidc get``, and CircleCI does not document that its ``sub`` has
   the V2 form the push role trusts (``.../vcs-ref/refs/heads/main``, infra/ci-storage.yaml).
   One is minted now and checked: issuer and audience as the job's own token's, ``sub`` of the
   form the role requires. Neither token is ever printed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time

from classifier.errors import run_stage

TOKEN_ENV = "CIRCLE_OIDC_TOKEN_V2"  # noqa: S105 (a variable's name)
MAIN_REF = "refs/heads/main"
SETTING = '"Pass secrets to builds from forked pull requests" (Project Settings > Advanced)'


class Refusal(Exception):
    """Why the job stops now, and what to do."""


def claims_of(token: str, what: str) -> dict:
    """A JWT's claims, unverified (STS verifies the signature when the role is assumed)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise Refusal(f"{what} is not a JWT") from None
    if not isinstance(claims, dict) or not all(k in claims for k in ("iss", "aud", "sub", "exp")):
        raise Refusal(f"{what} lacks iss, aud, sub or exp: it is not a CircleCI OIDC token")
    return claims


def push_role_accepts(sub: str, org: str) -> bool:
    """The push role's trust, as infra/ci-storage.yaml words it: this org, main, one vcs-ref."""
    pattern = rf"org/{re.escape(org)}/project/[^/]+/user/[^/]+/vcs-origin/.+/vcs-ref/{MAIN_REF}"
    return re.fullmatch(pattern, sub) is not None and sub.count("/vcs-ref/") == 1


def start_claims(environ: dict[str, str]) -> dict:
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return claims_of(token, TOKEN_ENV)
    if environ.get("CIRCLE_PR_USERNAME") or environ.get("CIRCLE_PR_REPONAME"):
        raise Refusal(
            f"this is a pull request from a fork ({environ.get('CIRCLE_PR_USERNAME', '?')}/"
            f"{environ.get('CIRCLE_PR_REPONAME', '?')}), and CircleCI gives it no OIDC token, so"
            " the job could not reach the remote: nothing is trained. A maintainer can re-run it"
            f" from a branch of this repository, or turn on {SETTING}"
        )
    raise Refusal(f"{TOKEN_ENV} is not set: is OIDC available to this project? Nothing is trained")


def minted_now(audience: str) -> str:
    command = ["circleci", "run", "oidc", "get", "--claims", json.dumps({"aud": audience})]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        raise Refusal(f"cannot mint a token ({error}); the push at the end would fail") from None
    if result.returncode:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise Refusal(f"circleci run oidc get failed ({reason}); the push at the end would fail")
    return result.stdout.strip()


def check(environ: dict[str, str], now: float) -> str:
    """What was checked, in one line; Refusal if the job should stop."""
    start = start_claims(environ)
    if environ.get("CIRCLE_BRANCH") != "main":
        return f"preflight: OIDC token present ({start['sub']}); nothing is pushed from here"
    fresh = claims_of(minted_now(start["aud"]), "the token `circleci run oidc get` minted")
    for claim in ("iss", "aud"):
        if fresh[claim] != start[claim]:
            raise Refusal(
                f"a freshly minted token's {claim} is {fresh[claim]!r}, the job's is"
                f" {start[claim]!r}: the push role would refuse it at the end"
            )
    if not push_role_accepts(fresh["sub"], str(start["aud"])):
        raise Refusal(
            f"a freshly minted token's sub is {fresh['sub']!r}, not the form the push role trusts"
            f" (org/<org>/project/<project>/user/<user>/vcs-origin/<origin>/vcs-ref/{MAIN_REF}):"
            " the push at the end would be refused; adjust the role's trust (infra/) first"
        )
    if fresh["exp"] <= now:
        raise Refusal("a freshly minted token has already expired: the push at the end would fail")
    return f"preflight: a fresh token's claims satisfy the push role ({fresh['sub']})"


def main() -> int:
    try:
        print(check(dict(os.environ), time.time()))
    except Refusal as refusal:
        print(f"preflight: error: {refusal}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_stage("preflight", main)
