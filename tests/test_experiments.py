"""Tuning exactly as docs/tuning.md does it, in a fresh copy of the repository.

An experiment runs up to `test`, so every one keeps its own metrics and gate verdict, passing or
not; a queued sweep runs in temporary copies elsewhere; `dvc repro` still fails for a model below
the gate; promoting the best experiment restores it from the run-cache instead of training again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testbed.repo import BIN, DvcRepo
from testbed.suite import RanPipeline, small_project

pytestmark = pytest.mark.slow
README_MIRROR = "../shared/datasets/mnist"  # the README's setting, relative to the repository
GOOD_RATE, BAD_RATE = "0.003", "0.000001"  # one epoch at 1e-6 stays far below the gate


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, ran_pipeline: RanPipeline) -> DvcRepo:
    """The pipeline run once and committed (a copy of the suite's shared run, in the README's
    layout): the baseline every experiment is compared with."""
    return ran_pipeline.copy(tmp_path_factory.mktemp("tuning"), MNIST_MIRROR=README_MIRROR)


def experiments(project: DvcRepo) -> dict[str, dict]:
    """Experiment name -> its state, params and test metrics, from `dvc exp show --json`."""
    result = project.dvc("exp", "show", "--json")
    assert result.returncode == 0, result.stderr
    found = {}
    for baseline_row in json.loads(result.stdout)[1:]:
        for experiment in baseline_row.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            found[experiment["name"]] = {
                "state": (experiment.get("executor") or {}).get("state", "done"),
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"]["metrics/test.json"]["data"],
            }
    return found


def wait_for_queue(project: DvcRepo, timeout_s: float = 900) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Running" not in status and "Queued" not in status:
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def back_to_baseline(project: DvcRepo) -> None:
    """A workspace experiment leaves its results in the workspace; start again from the commit."""
    for command in (("git", "checkout", "--", "."), (str(BIN / "dvc"), "checkout", "--force")):
        result = project.run(*command)
        assert result.returncode == 0, result.stderr


def test_temporary_experiment_fetches_with_the_readme_mirror(
    tmp_path: Path, shared_mnist: Path
) -> None:
    """`dvc exp run --temp` runs in a copy elsewhere: the relative mirror still resolves."""
    project = DvcRepo(small_project(tmp_path), MNIST_MIRROR=README_MIRROR)
    result = project.dvc("exp", "run", "--temp", "fetch")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    source = project.repo / README_MIRROR
    assert f"fetch: train-images-idx3-ubyte verified (from {source})" in result.stdout


def test_an_experiment_records_its_params_and_metrics(baseline: DvcRepo) -> None:
    ran, result = baseline.ran("exp", "run", "-S", "train.batch_size=64", "test")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == ["train", "test"]
    (name,) = experiments(baseline)
    experiment = experiments(baseline)[name]
    assert experiment["params"]["train"]["batch_size"] == 64
    measured = json.loads((baseline.repo / "metrics/test.json").read_text())
    assert experiment["metrics"] == measured
    assert experiment["metrics"]["gate"] == "passed"

    table = baseline.dvc("exp", "show", "--only-changed", env={"COLUMNS": "120"}).stdout
    header = next(line for line in table.splitlines() if "Experiment" in line)
    assert header.split() == [
        "Experiment", "Created", "accuracy", "loss", "errors", "train.batch_size"
    ]  # fmt: skip
    row = next(line for line in table.splitlines() if name in line)
    assert row.split()[-1] == "64"

    back_to_baseline(baseline)  # the same experiment again, from the same commit
    again, result = baseline.ran("exp", "run", "-S", "train.batch_size=64", "test")
    assert result.returncode == 0
    assert again == []  # the same experiment again: served from the run-cache, nothing trains
    assert "Stage 'train' is cached - skipping run, checking out outputs" in result.stdout


def test_a_sweep_keeps_every_result_and_the_gate_still_holds(baseline: DvcRepo) -> None:
    back_to_baseline(baseline)
    before = set(experiments(baseline))
    grid = f"build.learning_rate={GOOD_RATE},{BAD_RATE}"
    queued = baseline.dvc("exp", "run", "--queue", "-S", grid, "test")
    assert queued.returncode == 0, queued.stderr
    started = baseline.dvc("queue", "start", "-j", "2")
    assert started.returncode == 0, started.stderr
    wait_for_queue(baseline)

    swept = {name: e for name, e in experiments(baseline).items() if name not in before}
    by_rate = {e["params"]["build"]["learning_rate"]: e for e in swept.values()}
    assert sorted(by_rate) == [float(BAD_RATE), float(GOOD_RATE)]
    assert [e["state"] for e in swept.values()] == ["success", "success"]
    good, bad = by_rate[float(GOOD_RATE)]["metrics"], by_rate[float(BAD_RATE)]["metrics"]
    assert good["gate"] == "passed" and good["accuracy"] > 0.9
    assert bad["gate"] == "failed" and bad["accuracy"] < 0.5  # its own numbers, not another's

    # The failing params in the workspace: `dvc repro` restores their run and refuses to package.
    params = baseline.repo / "params.yaml"
    original = params.read_bytes()
    try:
        baseline.set_params(build={"learning_rate": float(BAD_RATE)})
        ran, result = baseline.repro()
        assert result.returncode != 0
        assert ran == ["package"]  # build, train and test come from the sweep's run-cache
        assert "package: error: quality gate failed: accuracy " in result.stderr
        assert not (baseline.repo / "dist/mnist").exists()
    finally:
        params.write_bytes(original)


def test_promoting_the_best_experiment_trains_nothing(baseline: DvcRepo) -> None:
    back_to_baseline(baseline)
    tried = baseline.dvc("exp", "run", "-S", "train.batch_size=64", "test")  # cached if run above
    assert tried.returncode == 0, tried.stderr
    back_to_baseline(baseline)
    found = experiments(baseline)
    best = max(found, key=lambda name: found[name]["metrics"]["accuracy"])
    applied = baseline.dvc("exp", "apply", best)
    assert applied.returncode == 0, applied.stderr
    ran, result = baseline.repro()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == ["package"]  # the applied experiment's model and metrics are reused as they are
    assert json.loads((baseline.repo / "metrics/test.json").read_text()) == found[best]["metrics"]
    assert (baseline.repo / "dist/mnist/saved_model.pb").is_file()
