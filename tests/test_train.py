"""The train stage: seeded per-epoch order, exact resume after a kill, NaN stops with a cause."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.optimizers import LossScaleOptimizer

from classifier import CPU_RECIPE
from classifier.dataset import load_split, write_splits
from classifier.errors import StageError
from classifier.mnist import MNIST_MODEL_IO
from classifier.model import build_model, load_model, save_model
from classifier.params import TrainParams, parse_params
from classifier.paths import Paths
from classifier.runtime import FULL, MIXED
from classifier.streams import training_batches
from classifier.training import learning_rate_schedule
from stages.train import train
from testbed.repo import REPO_ROOT, write_params
from testbed.suite import fast_params, write_prepared_subset


def _train_params(**changes) -> TrainParams:
    return TrainParams(**{**fast_params()["train"], **changes})


def _epoch_batches(dataset) -> list[list[int]]:
    return [images[:, 0, 0, 0].numpy().tolist() for images, _ in dataset]


def test_each_epoch_order_depends_only_on_seed_and_epoch(tmp_path: Path) -> None:
    ids = np.arange(10, dtype=np.uint8)
    images = np.repeat(ids, 28 * 28).reshape(10, 28, 28, 1)  # pixel value = example id
    splits = {"train": (images, ids % 3)}
    dataset = write_splits(tmp_path, "ids", "-", ("a", "b", "c"), splits, examples_per_shard=3)
    assert len(dataset.shard_paths(tmp_path, "train")) == 4  # 3 + 3 + 3 + 1 records

    def batches(seed: int, first_epoch: int, epochs: int) -> list[list[int]]:
        return _epoch_batches(training_batches(dataset, tmp_path, 4, seed, first_epoch, epochs))

    full = batches(seed=1, first_epoch=0, epochs=3)
    assert [len(b) for b in full] == [4, 4, 2] * 3  # batches never span two epochs
    epochs = [[i for batch in full[e : e + 3] for i in batch] for e in (0, 3, 6)]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    assert batches(seed=1, first_epoch=1, epochs=3) == full[3:]
    assert batches(seed=2, first_epoch=0, epochs=1) != full[:3]
    one_hot_labels = next(iter(training_batches(dataset, tmp_path, 10, 1, 0, 1)))[1].numpy()
    assert one_hot_labels.shape == (10, 3) and one_hot_labels.sum() == 10


def test_learning_rate_schedules() -> None:
    assert learning_rate_schedule(0.01, _train_params(lr_schedule="constant"), 10) == 0.01
    cosine = learning_rate_schedule(0.01, _train_params(epochs=4, warmup_fraction=0.25), 10)
    assert float(cosine(0)) == pytest.approx(0.0)
    assert float(cosine(10)) == pytest.approx(0.01)  # warm-up ends after one of four epochs
    assert float(cosine(25)) == pytest.approx(0.005)  # halfway through the cosine
    assert float(cosine(40)) == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate_schedule(0.01, _train_params(epochs=2, warmup_fraction=0.0), 10)
    assert float(no_warmup(0)) == pytest.approx(0.01)


def _workspace(root: Path, policy: str = FULL, **train_changes) -> tuple[Path, TrainParams]:
    root.mkdir(parents=True, exist_ok=True)
    raw = fast_params(train=train_changes)
    write_params(root, raw)
    params = parse_params(raw)
    write_prepared_subset(root / "data/prepared", train=1000, validation=200, test=10)
    save_model(build_model(params.build, policy, *MNIST_MODEL_IO), root / "models/untrained.keras")
    return root, params.train


def _run(root: Path, params: TrainParams, callbacks=(), strategy=None) -> list[dict]:
    return train(params, Paths(root), extra_callbacks=callbacks, strategy=strategy).history


def _outputs(root: Path) -> dict[str, bytes]:
    files = [
        root / "models/model.keras",
        root / "reports/train.json",
        *sorted((root / "metrics/train").rglob("*.*")),
    ]
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


class _EpochsTrained(keras.callbacks.Callback):
    """Records which epochs this run really trained (0-based), and whether a checkpoint existed
    when training began."""

    def __init__(self, state_dir: Path):
        super().__init__()
        self.state_dir, self.epochs, self.checkpoint_at_start = state_dir, [], None

    def on_train_begin(self, logs=None) -> None:
        self.checkpoint_at_start = self.state_dir.exists()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epochs.append(epoch)


class _Crash(keras.callbacks.Callback):
    """Dies right after the checkpoint of ``epoch`` is written, like a killed process."""

    def __init__(self, epoch: int):
        super().__init__()
        self.crash_epoch = epoch

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch == self.crash_epoch:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    reference, params = _workspace(tmp_path / "reference", epochs=3)
    history = _run(reference, params)
    assert len(history) == 3
    assert history[-1]["val_accuracy"] > 0.5  # it learned something real (chance: 0.1)
    assert not (reference / ".train-state").exists()

    interrupted, params = _workspace(tmp_path / "interrupted", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _run(interrupted, params, callbacks=(_Crash(epoch=1),))
    progress = json.loads((interrupted / ".train-state/progress.json").read_text())
    assert len(progress["history"]) == 2
    assert not (interrupted / "models/model.keras").exists()
    trained = _EpochsTrained(interrupted / ".train-state")
    resumed_history = _run(interrupted, params, callbacks=(trained,))

    assert trained.epochs == [2]  # epochs 0 and 1 came from the checkpoint, not trained again
    assert resumed_history == history
    assert _outputs(interrupted) == _outputs(reference)
    metrics = json.loads((interrupted / "metrics/train/metrics.json").read_text())
    assert metrics["step"] == 3  # epochs are counted from 1, as in the training log
    loss_curve = (interrupted / "metrics/train/plots/metrics/train/loss.tsv").read_text()
    assert [line.split("\t")[0] for line in loss_curve.splitlines()] == ["step", "1", "2", "3"]
    assert metrics["eval"]["accuracy"] == pytest.approx(history[-1]["val_accuracy"])


def test_checkpoint_of_another_run_is_discarded(tmp_path: Path, capsys) -> None:
    root, params = _workspace(tmp_path, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        _run(root, params, callbacks=(_Crash(epoch=0),))
    assert len(json.loads((root / ".train-state/progress.json").read_text())["history"]) == 1
    capsys.readouterr()

    changed = TrainParams(**{**params.model_dump(), "batch_size": 64})
    trained = _EpochsTrained(root / ".train-state")
    history = _run(root, changed, callbacks=(trained,))
    assert "train: discarding " in capsys.readouterr().out
    assert trained.checkpoint_at_start is False  # removed before the first epoch began
    assert trained.epochs == [0, 1]  # all epochs trained: nothing was taken from the other run
    assert len(history) == 2
    assert (root / "metrics/train/plots/metrics/train/loss.tsv").read_text().count("\n") == 3
    assert not (root / ".train-state").exists()


def test_training_never_reads_the_test_split(tmp_path: Path) -> None:
    """Every file the training code opens, recorded by Python's audit hook while it runs."""
    root, params = _workspace(tmp_path, epochs=1)
    opened: list[Path] = []
    recording = [True]

    def record(event: str, args: tuple) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str | Path):
            opened.append(Path(args[0]).resolve())

    sys.addaudithook(record)  # hooks cannot be removed: this one stops recording below
    try:
        _run(root, params)
    finally:
        recording[0] = False
    prepared = (root / "data/prepared").resolve()
    read = {path.relative_to(prepared).parts[0] for path in opened if prepared in path.parents}
    assert read == {"dataset.json", "train", "validation"}  # the description: classes, shape


def test_nan_loss_stops_with_a_clear_error(tmp_path: Path) -> None:
    root, params = _workspace(tmp_path, epochs=1, lr_schedule="constant")
    broken = build_model(parse_params(fast_params()).build, "float32", *MNIST_MODEL_IO)
    *hidden, kernel, bias = broken.get_weights()  # NaN logits, as if training had diverged
    broken.set_weights([*hidden, np.full_like(kernel, np.nan), bias])
    save_model(broken, root / "models/untrained.keras")
    with pytest.raises(StageError, match=r"training loss became nan at epoch 1, batch 1; lower"):
        _run(root, params)
    assert not (root / "models/model.keras").exists()


@pytest.mark.slow
def test_stage_killed_mid_way_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    """The real thing: SIGKILL the stage process after its first checkpoint, then run it again."""
    command = [sys.executable, "-m", "stages.train"]
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    reference, _ = _workspace(tmp_path / "reference", epochs=4)
    subprocess.run(command, cwd=reference, env=env, check=True, capture_output=True, timeout=300)

    killed, _ = _workspace(tmp_path / "killed", epochs=4)
    process = subprocess.Popen(
        command, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    progress = killed / ".train-state/progress.json"
    deadline = time.monotonic() + 240
    while not progress.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    epochs_done = len(json.loads(progress.read_text())["history"])
    assert 1 <= epochs_done < 4
    assert not (killed / "models/model.keras").exists()

    rerun = subprocess.run(
        command, cwd=killed, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"train: resuming after epoch {epochs_done} of 4" in rerun.stdout
    # Keras announces each epoch it trains: only those after the checkpoint ran again
    epochs_trained = re.findall(r"^Epoch (\d+)/4$", rerun.stdout, flags=re.MULTILINE)
    assert epochs_trained == [str(epoch) for epoch in range(epochs_done + 1, 5)]
    assert _outputs(killed) == _outputs(reference)


def _one_cpu_mirrored() -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy(["/cpu:0"])


def test_distributed_path_on_one_cpu_replica(tmp_path: Path) -> None:
    """What `train` does with several GPUs, run on a CPU: the model, its optimizer, the batches
    and every step go through a MirroredStrategy (here over one CPU device, one replica); a run
    interrupted and resumed under it ends with the same bytes."""
    root, params = _workspace(tmp_path / "uninterrupted", epochs=2)
    history = _run(root, params, strategy=_one_cpu_mirrored())
    assert history[-1]["val_accuracy"] > 0.5  # it learned (chance: 0.1)
    record = json.loads((root / "reports/train.json").read_text())
    assert (record["strategy"], record["replicas"], record["global_batch_size"]) == (
        "MirroredStrategy",
        1,
        params.batch_size,
    )
    assert record["cpu_recipe"] == CPU_RECIPE  # the bytes depend on it: recorded with them
    model = load_model(root / "models/model.keras")
    images, labels = load_split("validation", root / "data/prepared")
    accuracy = float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    assert accuracy == pytest.approx(history[-1]["val_accuracy"], abs=1e-6)

    interrupted, _ = _workspace(tmp_path / "interrupted", epochs=2)
    with pytest.raises(KeyboardInterrupt):
        _run(interrupted, params, callbacks=(_Crash(epoch=0),), strategy=_one_cpu_mirrored())
    trained = _EpochsTrained(interrupted / ".train-state")
    assert _run(interrupted, params, (trained,), _one_cpu_mirrored()) == history
    assert trained.epochs == [1]
    assert _outputs(interrupted) == _outputs(root)


TWO_CPU_REPLICAS = """
import sys
from pathlib import Path

import classifier  # its CPU recipe, before TensorFlow loads
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from classifier.params import load_params
from classifier.paths import Paths
from stages.train import train

for root in map(Path, sys.argv[1:]):
    train(
        load_params(root / "params.yaml").train,
        Paths(root),
        strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    )
"""


def test_two_replicas_scale_batch_and_learning_rate_and_stay_deterministic(
    tmp_path: Path,
) -> None:
    """Two replicas (two logical CPU devices, as two GPUs would be) in mixed precision, as on a
    multi-GPU machine: every step is split between them, the global batch and the peak learning
    rate double, loss scaling is on, and two runs give equal bytes."""
    roots = [
        _workspace(tmp_path / name, policy=MIXED, epochs=1, batch_size=64)[0] for name in ("a", "b")
    ]
    result = subprocess.run(
        [sys.executable, "-c", TWO_CPU_REPLICAS, *map(str, roots)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((roots[0] / "reports/train.json").read_text())
    assert (record["strategy"], record["replicas"], record["global_batch_size"]) == (
        "MirroredStrategy",
        2,
        128,
    )
    assert record["peak_learning_rate"] == pytest.approx(2 * 0.003)
    assert record["precision_policy"] == MIXED
    assert isinstance(load_model(roots[0] / "models/model.keras").optimizer, LossScaleOptimizer)
    assert "8/8" in result.stdout  # 1000 examples in global batches of 128: 8 steps per epoch
    metrics = json.loads((roots[0] / "metrics/train/metrics.json").read_text())
    assert metrics["eval"]["accuracy"] > 0.5
    assert _outputs(roots[0]) == _outputs(roots[1])
