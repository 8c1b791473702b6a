"""The CircleCI jobs, rehearsed as written in .circleci/config.yml (testbed.rehearsal).

One S3 + OIDC test bed and one origin repository (fast params) serve every scenario;
each asserts which stages ran or were restored, and what reached the bucket. Scenarios 4 and 5
share a run: nothing changed on main, and the job's start token has expired before the push.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ci_jobs.pr_report import MARKER
from testbed.github_api import FakeGitHub
from testbed.rehearsal import PYTHON_STEP, Bed, Rehearsal, Run
from testbed.repo import ALL_STAGES, DvcRepo, commit_all, copy_of_repository, git, write_params
from testbed.s3 import (
    BUCKET,
    PUSH_ROLE,
    READ_ROLE,
    OidcIssuer,
    SeaweedFS,
    bucket_listing,
    dvc_object_key,
    iam_config,
    role_client,
)
from testbed.suite import fast_params

pytestmark = pytest.mark.slow
REPRO = "Reproduce (pull what the remote has, run only what it never ran)"
PUSH = "Push outputs and run-cache (main only, fresh token)"
GPU_CHECK = "Check that TensorFlow sees the GPU"
HAND_OVER = "Hand the job's OIDC token to the AWS credential chain"
PUBLISH = "Publish dist/<model_name>/ as the next free version under releases/ (never overwrites)"
METRICS = "Metrics and params against main, plots page and model card"
REPORT = "Report on the pull request (one comment, updated; GITHUB_TOKEN from the context)"
GITHUB_TOKEN = "ghs-rehearsal-token"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, http_mirror: str):
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam_config(oidc_issuer.url)).start()
    yield Bed(oidc_issuer, server, http_mirror)
    server.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's repository, as CircleCI clones it: main holds fast params, and the
    repository's ``dvc.lock`` (made with the default params: stale in every stage whose params
    differ, ``prepare``'s ``data/prepared`` included, which no run ever pushed to this bucket)."""
    path = copy_of_repository(tmp_path_factory.mktemp("origin") / "repo")
    git(path, "branch", "-M", "main")
    write_params(path, fast_params(train={"epochs": 1}))
    commit_all(path, "fast params")
    return path


class Workflows:
    """Rehearsals in fresh folders; jobs of one workflow share its workspace."""

    def __init__(self, bed: Bed, origin: Path, root: Path) -> None:
        self.bed, self.origin, self.root, self.count = bed, origin, root, 0

    def workspace(self) -> Path:
        self.count += 1
        return self.root / f"workspace-{self.count}"

    def run(self, job: str, branch: str, commit: str, workspace: Path, **options) -> Run:
        self.count += 1
        rehearsal = Rehearsal(self.bed, self.origin, workspace, self.root / f"run-{self.count}")
        return rehearsal.run(job, branch, commit, **options)

    def listing(self) -> dict[str, str]:
        token = self.bed.issuer.mint(ref="refs/heads/inspector")
        return bucket_listing(self.bed.s3.endpoint, token)

    def object(self, key: str) -> bytes:
        token = self.bed.issuer.mint(ref="refs/heads/inspector")
        s3 = role_client(self.bed.s3.endpoint, token, READ_ROLE, "pytest-inspect")
        return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def commit_on_main(self, message: str, **sections: dict) -> str:
        DvcRepo(self.origin).set_params(**sections)
        commit_all(self.origin, message)
        return head(self.origin)

    def commit_on_branch(self, branch: str, base: str, message: str, **sections: dict) -> str:
        """A branch from ``base`` with one commit of params; the origin is left on main."""
        git(self.origin, "checkout", "-q", "-b", branch, base)
        try:
            return self.commit_on_main(message, **sections)
        finally:
            git(self.origin, "checkout", "-q", "main")


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def workflows(bed: Bed, origin: Path, tmp_path_factory: pytest.TempPathFactory) -> Workflows:
    return Workflows(bed, origin, tmp_path_factory.mktemp("rehearsals"))


@pytest.fixture(scope="module")
def first_run(workflows: Workflows, origin: Path) -> tuple[Run, Path, dict[str, str]]:
    """Scenario 1's run: main, empty bucket. Its workspace holds the packaged model."""
    assert workflows.listing() == {}
    workspace = workflows.workspace()
    run = workflows.run("repro", "main", head(origin), workspace)
    return run, workspace, workflows.listing()


def stage_runs(listing: dict[str, str]) -> set[str]:
    """Run-cache entries: ``dvc/runs/<key[:2]>/<key[2:]>/<run>``, one key per stage's inputs."""
    return {key for key in listing if key.startswith("dvc/runs/")}


def stage_keys(listing: dict[str, str]) -> set[str]:
    return {"/".join(key.split("/")[2:4]) for key in stage_runs(listing)}


def test_1_main_empty_bucket_runs_everything_and_pushes(first_run) -> None:
    run, workspace, listing = first_run
    assert run.returncode == 0, run.output[-3000:]
    assert run.stages_ran() == ALL_STAGES
    push = run.step(PUSH).output
    assert f"{len(ALL_STAGES)} run-cache entries pushed" in push
    assert any(key.startswith("dvc/files/md5/") for key in listing)
    assert len(stage_keys(listing)) == len(stage_runs(listing)) == len(ALL_STAGES)
    assert not any(key.startswith("releases/") for key in listing)
    test_metrics = json.loads((run.artifacts / "metrics/test.json").read_text())
    assert test_metrics["gate"] == "passed"
    assert (run.artifacts / "model-card/model_card.md").is_file()
    assert "metrics/test.json" in (run.artifacts / "metrics-diff.md").read_text()
    assert (workspace / "dist/mnist/saved_model.pb").is_file()
    assert (workspace / "dvc.lock").is_file()  # for the release, which records it
    kept = f"dvc/locks/{run.env['CIRCLE_SHA1']}.lock"  # main's lock of record, for PR diffs
    assert "main_lock: no dvc.lock of record for " in run.step(METRICS).output  # not yet kept
    assert kept in listing and f"main_lock: dvc.lock kept at s3://mnist-dvc/{kept}" in run.output
    assert run.start_token not in run.output


def test_2_branch_reruns_nothing_pushes_nothing_and_could_not_push(
    first_run, workflows: Workflows, origin: Path
) -> None:
    _, _, before = first_run
    run = workflows.run("repro", "feature/no-change", head(origin), workflows.workspace())
    assert run.returncode == 0, run.output[-3000:]
    assert run.stages_ran() == []
    assert "not main: nothing is pushed" in run.step(PUSH).output
    assert json.loads((run.artifacts / "metrics/test.json").read_text())["gate"] == "passed"
    assert workflows.listing() == before

    (run.checkout / "notes.txt").write_text("a branch's new data\n")
    attempt = subprocess.run(
        [
            "/bin/bash",
            "-eo",
            "pipefail",
            "-c",
            "dvc add -q notes.txt && python -m ci_jobs.remote push",
        ],
        cwd=run.checkout,
        env=run.env,
        capture_output=True,
        text=True,
    )
    assert attempt.returncode == 1
    assert f"role {READ_ROLE} may not write to the remote" in attempt.stderr
    assert workflows.listing() == before


def test_4_5_main_unchanged_with_an_expired_start_token(
    first_run, workflows: Workflows, origin: Path
) -> None:
    """No stage runs, nothing is uploaded; the push needs, and gets, a token minted just now."""
    lifetime_s = 80  # the hand-over comes about 7 s after the job starts
    _, _, before = first_run
    run = workflows.run(
        "repro",
        "main",
        head(origin),
        workflows.workspace(),
        token_lifetime_s=lifetime_s,
        expire_token_before=PUSH,
    )
    assert run.returncode == 0, run.output[-3000:]
    # the token had the minute web_identity requires at hand-over, and expired before the push
    assert run.step(HAND_OVER).started_s < lifetime_s - 60 < lifetime_s < run.step(PUSH).started_s
    assert run.stages_ran() == []
    push = run.step(PUSH).output
    assert "web_identity: fresh token for " in push
    assert "Everything is up to date." in push and "0 run-cache entries pushed" in push
    assert workflows.listing() == before


def test_7_release_publishes_version_1_then_knows_it_did(
    first_run, workflows: Workflows, origin: Path
) -> None:
    """The first run installs as CircleCI does: the config's Python choice and a fresh .venv
    from the hash-checked lock (no stand-in), which then publishes."""
    _, workspace, _ = first_run
    first = workflows.run("release", "main", head(origin), workspace, real_install=True)
    assert first.returncode == 0, first.output[-3000:]
    venv = first.checkout / ".venv"
    assert venv.is_dir() and not venv.is_symlink()
    chosen = first.step(PYTHON_STEP).output
    if shutil.which("pyenv"):
        version = re.search(r"setup: Python (3\.1[123]\.\d+) \(pyenv\)", chosen).group(1)
        assert next(venv.glob("lib/python*")).name == "python" + ".".join(version.split(".")[:2])
    published = {k: v for k, v in workflows.listing().items() if k.startswith("releases/")}
    packaged = sorted(
        f"mnist/1/{p.relative_to(workspace / 'dist/mnist')}"
        for p in (workspace / "dist/mnist").rglob("*")
        if p.is_file()
    )
    own = ["mnist/1/MANIFEST.json", "mnist/1/assets.extra/dvc.lock"]  # what only a release has
    assert sorted(key.removeprefix("releases/") for key in published) == sorted(packaged + own)
    assert "release: version 1: " in first.step(PUBLISH).output
    card = json.loads(workflows.object("releases/mnist/1/assets.extra/model_card.json"))
    assert card["release"]["version"] == 1
    assert card["release"]["git_commit"] == head(origin)
    lock = workflows.object("releases/mnist/1/assets.extra/dvc.lock")
    assert lock == (workspace / "dvc.lock").read_bytes()  # the repro job's, not the commit's
    assert card["release"]["dvc_lock_sha256"] == hashlib.sha256(lock).hexdigest()
    before = workflows.listing()

    second = workflows.run("release", "main", head(origin), workspace)
    assert second.returncode == 0
    assert second.step(PUBLISH).output.strip().splitlines()[-1] == (
        "release: this model is already published as version 1; nothing to do"
    )
    assert workflows.listing() == before


SWEEP = {"sweep": "train.batch_size=256", "sweep-nodes": 1}


@pytest.fixture(scope="module")
def swept(first_run, workflows: Workflows, origin: Path) -> tuple[str, Path, Run, Run]:
    """A sweep of train.batch_size=256 on main: its commit, workspace, node and table runs."""
    workspace = workflows.workspace()
    commit = head(origin)
    node = workflows.run("sweep", "main", commit, workspace, pipeline_parameters=SWEEP)
    table = workflows.run("sweep-table", "main", commit, workspace, pipeline_parameters=SWEEP)
    return commit, workspace, node, table


def test_3_promoting_a_swept_param_set_trains_nothing(
    swept, workflows: Workflows, origin: Path
) -> None:
    """A sweep node on main runs train.batch_size=256 and pushes; a main commit setting that
    value (dvc.lock untouched) is then restored from the run-cache: only package runs."""
    _, workspace, node, table = swept
    assert node.returncode == 0, node.output[-3000:]
    assert node.stages_ran() == ["train", "test"]
    assert "2 run-cache entries pushed" in node.step(PUSH).output
    assert table.returncode == 0, table.output[-3000:]
    recorded = json.loads((workspace / "sweep-results/node-0.json").read_text())
    row = (table.artifacts / "sweep.md").read_text().splitlines()[4]
    assert row.startswith("| 0 | `train.batch_size=256` | ")
    assert f"{recorded['test']['accuracy']:.4f}" in row
    before = workflows.listing()

    promoted = workflows.commit_on_main("promote the sweep's set", train={"batch_size": 256})
    assert git(origin, "diff", "--name-only", "HEAD~1").split() == ["params.yaml"]
    run = workflows.run("repro", "main", promoted, workflows.workspace())
    assert run.returncode == 0, run.output[-3000:]
    # unchanged stages are pulled, train and test (new params) come from the sweep's run-cache;
    # nothing trains, only package (never run with these params) runs
    assert run.stages_restored()[-3:] == ["build", "train", "test"]
    assert run.stages_ran() == ["package"]
    after = workflows.listing()
    assert set(before) < set(after)
    assert len(stage_runs(after) - stage_runs(before)) == 1  # package's run-cache entry


def test_9_a_pull_request_gets_one_report_comment_with_its_diffs_against_main(
    swept, workflows: Workflows
) -> None:
    """A PR's branch sets the swept value (train and test come from the sweep's run-cache); the
    repro job pushes nothing, and the pr-report job after it (the only one the workflow gives
    the github-pr-report context) replaces the report an earlier run left with the real diffs
    against main and links to the repro job's artifacts."""
    base = swept[0]
    branch = "feature/batch-256"
    commit = workflows.commit_on_branch(branch, base, "batch 256", train={"batch_size": 256})
    github = FakeGitHub("example-org/mnist-pipeline", GITHUB_TOKEN).start()
    try:
        github.open_pull_request(branch, 3)
        earlier = github.add_comment(3, f"{MARKER}\nan earlier run's report", login="ci-bot")
        contexts = {
            "github-pr-report": {"GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_API_URL": github.url}
        }
        workspace = workflows.workspace()
        run = workflows.run("repro", branch, commit, workspace, contexts=contexts)
        assert github.requests == []  # the repro job holds no token: only pr-report does
        report = workflows.run("pr-report", branch, commit, workspace, contexts=contexts)
    finally:
        github.stop()
    assert run.returncode == 0, run.output[-3000:]
    assert report.returncode == 0, report.output[-3000:]
    assert "train" not in run.stages_ran()
    edits = [(r.method, r.path) for r in github.requests if r.method != "GET"]
    assert edits == [
        ("PATCH", f"/repos/example-org/mnist-pipeline/issues/comments/{earlier['id']}")
    ]
    assert {r.authorization for r in github.requests} == {f"Bearer {GITHUB_TOKEN}"}
    metrics = (run.artifacts / "metrics-diff.md").read_text().strip()
    params = (run.artifacts / "params-diff.md").read_text().strip()
    # main's values come from the dvc.lock its CI kept (CI never commits dvc.lock)
    accuracy = next(row for row in metrics.splitlines() if "| accuracy " in row).split("|")
    main_value, branch_value = float(accuracy[3]), float(accuracy[4])
    assert 0.5 < main_value != branch_value > 0.5, accuracy
    assert f"main@{base[:8]}" in metrics
    assert "train.batch_size" in params and "128" in params and "256" in params
    assert metrics in earlier["body"] and params in earlier["body"]
    assert "an earlier run's report" not in earlier["body"]
    assert "pr-report: pull request #3: updated" in report.step(REPORT).output
    job = run.env["CIRCLE_WORKFLOW_JOB_ID"]  # the links name the repro job's artifacts
    assert f"https://output.circle-artifacts.com/output/job/{job}/artifacts/0/" in earlier["body"]
    assert "not main: nothing is pushed" in run.step(PUSH).output
    assert GITHUB_TOKEN not in run.output + report.output


def test_10_a_tampered_model_in_the_remote_stops_the_job_before_anything_trains(
    first_run, workflows: Workflows, bed: Bed
) -> None:
    """main pushed a model; someone overwrites its object in the bucket. With ``verify = true``
    DVC drops the download, and plain ``dvc repro --pull`` would silently retrain (on a GPU,
    hours); the job's repro stops at once, naming the output. Nothing tampered is checked out,
    nothing trains, nothing is pushed or packaged."""
    run, _, _ = first_run
    locked = yaml.safe_load((run.checkout / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in locked["stages"]["train"]["outs"]}
    md5 = outs["models/model.keras"]
    key = dvc_object_key(md5, "dvc")
    writer = role_client(bed.s3.endpoint, bed.issuer.mint(), PUSH_ROLE, "tamper")
    original = writer.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    writer.put_object(Bucket=BUCKET, Key=key, Body=b"a model someone swapped in")
    before = workflows.listing()
    try:
        commit = run.env["CIRCLE_SHA1"]  # main before any later scenario changed it
        workspace = workflows.workspace()
        tampered = workflows.run("repro", "feature/tampered", commit, workspace)
        after = workflows.listing()
    finally:
        writer.put_object(Bucket=BUCKET, Key=key, Body=original)
    failed = next(step for step in tampered.steps if step.returncode)
    assert failed.name == REPRO and failed.returncode == 1
    assert failed.output.strip().splitlines()[-1] == (
        "remote: stopped `dvc repro --pull`: models/model.keras: its copy (downloaded from the"
        " remote, or in the local cache) does not hash to what the run-cache records (md5"
        f" {md5}): someone changed it; nothing was trained or packaged from it; restore the"
        " object from a trusted copy (bucket versioning, or a push from main's CI), then re-run"
    )
    assert tampered.stages_ran() == []
    assert not (tampered.checkout / "models/model.keras").exists()
    assert not (workspace / "dist").exists() and not any(s.name == PUSH for s in tampered.steps)
    assert after == before


def test_6_failed_gate_fails_the_job_pushes_nothing_releases_nothing(
    first_run, workflows: Workflows
) -> None:
    before = workflows.listing()
    commit = workflows.commit_on_main("a gate no model passes", test={"min_accuracy": 0.9999})
    workspace = workflows.workspace()
    run = workflows.run("repro", "main", commit, workspace)
    failed = next(step for step in run.steps if step.returncode)
    assert failed.name == REPRO
    assert run.returncode == failed.returncode == 255  # dvc repro's status for a failed stage
    assert run.steps[-1].name.startswith("store_artifacts")  # uploads still ran
    assert "package: error: quality gate failed: accuracy" in failed.output
    assert "test" in run.stages_ran() and "package" in run.stages_ran()
    assert not any(step.name == PUSH for step in run.steps)
    assert json.loads((run.artifacts / "metrics/test.json").read_text())["gate"] == "failed"
    assert not (workspace / "dist").exists()

    release = workflows.run("release", "main", commit, workspace)
    assert release.returncode == 1
    assert (
        release.step(PUBLISH)
        .output.strip()
        .splitlines()[-1]
        .startswith(
            "release: error: dist/mnist does not exist; only a model that passed the quality gate"
        )
    )
    assert workflows.listing() == before


def test_8_gpu_check_fails_with_its_reason_where_a_gpu_is_required(
    workflows: Workflows, origin: Path
) -> None:
    run = workflows.run("repro", "main", head(origin), workflows.workspace(), gpu_required=True)
    assert run.returncode == 1
    failed = next(step for step in run.steps if step.returncode)
    assert failed.name == GPU_CHECK
    assert "nvidia-smi: not available" in failed.output
    assert "gpu_check: error: TensorFlow sees no GPU" in failed.output
    assert run.stages_ran() == []
    assert not any(step.name == REPRO for step in run.steps)
