"""The build stage: model from params, precision from the hardware, stable file bytes."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from classifier.dataset import write_splits
from classifier.mnist import MNIST_MODEL_IO
from classifier.model import (
    FIXED_SAVE_DATE,
    build_model,
    load_model,
    renumber_shared_objects,
    save_model,
)
from classifier.params import BuildParams
from classifier.runtime import FULL, MIXED, precision_policy
from testbed.repo import write_params
from testbed.suite import fast_params, run_module, write_prepared_subset


def _params(**changes) -> BuildParams:
    return BuildParams(**{**fast_params()["build"], **changes})


@pytest.mark.parametrize(
    ("setting", "gpu", "policy"),
    [("auto", True, MIXED), ("auto", False, FULL), ("on", False, MIXED), ("off", True, FULL)],
)
def test_precision_policy(setting: str, gpu: bool, policy: str) -> None:
    assert precision_policy(setting, gpu) == policy


def test_parameter_count_follows_params() -> None:
    padded = _params(conv_filters=[8, 16], kernel_size=3, padding="same", dense_units=0)
    # conv 3x3x1x8+8; 2x2 pool; conv 3x3x8x16+16; dense over 14*14*16 features to 10 classes
    assert build_model(padded, FULL, *MNIST_MODEL_IO).count_params() == 80 + 1168 + (
        14 * 14 * 16 * 10 + 10
    )
    # unpadded: 28 -> 26, pool 13, -> 11: the dense layer sees 11*11*16 features
    unpadded = build_model(padded.model_copy(update={"padding": "valid"}), FULL, *MNIST_MODEL_IO)
    assert unpadded.count_params() == 80 + 1168 + (11 * 11 * 16 * 10 + 10)
    wider = build_model(
        _params(conv_filters=[8, 16], dense_units=32, batch_norm=True), FULL, *MNIST_MODEL_IO
    )
    kinds = [type(layer).__name__ for layer in wider.layers]
    assert kinds.count("BatchNormalization") == 2
    assert kinds.count("Dense") == 2
    assert wider.layers[-1].units == 10


def test_compiled_with_the_chosen_optimizer() -> None:
    model = build_model(_params(optimizer="sgd", learning_rate=0.05), FULL, *MNIST_MODEL_IO)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)


def test_mixed_precision_path_runs_on_cpu() -> None:
    """The GPU's float16 path, exercised here: float16 layers, float32 output, loss scaling."""
    model = build_model(_params(), MIXED, *MNIST_MODEL_IO)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "float16"
    assert conv.variable_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    probabilities = model.predict(np.zeros((2, 28, 28), np.uint8), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-3)
    assert keras.config.dtype_policy().name == FULL  # the global policy is left as it was


def test_saved_model_says_no_xla_wherever_it_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras' default ``jit_compile="auto"`` is resolved on the building machine (True on a GPU)
    and saved; a model built here says False, and is loaded so, whatever machine built it."""
    monkeypatch.setattr(keras.Model, "_resolve_auto_jit_compile", lambda self: True)  # a GPU's
    path = tmp_path / "model.keras"
    save_model(build_model(_params(), FULL, *MNIST_MODEL_IO), path)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("config.json"))["compile_config"]["jit_compile"] is False
    assert load_model(path).jit_compile is False


def test_mixed_precision_model_loads_with_its_loss_scaling(tmp_path: Path) -> None:
    """Loaded under the policy it was built under: float16 layers, the LossScaleOptimizer that
    float16 gradients need, and the saved optimizer state loaded (Keras warns if it is not)."""
    path = tmp_path / "mixed.keras"
    save_model(build_model(_params(), MIXED, *MNIST_MODEL_IO), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(path)
    assert model.dtype_policy.name == MIXED
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == FULL  # the global policy is left as it was
    assert load_model(tmp_path / "mixed.keras").layers[-1].compute_dtype == "float32"


def test_renumber_shared_objects() -> None:
    config = {
        "a": {"shared_object_id": 140737},
        "b": [{"shared_object_id": 99}, {"x": 1}],
        "c": {"shared_object_id": 140737},
    }
    assert renumber_shared_objects(config) == {
        "a": {"shared_object_id": 1},
        "b": [{"shared_object_id": 2}, {"x": 1}],
        "c": {"shared_object_id": 1},
    }


def test_saved_model_bytes_are_stable(tmp_path: Path) -> None:
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    save_model(build_model(_params(), FULL, *MNIST_MODEL_IO), first)
    save_model(build_model(_params(), FULL, *MNIST_MODEL_IO), second)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(archive.read("metadata.json"))["date_saved"] == FIXED_SAVE_DATE
    reloaded = load_model(first)
    original = build_model(_params(), FULL, *MNIST_MODEL_IO)
    for mine, theirs in zip(reloaded.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_build_stage_is_reproducible_across_processes(tmp_path: Path) -> None:
    write_params(tmp_path, fast_params())
    write_prepared_subset(tmp_path / "data/prepared", train=10, validation=10, test=10)
    outputs = ["models/untrained.keras", "models/summary.txt"]
    digests = []
    for _ in range(2):
        result = run_module("build", tmp_path, env={"COLUMNS": "40"})
        assert result.returncode == 0, result.stderr
        digests.append([(tmp_path / name).read_bytes() for name in outputs])
    assert digests[0] == digests[1]
    summary = (tmp_path / "models/summary.txt").read_text()
    assert summary.endswith(f"Dtype policy: {FULL}\n")
    assert "Trainable params: 20,618" in summary and "Param #" in summary


def test_the_stage_builds_for_the_prepared_datasets_shape_and_classes(tmp_path: Path) -> None:
    """The input shape and class count come from data/prepared/dataset.json, not constants."""
    write_params(tmp_path, fast_params())
    images = np.zeros((3, 32, 40, 3), np.uint8)
    splits = {"train": (images, np.array([0, 1, 2], np.uint8))}
    write_splits(tmp_path / "data/prepared", "folder", "sum", ("cat", "dog", "owl"), splits)
    result = run_module("build", tmp_path)
    assert result.returncode == 0, result.stderr
    model = load_model(tmp_path / "models/untrained.keras")
    assert model.input_shape == (None, 32, 40, 3) and model.output_shape == (None, 3)
