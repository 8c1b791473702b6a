"""``train`` on a cluster: worker processes on 127.0.0.1 with ``TF_CONFIG``, each in a workspace of
its own, with the small params (``testbed/workers.py``)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from classifier.cluster import read_cluster
from classifier.errors import StageError
from classifier.files import file_md5
from testbed.loopback import free_ports
from testbed.repo import write_params
from testbed.workers import WorkerProcesses, worker_workspace


@pytest.fixture
def workers():
    """Start workers; whatever still runs when the test ends, passed or failed, is killed."""
    with WorkerProcesses() as started:
        yield started


def finished(process, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def all_finished(processes: list) -> list[tuple[int, str, str]]:
    """Each worker's status and output, once all have ended (they were all started first)."""
    return [finished(process) for process in processes]


def cluster_of_two(trained_workspace: Path, root: Path) -> list[Path]:
    """Two workers' workspaces, training three epochs (a worker killed in the second leaves one
    finished to resume from)."""
    spaces = [worker_workspace(trained_workspace, root / f"w{index}") for index in range(2)]
    for space in spaces:
        params = yaml.safe_load((space / "params.yaml").read_text())
        params["train"]["epochs"] = 3
        write_params(space, params)
    return spaces


def test_two_workers_train_one_model_the_chief_alone_writes_it_and_a_killed_one_resumes(
    tmp_path: Path, trained_workspace: Path, workers: WorkerProcesses
) -> None:
    spaces = cluster_of_two(trained_workspace, tmp_path / "uninterrupted")
    ports = free_ports(2)
    results = all_finished([workers.start(space, ports, i) for i, space in enumerate(spaces)])
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert (
        "train: worker 0 of 2, on CPU, MultiWorkerMirroredStrategy strategy with 2 replica(s)"
        in (results[0][1])
    )
    chief, other = spaces
    report = json.loads((chief / "reports/train.json").read_text())
    assert (report["strategy"], report["workers"], report["replicas"]) == (
        "MultiWorkerMirroredStrategy",
        2,
        2,
    )
    assert report["global_batch_size"] == 2 * 128
    single = json.loads((trained_workspace / "reports/train.json").read_text())
    assert report["peak_learning_rate"] == pytest.approx(2 * single["peak_learning_rate"])
    # the chief's model within the usual band of the one-machine model, trained on the same data
    accuracy = json.loads((chief / "metrics/train/metrics.json").read_text())["eval"]["accuracy"]
    one_machine = json.loads((trained_workspace / "metrics/train/metrics.json").read_text())
    assert accuracy >= one_machine["eval"]["accuracy"] - 0.05, (accuracy, one_machine)
    assert (chief / "models/model.keras").is_file() and not (chief / ".train-state").exists()
    # the other worker: nothing but what it was given
    given = [str(p.relative_to(chief)) for p in (chief / "data").rglob("*") if p.is_file()]
    left = [str(p.relative_to(other)) for p in other.rglob("*") if p.is_file()]
    assert sorted(left) == sorted([*given, "models/untrained.keras", "params.yaml"])

    # the same training, worker 1 killed as the second epoch begins
    killed = cluster_of_two(trained_workspace, tmp_path / "killed")
    ports = free_ports(2)
    running = [workers.start(space, ports, i) for i, space in enumerate(killed)]
    deadline = time.monotonic() + 300
    while not running[0].stdout.readline().startswith("Epoch 2/3"):
        assert time.monotonic() < deadline and running[0].poll() is None, running[0].stderr.read()
    running[1].send_signal(signal.SIGKILL)
    code, _, err = finished(running[0], timeout=120)  # the chief sees it go, and stops
    running[1].wait()
    (line,) = [line for line in err.splitlines() if line.startswith("train: error: ")]
    assert code == 1 and line == (
        "train: error: worker 1 of the cluster stopped answering (TensorFlow: UnavailableError);"
        " start every worker again: each resumes after epoch 1, the last one all of them finished"
    ), line
    # worker 1's resume state lost (a pod replaced with an empty volume): no worker trains
    kept = killed[1] / ".train-state"
    kept.rename(tmp_path / "kept-state")
    ports = free_ports(2)
    refused = all_finished([workers.start(space, ports, i) for i, space in enumerate(killed)])
    for code, _, err in refused:
        lines = [line for line in err.splitlines() if line.startswith("train: error: ")]
        assert len(lines) == 1, (code, err[-3000:])
        (line,) = lines
        assert code == 1 and line == (
            "train: error: the workers resume from different epochs ([1, 0] finished, replica by"
            " replica): one lost its resume state; remove .train-state on every worker and start"
            " them all again"
        ), line
    assert not (killed[0] / "models/model.keras").exists()
    (tmp_path / "kept-state").rename(kept)  # the state back: the cluster resumes as one
    ports = free_ports(2)
    again = all_finished([workers.start(space, ports, i) for i, space in enumerate(killed)])
    for code, out, err in again:
        assert code == 0 and "train: resuming after epoch 1 of 3" in out, err[-3000:]
    resumed = killed[0] / "models/model.keras"
    assert file_md5(resumed) == file_md5(chief / "models/model.keras")


def test_a_cluster_of_one_worker_trains_as_one(
    tmp_path: Path, trained_workspace: Path, workers: WorkerProcesses
) -> None:
    space = worker_workspace(trained_workspace, tmp_path / "w0")
    code, _, err = finished(workers.start(space, free_ports(1), 0))
    assert code == 0, err[-3000:]
    report = json.loads((space / "reports/train.json").read_text())
    assert (report["strategy"], report["workers"], report["replicas"]) == (
        "MultiWorkerMirroredStrategy",
        1,
        1,
    )
    assert report["global_batch_size"] == 128 and (space / "models/model.keras").is_file()
    print(
        "MD5",
        file_md5(space / "models/model.keras"),
        file_md5(trained_workspace / "models/model.keras"),
    )


def test_a_worker_alone_stops_in_one_line_naming_the_missing_one(
    tmp_path: Path, trained_workspace: Path, workers: WorkerProcesses
) -> None:
    ports = free_ports(2)
    space = worker_workspace(trained_workspace, tmp_path / "w0")
    began = time.monotonic()
    code, _, err = finished(workers.start(space, ports, 0, {"TRAIN_CLUSTER_TIMEOUT_S": "5"}), 120)
    assert code == -signal.SIGKILL and time.monotonic() - began < 60  # its watch ended it
    (line,) = [line for line in err.splitlines() if line.startswith("train: error: ")]
    assert line.startswith(
        f"train: error: worker 0 did not meet the cluster within 5 s: worker 1 at"
        f" 127.0.0.1:{ports[1]} (connection refused); start every worker of TF_CONFIG"
    ), line
    assert not (space / "models/model.keras").exists() and not (space / "reports").exists()


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{not json", "TF_CONFIG is not a cluster (JSONDecodeError: "),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not a cluster (KeyError: 'task')"),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]},'
            ' "task": {"type": "worker", "index": 0}}',
            "TF_CONFIG names jobs ['ps', 'worker'] and task type 'worker': train runs as workers",
        ),
        (
            '{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
            "TF_CONFIG's workers must be host:port addresses; got ['a']",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "TF_CONFIG's task index 1 is not one of its 1 workers",
        ),
    ],
)
def test_a_malformed_tf_config_is_one_line(tf_config: str, message: str) -> None:
    with pytest.raises(StageError) as refused:
        read_cluster({"TF_CONFIG": tf_config})
    assert str(refused.value).startswith(message)


def test_no_tf_config_is_one_machine() -> None:
    assert read_cluster({}) is None and read_cluster({"TF_CONFIG": " "}) is None
    two = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
    cluster = read_cluster({"TF_CONFIG": two})
    assert cluster is not None and not cluster.is_chief and cluster.peers == {0: "a:1"}


def test_the_lost_worker_is_named_whether_or_not_tensorflow_names_it() -> None:
    """TensorFlow's UnavailableError names the lost task in some runs and not in others; with one
    peer there is no doubt which it was (the killed-worker test above met both)."""
    config = '{{"cluster": {{"worker": {workers}}}, "task": {{"type": "worker", "index": 0}}}}'
    two = read_cluster({"TF_CONFIG": config.format(workers='["a:1", "b:2"]')})
    three = read_cluster({"TF_CONFIG": config.format(workers='["a:1", "b:2", "c:3"]')})
    unnamed = "failed to connect to all addresses"
    assert two.lost_worker(unnamed) == "worker 1"
    assert three.lost_worker("task /job:worker/replica:0/task:2 is unavailable") == "worker 2"
    assert three.lost_worker("Socket closed: /job:worker/task:1") == "worker 1"
    assert three.lost_worker(unnamed) == "a worker"
