"""ci_jobs.pr_report: one report comment per pull request, updated, against a stand-in GitHub API.

The requests are asserted as the stand-in received them (path, auth header, body); the repro job
runs the same step in tests/test_ci_rehearsal.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_jobs.pr_report import MARKER, MAX_BODY, main, report_body
from testbed.github_api import FakeGitHub

TOKEN = "ghp-test-token"
METRICS = (
    "| Path | Metric | HEAD | workspace | Change |\n|---|---|---|---|---|\n"
    "| metrics/test.json | accuracy | 0.98 | 0.99 | 0.01 |\n"
)
PARAMS = (
    "| Path | Param | HEAD | workspace |\n|---|---|---|---|\n"
    "| params.yaml | train.epochs | 12 | 10 |\n"
)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    server = FakeGitHub("octo/mnist-pipeline", TOKEN).start()
    server.open_pull_request("feature/lr", 7)
    yield server
    server.stop()


def environ(github: FakeGitHub, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_API_URL": github.url,
        "GITHUB_TOKEN": TOKEN,
        "CIRCLE_REPOSITORY_URL": "git@github.com:octo/mnist-pipeline.git",
        "CIRCLE_BRANCH": "feature/lr",
        "CIRCLE_SHA1": "0123456789abcdef",
        "CIRCLE_BUILD_URL": "https://circleci.com/gh/octo/mnist-pipeline/42",
        "CIRCLE_WORKFLOW_JOB_ID": "5e1f-job",
        "CIRCLE_NODE_INDEX": "0",
        **extra,
    }


def report(tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    (tmp_path / "m.md").write_text(METRICS)
    (tmp_path / "p.md").write_text(PARAMS)
    code = main([str(tmp_path / "m.md"), str(tmp_path / "p.md")], env)
    return code, capsys.readouterr().out


def writes(github: FakeGitHub) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in github.requests if r.method != "GET"]


def test_first_run_creates_one_comment_with_both_diffs_and_the_artifact_links(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    github.add_comment(7, "LGTM")
    github.add_comment(7, "please rerun")
    github.add_comment(7, "a third, so the comments take two pages")
    code, out = report(tmp_path, environ(github), capsys)
    assert code == 0
    assert writes(github) == [("POST", "/repos/octo/mnist-pipeline/issues/7/comments")]
    assert {r.authorization for r in github.requests} == {f"Bearer {TOKEN}"}
    pages = [
        r.path for r in github.requests if "/issues/7/comments" in r.path and r.method == "GET"
    ]
    assert len(pages) == 2, pages  # followed Link: rel="next"
    body = github.comments[7][-1]["body"]
    assert body.startswith(MARKER)
    assert "Pipeline report for `01234567`" in body
    assert "| metrics/test.json | accuracy | 0.98 | 0.99 | 0.01 |" in body
    assert "| params.yaml | train.epochs | 12 | 10 |" in body
    artifacts = "https://output.circle-artifacts.com/output/job/5e1f-job/artifacts/0"
    assert f"[plots page]({artifacts}/dvc_plots/index.html)" in body
    assert f"[model card]({artifacts}/model-card/model_card.md)" in body
    assert out.startswith("pr-report: pull request #7: created https://github.com/octo/")
    assert TOKEN not in out


def test_second_run_updates_the_same_comment_instead_of_adding_one(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report(tmp_path, environ(github), capsys)
    first_id = github.comments[7][-1]["id"]
    github.add_comment(7, "a review comment after the first report")
    github.requests.clear()
    code, out = report(tmp_path, environ(github, CIRCLE_SHA1="fedcba9876543210"), capsys)
    assert code == 0
    assert writes(github) == [("PATCH", f"/repos/octo/mnist-pipeline/issues/comments/{first_id}")]
    reports = [c for c in github.comments[7] if c["body"].startswith(MARKER)]
    assert len(reports) == 1 and "Pipeline report for `fedcba98`" in reports[0]["body"]
    assert "updated" in out


def test_circleci_pull_request_url_names_the_pull_request_without_a_lookup(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    github.comments[12] = []
    env = environ(github, CIRCLE_PULL_REQUEST="https://github.com/octo/mnist-pipeline/pull/12")
    report(tmp_path, env, capsys)
    assert not [r for r in github.requests if "/pulls" in r.path]
    assert writes(github) == [("POST", "/repos/octo/mnist-pipeline/issues/12/comments")]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"GITHUB_TOKEN": ""},
            "no GITHUB_TOKEN (create it in the CircleCI context github-pr-report;",
        ),
        (
            {"GITHUB_TOKEN": "wrong"},
            "GitHub answered 401 to GET /repos/octo/mnist-pipeline/pulls: Bad credentials",
        ),
        (
            {"GITHUB_TOKEN": "read-only"},
            "GitHub answered 403 to POST /repos/octo/mnist-pipeline/issues/7/comments",
        ),
        ({"CIRCLE_BRANCH": "main"}, "no open pull request has main as its head"),
        ({"GITHUB_API_URL": "http://127.0.0.1:9"}, "cannot reach http://127.0.0.1:9"),
    ],
)
def test_without_a_usable_token_or_pull_request_it_says_why_and_carries_on(
    github: FakeGitHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    change: dict[str, str],
    reason: str,
) -> None:
    code, out = report(tmp_path, environ(github, **change), capsys)
    assert code == 0
    assert out.count("\n") == 1 and out.startswith(f"pr-report: no comment written: {reason}")
    assert out.rstrip().endswith("the report is in the job's artifacts")
    assert writes(github) == [] or change.get("GITHUB_TOKEN") == "read-only"
    assert all(not c["body"].startswith(MARKER) for c in github.comments[7])


def test_a_pagination_link_to_another_host_never_gets_the_token(
    github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    github.link_origin = "http://elsewhere.example:8080"
    for n in range(3):
        github.add_comment(7, f"comment {n}")
    code, out = report(tmp_path, environ(github), capsys)
    assert code == 0 and writes(github) == []
    assert out.startswith(
        "pr-report: no comment written: refusing to send the token to http://elsewhere.example:8080"
    )


def test_unchanged_diffs_say_so_and_a_huge_diff_is_cut_at_githubs_limit() -> None:
    quiet = report_body({"CIRCLE_SHA1": "abc"}, "", "\n")
    assert "No metric differs from main." in quiet and "No param differs from main." in quiet
    huge = report_body({}, "| x |\n" * 20000, "")
    assert len(huge) == MAX_BODY and huge.endswith("the full diffs are in the artifacts)")
