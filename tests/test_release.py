"""ci_jobs.release: write-once publication, MANIFEST.json last; refusals before any upload.

The real bucket (SeaweedFS, If-None-Match enforced) is exercised by the rehearsal's scenario 7
and by tests/test_serving_sync.py, whose hosts sync what this job published; here a recording
client shows the order, headers and bodies of every upload.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ci_jobs import release
from ci_jobs.bucket import Bucket, dvc_bucket

WHERE = "s3://bucket/releases/mnist/3/"


class RecordingS3:
    """Lists ``existing`` keys; records puts; answers 412 for keys in ``taken``."""

    def __init__(self, existing: dict[str, str] | None = None, taken: set[str] = frozenset()):
        self.existing = existing or {}
        self.taken = taken
        self.puts: list[dict] = []

    def get_paginator(self, name: str):
        assert name == "list_objects_v2"
        existing = self.existing

        class Paginator:
            def paginate(self, Bucket: str, Prefix: str):
                contents = [
                    {"Key": k, "ETag": f'"{v}"'}
                    for k, v in existing.items()
                    if k.startswith(Prefix)
                ]
                return [{"Contents": contents}] if contents else [{}]

        return Paginator()

    def put_object(self, **request) -> None:
        if request["Key"] in self.taken:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.puts.append(request)


@pytest.fixture
def version(tmp_path: Path) -> Path:
    directory = tmp_path / "dist/mnist/3"
    for name in (
        "saved_model.pb",
        "fingerprint.pb",
        "variables/variables.index",
        "assets.extra/model_card.md",
    ):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(f"content of {name}")
    return directory


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_publishes_every_file_write_once_saved_model_then_manifest_last(version: Path) -> None:
    s3 = RecordingS3()
    written = release.publish(s3, "bucket", "mnist", 3, version)
    assert written == [
        "releases/mnist/3/assets.extra/model_card.md",
        "releases/mnist/3/fingerprint.pb",
        "releases/mnist/3/variables/variables.index",
        "releases/mnist/3/saved_model.pb",
        "releases/mnist/3/MANIFEST.json",
    ]
    assert [put["Key"] for put in s3.puts] == written
    assert all(put["IfNoneMatch"] == "*" and put["Bucket"] == "bucket" for put in s3.puts)
    assert s3.puts[-2]["Body"] == b"content of saved_model.pb"


def test_the_manifest_holds_sha256_and_size_of_every_file(version: Path) -> None:
    s3 = RecordingS3()
    release.publish(s3, "bucket", "mnist", 3, version)
    manifest = json.loads(s3.puts[-1]["Body"])
    names = [
        "assets.extra/model_card.md",
        "fingerprint.pb",
        "saved_model.pb",
        "variables/variables.index",
    ]
    assert manifest == {
        "format": 1,
        "model": "mnist",
        "version": 3,
        "files": {
            name: {"sha256": sha256(f"content of {name}"), "size": len(f"content of {name}")}
            for name in names
        },
    }
    again = RecordingS3()
    release.publish(again, "bucket", "mnist", 3, version)
    assert again.puts[-1]["Body"] == s3.puts[-1]["Body"]  # a re-run would upload the same bytes


def test_refuses_a_published_version_before_uploading(version: Path) -> None:
    s3 = RecordingS3(
        {
            "releases/mnist/3/saved_model.pb": md5("content of saved_model.pb"),
            "releases/mnist/3/MANIFEST.json": "0" * 32,
        }
    )
    with pytest.raises(release.Refusal, match=f"{WHERE} is already published; versions are never"):
        release.publish(s3, "bucket", "mnist", 3, version)
    assert s3.puts == []


def test_other_versions_do_not_count(version: Path) -> None:
    s3 = RecordingS3(
        {"releases/mnist/2/MANIFEST.json": "0" * 32, "releases/mnist/30/MANIFEST.json": "0" * 32}
    )
    assert len(release.publish(s3, "bucket", "mnist", 3, version)) == 5


def test_completes_an_unfinished_release_of_the_same_files(version: Path) -> None:
    s3 = RecordingS3({"releases/mnist/3/fingerprint.pb": md5("content of fingerprint.pb")})
    written = release.publish(s3, "bucket", "mnist", 3, version)
    assert "releases/mnist/3/fingerprint.pb" not in written
    assert written[-2:] == ["releases/mnist/3/saved_model.pb", "releases/mnist/3/MANIFEST.json"]
    assert len(written) == 4


def test_a_release_killed_before_its_manifest_gets_only_the_manifest(version: Path) -> None:
    """Everything but the manifest is there: the version is not published yet, so it completes."""
    s3 = RecordingS3(
        {
            f"releases/mnist/3/{path.relative_to(version).as_posix()}": md5(path.read_text())
            for path in version.rglob("*")
            if path.is_file()
        }
    )
    assert release.publish(s3, "bucket", "mnist", 3, version) == ["releases/mnist/3/MANIFEST.json"]
    assert json.loads(s3.puts[0]["Body"])["files"]["saved_model.pb"]["size"] == 25


def test_refuses_an_unfinished_release_of_other_files(version: Path) -> None:
    s3 = RecordingS3({"releases/mnist/3/fingerprint.pb": md5("another model")})
    with pytest.raises(release.Refusal, match=r"unfinished release whose fingerprint\.pb differs"):
        release.publish(s3, "bucket", "mnist", 3, version)
    assert s3.puts == []


def test_a_key_taken_meanwhile_stops_before_saved_model(version: Path) -> None:
    s3 = RecordingS3(taken={"releases/mnist/3/variables/variables.index"})
    with pytest.raises(release.Refusal, match=r"variables\.index appeared meanwhile"):
        release.publish(s3, "bucket", "mnist", 3, version)
    keys = [put["Key"] for put in s3.puts]
    assert "releases/mnist/3/saved_model.pb" not in keys
    assert "releases/mnist/3/MANIFEST.json" not in keys


def test_a_manifest_taken_meanwhile_is_refused(version: Path) -> None:
    s3 = RecordingS3(taken={"releases/mnist/3/MANIFEST.json"})
    with pytest.raises(release.Refusal, match=rf"MANIFEST\.json appeared meanwhile; {WHERE} is"):
        release.publish(s3, "bucket", "mnist", 3, version)


def test_refuses_a_package_that_holds_a_manifest_of_its_own(version: Path) -> None:
    (version / "MANIFEST.json").write_text("{}")
    with pytest.raises(release.Refusal, match=r"holds a MANIFEST\.json, which is the release's"):
        release.publish(RecordingS3(), "bucket", "mnist", 3, version)


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
