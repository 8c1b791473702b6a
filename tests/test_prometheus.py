"""The Prometheus files in infra/prometheus, checked by Prometheus's own promtool (Debian's
`prometheus` package, which .ci/run installs): the config and rules load, the alert rules' unit
tests pass (and a wrong expectation fails them), each alert has a case that fires it and one
that does not, and every metric they name is one the gateway or the monitor exports, or
TensorFlow Serving's; TensorFlow Serving's monitoring config parses as its proto and points where
Prometheus scrapes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.gateway import Metrics
from serving.monitor import write_textfile
from testbed.repo import REPO_ROOT
from testbed.tf_serving_config import parse_monitoring_config

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
    assert "SUCCESS: 9 rules found" in result.stdout + result.stderr


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


def exported_names(tmp_path: Path) -> set[str]:
    """The gateway's metric names, and the monitor's as its textfile (read back with
    prometheus_client's parser) gives them."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
    report = {"model": "mnist", "labels": {"stable": {"verdict": "drift", "drifted": ["x"]}}}
    write_textfile(report, tmp_path / "monitor.prom")
    text = (tmp_path / "monitor.prom").read_text()
    return names | {family.name for family in text_string_to_metric_families(text)}


def test_every_metric_in_the_rules_is_one_that_is_exported(tmp_path: Path) -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    ours = set(re.findall(r"\b((?:gateway|serving_monitor)_[a-z_]+)\b", rules))
    assert ours and ours <= exported_names(tmp_path), ours - exported_names(tmp_path)
    assert {"gateway_requests_total", "serving_monitor_drifted_statistics"} <= ours
    theirs = set(re.findall(r"(:tensorflow:[a-z_:]+)", rules))
    assert theirs == {":tensorflow:cc:saved_model:load_attempt_count"}  # TensorFlow's own name


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert len(alerts) == 9
    assert alerts == fired == quiet, (alerts - fired, alerts - quiet)


def test_tensorflow_serving_exports_where_prometheus_scrapes() -> None:
    config = parse_monitoring_config((REPO_ROOT / "infra/tf_serving/monitoring.config").read_text())
    assert config["prometheus_config"] == {"enable": True, "path": "/monitoring/prometheus/metrics"}
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    (serving,) = [job for job in scrape if job["job_name"] == "tensorflow-serving"]
    assert serving["metrics_path"] == config["prometheus_config"]["path"]
    assert serving["static_configs"] == [{"targets": ["127.0.0.1:8501"]}]  # the REST port
