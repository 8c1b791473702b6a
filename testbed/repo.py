"""Git + DVC working copies of this repository, driven as a user drives them from a shell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment's bin: dvc, weed, python
ALL_STAGES = ["fetch", "prepare", "build", "train", "test", "package"]


def write_params(directory: Path, params: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    # --allow-empty: a run that reproduces the committed dvc.lock changes nothing to commit
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.com")
    git(repo, *identity, "commit", "--allow-empty", "-qm", message)


def copy_of_repository(target: Path) -> Path:
    """A new git repo holding this working tree's files that git would carry (not ignored ones).

    Like a fresh clone, but it includes uncommitted changes, so tests check what is on disk.
    """
    listed = git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    commit_all(target, "copy of the working tree")
    return target


def absolute_mirror(source: str) -> str:
    """An ``MNIST_MIRROR`` that still names the same place from a copy elsewhere: a relative
    directory is taken from the current one; a URL is left as it is."""
    return source if "://" in source else str(Path(source).resolve())


class DvcRepo:
    """A git + DVC working copy, driven as a user would drive it from a shell."""

    def __init__(self, repo: Path, **environment: str):
        self.repo = repo
        ambient = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no stray keys
        self.env = {
            **ambient,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": "",
            **environment,
        }

    def run(self, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.repo,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )

    def dvc(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, env=env)

    def ran(
        self, *args: str, launcher: tuple[str, ...] = ()
    ) -> tuple[list[str], subprocess.CompletedProcess]:
        """Run ``dvc <args>`` (under ``launcher``, e.g. ``taskset``); return the stages DVC
        actually executed, and the result."""
        result = self.run(*launcher, str(BIN / "dvc"), *args)
        return re.findall(r"Running stage '(\w+)'", result.stdout), result

    def repro(
        self, *args: str, launcher: tuple[str, ...] = ()
    ) -> tuple[list[str], subprocess.CompletedProcess]:
        return self.ran("repro", *args, launcher=launcher)

    def set_params(self, **sections: dict) -> None:
        params = yaml.safe_load((self.repo / "params.yaml").read_text())
        for section, values in sections.items():
            params[section].update(values)
        write_params(self.repo, params)

    def locked_stages(self) -> dict[str, dict]:
        """Stage name -> its dvc.lock entry (cmd, deps, params, outs with their md5s)."""
        return yaml.safe_load((self.repo / "dvc.lock").read_text())["stages"]

    def locked_hashes(self) -> dict[str, str]:
        """Output path -> md5, as recorded in dvc.lock."""
        return {
            out["path"]: out["md5"]
            for stage in self.locked_stages().values()
            for out in stage.get("outs", [])
        }
