"""A local stand-in for the part of GitHub's REST API that ``ci_jobs.pr_report`` calls.

It keeps pull requests and their comments in memory, answers as GitHub documents (JSON bodies,
``Link: <...>; rel="next"`` pagination, 401 for a wrong token, 403 for a token without write
access, 404 for an unknown repository or pull request) and records every request (method, path,
``Authorization`` header, body), so tests can assert on what was really sent.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from testbed.loopback import Quiet, StandIn


@dataclass
class Request:
    method: str
    path: str
    authorization: str
    body: Any


@dataclass
class FakeGitHub(StandIn):
    """One repository with pull requests; ``token`` may write, ``read_only_token`` may only read."""

    repository: str
    token: str
    read_only_token: str = "read-only"
    page_size: int = 2  # small, so the client must follow pagination
    link_origin: str = ""  # where pagination links point; empty: this server
    pulls: dict[str, list[int]] = field(default_factory=dict)  # head "owner:branch" -> numbers
    comments: dict[int, list[dict]] = field(default_factory=dict)  # number -> comments
    opened: list[dict] = field(default_factory=list)  # pull requests created through the API
    requests: list[Request] = field(default_factory=list)
    _next_id: int = 1000

    def open_pull_request(self, branch: str, number: int) -> None:
        owner = self.repository.split("/")[0]
        self.pulls.setdefault(f"{owner}:{branch}", []).append(number)
        self.comments.setdefault(number, [])

    def add_comment(self, number: int, body: str, login: str = "someone") -> dict:
        self._next_id += 1
        comment = {
            "id": self._next_id,
            "body": body,
            "user": {"login": login},
            "html_url": f"https://github.com/{self.repository}/pull/{number}#issuecomment-{self._next_id}",
        }
        self.comments[number].append(comment)
        return comment

    def create_pull_request(self, body: Any) -> tuple[int, Any, str]:
        """``POST /repos/{owner}/{repo}/pulls``: 201 and the pull request, as GitHub documents;
        422 for a missing field or a head that already has an open pull request."""
        if not isinstance(body, dict) or not all(body.get(k) for k in ("title", "head", "base")):
            return 422, {"message": "Validation Failed"}, ""
        owner = self.repository.split("/")[0]
        head = f"{owner}:{body['head']}"
        if self.pulls.get(head):
            return 422, {"message": f"A pull request already exists for {head}."}, ""
        number = 1 + max([n for numbers in self.pulls.values() for n in numbers], default=0)
        self.open_pull_request(body["head"], number)
        url = f"https://github.com/{self.repository}/pull/{number}"
        created = {**body, "number": number, "html_url": url, "state": "open"}
        self.opened.append(created)
        return 201, created, ""

    def answer(
        self, method: str, target: str, authorization: str, body: Any
    ) -> tuple[int, Any, str]:
        """(status, JSON answer, Link header) for one request."""
        parsed = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        prefix = f"/repos/{self.repository}"
        if authorization not in (f"Bearer {self.token}", f"Bearer {self.read_only_token}"):
            return 401, {"message": "Bad credentials"}, ""
        if not parsed.path.startswith(prefix + "/"):
            return 404, {"message": "Not Found"}, ""
        if method != "GET" and authorization != f"Bearer {self.token}":
            return 403, {"message": "Resource not accessible by personal access token"}, ""
        path = parsed.path.removeprefix(prefix)
        if method == "GET" and path == "/pulls":
            return 200, [{"number": n} for n in self.pulls.get(query.get("head", ""), [])], ""
        if method == "POST" and path == "/pulls":
            return self.create_pull_request(body)
        listing = re.fullmatch(r"/issues/(\d+)/comments", path)
        if listing and int(listing.group(1)) not in self.comments:
            return 404, {"message": "Not Found"}, ""
        if listing and method == "GET":
            everything = self.comments[int(listing.group(1))]
            page = int(query.get("page", "1"))
            chunk = everything[(page - 1) * self.page_size : page * self.page_size]
            more = page * self.page_size < len(everything)
            following = {**query, "page": str(page + 1)}
            origin = self.link_origin or self.url
            link = f'<{origin}{parsed.path}?{urllib.parse.urlencode(following)}>; rel="next"'
            return 200, chunk, link if more else ""
        if listing and method == "POST":
            return 201, self.add_comment(int(listing.group(1)), body["body"], "ci-bot"), ""
        single = re.fullmatch(r"/issues/comments/(\d+)", path)
        if single and method == "PATCH":
            for comment in (c for thread in self.comments.values() for c in thread):
                if comment["id"] == int(single.group(1)):
                    comment["body"] = body["body"]
                    return 200, comment, ""
        return 404, {"message": "Not Found"}, ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        github = self

        class Handler(Quiet, BaseHTTPRequestHandler):
            def respond(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                authorization = self.headers.get("Authorization", "")
                github.requests.append(Request(self.command, self.path, authorization, body))
                status, answer, link = github.answer(self.command, self.path, authorization, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if link:
                    self.send_header("Link", link)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = respond

        return Handler
