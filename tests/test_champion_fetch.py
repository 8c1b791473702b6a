"""ci_jobs.champion: a release of the bucket brought into champion/ (checked against its
manifest) and named in params.yaml, against the S3 test bed with the CI read role."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_jobs import release
from classifier.champion import verify_release
from classifier.params import load_params
from testbed.repo import DvcRepo, copy_of_repository
from testbed.s3 import (
    BUCKET,
    PUSH_ROLE,
    READ_ROLE,
    RELEASE_ROLE,
    SeaweedFS,
    iam_config,
    role_client,
    use_test_bucket,
    with_credentials,
)
from testbed.suite import write_unreleased_card


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam_config(oidc_issuer.url)).start()
    yield server
    server.stop()


def publish(bed: SeaweedFS, oidc_issuer, tmp_path: Path, weights: str) -> int:
    """A package (stand-in files, a real card) published by the release job's code."""
    package = tmp_path / f"package-{weights}"
    for name in ("saved_model.pb", "fingerprint.pb", "variables/variables.index"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"{weights}: {name}")
    write_unreleased_card(package, "mnist", weights)
    s3 = role_client(bed.endpoint, oidc_issuer.mint(), RELEASE_ROLE, "pytest-release")
    return release.publish(s3, BUCKET, "mnist", package, "c" * 40, b"lock\n")[0]


@pytest.fixture
def project(tmp_path: Path, bed: SeaweedFS, oidc_issuer) -> tuple[DvcRepo, dict]:
    """A copy of the repository using the test bucket, and a branch build's read-role env."""
    repo = DvcRepo(copy_of_repository(tmp_path / "repo"))
    use_test_bucket(repo, bed)
    token = oidc_issuer.mint(ref="refs/heads/retrain")
    return repo, with_credentials(repo, bed, token, READ_ROLE)


def champion(repo: DvcRepo, env: dict, *args: str):
    return repo.run(sys.executable, "-m", "ci_jobs.champion", *args, env=env)


def test_latest_is_brought_checked_and_named_in_params(
    project, bed: SeaweedFS, oidc_issuer, tmp_path: Path
) -> None:
    repo, env = project
    (repo.repo / "champion/mnist").mkdir(parents=True)
    params_before = (repo.repo / "params.yaml").read_text()

    nothing = champion(repo, env, "--release", "latest")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout == (
        f"champion: s3://{BUCKET}/releases/mnist/ holds no release yet: no champion, the gate"
        " stays absolute\n"
    )
    assert (repo.repo / "params.yaml").read_text() == params_before

    first = publish(bed, oidc_issuer, tmp_path, "A")
    second = publish(bed, oidc_issuer, tmp_path, "B")
    assert (first, second) == (1, 2)
    brought = champion(repo, env, "--release", "latest")
    assert brought.returncode == 0, brought.stderr
    assert brought.stdout == (
        "champion: release 2 downloaded and checked in champion/mnist/2; test.champion is 2\n"
    )
    verify_release(repo.repo / "champion/mnist/2", "mnist", 2)  # what test will check
    assert (repo.repo / "champion/mnist/2/fingerprint.pb").read_text() == "B: fingerprint.pb"
    params = (repo.repo / "params.yaml").read_text()
    assert load_params(repo.repo / "params.yaml").test.champion == 2
    assert params.replace("  champion: 2 ", "  champion: ''") == params_before  # comments kept

    again = champion(repo, env)  # test.champion names it, and it is here
    assert again.stdout == "champion: release 2 already in champion/mnist/2; test.champion is 2\n"
    back = champion(repo, env, "--release", "1")
    assert back.returncode == 0, back.stderr
    assert back.stdout.endswith("in champion/mnist/1, 1 older removed; test.champion is 1\n")
    assert sorted(p.name for p in (repo.repo / "champion/mnist").iterdir()) == ["1"]


def test_a_tampered_release_is_refused_and_nothing_is_left(
    project, bed: SeaweedFS, oidc_issuer, tmp_path: Path
) -> None:
    repo, env = project
    version = publish(bed, oidc_issuer, tmp_path, "C")
    admin = role_client(bed.endpoint, oidc_issuer.mint(), PUSH_ROLE, "pytest-admin")
    key = f"releases/mnist/{version}/variables/variables.index"
    admin.put_object(Bucket=BUCKET, Key=key, Body=b"C: variables/variables.indeX")
    result = champion(repo, env, "--release", str(version))
    assert result.returncode == 1
    changed = hashlib.sha256(b"C: variables/variables.indeX").hexdigest()[:12]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"champion: error: variables/variables.index has sha256 {changed}…")
    )
    assert sorted(p.name for p in (repo.repo / "champion").iterdir()) == [
        ".gitignore",
        "README.md",
        "mnist",
    ]
    assert list((repo.repo / "champion/mnist").iterdir()) == []  # no staging folder left
    assert load_params(repo.repo / "params.yaml").test.champion == ""


def test_a_release_that_is_not_published_is_one_line(project) -> None:
    repo, env = project
    result = champion(repo, env, "--release", "99")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"champion: error: release 99 of mnist is not published in s3://{BUCKET}/releases/mnist/"
        )
    )


def test_no_release_champion_needs_no_bucket(project) -> None:
    repo, _ = project
    result = champion(repo, {})  # no credentials at all: test.champion is ''
    assert (result.returncode, result.stdout) == (
        0,
        "champion: test.champion is '': no release to bring\n",
    )


def test_stable_is_the_release_the_serving_hosts_label_stable(
    project, bed: SeaweedFS, oidc_issuer, tmp_path: Path
) -> None:
    """Not the newest: production may have rolled back, or not promoted the newest yet."""
    repo, env = project
    versions = [publish(bed, oidc_issuer, tmp_path, weights) for weights in ("D", "E")]
    before = champion(repo, env, "--release", "stable")  # no host published labels yet
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith(
        "champion: no serving host published mnist's labels yet (labels/mnist.json): the newest"
        " release stands for stable\n"
    )
    assert f"test.champion is {max(versions)}" in before.stdout
    host = role_client(bed.endpoint, oidc_issuer.mint(), PUSH_ROLE, "pytest-serving-host")
    labels = {"model": "mnist", "stable": versions[0], "canary": versions[1]}
    host.put_object(Bucket=BUCKET, Key="labels/mnist.json", Body=json.dumps(labels).encode())
    brought = champion(repo, env, "--release", "stable")
    assert brought.returncode == 0, brought.stderr
    assert brought.stdout.endswith(f"; test.champion is {versions[0]}\n")
    assert load_params(repo.repo / "params.yaml").test.champion == versions[0]
