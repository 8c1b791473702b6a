"""``python -m serving.gateway`` in a process of its own on a free port of 127.0.0.1, and plain
HTTP calls to it, for the tests and the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

from testbed.repo import REPO_ROOT


def call(url: str, body: dict | bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """One request (POST with a body, else GET): the status and the body, errors included."""
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class GatewayProcess:
    def __init__(self, *args: str):
        command = [sys.executable, "-m", "serving.gateway", "--port", "0", *args]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        if not line.startswith("gateway: listening on "):
            self.process.kill()
            raise RuntimeError(line + self.process.stderr.read())
        self.url = line.split()[3].rstrip(",")

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it (the open capture file is closed); its stderr."""
        self.process.terminate()
        _, err = self.process.communicate(timeout=30)
        return err

    def call(self, path: str, body: dict | bytes | None = None) -> tuple[int, bytes]:
        return call(self.url + path, body)

    def metrics_text(self) -> str:
        return call(self.url + "/metrics")[1].decode()
