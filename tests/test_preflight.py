"""A GPU job's preflight: no token (a fork's pull request) or a fresh token the push role would
refuse stops the job in one line, before anything is installed; neither token is printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.repo import REPO_ROOT
from testbed.s3 import ORG_ID, OidcIssuer


def fake_circleci(tmp_path: Path, token: str) -> str:
    """A ``circleci`` on PATH whose ``run oidc get`` prints ``token``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "circleci").write_text(f"#!/bin/sh\necho '{token}'\n")
    (bin_dir / "circleci").chmod(0o755)
    return f"{bin_dir}{os.pathsep}/usr/bin:/bin"


def preflight(path: str = "/usr/bin:/bin", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ci_jobs.preflight"],
        cwd=REPO_ROOT,
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_forks_pull_request_trains_nothing_and_says_why() -> None:
    result = preflight(
        CIRCLE_BRANCH="pull/7", CIRCLE_PR_USERNAME="someone", CIRCLE_PR_REPONAME="fork"
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "preflight: error: this is a pull request from a fork (someone/fork), and CircleCI gives"
        " it no OIDC token, so the job could not reach the remote: nothing is trained. A"
        ' maintainer can re-run it from a branch of this repository, or turn on "Pass secrets'
        ' to builds from forked pull requests" (Project Settings > Advanced)'
    ]


def test_main_with_a_fresh_token_the_push_role_trusts(
    tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    start, fresh = oidc_issuer.mint(), oidc_issuer.mint()
    result = preflight(
        fake_circleci(tmp_path, fresh), CIRCLE_OIDC_TOKEN_V2=start, CIRCLE_BRANCH="main"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("preflight: a fresh token's claims satisfy the push role")
    assert start not in result.stdout + result.stderr and fresh not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("minted", "message"),
    [
        ({"ref": "refs/heads/other"}, "a freshly minted token's sub is 'org/"),
        ({"audience": "another-org"}, "a freshly minted token's aud is 'another-org'"),
        ({"lifetime_s": -10}, "a freshly minted token has already expired"),
    ],
)
def test_main_with_a_fresh_token_the_push_role_would_refuse_stops_now(
    tmp_path: Path, oidc_issuer: OidcIssuer, minted: dict, message: str
) -> None:
    start, fresh = oidc_issuer.mint(), oidc_issuer.mint(**minted)
    result = preflight(
        fake_circleci(tmp_path, fresh), CIRCLE_OIDC_TOKEN_V2=start, CIRCLE_BRANCH="main"
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"preflight: error: {message}"), line
    assert fresh not in line and start not in line


def test_a_branch_needs_only_its_own_token(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(ref="refs/heads/feature")
    result = preflight(CIRCLE_OIDC_TOKEN_V2=token, CIRCLE_BRANCH="feature")  # no circleci needed
    assert result.returncode == 0, result.stderr
    assert f"org/{ORG_ID}/" in result.stdout and "nothing is pushed from here" in result.stdout
