"""The CI token helper: refuses bad tokens in one line, writes good ones privately, never prints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from ci_jobs import web_identity
from testbed.repo import REPO_ROOT
from testbed.s3 import ORG_ID, PUSH_ROLE, OidcIssuer


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ["PATH"],
        "AWS_ROLE_ARN": PUSH_ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "aws" / "token"),
    }
    return subprocess.run(
        [sys.executable, "-m", "ci_jobs.web_identity", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_good_token_written_privately_and_not_printed(
    tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    token = oidc_issuer.mint()
    result = _run(tmp_path, CIRCLE_OIDC_TOKEN_V2=token)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "aws" / "token"
    assert target.read_text() == token
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["token"]  # no temp file left
    assert token not in result.stdout + result.stderr
    assert token.split(".")[1] not in result.stdout + result.stderr
    assert result.stdout.startswith("web_identity: token for org/")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CIRCLE_OIDC_TOKEN_V2 is not set"),
        ({"CIRCLE_OIDC_TOKEN_V2": "  "}, "CIRCLE_OIDC_TOKEN_V2 is not set"),
        ({"CIRCLE_OIDC_TOKEN_V2": "not-a-jwt"}, "CIRCLE_OIDC_TOKEN_V2 is not a valid JWT"),
        ({"CIRCLE_OIDC_TOKEN_V2": "a.b.c"}, "CIRCLE_OIDC_TOKEN_V2 is not a valid JWT"),
    ],
    ids=["missing", "blank", "garbage", "three-bad-parts"],
)
def test_refusals(tmp_path: Path, env: dict, message: str) -> None:
    result = _run(tmp_path, **env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"web_identity: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "aws").exists()


def test_expired_token_refused(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(lifetime_s=-30)
    result = _run(tmp_path, CIRCLE_OIDC_TOKEN_V2=token)
    assert result.returncode == 1
    assert "CIRCLE_OIDC_TOKEN_V2 expired at " in result.stderr
    assert "re-run the job to get a fresh token" in result.stderr
    assert token not in result.stderr
    assert not (tmp_path / "aws").exists()


def test_token_about_to_expire_is_refused(oidc_issuer: OidcIssuer) -> None:
    with pytest.raises(web_identity.Refusal, match="expires within 60 s"):
        web_identity.token_claims(oidc_issuer.mint(lifetime_s=30), time.time())
    claims = web_identity.token_claims(oidc_issuer.mint(lifetime_s=600), time.time())
    assert claims["oidc.circleci.com/vcs-ref"] == "refs/heads/main"


def test_token_without_required_claims(oidc_issuer: OidcIssuer) -> None:
    bare = jwt.encode({"exp": int(time.time()) + 600}, oidc_issuer.key, algorithm="RS256")
    with pytest.raises(web_identity.Refusal, match="lacks the 'iss' claim"):
        web_identity.token_claims(bare, time.time())


def test_needs_target_and_role(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint()
    env = {"CIRCLE_OIDC_TOKEN_V2": token, "AWS_ROLE_ARN": PUSH_ROLE}
    with pytest.raises(web_identity.Refusal, match="AWS_WEB_IDENTITY_TOKEN_FILE is not set"):
        web_identity.write_token_file(env, time.time())
    env = {"CIRCLE_OIDC_TOKEN_V2": token, "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "t")}
    with pytest.raises(web_identity.Refusal, match="AWS_ROLE_ARN is not set"):
        web_identity.write_token_file(env, time.time())
    assert not (tmp_path / "t").exists()


def fake_circleci(directory: Path, token: str) -> str:
    """A PATH on which ``circleci`` records its arguments and prints ``token``."""
    directory.mkdir()
    (directory / "token").write_text(token)
    script = directory / "circleci"
    script.write_text(f'#!/bin/sh\necho "$@" >> {directory}/args\ncat {directory}/token\n')
    script.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


def test_fresh_token_minted_for_the_start_tokens_audience(
    tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    start = oidc_issuer.mint(lifetime_s=-600)  # long expired: only its audience is read
    fresh = oidc_issuer.mint(lifetime_s=3600)
    path = fake_circleci(tmp_path / "bin", fresh)
    result = _run(tmp_path, "--fresh", CIRCLE_OIDC_TOKEN_V2=start, PATH=path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bin/args").read_text() == f'run oidc get --claims {{"aud": "{ORG_ID}"}}\n'
    assert (tmp_path / "aws/token").read_text() == fresh
    assert result.stdout.startswith("web_identity: fresh token for org/")
    assert fresh not in result.stdout + result.stderr


def test_fresh_needs_the_circleci_command(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    result = _run(tmp_path, "--fresh", CIRCLE_OIDC_TOKEN_V2=oidc_issuer.mint(), PATH="/nonexistent")
    assert result.returncode == 1
    assert result.stderr == (
        "web_identity: error: the circleci command is not on PATH; --fresh works only inside a"
        " CircleCI job\n"
    )
    assert not (tmp_path / "aws").exists()


def test_keep_fresh_rewrites_the_token_file_each_round(
    tmp_path: Path, oidc_issuer: OidcIssuer, capsys: pytest.CaptureFixture
) -> None:
    fresh = oidc_issuer.mint()
    environ = {
        "PATH": fake_circleci(tmp_path / "bin", fresh),
        "CIRCLE_OIDC_TOKEN_V2": oidc_issuer.mint(lifetime_s=-600),
        "AWS_ROLE_ARN": PUSH_ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "aws/token"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", environ["PATH"])
        web_identity.keep_fresh(environ, every_s=0.01, rounds=3)
    assert len((tmp_path / "bin/args").read_text().splitlines()) == 3
    assert (tmp_path / "aws/token").read_text() == fresh
    assert capsys.readouterr().out.count("web_identity: fresh token for ") == 3


def test_every_needs_fresh(tmp_path: Path, oidc_issuer: OidcIssuer) -> None:
    result = _run(tmp_path, "--every", "60", CIRCLE_OIDC_TOKEN_V2=oidc_issuer.mint())
    assert result.returncode == 2
    assert "--every needs --fresh" in result.stderr
