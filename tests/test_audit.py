"""ci_jobs.audit: a forced re-run must reproduce every output's hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci_jobs import audit
from testbed.repo import REPO_ROOT


def lock(**outs: str) -> str:
    stages = {
        "train": {
            "cmd": "python -m stages.train",
            "outs": [{"path": p, "md5": m} for p, m in outs.items()],
        }
    }
    return yaml.safe_dump({"schema": "2.0", "stages": stages})


def test_identical_outputs_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a").write_text(lock(**{"models/model.keras": "1" * 32}))
    (tmp_path / "b").write_text(lock(**{"models/model.keras": "1" * 32}))
    assert audit.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out == "audit: all 1 outputs reproduced byte for byte\n"


def test_each_changed_or_missing_output_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a").write_text(lock(**{"models/model.keras": "1" * 32, "metrics.json": "3" * 32}))
    (tmp_path / "b").write_text(lock(**{"models/model.keras": "2" * 32}))
    assert audit.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"train: metrics.json: {'3' * 32} -> absent",
        f"train: models/model.keras: {'1' * 32} -> {'2' * 32}",
    ]
    assert captured.err.startswith("audit: error: 2 of 2 outputs differ after a forced re-run")


def test_reads_the_repository_lock() -> None:
    hashes = audit.output_hashes((REPO_ROOT / "dvc.lock").read_text())
    assert "train: models/model.keras" in hashes
    assert all(len(md5.removesuffix(".dir")) == 32 for md5 in hashes.values())
