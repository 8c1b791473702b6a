"""A small disk for the fault-injection tests: a real file system that fills up or turns
read-only under a stage, so that its write fails in the kernel, not in a mock.

As root (the CI machine and this one), a tmpfs of a given size mounted at a folder, filled to the
room a test leaves, or remounted read-only. Where this process may not mount, a plain folder
whose writers run under a file size limit (RLIMIT_FSIZE: a write past it fails with EFBIG) and a
folder without write permission; the cause a test expects comes from ``cause`` and
``read_only_cause`` either way.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from classifier.files import file_md5
from testbed.repo import REPO_ROOT

FSIZE_LIMIT = 4096  # bytes a writer may write to one file where no tmpfs can be mounted


@dataclass
class SmallDisk:
    root: Path
    mounted: bool

    @property
    def cause(self) -> str:
        return "no space left on device" if self.mounted else "file too large"

    @property
    def read_only_cause(self) -> str:
        return "read-only file system" if self.mounted else "permission denied"

    def fill(self, leave_bytes: int) -> None:
        """Take all the room but ``leave_bytes`` (a tmpfs only: elsewhere the size limit acts)."""
        if not self.mounted:
            return
        free = shutil.disk_usage(self.root).free - leave_bytes
        if free > 0:
            with (self.root / "filler").open("wb") as filler:
                os.posix_fallocate(filler.fileno(), 0, free)

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.root)], check=True)
        else:
            for folder, _, _ in os.walk(self.root):
                Path(folder).chmod(0o555)

    def run(self, module: str, *args: str, cwd: Path, env: dict | None = None):
        """``python -m <module>`` in ``cwd`` as DVC runs a stage, under the size limit where the
        disk is not a tmpfs."""
        limit = None if self.mounted else (FSIZE_LIMIT, FSIZE_LIMIT)

        def limited() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)

        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=limited if limit else None,
        )


def mountable() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def small_disk(where: Path, size_mb: int) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mb`` at ``where`` (unmounted at the end), or the fallback above."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = (
        mountable()
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield SmallDisk(where, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(where)], check=False)
        else:
            for folder, _, _ in os.walk(where):
                Path(folder).chmod(0o755)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path, with its bytes' md5: equal before and after a
    failed run means nothing was written, changed or left behind."""
    return {
        str(path.relative_to(root)): file_md5(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "filler"
    }
