"""An HTTP server for a test or a benchmark: on 127.0.0.1 only, on a free port, in a daemon
thread; the one way the stand-ins here (GitHub's API, the OIDC issuer, TensorFlow Serving, a
directory mirror) are served."""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


def free_ports(count: int) -> list[int]:
    """``count`` different free ports of 127.0.0.1 (all held open while chosen, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


class Server(ThreadingHTTPServer):
    # The standard library's listen backlog is 5: a burst of new connections beyond it (a load
    # test's 32 clients) is dropped and retried by TCP a second later.
    request_queue_size = 128


class Loopback:
    def __init__(self, handler: Any):
        """``handler``: a BaseHTTPRequestHandler class (or a partial that makes one)."""
        self.server = Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Quiet:
    """Mixed into a request handler: no access log on stderr, the tests' output stays theirs."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class StandIn:
    """A stand-in for a service (GitHub's API, CircleCI's, TensorFlow Serving's): its
    ``handler()`` served by a :class:`Loopback` between ``start()`` and ``stop()``."""

    def handler(self) -> Any:
        raise NotImplementedError

    def start(self):
        self.loopback = Loopback(self.handler())
        return self

    def stop(self) -> None:
        self.loopback.stop()

    @property
    def url(self) -> str:
        return self.loopback.url
