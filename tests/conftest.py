"""Shared fixtures. Tests that need real MNIST read it from ../shared/datasets/mnist by path."""

from __future__ import annotations

import functools
import http.server
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from testbed.loopback import Loopback, Quiet
from testbed.repo import DvcRepo, commit_all, write_params
from testbed.suite import (
    SHARED_MNIST,
    RanPipeline,
    fast_params,
    small_project,
    write_prepared_subset,
)

# The slowest modules, longest first (as measured in a run of the whole suite): the workers take
# them first and fill in with the short ones, so they finish together (xdist runs the modules in
# this order: ``--no-loadscope-reorder`` in pyproject.toml; its default orders by test count).
SLOWEST_MODULES = (
    "test_ci_rehearsal.py",
    "test_remote.py",
    "test_retrain_rehearsal.py",
    "test_lock_reproduced.py",
    "test_own_data.py",
    "test_experiments.py",
    "test_pipeline_e2e.py",
    "test_plots.py",
    "test_train.py",
    "test_package.py",
    "test_determinism.py",
    "test_champion.py",
    "test_machine_faults.py",
    "test_multi_worker.py",
    "test_gpu_check.py",
    "test_benchmarks.py",
    "test_monitor.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_MODULES.index(name) if name in SLOWEST_MODULES else len(SLOWEST_MODULES)

    items.sort(key=rank)  # stable: the order within a module is kept


@pytest.fixture(scope="session", autouse=True)
def no_public_mirrors() -> Iterator[None]:
    """No test reaches the internet: every stage and DVC run sees no public MNIST mirror.

    Tests that exercise the public-mirror path set MNIST_PUBLIC_MIRRORS to loopback servers.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PUBLIC_MIRRORS", "")
        yield


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the offline MNIST mirror is missing at {SHARED_MNIST}")
    return SHARED_MNIST


class _QuietDirectory(Quiet, http.server.SimpleHTTPRequestHandler):
    pass


def serve_directory(directory: Path) -> Loopback:
    return Loopback(functools.partial(_QuietDirectory, directory=str(directory)))


@pytest.fixture(scope="session")
def http_mirror(shared_mnist: Path) -> Iterator[str]:
    """The shared MNIST files served over HTTP on 127.0.0.1, like a public mirror."""
    mirror = serve_directory(shared_mnist)
    yield f"{mirror.url}/"
    mirror.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Serve any directory over HTTP for the length of one test."""
    servers = []

    def start(directory: Path) -> str:
        servers.append(serve_directory(directory))
        return f"{servers[-1].url}/"

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory, shared_mnist: Path) -> Path:
    """A small real-MNIST workspace, trained once per session: data/prepared and models/."""
    from classifier.mnist import MNIST_MODEL_IO
    from classifier.model import build_model, save_model
    from classifier.params import parse_params
    from classifier.paths import Paths
    from stages.train import train

    workspace = tmp_path_factory.mktemp("trained")
    raw = fast_params()
    write_params(workspace, raw)
    params = parse_params(raw)
    write_prepared_subset(workspace / "data/prepared", train=3000, validation=500, test=1000)
    save_model(
        build_model(params.build, "float32", *MNIST_MODEL_IO), workspace / "models/untrained.keras"
    )
    train(params.train, Paths(workspace))
    return workspace


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator:
    """A local OIDC issuer shaped like CircleCI's (testbed/s3.py)."""
    from testbed.s3 import OidcIssuer

    issuer = OidcIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def ran_pipeline(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, http_mirror: str
) -> RanPipeline:
    """The tests' small pipeline (one epoch), run cold once per session over the HTTP mirror and
    committed; test_pipeline_e2e, test_experiments, test_remote and test_plots start from copies.

    Under xdist the first worker to need it makes it in the session's shared temporary folder
    (pytest-xdist's recipe for a session fixture made once); the other finds it there."""
    if worker_id == "master":  # not distributed: this session's own folder
        return make_ran_pipeline(tmp_path_factory.mktemp("ran-pipeline"), http_mirror)
    root = tmp_path_factory.getbasetemp().parent / "ran-pipeline"
    with FileLock(f"{root}.lock"):
        if (root / RanPipeline.RECORD).is_file():
            return RanPipeline.read(root)
        shutil.rmtree(root, ignore_errors=True)  # what a failed attempt left
        return make_ran_pipeline(root, http_mirror)


def make_ran_pipeline(root: Path, http_mirror: str) -> RanPipeline:
    repo = small_project(root)
    ran, result = DvcRepo(repo, MNIST_MIRROR=http_mirror).repro()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    commit_all(repo, "run the pipeline")
    return RanPipeline(root, ran).write()
