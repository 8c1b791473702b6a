"""A gateway in front of TensorFlow Serving: every request forwarded unchanged, a sample captured,
metrics per model, label and version.

    python -m serving.gateway --upstream http://127.0.0.1:8501 --listen 127.0.0.1:8601 \\
        --capture /var/lib/mnist-gateway --sample-rate 0.1

Clients call the gateway exactly as they would call TensorFlow Serving's REST API
(``/v1/models/<name>[/versions/<v> | /labels/<l>][/metadata | :predict]``): method, path, query
and body go upstream as they are, and the server's status and body come back as they are, its
errors included. The gateway's own answers are TensorFlow Serving's shape, ``{"error": "..."}``:
502 when the server cannot be reached, 504 when it does not answer within ``--timeout``, 413 for a
request body over ``--max-request-mb``, 404 for a path outside the REST API.

Why a gateway: TensorFlow Serving's open-source build cannot log requests (a ``logging_config``
fails: "No request-logger-creator provided"), and its Prometheus metrics have no version or
label (tensorflow/serving#1970), so a canary could not be told from ``stable``.

After a request is answered, an observation goes on a bounded queue, and one task: resolves the
version that answered (a label's version from the server's model-status API, cached for
``--label-ttl`` seconds; TensorFlow Serving's predict answer does not name it); counts it in the
metrics (``GET /metrics``, Prometheus text: requests by code, a latency histogram,
predicted classes, a confidence histogram, low-confidence predictions, captures and drops: the
evidence ``serving.labels promote`` reads); and, for a sample of
predict requests (``--sample-rate``, 1.0 allowed), hands the request and its predictions to the
thread that writes the capture files (``serving/capture.py``). Nothing of that can fail or delay
a request: a full queue, a full disk or a failed write is counted, and capture resumes by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import queue
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from classifier.errors import StageError, run_stage
from serving.capture import CaptureFiles, record_line

ROUTE = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)
METRICS_PATH = "/metrics"
DRAIN_S = 5.0  # at a stop, how long the observations still queued may take
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # package.model_name's pattern
QUEUE_SIZE = 10_000
WRITE_BATCH = 256  # capture lines written, and flushed, at one go
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
API = {None: "status", "/metadata": "metadata", ":predict": "predict"}


@dataclass(frozen=True)
class Settings:
    upstream: str
    timeout_s: float = 10.0
    max_request_bytes: int = 8 << 20
    sample_rate: float = 0.0
    capture_dir: Path | None = None
    max_capture_bytes: int = 1 << 30
    low_confidence: float = 0.5
    label_ttl_s: float = 10.0


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        by = ["model", "label", "version", "api"]
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by HTTP status code",
            [*by, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_seconds",
            "Time to the answer, upstream included",
            by,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predicted = Counter(
            "gateway_predicted_class",
            "Predictions by class",
            ["model", "label", "version", "class_name"],
            registry=self.registry,
        )
        self.low_confidence = Counter(
            "gateway_low_confidence_predictions",
            "Predictions below the confidence threshold",
            ["model", "label", "version"],
            registry=self.registry,
        )
        self.confidence = Histogram(
            "gateway_prediction_confidence",
            "Probability of the predicted class",
            ["model", "label", "version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.captured = Counter(
            "gateway_captured_requests",
            "Requests written to the capture files",
            ["model"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "gateway_capture_dropped",
            "Observations or captures not kept, by reason",
            ["reason"],
            registry=self.registry,
        )


@dataclass
class Observation:
    """What the answering task hands to the observing one."""

    model: str
    label: str
    version: str
    api: str
    code: int
    seconds: float
    request: bytes
    answer: bytes
    capture: bool
    time: float = field(default_factory=time.time)


class CaptureWriter:
    """The one thread that writes capture files: the event loop hands it lines without waiting
    (a disk that stalls stalls only this thread), and it writes what has piled up at one go, one
    flush per batch. It owns the files it opens; ``stop`` writes what is queued and closes them."""

    def __init__(
        self,
        files_of: Callable[[str], CaptureFiles | None],
        on_kept: Callable[[str, int], None],
        on_drop: Callable[[str], None],
    ):
        self.files_of, self.on_kept, self.on_drop = files_of, on_kept, on_drop
        self.lines: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_SIZE)
        self.opened: dict[str, CaptureFiles] = {}
        self.thread = threading.Thread(target=self.run, name="capture-writer", daemon=True)
        self.thread.start()

    def put(self, model: str, line: bytes) -> None:
        try:
            self.lines.put_nowait((model, line))
        except queue.Full:
            self.on_drop("queue_full")

    def run(self) -> None:
        while True:
            batch = [self.lines.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < WRITE_BATCH:
                    batch.append(self.lines.get_nowait())
            by_model: dict[str, list[bytes]] = {}
            for item in batch:
                if item is not None:
                    by_model.setdefault(item[0], []).append(item[1])
            for model, lines in by_model.items():
                try:
                    self.write(model, lines)
                except Exception:  # whatever it was, the next batch is tried afresh
                    self.on_drop("write_failed")
            if None in batch:
                for files in self.opened.values():
                    files.close()
                return

    def write(self, model: str, lines: list[bytes]) -> None:
        if model not in self.opened:
            try:
                files = self.files_of(model)
            except OSError:  # its folders cannot be made now; tried again with the next lines
                for _ in lines:
                    self.on_drop("write_failed")
                return
            if files is None:
                return
            self.opened[model] = files
        kept = self.opened[model].write_lines(lines)
        if kept:
            self.on_kept(model, kept)

    def stop(self, timeout_s: float) -> None:
        self.lines.put(None, timeout=timeout_s)
        self.thread.join(timeout_s)


class Versions:
    """The version behind a label (or the latest), from the server's model-status API, cached."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession):
        self.settings, self.session = settings, session
        self.cache: dict[tuple[str, str], tuple[float, str]] = {}

    async def resolve(self, model: str, label: str, version: str) -> str:
        if version:
            return version
        key = (model, label)
        now = time.monotonic()
        cached = self.cache.get(key)
        if cached and now - cached[0] < self.settings.label_ttl_s:
            return cached[1]
        path = f"/v1/models/{model}" + (f"/labels/{label}" if label else "")
        try:
            async with self.session.get(
                self.settings.upstream + path,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as answer:
                status = await answer.json() if answer.status == 200 else {}
            available = [
                int(entry["version"])
                for entry in status.get("model_version_status", [])
                if entry.get("state") == "AVAILABLE"
            ]
            resolved = str(max(available)) if available else "unknown"
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
            resolved = "unknown"
        self.cache[key] = (now, resolved)
        return resolved


def predictions_of(answer: bytes) -> list[dict]:
    """``class_index``, ``class_name`` and the confidence of each prediction in a row-format
    predict answer of this pipeline's signature; [] for anything else."""
    try:
        rows = json.loads(answer)["predictions"]
        return [
            {
                "class_index": int(row["class_index"]),
                "class_name": str(row["class_name"]),
                "confidence": float(max(row["probabilities"])),
            }
            for row in rows
        ]
    except (ValueError, KeyError, TypeError):
        return []


class Gateway:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.queue: asyncio.Queue[Observation] = asyncio.Queue(QUEUE_SIZE)

    def capture_files(self, model: str) -> CaptureFiles | None:
        """New capture files for the model, in a folder of its own (uploaded to its own prefix);
        None for a name that is not a model name this pipeline makes (it becomes a folder);
        OSError when the folder cannot be made."""
        root = self.settings.capture_dir
        if root is None or not MODEL_NAME.fullmatch(model):
            return None
        return CaptureFiles(
            root / model, self.settings.max_capture_bytes, on_drop=self.dropped, budget_root=root
        )

    def dropped(self, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc()

    def captured(self, model: str, count: int) -> None:
        self.metrics.captured.labels(model).inc(count)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_request_bytes)
        app.router.add_get(METRICS_PATH, self.serve_metrics)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.cleanup_ctx.append(self.lifetime)
        return app

    async def lifetime(self, app: web.Application):
        self.session = aiohttp.ClientSession(auto_decompress=False)
        self.versions = Versions(self.settings, self.session)
        self.writer = CaptureWriter(self.capture_files, self.captured, self.dropped)
        observer = asyncio.create_task(self.observe_forever())
        yield
        with contextlib.suppress(TimeoutError):  # what was answered is still captured
            await asyncio.wait_for(self.queue.join(), DRAIN_S)
        observer.cancel()
        await self.session.close()
        await asyncio.to_thread(self.writer.stop, DRAIN_S)  # written, and the open file closed

    async def serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def forward(self, request: web.Request) -> web.Response:
        match = ROUTE.match(request.path)
        if not match:
            return error(404, f"{request.path} is not a path of TensorFlow Serving's REST API")
        started = time.monotonic()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(
                413,
                f"request body over {self.settings.max_request_bytes} bytes; send fewer"
                " instances per request",
            )
        try:
            code, answer, headers = await self.upstream(request, body)
        except TimeoutError:
            code, answer, headers = timeout_answer(self.settings)
        except aiohttp.ClientError as problem:
            code, answer, headers = unreachable_answer(self.settings, problem)
        api = API.get(match["tail"]) or match["tail"].lstrip(":/")
        observation = Observation(
            match["model"],
            match["label"] or "",
            match["version"] or "",
            api,
            code,
            time.monotonic() - started,
            body,
            answer,
            capture=api == "predict" and code == 200 and self.sampled(),
        )
        try:
            self.queue.put_nowait(observation)
        except asyncio.QueueFull:
            self.dropped("queue_full")
        return web.Response(body=answer, status=code, headers=headers)

    def sampled(self) -> bool:
        """One predict in ``sample_rate``, at random (not a secret: no cryptographic source)."""
        return random.random() < self.settings.sample_rate  # noqa: S311

    async def upstream(self, request: web.Request, body: bytes) -> tuple[int, bytes, dict]:
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with self.session.request(
            request.method,
            self.settings.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
        ) as answer:
            payload = await answer.read()
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "content-encoding")
            }
            return answer.status, payload, kept

    async def observe_forever(self) -> None:
        while True:
            observation = await self.queue.get()
            try:
                await self.observe(observation)
            except Exception:  # one bad observation must not stop the others
                self.dropped("observe_failed")
            finally:
                self.queue.task_done()

    async def observe(self, seen: Observation) -> None:
        """Count one answer in the metrics; hand its capture line to the writer if sampled."""
        version = await self.versions.resolve(seen.model, seen.label, seen.version)
        by = (seen.model, seen.label, version, seen.api)
        self.metrics.requests.labels(*by, str(seen.code)).inc()
        self.metrics.latency.labels(*by).observe(seen.seconds)
        if seen.api != "predict" or seen.code != 200:
            return None
        predictions = predictions_of(seen.answer)
        for prediction in predictions:
            self.metrics.predicted.labels(
                seen.model, seen.label, version, prediction["class_name"]
            ).inc()
            self.metrics.confidence.labels(seen.model, seen.label, version).observe(
                prediction["confidence"]
            )
            if prediction["confidence"] < self.settings.low_confidence:
                self.metrics.low_confidence.labels(seen.model, seen.label, version).inc()
        if not seen.capture or not seen.request.lstrip().startswith(b"{"):
            return
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seen.time))
            + f".{int(seen.time * 1000) % 1000:03d}Z",
            "model": seen.model,
            "label": seen.label,
            "version": int(version) if version.isdigit() else None,
            "status": seen.code,
            "latency_ms": round(seen.seconds * 1000, 3),
            "predictions": predictions,
        }
        self.writer.put(seen.model, record_line(record, seen.request))


def error(code: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=code)


def timeout_answer(settings: Settings) -> tuple[int, bytes, dict]:
    message = (
        f"TensorFlow Serving at {settings.upstream} did not answer within {settings.timeout_s:g} s"
    )
    return 504, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}


def unreachable_answer(settings: Settings, problem: Exception) -> tuple[int, bytes, dict]:
    message = f"TensorFlow Serving at {settings.upstream} is unreachable ({problem})"
    return 502, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}


def parse_args(argv: list[str] | None) -> tuple[Settings, str, int]:
    parser = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__)
    parser.add_argument("--upstream", required=True, help="TensorFlow Serving's REST API URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8601, help="port to listen on (0: any free)")
    parser.add_argument("--listen", type=host_and_port, help="HOST:PORT, instead of both")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait upstream")
    parser.add_argument("--max-request-mb", type=float, default=8.0)
    parser.add_argument("--sample-rate", type=float, default=0.0, help="share of predicts kept")
    parser.add_argument(
        "--capture-dir", "--capture", type=Path, help="where capture files are written"
    )
    parser.add_argument("--max-capture-mb", type=float, default=1024.0, help="disk they may use")
    parser.add_argument("--low-confidence", type=float, default=0.5)
    parser.add_argument(
        "--label-ttl", type=float, default=10.0, help="seconds a label's version is cached"
    )
    args = parser.parse_args(argv)
    if not args.upstream.startswith(("http://", "https://")):
        raise StageError(f"--upstream {args.upstream} is not http:// or https://")
    if not 0.0 <= args.sample_rate <= 1.0:
        raise StageError(f"--sample-rate {args.sample_rate} is not between 0 and 1")
    if args.sample_rate > 0 and args.capture_dir is None:
        raise StageError("--sample-rate needs --capture-dir, where the captures go")
    settings = Settings(
        upstream=args.upstream.rstrip("/"),
        timeout_s=args.timeout,
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        sample_rate=args.sample_rate,
        capture_dir=args.capture_dir,
        max_capture_bytes=int(args.max_capture_mb * (1 << 20)),
        low_confidence=args.low_confidence,
        label_ttl_s=args.label_ttl,
    )
    host, port = args.listen or (args.host, args.port)
    return settings, host, port


def host_and_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


async def serve(settings: Settings, host: str, port: int) -> None:
    runner = web.AppRunner(Gateway(settings).application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the port chosen when --port is 0
    gc.freeze()  # what start-up made lives as long as the process: no collection looks at it
    print(
        f"gateway: listening on http://{host}:{bound}, forwarding to {settings.upstream}",
        flush=True,
    )
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):  # stop cleanly: the open capture closed
        asyncio.get_running_loop().add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    settings, host, port = parse_args(argv)
    try:
        asyncio.run(serve(settings, host, port))
    except OSError as error:
        raise StageError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None


if __name__ == "__main__":
    run_stage("gateway", main)
