""".circleci/config.yml: valid for CircleCI's schema; its jobs do what docs/ci-and-remote.md says.

The steps are read through testbed.rehearsal (reusable commands expanded, pipeline parameters
filled), the same reading the rehearsal executes in tests/test_ci_rehearsal.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.rehearsal import (
    CONFIG,
    executor_of,
    holds,
    job_definition,
    load_config,
    workflows_selected,
)

CONFIG_DATA = load_config()
BIN = Path(sys.executable).parent


def run_steps(job: str) -> list[dict]:
    definition = job_definition(CONFIG_DATA, job, {"sweep": "train.epochs=2", "sweep-nodes": 1})
    return [arguments for kind, arguments in definition["steps"] if kind == "run"]


def commands(job: str) -> list[str]:
    return [step["command"] for step in run_steps(job)]


def position(job: str, needle: str) -> int:
    return next(i for i, command in enumerate(commands(job)) if needle in command)


def step_kinds(job: str) -> list[str]:
    return [kind for kind, _ in job_definition(CONFIG_DATA, job, {})["steps"]]


def test_config_validates_against_circleci_schema() -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.circle-ci", str(CONFIG)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert CONFIG_DATA["version"] == 2.1


def test_schema_check_would_catch_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "config.yml"
    broken.write_text(
        CONFIG.read_text().replace("resource_class: gpu.nvidia.medium", "resource_class: 7")
    )
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.circle-ci", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1


def test_test_job_lints_runs_fast_tests_and_stores_junit() -> None:
    assert "ruff check ." in commands("test")
    pytest_command = commands("test")[position("test", "pytest")]
    assert '-m "not slow"' in pytest_command and "--junitxml=test-results/" in pytest_command
    assert "docker" in CONFIG_DATA["executors"]["cpu"]
    assert step_kinds("test")[-1] == "store_test_results"
    setup = CONFIG_DATA["commands"]["setup"]["steps"]
    key = 'pip-v2-{{ arch }}-{{ checksum "<< parameters.lock >>" }}'  # one per lock
    assert setup[0]["restore_cache"]["keys"] == [key]
    assert next(s["save_cache"] for s in setup if "save_cache" in s)["key"] == key


def test_every_job_installs_from_a_hash_checked_lock_gpu_jobs_from_the_gpu_lock() -> None:
    """The runtime lock for every job but ``test`` (its tools: the dev lock), the GPU lock on a
    GPU."""
    install = next(
        s["run"]["command"] for s in CONFIG_DATA["commands"]["setup"]["steps"]
        if "run" in s and s["run"]["name"] == "Install the locked dependencies"
    ).splitlines()  # fmt: skip
    assert install == [
        "python3 -m bootstrap.python_version",  # a wrong Python stops here, in one line
        "python3 -m venv .venv",
        ".venv/bin/pip install --no-compile --require-hashes -r << parameters.lock >>"
        "  # .pyc on first import: 35% faster",
    ]
    for name, job in CONFIG_DATA["jobs"].items():
        setups = [step for step in job["steps"] if step == "setup" or "setup" in step]
        if not setups:
            continue
        lock = "requirements.lock" if setups[0] == "setup" else setups[0]["setup"]["lock"]
        gpu = "gpu" in job.get("executor", "")
        wanted = "requirements-dev.lock" if name == "test" else "requirements.lock"  # tools
        assert lock == ("requirements-gpu.lock" if gpu else wanted), name


def test_repro_job_runs_only_what_the_remote_never_ran_on_a_gpu() -> None:
    job = CONFIG_DATA["jobs"]["repro"]
    gpu = executor_of(CONFIG_DATA, "repro", {})
    assert gpu["machine"]["image"].startswith("linux-cuda-12:")
    assert gpu["resource_class"].startswith("gpu.nvidia.")
    assert job["steps"][0] == {"checkout": {"method": "full"}}
    repro = run_steps("repro")[position("repro", "dvc repro")]
    lines = repro["command"].strip().splitlines()
    assert lines[-1].split("  #")[0] == "python -m ci_jobs.remote dvc repro --pull"
    assert lines[0].startswith("python -m ci_jobs.web_identity --fresh --every 1200 & refresher=$!")
    assert lines[1] == "trap 'kill $refresher 2>/dev/null || true' EXIT"
    assert repro["no_output_timeout"] == "3h"
    order = [
        position("repro", needle)
        for needle in (
            "ci_jobs.gpu_check",
            "AWS_ROLE_ARN_PUSH",
            "ci_jobs.web_identity",
            "ci_jobs.remote dvc repro --pull",
            "dvc metrics diff",
            "ci_jobs.remote push",
        )
    ]
    assert order == sorted(order)


def test_role_by_branch_and_push_only_from_main_with_a_fresh_token() -> None:
    role = commands("repro")[position("repro", "AWS_ROLE_ARN_PUSH")]
    assert (
        'if [ "$CIRCLE_BRANCH" = main ]; then role=$AWS_ROLE_ARN_PUSH; else role=$AWS_ROLE_ARN_READ'
        in role
    )
    push = commands("repro")[position("repro", "ci_jobs.remote push")]
    lines = push.strip().splitlines()
    assert lines[0].startswith('if [ "$CIRCLE_BRANCH" != main ]; then') and "exit 0" in lines[0]
    assert lines[1:] == ["python -m ci_jobs.web_identity --fresh", "python -m ci_jobs.remote push"]


def test_release_needs_repro_on_main_and_an_approval() -> None:
    jobs = {
        next(iter(entry)) if isinstance(entry, dict) else entry: entry
        for entry in CONFIG_DATA["workflows"]["pipeline"]["jobs"]
    }
    approve = jobs["approve-release"]["approve-release"]
    release = jobs["release"]["release"]
    assert approve["type"] == "approval" and approve["requires"] == ["repro"]
    assert release["requires"] == ["approve-release"]
    for entry in (approve, release):
        assert entry["filters"] == {"branches": {"only": "main"}}
    assert jobs["repro"]["repro"]["requires"] == ["test"]
    assert "AWS_ROLE_ARN_RELEASE" in commands("release")[position("release", "AWS_ROLE_ARN")]
    assert commands("release")[-1] == "python -m ci_jobs.release"
    assert "attach_workspace" in step_kinds("release")


def test_sweep_spreads_param_sets_over_parallel_nodes_and_tables_them() -> None:
    definition = job_definition(CONFIG_DATA, "sweep", {"sweep": "a=1; a=2", "sweep-nodes": 2})
    assert definition["parallelism"] == 2
    run = commands("sweep")[position("sweep", "dvc exp run")]
    assert "python -m ci_jobs.sweep args" in run
    assert (
        run.strip()
        .splitlines()[-1]
        .startswith(
            "python -m ci_jobs.remote dvc exp run --pull --name"  # stopped at a tampered object
        )
    )
    assert run.strip().endswith(" test")  # up to the gate's verdict: failing sets still record
    assert position("sweep", "ci_jobs.sweep record") < position("sweep", "ci_jobs.remote push")
    assert "persist_to_workspace" in step_kinds("sweep")
    assert "ci_jobs.sweep table" in commands("sweep-table")[0]
    assert step_kinds("sweep-table")[-1] == "store_artifacts"


def test_retrain_runs_on_main_with_the_context_and_opens_a_pull_request() -> None:
    """New data and the champion, a repro judged against it, a push, then the pull request;
    the GitHub token only through the context, and only on main."""
    steps = commands("retrain")
    update = position("retrain", "python -m ci_jobs.retrain update")
    assert update > position("retrain", "ci_jobs.web_identity")  # after the role is handed over
    assert "python -m ci_jobs.retrain news" in steps[update + 1]
    assert "ci_jobs.remote dvc repro --pull test" in steps[update + 1]  # through the guard
    assert position("retrain", "ci_jobs.remote push") < len(steps) - 1
    assert steps[-1] == "python -m ci_jobs.retrain pull-request"
    (entry,) = CONFIG_DATA["workflows"]["retrain"]["jobs"]
    assert entry["retrain"]["context"] == "github-pr-report"
    assert entry["retrain"]["filters"] == {"branches": {"only": "main"}}
    environment = CONFIG_DATA["jobs"]["retrain"]["environment"]
    assert environment["RETRAIN_REASON"] == "<< pipeline.parameters.retrain-reason >>"


def test_nightly_audit_forces_a_rerun_on_a_gpu() -> None:
    audit = commands("nightly-audit")[-1]
    assert "dvc repro --force" in audit and "python -m ci_jobs.audit" in audit
    assert executor_of(CONFIG_DATA, "nightly-audit", {}) == executor_of(CONFIG_DATA, "repro", {})


GPU_JOBS = ["repro", "sweep", "nightly-audit", "retrain"]


@pytest.mark.parametrize("job", GPU_JOBS)
def test_a_pipeline_parameter_sends_the_gpu_jobs_to_a_self_hosted_runner(job: str) -> None:
    """CircleCI's self-hosted machine runner: ``machine: true`` and the runner's resource class
    ``<namespace>/<name>``; the cloud GPU stays the default."""
    chosen = {"gpu-executor": "gpu-self-hosted", "self-hosted-resource-class": "acme/a100"}
    assert executor_of(CONFIG_DATA, job, chosen) == {"machine": True, "resource_class": "acme/a100"}
    default = executor_of(CONFIG_DATA, job, {})
    assert default["resource_class"] == "gpu.nvidia.medium" and "image" in default["machine"]


def test_cpu_jobs_stay_on_the_cloud_whatever_the_gpu_runner() -> None:
    chosen = {"gpu-executor": "gpu-self-hosted"}
    cpu_jobs = [job for job in CONFIG_DATA["jobs"] if job not in GPU_JOBS]
    assert cpu_jobs == ["test", "pr-report", "release", "sweep-table", "monitor"]
    for job in cpu_jobs:
        assert executor_of(CONFIG_DATA, job, chosen) == CONFIG_DATA["executors"]["cpu"], job


def test_the_runner_choice_is_an_enum_of_executors_the_config_has() -> None:
    """An enum: CircleCI refuses a misspelt value when the pipeline is triggered."""
    choice = CONFIG_DATA["parameters"]["gpu-executor"]
    assert choice["type"] == "enum" and choice["default"] == "gpu-cloud"
    assert set(choice["enum"]) <= set(CONFIG_DATA["executors"])


@pytest.mark.parametrize(
    ("trigger", "parameters", "workflows"),
    [
        ("a push", {}, ["pipeline"]),
        ("the nightly schedule", {"nightly": True}, ["nightly"]),
        ("a sweep from the API", {"sweep": "train.epochs=2", "sweep-nodes": 1}, ["sweep"]),
        ("the retrain schedule", {"retrain": True}, ["retrain"]),
        ("a retrain from the API", {"retrain": True, "retrain-reason": "drift"}, ["retrain"]),
        ("the monitor schedule", {"monitor": True}, ["monitor"]),
        ("a monitor of a given day", {"monitor": True, "monitor-day": "2026-12-06"}, ["monitor"]),
    ],
)
def test_each_trigger_runs_exactly_its_workflow(
    trigger: str, parameters: dict, workflows: list[str]
) -> None:
    """Workflows are chosen by pipeline parameters alone, with CircleCI's logic statements."""
    assert workflows_selected(CONFIG_DATA, parameters) == workflows, trigger


def test_no_workflow_depends_on_retired_pipeline_values() -> None:
    """pipeline.trigger_source is deprecated (support ended 2026-08-01); pipeline.schedule.* is
    documented for GitHub OAuth and Bitbucket pipelines only, not GitHub App ones."""
    used = re.findall(r"<<\s*(pipeline\.[\w.-]+)\s*>>", CONFIG.read_text())
    assert used and not [value for value in used if not value.startswith("pipeline.parameters.")]


def test_the_logic_statements_are_read_as_circleci_defines_them() -> None:
    assert holds({"and": [True, {"not": False}, {"equal": ["a", "a"]}]})
    assert not holds({"or": ["", 0, None, {"equal": [1, 2]}]})
    assert holds({"matches": {"pattern": "^main$", "value": "main"}})
    assert not holds({"matches": {"pattern": "^main$", "value": "main2"}})


def test_the_monitor_runs_daily_on_main_with_the_api_context() -> None:
    """The role first (the push role on main: it reads monitoring/ and claims the day), then the
    monitor of the chosen day, its report kept; CIRCLE_TOKEN only through the context."""
    steps = commands("monitor")
    assert position("monitor", "python -m ci_jobs.monitor") > position("monitor", "web_identity")
    assert 'python -m ci_jobs.monitor ${day:+--day "$day"}' in steps[-1]
    assert "<< pipeline.parameters.monitor-day >>" not in steps[-1]  # filled in
    assert step_kinds("monitor")[-1] == "store_artifacts"
    (entry,) = CONFIG_DATA["workflows"]["monitor"]["jobs"]
    assert entry["monitor"]["context"] == "circleci-api"
    assert entry["monitor"]["filters"] == {"branches": {"only": "main"}}


@pytest.mark.parametrize("job", ["repro", "sweep", "nightly-audit", "release", "monitor"])
def test_no_static_credentials(job: str) -> None:
    text = CONFIG.read_text()
    environment = CONFIG_DATA["jobs"][job]["environment"]
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert environment["AWS_WEB_IDENTITY_TOKEN_FILE"].startswith("/tmp/")
    assert "AWS_ENDPOINT_URL" not in environment  # it would redirect STS too


def choose_python(tmp_path: Path, versions: list[str]) -> tuple[subprocess.CompletedProcess, str]:
    """The setup's "Choose a supported Python" step, run as CircleCI runs it, with a pyenv that
    has ``versions``: its result, and what it left in $BASH_ENV for the later steps."""
    step = next(
        s["run"] for s in CONFIG_DATA["commands"]["setup"]["steps"]
        if "run" in s and s["run"]["name"] == "Choose a supported Python"
    )  # fmt: skip
    fake = tmp_path / "bin"
    fake.mkdir()
    listing = "\\n".join(versions)
    answer = f"[ \"$1 $2\" = 'versions --bare' ] && printf '{listing}\\n'"
    (fake / "pyenv").write_text(f"#!/bin/sh\n{answer}\n")
    (fake / "pyenv").chmod(0o755)
    bash_env = tmp_path / "bash_env"
    bash_env.touch()
    result = subprocess.run(
        ["/bin/bash", "-eo", "pipefail", "-c", step["command"]],
        env={"PATH": f"{fake}:/usr/bin:/bin", "BASH_ENV": str(bash_env)},
        capture_output=True,
        text=True,
    )
    return result, bash_env.read_text()


def test_setup_takes_the_newest_python_3_11_that_pyenv_has(tmp_path: Path) -> None:
    result, later = choose_python(tmp_path, ["3.10.13", "3.11.4", "3.11.10", "3.12.1", "system"])
    assert result.returncode == 0, result.stderr
    assert later == "export PYENV_VERSION=3.11.10\n"


def test_setup_stops_at_once_without_a_supported_python(tmp_path: Path) -> None:
    result, later = choose_python(tmp_path, ["3.9.18", "3.10.13", "3.14.0"])
    assert result.returncode == 1 and later == ""
    assert result.stderr.splitlines() == [
        "setup: error: pyenv has no Python 3.11-3.13 (it has: 3.9.18 3.10.13 3.14.0); pin an"
        " image tag that has one, or add `pyenv install 3.11` here"
    ]
