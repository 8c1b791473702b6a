"""ci_jobs.release: the next free version, claimed write-once; the release's own files (the
card's release section, dvc.lock); MANIFEST.json last; refusals before any upload.

A recording client shows the order, headers and bodies of every upload and answers 412 as S3
does for a key that exists; the real bucket (SeaweedFS, If-None-Match enforced) is exercised by
tests/test_serving_sync.py, whose hosts sync what this job published (two releases racing for one
number included), and by the rehearsal's scenario 7.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ci_jobs import release
from ci_jobs.bucket import Bucket, dvc_bucket
from classifier.errors import run_stage
from testbed.suite import write_unreleased_card

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOCK = b"schema: '2.0'\nstages: {}\n"
PACKAGE_FILES = ("saved_model.pb", "fingerprint.pb", "variables/variables.index")


class RecordingS3:
    """A bucket in memory: lists its keys with their MD5 ETags, records puts, and answers 412
    to a put of a key that exists, or of a key in ``taken_meanwhile`` (which then exists: another
    release wrote it between our listing and our put)."""

    def __init__(self, existing: dict[str, bytes] | None = None, taken_meanwhile=()):
        self.objects = dict(existing or {})
        self.taken_meanwhile = set(taken_meanwhile)
        self.puts: list[dict] = []

    def get_paginator(self, name: str):
        assert name == "list_objects_v2"
        objects = self.objects

        class Paginator:
            def paginate(self, Bucket: str, Prefix: str):
                contents = [
                    {"Key": key, "ETag": f'"{hashlib.md5(body).hexdigest()}"'}
                    for key, body in sorted(objects.items())
                    if key.startswith(Prefix)
                ]
                return [{"Contents": contents}] if contents else [{}]

        return Paginator()

    def put_object(self, **request) -> None:
        assert request["IfNoneMatch"] == "*" and request["Bucket"] == "bucket"
        key = request["Key"]
        if key in self.taken_meanwhile:
            self.taken_meanwhile.discard(key)
            self.objects[key] = b"another release's"
        if key in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[key] = request["Body"]
        self.puts.append(request)

    def body(self, key: str) -> bytes:
        return self.objects[key]


def make_package(directory: Path, model: str = "weights A") -> Path:
    for name in PACKAGE_FILES:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(f"{model}: {name}")
    write_unreleased_card(directory, "mnist", model)
    return directory


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "dist/mnist")


def publish(s3: RecordingS3, directory: Path) -> tuple[int, list[str]]:
    return release.publish(s3, "bucket", "mnist", directory, COMMIT, LOCK)


def published_version(s3: RecordingS3, version: int, model: str = "other") -> None:
    """A complete release of another model at ``version``."""
    prefix = f"releases/mnist/{version}/"
    s3.objects[prefix + "fingerprint.pb"] = f"{model} {version}".encode()
    s3.objects[prefix + "MANIFEST.json"] = b"{}"


def test_the_first_release_is_version_1_claimed_first_manifest_last(package: Path) -> None:
    s3 = RecordingS3()
    version, written = publish(s3, package)
    assert version == 1
    assert written == [
        "releases/mnist/1/fingerprint.pb",  # the claim
        "releases/mnist/1/assets.extra/dvc.lock",
        "releases/mnist/1/assets.extra/model_card.json",
        "releases/mnist/1/assets.extra/model_card.md",
        "releases/mnist/1/variables/variables.index",
        "releases/mnist/1/saved_model.pb",
        "releases/mnist/1/MANIFEST.json",
    ]
    assert [put["Key"] for put in s3.puts] == written


def test_the_release_records_version_commit_and_lock(package: Path) -> None:
    s3 = RecordingS3()
    publish(s3, package)
    lock_sha256 = hashlib.sha256(LOCK).hexdigest()
    card = json.loads(s3.body("releases/mnist/1/assets.extra/model_card.json"))
    assert card["release"] == {"version": 1, "git_commit": COMMIT, "dvc_lock_sha256": lock_sha256}
    assert card["note"] == "weights A"  # the rest of the card as packaged
    text = s3.body("releases/mnist/1/assets.extra/model_card.md").decode()
    assert text.startswith("# Model card: mnist, version 1\n")
    assert f"released from commit `{COMMIT}` with `dvc.lock` sha256 `{lock_sha256}`" in text
    assert "Not released yet" not in text
    assert s3.body("releases/mnist/1/assets.extra/dvc.lock") == LOCK
    manifest = json.loads(s3.body("releases/mnist/1/MANIFEST.json"))
    assert (manifest["model"], manifest["version"], manifest["format"]) == ("mnist", 1, 1)
    assert manifest["git_commit"] == COMMIT and manifest["dvc_lock_sha256"] == lock_sha256
    released = {key.removeprefix("releases/mnist/1/"): body for key, body in s3.objects.items()}
    assert manifest["files"] == {
        name: {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        for name, body in released.items()
        if name != "MANIFEST.json"
    }
    assert (package / "assets.extra/model_card.json").read_text().find("release") == -1  # dist/


def test_two_releases_in_a_row_get_n_and_n_plus_1(package: Path, tmp_path: Path) -> None:
    s3 = RecordingS3()
    for version in (1, 2, 3):
        published_version(s3, version)
    assert publish(s3, package)[0] == 4
    retrained = make_package(tmp_path / "retrained/dist/mnist", "weights B")
    assert publish(s3, retrained)[0] == 5
    assert json.loads(s3.body("releases/mnist/5/MANIFEST.json"))["version"] == 5


def test_a_number_taken_meanwhile_goes_to_the_next(package: Path) -> None:
    """Both releases listed versions 1-2; the other claimed 3 first: this one becomes 4."""
    s3 = RecordingS3(taken_meanwhile={"releases/mnist/3/fingerprint.pb"})
    published_version(s3, 1)
    published_version(s3, 2)
    version, written = publish(s3, package)
    assert version == 4
    assert all(key.startswith("releases/mnist/4/") for key in written)
    assert (
        json.loads(s3.body("releases/mnist/4/assets.extra/model_card.json"))["release"]["version"]
        == 4
    )
    assert "releases/mnist/3/MANIFEST.json" not in s3.objects  # nothing of ours went to 3


def test_an_unfinished_release_of_another_model_keeps_its_number(package: Path) -> None:
    s3 = RecordingS3({"releases/mnist/1/fingerprint.pb": b"a release that died"})
    assert publish(s3, package)[0] == 2


def test_the_same_model_is_not_published_twice(package: Path) -> None:
    s3 = RecordingS3()
    publish(s3, package)
    puts = len(s3.puts)
    with pytest.raises(release.AlreadyPublished) as done:
        publish(s3, package)
    assert done.value.version == 1 and len(s3.puts) == puts


def test_a_release_killed_half_way_is_completed_in_its_own_version(package: Path) -> None:
    first = RecordingS3()
    publish(first, package)
    s3 = RecordingS3(
        {
            k: v
            for k, v in first.objects.items()
            if not k.endswith(("MANIFEST.json", "saved_model.pb"))
        }
    )
    version, written = publish(s3, package)
    assert version == 1
    assert written == ["releases/mnist/1/saved_model.pb", "releases/mnist/1/MANIFEST.json"]
    assert s3.objects == first.objects


def test_an_unfinished_release_of_this_model_from_another_commit_is_refused(
    package: Path,
) -> None:
    first = RecordingS3()
    release.publish(first, "bucket", "mnist", package, "f" * 40, LOCK)
    s3 = RecordingS3({k: v for k, v in first.objects.items() if not k.endswith("MANIFEST.json")})
    with pytest.raises(
        release.Refusal,
        match=r"releases/mnist/1/ holds an unfinished release of"
        r" this model whose assets\.extra/model_card\.json differs",
    ):
        publish(s3, package)
    assert s3.puts == []


def test_a_key_other_than_the_claim_taken_meanwhile_is_refused(package: Path) -> None:
    s3 = RecordingS3(taken_meanwhile={"releases/mnist/1/variables/variables.index"})
    with pytest.raises(release.Refusal, match=r"variables\.index appeared meanwhile"):
        publish(s3, package)
    assert "releases/mnist/1/saved_model.pb" not in [put["Key"] for put in s3.puts]
    assert "releases/mnist/1/MANIFEST.json" not in s3.objects


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("saved_model.pb", r"holds no saved_model\.pb; run `dvc repro` \(package\) first"),
        ("MANIFEST.json", r"holds a MANIFEST\.json, which is the release's own; remove it"),
        ("model_card.md", r"model card cannot take the release \(its model_card\.md is not an"),
    ],
)
def test_a_package_that_is_not_ours_is_refused_before_any_upload(
    package: Path, change: str, why: str
) -> None:
    if change == "saved_model.pb":
        (package / change).unlink()
    elif change == "MANIFEST.json":
        (package / change).write_text("{}")
    else:
        (package / "assets.extra" / change).write_text("# Someone else's card\n")
    s3 = RecordingS3()
    with pytest.raises(release.Refusal, match=why):
        publish(s3, package)
    assert s3.puts == []


def test_the_bucket_is_the_dvc_remotes_with_local_overrides(tmp_path: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (
        ["init", "-q", "--no-scm"],
        ["remote", "add", "-d", "storage", "s3://team-bucket/dvc"],
        ["remote", "modify", "storage", "region", "eu-west-1"],
        ["remote", "modify", "--local", "storage", "endpointurl", "http://127.0.0.1:9"],
    ):
        subprocess.run([dvc, *args], cwd=tmp_path, check=True, capture_output=True)
    assert dvc_bucket(tmp_path) == Bucket("team-bucket", "http://127.0.0.1:9", "eu-west-1", "dvc")


def test_a_fault_of_the_machine_is_one_line_and_publishes_nothing(package: Path, capsys) -> None:
    """No file descriptor left (``ulimit -n`` reached, a real kernel refusal): ``release`` says so
    in one line, exit 1, and the bucket has not been touched."""
    s3 = RecordingS3()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # the next open is refused
    try:
        with pytest.raises(SystemExit) as stopped:
            run_stage("release", lambda: publish(s3, package))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert stopped.value.code == 1 and s3.puts == []
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"release: error: {package}: too many open files; raise the limit of open files"
        f" (ulimit -n, now {lowest_free}) and run it again"
    )
