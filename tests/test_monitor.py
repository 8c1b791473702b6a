"""serving.monitor: captured traffic against the reference the package carries. Held-out MNIST
digits (never in the reference, never trained on) raise no alarm; the shifts MNIST users meet
(digits dark on light paper, a dimmer scanner, one class flooding in) are found and named; too
few captures get no verdict. End to end through the gateway and a server answering TensorFlow
Serving's REST API, with the command's exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from classifier.dataset import load_dataset, load_split, write_splits
from classifier.files import write_json
from classifier.model_card import CARD_JSON
from classifier.params import MonitorParams, load_params
from classifier.paths import Paths
from classifier.reference import REFERENCE_JSON
from serving.capture import CaptureFiles
from serving.monitor import DRIFT, NO_DRIFT, TOO_FEW, monitor
from testbed.faults import small_disk, snapshot
from testbed.gateway import GatewayProcess
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import fast_params, read_shared_mnist
from testbed.tf_serving import FakeTensorFlowServing

PARAMS = load_params(REPO_ROOT / "params.yaml").monitor  # the defaults are what is tested


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, trained_workspace: Path) -> Path:
    """``test`` and ``package`` run on the session's small trained model: ``dist/mnist`` and
    its reference, made of MNIST's first 1000 test digits."""
    from classifier.params import parse_params
    from stages.package import package
    from stages.test import evaluate

    directory = tmp_path_factory.mktemp("monitored")
    shutil.copytree(trained_workspace, directory, dirs_exist_ok=True)
    raw = fast_params()
    write_params(directory, raw)
    params, paths = parse_params(raw), Paths(directory)
    replace_test_split(paths.prepared_dir)
    subset = {"train": 3000, "validation": 500, "test": len(REFERENCE_DIGITS), "seed": 42}
    write_json(paths.data_report, {"source": {"files": 2, "folder": "MNIST"}, "split": subset})
    evaluate(params.test, params.package.model_name, paths)
    package(params, paths)
    return directory


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    images = read_shared_mnist("t10k-images-idx3-ubyte")[..., np.newaxis]
    return images, read_shared_mnist("t10k-labels-idx1-ubyte")


# A random tenth of MNIST's test digits: the file's first half (NIST's SD-3 writers) is cleaner
# than its second (SD-1): its first 1000 digits alone are another population than the rest.
REFERENCE_DIGITS = np.random.default_rng(2026).permutation(10_000)[:1000]
HELD_OUT_DIGITS = np.setdiff1d(np.arange(10_000), REFERENCE_DIGITS)


def replace_test_split(prepared_dir: Path) -> None:
    """The prepared test split made of ``REFERENCE_DIGITS``."""
    dataset = load_dataset(prepared_dir)
    images, labels = mnist_test_digits()
    splits = {name: load_split(name, prepared_dir) for name in ("train", "validation")}
    splits["test"] = (images[REFERENCE_DIGITS], labels[REFERENCE_DIGITS])
    write_splits(prepared_dir, dataset.source, dataset.checksum, dataset.classes, splits)


@pytest.fixture(scope="module")
def model(workspace: Path):
    from classifier.model import load_model

    return load_model(workspace / "models/model.keras")


def held_out_digits(count: int, seed: int) -> np.ndarray:
    """MNIST test digits the reference does not hold (nor training: they are test digits)."""
    chosen = np.random.default_rng(seed).choice(HELD_OUT_DIGITS, count, replace=False)
    return mnist_test_digits()[0][chosen]


def capture(
    directory: Path, model, images: np.ndarray, label: str = "stable", version: int = 1
) -> None:
    """Write what the gateway captures for ``images`` sent in requests of ten."""
    probabilities = model.predict(images, verbose=0)
    files = CaptureFiles(directory / "mnist", max_bytes=1 << 30)
    for start in range(0, len(images), 10):
        files.write(
            {
                "time": "2026-12-07T08:00:00.000Z",
                "model": "mnist",
                "label": label,
                "version": version,
                "status": 200,
                "latency_ms": 1.0,
                "request": {"instances": images[start : start + 10].tolist()},
                "predictions": [
                    {
                        "class_index": int(p.argmax()),
                        "class_name": str(p.argmax()),
                        "confidence": float(p.max()),
                    }
                    for p in probabilities[start : start + 10]
                ],
            }
        )
    files.close()


def report_on(tmp_path: Path, workspace: Path, params: MonitorParams = PARAMS) -> dict:
    return monitor(tmp_path / "captures", workspace / "dist/mnist", params)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_held_out_digits_raise_no_alarm(tmp_path: Path, workspace: Path, model, seed: int) -> None:
    capture(tmp_path / "captures", model, held_out_digits(500, seed))
    report = report_on(tmp_path, workspace)
    stable = report["labels"]["stable"]
    assert stable["images"] == 500 and stable["verdict"] == NO_DRIFT, stable["tests"]
    assert report["verdict"] == NO_DRIFT
    names = [test["statistic"] for test in stable["tests"]]
    assert names == [
        "mean_brightness",
        "border_brightness",
        "ink_share",
        "confidence",
        "predicted_class",
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_of_other_writers_raise_no_alarm(
    tmp_path: Path, workspace: Path, model, seed: int
) -> None:
    """MNIST's training file is written by other people than its test file: a new population of
    writers, as in production. Digits the model was not trained on (past the session's 3500)."""
    images = read_shared_mnist("train-images-idx3-ubyte")[..., np.newaxis]
    images = images[np.random.default_rng(seed).choice(np.arange(3500, 60_000), 600)]
    capture(tmp_path / "captures", model, images)
    report = report_on(tmp_path, workspace)
    assert report["verdict"] == NO_DRIFT


def dark_on_light(images: np.ndarray) -> np.ndarray:
    return 255 - images


def dim_scanner(images: np.ndarray) -> np.ndarray:
    return (images * 0.45).astype(np.uint8)


def thick_pen(images: np.ndarray) -> np.ndarray:
    """Strokes one pixel wider in every direction (a 3x3 maximum)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = [padded[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)]
    return np.max(shifted, axis=0)


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (dark_on_light, {"mean_brightness", "border_brightness", "ink_share"}),
        (dim_scanner, {"mean_brightness", "ink_share"}),
        (thick_pen, {"mean_brightness", "ink_share"}),
    ],
)
def test_shifted_inputs_are_found_and_named(
    tmp_path: Path, workspace: Path, model, shift, expected: set
) -> None:
    capture(tmp_path / "captures", model, shift(held_out_digits(300, seed=5)))
    report = report_on(tmp_path, workspace)
    stable = report["labels"]["stable"]
    assert report["verdict"] == DRIFT and stable["verdict"] == DRIFT
    assert expected <= set(stable["drifted"]), stable["drifted"]
    for test in stable["tests"]:
        assert test["drift"] == (test["statistic"] in stable["drifted"])
        if test["drift"]:
            assert test["p_value"] < PARAMS.alpha


def test_one_class_flooding_in_is_found(tmp_path: Path, workspace: Path, model) -> None:
    images, labels = (array[HELD_OUT_DIGITS] for array in mnist_test_digits())
    sevens, others = images[labels == 7][:250], images[labels != 7][:150]
    capture(tmp_path / "captures", model, np.concatenate([sevens, others]))
    stable = report_on(tmp_path, workspace)["labels"]["stable"]
    assert "predicted_class" in stable["drifted"]
    (classes,) = [test for test in stable["tests"] if test["statistic"] == "predicted_class"]
    assert classes["live_share"]["7"] > 0.45 > 0.15 > classes["reference_share"]["7"]
    assert classes["class_shift"] > PARAMS.min_class_shift


def test_too_few_captures_get_no_verdict(tmp_path: Path, workspace: Path, model) -> None:
    capture(tmp_path / "captures", model, dark_on_light(held_out_digits(PARAMS.min_images - 10, 0)))
    report = report_on(tmp_path, workspace)
    assert report["verdict"] == TOO_FEW
    assert report["labels"]["stable"]["tests"] == []  # even a blatant shift: not judged
    (tmp_path / "empty").mkdir()
    assert monitor(tmp_path / "empty", workspace / "dist/mnist", PARAMS)["verdict"] == TOO_FEW


def test_a_released_package_is_compared_with_its_own_version_only(
    tmp_path: Path, workspace: Path, model
) -> None:
    released = tmp_path / "3"
    shutil.copytree(workspace / "dist/mnist", released)
    card = json.loads((released / CARD_JSON).read_text())
    write_json(released / CARD_JSON, {**card, "release": {"version": 3}})
    capture(tmp_path / "captures", model, held_out_digits(300, 0), version=3)
    capture(tmp_path / "captures", model, dark_on_light(held_out_digits(300, 1)), version=2)
    report = monitor(tmp_path / "captures", released, PARAMS)
    assert report["verdict"] == NO_DRIFT and report["labels"]["stable"]["images"] == 300
    assert report["window"]["skipped_images"] == {"another version": 300}


def test_a_file_cut_short_gives_what_it_holds(tmp_path: Path, workspace: Path, model) -> None:
    capture(tmp_path / "captures", model, held_out_digits(400, 0))
    (path,) = (tmp_path / "captures").rglob("*.jsonl.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # a write that failed half-way
    report = report_on(tmp_path, workspace)
    assert report["window"]["skipped_images"] == {"file cut short": 1}
    assert 200 < report["labels"]["stable"]["images"] < 400


@pytest.fixture(scope="module")
def served(workspace: Path):
    """The package as versions 1 (stable) and 2 (canary) of a TensorFlow Serving stand-in."""
    package = workspace / "dist/mnist"
    server = FakeTensorFlowServing("mnist", {1: package, 2: package}, {"stable": 1, "canary": 2})
    yield server.start()
    server.stop()


def test_through_the_gateway_drift_exits_3_and_names_the_label(
    tmp_path: Path, workspace: Path, served: FakeTensorFlowServing
) -> None:
    """Clients call the gateway; the monitor command reads its capture folder as it is."""
    captures = tmp_path / "captures"
    gateway = GatewayProcess(
        "--upstream", served.url, "--sample-rate", "1.0", "--capture-dir", str(captures)
    )
    try:
        normal, shifted = held_out_digits(300, 11), dark_on_light(held_out_digits(300, 12))
        for start in range(0, 300, 20):
            for label, images in (("stable", normal), ("canary", shifted)):
                body = {"instances": images[start : start + 20].tolist()}
                status, _ = gateway.call(f"/v1/models/mnist/labels/{label}:predict", body)
                assert status == 200
    finally:
        gateway.stop()  # closes the open capture file
    report = tmp_path / "report"
    args = ("--captures", str(captures), "--package", str(workspace / "dist/mnist"))
    textfile = tmp_path / "monitor.prom"
    result = run_monitor(*args, "--report", str(report), "--textfile", str(textfile))
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "monitor: canary: drift (300 images)" in lines
    assert "monitor: stable: no drift (300 images)" in lines
    assert any(line.startswith("monitor: canary: border_brightness drifted") for line in lines)
    assert lines[-1] == "monitor: verdict: drift"
    written = json.loads((report / "report.json").read_text())
    assert written["labels"]["canary"]["verdict"] == DRIFT
    page = (report / "report.html").read_text()
    assert "canary" in page and "border_brightness" in page and "<svg" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    samples = {  # as node_exporter's textfile collector hands them to Prometheus
        (sample.name, sample.labels.get("label")): sample.value
        for family in text_string_to_metric_families(textfile.read_text())
        for sample in family.samples
    }
    drifted = len(written["labels"]["canary"]["drifted"])
    assert drifted >= 3 and samples[("serving_monitor_drifted_statistics", "canary")] == drifted
    assert samples[("serving_monitor_drifted_statistics", "stable")] == 0
    assert samples[("serving_monitor_judged", "stable")] == 1
    assert samples[("serving_monitor_last_run_timestamp_seconds", None)] > 1.7e9


def run_monitor(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "serving.monitor", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_a_report_that_cannot_be_written_is_one_line_and_exit_1(
    tmp_path: Path, workspace: Path, model
) -> None:
    """A verdict whose report cannot be kept is not a verdict: exit 1, not 0, and one line."""
    capture(tmp_path / "enough", model, held_out_digits(300, 21))
    with small_disk(tmp_path / "disk", size_mb=1) as disk:
        disk.read_only()
        args = ("--captures", str(tmp_path / "enough"), "--package", str(workspace / "dist/mnist"))
        result = disk.run("serving.monitor", *args, "--report", str(disk.root), cwd=REPO_ROOT)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"monitor: error: cannot write {disk.root}/report.json: "), line
        assert f": {disk.read_only_cause}; " in line
        assert snapshot(disk.root) == {}


def test_exit_0_without_drift_and_4_with_too_few(tmp_path: Path, workspace: Path, model) -> None:
    package = str(workspace / "dist/mnist")
    capture(tmp_path / "enough", model, held_out_digits(300, 21))
    result = run_monitor("--captures", str(tmp_path / "enough"), "--package", package)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "monitor: stable: no drift (300 images)",
        "monitor: verdict: no drift",
    ]
    capture(tmp_path / "few", model, held_out_digits(20, 22), label="canary")
    result = run_monitor("--captures", str(tmp_path / "few"), "--package", package)
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "monitor: verdict: too few captures"


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, workspace: Path) -> None:
    (tmp_path / "captures").mkdir()
    no_reference = tmp_path / "old"
    shutil.copytree(workspace / "dist/mnist", no_reference)
    (no_reference / REFERENCE_JSON).unlink()
    package = str(workspace / "dist/mnist")
    for args, cause in (
        (("--package", str(no_reference)), "reference.json is missing: --package must be"),
        (("--package", package, "--captures", str(tmp_path / "nowhere")), "is not a folder"),
        (("--package", package, "--since", "yesterday"), "'yesterday' is not an ISO 8601 time"),
    ):
        captures = () if "--captures" in args else ("--captures", str(tmp_path / "captures"))
        result = run_monitor(*captures, *args)
        assert result.returncode == (2 if "--since" in args else 1), result.stderr
        assert cause in result.stderr.strip().splitlines()[-1]
        assert result.stdout == ""


def test_live_accuracy_from_labelled_feedback(tmp_path: Path, workspace: Path, model) -> None:
    """Export the window's images, sort 120 of them into their true class folders as people
    would, and the monitor measures how often the served answers were right."""
    images, labels = mnist_test_digits()
    chosen = np.random.default_rng(31).choice(HELD_OUT_DIGITS, 300, replace=False)
    capture(tmp_path / "captures", model, images[chosen])
    package = workspace / "dist/mnist"
    exported = tmp_path / "export"
    monitor(tmp_path / "captures", package, PARAMS, export=exported)
    pngs = sorted((exported / "stable").glob("*.png"))
    assert len(pngs) == len({images[i].tobytes() for i in chosen})  # one file per image
    feedback = tmp_path / "feedback"
    by_pixels = {images[i].tobytes(): int(labels[i]) for i in chosen}
    for path in pngs[:120]:  # what people judged
        pixels = np.asarray(Image.open(path))[..., np.newaxis]
        (feedback / str(by_pixels[pixels.tobytes()])).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, feedback / str(by_pixels[pixels.tobytes()]) / path.name)
    stranger = images[HELD_OUT_DIGITS[~np.isin(HELD_OUT_DIGITS, chosen)][0], ..., 0]
    Image.fromarray(stranger).save(feedback / "3/never-captured.png")
    Image.fromarray(stranger).resize((32, 32)).save(feedback / "3/resized.png")

    report = monitor(tmp_path / "captures", package, PARAMS, feedback=feedback)
    live = report["labels"]["stable"]["live_accuracy"]
    judged = [
        index
        for index in chosen
        if any(images[index].tobytes() == np.asarray(Image.open(p))[..., None].tobytes()
               for p in pngs[:120])
    ]  # fmt: skip
    predicted = model.predict(images[judged], verbose=0).argmax(axis=1)
    assert live["images"] == 120
    assert live["accuracy"] == round(float((predicted == labels[judged]).mean()), 6)
    sevens = labels[judged] == 7
    assert live["per_class"]["7"] == {
        "images": int(sevens.sum()),
        "recall": round(float((predicted[sevens] == 7).mean()), 6),
    }
    assert (
        live["test_accuracy"]
        == json.loads((package / CARD_JSON).read_text())["metrics"]["accuracy"]
    )
    skipped = report["window"]["skipped_images"]
    assert skipped["feedback images matching no capture"] == 1
    assert skipped["feedback images of another size"] == 1
    result = run_monitor(
        "--captures", str(tmp_path / "captures"), "--package", str(package),
        "--feedback", str(feedback),
    )  # fmt: skip
    assert f"monitor: stable: live accuracy {live['accuracy']:.4f} on 120 labelled images" in (
        result.stdout
    )
