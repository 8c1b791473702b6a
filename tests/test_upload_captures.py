"""serving.upload_captures: closed capture files to monitoring/<model>/<day>/ in a real S3
server (SeaweedFS, the test bed), write-once, deleted from the host once there."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.capture import CaptureFiles, read_records
from serving.upload_captures import key_for, upload
from testbed.repo import REPO_ROOT
from testbed.s3 import BUCKET, PUSH_ROLE, SeaweedFS, iam_config, role_client

DAY = 1796630400.0  # 2026-12-07T00:00:00Z


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam_config(oidc_issuer.url)).start()
    yield server
    server.stop()


@pytest.fixture
def s3(bed: SeaweedFS, oidc_issuer):
    return role_client(bed.endpoint, oidc_issuer.mint(), PUSH_ROLE, "pytest-host")


def captured(root: Path, model: str, records: list[dict], at: float) -> Path:
    files = CaptureFiles(root / model, max_bytes=1 << 20, clock=lambda: at)
    for record in records:
        files.write(record)
    return files.close()


def test_closed_files_go_to_their_model_and_day_then_leave_the_host(s3, tmp_path: Path) -> None:
    first = captured(tmp_path, "mnist", [{"n": 1}, {"n": 2}], DAY + 3600)
    other = captured(tmp_path, "digits", [{"n": 3}], DAY + 86400 + 60)
    (tmp_path / "mnist/open").joinpath("capture-20261207T090000-1-000009.jsonl.gz").write_bytes(
        gzip.compress(b"{}\n")
    )  # still open: not uploaded
    done, failed = upload(s3, BUCKET, tmp_path)
    assert failed == []
    assert done == [
        f"monitoring/digits/2026-12-08/{other.name}",
        f"monitoring/mnist/2026-12-07/{first.name}",
    ]
    body = s3.get_object(Bucket=BUCKET, Key=done[1])["Body"].read()
    assert [json.loads(line) for line in gzip.decompress(body).splitlines()] == [
        {"n": 1},
        {"n": 2},
    ]
    assert not first.exists() and not other.exists()
    assert len(list((tmp_path / "mnist/open").iterdir())) == 1
    assert upload(s3, BUCKET, tmp_path) == ([], [])


def test_a_file_already_uploaded_is_not_replaced_only_deleted_here(s3, tmp_path: Path) -> None:
    """An earlier run uploaded it, then died before deleting it: S3's 412 says so."""
    path = captured(tmp_path, "mnist", [{"n": 1}], DAY + 7200)
    key = key_for("mnist", path)
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"what was uploaded first")
    done, failed = upload(s3, BUCKET, tmp_path)
    assert (done, failed) == ([key], [])
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"what was uploaded first"
    assert not path.exists()


def test_a_failed_upload_keeps_the_file_and_says_which(tmp_path: Path, bed: SeaweedFS) -> None:
    path = captured(tmp_path, "mnist", [{"n": 1}], DAY + 60)
    import botocore.session

    nobody = botocore.session.get_session().create_client(
        "s3", endpoint_url=bed.endpoint, region_name="us-east-1",
        aws_access_key_id="unknown", aws_secret_access_key="unknown",
    )  # fmt: skip
    done, failed = upload(nobody, BUCKET, tmp_path)
    assert done == []
    (line,) = failed
    assert line.startswith(f"{path}: not uploaded to s3://{BUCKET}/{key_for('mnist', path)} (")
    assert line.endswith("; kept")
    assert read_records(path) == [{"n": 1}]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--capture-dir", "."],
            "upload_captures: error: no bucket: pass --bucket or set SERVING_BUCKET",
        ),
        (
            ["--capture-dir", "missing", "--bucket", "b"],
            "upload_captures: error: missing is not a folder; pass the gateway's --capture-dir",
        ),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], line: str, tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "SERVING_BUCKET"}
    result = subprocess.run(
        [sys.executable, "-m", "serving.upload_captures", *args],
        cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr.strip()) == (1, line)
