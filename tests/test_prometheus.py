"""The Prometheus files in infra/prometheus, checked by Prometheus's own promtool (Debian's
`prometheus` package, which .ci/run installs): the config and rules load, the alert rules' unit
tests pass (and a wrong expectation fails them), and every metric they name is one the gateway
exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.gateway import Metrics
from testbed.repo import REPO_ROOT

PROMETHEUS = REPO_ROOT / "infra/prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool is missing: apt-get install prometheus (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_config_and_its_rules_load(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout + result.stderr


def test_the_alert_rules_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_wrong_expectation_fails_them(promtool: str, tmp_path: Path) -> None:
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    tests = (PROMETHEUS / "alerts.test.yml").read_text()
    (tmp_path / "alerts.test.yml").write_text(tests.replace("unsure 20% of", "unsure 21% of"))
    result = run(promtool, "test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "CanaryLessSureThanStable" in result.stdout + result.stderr


def exported_names() -> set[str]:
    """The sample names the gateway's metrics have, as Prometheus scrapes them."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
    return names


def test_every_metric_in_the_rules_is_one_the_gateway_exports() -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    used = set(re.findall(r"\b(gateway_[a-z_]+)\b", rules))
    assert used and used <= exported_names(), used - exported_names()
    assert {"gateway_requests_total", "gateway_low_confidence_predictions_total"} <= used
