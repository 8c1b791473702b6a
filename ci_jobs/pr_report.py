"""``python -m ci_jobs.pr_report METRICS.md PARAMS.md [JOB.json]``: the pipeline's report on the PR.

What CML's ``cml comment update`` gives its users, for CircleCI: the repro job writes one comment
on each open pull request of its branch — metrics and params against main (``dvc metrics diff``
and ``dvc params diff``, as Markdown) and links to the job's plots page and model card — and
updates that comment on the next run instead of adding another. The comment is found again by a
hidden marker on its first line.

The token (``GITHUB_TOKEN``: a fine-grained token or a GitHub App's, with "Pull requests: write"
on this repository) comes from the CircleCI context ``github-pr-report``. A report is a courtesy,
not a gate: without a token (no context variable, or a forked pull request's build, which gets no
secrets) or when GitHub refuses, the step says so in one line and the job carries on. The token
is sent only in the ``Authorization`` header, never printed.

GitHub's REST API through ``urllib`` (four calls; a client library would be one more dependency
in both locks for them). ``GITHUB_API_URL`` points it at GitHub Enterprise, or at a stand-in.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.errors import run_stage

MARKER = "<!-- dvc-pipeline-report: one comment per pull request, updated by CI -->"
TOKEN_ENV = "GITHUB_TOKEN"  # noqa: S105 (a variable's name)
CONTEXT = "github-pr-report"
MAX_BODY = 65536  # GitHub's limit on a comment's body, in characters
PULL_URL = re.compile(r"/pull/(\d+)/?$")
REPOSITORY_URL = re.compile(r"github\.com[:/]([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
ARTIFACTS = (  # (label, path as store_artifacts uploads it in the repro job)
    ("plots page", "dvc_plots/index.html"),
    ("model card", "model-card/model_card.md"),
    ("test metrics", "metrics/test.json"),
    ("test report", "reports/test.json"),
)


class ReportSkipped(Exception):
    """Why no comment was written; the job carries on."""


class RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect with every header, ``Authorization`` included, to any
    host; the API does not redirect these calls, so a redirect is refused (an HTTPError)."""

    def redirect_request(self, *args: Any) -> None:
        return None


NO_REDIRECTS = urllib.request.build_opener(RefuseRedirects)


@dataclass
class GitHub:
    """The few REST calls the report needs, authenticated by one token."""

    api: str
    token: str
    repository: str  # owner/name

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[Any, str]:
        """One request: the decoded JSON answer and the ``Link`` header (for pagination)."""
        url = self.url_for(path)
        request = urllib.request.Request(  # noqa: S310 (url_for allows the API's origin only)
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
                "User-Agent": "dvc-pipeline-pr-report",
            },
        )
        try:
            with NO_REDIRECTS.open(request, timeout=30) as answer:
                return json.loads(answer.read() or b"null"), answer.headers.get("Link", "")
        except urllib.error.HTTPError as error:
            raise ReportSkipped(refusal(method, path, error)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise ReportSkipped(f"cannot reach {self.api} ({reason})") from None
        except ValueError:
            raise ReportSkipped(f"{method} {path.split('?')[0]} did not answer JSON") from None

    def url_for(self, path: str) -> str:
        """A path of the API, or a pagination link, which must point back at the API's own
        origin: the token is never sent anywhere else."""
        base = self.api.rstrip("/")
        url = path if "://" in path else f"{base}{path}"
        origin = urllib.parse.urlsplit(base)
        target = urllib.parse.urlsplit(url)
        if origin.scheme not in ("https", "http") or target[:2] != origin[:2]:
            raise ReportSkipped(f"refusing to send the token to {target.scheme}://{target.netloc}")
        return url

    def pages(self, path: str) -> Iterator[dict]:
        """Every item of a paginated list, following ``Link: <...>; rel="next"``."""
        while path:
            items, link = self.call("GET", path)
            yield from items
            following = re.search(r'<([^>]+)>;\s*rel="next"', link)
            path = following.group(1) if following else ""

    def pull_requests(self, branch: str, pull_request_url: str) -> list[int]:
        """The open pull requests this build reports to: CircleCI's ``CIRCLE_PULL_REQUEST``
        when it sets one, else those whose head is this branch (pushes before a PR opened)."""
        found = PULL_URL.search(pull_request_url)
        if found:
            return [int(found.group(1))]
        owner = self.repository.split("/")[0]
        query = urllib.parse.urlencode({"head": f"{owner}:{branch}", "state": "open"})
        return [pull["number"] for pull in self.pages(f"/repos/{self.repository}/pulls?{query}")]

    def upsert(self, number: int, body: str) -> str:
        """Update the report comment on pull request ``number``, or create it: what was done."""
        listing = f"/repos/{self.repository}/issues/{number}/comments?per_page=100"
        for comment in self.pages(listing):
            if comment.get("body", "").startswith(MARKER):
                path = f"/repos/{self.repository}/issues/comments/{comment['id']}"
                self.call("PATCH", path, {"body": body})
                return f"updated {comment.get('html_url', path)}"
        created, _ = self.call(
            "POST", f"/repos/{self.repository}/issues/{number}/comments", {"body": body}
        )
        return f"created {created.get('html_url', '')}"


def refusal(method: str, path: str, error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read()).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    hint = {
        401: f"the token in the {CONTEXT} context is invalid or expired",
        403: 'the token lacks "Pull requests: write" on this repository',
        404: "the token cannot see this repository (or the pull request is gone)",
    }.get(error.code, "GitHub refused the request")
    detail = f": {message}" if message else ""
    return f"GitHub answered {error.code} to {method} {path.split('?')[0]}{detail} ({hint})"


def repository_of(environ: dict[str, str]) -> str:
    """owner/name: ``GITHUB_REPOSITORY`` if set, else from CircleCI's ``CIRCLE_REPOSITORY_URL``."""
    if environ.get("GITHUB_REPOSITORY"):
        return environ["GITHUB_REPOSITORY"]
    found = REPOSITORY_URL.search(environ.get("CIRCLE_REPOSITORY_URL", ""))
    if not found:
        raise ReportSkipped("no GitHub repository in CIRCLE_REPOSITORY_URL or GITHUB_REPOSITORY")
    return f"{found.group(1)}/{found.group(2)}"


def artifact_links(environ: dict[str, str]) -> str:
    """Links to this job's artifacts (CircleCI's artifact host; for private projects it asks
    for a CircleCI login)."""
    job_id = environ.get("CIRCLE_WORKFLOW_JOB_ID")
    job_page = environ.get("CIRCLE_BUILD_URL", "")
    if not job_id:
        return f"Artifacts: see the job's Artifacts tab {job_page}".rstrip()
    node = environ.get("CIRCLE_NODE_INDEX", "0")
    base = f"https://output.circle-artifacts.com/output/job/{job_id}/artifacts/{node}"
    links = " · ".join(f"[{label}]({base}/{path})" for label, path in ARTIFACTS)
    return f"Artifacts of [the repro job]({job_page}): {links}"


def section(title: str, markdown: str, unchanged: str) -> str:
    return f"### {title}\n\n{markdown.strip() or unchanged}\n"


def report_body(environ: dict[str, str], metrics_diff: str, params_diff: str) -> str:
    """The comment: marker, the commit it describes, both diffs, the artifact links."""
    commit = environ.get("CIRCLE_SHA1", "")[:8] or "this commit"
    parts = [
        MARKER,
        f"## Pipeline report for `{commit}`, against main\n",
        section("Metrics", metrics_diff, "No metric differs from main."),
        section("Params", params_diff, "No param differs from main."),
        artifact_links(environ),
    ]
    body = "\n".join(parts)
    if len(body) > MAX_BODY:
        cut = "\n\n… (cut at GitHub's comment limit: the full diffs are in the artifacts)"
        body = body[: MAX_BODY - len(cut)] + cut
    return body


def post_report(environ: dict[str, str], metrics_diff: str, params_diff: str) -> list[str]:
    """Write the report on every open pull request of this build's branch: what was done."""
    token = environ.get(TOKEN_ENV, "")
    if not token:
        raise ReportSkipped(
            f"no {TOKEN_ENV} (create it in the CircleCI context {CONTEXT}; a forked pull"
            " request's build gets no context secrets)"
        )
    github = GitHub(
        environ.get("GITHUB_API_URL", "https://api.github.com"), token, repository_of(environ)
    )
    branch = environ.get("CIRCLE_BRANCH", "")
    if not branch and not environ.get("CIRCLE_PULL_REQUEST"):
        raise ReportSkipped("no CIRCLE_BRANCH: not a branch build")
    numbers = github.pull_requests(branch, environ.get("CIRCLE_PULL_REQUEST", ""))
    if not numbers:
        raise ReportSkipped(f"no open pull request has {branch or 'this build'} as its head")
    body = report_body(environ, metrics_diff, params_diff)
    return [f"pull request #{number}: {github.upsert(number, body)}" for number in numbers]


def main(argv: list[str], environ: dict[str, str]) -> int:
    """``JOB.json``: the CircleCI variables of the job whose artifacts to link (the repro job,
    when a job of its own writes the report), over this job's."""
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.pr_report", description=__doc__)
    parser.add_argument("metrics", type=Path, help="`dvc metrics diff --md` of the build")
    parser.add_argument("params", type=Path, help="`dvc params diff --md` of the build")
    parser.add_argument("job", type=Path, nargs="?", help="JOB.json: the repro job's variables")
    args = parser.parse_args(argv)
    try:
        metrics_diff, params_diff = args.metrics.read_text(), args.params.read_text()
        if args.job:
            environ = {**environ, **json.loads(args.job.read_text())}
        done = post_report(environ, metrics_diff, params_diff)
    except ReportSkipped as skipped:
        print(f"pr-report: no comment written: {skipped}; the report is in the job's artifacts")
        return 0
    except Exception as error:  # a courtesy: nothing here may fail the workflow
        print(
            f"pr-report: no comment written: unexpected {type(error).__name__}: {error}; the"
            " report is in the job's artifacts"
        )
        return 0
    for line in done:
        print(f"pr-report: {line}")
    return 0


if __name__ == "__main__":
    run_stage("pr_report", lambda: main(sys.argv[1:], dict(os.environ)))
