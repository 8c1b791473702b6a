"""A load test of the gateway in front of TensorFlow Serving; write GATEWAY.md.

    .venv/bin/python -m benchmarks.gateway [--requests 8000] [--concurrency 32]

The upstream is ``testbed/tf_serving.py`` in a process of its own (TensorFlow Serving's REST API,
the model run in a TF1 session as the real server's loader does; the real binary is not
installable here), serving a package with the pipeline's signature. The load generator (asyncio
and aiohttp, ``--concurrency`` connections per path, kept open for the whole run) sends the same
predict requests, one image of random pixels each (new for each request: what compresses worst),
straight to the server and through the gateway capturing every one (``--sample-rate 1.0``, the
worst case), in alternating rounds so that a change in the machine's speed affects both alike:
first saturated (each connection sends as soon as it is answered: the issue's targets), then at
a fixed rate, half the server's throughput (latency counted from when each request was due),
then in front of ``testbed/instant_serving.py``, which answers at once (the gateway's own
ceiling). It checks that no request is lost and that every answer through the gateway is byte for
byte the server's own; it reports throughput, p50 and p99 latency of each path, the gateway's CPU
per request and resident memory as the run goes (read from ``/proc``), and a last round with the
capture's disk budget exhausted (every capture dropped): every request must still be answered.
The bucket is not on the request's path at all (the uploader, ``serving.upload_captures``, is a
separate process), so a bucket that is down cannot touch a request. Bounded: ``--requests`` per
path, each request with a 30 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
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
PACED_SHARE = 0.5  # the fixed rate's share of the server's saturated throughput
START_TIMEOUT_S = 120  # for a server to say where it listens (TensorFlow loads first)
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


class Server:
    """``python -m testbed.<module> ARGS`` in its own process, once it says where it listens."""

    def __init__(self, module: str, *args: str):
        command = [sys.executable, "-m", f"testbed.{module}", *args]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith(f"{module}: listening on "):
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"testbed.{module} did not start: {line!r}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def stop_all(started: list[GatewayProcess | Server]) -> None:
    """Stop every process, the last started first; one that does not stop in time is killed, and
    the others are still stopped."""
    for server in reversed(started):
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@dataclass
class Load:
    """What one path answered: per request, status, body and seconds; the round's wall time."""

    statuses: list[int] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def send_all(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    concurrency: int,
    rate: float | None = None,
) -> Load:
    """Every body POSTed to ``url`` by ``concurrency`` senders, answers in the bodies' order.

    ``rate`` None: each sender sends its next request as soon as its last is answered (a closed
    loop; at this concurrency the server is saturated). ``rate`` in requests/s: request ``i`` is
    due ``i / rate`` s after the start, and its latency counts from then, not from when a sender
    was free to send it, so a stall is not hidden by the requests it delayed (wrk2's correction
    for coordinated omission)."""
    load = Load([0] * len(bodies), [b""] * len(bodies), [0.0] * len(bodies))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()

    async def sender() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            began = time.perf_counter() if rate is None else start + index / rate
            await asyncio.sleep(max(0.0, began - time.perf_counter()))
            try:
                async with session.post(url, data=bodies[index], headers=headers) as answer:
                    load.answers[index] = await answer.read()
                    load.statuses[index] = answer.status
            except (aiohttp.ClientError, TimeoutError):
                load.statuses[index] = -1  # lost
            load.seconds[index] = time.perf_counter() - began

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    load.wall_s = time.perf_counter() - start
    return load


def client(concurrency: int) -> aiohttp.ClientSession:
    """A client's connection pool, kept for the whole run as a real client keeps it: opening
    connections is not what is measured (the stand-in starts a thread for each, up to 300 ms)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    )


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


async def rounds(
    clients: dict[str, aiohttp.ClientSession],
    urls: dict[str, str],
    bodies: list[bytes],
    concurrency: int,
    rate: float | None,
) -> dict[str, list[Load]]:
    """The bodies in ``ROUNDS`` parts, each sent on every path in turn, so that a change in the
    machine's speed affects all paths alike."""
    loads: dict[str, list[Load]] = {name: [] for name in urls}
    for chunk in np.array_split(np.arange(len(bodies)), ROUNDS):
        part = [bodies[i] for i in chunk]
        for name, url in urls.items():
            loads[name].append(await send_all(clients[name], url + PATH, part, concurrency, rate))
    return {name: merged(parts) for name, parts in loads.items()}


@contextlib.asynccontextmanager
async def warm_pools(
    urls: dict[str, str], bodies: list[bytes], concurrency: int
) -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    """A client pool per path, every connection of each open before anything is measured."""
    async with client(concurrency) as direct, client(concurrency) as through:
        clients = {"direct": direct, "gateway": through}
        for name, url in urls.items():
            await send_all(clients[name], url + PATH, bodies[: concurrency * 4], concurrency)
        yield clients


async def drive(
    urls: dict[str, str],
    disk_full_url: str,
    gateway_pid: int,
    bodies: list[bytes],
    concurrency: int,
) -> dict:
    """Saturated rounds (the gateway's memory and CPU measured over them), then rounds at
    ``PACED_SHARE`` of the server's saturated throughput, then the disk-full gateway."""
    async with warm_pools(urls, bodies, concurrency) as clients:
        memory = MemorySampler(gateway_pid)
        cpu_before = cpu_seconds(gateway_pid)
        saturated = await rounds(clients, urls, bodies, concurrency, None)
        cpu_s = cpu_seconds(gateway_pid) - cpu_before
        samples, peak = memory.stop()
        rate = PACED_SHARE * len(bodies) / saturated["direct"].wall_s
        paced = await rounds(clients, urls, bodies[: len(bodies) // 2], concurrency, rate)
    quarter = bodies[: max(len(bodies) // 4, 1)]
    async with client(concurrency) as session:
        full_load = await send_all(session, disk_full_url + PATH, quarter, concurrency)
    return {
        "saturated": saturated,
        "paced": paced,
        "rate": rate,
        "gateway_cpu_ms_per_request": cpu_s * 1000 / len(bodies),
        "memory": (samples, peak),
        "full_load": full_load,
        "gateway_requests": min(concurrency * 4, len(bodies)) + len(bodies) + len(bodies) // 2,
    }


async def ceiling(
    urls: dict[str, str], gateway_pid: int, bodies: list[bytes], concurrency: int
) -> dict:
    """Saturated rounds in front of the instant server: the gateway's own limit, and its CPU
    per request there."""
    async with warm_pools(urls, bodies, concurrency) as clients:
        cpu_before = cpu_seconds(gateway_pid)
        loads = await rounds(clients, urls, bodies, concurrency, None)
        cpu_s = cpu_seconds(gateway_pid) - cpu_before
    return {**loads, "gateway_cpu_ms_per_request": cpu_s * 1000 / len(bodies)}


def measure(requests: int, concurrency: int) -> dict:
    """Start the servers and gateways, run every phase, stop them all; the summary."""
    rng = np.random.default_rng(0)
    bodies = [
        f'{{"instances": {rng.integers(0, 256, (1, 28, 28, 1)).tolist()}}}'.encode()
        for _ in range(requests)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        capture = ("--sample-rate", "1.0", "--capture-dir")
        started: list[GatewayProcess | Server] = []
        try:  # everything started is stopped, whatever fails
            version = package(root / "1")
            server = Server("tf_serving", "--model", "mnist", "--version", f"1={version}",
                            "--label", "stable=1")  # fmt: skip
            started.append(server)
            gateway = GatewayProcess("--upstream", server.url, *capture, str(root / "cap"))
            started.append(gateway)
            full = (*capture, str(root / "full"), "--max-capture-mb", "0.001")
            disk_full = GatewayProcess("--upstream", server.url, *full)
            started.append(disk_full)
            urls = {"direct": server.url, "gateway": gateway.url}
            run = asyncio.run(drive(urls, disk_full.url, gateway.process.pid, bodies, concurrency))
            dropped = dropped_captures(disk_full, len(run["full_load"].statuses))
            answer = root / "answer.json"  # the real model's answer, replayed at once
            answer.write_bytes(run["saturated"]["direct"].answers[0])
            instant = Server("instant_serving", "--answer", str(answer))
            started.append(instant)
            in_front = GatewayProcess("--upstream", instant.url, *capture, str(root / "cap-2"))
            started.append(in_front)
            urls = {"direct": instant.url, "gateway": in_front.url}
            half = bodies[: len(bodies) // 2]
            run["ceiling"] = asyncio.run(ceiling(urls, in_front.process.pid, half, concurrency))
        finally:
            stop_all(started)
        captured = sum(p.stat().st_size for p in (root / "cap").rglob("*.jsonl.gz"))
    return summarize(run, bodies, dropped, captured)


def merged(parts: list[Load]) -> Load:
    """The rounds of one path as one load."""
    return Load(
        [s for r in parts for s in r.statuses],
        [a for r in parts for a in r.answers],
        [s for r in parts for s in r.seconds],
        sum(r.wall_s for r in parts),
    )


def path_summary(load: Load) -> dict:
    """What the report says of one path in one phase."""
    p50, p99 = np.percentile(np.array(load.seconds) * 1000, [50, 99])
    return {
        "sent": len(load.statuses),
        "answered": sum(status == 200 for status in load.statuses),
        "lost": sum(status != 200 for status in load.statuses),
        "per_second": len(load.statuses) / load.wall_s,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
    }


def summarize(run: dict, bodies: list[bytes], dropped: float, captured: int) -> dict:
    """The run's numbers, as the report and the verdicts read them."""
    phases = {}
    for phase in ("saturated", "paced", "ceiling"):
        direct, gateway = run[phase]["direct"], run[phase]["gateway"]
        phases[phase] = {
            "direct": path_summary(direct),
            "gateway": path_summary(gateway),
            "different_answers": sum(
                a != b for a, b in zip(direct.answers, gateway.answers, strict=True)
            ),
        }
    phases["ceiling"]["gateway_cpu_ms_per_request"] = run["ceiling"]["gateway_cpu_ms_per_request"]
    samples, peak = run["memory"]
    quarters = np.array_split(np.array(samples or [0.0]), 4)
    full_load, direct_answers = run["full_load"], run["saturated"]["direct"].answers
    return {
        "requests": len(bodies),
        "phases": phases,
        "rate": run["rate"],
        "gateway_cpu_ms_per_request": run["gateway_cpu_ms_per_request"],
        "memory_mb_by_quarter": [float(q.mean()) if len(q) else 0.0 for q in quarters],
        "memory_peak_mb": peak,
        "disk_full": {
            "requests": len(full_load.statuses),
            "answered": sum(status == 200 for status in full_load.statuses),
            "same_as_direct": sum(
                a == b for a, b in zip(full_load.answers, direct_answers, strict=False)
            ),
            "captures_dropped": dropped,
        },
        "capture_bytes_per_request": captured / run["gateway_requests"],
    }


def verdicts(results: dict) -> dict[str, tuple[float, bool]]:
    """The issue's targets, on its load test: the saturated run at the given concurrency."""
    direct, gateway = (results["phases"]["saturated"][path] for path in ("direct", "gateway"))
    added = gateway["p99_ms"] - direct["p99_ms"]
    ratio = gateway["per_second"] / direct["per_second"]
    memory = results["memory_mb_by_quarter"]
    growth = memory[-1] - memory[0]
    return {
        "added p99 ms": (added, added <= TARGETS["added p99 ms"]),
        "throughput ratio": (ratio, ratio >= TARGETS["throughput ratio"]),
        "memory growth MB (first to last quarter)": (growth, growth <= 20),
    }


def method(results: dict, concurrency: int) -> str:
    """How the report's numbers were made."""
    requests, instant = results["requests"], results["phases"]["ceiling"]
    command = f"python -m benchmarks.gateway --requests {requests} --concurrency {concurrency}"
    return f"""`.venv/bin/{command}` on
{cpu_model()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}: the load generator, the
gateway and the upstream (`testbed/tf_serving.py`, TensorFlow Serving's REST API, the SavedModel in
a TF1 session, its own process) share the machine. Predict requests of one 28x28 image of random
pixels, {concurrency} connections per path kept open for the whole run (as a client's pool keeps
them), direct and through the gateway capturing every request (sample rate 1.0, the worst case),
the paths taking turns in {ROUNDS} rounds:

- **saturated**: {requests} requests per path, each connection sending its next request as soon
  as its last is answered: the issue's load test, which the targets below are for. With every
  connection always waiting, latency is about connections / throughput (Little's law), so the
  added latency here mostly restates the throughput the gateway costs the server;
- **at {results["rate"]:.0f}/s**: {requests // 2} requests per path at a fixed rate,
  {PACED_SHARE:.0%} of the server's saturated throughput, the latency of each counted from when
  it was due (wrk2's correction: a stall is not hidden by the requests it delayed): the hop's
  own latency on a busy server that is not overloaded, right after the saturated run. No target
  in the issue; its p99 varies from run to run (docs/monitoring.md says what was found);
- **instant server**: {instant["direct"]["sent"]} requests per path, saturated, in front of
  `testbed/instant_serving.py`, which replays the real model's answer at once: the gateway's own
  ceiling. The stand-in spends about a millisecond of Python on each request, far more than
  TensorFlow Serving's C++ server, so in front of it the gateway is never the bottleneck.
"""


def findings(results: dict) -> str:
    """What the tables say, in words."""
    phases = results["phases"]
    saturated, paced, instant = phases["saturated"], phases["paced"], phases["ceiling"]

    def added(values: dict, key: str) -> str:
        return f"{values['gateway'][key] - values['direct'][key]:+.2f} ms"

    different = sum(phase["different_answers"] for phase in phases.values())
    compared = sum(phase["direct"]["sent"] for phase in phases.values())
    ratio = saturated["gateway"]["per_second"] / saturated["direct"]["per_second"]
    return f"""Answers through the gateway that differ from the server's own for the same request:
**{different}** of {compared}. Saturated, the gateway adds {added(saturated, "p50_ms")} at the
median and {added(saturated, "p99_ms")} at p99 (a p99 difference of a few ms either way is within
this test's run-to-run noise) and keeps {ratio:.0%} of the server's throughput, using
{results["gateway_cpu_ms_per_request"]:.2f} ms of CPU per request (read from `/proc`), CPU the
server then lacks on these {os.cpu_count()} cores. At {results["rate"]:.0f}/s it adds
{added(paced, "p50_ms")} at the median and {added(paced, "p99_ms")} at p99. In front of the
instant server one gateway process carries **{instant["gateway"]["per_second"]:.0f}
requests/s** (the server alone {instant["direct"]["per_second"]:.0f}/s), with
{instant["gateway_cpu_ms_per_request"]:.2f} ms of CPU per request, the load generator beside it.
"""


def write_report(results: dict, concurrency: int, load: float, report: Path) -> None:
    """GATEWAY.md: how it was run, each phase's table, the targets, memory, the full disk."""
    loads = (
        ("saturated", "saturated"),
        (f"{results['rate']:.0f}/s", "paced"),
        ("instant server, saturated", "ceiling"),
    )
    rows = "\n".join(
        f"| {label} | {name} | {p['answered']} | {p['lost']} | {p['per_second']:.0f} |"
        f" {p['p50_ms']:.2f} | {p['p99_ms']:.2f} |"
        for label, phase in loads
        for name in ("direct", "gateway")
        for p in (results["phases"][phase][name],)
    )
    goals = "\n".join(
        f"| {name} | {value:.2f} | {'met' if met else '**not met**'} |"
        for name, (value, met) in verdicts(results).items()
    )
    memory = ", ".join(f"{mb:.0f}" for mb in results["memory_mb_by_quarter"])
    full = results["disk_full"]
    report.write_text(
        f"""# The gateway under load

{method(results, concurrency)}{busy_note(load)}
| load | path | answered | lost | requests/s | p50 ms | p99 ms |
|---|---|---|---|---|---|---|
{rows}

{findings(results)}
Targets (saturated): added p99 at most {TARGETS["added p99 ms"]:g} ms, throughput at least
{TARGETS["throughput ratio"]:.0%} of the server alone, memory flat (at most 20 MB more in the
last quarter of the saturated run than in the first).

| goal | measured | target |
|---|---|---|
{goals}

The gateway's resident memory, mean of each quarter of the saturated run: {memory} MB; peak
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
    parser.add_argument("--requests", type=int, default=8000, help="per path, saturated")
    parser.add_argument("--concurrency", type=int, default=32, help="connections per path")
    parser.add_argument("--out", type=Path, default=REPORT, help="the report (Markdown)")
    args = parser.parse_args(argv)
    if args.requests < 2 * ROUNDS:
        parser.error(f"--requests {args.requests}: at least {2 * ROUNDS}, some in every round")
    results = measure(args.requests, args.concurrency)
    write_report(results, args.concurrency, os.getloadavg()[0], args.out)
    print(args.out.read_text())
    phases = results["phases"].values()
    if any(p["different_answers"] or p["direct"]["lost"] or p["gateway"]["lost"] for p in phases):
        raise SystemExit("gateway: requests lost or answers changed; see the report")


if __name__ == "__main__":
    run_stage("gateway", main)
