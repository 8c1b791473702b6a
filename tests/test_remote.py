"""The S3 remote, end to end, against a real S3 server and a real OIDC issuer on 127.0.0.1.

CI's path: a job's OIDC token -> ci_jobs/web_identity.py -> AWS web-identity chain ->
role session -> ci_jobs/remote.py push/pull (dvc push/pull --run-cache). No static keys.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.repo import ALL_STAGES, DvcRepo
from testbed.s3 import (
    BUCKET,
    OTHER_PROJECT_ID,
    PUSH_ROLE,
    READ_ROLE,
    OidcIssuer,
    SeaweedFS,
    bucket_listing,
    dvc_object_key,
    iam_config,
    new_key,
    remote,
    role_client,
    use_test_bucket,
    with_credentials,
)
from testbed.suite import RanPipeline

pytestmark = pytest.mark.slow
BRANCH = "refs/heads/feature/better-model"
OUTPUTS = ("data", "models", "metrics", "plots", "dist")


def output_files(root: Path) -> dict[str, str]:
    files = [p for top in OUTPUTS for p in sorted((root / top).rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer):
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam_config(oidc_issuer.url)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def origin(
    tmp_path_factory: pytest.TempPathFactory,
    bed: SeaweedFS,
    ran_pipeline: RanPipeline,
    http_mirror: str,
) -> DvcRepo:
    """The main branch after a pipeline run (a copy of the suite's shared one): outputs in its
    cache, dvc.lock committed."""
    repo = ran_pipeline.copy(tmp_path_factory.mktemp("origin"), MNIST_MIRROR=http_mirror)
    use_test_bucket(repo, bed)
    return repo


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, origin: DvcRepo, bed: SeaweedFS) -> DvcRepo:
    """A fresh clone of origin on another machine: empty DVC cache, only the remote to pull from."""
    path = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["git", "clone", "-q", str(origin.repo), str(path)], check=True)
    repo = DvcRepo(path, MNIST_MIRROR=origin.env["MNIST_MIRROR"])
    use_test_bucket(repo, bed)
    return repo


def test_main_pushes_everything_and_a_second_push_uploads_nothing(
    origin: DvcRepo, bed: SeaweedFS, oidc_issuer: OidcIssuer
) -> None:
    token = oidc_issuer.mint()
    env = with_credentials(origin, bed, token, PUSH_ROLE)
    pushed = remote(origin, "push", env)
    assert pushed.returncode == 0, pushed.stderr
    assert re.search(r"\d+ files pushed", pushed.stdout)
    assert f"{len(ALL_STAGES)} run-cache entries pushed" in pushed.stdout
    listing = bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH))
    assert any(key.startswith("pipeline/files/md5/") for key in listing)
    assert any(key.startswith("pipeline/runs/") for key in listing)  # the run-cache
    assert token not in pushed.stdout + pushed.stderr  # the credential never reaches logs

    again = remote(origin, "push", env)
    assert again.returncode == 0
    assert "Everything is up to date." in again.stdout
    assert "0 run-cache entries pushed" in again.stdout
    assert bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH)) == listing


def test_branch_clone_pulls_and_reproduces_nothing(
    clone: DvcRepo, origin: DvcRepo, bed: SeaweedFS, oidc_issuer: OidcIssuer
) -> None:
    env = with_credentials(clone, bed, oidc_issuer.mint(ref=BRANCH), READ_ROLE)
    pulled = remote(clone, "pull", env)
    assert pulled.returncode == 0, pulled.stderr
    ran, result = clone.repro()
    assert result.returncode == 0
    assert ran == []
    assert "Data and pipelines are up to date." in clone.dvc("status").stdout
    assert output_files(clone.repo) == output_files(origin.repo)


@pytest.mark.parametrize(
    ("token_args", "role", "expected"),
    [
        ({"audience": "someone-else"}, READ_ROLE, "does not trust this token"),
        ({"project": OTHER_PROJECT_ID}, READ_ROLE, "does not trust this token"),
        ({"ref": BRANCH}, PUSH_ROLE, "the push role accepts only main"),
        ({"lifetime_s": -60}, PUSH_ROLE, "the OIDC token has expired"),
        ({"signing_key": "another"}, PUSH_ROLE, "rejected as invalid (bad signature or format)"),
    ],
    ids=["wrong-audience", "wrong-project", "branch-on-push-role", "expired", "foreign-key"],
)
def test_refused_tokens_change_nothing(
    origin: DvcRepo,
    bed: SeaweedFS,
    oidc_issuer: OidcIssuer,
    token_args: dict,
    role: str,
    expected: str,
) -> None:
    if token_args.get("signing_key"):
        token_args = {"signing_key": new_key()}
    before = bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH))
    (origin.repo / "extra.txt").write_text("a new output to push\n")
    origin.dvc("add", "extra.txt")
    env = with_credentials(origin, bed, oidc_issuer.mint(**token_args), role)
    if token_args.get("lifetime_s", 0) < 0:
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(origin.repo.parent / "expired-token")
        Path(env["AWS_WEB_IDENTITY_TOKEN_FILE"]).write_text(env["CIRCLE_OIDC_TOKEN_V2"])
    result = remote(origin, "push", env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("remote: push failed: ")
    assert expected in last
    assert bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH)) == before


def test_read_only_role_cannot_push(
    clone: DvcRepo, bed: SeaweedFS, oidc_issuer: OidcIssuer
) -> None:
    before = bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH))
    (clone.repo / "notes.txt").write_text("a branch's new data\n")
    assert clone.dvc("add", "notes.txt").returncode == 0
    env = with_credentials(clone, bed, oidc_issuer.mint(ref=BRANCH), READ_ROLE)
    result = remote(clone, "push", env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"remote: push failed: role {READ_ROLE} may not write to the remote; pushing needs the"
        " push role, which only main's jobs can assume"
    )
    assert bucket_listing(bed.endpoint, oidc_issuer.mint(ref=BRANCH)) == before
    (clone.repo / "notes.txt").unlink()
    (clone.repo / "notes.txt.dvc").unlink()


def _append_comment(repo: DvcRepo, module: str) -> None:
    path = repo.repo / module
    path.write_text(path.read_text() + "# a change to this module's code\n")


def _new_data_version(repo: DvcRepo, shared_mnist: Path, tmp: Path) -> None:
    """A mirror whose train labels differ in one place, and the pin updated to match."""
    mirror = tmp / "mirror-v2"
    shutil.copytree(shared_mnist, mirror)
    labels = bytearray(gzip.decompress((shared_mnist / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[8 + 11] = (labels[8 + 11] + 1) % 10
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    pins = repo.repo / "classifier/mnist.py"
    pins.write_text(
        pins.read_text().replace(
            "a25bea736e30d166cdddb491f175f624", hashlib.md5(labels).hexdigest()
        )
    )
    repo.env["MNIST_MIRROR"] = str(mirror)


CHANGES = [
    (  # where a released champion is kept: test reads it too
        "param-package",
        lambda r, *_: r.set_params(package={"model_name": "digits"}),
        ["test", "package"],
    ),
    ("param-test", lambda r, *_: r.set_params(test={"worst_examples": 6}), ["test", "package"]),
    ("param-test-back", lambda r, *_: r.set_params(test={"worst_examples": 12}), []),
    (
        "param-train",
        lambda r, *_: r.set_params(train={"batch_size": 256}),
        ["train", "test", "package"],
    ),
    (
        "param-build",
        lambda r, *_: r.set_params(build={"dropout": 0.2}),
        ["build", "train", "test", "package"],
    ),
    (
        "param-prepare",
        lambda r, *_: r.set_params(prepare={"seed": 7}),
        ["prepare", "train", "test", "package"],
    ),
    *[
        (f"code-{stage}", lambda r, *_, m=f"stages/{stage}.py": _append_comment(r, m), [stage])
        for stage in ALL_STAGES
    ],
    (
        "code-shared-helper",
        lambda r, *_: _append_comment(r, "classifier/model.py"),
        ["build", "train", "test", "package"],
    ),
    # build reads the dataset's shape and classes from data/prepared/dataset.json, which a new
    # data version rewrites (its counts and checksum): it runs, and builds the same model
    ("raw-data", _new_data_version, ["fetch", "prepare", "build", "train", "test", "package"]),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c[1], c[2]) for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_only_what_a_change_affects_runs(
    clone: DvcRepo, shared_mnist: Path, tmp_path: Path, change, expected: list[str]
) -> None:
    """Cumulative changes in the pulled clone. `param-test-back` returns to a configuration the
    run-cache knows: DVC restores its outputs instead of running anything."""
    change(clone, shared_mnist, tmp_path)
    ran, result = clone.repro()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ran == expected


def test_server_stopped_mid_push_then_resumed(
    tmp_path: Path, origin: DvcRepo, oidc_issuer: OidcIssuer, bed: SeaweedFS
) -> None:
    flaky = SeaweedFS(tmp_path / "seaweedfs", iam_config(oidc_issuer.url)).start()
    inspect = oidc_issuer.mint(ref=BRANCH)
    try:
        use_test_bucket(origin, flaky)
        env = with_credentials(origin, flaky, oidc_issuer.mint(), PUSH_ROLE)
        cache = origin.repo / ".dvc/cache"
        cached = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
        push = subprocess.Popen(
            [sys.executable, "-m", "ci_jobs.remote", "push", "-j", "1"],
            cwd=origin.repo,
            env={**origin.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not bucket_listing(flaky.endpoint, inspect) and time.monotonic() < deadline:
            time.sleep(0.05)
        flaky.stop(abruptly=True)
        _, stderr = push.communicate(timeout=300)
        assert push.returncode != 0, "the push finished before the server was stopped"
        assert "cannot reach the S3 endpoint" in stderr.strip().splitlines()[-1]
        assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == cached

        flaky.start()
        partial = bucket_listing(flaky.endpoint, inspect)
        env = with_credentials(origin, flaky, oidc_issuer.mint(), PUSH_ROLE)
        resumed = remote(origin, "push", env)
        assert resumed.returncode == 0, resumed.stderr
        # The stop may come after the last file, during the run-cache entries: then DVC has no
        # file left to push and says "Everything is up to date." instead of a count.
        pushed = re.search(r"(\d+) files? pushed", resumed.stdout)
        assert pushed or "Everything is up to date." in resumed.stdout, resumed.stdout
        files = int(pushed.group(1)) if pushed else 0
        entries = int(re.search(r"(\d+) run-cache entries pushed", resumed.stdout).group(1))
        complete = bucket_listing(flaky.endpoint, inspect)
        assert set(partial) < set(complete)
        assert files + entries == len(set(complete) - set(partial))
    finally:
        flaky.stop()
        use_test_bucket(origin, bed)


def test_a_tampered_remote_object_is_refused_not_checked_out(
    tmp_path: Path, origin: DvcRepo, bed: SeaweedFS, oidc_issuer: OidcIssuer, request
) -> None:
    """Whoever can write to the bucket could swap the model CI packages and releases: with
    ``verify = true`` (.dvc/config) DVC re-hashes what it downloads, and the pull fails."""
    pushed = remote(origin, "push", with_credentials(origin, bed, oidc_issuer.mint(), PUSH_ROLE))
    assert pushed.returncode == 0, pushed.stderr
    md5 = origin.locked_hashes()["models/model.keras"]
    key = dvc_object_key(md5, "pipeline")
    writer = role_client(bed.endpoint, oidc_issuer.mint(), PUSH_ROLE, "tamper")
    writer.put_object(Bucket=BUCKET, Key=key, Body=b"a model someone swapped in")
    original = (origin.repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()
    request.addfinalizer(lambda: writer.put_object(Bucket=BUCKET, Key=key, Body=original))

    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin.repo), str(path)], check=True)
    fresh = DvcRepo(path, MNIST_MIRROR=origin.env["MNIST_MIRROR"])
    use_test_bucket(fresh, bed)
    reader = with_credentials(fresh, bed, oidc_issuer.mint(ref=BRANCH), READ_ROLE)
    pulled = remote(fresh, "pull", reader)
    assert pulled.returncode == 1
    assert pulled.stderr.splitlines()[-1] == (
        "remote: pull failed: models/model.keras: not checked out: the remote lacks it, or its"
        " copy does not hash to what dvc.lock records (every download is re-hashed; if it was"
        " pushed, someone changed it in the bucket); push it again from a trusted copy (main's"
        " CI), or re-run its stage"
    )
    assert not (path / "models/model.keras").exists()  # the swapped bytes are nowhere
    assert (path / "models/untrained.keras").exists()  # what was intact is checked out
