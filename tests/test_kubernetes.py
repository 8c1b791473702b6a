"""The way out to a cluster, checked offline: ``infra/kubernetes/train.yaml`` against Kubernetes'
own schemas (``kubernetes-validate``, strict), and the TF_CONFIG its pods build for themselves."""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest
import yaml

from classifier.cluster import read_cluster
from testbed.repo import REPO_ROOT

MANIFEST = REPO_ROOT / "infra/kubernetes/train.yaml"


def resources() -> dict[str, dict]:
    return {document["kind"]: document for document in yaml.safe_load_all(MANIFEST.read_text())}


def validate(document: dict) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_manifest_is_valid_kubernetes() -> None:
    assert sorted(resources()) == ["Job", "Service", "ServiceAccount"]
    for document in resources().values():
        validate(document)


def test_the_validation_can_fail() -> None:
    job = copy.deepcopy(resources()["Job"])
    job["spec"]["completionMode"] = 3  # not a string
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)
    job = copy.deepcopy(resources()["Job"])
    job["spec"]["template"]["spec"]["containers"][0]["workers"] = 2  # no such field: strict
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_the_workers_find_each_other() -> None:
    """The pods' names, the headless Service and the worker count agree."""
    job, service = resources()["Job"], resources()["Service"]
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    workers = int(next(e["value"] for e in container["env"] if e["name"] == "WORKERS"))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"] == 2222
    assert pod["spec"]["serviceAccountName"] == resources()["ServiceAccount"]["metadata"]["name"]
    # a rule the API server enforces and the schemas do not carry (the Job API's documentation):
    # a per-index backoff limit only with restartPolicy Never
    assert "backoffLimitPerIndex" not in job["spec"] or pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["restartPolicy"] == "OnFailure"  # a restarted container keeps its volume


@pytest.mark.parametrize("index", [0, 2])
def test_each_pod_builds_the_tf_config_train_reads(index: int) -> None:
    """The container's own shell, up to its ``export TF_CONFIG``, run as pod ``index`` of three."""
    (container,) = resources()["Job"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    prelude = script[script.index('workers=""') : script.index("export TF_CONFIG")]
    line = script[script.index("export TF_CONFIG") :].splitlines()[0]
    built = subprocess.run(
        ["/bin/sh", "-c", f'set -eu\n{prelude}{line}\nprintf %s "$TF_CONFIG"'],
        env={"WORKERS": "3", "JOB_COMPLETION_INDEX": str(index), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cluster = read_cluster({"TF_CONFIG": built.stdout})
    job = resources()["Job"]["metadata"]["name"]
    assert cluster.workers == tuple(f"{job}-{i}.{job}:2222" for i in range(3))
    assert cluster.index == index and cluster.is_chief == (index == 0)
