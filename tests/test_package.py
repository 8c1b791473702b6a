"""The package stage: a TF-Serving SavedModel that predicts what the trained model does."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import classifier.export
import classifier.savedmodel
import stages.package
from classifier.dataset import load_split
from classifier.errors import StageError
from classifier.mnist import CLASSES as MNIST_CLASSES
from classifier.model import load_model
from classifier.params import parse_params
from classifier.paths import Paths
from classifier.savedmodel import predict_with_export, run_signature_in_session
from stages.predict import load_image, trained_on
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import (
    error_line,
    fast_params,
    read_shared_mnist,
    run_module,
    saved_model_cli_run,
)


@pytest.fixture(scope="module")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, trained_workspace: Path, shared_mnist: Path
) -> Path:
    """The real stages run as DVC runs them, in a copy of the trained workspace: fetch and
    prepare the whole of MNIST (so the data report is real), then test and package."""
    directory = tmp_path_factory.mktemp("packaged")
    shutil.copytree(trained_workspace, directory, dirs_exist_ok=True)
    write_params(directory, fast_params(prepare={"sample_fraction": 1.0}))
    for stage in ("fetch", "prepare", "test", "package"):
        result = run_module(stage, directory, env={"MNIST_MIRROR": str(shared_mnist)})
        assert result.returncode == 0, result.stderr
    assert "package: verified SavedModel written to dist/mnist" in result.stdout
    assert result.stderr == "", result.stderr  # no start-up chatter, no loader deprecation note
    return directory


def test_tf_serving_layout(packaged: Path) -> None:
    version = packaged / "dist/mnist"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables/variables.index").is_file()
    assert sorted(p.name for p in (version / "assets.extra").iterdir()) == [
        "model_card.json",
        "model_card.md",
        "reference.json",
        "sample",
    ]
    assert [p.name for p in (packaged / "dist").iterdir()] == ["mnist"]


def test_serving_signature_takes_raw_uint8_images(packaged: Path) -> None:
    signature = tf.saved_model.load(str(packaged / "dist/mnist")).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28, 1]
    outputs = signature.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["class_index"].dtype == tf.int32
    assert outputs["class_name"].dtype == tf.string

    images = load_split("test", packaged / "data/prepared", limit=200)[0]
    served = signature(images=tf.constant(images))
    expected = load_model(packaged / "models/model.keras").predict(images, verbose=0)
    np.testing.assert_array_equal(served["class_index"].numpy(), expected.argmax(axis=1))
    names = [name.decode() for name in served["class_name"].numpy()]
    assert names == [str(index) for index in expected.argmax(axis=1)]  # MNIST's class names
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


def test_export_predicts_in_batches_with_the_same_result(
    packaged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches bound the memory of predicting (one 10,000-image call peaked at 1.8 GB)."""
    images = load_split("test", packaged / "data/prepared", limit=250)[0]
    whole = predict_with_export(packaged / "dist/mnist", images)
    monkeypatch.setattr(classifier.savedmodel, "PREDICT_BATCH", 100)  # 100, 100, 50
    batched = predict_with_export(packaged / "dist/mnist", images)
    np.testing.assert_array_equal(batched["class_name"], whole["class_name"])
    np.testing.assert_allclose(batched["probabilities"], whole["probabilities"], atol=1e-6)
    assert batched["probabilities"].shape == (250, 10)


def saved_model_cli_classes(export: Path, images: np.ndarray, directory: Path) -> np.ndarray:
    """The class indices ``saved_model_cli run`` gives, checked against the names it gives."""
    outputs = saved_model_cli_run(export, images, directory)
    assert outputs["class_name"] == [str(index) for index in outputs["class_index"]]
    return outputs["class_index"]


def test_saved_model_cli_serves_the_export_and_names_the_real_digits(
    tmp_path: Path, packaged: Path, trained_workspace: Path
) -> None:
    """The package must load where TensorFlow Serving loads it, not only in Python's TF2."""
    images, labels = load_split("test", trained_workspace / "data/prepared")  # 1,000 real digits
    digits = saved_model_cli_classes(packaged / "dist/mnist", images, tmp_path / "trained")
    expected = load_model(packaged / "models/model.keras").predict(images, verbose=0)
    np.testing.assert_array_equal(digits, expected.argmax(axis=1))
    assert (digits == labels).mean() >= 0.75  # the small test model (3,000 images) gets 0.84

    # the threshold means something: the same export of the untrained model is near chance
    stages.package.export_savedmodel(
        load_model(trained_workspace / "models/untrained.keras"),
        tmp_path / "untrained_export",
        MNIST_CLASSES,
    )
    untrained = saved_model_cli_classes(tmp_path / "untrained_export", images, tmp_path / "u")
    assert (untrained == labels).mean() < 0.3


def test_session_loader_gives_the_tf2_loaders_results_in_any_batch_size(packaged: Path) -> None:
    images = load_split("test", packaged / "data/prepared", limit=10)[0]
    export = packaged / "dist/mnist"
    reference = predict_with_export(export, images)
    for batch_size in (1, 4, 10):  # 4: the last batch is partial
        served = run_signature_in_session(export, images, batch_size)
        assert served["probabilities"].shape == (10, 10) and served["class_index"].dtype == np.int32
        np.testing.assert_array_equal(served["class_index"], reference["class_index"])
        np.testing.assert_array_equal(served["class_name"], reference["class_name"])
        np.testing.assert_allclose(served["probabilities"], reference["probabilities"], atol=1e-5)


def test_model_card(packaged: Path, shared_mnist: Path) -> None:
    card = json.loads((packaged / "dist/mnist/assets.extra/model_card.json").read_text())
    metrics = json.loads((packaged / "metrics/test.json").read_text())
    test_report = json.loads((packaged / "reports/test.json").read_text())
    assert card["metrics"]["accuracy"] == metrics["accuracy"]
    assert card["metrics"]["per_class"] == test_report["per_class"]
    assert card["params"]["train"]["epochs"] == 2
    # the checksums of the MNIST files the package was made from, computed here from the files
    assert {name: entry["md5"] for name, entry in card["data"]["source"]["files"].items()} == {
        archive.name.removesuffix(".gz"): hashlib.md5(
            gzip.decompress(archive.read_bytes())
        ).hexdigest()
        for archive in sorted(shared_mnist.glob("*.gz"))
    }
    report = json.loads((packaged / "reports/data_validation.json").read_text())
    assert card["data"]["split"] == report["split"]
    assert card["data"]["split"]["train"] + card["data"]["split"]["validation"] == 60000
    assert card["libraries"]["tensorflow"] == tf.__version__
    assert "python" not in card["libraries"]  # 3.11-3.13 train the same bytes: not named in them
    trained = hashlib.md5((packaged / "models/model.keras").read_bytes()).hexdigest()
    assert card["trained_model_md5"] == trained  # provenance that a fresh clone reproduces
    assert card["verification"]["examples"] == 10000
    assert card["verification"]["max_probability_difference"] <= 1e-5
    checks = card["verification"]["checks"]
    assert [(c["loader"], c["examples"], c["batch_size"]) for c in checks] == [
        ("tf.saved_model.load", 10000, 1000),
        ("tf.compat.v1.saved_model.loader.load", 10000, 1000),  # a TF1 session, as TF Serving
        ("tf.compat.v1.saved_model.loader.load", 8, 1),
    ]
    assert all(c["max_probability_difference"] <= 1e-5 for c in checks)
    markdown = (packaged / "dist/mnist/assets.extra/model_card.md").read_text()
    assert "| `tf.compat.v1.saved_model.loader.load` | 8 | 1 |" in markdown
    assert f"Accuracy **{metrics['accuracy']:.4f}**" in markdown
    assert "| 9 |" in markdown
    dataset = json.loads((packaged / "data/prepared/dataset.json").read_text())
    assert card["dataset"] == dataset  # classes, source, content checksum, counts
    assert card["dataset"]["classes"] == [str(digit) for digit in range(10)]
    assert f"Source `mnist` (content checksum `{dataset['checksum']}`)" in markdown
    assert (
        card["signature"]["outputs"]["class_name"] == "string [N], the most probable class's name"
    )
    assert card["signature"]["tensors"]["inputs"] == {  # as TF Serving's metadata API gives it
        "images": {"dtype": "DT_UINT8", "shape": [-1, 28, 28, 1]}
    }
    assert card["metrics"]["champion"]["source"] is None  # no champion: said in the card
    assert "No champion was compared" in markdown
    assert "release" not in card and "Not released yet: the release assigns the version" in markdown


def test_the_package_carries_a_labelled_sample_for_the_live_check(packaged: Path) -> None:
    """The first 300 test images and labels, and the model's accuracy on them in the card."""
    sample = packaged / "dist/mnist/assets.extra/sample"
    images = np.load(sample / "images.npy", allow_pickle=False)
    labels = np.load(sample / "labels.npy", allow_pickle=False)
    expected_images, expected_labels = load_split("test", packaged / "data/prepared", limit=300)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    served = run_signature_in_session(packaged / "dist/mnist", images, 100)["class_index"]
    card = json.loads((packaged / "dist/mnist/assets.extra/model_card.json").read_text())
    assert card["sample"] == {
        "folder": "assets.extra/sample",
        "images": 300,
        "accuracy": round(float((served == labels).mean()), 6),
    }


def test_the_package_carries_the_monitors_reference(packaged: Path) -> None:
    """Every test image's statistics, recomputed here from the pixels (whole-number sums), and
    the classes TensorFlow Serving's loader predicts for them, as serving.monitor reads them."""
    export = packaged / "dist/mnist"
    reference = json.loads((export / "assets.extra/reference.json").read_text())
    images, _ = load_split("test", packaged / "data/prepared")
    pixels = images.reshape(len(images), -1).astype(np.int64)
    assert reference["images"] == len(images) == 10000 and reference["split"] == "test"
    assert reference["image_shape"] == [28, 28, 1]
    statistics = reference["statistics"]
    expected = {
        "mean_brightness": pixels.sum(axis=1) / 784,
        "ink_share": (pixels > 127).sum(axis=1) / 784,
    }
    for name, values in expected.items():
        np.testing.assert_allclose(statistics[name]["values"], np.sort(values), atol=5e-7)
    served = run_signature_in_session(export, images, 1000)
    assert reference["predicted_class"] == {
        str(digit): int((served["class_index"] == digit).sum()) for digit in range(10)
    }
    np.testing.assert_allclose(
        statistics["confidence"]["values"],
        np.sort(served["probabilities"].max(axis=1)),
        atol=2e-6,
    )
    card = json.loads((export / "assets.extra/model_card.json").read_text())
    assert card["reference"]["file"] == "assets.extra/reference.json"
    assert card["reference"]["means"]["mean_brightness"] == pytest.approx(pixels.mean(), abs=1e-6)
    assert "monitor" not in card["params"]  # serving-side thresholds: not what made the model


def test_model_card_says_where_the_model_was_trained(packaged: Path) -> None:
    card = json.loads((packaged / "dist/mnist/assets.extra/model_card.json").read_text())
    environment = json.loads((packaged / "reports/train.json").read_text())
    assert card["environment"] == environment
    assert (environment["device"], environment["strategy"], environment["replicas"]) == (
        "CPU",
        "default",
        1,
    )
    build = tf.sysconfig.get_build_info()
    markdown = " ".join((packaged / "dist/mnist/assets.extra/model_card.md").read_text().split())
    assert (
        "Trained on CPU (default strategy, 1 worker(s), 1 replica(s), global batch 128, peak"
        " learning rate"
        f" 0.003), dtype policy float32, XLA off; TensorFlow {tf.__version__} built with CUDA"
        f" {build['cuda_version']}, cuDNN {build['cudnn_version']}; CPU recipe"
        " `ONEDNN_MAX_CPU_ISA=AVX`, `TF_ENABLE_ONEDNN_OPTS=0`, `TF_NUM_INTEROP_THREADS=2`,"
        " `TF_NUM_INTRAOP_THREADS=2`"
    ) in markdown


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def differing(first: dict[str, bytes], second: dict[str, bytes]) -> list[str]:
    return sorted(
        name for name in first.keys() | second.keys() if first.get(name) != second.get(name)
    )


def test_the_same_model_exports_to_the_same_bytes_in_another_process(
    tmp_path: Path, packaged: Path
) -> None:
    """DVC hashes the export: a re-run, in a new process, must reproduce every byte."""
    again = tmp_path / "again"
    shutil.copytree(packaged, again, ignore=shutil.ignore_patterns("dist"))
    result = run_module("package", again)
    assert result.returncode == 0, result.stderr
    first = files_under(packaged / "dist/mnist")
    second = files_under(again / "dist/mnist")
    assert "fingerprint.pb" in first and "variables/variables.index" in first
    assert differing(first, second) == []


def test_two_exports_in_one_process_differ_only_in_trace_numbers(
    tmp_path: Path, packaged: Path
) -> None:
    """Within one process, saved_model.pb differs only in its function names, which carry
    TensorFlow's process-wide trace counter (``__inference_serve_<n>``); weights and the
    fingerprint's regularized hashes (which ignore those names) must be equal."""
    model = load_model(packaged / "models/model.keras")
    stages.package.export_savedmodel(model, tmp_path / "first", MNIST_CLASSES)
    stages.package.export_savedmodel(model, tmp_path / "second", MNIST_CLASSES)
    first, second = files_under(tmp_path / "first"), files_under(tmp_path / "second")
    assert differing(first, second) == ["fingerprint.pb", "saved_model.pb"]
    singleprints = [
        tf.saved_model.experimental.read_fingerprint(str(tmp_path / name)).singleprint()
        for name in ("first", "second")
    ]
    assert singleprints[0] == singleprints[1]


def package_into(root: Path, packaged: Path) -> None:
    """Run the package stage in this process in ``root``, on the packaged workspace's inputs."""
    for inputs in ("models", "metrics", "reports", "data/prepared"):
        shutil.copytree(packaged / inputs, root / inputs)
    stages.package.package(parse_params(fast_params()), Paths(root))


def test_a_disagreeing_export_is_refused_and_not_written(
    tmp_path: Path, packaged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = stages.package.export_savedmodel

    def export_perturbed(model, directory, classes):
        shift = np.eye(10, dtype=np.float32)[3] * 5.0  # favour class 3: a different model...
        model.layers[-1].bias.assign(model.layers[-1].bias + shift)
        real_export(model, directory, classes)
        model.layers[-1].bias.assign(model.layers[-1].bias - shift)  # ...than the one verified

    monkeypatch.setattr(stages.package, "export_savedmodel", export_perturbed)
    with pytest.raises(
        StageError,
        match=r"^exported model disagrees with the trained model when loaded by"
        r" tf\.saved_model\.load \(batches of 1000\): \d+ different classes",
    ):
        package_into(tmp_path, packaged)
    assert list((tmp_path / "dist").iterdir()) == []


def export_keras_wrappers(model, directory: Path, classes: tuple[str, ...]) -> None:
    """The export as it was: a ``tf.Module`` tracking the ``keras.Variable`` wrappers. It
    passes ``tf.saved_model.load``, but its saver restores copies the signature never reads."""

    def serve(images):
        probabilities = model(images, training=False)
        index = tf.argmax(probabilities, -1, tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": index,
            "class_name": tf.gather(tf.constant(classes), index),
        }

    signature = tf.function(
        serve, input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.uint8, "images")]
    ).get_concrete_function()
    root = tf.Module()
    root.model_weights = list(model.weights)
    tf.saved_model.save(root, str(directory), signatures={"serving_default": signature})


def test_an_export_tensorflow_serving_cannot_load_is_refused_and_not_written(
    tmp_path: Path, packaged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages.package, "export_savedmodel", export_keras_wrappers)
    with pytest.raises(StageError) as raised:
        package_into(tmp_path, packaged)
    assert re.fullmatch(
        r"exported model does not run in a TF1 session, as TensorFlow Serving loads it"
        r" \(FailedPreconditionError: Could not find variable [\w/]+\); the export was not written",
        str(raised.value),
    ), str(raised.value)
    assert list((tmp_path / "dist").iterdir()) == []


@pytest.mark.parametrize(("batch_size", "differing"), [(1, 8), (1000, 10000)])
def test_a_session_loader_disagreement_is_refused_and_not_written(
    tmp_path: Path,
    packaged: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
    differing: int,
) -> None:
    """The TF2 loader agreeing is not enough: each session check must agree on its own."""

    def served_wrong_at(directory: Path, images: np.ndarray, size: int) -> dict:
        outputs = run_signature_in_session(directory, images, size)
        if size == batch_size:
            outputs["class_index"] = (outputs["class_index"] + 1) % 10
        return outputs

    monkeypatch.setattr(classifier.export, "run_signature_in_session", served_wrong_at)
    with pytest.raises(StageError) as raised:
        package_into(tmp_path, packaged)
    assert re.fullmatch(
        r"exported model disagrees with the trained model when loaded by"
        rf" tf\.compat\.v1\.saved_model\.loader\.load \(batches of {batch_size}\): {differing}"
        r" different classes, probabilities differ by up to \d\.\d\de[+-]\d\d \(tolerance"
        r" 1e-05\); the export was not written",
        str(raised.value),
    ), str(raised.value)
    assert list((tmp_path / "dist").iterdir()) == []


def test_a_model_that_failed_the_gate_is_not_packaged(tmp_path: Path, packaged: Path) -> None:
    directory = tmp_path / "workspace"
    shutil.copytree(packaged, directory)
    shutil.rmtree(directory / "dist")
    write_params(directory, fast_params(test={"min_accuracy": 0.9999}))
    assert run_module("test", directory).returncode == 0  # the verdict is recorded...
    result = run_module("package", directory)  # ...and the package stage refuses the model
    assert result.returncode == 1
    accuracy = json.loads((directory / "metrics/test.json").read_text())["accuracy"]
    assert error_line(result) == (
        f"package: error: quality gate failed: accuracy {accuracy:.4f} < test.min_accuracy"
        " 0.9999; the model is not packaged (details in reports/test.json)"
    )
    assert not (directory / "dist").exists()


def test_load_image_brings_files_to_the_training_images_form(
    tmp_path: Path, packaged: Path
) -> None:
    """Grayscale, the dataset's size, and dark-bordered like MNIST (a digit on paper inverted)."""
    dataset = trained_on(packaged / "dist/mnist")
    assert dataset["background"] == "dark" and dataset["channels"] == 1
    digit = load_split("test", packaged / "data/prepared", limit=1)[0][0]
    Image.fromarray(digit[..., 0]).save(tmp_path / "mnist_style.png")
    Image.fromarray(255 - digit[..., 0]).save(tmp_path / "on_paper.png")
    np.testing.assert_array_equal(load_image(tmp_path / "mnist_style.png", dataset), digit)
    np.testing.assert_array_equal(load_image(tmp_path / "on_paper.png", dataset), digit)
    large = Image.fromarray(digit[..., 0]).resize((112, 112), Image.NEAREST).convert("RGB")
    large.save(tmp_path / "large.png")
    assert np.abs(load_image(tmp_path / "large.png", dataset).astype(int) - digit).mean() < 10


def _digit_files(directory: Path, count: int) -> tuple[list[Path], list[int]]:
    """The first ``count`` real MNIST test digits as PNG files, and their true labels."""
    images = read_shared_mnist("t10k-images-idx3-ubyte")[:count]
    labels = read_shared_mnist("t10k-labels-idx1-ubyte")[:count]
    paths = []
    for index, image in enumerate(images):
        paths.append(directory / f"digit{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths, [int(label) for label in labels]


def _predictions(stdout: str) -> list[tuple[str, int, float]]:
    parsed = [re.fullmatch(r"(.+): (\d) \((\d+\.\d)%\)", line) for line in stdout.splitlines()]
    assert all(parsed), stdout
    return [(m.group(1), int(m.group(2)), float(m.group(3))) for m in parsed]


def test_predict_command_names_the_real_digits(tmp_path: Path, packaged: Path) -> None:
    paths, labels = _digit_files(tmp_path, 20)
    result = run_module("predict", packaged, *map(str, paths))
    assert result.returncode == 0, result.stderr
    predictions = _predictions(result.stdout)
    assert [path for path, _, _ in predictions] == [str(path) for path in paths]
    # What the trained Keras model itself says of the same pixels: the package changes nothing.
    images = read_shared_mnist("t10k-images-idx3-ubyte")[:20, ..., np.newaxis]
    expected = load_model(packaged / "models/model.keras").predict(images, verbose=0)
    assert [digit for _, digit, _ in predictions] == expected.argmax(axis=1).tolist()
    confidences = [confidence for _, _, confidence in predictions]
    np.testing.assert_allclose(confidences, 100 * expected.max(axis=1), atol=0.051)
    correct = sum(digit == label for (_, digit, _), label in zip(predictions, labels, strict=True))
    assert correct >= 15  # a small model trained briefly on 3,000 images; chance would be 2


def test_predict_prints_one_line_per_image_and_nothing_else(tmp_path: Path, packaged: Path) -> None:
    """TensorFlow's start-up chatter (absl's notice, CUDA's probing on a machine without a GPU)
    is not the user's business (classifier/quiet_start.py), unless TF_CPP_MIN_LOG_LEVEL says
    it is."""
    paths, _ = _digit_files(tmp_path, 2)
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "stages.predict", *map(str, paths)]
    quiet = subprocess.run(command, cwd=packaged, env=environment, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert len(quiet.stdout.splitlines()) == 2
    asked = {**environment, "TF_CPP_MIN_LOG_LEVEL": "0"}
    chatty = subprocess.run(command, cwd=packaged, env=asked, capture_output=True, text=True)
    assert chatty.stdout == quiet.stdout and chatty.stderr != ""  # the user's value wins


def test_predict_reports_every_file_and_fails_if_any_did(tmp_path: Path, packaged: Path) -> None:
    paths, labels = _digit_files(tmp_path, 2)
    (tmp_path / "notes.txt").write_text("not an image")
    arguments = [paths[0], tmp_path / "notes.txt", tmp_path / "missing.png", paths[1]]
    result = run_module("predict", packaged, *map(str, arguments))
    assert result.returncode == 1
    assert [(path, digit) for path, digit, _ in _predictions(result.stdout)] == [
        (str(paths[0]), labels[0]),
        (str(paths[1]), labels[1]),
    ]
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error: ")]
    assert errors[0].startswith(f"predict: error: {tmp_path / 'notes.txt'}: not an image")
    assert errors[1:] == [
        f"predict: error: {tmp_path / 'missing.png'}: no such file",
        "predict: error: 2 of 4 images could not be classified",
    ]


def test_predict_from_outside_the_repository(tmp_path: Path, packaged: Path) -> None:
    """Run from another folder, it uses the package of the repository its code is in."""
    repository = tmp_path / "repository"
    shutil.copytree(REPO_ROOT / "stages", repository / "stages")
    shutil.copytree(REPO_ROOT / "classifier", repository / "classifier")
    shutil.copytree(packaged / "dist", repository / "dist")
    shutil.copy(packaged / "params.yaml", repository / "params.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths, labels = _digit_files(elsewhere, 1)
    result = run_module("predict", elsewhere, str(paths[0]), env={"PYTHONPATH": str(repository)})
    assert result.returncode == 0, result.stderr
    assert [(path, digit) for path, digit, _ in _predictions(result.stdout)] == [
        (str(paths[0]), labels[0])
    ]

    (repository / "dist/mnist/saved_model.pb").unlink()
    result = run_module("predict", elsewhere, str(paths[0]), env={"PYTHONPATH": str(repository)})
    assert result.returncode == 1
    assert error_line(result) == (
        f"predict: error: no SavedModel in {repository / 'dist/mnist'}; run `dvc repro`"
        " (or `dvc pull`) there, or pass --model DIR"
    )


def test_predict_without_a_package(tmp_path: Path) -> None:
    write_params(tmp_path, fast_params())
    result = run_module("predict", tmp_path, "x.png")
    assert result.returncode == 1
    assert error_line(result) == (
        "predict: error: no SavedModel in dist/mnist; run `dvc repro` (or `dvc pull`) there,"
        " or pass --model DIR"
    )
