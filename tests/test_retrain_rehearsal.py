"""The retrain workflow of .circleci/config.yml, rehearsed (testbed/rehearsal.py) against the S3
test bed and the GitHub API stand-in: a project whose images are `dvc import`ed from a data
registry is reproduced and released on main as CircleCI would (repro, then release: version 1),
then the retrain job runs with the registry unchanged (nothing new: no branch, no pull request),
after new images (one pull request with the report, the champion release 1 compared), and after a
change that shuffled the training labels (a pull request marked refused).

Coloured shapes (three classes, 32x32 RGB, testbed/images.py) keep each training a few seconds."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from testbed.circleci_api import FakeCircleCI
from testbed.github_api import FakeGitHub
from testbed.images import SHAPES, coloured_shapes, write_class_folders
from testbed.registry import checked, make_registry, publish_images
from testbed.rehearsal import Bed, Rehearsal, Run, load_config, workflows_selected
from testbed.repo import DvcRepo, commit_all, copy_of_repository, git, write_params
from testbed.s3 import BUCKET, PUSH_ROLE, SeaweedFS, iam_config, role_session
from testbed.suite import fast_params

pytestmark = pytest.mark.slow
SIZE = 32
PER_CLASS = 40
TOKEN = "ghs-retrain-token"
CIRCLE_TOKEN = "circle-personal-token"
RETRAIN = {"retrain": True, "retrain-reason": "rehearsal"}
GATE = {
    "min_accuracy": 0.5,
    "min_class_recall": 0.3,
    "max_accuracy_drop": 0.05,
    "max_class_recall_drop": 0.1,
}


class Loop:
    """The registry, the project's origin, the bucket and GitHub, and jobs run against them."""

    def __init__(self, root: Path, bed: Bed, github: FakeGitHub, circleci: FakeCircleCI) -> None:
        self.root, self.bed, self.github, self.count = root, bed, github, 0
        self.circleci, self.circleci_token = circleci, circleci.token
        images, labels = coloured_shapes(PER_CLASS, SIZE, seed=0)
        self.registry = make_registry(root / "registry", images, labels, SHAPES)
        origin = copy_of_repository(root / "origin")
        git(origin, "branch", "-M", "main")
        project = DvcRepo(origin)
        checked(project, "import", str(self.registry.repo), "images", "-o", "data/images")
        folder = {"source": "folder", "folder": "data/images", "image_size": [SIZE, SIZE]}
        write_params(
            origin,
            fast_params(
                data={**folder, "channels": 3},
                prepare={"sample_fraction": 1.0},
                train={"epochs": 6, "batch_size": 16},
                test=GATE,
            ),
        )
        (origin / "dvc.lock").unlink()  # made with MNIST: a lock of another project's data
        commit_all(origin, "images from the registry")
        self.origin = origin

    def run(self, job: str, workspace: Path, **options) -> Run:
        self.count += 1
        rehearsal = Rehearsal(self.bed, self.origin, workspace, self.root / f"run-{self.count}")
        head = git(self.origin, "rev-parse", "main").strip()
        contexts = {
            "github-pr-report": {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": self.github.url},
            "circleci-api": {
                "CIRCLE_TOKEN": self.circleci_token,
                "CIRCLECI_API_URL": self.circleci.url,
            },
        }
        return rehearsal.run(job, "main", head, contexts=contexts, **options)

    def retrain(self) -> Run:
        run = self.run(
            "retrain", self.root / f"workspace-{self.count}", pipeline_parameters=RETRAIN
        )
        assert run.returncode == 0, run.output[-4000:]
        return run

    def branches(self) -> list[str]:
        listed = git(self.origin, "branch", "--list", "retrain/*", "--format=%(refname:short)")
        return listed.split()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, oidc_issuer, http_mirror: str):
    root = tmp_path_factory.mktemp("retrain")
    server = SeaweedFS(root / "seaweedfs", iam_config(oidc_issuer.url)).start()
    github = FakeGitHub("example-org/mnist-pipeline", TOKEN).start()
    declared = set(load_config()["parameters"])
    circleci = FakeCircleCI("gh/example-org/mnist-pipeline", CIRCLE_TOKEN, declared).start()
    try:
        loop = Loop(root, Bed(oidc_issuer, server, http_mirror), github, circleci)
        workspace = root / "workspace-main"
        repro = loop.run("repro", workspace)
        assert repro.returncode == 0, repro.output[-4000:]
        release = loop.run("release", workspace)
        assert release.returncode == 0, release.output[-4000:]
        assert "release: version 1: " in release.output
        yield loop
    finally:
        circleci.stop()
        github.stop()
        server.stop()


def test_1_nothing_new_means_no_branch_and_no_pull_request(loop: Loop) -> None:
    run = loop.retrain()
    assert "champion: release 1 downloaded and checked in champion/mnist/1" in run.output
    assert "retrain: nothing new: data/images.dvc at the registry's newest revision" in run.output
    assert run.stages_ran() == []  # nothing trained
    assert (
        "retrain: nothing new: data/images.dvc at the registry's newest revision; no branch, no"
        " pull request"
    ) in run.output
    assert loop.branches() == [] and loop.github.opened == []


def more_images(loop: Loop) -> str:
    images, labels = coloured_shapes(10, SIZE, seed=1)
    extra = loop.root / "extra"
    write_class_folders(extra, images, labels, SHAPES)
    for path in sorted(extra.rglob("*.png")):
        target = loop.registry.repo / "images" / path.parent.name / f"new-{path.name}"
        target.write_bytes(path.read_bytes())
    return publish_images(loop.registry, "images v2: 10 more of each shape")


def test_2_new_images_open_one_pull_request_with_the_report(loop: Loop) -> None:
    revision = more_images(loop)
    run = loop.retrain()
    assert f"retrain: new data: data/images.dvc → {revision[:12]}" in run.output
    assert {"prepare", "train", "test", "package"} <= set(run.stages_ran())
    (opened,) = loop.github.opened
    assert opened["base"] == "main" and opened["head"].startswith("retrain/")
    assert opened["title"].startswith("Retrain on new data: accuracy ")
    assert " vs champion " in opened["title"]
    body = opened["body"]
    assert "**Quality gate: passed.**" in body and "started by: rehearsal" in body
    assert "Challenger against the champion (release 1), both scored on the same" in body
    for shape in SHAPES:  # per class: recall against the champion's; images before and after
        assert f"| {shape} | " in body
    counts = yaml.safe_load(git(loop.origin, "show", f"{opened['head']}:data/images.dvc"))
    assert counts["deps"][0]["repo"]["rev_lock"] == revision
    assert counts["outs"][0]["nfiles"] == 3 * (PER_CLASS + 10)
    params = yaml.safe_load(git(loop.origin, "show", f"{opened['head']}:params.yaml"))
    assert params["test"]["champion"] == 1
    lock = yaml.safe_load(git(loop.origin, "show", f"{opened['head']}:dvc.lock"))
    prepare_deps = {dep["path"]: dep for dep in lock["stages"]["prepare"]["deps"]}
    assert prepare_deps["data/images"]["md5"] == counts["outs"][0]["md5"]
    changed = git(loop.origin, "diff", "--name-only", "main", opened["head"]).split()
    assert changed == ["data/images.dvc", "dvc.lock", "params.yaml"]
    assert loop.branches() == [opened["head"]]

    again = loop.retrain()  # before anyone merged: the same data is already proposed
    assert f"branch {opened['head']} already proposes this data; no new pull request" in (
        again.output
    )
    assert len(loop.github.opened) == 1


def test_3_shuffled_labels_open_a_pull_request_marked_refused(loop: Loop) -> None:
    folders = loop.registry.repo / "images"
    files = sorted(folders.rglob("*.png"))
    shuffled = np.random.default_rng(3).permutation(len(files))
    moved = loop.root / "moved"
    for index, path in enumerate(files):  # every image to the class folder of another
        target = moved / files[shuffled[index]].parent.name / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    for path in files:
        path.unlink()
    for path in moved.rglob("*.png"):
        (folders / path.parent.name / path.name).write_bytes(path.read_bytes())
    publish_images(loop.registry, "images v3: labels shuffled by mistake")
    run = loop.retrain()
    assert "retrain: quality gate failed" in run.output
    assert "package" not in run.stages_ran()
    refused = loop.github.opened[-1]
    assert len(loop.github.opened) == 2
    assert refused["title"].startswith("[refused] Retrain on new data: accuracy ")
    assert "**Quality gate: refused.**" in refused["body"]
    assert "below the champion's" in refused["body"]


def capture_day(loop: Loop, day: str, images: np.ndarray) -> None:
    """What the serving host sends to the bucket for ``day``: the gateway's capture files of
    ``images`` answered by release 1 (run here as TensorFlow Serving would), uploaded by
    ``serving.upload_captures``."""
    from classifier.savedmodel import predict_with_export
    from serving.capture import CaptureFiles
    from serving.fetch import download, listing
    from serving.upload_captures import upload

    s3 = role_session(loop.bed.s3, loop.bed.issuer, PUSH_ROLE)
    release = loop.root / "release-1"
    if not release.exists():
        download(s3, BUCKET, "mnist", 1, listing(s3, BUCKET, "mnist")[1], release)
    answers = predict_with_export(release, images)
    noon = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    captures = loop.root / f"captures-{day}"
    files = CaptureFiles(captures / "mnist", max_bytes=1 << 30, clock=lambda: noon)
    for start in range(0, len(images), 10):
        files.write(
            {
                "time": f"{day}T12:00:00.000Z",
                "model": "mnist",
                "label": "stable",
                "version": 1,
                "status": 200,
                "latency_ms": 3.0,
                "request": {"instances": images[start : start + 10].tolist()},
                "predictions": [
                    {
                        "class_index": int(index),
                        "class_name": SHAPES[index],
                        "confidence": float(probabilities.max()),
                    }
                    for index, probabilities in zip(
                        answers["class_index"][start : start + 10],
                        answers["probabilities"][start : start + 10],
                        strict=True,
                    )
                ],
            }
        )
    files.close()
    done, failed = upload(s3, BUCKET, captures)
    assert failed == [] and done and all(f"monitoring/mnist/{day}/" in key for key in done)


def monitor(loop: Loop, day: str) -> Run:
    parameters = {"monitor": True, "monitor-day": day}
    assert workflows_selected(load_config(), parameters) == ["monitor"]
    return loop.run(
        "monitor", loop.root / f"workspace-monitor-{day}", pipeline_parameters=parameters
    )


def test_4_the_monitor_starts_no_retrain_without_drift(loop: Loop) -> None:
    capture_day(loop, "2026-12-05", coloured_shapes(90, SIZE, seed=7)[0])
    run = monitor(loop, "2026-12-05")
    assert run.returncode == 0, run.output[-4000:]
    assert "monitor: release 1 of mnist against 1 capture file of 2026-12-05" in run.output, (
        run.output[-3000:]
    )
    assert "monitor: stable: no drift (270 images)" in run.output
    assert "monitor: no retrain started" in run.output
    assert loop.circleci.started == []
    report = json.loads((run.artifacts / "monitor-report/report.json").read_text())
    assert report["labels"]["stable"]["verdict"] == "no drift"


def test_5_drift_starts_one_retrain_for_its_day(loop: Loop) -> None:
    inverted = 255 - coloured_shapes(90, SIZE, seed=8)[0]  # light backgrounds, dark shapes
    capture_day(loop, "2026-12-06", inverted)
    run = monitor(loop, "2026-12-06")
    assert run.returncode == 0, run.output[-4000:]
    assert "monitor: stable: drift (270 images)" in run.output
    assert "monitor: stable: border_brightness drifted" in run.output
    (started,) = loop.circleci.started
    assert started["branch"] == "main"
    reason = started["parameters"]["retrain-reason"]
    assert started["parameters"]["retrain"] is True
    assert reason.startswith("drift in mnist version 1 traffic of 2026-12-06: stable: ")
    assert "border_brightness" in reason
    assert f"monitor: retrain started: pipeline 1 ({reason})" in run.output
    assert workflows_selected(load_config(), started["parameters"]) == ["retrain"]
    assert loop.circleci.requests[-1][2] == CIRCLE_TOKEN

    again = monitor(loop, "2026-12-06")  # a re-run, or a second schedule: not a second retrain
    assert again.returncode == 0, again.output[-4000:]
    assert "monitor: a retrain was already started for 2026-12-06" in again.output
    assert len(loop.circleci.started) == 1


def test_6_a_refused_api_call_leaves_the_day_for_the_next_run(loop: Loop) -> None:
    capture_day(loop, "2026-12-07", 255 - coloured_shapes(90, SIZE, seed=9)[0])
    loop.circleci_token = "revoked"
    run = monitor(loop, "2026-12-07")
    assert run.returncode == 1
    assert (
        "monitor: error: CircleCI's API refused to start the retrain: 401"
        ' {"message": "Invalid token provided."}' in run.output
    )
    s3 = role_session(loop.bed.s3, loop.bed.issuer, PUSH_ROLE)
    claims = s3.list_objects_v2(Bucket=BUCKET, Prefix="monitoring/mnist/2026-12-07/")["Contents"]
    assert not [item for item in claims if item["Key"].endswith("retrain-requested.json")]
    loop.circleci_token = CIRCLE_TOKEN
    retried = monitor(loop, "2026-12-07")
    assert retried.returncode == 0, retried.output[-4000:]
    assert len(loop.circleci.started) == 2
