"""What the test suite shares: synthetic IDX files, small prepared datasets, the small project
and its one shared pipeline run, and running a stage as DVC does (``tests/`` holds only tests and
their conftest)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import yaml

from classifier.dataset import write_splits
from classifier.mnist import CLASSES, SOURCE
from testbed.repo import REPO_ROOT, DvcRepo, commit_all, copy_of_repository, write_params

SHARED_MNIST = REPO_ROOT.parent / "shared" / "datasets" / "mnist"


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """Encode a uint8 array in the IDX format (magic ``00 00 08 <ndim>``, big-endian sizes)."""
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return header + sizes + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def synthetic_digits(count: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random non-empty 28x28 images with balanced labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % classes).astype(np.uint8)
    return images, labels


def write_raw_dir(
    directory: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Path:
    """A data/raw folder holding the four IDX files, as the fetch stage leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        if images.ndim == 4:  # [N, 28, 28, 1], as prepare writes them: IDX holds [N, 28, 28]
            images = images[..., 0]
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return directory


def read_shared_mnist(name: str) -> np.ndarray:
    """One real MNIST file from the shared offline mirror, as an array."""
    data = gzip.decompress((SHARED_MNIST / f"{name}.gz").read_bytes())
    offset = 16 if "images" in name else 8
    array = np.frombuffer(data, np.uint8, offset=offset)
    return array.reshape(-1, 28, 28) if "images" in name else array


def write_prepared_subset(
    directory: Path, train: int, validation: int, test: int, shuffle_labels: int | None = None
) -> Path:
    """A data/prepared folder holding the first examples of real MNIST; with ``shuffle_labels``
    (a seed), the training and validation labels are permuted: a model learns nothing from them."""
    images = read_shared_mnist("train-images-idx3-ubyte")
    labels = read_shared_mnist("train-labels-idx1-ubyte")
    if shuffle_labels is not None:
        labels = np.random.default_rng(shuffle_labels).permutation(labels)
    test_images = read_shared_mnist("t10k-images-idx3-ubyte")
    test_labels = read_shared_mnist("t10k-labels-idx1-ubyte")
    images, test_images = images[..., np.newaxis], test_images[..., np.newaxis]
    parts = {
        "train": (images[:train], labels[:train]),
        "validation": (images[train : train + validation], labels[train : train + validation]),
        "test": (test_images[:test], test_labels[:test]),
    }
    write_splits(directory, SOURCE, "a subset", CLASSES, parts)
    return directory


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def fast_params(**sections: dict) -> dict:
    """The repository's params, made small and fast, with ``sections`` merged over them."""
    params = default_params()
    params["prepare"].update(sample_fraction=0.25)  # MNIST: 13,500 / 1,499 / 2,501 images
    params["build"].update(conv_filters=[8, 16], dense_units=0, learning_rate=0.003)
    params["train"].update(epochs=2, batch_size=128, warmup_fraction=0.1)
    params["test"].update(min_accuracy=0.5, min_class_recall=0.1, worst_examples=12)
    for section, values in sections.items():
        params[section].update(values)
    return params


def small_project(root: Path) -> Path:
    """``root``/repo: a fresh copy of the repository with ``fast_params`` (one epoch) committed,
    and ``root``/shared beside it holding the offline MNIST, as in the README's layout."""
    (root / "shared/datasets").mkdir(parents=True)
    (root / "shared/datasets/mnist").symlink_to(SHARED_MNIST)
    repo = copy_of_repository(root / "repo")
    write_params(repo, fast_params(train={"epochs": 1}))
    commit_all(repo, "fast params")
    return repo


@dataclass(frozen=True)
class RanPipeline:
    """A committed copy of the repository after one cold ``dvc repro`` with ``fast_params``,
    ``shared/`` beside it as in the README's layout: tests that start from a run copy it."""

    RECORD: ClassVar[str] = "ran.json"  # written last: the run is complete
    root: Path  # holds repo/ and shared/
    ran: list[str]  # the stages the cold run executed

    def write(self) -> RanPipeline:
        (self.root / self.RECORD).write_text(json.dumps({"ran": self.ran}))
        return self

    @classmethod
    def read(cls, root: Path) -> RanPipeline:
        return cls(root, json.loads((root / cls.RECORD).read_text())["ran"])

    def copy(self, target: Path, **environment: str) -> DvcRepo:
        """The run, cache and git history included, at ``target``/repo; the copy's own DVC state
        (kept per path) starts empty, as on a machine that never saw it."""
        shutil.copytree(self.root / "repo", target / "repo", symlinks=True)
        shutil.copytree(self.root / "shared", target / "shared", symlinks=True)
        return DvcRepo(target / "repo", **environment)


def run_module(module: str, cwd: Path, *args: str, env: dict | None = None, timeout: int = 600):
    """Run ``python -m stages.<module>`` in ``cwd`` as DVC would, capturing its output."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The stage's own error line (TensorFlow prints start-up chatter on stderr too)."""
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert lines, f"no error line in stderr:\n{result.stderr[-2000:]}"
    return lines[-1]


def saved_model_cli_run(export: Path, images: np.ndarray, directory: Path) -> dict:
    """TensorFlow's own ``saved_model_cli run`` of ``serving_default`` (a TF1 session, as
    TensorFlow Serving loads it): its ``class_index``, ``class_name`` (decoded) and
    ``probabilities``."""
    directory.mkdir()
    np.save(directory / "images.npy", images)
    command = [str(Path(sys.executable).parent / "saved_model_cli"), "run", "--dir", str(export)]
    command += ["--tag_set", "serve", "--signature_def", "serving_default"]
    command += ["--inputs", f"images={directory / 'images.npy'}", "--outdir", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = np.load(directory / "class_name.npy", allow_pickle=True)  # strings: an object array
    return {
        "class_index": np.load(directory / "class_index.npy"),
        "class_name": [name.decode() for name in names],
        "probabilities": np.load(directory / "probabilities.npy"),
    }


def readme_commands(section: str, readme: Path = REPO_ROOT / "README.md") -> list[str]:
    """The commands of the first ``bash`` block under the README heading ``## <section>``."""
    text = readme.read_text()
    body = text.split(f"\n## {section}\n", 1)[1]
    block = body.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def stage_workspace(target: Path, workspace: Path, **test_params) -> Path:
    """A copy of a trained workspace's data and models, with ``fast_params`` and ``test_params``,
    for running ``test`` (and what needs only those) in ``target``."""
    shutil.copytree(workspace / "data", target / "data")
    shutil.copytree(workspace / "models", target / "models")
    write_params(target, fast_params(test=test_params))
    return target


def export_package(model_path: Path, prepared_dir: Path, target: Path) -> Path:
    """A package of the Keras model at ``model_path`` as ``package`` exports it, with the part of
    the model card a champion is read by (the dataset it was trained on)."""
    from classifier.dataset import load_dataset
    from classifier.export import export_savedmodel
    from classifier.model import load_model

    dataset = load_dataset(prepared_dir)
    export_savedmodel(load_model(model_path), target, dataset.classes)
    (target / "assets.extra").mkdir()
    card = {"model_name": "mnist", "dataset": dataset.to_dict(), "trained_model_md5": "0" * 32}
    (target / "assets.extra/model_card.json").write_text(json.dumps(card))
    return target


def write_unreleased_card(directory: Path, model_name: str, note: str = "") -> None:
    """A minimal model card, JSON and Markdown, of the shape ``package`` writes before a release
    (the Markdown's title and its unreleased Release section are what the release rewrites)."""
    from classifier.model_card import UNRELEASED, title

    card = {"model_name": model_name, "note": note}
    (directory / "assets.extra").mkdir(parents=True, exist_ok=True)
    (directory / "assets.extra/model_card.json").write_text(json.dumps(card))
    text = f"{title(card)}\n{note}\n\n## Release\n\n{UNRELEASED}"
    (directory / "assets.extra/model_card.md").write_text(text)
