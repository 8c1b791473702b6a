"""End to end: `dvc repro` in a fresh git copy of this repository, real MNIST served over HTTP.

Small, fast params; asserts on which stages DVC actually ran, not only on exit codes. The cold
run is the suite's shared one (``ran_pipeline``); each test here works in a copy of it. Which
stages each kind of change re-runs is tested in test_remote.py, in a clone fed by the remote.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import yaml

from testbed.repo import ALL_STAGES, DvcRepo
from testbed.suite import RanPipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, ran_pipeline: RanPipeline, http_mirror: str
) -> DvcRepo:
    return ran_pipeline.copy(tmp_path_factory.mktemp("e2e"), MNIST_MIRROR=http_mirror)


@pytest.fixture
def params_restored(pipeline: DvcRepo) -> Iterator[DvcRepo]:
    """The pipeline, with params.yaml put back after the test whether it passed or not."""
    params = pipeline.repo / "params.yaml"
    original = params.read_bytes()
    yield pipeline
    params.write_bytes(original)


def test_cold_repro_runs_every_stage(ran_pipeline: RanPipeline, pipeline: DvcRepo) -> None:
    assert ran_pipeline.ran == ALL_STAGES
    metrics = yaml.safe_load((pipeline.repo / "metrics/test.json").read_text())
    assert metrics["accuracy"] > 0.9  # one epoch of a tiny net on a quarter of MNIST
    assert (pipeline.repo / "dist/mnist/saved_model.pb").is_file()
    assert (pipeline.repo / "dist/mnist/assets.extra/model_card.json").is_file()
    status = pipeline.dvc("status")
    assert "Data and pipelines are up to date." in status.stdout


def test_second_repro_runs_nothing(pipeline: DvcRepo) -> None:
    ran, result = pipeline.repro()
    assert result.returncode == 0
    assert ran == []
    assert "Data and pipelines are up to date." in result.stdout


def test_failing_gate_fails_repro_and_packages_nothing(params_restored: DvcRepo) -> None:
    """`test` records the verdict (so experiments keep their metrics); `package` refuses."""
    pipeline = params_restored
    pipeline.set_params(test={"min_accuracy": 0.9999})
    ran, result = pipeline.repro()
    assert result.returncode != 0
    assert ran == ["test", "package"]
    metrics = yaml.safe_load((pipeline.repo / "metrics/test.json").read_text())
    assert metrics["gate"] == "failed"
    assert (
        f"package: error: quality gate failed: accuracy {metrics['accuracy']:.4f}"
        " < test.min_accuracy 0.9999; the model is not packaged" in result.stderr
    )
    assert not (pipeline.repo / "dist/mnist").exists()


def test_forced_rerun_gives_identical_data_and_models(pipeline: DvcRepo) -> None:
    """Every stage's dvc.lock entry, all outputs included (the SavedModel too), is reproduced."""
    ran, result = pipeline.repro()
    assert result.returncode == 0
    first = pipeline.locked_stages()
    ran, result = pipeline.repro("--force")
    assert result.returncode == 0
    assert ran == ALL_STAGES
    second = pipeline.locked_stages()
    assert sorted(second) == sorted(first) == sorted(ALL_STAGES)
    assert "dist/mnist" in pipeline.locked_hashes()
    for stage in ALL_STAGES:
        assert second[stage] == first[stage], stage


def test_a_copy_of_the_package_as_champion_reruns_test_and_package_with_no_change(
    tmp_path_factory: pytest.TempPathFactory, ran_pipeline: RanPipeline, http_mirror: str
) -> None:
    """The champion's hash is in dvc.lock: bringing one re-runs `test` (and `package`) only,
    and the same model as champion passes with change 0; any change to it re-runs `test`."""
    pipeline = ran_pipeline.copy(tmp_path_factory.mktemp("champion"), MNIST_MIRROR=http_mirror)
    shutil.copytree(pipeline.repo / "dist/mnist", pipeline.repo / "champion/v1")
    pipeline.set_params(test={"champion": "champion/v1"})
    status = pipeline.dvc("status", "test").stdout
    assert "modified:           champion" in status
    ran, result = pipeline.repro()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == ["test", "package"]
    metrics = yaml.safe_load((pipeline.repo / "metrics/test.json").read_text())
    assert metrics["champion_accuracy"] == metrics["accuracy"] and metrics["accuracy_change"] == 0
    locked = yaml.safe_load((pipeline.repo / "dvc.lock").read_text())["stages"]["test"]["deps"]
    champion = next(dep for dep in locked if dep["path"] == "champion")
    assert champion["nfiles"] > 0  # the package's files, by hash
    (pipeline.repo / "champion/v1/assets.extra/model_card.md").write_text("# another card\n")
    ran, result = pipeline.repro()  # the same scores: test's outputs unchanged, package not re-run
    assert result.returncode == 0 and ran == ["test"]
