"""What the gateway in front of TensorFlow Serving costs a request; write GATEWAY.md.

    .venv/bin/python -m benchmarks.gateway [--requests 300]

One upstream (``testbed/tf_serving.py``: TensorFlow Serving's REST API, the model run in a TF1
session, as the real server's loader does; the real binary is not installable here), a package
with the pipeline's signature, and sequential predict requests of one image: straight to the
server, through the gateway capturing nothing, and through the gateway capturing every request
(``--sample-rate 1.0``). The requests of the three kinds are interleaved, so a change in the
machine's speed affects them alike. Reports p50 and p99 latency of each and the capture's bytes
per request on disk. The upstream here answers in milliseconds; a real server's latency only
adds to all three alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.machine import busy_note, cpu_model
from testbed.gateway import GatewayProcess, call
from testbed.tf_serving import FakeTensorFlowServing

REPORT = Path(__file__).with_name("GATEWAY.md")
PATH = "/v1/models/mnist/labels/stable:predict"


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


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return float(p50), float(p99)


def timed(targets: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Seconds of each predict request, per target, the targets taking turns."""
    rng = np.random.default_rng(0)  # random pixels, new for each request: compress worst
    body = {"instances": rng.integers(0, 256, (1, 28, 28, 1)).tolist()}
    times: dict[str, list[float]] = {name: [] for name in targets}
    for url in targets.values():  # warm up each path
        assert call(url + PATH, body)[0] == 200
    for _ in range(requests):
        body = {"instances": rng.integers(0, 256, (1, 28, 28, 1)).tolist()}
        for name, url in targets.items():
            began = time.perf_counter()
            status, _ = call(url + PATH, body)
            times[name].append(time.perf_counter() - began)
            assert status == 200
    return times


def measure(requests: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        server = FakeTensorFlowServing("mnist", {1: package(root / "1")}, {"stable": 1}).start()
        started: list[GatewayProcess] = []
        try:  # everything started is stopped, whatever fails
            started.append(GatewayProcess("--upstream", server.url))
            started.append(
                GatewayProcess(
                    "--upstream", server.url, "--sample-rate", "1.0",
                    "--capture-dir", str(root / "cap"),
                )
            )  # fmt: skip
            targets = {
                "direct": server.url,
                "gateway": started[0].url,
                "gateway, capture 1.0": started[1].url,
            }
            times = timed(targets, requests)
        finally:
            for process in started:
                process.stop()
            server.stop()
        captured = sum(p.stat().st_size for p in (root / "cap").rglob("*.jsonl.gz"))
    return {
        "latency_ms": {name: percentiles(seconds) for name, seconds in times.items()},
        "mean_ms": {name: statistics.fmean(s) * 1000 for name, s in times.items()},
        "capture_bytes_per_request": captured / (requests + 1),
    }


def write_report(results: dict, requests: int, load: float, report: Path) -> None:
    rows = "\n".join(
        f"| {name} | {p50:.2f} | {p99:.2f} | {results['mean_ms'][name]:.2f} |"
        for name, (p50, p99) in results["latency_ms"].items()
    )
    direct = results["latency_ms"]["direct"][0]
    report.write_text(
        f"""# The gateway's cost per request

`.venv/bin/python -m benchmarks.gateway --requests {requests}` on {cpu_model()},
{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}. {requests} sequential predict requests of
one 28x28 image of random pixels (new for each request) per path, interleaved; the upstream is
`testbed/tf_serving.py` (TensorFlow Serving's REST API, the SavedModel run in a TF1 session).
{busy_note(load)}
| path | p50 ms | p99 ms | mean ms |
|---|---|---|---|
{rows}

The gateway adds {results["latency_ms"]["gateway"][0] - direct:.2f} ms at the median
({results["latency_ms"]["gateway, capture 1.0"][0] - direct:.2f} ms capturing every request: the
capture is written after the answer, off the request's path). A captured request of one image
of random pixels (what compresses worst) takes {results["capture_bytes_per_request"]:.0f} bytes on
disk (gzip JSON lines).
"""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPORT, help="the report (Markdown)")
    args = parser.parse_args(argv)
    results = measure(args.requests)
    write_report(results, args.requests, os.getloadavg()[0], args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
