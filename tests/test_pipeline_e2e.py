"""End to end: `dvc repro` in a fresh git copy of this repository, real MNIST served over HTTP.

Small, fast params; asserts on which stages DVC actually ran, not only on exit codes. The cold
run is the suite's shared one (``ran_pipeline``); each test here works in a copy of it. Which
stages each kind of change re-runs is tested in test_remote.py, in a clone fed by the remote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from testbed.repo import ALL_STAGES, DvcRepo
from tests.helpers import RanPipeline

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
