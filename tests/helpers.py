"""Test helpers: synthetic IDX files, small prepared datasets, and running stages as DVC does."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from stages.artifacts import save_arrays

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment's bin: dvc, weed, python
ALL_STAGES = ["fetch", "prepare", "build", "train", "test", "package"]
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
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return directory


def read_shared_mnist(name: str) -> np.ndarray:
    """One real MNIST file from the shared offline mirror, as an array."""
    data = gzip.decompress((SHARED_MNIST / f"{name}.gz").read_bytes())
    offset = 16 if "images" in name else 8
    array = np.frombuffer(data, np.uint8, offset=offset)
    return array.reshape(-1, 28, 28) if "images" in name else array


def write_prepared_subset(directory: Path, train: int, validation: int, test: int) -> Path:
    """A data/prepared folder holding the first examples of real MNIST."""
    images = read_shared_mnist("train-images-idx3-ubyte")
    labels = read_shared_mnist("train-labels-idx1-ubyte")
    test_images = read_shared_mnist("t10k-images-idx3-ubyte")
    test_labels = read_shared_mnist("t10k-labels-idx1-ubyte")
    parts = {
        "train": (images[:train], labels[:train]),
        "validation": (images[train : train + validation], labels[train : train + validation]),
        "test": (test_images[:test], test_labels[:test]),
    }
    for name, (x, y) in parts.items():
        save_arrays(directory / name, {"images": x, "labels": y})
    return directory


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def fast_params(**sections: dict) -> dict:
    """The repository's params, made small and fast, with ``sections`` merged over them."""
    params = default_params()
    params["build"].update(conv_filters=[8, 16], learning_rate=0.003)
    params["train"].update(epochs=2, batch_size=128)
    params["test"].update(min_accuracy=0.5, min_class_recall=0.1, worst_examples=12)
    for section, values in sections.items():
        params[section].update(values)
    return params


def write_params(directory: Path, params: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


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


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message)


def copy_of_repository(target: Path) -> Path:
    """A new git repo holding this working tree's files that git would carry (not ignored ones).

    Like a fresh clone, but it includes uncommitted changes, so tests check what is on disk.
    """
    listed = git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    commit_all(target, "copy of the working tree")
    return target


class DvcRepo:
    """A git + DVC working copy, driven as a user would drive it from a shell."""

    def __init__(self, repo: Path, **environment: str):
        self.repo = repo
        ambient = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no stray keys
        self.env = {
            **ambient,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": "",
            **environment,
        }

    def run(self, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.repo,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )

    def dvc(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, env=env)

    def repro(self, *args: str) -> tuple[list[str], subprocess.CompletedProcess]:
        """Run ``dvc repro``; return the stages DVC actually executed, and the result."""
        result = self.dvc("repro", *args)
        return re.findall(r"Running stage '(\w+)'", result.stdout), result

    def set_params(self, **sections: dict) -> None:
        params = yaml.safe_load((self.repo / "params.yaml").read_text())
        for section, values in sections.items():
            params[section].update(values)
        write_params(self.repo, params)

    def locked_stages(self) -> dict[str, dict]:
        """Stage name -> its dvc.lock entry (cmd, deps, params, outs with their md5s)."""
        return yaml.safe_load((self.repo / "dvc.lock").read_text())["stages"]

    def locked_hashes(self) -> dict[str, str]:
        """Output path -> md5, as recorded in dvc.lock."""
        return {
            out["path"]: out["md5"]
            for stage in self.locked_stages().values()
            for out in stage.get("outs", [])
        }
