"""A load test of the gateway in front of TensorFlow Serving; write GATEWAY.md.

    .venv/bin/python -m benchmarks.gateway [--requests 8000] [--concurrency 32]

The upstream is ``testbed/tf_serving.py`` in a process of its own (TensorFlow Serving's REST API,
the model run in a TF1 session as the real server's loader does; the real binary is not
installable here), serving a package with the pipeline's signature. The load generator (asyncio
and aiohttp, ``--concurrency`` requests in flight) sends the same predict requests, one image of
random pixels each (new for each request: what compresses worst), straight to the server and
through the gateway capturing every one (``--sample-rate 1.0``, the worst case), in alternating
rounds so that a change in the machine's speed affects both alike. It checks that no request is
lost and that every answer through the gateway is byte for byte the server's own; it reports
throughput, p50 and p99 latency of both, the gateway's resident memory as the run goes (read from
``/proc``), and a last round with the capture's disk budget exhausted (every capture dropped):
every request must still be answered. The bucket is not on the request's path at all (the
uploader, ``serving.upload_captures``, is a separate process), so a bucket that is down cannot
touch a request. Bounded: ``--requests`` per path, each request with a 30 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.machine import busy_note, cpu_model
from classifier.errors import run_stage
from testbed.gateway import GatewayProcess
from testbed.repo import REPO_ROOT

REPORT = Path(__file__).with_name("GATEWAY.md")
PATH = "/v1/models/mnist/labels/stable:predict"
ROUNDS = 8  # direct and gateway take turns, this many rounds each
TARGETS = {"added p99 ms": 5.0, "throughput ratio": 0.8}


def package(directory: Path) -> Path:
    import keras

    import classifier  # noqa: F401 (the CPU recipe, before TensorFlow)
    from classifier.export import export_savedmodel

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    export_savedmodel(model, directory, tuple(str(digit) for digit in range(10)))
    return directory


class Upstream:
    """``python -m testbed.tf_serving`` in its own process."""

    def __init__(self, version: Path):
        command = [
            sys.executable, "-m", "testbed.tf_serving", "--model", "mnist",
            "--version", f"1={version}", "--label", "stable=1",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self.process.stdout.readline()
        if not line.startswith("tf_serving: listening on "):
            self.process.kill()
            raise RuntimeError(f"the upstream did not start: {line!r}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class Load:
    """What one path answered: per request, status, body and seconds; the round's wall time."""

    statuses: list[int] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> Load:
    """Every body POSTed to ``url`` with ``concurrency`` in flight, answers in the bodies' order."""
    load = Load([0] * len(bodies), [b""] * len(bodies), [0.0] * len(bodies))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            began = time.perf_counter()
            try:
                async with session.post(url, data=bodies[index], headers=headers) as answer:
                    load.answers[index] = await answer.read()
                    load.statuses[index] = answer.status
            except (aiohttp.ClientError, TimeoutError):
                load.statuses[index] = -1  # lost
            load.seconds[index] = time.perf_counter() - began

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        load.wall_s = time.perf_counter() - began
    return load


class MemorySampler:
    """A process's resident memory (``VmRSS``), sampled every 50 ms while running."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.stopping = pid, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def read(self, field_name: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
        return 0.0

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            self.samples.append(self.read("VmRSS"))

    def stop(self) -> tuple[list[float], float]:
        """The samples and the peak (``VmHWM``)."""
        peak = self.read("VmHWM")
        self.stopping.set()
        self.thread.join()
        return self.samples, peak


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dropped_captures(gateway: GatewayProcess, expected: int) -> float:
    """The captures the gateway dropped, once it has counted ``expected`` (it counts just after
    answering), or whatever it counted after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        dropped = sum(
            sample.value
            for family in text_string_to_metric_families(gateway.metrics_text())
            for sample in family.samples
            if sample.name == "gateway_capture_dropped_total"
        )
        if dropped >= expected or time.monotonic() > deadline:
            return dropped
        time.sleep(0.05)


def measure(requests: int, concurrency: int) -> dict:
    rng = np.random.default_rng(0)
    bodies = [
        f'{{"instances": {rng.integers(0, 256, (1, 28, 28, 1)).tolist()}}}'.encode()
        for _ in range(requests)
    ]
    chunks = np.array_split(np.arange(requests), ROUNDS)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        upstream = Upstream(package(root / "1"))
        started: list[GatewayProcess] = []
        try:  # everything started is stopped, whatever fails
            capture = ("--sample-rate", "1.0", "--capture-dir")
            started.append(GatewayProcess("--upstream", upstream.url, *capture, str(root / "cap")))
            full = (*capture, str(root / "full"), "--max-capture-mb", "0.001")
            started.append(GatewayProcess("--upstream", upstream.url, *full))
            gateway, disk_full = started
            for url in (upstream.url, gateway.url):  # warm up both paths
                asyncio.run(send_all(url + PATH, bodies[:50], concurrency))
            memory = MemorySampler(gateway.process.pid)
            loads: dict[str, list[Load]] = {"direct": [], "gateway": []}
            cpu_before = cpu_seconds(gateway.process.pid)
            for chunk in chunks:
                part = [bodies[i] for i in chunk]
                for name, url in (("direct", upstream.url), ("gateway", gateway.url)):
                    loads[name].append(asyncio.run(send_all(url + PATH, part, concurrency)))
            gateway_cpu_s = cpu_seconds(gateway.process.pid) - cpu_before
            samples, peak = memory.stop()
            quarter = bodies[: max(requests // 4, 1)]
            full_load = asyncio.run(send_all(disk_full.url + PATH, quarter, concurrency))
            dropped = dropped_captures(disk_full, len(quarter))
        finally:
            for process in started:
                process.stop()
            upstream.stop()
        captured = sum(p.stat().st_size for p in (root / "cap").rglob("*.jsonl.gz"))
    results = summarize(loads, bodies, samples, peak, full_load, dropped, captured)
    results["gateway_cpu_ms_per_request"] = gateway_cpu_s * 1000 / requests
    return results


def merged(rounds: list[Load]) -> Load:
    return Load(
        [s for r in rounds for s in r.statuses],
        [a for r in rounds for a in r.answers],
        [s for r in rounds for s in r.seconds],
        sum(r.wall_s for r in rounds),
    )


def summarize(
    loads: dict[str, list[Load]],
    bodies: list[bytes],
    samples: list[float],
    peak: float,
    full_load: Load,
    dropped: float,
    captured: int,
) -> dict:
    direct, gateway = merged(loads["direct"]), merged(loads["gateway"])
    paths = {}
    for name, load in (("direct", direct), ("gateway, capture 1.0", gateway)):
        p50, p99 = np.percentile(np.array(load.seconds) * 1000, [50, 99])
        paths[name] = {
            "answered": sum(status == 200 for status in load.statuses),
            "lost": sum(status != 200 for status in load.statuses),
            "per_second": len(load.statuses) / load.wall_s,
            "p50_ms": float(p50),
            "p99_ms": float(p99),
        }
    quarters = np.array_split(np.array(samples or [0.0]), 4)
    added_p99 = [  # per round: the two paths ran back to back, on the same machine's mood
        float(np.percentile(g.seconds, 99) - np.percentile(d.seconds, 99)) * 1000
        for d, g in zip(loads["direct"], loads["gateway"], strict=True)
    ]
    return {
        "requests": len(bodies),
        "paths": paths,
        "added_p99_ms_by_round": added_p99,
        "different_answers": sum(
            a != b for a, b in zip(direct.answers, gateway.answers, strict=True)
        ),
        "memory_mb_by_quarter": [float(q.mean()) if len(q) else 0.0 for q in quarters],
        "memory_peak_mb": peak,
        "disk_full": {
            "requests": len(full_load.statuses),
            "answered": sum(status == 200 for status in full_load.statuses),
            "same_as_direct": sum(
                a == b for a, b in zip(full_load.answers, direct.answers, strict=False)
            ),
            "captures_dropped": dropped,
        },
        "capture_bytes_per_request": captured / (len(bodies) + 50),
    }


def verdicts(results: dict) -> dict[str, tuple[float, bool]]:
    direct, gateway = results["paths"]["direct"], results["paths"]["gateway, capture 1.0"]
    added = gateway["p99_ms"] - direct["p99_ms"]
    ratio = gateway["per_second"] / direct["per_second"]
    memory = results["memory_mb_by_quarter"]
    growth = memory[-1] - memory[0]
    return {
        "added p99 ms (whole run)": (added, added <= TARGETS["added p99 ms"]),
        "throughput ratio": (ratio, ratio >= TARGETS["throughput ratio"]),
        "memory growth MB (first to last quarter)": (growth, growth <= 20),
    }


def write_report(results: dict, concurrency: int, load: float, report: Path) -> None:
    rows = "\n".join(
        f"| {name} | {p['answered']} | {p['lost']} | {p['per_second']:.0f} | {p['p50_ms']:.2f} |"
        f" {p['p99_ms']:.2f} |"
        for name, p in results["paths"].items()
    )
    goals = "\n".join(
        f"| {name} | {value:.2f} | {'met' if met else '**not met**'} |"
        for name, (value, met) in verdicts(results).items()
    )
    direct, gateway = results["paths"]["direct"], results["paths"]["gateway, capture 1.0"]
    memory = ", ".join(f"{mb:.0f}" for mb in results["memory_mb_by_quarter"])
    full = results["disk_full"]
    requests = results["requests"]
    report.write_text(
        f"""# The gateway under load

`.venv/bin/python -m benchmarks.gateway --requests {requests} --concurrency {concurrency}` on
{cpu_model()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}: the load generator, the
gateway and the upstream (`testbed/tf_serving.py`, TensorFlow Serving's REST API, the SavedModel in
a TF1 session, its own process) share the machine. {requests} predict requests of one 28x28 image
of random pixels per path, {concurrency} in flight, direct and through the gateway capturing every
request, in {ROUNDS} alternating rounds.
{busy_note(load)}
| path | answered | lost | requests/s | p50 ms | p99 ms |
|---|---|---|---|---|---|
{rows}

Answers through the gateway that differ from the server's own for the same request:
**{results["different_answers"]}** of {requests}. The gateway adds
{gateway["p50_ms"] - direct["p50_ms"]:.2f} ms at the median and
{gateway["p99_ms"] - direct["p99_ms"]:.2f} ms at p99 over the whole run (the p99 of all
{requests} requests of each path, the rounds interleaved; round by round, {requests // ROUNDS}
requests each: {", ".join(f"{ms:+.1f}" for ms in results["added_p99_ms_by_round"])} ms), and keeps
{gateway["per_second"] / direct["per_second"]:.0%} of the server's throughput, using
{results["gateway_cpu_ms_per_request"]:.2f} ms of CPU per request (read from `/proc`).

Targets: added p99 at most {TARGETS["added p99 ms"]:g} ms, throughput at least
{TARGETS["throughput ratio"]:.0%} of the server alone, memory flat (at most 20 MB more in the
last quarter than in the first).

| goal | measured | target |
|---|---|---|
{goals}

The gateway's resident memory, mean of each quarter of the run: {memory} MB; peak
{results["memory_peak_mb"]:.0f} MB. Captured: {results["capture_bytes_per_request"]:.0f} bytes
per request on disk (gzip JSON lines).

**Capture disk full** (a gateway whose capture budget, `--max-capture-mb 0.001`, is used up):
{full["answered"]} of {full["requests"]} requests answered, {full["same_as_direct"]} answers the
server's own, {full["captures_dropped"]:.0f} captures dropped and counted
(`gateway_capture_dropped_total`).
"""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--requests", type=int, default=8000, help="per path")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--out", type=Path, default=REPORT, help="the report (Markdown)")
    args = parser.parse_args(argv)
    results = measure(args.requests, args.concurrency)
    write_report(results, args.concurrency, os.getloadavg()[0], args.out)
    print(args.out.read_text())
    if results["different_answers"] or any(p["lost"] for p in results["paths"].values()):
        raise SystemExit("gateway: requests lost or answers changed; see the report")


if __name__ == "__main__":
    run_stage("gateway", main)
