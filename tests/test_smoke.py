"""serving.smoke, the live check after a deploy, against a server answering TensorFlow Serving's
documented REST API on 127.0.0.1 (testbed/tf_serving.py: the real binary cannot be installed
here). The package is the suite's small pipeline run's, released as ``ci_jobs.release`` would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_jobs import release
from serving.manifest import describe_bytes, render
from testbed.repo import REPO_ROOT
from testbed.suite import RanPipeline
from testbed.tf_serving import FakeTensorFlowServing

COMMIT = "a" * 40


def released(package: Path, version: int, target: Path) -> Path:
    """``package`` as the release publishes it as ``version``, synced to ``target``."""
    files = release.release_files(release.package_files(package), version, COMMIT, b"lock\n")
    files["MANIFEST.json"] = render("mnist", version, describe_bytes(files))
    for name, body in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(body)
    return target


@pytest.fixture(scope="module")
def models(ran_pipeline: RanPipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run's package released as version 3; a model of the same signature that learned
    nothing; one with another signature."""
    import keras
    import tensorflow as tf

    from classifier.export import export_savedmodel

    root = tmp_path_factory.mktemp("models")
    package = released(ran_pipeline.root / "repo/dist/mnist", 3, root / "mnist/3")
    keras.utils.set_random_seed(5)
    untrained = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    export_savedmodel(untrained, root / "untrained", tuple(str(d) for d in range(10)))
    flat = tf.Module()
    flat.serve = tf.function(
        lambda images: {"probabilities": tf.nn.softmax(images[:, :10])},
        input_signature=[tf.TensorSpec([None, 784], tf.float32, "images")],
    )
    tf.saved_model.save(flat, str(root / "flat"), signatures={"serving_default": flat.serve})
    return {"package": package, "untrained": root / "untrained", "flat": root / "flat"}


@pytest.fixture
def tf_serving() -> Iterator:
    servers = []

    def start(versions: dict[int, Path], labels: dict[str, int]) -> FakeTensorFlowServing:
        servers.append(FakeTensorFlowServing("mnist", versions, labels).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def smoke(url: str, package: Path, *selector: str, timeout: str = "30"):
    command = [sys.executable, "-m", "serving.smoke", "--url", url, "--model", "mnist"]
    command += [*selector, "--package", str(package), "--timeout", timeout]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def card(package: Path) -> dict:
    return json.loads((package / "assets.extra/model_card.json").read_text())


def test_the_right_version_passes_and_reports_accuracy_and_latency(models, tf_serving) -> None:
    package = models["package"]
    server = tf_serving({2: models["untrained"], 3: package}, {"stable": 3, "canary": 2})
    result = smoke(server.url, package, "--label", "stable")
    assert result.returncode == 0, result.stderr
    sample = card(package)["sample"]
    assert sample["images"] == 300
    where = f"{server.url}/v1/models/mnist/labels/stable"
    assert result.stdout.startswith(
        f"smoke: {where}: version 3 AVAILABLE, signature as packaged; accuracy"
        f" {sample['accuracy']:.4f} on 300 sample images (package {sample['accuracy']:.4f});"
        " predict latency p50 "
    )
    assert result.stdout.rstrip().endswith("ms over 6 requests")
    assert server.requests[:2] == [
        "GET /v1/models/mnist/labels/stable",
        "GET /v1/models/mnist/labels/stable/metadata",
    ]
    assert server.requests[2:] == ["POST /v1/models/mnist/labels/stable:predict"] * 6
    assert smoke(server.url, package, "--version", "3").returncode == 0


def error_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("smoke: error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_wrong_version_under_the_label_is_one_line(models, tf_serving) -> None:
    server = tf_serving({2: models["untrained"], 3: models["package"]}, {"stable": 2})
    assert error_of(smoke(server.url, models["package"], "--label", "stable")) == (
        f"smoke: error: {server.url}/v1/models/mnist/labels/stable serves version 2 (AVAILABLE),"
        " not the expected 3"
    )


def test_another_signature_is_one_line(models, tf_serving) -> None:
    server = tf_serving({3: models["flat"]}, {"stable": 3})
    line = error_of(smoke(server.url, models["package"], "--label", "stable"))
    assert line.startswith(
        f"smoke: error: {server.url}/v1/models/mnist/labels/stable has another serving_default"
        " signature: input images: served {'dtype': 'DT_FLOAT', 'shape': [-1, 784]}, packaged"
        " {'dtype': 'DT_UINT8', 'shape': [-1, 28, 28, 1]}"
    )


def test_low_accuracy_is_one_line(models, tf_serving) -> None:
    """Version 3 on the host is a model that learned nothing: same signature, other weights."""
    server = tf_serving({3: models["untrained"]}, {"canary": 3})
    line = error_of(smoke(server.url, models["package"], "--label", "canary"))
    expected = card(models["package"])["sample"]["accuracy"]
    assert line.startswith(f"smoke: error: {server.url}/v1/models/mnist/labels/canary scores 0.")
    assert line.endswith(
        f"on the 300 sample images, below the package's {expected:.4f} minus --tolerance 0.01"
    )


def test_a_server_that_does_not_answer_is_one_line(models) -> None:
    with socket.socket() as listening:  # accepts connections, never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        line = error_of(smoke(url, models["package"], "--label", "stable", timeout="1"))
    assert line == (
        f"smoke: error: no answer from {url}/v1/models/mnist/labels/stable (timed out) within"
        " 1 s; is TensorFlow Serving running there with its REST port (--rest_api_port)?"
    )
    closed = smoke(url, models["package"], "--label", "stable")  # nothing listens now
    assert "Connection refused" in error_of(closed)


def test_an_unknown_label_passes_the_servers_error_on(models, tf_serving) -> None:
    server = tf_serving({3: models["package"]}, {"stable": 3})
    assert error_of(smoke(server.url, models["package"], "--label", "canary")) == (
        f"smoke: error: GET {server.url}/v1/models/mnist/labels/canary answered 404:"
        " Unrecognized servable version label: canary"
    )


def test_the_package_must_be_the_version_asked_for(models, tmp_path: Path) -> None:
    assert error_of(smoke("http://127.0.0.1:9", models["package"], "--version", "4")) == (
        f"smoke: error: --version 4, but {models['package']} is version 3"
    )
    unreleased = tmp_path / "dist/mnist"
    unreleased.mkdir(parents=True)
    assert "is not a released version" in error_of(
        smoke("http://127.0.0.1:9", unreleased, "--label", "stable")
    )


def test_the_stand_in_answers_a_kept_open_connection_without_a_delayed_ack_wait(
    models, tf_serving
) -> None:
    """The stand-in writes headers and body in two sends; with Nagle's algorithm on, the body
    waited for the client's delayed ACK, 40 ms an answer on a kept-open connection, which made
    every load test measure the wait. TensorFlow Serving has no such wait; nor may its stand-in."""
    import http.client
    import time

    server = tf_serving({3: models["untrained"]}, {})
    body = json.dumps({"instances": [[[[0]] * 28] * 28]})
    connection = http.client.HTTPConnection("127.0.0.1", server.loopback.port, timeout=30)
    seconds = []
    try:
        for _ in range(12):
            began = time.perf_counter()
            connection.request("POST", "/v1/models/mnist:predict", body)
            answer = connection.getresponse()
            assert answer.status == 200 and "predictions" in json.loads(answer.read())
            seconds.append(time.perf_counter() - began)
    finally:
        connection.close()
    assert sorted(seconds)[len(seconds) // 2] < 0.02, seconds  # the median; 0.04 with the wait
