"""A local stand-in for the part of CircleCI's API v2 that ``ci_jobs.monitor`` calls: starting a
pipeline with parameters.

``POST /project/{project-slug}/pipeline`` (body ``{"branch", "parameters"}``) and, for GitHub App
projects, ``POST /project/{project-slug}/pipeline/run`` (body ``{"definition_id", "config":
{"branch"}, "checkout": {"branch"}, "parameters"}``), authenticated by the ``Circle-Token``
header, answer as CircleCI documents: 201 with ``{"id", "number", "state", "created_at"}``; 401
``{"message": "Invalid token provided."}``; 404 ``{"message": "Project not found"}``; 400 for a
parameter the project's config does not declare. Every request is recorded, so tests assert on
what was really sent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from testbed.loopback import Quiet, StandIn


@dataclass
class FakeCircleCI(StandIn):
    slug: str  # e.g. gh/example-org/mnist-pipeline
    token: str
    declared: set[str]  # the pipeline parameters the project's config declares
    started: list[dict] = field(default_factory=list)  # the body of each pipeline started
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, token

    @property
    def url(self) -> str:
        """What ``CIRCLECI_API_URL`` is set to: the API's root, ``…/api/v2``."""
        return f"{self.loopback.url}/api/v2"

    def answer(self, method: str, path: str, token: str, body: Any) -> tuple[int, dict]:
        if token != self.token:
            return 401, {"message": "Invalid token provided."}
        prefix = f"/api/v2/project/{self.slug}/"
        if method != "POST" or not path.startswith(prefix):
            return 404, {"message": "Project not found"}
        if path.removeprefix(prefix) not in ("pipeline", "pipeline/run"):
            return 404, {"message": "Not found"}
        unknown = sorted(set((body or {}).get("parameters", {})) - self.declared)
        if unknown:
            return 400, {"message": f"Unexpected argument(s): {', '.join(unknown)}"}
        self.started.append(body)
        return 201, {
            "id": str(uuid.uuid4()),
            "number": len(self.started),
            "state": "created",
            "created_at": "2026-12-07T06:00:00.000Z",
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        circleci = self

        class Handler(Quiet, BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                token = self.headers.get("Circle-Token", "")
                circleci.requests.append((self.command, self.path, token))
                status, answer = circleci.answer(self.command, self.path, token, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
