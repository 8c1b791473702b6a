"""The model base path on a TensorFlow Serving host: what lives there, and who may touch it.

    /models/mnist/               base path; its name is the model's name (TF Serving's convention)
      1/  2/  ...                verified versions, each with its MANIFEST.json
      models.config              TF Serving's --model_config_file, rewritten whole, atomically
      labels.json                stable, canary, earlier stables: what the config's labels say
      .labels.published          sha256 of the labels last published to the bucket (labels/)
      .incoming-<v>-<random>/    a version being downloaded; a sync killed there leaves it behind,
                                 the next sync removes it
      .retired-<v>-<random>/     a version being removed (renamed out of sight first); likewise
      .sync.lock  .labels.lock   one sync at a time; label changes never wait for a download

TF Serving loads only folders whose name is an integer, so nothing but a complete, verified
version is ever visible to it: a version appears by renaming its staging folder (same file
system, so the rename is atomic).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from classifier.errors import StageError

STAGING_PREFIX = ".incoming-"
RETIRED_PREFIX = ".retired-"
CONFIG_NAME = "models.config"
LABELS_NAME = "labels.json"


def parse_version(name: str) -> int | None:
    """The version a folder or key segment names, or None: canonical decimal integers only."""
    if re.fullmatch(r"0|[1-9][0-9]*", name) is None:
        return None
    return int(name)


@dataclass(frozen=True)
class Host:
    base: Path

    @property
    def model(self) -> str:
        return self.base.name

    @property
    def config(self) -> Path:
        return self.base / CONFIG_NAME

    @property
    def labels(self) -> Path:
        return self.base / LABELS_NAME

    def version_dir(self, version: int) -> Path:
        return self.base / str(version)

    def versions(self) -> list[int]:
        """The versions on this host: integer-named folders, as TF Serving sees them."""
        if not self.base.is_dir():
            return []
        found = (parse_version(path.name) for path in self.base.iterdir() if path.is_dir())
        return sorted(version for version in found if version is not None)

    def new_staging(self, version: int) -> Path:
        """An empty folder beside the version's target, with a name TF Serving ignores."""
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=self.base))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a server running as another user
        return staging

    def retire(self, version: int) -> Path:
        """Rename a version out of TF Serving's sight (atomic); the caller deletes it after."""
        hidden = Path(tempfile.mkdtemp(prefix=f"{RETIRED_PREFIX}{version}-", dir=self.base))
        hidden.rmdir()
        self.version_dir(version).rename(hidden)
        return hidden

    def stale_staging(self) -> list[Path]:
        """Folders an interrupted sync left: a download or a removal it did not finish."""
        prefixes = (STAGING_PREFIX, RETIRED_PREFIX)
        return sorted(path for prefix in prefixes for path in self.base.glob(f"{prefix}*"))

    @contextlib.contextmanager
    def lock(self, name: str, wait: bool = True) -> Iterator[None]:
        """Hold ``.<name>.lock`` exclusively (released by the kernel if the process dies).

        ``wait=False`` refuses at once when it is held: a sync started by cron while the last one
        is still downloading has nothing to add, and queueing would pile them up.
        """
        with (self.base / f".{name}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise StageError(
                    f"another {name} is running on {self.base} (it holds .{name}.lock); this one"
                    " changed nothing: let that one finish"
                ) from None
            yield
