"""``serving.labels promote --gateway``: the canary is promoted on the evidence the gateway
counted, read from its ``/metrics`` as Prometheus would, in front of a server answering
TensorFlow Serving's REST API with real SavedModels. A good canary is promoted; one with errors,
one that predicts another mix of classes, and one with too little traffic are refused with their
numbers, and nothing moves."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from classifier.errors import run_stage
from serving import labels
from serving.labels import Labels
from serving.layout import Host
from testbed.gateway import GatewayProcess, call
from testbed.repo import write_params
from testbed.suite import default_params, read_shared_mnist
from testbed.tf_serving import FakeTensorFlowServing

CLASSES = tuple(str(digit) for digit in range(10))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_workspace: Path) -> Iterator:
    """Version 2: the session's trained model; 3: the same model again (a good canary);
    4: an untrained one (its answers are another mix of classes)."""
    import keras

    from classifier.export import export_savedmodel
    from classifier.model import load_model

    root = tmp_path_factory.mktemp("canaries")
    trained = load_model(trained_workspace / "models/model.keras")
    export_savedmodel(trained, root / "2", CLASSES)
    export_savedmodel(trained, root / "3", CLASSES)
    keras.utils.set_random_seed(4)
    untrained = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    export_savedmodel(untrained, root / "4", CLASSES)
    versions = {version: root / str(version) for version in (2, 3, 4)}
    started = FakeTensorFlowServing("mnist", versions, {"stable": 2, "canary": 3}).start()
    yield started
    started.stop()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """The serving host's base path (labels only: the label commands never read a model)."""
    host = Host(tmp_path / "mnist")
    for version in (2, 3, 4):
        (host.version_dir(version) / "variables").mkdir(parents=True)
    return host


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    raw = default_params()
    raw["monitor"]["canary_min_predictions"] = 200  # a short test's traffic
    return write_params(tmp_path, raw)


def digits(count: int, seed: int) -> list:
    images = read_shared_mnist("t10k-images-idx3-ubyte")[..., np.newaxis]
    return images[np.random.default_rng(seed).choice(len(images), count, replace=False)].tolist()


@pytest.fixture
def traffic(server: FakeTensorFlowServing) -> Iterator:
    """``traffic(canary, bad_requests)``: a fresh gateway that has answered 300 digits to each
    label, ``bad_requests`` more refused at the canary, and counted them all; stopped after the
    test, whatever it did."""
    started: list[GatewayProcess] = []

    def send(canary: int, bad_requests: int = 0) -> GatewayProcess:
        server.labels["canary"] = canary
        started.append(GatewayProcess("--upstream", server.url))
        gateway = started[-1]
        images = digits(300, seed=canary)
        for begin in range(0, 300, 20):
            for label in ("stable", "canary"):
                body = {"instances": images[begin : begin + 20]}
                assert gateway.call(f"/v1/models/mnist/labels/{label}:predict", body)[0] == 200
        for _ in range(bad_requests):
            wrong_shape = {"instances": [[0] * 28]}
            assert gateway.call("/v1/models/mnist/labels/canary:predict", wrong_shape)[0] == 400
        settled(gateway, 600)
        return gateway

    yield send
    for gateway in started:
        gateway.stop()


def settled(gateway: GatewayProcess, predictions: int) -> None:
    """The gateway counts just after answering: wait (bounded) for the last answers."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counted = [
            line
            for line in gateway.metrics_text().splitlines()
            if line.startswith("gateway_prediction_confidence_count{")
        ]
        if sum(float(line.split()[-1]) for line in counted) >= predictions:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway did not count {predictions} predictions within 10 s")


def promote(host: Host, capsys, gateway_url: str, params: Path, *extra: str):
    """``serving.labels promote --gateway …`` on a host labelled stable 2 and canary 3 (or 4,
    as the server labels it): exit status, stdout, stderr, and whether labels.json changed."""
    status = json.loads(call(f"{gateway_url}/v1/models/mnist/labels/canary")[1])
    canary = int(status["model_version_status"][0]["version"])
    labels.apply(host, Labels(stable=2, canary=canary))
    before = host.labels.read_text()
    args = ["--base-path", str(host.base), "promote", "--gateway", gateway_url]
    try:
        run_stage("labels", lambda: labels.main([*args, "--params", str(params), *extra]))
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err, host.labels.read_text() != before


def test_a_canary_as_good_as_stable_is_promoted(server, host, capsys, params_file, traffic):
    code, out, err, changed = promote(host, capsys, traffic(canary=3).url, params_file)
    assert (code, err) == (0, ""), err
    assert out == f"labels: stable 3, canary none (written to {host.config})\n" and changed
    entry = json.loads(host.labels.read_text())["history"][-1]
    assert entry["forced_past"] == []
    assert entry["evidence"]["canary"]["version"] == 3
    assert entry["evidence"]["canary"]["predictions"] == 300
    assert entry["evidence"]["stable"]["predictions"] == 300
    assert entry["evidence"]["canary"]["error_ratio"] == 0


def test_a_canary_with_errors_is_refused(server, host, capsys, params_file, traffic) -> None:
    gateway = traffic(canary=3, bad_requests=3)
    code, out, err, changed = promote(host, capsys, gateway.url, params_file)
    assert (code, out, changed) == (1, "", False)  # nothing moved, nothing recorded
    assert err.startswith("labels: error: canary version 3 not promoted: error ratio 16.67%")
    assert "against stable's 0.00% (monitor.canary_max_error_increase 0.005)" in err
    assert err.endswith(
        "stable is unchanged (--force promotes anyway, recorded in the labels' history)\n"
    )


def test_a_canary_that_predicts_another_mix_is_refused_unless_forced(
    server, host, capsys, params_file, traffic
) -> None:
    gateway = traffic(canary=4)
    code, _, err, changed = promote(host, capsys, gateway.url, params_file)
    assert (code, changed) == (1, False)
    assert "its predicted classes differ from stable's: " in err
    assert "(monitor.min_class_shift 0.1; chi-squared p=" in err
    code, out, err, changed = promote(host, capsys, gateway.url, params_file, "--force")
    assert code == 0 and changed and out.startswith("labels: stable 4, canary none")
    assert err.startswith("labels: promoted by --force past: its predicted classes differ")
    entry = json.loads(host.labels.read_text())["history"][-1]
    assert entry["command"] == "promote" and entry["stable"] == 4
    assert any("predicted classes differ" in reason for reason in entry["forced_past"])


def test_too_little_canary_traffic_is_refused(server, host, capsys, tmp_path, traffic) -> None:
    params = write_params(tmp_path, default_params())  # the default: 1000 canary predictions
    code, _, err, changed = promote(host, capsys, traffic(canary=3).url, params)
    assert (code, changed) == (1, False)
    assert (
        "the gateway saw 300 predictions of canary version 3, fewer than"
        " monitor.canary_min_predictions 1000: let it serve longer" in err
    )


def test_a_gateway_that_cannot_be_reached_is_one_line(host, capsys, params_file) -> None:
    labels.apply(host, Labels(stable=2, canary=3))
    before = host.labels.read_text()
    args = ["--base-path", str(host.base), "promote", "--gateway", "http://127.0.0.1:9"]
    with pytest.raises(SystemExit) as exited:
        run_stage("labels", lambda: labels.main([*args, "--params", str(params_file)]))
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("labels: error: cannot read the gateway's metrics at http://127.0.0.1:9")
    assert len(err.splitlines()) == 1 and host.labels.read_text() == before
