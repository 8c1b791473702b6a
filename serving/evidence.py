"""A canary's evidence: what the gateway (``serving/gateway.py``) counted for it and for stable,
and whether it holds up against stable's (``serving.labels promote`` asks before it moves
``stable``).

Read from the gateway's ``/metrics`` (its counters since it started, per model, label and
version; only the versions the labels name now are counted). The canary must have answered at
least ``monitor.canary_min_predictions`` predictions, and compared with stable:

- its error ratio (predict requests not answered 200) no more than
  ``monitor.canary_max_error_increase`` above stable's;
- its mix of predicted classes not another one: refused when a chi-squared test of the two
  (``scipy.stats.chi2_contingency``) says p < ``monitor.alpha`` *and* at least
  ``monitor.min_class_shift`` of its predictions fall in other classes than stable's shares
  would put them;
- its share of low-confidence predictions no more than
  ``monitor.canary_max_low_confidence_increase`` above stable's, and its mean confidence no
  more than ``monitor.canary_max_confidence_drop`` below stable's.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from classifier.errors import StageError
from classifier.params import MonitorParams

METRICS_PATH = "/metrics"


@dataclass
class Evidence:
    """What the gateway counted for one version behind one label."""

    label: str
    version: int
    answers: dict[str, float] = field(default_factory=dict)  # predict requests by status code
    classes: dict[str, float] = field(default_factory=dict)  # predictions by class name
    low_confidence: float = 0.0
    confidence_sum: float = 0.0
    predictions: float = 0.0

    @property
    def requests(self) -> float:
        return sum(self.answers.values())

    @property
    def error_ratio(self) -> float:
        return 1 - self.answers.get("200", 0.0) / self.requests if self.requests else 0.0

    @property
    def low_confidence_share(self) -> float:
        return self.low_confidence / self.predictions if self.predictions else 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.predictions if self.predictions else 0.0

    def summary(self) -> dict:
        return {
            "version": self.version,
            "predict_requests": int(self.requests),
            "predictions": int(self.predictions),
            "error_ratio": round(self.error_ratio, 6),
            "low_confidence_share": round(self.low_confidence_share, 6),
            "mean_confidence": round(self.mean_confidence, 6),
        }


def read_metrics(gateway: str) -> str:
    url = gateway.rstrip("/") + METRICS_PATH
    if not url.startswith(("http://", "https://")):
        raise StageError(f"--gateway {gateway} is not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (http(s) only)
            return answer.read().decode()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StageError(
            f"cannot read the gateway's metrics at {url} ({reason}); is `python -m"
            " serving.gateway` running there? (--force promotes without evidence)"
        ) from None


def evidence_of(metrics_text: str, model: str, label: str, version: int) -> Evidence:
    """What the metrics say of ``version`` answering under ``label`` for ``model``."""
    found = Evidence(label, version)
    wanted = {"model": model, "label": label, "version": str(version)}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if any(sample.labels.get(key) != value for key, value in wanted.items()):
                continue
            if sample.name == "gateway_requests_total" and sample.labels["api"] == "predict":
                code = sample.labels["code"]
                found.answers[code] = found.answers.get(code, 0.0) + sample.value
            elif sample.name == "gateway_predicted_class_total":
                found.classes[sample.labels["class_name"]] = sample.value
            elif sample.name == "gateway_low_confidence_predictions_total":
                found.low_confidence = sample.value
            elif sample.name == "gateway_prediction_confidence_sum":
                found.confidence_sum = sample.value
            elif sample.name == "gateway_prediction_confidence_count":
                found.predictions = sample.value
    return found


def class_mix_failure(canary: Evidence, stable: Evidence, params: MonitorParams) -> str | None:
    names = sorted(set(canary.classes) | set(stable.classes))
    table = np.array([[e.classes.get(name, 0.0) for name in names] for e in (canary, stable)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or min(table.sum(axis=1)) == 0:
        return None
    p_value = float(stats.chi2_contingency(table).pvalue)
    shares = table / table.sum(axis=1, keepdims=True)
    shift = float(np.abs(shares[0] - shares[1]).sum() / 2)
    if p_value < params.alpha and shift >= params.min_class_shift:
        return (
            f"its predicted classes differ from stable's: {shift:.1%} of its predictions are in"
            f" other classes than stable's mix (monitor.min_class_shift {params.min_class_shift:g};"
            f" chi-squared p={p_value:.2g})"
        )
    return None


def canary_failures(canary: Evidence, stable: Evidence, params: MonitorParams) -> list[str]:
    """Every way the canary's evidence falls short, each with its numbers; [] to promote."""
    if canary.predictions < params.canary_min_predictions:
        return [
            f"the gateway saw {int(canary.predictions)} predictions of canary version"
            f" {canary.version}, fewer than monitor.canary_min_predictions"
            f" {params.canary_min_predictions}: let it serve longer"
        ]
    if not stable.predictions:
        return [f"the gateway saw no predictions of stable version {stable.version} to compare"]
    failures = []
    if canary.error_ratio > stable.error_ratio + params.canary_max_error_increase:
        failures.append(
            f"error ratio {canary.error_ratio:.2%} against stable's {stable.error_ratio:.2%}"
            f" (monitor.canary_max_error_increase {params.canary_max_error_increase:g})"
        )
    mix = class_mix_failure(canary, stable, params)
    if mix:
        failures.append(mix)
    allowed = params.canary_max_low_confidence_increase
    if canary.low_confidence_share > stable.low_confidence_share + allowed:
        failures.append(
            f"{canary.low_confidence_share:.2%} of its predictions are low-confidence against"
            f" stable's {stable.low_confidence_share:.2%}"
            f" (monitor.canary_max_low_confidence_increase {allowed:g})"
        )
    drop = stable.mean_confidence - canary.mean_confidence
    if drop > params.canary_max_confidence_drop:
        failures.append(
            f"mean confidence {canary.mean_confidence:.3f} against stable's"
            f" {stable.mean_confidence:.3f} (monitor.canary_max_confidence_drop"
            f" {params.canary_max_confidence_drop:g})"
        )
    return failures
