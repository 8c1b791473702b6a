"""A stand-in for TensorFlow Serving's REST API on 127.0.0.1, for the live check's tests.

The server binary cannot be installed here (not on PyPI nor Debian), so this answers the REST API
as its documentation gives it (tensorflow_serving/g3doc/api_rest.md), for one model:

- ``GET /v1/models/<name>[/versions/<v> | /labels/<l>]``: ``{"model_version_status": [{"version":
  "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}``;
- ``GET …/metadata``: ``{"model_spec": {"name", "signature_name", "version"}, "metadata":
  {"signature_def": {"signature_def": {<name>: <SignatureDef as proto JSON>}}}}``, read from the
  version's ``saved_model.pb``;
- ``POST …:predict`` with ``{"instances": [...]}`` (the row format): ``{"predictions": [...]}``, one
  object per instance when the signature has several outputs, computed by loading the SavedModel
  in a TF1 session, as TensorFlow Serving's C++ loader does;
- errors as ``{"error": "..."}`` with an HTTP status (404 for an unknown version or label).

``versions`` maps a version number to its SavedModel folder, ``labels`` a label to a version.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import signal
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from testbed.loopback import Quiet, StandIn

SERVE = "serve"
ROUTE = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict)?$"
)


class NotFound(Exception):
    pass


@dataclass
class Loaded:
    """One version: its MetaGraph and a TF1 session with its variables restored."""

    meta_graph: object
    session: tf.compat.v1.Session

    @classmethod
    def load(cls, directory: Path) -> Loaded:
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE], str(directory))
        return cls(meta_graph, session)

    def predict(self, signature_name: str, instances: list) -> list:
        signature = self.meta_graph.signature_def[signature_name]
        (feed,) = signature.inputs.values()
        dtype = tf.dtypes.as_dtype(feed.dtype).as_numpy_dtype
        fetches = {name: output.name for name, output in signature.outputs.items()}
        outputs = self.session.run(fetches, {feed.name: np.asarray(instances, dtype=dtype)})
        rows = []
        for index in range(len(instances)):
            row = {}
            for name, values in outputs.items():
                value = values[index]
                row[name] = value.decode() if isinstance(value, bytes) else value.tolist()
            rows.append(row)
        return rows


@dataclass
class FakeTensorFlowServing(StandIn):
    model: str
    versions: dict[int, Path]
    labels: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def start(self) -> FakeTensorFlowServing:
        self.loaded = {version: Loaded.load(path) for version, path in self.versions.items()}
        return super().start()

    def stop(self) -> None:
        super().stop()
        for loaded in self.loaded.values():
            loaded.session.close()

    def resolve(self, model: str, version: str | None, label: str | None) -> list[int]:
        if model != self.model:
            raise NotFound(f"Servable not found for request: Latest({model})")
        if label is not None:
            if label not in self.labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            return [self.labels[label]]
        if version is not None:
            if int(version) not in self.versions:
                raise NotFound(f"Servable not found for request: Specific({model}, {version})")
            return [int(version)]
        return sorted(self.versions)

    def status(self, versions: list[int]) -> dict:
        ok = {"error_code": "OK", "error_message": ""}
        return {
            "model_version_status": [
                {"version": str(v), "state": "AVAILABLE", "status": ok} for v in versions
            ]
        }

    def metadata(self, version: int) -> dict:
        path = self.versions[version] / "saved_model.pb"
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
        meta_graph = next(g for g in saved_model.meta_graphs if SERVE in g.meta_info_def.tags)
        signatures = {
            name: json_format.MessageToDict(signature, preserving_proto_field_name=True)
            for name, signature in meta_graph.signature_def.items()
        }
        return {
            "model_spec": {"name": self.model, "signature_name": "", "version": str(version)},
            "metadata": {
                "signature_def": {
                    "signature_def": signatures,
                    "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                }
            },
        }

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        match = ROUTE.match(path)
        if not match:
            return 404, {"error": "Malformed request: " + path}
        try:
            versions = self.resolve(match["model"], match["version"], match["label"])
        except NotFound as error:
            return 404, {"error": str(error)}
        if match["tail"] == ":predict":
            if method != "POST":
                return 405, {"error": "Method not allowed"}
            try:
                request = json.loads(body)
            except ValueError as error:
                return 400, {"error": f"JSON Parse error: {error}"}
            version = max(versions)
            signature = request.get("signature_name", "serving_default")
            try:
                return 200, {
                    "predictions": self.loaded[version].predict(signature, request["instances"])
                }
            except (KeyError, ValueError, tf.errors.OpError) as error:
                return 400, {"error": str(error).splitlines()[0]}
        if match["tail"] == "/metadata":
            return 200, self.metadata(max(versions))
        return 200, self.status(versions)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(Quiet, BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept open, as TensorFlow Serving's
            # The answer goes out in two sends (headers, then body): with Nagle's algorithm on,
            # the body waited for the client's delayed ACK, 40 ms an answer, which capped the
            # stand-in at ~650 requests/s on 32 connections. TensorFlow Serving's libevent server
            # writes an answer from one buffer, so it has no such wait.
            disable_nagle_algorithm = True

            def respond(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(f"{method} {self.path}")
                status, document = fake.answer(method, self.path, body)
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.respond("GET")

            def do_POST(self) -> None:
                self.respond("POST")

        return Handler


def pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def main(argv: list[str] | None = None) -> None:
    """Serve in a process of its own (a benchmark's load must not share its interpreter) until
    SIGTERM; prints ``tf_serving: listening on <url>`` once ready."""
    parser = argparse.ArgumentParser(prog="python -m testbed.tf_serving", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=pair, action="append", required=True, help="N=PATH")
    parser.add_argument("--label", type=pair, action="append", default=[], help="LABEL=N")
    args = parser.parse_args(argv)
    versions = {int(number): Path(path) for number, path in args.version}
    labels = {label: int(number) for label, number in args.label}
    server = FakeTensorFlowServing(args.model, versions, labels).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # TensorFlow's hundreds of thousands of Python objects out of the collector's sight: without
    # this, each full collection (every few hundred requests, from parsing their JSON) paused the
    # stand-in for ~150 ms, which the C++ server has no reason to do; the load test's p99 of the
    # server alone was 216 ms at a p50 of 48 ms, and any path's p99 was that pause.
    gc.freeze()
    print(f"tf_serving: listening on {server.url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
