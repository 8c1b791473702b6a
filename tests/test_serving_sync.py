"""serving.sync end to end: from a release in S3 to a TensorFlow Serving base path.

Releases are published by ci_jobs.release (with the test bed's release role) into a real S3
server (SeaweedFS, testbed/s3.py); hosts sync them holding exactly the template's serving role
(infra/ci-storage.yaml: list and read releases/, nothing else), through the standard AWS chain.
The models are tiny Keras models exported by the package stage's own exporter, so the sync's
load check runs them in a TF1 session as TensorFlow Serving would. The test bed's push role,
allowed everything on the bucket (the bucket policy's write-once rule is AWS's, not
SeaweedFS's), stands in for an administrator who changes a release after publication.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ci_jobs import release
from classifier.errors import StageError, run_stage
from serving import labels, sync
from serving.layout import Host
from testbed.cloudformation import BED_SERVING_ROLE, bed_role, template_policy
from testbed.faults import small_disk
from testbed.s3 import (
    BUCKET,
    PUSH_ROLE,
    READ_ROLE,
    RELEASE_ROLE,
    SeaweedFS,
    iam_config,
    role_session,
)
from testbed.suite import write_unreleased_card
from testbed.tf_serving_config import parse_config

REPO_ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "assets.extra/dvc.lock",
    "assets.extra/model_card.json",
    "assets.extra/model_card.md",
    "fingerprint.pb",
    "saved_model.pb",
    "variables/variables.data-00000-of-00001",
    "variables/variables.index",
]
COMMIT = "c" * 40
LOCK = b"schema: '2.0'\n"
AGAIN = (
    "the bucket no longer holds what was released (its object versions show what changed):"
    " publish the model again as a new version"
)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer) -> Iterator[SeaweedFS]:
    """The test bed's CI roles, and a serving role with the template's permissions."""
    iam = iam_config(oidc_issuer.url)
    iam["policies"].append(template_policy("serving"))
    iam["roles"].append(bed_role(iam["roles"][1], BED_SERVING_ROLE, "serving"))
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three packages of tiny models with different weights, as ``package`` exports them."""
    import keras

    from classifier.export import export_savedmodel

    root = tmp_path_factory.mktemp("savedmodels")
    exports = []
    for seed in (1, 2, 3):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        directory = root / f"model-{seed}"
        export_savedmodel(model, directory, tuple(str(digit) for digit in range(10)))
        write_unreleased_card(directory, "tiny", f"tiny model {seed}")
        exports.append(directory)
    return exports


def sha256_tree(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def publish(bed: SeaweedFS, oidc_issuer, tmp_path: Path) -> Callable[[str, int, Path], Path]:
    """``publish(model, version, package)``: what the release job does, which must assign
    ``version``; returns a folder holding what it released."""
    s3 = role_session(bed, oidc_issuer, RELEASE_ROLE)

    def publish(model: str, version: int, package: Path) -> Path:
        assigned, _ = release.publish(s3, BUCKET, model, package, COMMIT, LOCK)
        assert assigned == version
        released = tmp_path / "released" / model / str(version)
        files = release.release_files(release.package_files(package), version, COMMIT, LOCK)
        for name, body in files.items():
            (released / name).parent.mkdir(parents=True, exist_ok=True)
            (released / name).write_bytes(body)
        return released

    return publish


@pytest.fixture
def admin(bed: SeaweedFS, oidc_issuer):
    return role_session(bed, oidc_issuer, PUSH_ROLE)


@pytest.fixture
def serving_env(bed: SeaweedFS, oidc_issuer, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The host's environment: the serving role through the standard chain, nothing else."""
    token = tmp_path / "serving-token"
    token.write_text(oidc_issuer.mint())
    empty = tmp_path / "empty-aws-config"
    empty.touch()
    env = {
        "AWS_ROLE_ARN": BED_SERVING_ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ROLE_SESSION_NAME": "serving-host",
        "AWS_ENDPOINT_URL_STS": bed.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def sync_args(host: Host, bed: SeaweedFS) -> list[str]:
    return ["--base-path", str(host.base), "--bucket", BUCKET, "--endpoint", bed.endpoint]


@pytest.fixture
def run_sync(bed: SeaweedFS, serving_env, capsys) -> Callable[[Host], tuple[int, list, list]]:
    """``python -m serving.sync`` for a host, in this process: exit status, out and err lines."""

    def run(host: Host) -> tuple[int, list[str], list[str]]:
        return cli("sync", lambda: sync.main(sync_args(host, bed)), capsys)

    return run


def cli(name: str, main: Callable[[], None], capsys) -> tuple[int, list[str], list[str]]:
    capsys.readouterr()
    try:
        run_stage(name, main)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def label(host: Host, capsys, *args: str) -> int:
    """``python -m serving.labels --base-path <host> ARGS``'s exit status."""
    return cli("labels", lambda: labels.main(["--base-path", str(host.base), *args]), capsys)[0]


def served(host: Host) -> tuple[list[int], dict[str, int]]:
    """The versions and labels of the host's model config file, as TF Serving parses it."""
    config = parse_config(host.config.read_text())
    assert (config["name"], config["base_path"]) == (host.model, str(host.base))
    return config["versions"], config["labels"]


def test_two_releases_are_synced_verified_and_labelled(
    publish, admin, run_sync, savedmodels: list[Path], tmp_path: Path, capsys
) -> None:
    first = publish("digits", 1, savedmodels[0])
    second = publish("digits", 2, savedmodels[1])
    host = Host(tmp_path / "models" / "digits")

    code, out, err = run_sync(host)
    assert (code, err) == (0, [])
    assert out == [
        "sync: version 1: 7 files verified and loaded; in place",
        "sync: version 2: 7 files verified and loaded; in place",
        f"sync: labels published to s3://{BUCKET}/labels/digits.json: stable 2, canary none",
        f"sync: {host.base} serves versions 1, 2; stable 2, canary none",
    ]
    published = admin.get_object(Bucket=BUCKET, Key="labels/digits.json")["Body"].read()
    assert json.loads(published) == {"model": "digits", "stable": 2, "canary": None}
    for version, package in ((1, first), (2, second)):
        manifest = admin.get_object(Bucket=BUCKET, Key=f"releases/digits/{version}/MANIFEST.json")
        assert sha256_tree(host.version_dir(version)) == {
            **sha256_tree(package),
            "MANIFEST.json": hashlib.sha256(manifest["Body"].read()).hexdigest(),
        }
    assert sorted(sha256_tree(first)) == FILES
    assert sha256_tree(first) != sha256_tree(second)
    assert sorted(path.name for path in host.base.iterdir()) == [
        ".labels.lock",
        ".labels.published",
        ".sync.lock",
        "1",
        "2",
        "labels.json",
        "models.config",
    ]  # no staging folder left
    assert served(host) == ([1, 2], {"stable": 2})

    config = host.config.read_bytes()
    assert run_sync(host) == (
        0,
        [f"sync: {host.base} serves versions 1, 2; stable 2, canary none"],
        [],
    )
    assert host.config.read_bytes() == config  # nothing new: nothing downloaded or changed

    publish("digits", 3, savedmodels[2])
    assert run_sync(host)[1][0] == "sync: version 3: 7 files verified and loaded; in place"
    assert served(host) == ([1, 2, 3], {"stable": 2})  # the labels survive the sync
    assert label(host, capsys, "canary", "3") == 0
    assert served(host) == ([1, 2, 3], {"stable": 2, "canary": 3})
    code, out, _ = run_sync(host)
    assert code == 0 and out[0].startswith("sync: labels published to ")  # the canary moved
    published = admin.get_object(Bucket=BUCKET, Key="labels/digits.json")["Body"].read()
    assert json.loads(published) == {"model": "digits", "stable": 2, "canary": 3}
    assert served(host) == ([1, 2, 3], {"stable": 2, "canary": 3})
    assert label(host, capsys, "promote", "--force") == 0  # evidence: test_canary_promotion
    assert served(host) == ([1, 2, 3], {"stable": 3})
    assert label(host, capsys, "rollback") == 0
    assert served(host) == ([1, 2, 3], {"stable": 2})
    assert run_sync(host)[0] == 0
    assert served(host) == ([1, 2, 3], {"stable": 2})
    assert label(host, capsys, "canary", "4") == 1  # published nowhere, so not on the host


class ListedEarlier:
    """The release role's client, but listing the bucket as it was when this was made: a release
    that listed before another one claimed the next number."""

    def __init__(self, s3, prefix: str):
        self.s3 = s3
        self.pages = list(
            s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        )

    def get_paginator(self, name: str):
        pages = self.pages

        class Paginator:
            def paginate(self, **_) -> list:
                return pages

        return Paginator()

    def put_object(self, **request) -> dict:
        return self.s3.put_object(**request)


def test_two_releases_at_once_never_take_the_same_number(
    publish, run_sync, savedmodels: list[Path], tmp_path: Path, bed: SeaweedFS, oidc_issuer
) -> None:
    """Both listed only version 1; S3's conditional write gives 2 to one and 3 to the other."""
    publish("racing", 1, savedmodels[0])
    s3 = role_session(bed, oidc_issuer, RELEASE_ROLE)
    early = [ListedEarlier(s3, "releases/racing/") for _ in savedmodels[1:]]
    versions = [
        release.publish(client, BUCKET, "racing", package, COMMIT, LOCK)[0]
        for client, package in zip(early, savedmodels[1:], strict=True)
    ]
    assert versions == [2, 3]
    host = Host(tmp_path / "models" / "racing")
    code, out, _ = run_sync(host)
    assert (
        code == 0 and out[-1] == f"sync: {host.base} serves versions 1, 2, 3; stable 3, canary none"
    )
    for version, package in zip((2, 3), savedmodels[1:], strict=True):
        card = host.version_dir(version) / "assets.extra/model_card.json"
        assert json.loads(card.read_text())["release"]["version"] == version
        assert (host.version_dir(version) / "fingerprint.pb").read_bytes() == (
            package / "fingerprint.pb"
        ).read_bytes()


def tamper(kind: str, admin, prefix: str, package: Path) -> str:
    """Change the published version at ``prefix`` as an administrator could; return why the
    sync must refuse it."""
    if kind == "changed":  # same size, other bytes: only the sha256 tells
        name = "variables/variables.data-00000-of-00001"
        data = bytearray((package / name).read_bytes())
        published = hashlib.sha256(data).hexdigest()
        data[-1] ^= 0xFF
        admin.put_object(Bucket=BUCKET, Key=prefix + name, Body=bytes(data))
        return (
            f"{name} has sha256 {hashlib.sha256(data).hexdigest()[:12]}… ({len(data)} bytes),"
            f" its MANIFEST.json says {published[:12]}… ({len(data)} bytes); {AGAIN}"
        )
    if kind == "resized":
        admin.put_object(Bucket=BUCKET, Key=prefix + "fingerprint.pb", Body=b"longer" * 100)
        size = (package / "fingerprint.pb").stat().st_size
        return f"fingerprint.pb is 600 bytes in the bucket, {size} in its MANIFEST.json; {AGAIN}"
    if kind == "added":
        admin.put_object(Bucket=BUCKET, Key=prefix + "assets.extra/backdoor.py", Body=b"x")
        return f"assets.extra/backdoor.py is in the bucket but not in its MANIFEST.json; {AGAIN}"
    if kind == "removed":
        admin.delete_object(Bucket=BUCKET, Key=prefix + "variables/variables.index")
        return f"variables/variables.index is in its MANIFEST.json but not in the bucket; {AGAIN}"
    assert kind == "manifest"
    other = b'{"format": 1, "model": "other", "version": 2, "files": {}}'
    admin.put_object(Bucket=BUCKET, Key=prefix + "MANIFEST.json", Body=other)
    return f"its MANIFEST.json is not a release manifest: it describes 'other' version 2; {AGAIN}"


@pytest.mark.parametrize("kind", ["changed", "resized", "added", "removed", "manifest"])
def test_a_release_changed_after_publication_is_refused_the_others_served(
    kind: str, publish, admin, run_sync, savedmodels: list[Path], tmp_path: Path
) -> None:
    model = f"tampered-{kind}"
    publish(model, 1, savedmodels[0])
    package = publish(model, 2, savedmodels[1])
    publish(model, 3, savedmodels[2])
    reason = tamper(kind, admin, f"releases/{model}/2/", package)
    host = Host(tmp_path / "models" / model)

    for _ in range(2):  # refused again at every sync, and the others stay served
        code, out, err = run_sync(host)
        assert code == 1
        assert err == [f"sync: error: version 2 refused: {reason}"]
        assert out[-1] == f"sync: {host.base} serves versions 1, 3; stable 3, canary none"
        assert host.versions() == [1, 3] and host.stale_staging() == []
        assert served(host) == ([1, 3], {"stable": 3})


def test_a_model_that_does_not_load_as_tf_serving_loads_it_is_refused(
    publish, run_sync, savedmodels: list[Path], tmp_path: Path
) -> None:
    publish("broken", 1, savedmodels[0])
    broken = tmp_path / "broken-package"
    shutil.copytree(savedmodels[1], broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    publish("broken", 2, broken)  # consistently published: only loading it tells
    host = Host(tmp_path / "models" / "broken")

    code, _, err = run_sync(host)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(
        "sync: error: version 2 refused: it does not load the way TensorFlow Serving loads it"
        " (OSError: Cannot parse file "
    )
    assert err[0].endswith("); release a fixed model as a new version")
    assert host.versions() == [1] and host.stale_staging() == []
    assert served(host) == ([1], {"stable": 1})


# A sync whose download stops after two files (the manifest and a model file) until it is killed.
HANGING_SYNC = """
import sys, time
import serving.fetch

downloaded = serving.fetch.save_object
keys = []

def download_then_hang(s3, bucket, key, path):
    entry = downloaded(s3, bucket, key, path)
    keys.append(key)
    if len(keys) == 2:
        print(" ".join(keys), flush=True)
        time.sleep(300)
    return entry

serving.fetch.save_object = download_then_hang
from serving.sync import main
main(sys.argv[1:])
"""


def test_a_sync_killed_mid_download_leaves_no_version_and_the_next_completes(
    publish, run_sync, bed: SeaweedFS, serving_env, savedmodels: list[Path], tmp_path: Path
) -> None:
    package = publish("killed", 1, savedmodels[0])
    host = Host(tmp_path / "models" / "killed")
    child = subprocess.Popen(
        [sys.executable, "-c", HANGING_SYNC, *sync_args(host, bed)],
        cwd=REPO_ROOT,
        env={**os.environ, **serving_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.split() == [
            "releases/killed/1/MANIFEST.json",
            "releases/killed/1/assets.extra/dvc.lock",
        ], line + child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    (staging,) = host.stale_staging()
    assert sorted(sha256_tree(staging)) == ["MANIFEST.json", "assets.extra/dvc.lock"]
    assert sorted(path.name for path in host.base.iterdir()) == [staging.name, ".sync.lock"]
    assert host.versions() == []  # TF Serving sees no version, so no half of one

    code, out, err = run_sync(host)
    assert (code, err) == (0, [])
    assert out[:2] == [
        f"sync: removed {staging.name}, left by an interrupted sync",
        "sync: version 1: 7 files verified and loaded; in place",
    ]
    assert host.stale_staging() == []
    assert sha256_tree(host.version_dir(1)).items() >= sha256_tree(package).items()
    assert served(host) == ([1], {"stable": 1})


def test_only_completely_published_versions_are_synced(
    publish, run_sync, savedmodels: list[Path], tmp_path: Path, bed: SeaweedFS, oidc_issuer
) -> None:
    """A release job killed before its manifest: the host waits for the job to be re-run."""
    publish("unfinished", 1, savedmodels[0])
    s3 = role_session(bed, oidc_issuer, RELEASE_ROLE)
    model = (savedmodels[1] / "saved_model.pb").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="releases/unfinished/2/saved_model.pb", Body=model)
    host = Host(tmp_path / "models" / "unfinished")

    code, out, err = run_sync(host)
    assert (code, err) == (0, [])
    assert out[0] == "sync: version 2 is not completely published yet (no MANIFEST.json); skipped"
    assert host.versions() == [1]


def test_a_retracted_version_is_removed_unless_a_label_points_at_it(
    publish, admin, run_sync, savedmodels: list[Path], tmp_path: Path, capsys
) -> None:
    for version in (1, 2, 3):
        publish("retracted", version, savedmodels[version - 1])
    host = Host(tmp_path / "models" / "retracted")
    assert run_sync(host)[0] == 0
    assert label(host, capsys, "canary", "2") == 0
    for version in (1, 2):  # an administrator retracts them (the bucket policy edited first)
        for name in [*FILES, "MANIFEST.json"]:
            admin.delete_object(Bucket=BUCKET, Key=f"releases/retracted/{version}/{name}")

    code, out, err = run_sync(host)
    assert code == 0
    assert err == [
        "sync: warning: version 2 is no longer published but is labelled; kept until its label"
        " moves (python -m serving.labels)"
    ]
    assert "sync: version 1 removed: no longer published, not labelled" in out
    assert host.versions() == [2, 3]
    assert served(host) == ([2, 3], {"stable": 3, "canary": 2})


def test_a_bucket_without_the_model_changes_nothing(run_sync, tmp_path: Path) -> None:
    """A wrong bucket or base path name must not look like "every version was retracted"."""
    host = Host(tmp_path / "models" / "typo")
    (host.version_dir(1)).mkdir(parents=True)
    assert run_sync(host) == (
        1,
        [],
        [
            f"sync: error: s3://{BUCKET}/releases/typo/ holds no published version (no"
            " MANIFEST.json); check --bucket and that the base path's name, 'typo', is the"
            " model's; nothing was changed"
        ],
    )
    assert host.versions() == [1]


def test_a_sync_started_while_another_runs_changes_nothing(tmp_path: Path) -> None:
    """Cron may start a sync while the last one still downloads: it stops instead of queueing."""
    host = Host(tmp_path / "models" / "mnist")
    host.base.mkdir(parents=True)
    stale = host.base / ".incoming-3-abc"
    stale.mkdir()
    with host.lock("sync"), pytest.raises(StageError) as refused:  # while a sync holds it
        sync.sync(None, BUCKET, host)  # never reaches the bucket
    assert str(refused.value) == (
        f"another sync is running on {host.base} (it holds .sync.lock); this one changed nothing:"
        " let that one finish"
    )
    assert stale.is_dir()  # the running sync's download is left alone


def test_labels_the_role_may_not_publish_fail_the_sync_in_one_line_versions_still_served(
    publish, run_sync, savedmodels: list[Path], tmp_path: Path, monkeypatch
) -> None:
    """A host whose role cannot write labels/ (the CI read role here): the versions are synced
    and served, the sync exits 1 saying why, and publishes at the next sync that can."""
    publish("unlabelled", 1, savedmodels[0])
    host = Host(tmp_path / "models" / "unlabelled")
    monkeypatch.setenv("AWS_ROLE_ARN", READ_ROLE)
    code, out, err = run_sync(host)
    assert code == 1 and host.versions() == [1]
    assert out[-1] == f"sync: {host.base} serves versions 1; stable 1, canary none"
    (line,) = err
    assert line.startswith(
        f"sync: error: the labels were not published to s3://{BUCKET}/labels/unlabelled.json ("
    )
    assert line.endswith(
        "); the serving role must be allowed to write labels/ (infra/README.md); versions are"
        " served as synced"
    )
    assert not (host.base / ".labels.published").exists()
    monkeypatch.setenv("AWS_ROLE_ARN", BED_SERVING_ROLE)
    code, out, _ = run_sync(host)
    assert code == 0 and out[0].startswith("sync: labels published to ")


def test_a_full_disk_fails_the_version_in_one_line_and_leaves_nothing(
    publish, run_sync, savedmodels: list[Path], tmp_path: Path
) -> None:
    """The host's disk fills up during the download: one line naming the version's folder and
    the cause, exit 1, no version and no staging folder left, and TF Serving's config as it was."""
    publish("full", 1, savedmodels[0])
    with small_disk(tmp_path / "disk", size_mb=4) as disk:
        if not disk.mounted:
            pytest.skip("needs a tmpfs: the sync runs in this process")
        host = Host(disk.root / "full")
        host.base.mkdir()
        disk.fill(16 << 10)
        code, _, err = run_sync(host)
        assert code == 1 and host.versions() == [] and host.stale_staging() == []
        assert sorted(path.name for path in host.base.iterdir()) == [".labels.lock", ".sync.lock"]
    (line,) = err
    assert line.startswith(
        f"sync: error: version 1 not synced: cannot write {host.version_dir(1)}: no space left on"
        " device; "
    ), line
    assert "free some room there (or work on a larger disk) and run it again" in line
