"""serving.gateway in front of a server answering TensorFlow Serving's documented REST API
(testbed/tf_serving.py, running real SavedModels in TF1 sessions): requests forwarded unchanged,
the server's errors passed through, its own errors in the same JSON, Prometheus metrics per
model, label and version (read with prometheus_client's own parser), and captures on disk that
never fail a request."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.capture import CaptureFiles, read_records, record_line, request_instances
from testbed.gateway import GatewayProcess, call
from testbed.tf_serving import FakeTensorFlowServing

CLASSES = tuple(str(digit) for digit in range(10))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTensorFlowServing]:
    """Versions 2 and 3 of tiny models with the pipeline's signature; stable 2, canary 3."""
    import keras

    from classifier.export import export_savedmodel

    root = tmp_path_factory.mktemp("versions")
    versions = {}
    for version in (2, 3):
        keras.utils.set_random_seed(version)
        model = keras.Sequential(
            [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
        )
        export_savedmodel(model, root / str(version), CLASSES)
        versions[version] = root / str(version)
    server = FakeTensorFlowServing("mnist", versions, {"stable": 2, "canary": 3}).start()
    yield server
    server.stop()


class Gateway(GatewayProcess):
    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample: (name, sorted labels) -> value, read by prometheus_client's parser."""
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(self.metrics_text())
            for sample in family.samples
        }


@pytest.fixture
def gateway(upstream: FakeTensorFlowServing, tmp_path: Path) -> Iterator:
    started = []

    def start(*args: str) -> Gateway:
        started.append(Gateway("--upstream", upstream.url, *args))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def digits(count: int, seed: int = 0) -> list:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1)).tolist()


def settle(gateway: Gateway, name: str, labels: dict, expected: float) -> dict:
    """Metrics are counted just after each answer: wait (bounded) until they show it."""
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + 10
    while True:
        metrics = gateway.metrics()
        if metrics.get(key) == expected or time.monotonic() > deadline:
            return metrics


def test_requests_and_answers_pass_through_unchanged(upstream, gateway) -> None:
    proxy = gateway()
    predict = {"signature_name": "serving_default", "instances": digits(3)}
    for path, body in (
        ("/v1/models/mnist/labels/canary:predict", predict),
        ("/v1/models/mnist/versions/2:predict", predict),
        ("/v1/models/mnist/labels/stable", None),
        ("/v1/models/mnist/versions/3/metadata", None),
        ("/v1/models/mnist/labels/beta", None),  # the server's own 404 and error body
        ("/v1/models/mnist:predict", b"{not json"),
    ):
        assert proxy.call(path, body) == call(upstream.url + path, body), path


def test_metrics_per_model_label_and_version(upstream, gateway) -> None:
    proxy = gateway()
    blank = np.zeros((2, 28, 28, 1), np.uint8).tolist()  # no evidence: 10% for every class
    canary_path = "/v1/models/mnist/labels/canary:predict"
    for _ in range(3):
        assert proxy.call(canary_path, {"instances": blank})[0] == 200
    assert proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(1)})[0] == 200
    assert proxy.call("/v1/models/mnist/labels/beta:predict", {"instances": digits(1)})[0] == 404

    def key(name: str, **labels: str) -> tuple[str, tuple]:
        return name, tuple(sorted({"model": "mnist", **labels}.items()))

    canary = {"label": "canary", "version": "3", "api": "predict"}
    beta = {"label": "beta", "version": "unknown", "api": "predict", "code": "404"}
    metrics = settle(proxy, "gateway_requests_total", dict(key("", **beta)[1]), 1.0)  # the last
    assert metrics[key("gateway_requests_total", **canary, code="200")] == 3
    stable = {"label": "stable", "version": "2", "api": "predict", "code": "200"}
    assert metrics[key("gateway_requests_total", **stable)] == 1
    assert metrics[key("gateway_requests_total", **beta)] == 1
    assert metrics[key("gateway_request_seconds_count", **canary)] == 3
    by_class = {
        dict(labels)["class_name"]: value
        for (name, labels), value in metrics.items()
        if name == "gateway_predicted_class_total" and dict(labels)["version"] == "3"
    }
    assert by_class == {"0": 6}  # 3 requests of 2 blank images: 10% each, the first class
    low = key("gateway_low_confidence_predictions_total", label="canary", version="3")
    assert metrics[low] == 6  # 0.1, below the default 0.5
    assert key("gateway_low_confidence_predictions_total", label="stable", version="2") not in (
        metrics
    )  # random pixels: an untrained model is sure of itself


def test_a_sample_is_captured_with_its_predictions(upstream, gateway, tmp_path: Path) -> None:
    proxy = gateway("--sample-rate", "1.0", "--capture-dir", str(tmp_path / "captures"))
    images = digits(2, seed=7)
    pretty = json.dumps({"instances": images}, indent=2).encode()  # line breaks, as a user may
    status, answer = proxy.call("/v1/models/mnist/labels/stable:predict", pretty)
    assert status == 200
    settle(proxy, "gateway_captured_requests_total", {"model": "mnist"}, 1.0)
    stderr = proxy.stop()  # closes the open file
    files = sorted((tmp_path / "captures").rglob("*.gz"))
    assert [path.parent.relative_to(tmp_path) for path in files] == [
        Path("captures/mnist/closed")
    ], stderr[-3000:]
    (closed,) = files
    (record,) = read_records(closed)
    assert record["model"] == "mnist" and record["label"] == "stable" and record["version"] == 2
    assert record["status"] == 200 and record["latency_ms"] > 0
    assert record["request"] == {"instances": images}  # the body as sent, in one line
    predictions = json.loads(answer)["predictions"]
    assert [p["class_index"] for p in record["predictions"]] == [
        p["class_index"] for p in predictions
    ]
    assert record["predictions"][0]["confidence"] == pytest.approx(
        max(predictions[0]["probabilities"])
    )


def test_no_sample_no_capture(upstream, gateway, tmp_path: Path) -> None:
    proxy = gateway("--sample-rate", "0", "--capture-dir", str(tmp_path / "captures"))
    assert proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(1)})[0] == 200
    proxy.stop()
    assert not (tmp_path / "captures").exists() or not any((tmp_path / "captures").rglob("*.gz"))


def test_a_capture_that_cannot_be_written_never_fails_a_request_and_resumes(
    upstream, gateway, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "mnist").write_text("a file where the model's folder goes")  # writes fail
    proxy = gateway("--sample-rate", "1.0", "--capture-dir", str(captures))
    for _ in range(2):
        assert (
            proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(1)})[0] == 200
        )
    metrics = settle(proxy, "gateway_capture_dropped_total", {"reason": "write_failed"}, 2.0)
    assert metrics[("gateway_capture_dropped_total", (("reason", "write_failed"),))] == 2
    (captures / "mnist").unlink()  # the disk is fixed: capturing resumes, nothing restarted
    assert proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(1)})[0] == 200
    metrics = settle(proxy, "gateway_captured_requests_total", {"model": "mnist"}, 1.0)
    assert metrics[("gateway_captured_requests_total", (("model", "mnist"),))] == 1


def test_a_write_that_fails_mid_file_starts_a_new_file(tmp_path: Path, monkeypatch) -> None:
    """No space left while a file is open: the record is dropped, the file closed as it is,
    and the next record goes to a new file."""
    drops = []
    files = CaptureFiles(tmp_path, max_bytes=1 << 20, on_drop=drops.append)
    assert files.write({"n": 0})
    broken = files._file

    def full(data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broken, "write", full)
    assert not files.write({"n": 1}) and drops == ["write_failed"]
    assert files.write({"n": 2})
    files.close()
    records = [[r["n"] for r in read_records(path)] for path in files.closed_files()]
    assert sorted(records) == [[0], [2]]


def test_the_gateways_own_errors_are_tf_servings_json(upstream, gateway) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        slow = Gateway("--upstream", f"http://127.0.0.1:{port}", "--timeout", "1")
        try:
            status, body = slow.call("/v1/models/mnist/labels/stable:predict", {"instances": []})
        finally:
            slow.stop()
    assert status == 504
    assert json.loads(body)["error"].endswith("did not answer within 1 s")
    closed = Gateway("--upstream", f"http://127.0.0.1:{port}")
    try:
        status, body = closed.call("/v1/models/mnist/labels/stable")
    finally:
        closed.stop()
    assert status == 502 and "is unreachable" in json.loads(body)["error"]
    proxy = gateway("--max-request-mb", "0.01")
    status, body = proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(20)})
    assert status == 413 and "send fewer instances per request" in json.loads(body)["error"]
    status, body = proxy.call("/admin")
    assert status == 404 and json.loads(body) == {
        "error": "/admin is not a path of TensorFlow Serving's REST API"
    }


def test_capture_files_rotate_and_keep_to_their_budget(tmp_path: Path) -> None:
    now = [1000.0]
    drops = []
    files = CaptureFiles(tmp_path, max_bytes=10_000, max_records=2, max_age_s=60,
                         clock=lambda: now[0], on_drop=drops.append)  # fmt: skip
    for index in range(5):
        assert files.write({"n": index})
    now[0] += 61  # the open file is due by age
    assert files.write({"n": 5})
    files.close()
    closed = files.closed_files()
    assert [[r["n"] for r in read_records(path)] for path in closed] == [[0, 1], [2, 3], [4], [5]]
    big = {"pixels": list(range(5000))}
    assert not files.write(big) and drops == ["disk_budget"]
    assert files.used_bytes() <= 10_000


def test_the_documented_command_line(upstream, gateway, tmp_path: Path) -> None:
    """``--listen HOST:PORT --capture DIR`` (docs/monitoring.md), metrics at ``/metrics``, and
    what was answered before SIGTERM is captured, every request of a burst."""
    proxy = gateway("--listen", "127.0.0.1:0", "--capture", str(tmp_path), "--sample-rate", "1")
    assert proxy.url.startswith("http://127.0.0.1:")
    for _ in range(40):
        proxy.call("/v1/models/mnist/labels/stable:predict", {"instances": digits(1)})
    assert call(proxy.url + "/metrics")[1].decode().count("gateway_requests_total{") == 1
    proxy.stop()
    captured = [read_records(path) for path in sorted(tmp_path.rglob("*.jsonl.gz"))]
    assert sum(len(records) for records in captured) == 40


def test_a_request_is_spliced_into_its_line_as_sent_and_read_in_either_format() -> None:
    images = digits(1)
    row = json.dumps({"signature_name": "serving_default", "instances": images}, indent=1)
    columnar = json.dumps({"inputs": {"image": images}}).encode()
    lines = [record_line({"n": 1}, row.encode()), record_line({"n": 2}, columnar)]
    assert all(line.count(b"\n") == 1 and line.endswith(b"\n") for line in lines)
    records = [json.loads(line) for line in lines]
    assert records[0]["request"]["signature_name"] == "serving_default"
    assert [request_instances(record) for record in records] == [images, images]
    assert request_instances({"n": 3}) == []
    assert request_instances({"instances": images}) == images  # a record of the earlier format
