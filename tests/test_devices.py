"""Where training runs: strategy from the visible GPUs, and the record of it, on fake runtime."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import tensorflow as tf

from classifier import CPU_RECIPE, runtime
from classifier.mnist import MNIST_MODEL_IO
from classifier.model import build_model, load_model, save_model
from classifier.params import BuildParams, parse_params
from classifier.runtime import DEFAULT, FULL, MIRRORED, MIXED, StrategyChoice, choose_strategy
from testbed.suite import fast_params


def _build_params() -> BuildParams:
    return parse_params(fast_params()).build


@pytest.mark.parametrize(
    ("gpus", "choice"),
    [
        ([], StrategyChoice(DEFAULT, ())),
        (["NVIDIA H200"], StrategyChoice(DEFAULT, ())),
        (["NVIDIA A10G"] * 2, StrategyChoice(MIRRORED, ("/gpu:0", "/gpu:1"))),
        (["NVIDIA H100"] * 4, StrategyChoice(MIRRORED, tuple(f"/gpu:{i}" for i in range(4)))),
    ],
)
def test_strategy_is_data_parallel_only_with_several_gpus(gpus: list, choice: StrategyChoice):
    assert choose_strategy(gpus) == choice


def test_strategies_made_from_a_choice() -> None:
    default = runtime.make_strategy(StrategyChoice(DEFAULT, ()))
    assert default is tf.distribute.get_strategy()
    assert (runtime.strategy_name(default), default.num_replicas_in_sync) == (DEFAULT, 1)
    mirrored = runtime.make_strategy(StrategyChoice(MIRRORED, ("/cpu:0",)))
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert (runtime.strategy_name(mirrored), mirrored.num_replicas_in_sync) == (MIRRORED, 1)


def test_gpu_names_come_from_the_device_details(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [
        tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
        tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU"),
    ]
    details = {fake[0]: {"device_name": "NVIDIA H200"}, fake[1]: {}}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: fake)
    monkeypatch.setattr(tf.config.experimental, "get_device_details", details.__getitem__)
    # a device that does not report its model is named by its TensorFlow name
    assert runtime.gpu_names() == ["NVIDIA H200", "/physical_device:GPU:1"]


def test_record_of_two_gpus_in_mixed_precision(tmp_path: Path) -> None:
    """The policy recorded is the one of the model as train loads it from the build stage."""
    save_model(build_model(_build_params(), MIXED, *MNIST_MODEL_IO), tmp_path / "untrained.keras")
    model = load_model(tmp_path / "untrained.keras")
    strategy = runtime.make_strategy(StrategyChoice(MIRRORED, ("/cpu:0",)))
    record = runtime.environment_record(["NVIDIA H200", "NVIDIA H200"], strategy, model)
    build = tf.sysconfig.get_build_info()
    assert record == {
        "device": "2 x GPU",
        "gpus": ["NVIDIA H200", "NVIDIA H200"],
        "gpu_count": 2,
        "precision_policy": "mixed_float16",
        "xla": False,
        "strategy": "MirroredStrategy",
        "workers": 1,
        "replicas": 1,
        "tensorflow": {
            "version": tf.__version__,
            "cuda_build": build["is_cuda_build"],
            "cuda_version": build.get("cuda_version"),
            "cudnn_version": build.get("cudnn_version"),
        },
        "cpu_recipe": CPU_RECIPE,
    }


def test_record_on_a_cpu_names_no_machine() -> None:
    """Every CPU machine writes the same record: no CPU model, host name or time in it."""
    model = build_model(_build_params(), FULL, *MNIST_MODEL_IO)
    record = runtime.environment_record([], tf.distribute.get_strategy(), model)
    assert {key: record[key] for key in ("device", "gpus", "precision_policy", "strategy")} == {
        "device": "CPU",
        "gpus": [],
        "precision_policy": "float32",
        "strategy": "default",
    }
    text = json.dumps(record)
    assert tf.__version__ in text
    for machine_specific in (socket.gethostname(), "Xeon", "AMD", "Intel"):
        assert machine_specific not in text
