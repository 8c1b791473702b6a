"""The CircleCI job runs the tested helpers in the right order, pushing from main only."""

from __future__ import annotations

import yaml

from testbed.repo import REPO_ROOT

CONFIG = yaml.safe_load((REPO_ROOT / ".circleci/config.yml").read_text())


def _commands() -> list[str]:
    steps = CONFIG["jobs"]["pipeline"]["steps"]
    return [step["run"]["command"] for step in steps if isinstance(step, dict) and "run" in step]


def test_token_then_pull_then_repro_then_push() -> None:
    commands = _commands()
    order = [
        next(i for i, c in enumerate(commands) if needle in c)
        for needle in (
            "ci_jobs.web_identity",
            "ci_jobs.remote pull",
            "dvc repro",
            "ci_jobs.remote push",
        )
    ]
    assert order == sorted(order)
    push = next(c for c in commands if "ci_jobs.remote push" in c)
    assert 'if [ "$CIRCLE_BRANCH" = "main" ]' in push


def test_no_static_credentials() -> None:
    text = (REPO_ROOT / ".circleci/config.yml").read_text()
    environment = CONFIG["jobs"]["pipeline"]["environment"]
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert environment["AWS_WEB_IDENTITY_TOKEN_FILE"].startswith("/tmp/")
    assert "AWS_ENDPOINT_URL" not in environment  # it would redirect STS too
    assert CONFIG["jobs"]["pipeline"]["resource_class"].startswith("gpu.")
