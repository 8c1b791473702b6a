"""End to end: `dvc repro` in a fresh git copy of this repository, real MNIST served over HTTP.

Small, fast params; asserts on which stages DVC actually ran, not only on exit codes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import commit_all, copy_of_repository, fast_params, write_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


class Pipeline:
    def __init__(self, repo: Path, mirror: str):
        self.repo = repo
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MNIST_MIRROR": mirror,
            "PYTHONPATH": "",
        }

    def dvc(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "dvc"), *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def repro(self, *args: str) -> tuple[list[str], subprocess.CompletedProcess]:
        result = self.dvc("repro", *args)
        return re.findall(r"Running stage '(\w+)'", result.stdout), result

    def set_params(self, **sections: dict) -> None:
        params = yaml.safe_load((self.repo / "params.yaml").read_text())
        for section, values in sections.items():
            params[section].update(values)
        write_params(self.repo, params)

    def locked_hashes(self) -> dict[str, str]:
        lock = yaml.safe_load((self.repo / "dvc.lock").read_text())["stages"]
        return {
            out["path"]: out["md5"]
            for stage in lock.values()
            for key in ("outs",)
            for out in stage.get(key, [])
        }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, http_mirror: str) -> Pipeline:
    repo = copy_of_repository(tmp_path_factory.mktemp("repo"))
    write_params(repo, fast_params(train={"epochs": 1}))
    commit_all(repo, "fast params")
    return Pipeline(repo, http_mirror)


ALL_STAGES = ["fetch", "prepare", "build", "train", "test", "package"]


def test_cold_repro_runs_every_stage(pipeline: Pipeline) -> None:
    ran, result = pipeline.repro()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran == ALL_STAGES
    metrics = yaml.safe_load((pipeline.repo / "metrics/test.json").read_text())
    assert metrics["accuracy"] > 0.9  # one epoch of a tiny net on all of MNIST
    assert (pipeline.repo / "dist/mnist/1/saved_model.pb").is_file()
    assert (pipeline.repo / "dist/mnist/1/assets.extra/model_card.json").is_file()
    status = pipeline.dvc("status")
    assert "Data and pipelines are up to date." in status.stdout


def test_second_repro_runs_nothing(pipeline: Pipeline) -> None:
    ran, result = pipeline.repro()
    assert result.returncode == 0
    assert ran == []
    assert "Data and pipelines are up to date." in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"package": {"version": 2}}, ["package"]),
        ({"test": {"worst_examples": 6}}, ["test", "package"]),
        ({"train": {"batch_size": 256}}, ["train", "test", "package"]),
        ({"build": {"dropout": 0.2}}, ["build", "train", "test", "package"]),
        ({"prepare": {"seed": 7}}, ["prepare", "train", "test", "package"]),
    ],
    ids=["package", "test", "train", "build", "prepare"],
)
def test_a_param_change_reruns_only_what_depends_on_it(
    pipeline: Pipeline, change: dict, expected: list[str]
) -> None:
    pipeline.set_params(**change)
    ran, result = pipeline.repro()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran == expected


def test_failing_gate_stops_before_package(pipeline: Pipeline) -> None:
    before = (pipeline.repo / "dist/mnist/2/saved_model.pb").read_bytes()
    pipeline.set_params(test={"min_accuracy": 0.9999})
    ran, result = pipeline.repro()
    assert result.returncode != 0
    assert ran == ["test"]
    assert "test: error: quality gate failed: accuracy 0." in result.stderr
    assert "< test.min_accuracy 0.9999" in result.stderr
    assert (pipeline.repo / "metrics/test.json").exists()  # kept for inspection
    assert (pipeline.repo / "dist/mnist/2/saved_model.pb").read_bytes() == before
    pipeline.set_params(test={"min_accuracy": 0.5})


def test_forced_rerun_gives_identical_data_and_models(pipeline: Pipeline) -> None:
    ran, result = pipeline.repro()
    assert result.returncode == 0
    first = pipeline.locked_hashes()
    ran, result = pipeline.repro("--force")
    assert result.returncode == 0
    assert ran == ALL_STAGES
    second = pipeline.locked_hashes()
    for path in (
        "data/raw",
        "data/prepared",
        "models/untrained.keras",
        "models/model.keras",
        "models/summary.txt",
    ):
        assert first[path] == second[path], path
