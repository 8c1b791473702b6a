"""``python -m serving.monitor``: does what the served model sees, and what it answers, still look
like what it was tested on?

It reads a window of the gateway's captures (``serving/capture.py``) and the served package's
reference (``assets.extra/reference.json``, recorded by ``package``: ``classifier/reference.py``)
and, for each label that answered (or the version, for requests that named none), tests every
statistic against the reference:

- mean brightness, border brightness, ink share and confidence, one value per image: the
  two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) against every reference image's;
- the predicted classes: the chi-squared goodness-of-fit test (``scipy.stats.chisquare``) against
  the reference's shares.

A statistic has drifted when its p-value is below ``monitor.alpha`` *and* the shift is large
enough to matter: a KS statistic (the largest gap between the two distributions) of at least
``monitor.min_ks_statistic``, or at least ``monitor.min_class_shift`` of the predictions in other
classes than the reference's shares would put them (total variation distance). A p-value alone
flags, over enough captures, shifts too small to matter: MNIST's validation digits (other writers
than its test digits) differ from the test digits' brightness with p = 0.017 over 10,000 images,
for a KS statistic of 0.025. With fewer than ``monitor.min_images`` captured images a label gets
no verdict: "too few captures", never "no drift".

With labelled feedback (``--feedback``: captured images people sorted into class folders, after
``--export`` wrote them out; ``serving/feedback.py``), each label's live accuracy, overall and per
class, beside the model card's test accuracy.

Exit status: 0 no drift, 3 drift, 4 too few captures for a verdict (for any label), 1 an error.
Writes ``report.json`` and ``report.html`` (one page, opened offline) to ``--report``, and the
verdict as Prometheus metrics to ``--textfile`` (for node_exporter's textfile collector).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from scipy import stats

from classifier.errors import StageError, run_stage
from classifier.files import write_json, write_text
from classifier.model_card import CARD_JSON
from classifier.params import MonitorParams, load_params
from classifier.reference import CONTINUOUS, REFERENCE_JSON, answer_statistics, image_statistics
from serving.capture import OPEN, SUFFIX, request_instances
from serving.feedback import export_image, live_accuracy, pixel_digest, read_feedback
from serving.monitor_page import page

NO_DRIFT, DRIFT, TOO_FEW = "no drift", "drift", "too few captures"
EXIT_CODES = {NO_DRIFT: 0, DRIFT: 3, TOO_FEW: 4}
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Reference:
    """A package's reference and which model and version it is."""

    package: Path
    model: str
    version: int | None  # the release's; None for an unreleased package (dist/<model>)
    classes: tuple[str, ...]
    image_shape: tuple[int, ...]
    predicted: np.ndarray  # images per class
    values: dict[str, np.ndarray]
    split: str
    test_accuracy: float | None  # the model card's, for the live accuracy beside it


def load_reference(package: Path) -> Reference:
    """The reference inside a package (``dist/<model>``, a release, a host's version folder)."""
    try:
        card = json.loads((package / CARD_JSON).read_text())
        raw = json.loads((package / REFERENCE_JSON).read_text())
    except FileNotFoundError as missing:
        raise StageError(
            f"{missing.filename} is missing: --package must be a package made by this pipeline's"
            " `package` stage (a release, or dist/<model>); packages made before the monitor"
            " existed carry no reference: package the model again"
        ) from None
    except ValueError as error:
        raise StageError(f"{package}: the model card or reference is not JSON ({error})") from None
    classes = tuple(raw["classes"])
    return Reference(
        package=package,
        model=card["model_name"],
        version=card.get("release", {}).get("version"),
        classes=classes,
        image_shape=tuple(raw["image_shape"]),
        predicted=np.array([raw["predicted_class"][name] for name in classes], dtype=np.int64),
        values={name: np.array(entry["values"]) for name, entry in raw["statistics"].items()},
        split=raw["split"],
        test_accuracy=card.get("metrics", {}).get("accuracy"),
    )


@dataclass
class Traffic:
    """What one label (or version) saw and answered in the window, one value per image."""

    requests: int = 0
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CONTINUOUS})
    predicted: list[int] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)  # pixel digest -> predicted class

    @property
    def images(self) -> int:
        return len(self.predicted)

    def add(self, images: np.ndarray, predictions: list[dict], export: Path | None) -> None:
        self.requests += 1
        for image, prediction in zip(images, predictions, strict=True):
            digest = pixel_digest(image)
            if digest:
                self.answered[digest] = int(prediction["class_index"])
                if export:
                    export_image(image, export)
        found = {
            **image_statistics(images),
            **answer_statistics(np.array([p["confidence"] for p in predictions])),
        }
        for name, series in found.items():
            self.values[name].extend(series.tolist())
        self.predicted.extend(int(p["class_index"]) for p in predictions)


@dataclass
class Window:
    """The captures chosen, grouped by who answered, and what was left out and why."""

    traffic: dict[str, Traffic] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    files: int = 0
    first: str | None = None
    last: str | None = None


def capture_files(captures: Path) -> list[Path]:
    """Every closed capture file under ``captures`` (a gateway's capture folder, one model's,
    or files downloaded from ``monitoring/<model>/<day>/``); files still being written (in an
    ``open/`` folder) are left for the next window."""
    if not captures.is_dir():
        raise StageError(f"--captures {captures} is not a folder")
    found = captures.rglob(f"*{SUFFIX}")
    return sorted(path for path in found if OPEN not in path.relative_to(captures).parts)


def records_of(path: Path, skipped: Counter):
    """A capture file's records; a file cut short (a failed write) yields what it holds."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    skipped["unreadable record"] += 1
    except (EOFError, OSError, zlib.error):
        skipped["file cut short"] += 1


def group_of(record: dict) -> str:
    """The label that answered, or the version for a request that named no label."""
    if record.get("label"):
        return record["label"]
    return f"version {record['version']}" if record.get("version") else "latest"


def read_window(
    captures: Path,
    reference: Reference,
    since: datetime | None = None,
    until: datetime | None = None,
    export: Path | None = None,
) -> Window:
    """The captured images of the reference's model (and release version, if it has one)
    between ``since`` and ``until``; with ``export``, each image also as a PNG in
    ``export/<label>/`` (``serving/feedback.py``)."""
    window = Window()
    for path in capture_files(captures):
        window.files += 1
        for record in records_of(path, window.skipped):
            reason = skip_reason(record, reference, since, until)
            images = None if reason else images_of(record, reference)
            if images is None:
                window.skipped[reason or "images of another shape"] += len(
                    request_instances(record) or [1]
                )
                continue
            group = group_of(record)
            window.traffic.setdefault(group, Traffic()).add(
                images, record["predictions"], export / group if export else None
            )
            window.first = min(window.first or record["time"], record["time"])
            window.last = max(window.last or record["time"], record["time"])
    return window


def skip_reason(
    record: dict, reference: Reference, since: datetime | None, until: datetime | None
) -> str | None:
    """Why a record is not part of the window; None if it is."""
    if record.get("model") != reference.model:
        return "another model"
    if reference.version is not None and record.get("version") != reference.version:
        return "another version"
    when = parse_time(record.get("time", ""))
    if when is None:
        return "no time"
    if (since and when < since) or (until and when >= until):
        return "outside the window"
    instances, predictions = request_instances(record), record.get("predictions") or []
    if record.get("status") != 200 or len(instances) != len(predictions) or not instances:
        return "no answer to compare"
    return None


def images_of(record: dict, reference: Reference) -> np.ndarray | None:
    """The record's images ``[N, H, W, C]``; None if they are not of the reference's shape."""
    try:
        images = np.asarray(request_instances(record), dtype=np.float64)
    except (ValueError, TypeError):  # ragged, or not numbers
        return None
    return images if images.shape[1:] == reference.image_shape else None


def parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def histogram(reference: np.ndarray, live: np.ndarray) -> dict:
    """Both distributions' shares over the same bins, for the page and for plots."""
    low = float(min(reference.min(), live.min()))
    high = float(max(reference.max(), live.max()))
    edges = np.linspace(low, high if high > low else low + 1, HISTOGRAM_BINS + 1)
    return {
        "edges": np.round(edges, 6).tolist(),
        "reference": np.round(np.histogram(reference, edges)[0] / len(reference), 6).tolist(),
        "live": np.round(np.histogram(live, edges)[0] / len(live), 6).tolist(),
    }


def continuous_test(name: str, reference: np.ndarray, live: np.ndarray, params: MonitorParams):
    result = stats.ks_2samp(live, reference)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    return {
        "statistic": name,
        "description": CONTINUOUS[name],
        "test": "Kolmogorov-Smirnov (two-sample)",
        "value": round(statistic, 6),
        "p_value": p_value,
        "threshold": f"p < {params.alpha:g} and KS statistic >= {params.min_ks_statistic:g}",
        "drift": p_value < params.alpha and statistic >= params.min_ks_statistic,
        "reference_mean": round(float(reference.mean()), 6),
        "live_mean": round(float(live.mean()), 6),
        "histogram": histogram(reference, live),
    }


def class_test(reference: Reference, predicted: np.ndarray, params: MonitorParams) -> dict:
    """Chi-squared of the live class counts against the reference's shares; the reference's
    counts get half an image each so that a class it never predicted has a finite expectation."""
    counts = np.bincount(predicted, minlength=len(reference.classes))
    expected_share = (reference.predicted + 0.5) / (reference.predicted + 0.5).sum()
    result = stats.chisquare(counts, expected_share * counts.sum())
    live_share = counts / counts.sum()
    shift = float(np.abs(live_share - reference.predicted / reference.predicted.sum()).sum() / 2)
    p_value = float(result.pvalue)
    return {
        "statistic": "predicted_class",
        "description": "share of images given each class",
        "test": "chi-squared (goodness of fit)",
        "value": round(float(result.statistic), 6),
        "p_value": p_value,
        "class_shift": round(shift, 6),
        "threshold": f"p < {params.alpha:g} and class shift >= {params.min_class_shift:g}",
        "drift": p_value < params.alpha and shift >= params.min_class_shift,
        "reference_share": share_by_class(reference.classes, reference.predicted),
        "live_share": share_by_class(reference.classes, counts),
    }


def share_by_class(classes: tuple[str, ...], counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {name: round(float(c / total), 6) for name, c in zip(classes, counts, strict=True)}


def judge(
    traffic: Traffic, reference: Reference, params: MonitorParams, truth: dict[str, int] | None
) -> dict:
    """One label's verdict, with every statistic's test, value and threshold; with labelled
    feedback (``truth``), its live accuracy."""
    summary = {"requests": traffic.requests, "images": traffic.images}
    if truth is not None:
        summary["live_accuracy"] = {
            **live_accuracy(traffic.answered, truth, reference.classes),
            "test_accuracy": reference.test_accuracy,
        }
    if traffic.images < params.min_images:
        return {
            **summary,
            "verdict": TOO_FEW,
            "note": f"{traffic.images} images captured, fewer than monitor.min_images"
            f" {params.min_images}: no verdict",
            "tests": [],
        }
    tests = [
        continuous_test(name, reference.values[name], np.array(traffic.values[name]), params)
        for name in CONTINUOUS
    ]
    tests.append(class_test(reference, np.array(traffic.predicted), params))
    drifted = [test["statistic"] for test in tests if test["drift"]]
    verdict = DRIFT if drifted else NO_DRIFT
    return {**summary, "verdict": verdict, "drifted": drifted, "tests": tests}


def overall(verdicts: list[str]) -> str:
    """Drift anywhere wins; then any label without a verdict; no captures at all is too few."""
    if DRIFT in verdicts:
        return DRIFT
    return TOO_FEW if TOO_FEW in verdicts or not verdicts else NO_DRIFT


def monitor(
    captures: Path,
    package: Path,
    params: MonitorParams,
    since: datetime | None = None,
    until: datetime | None = None,
    feedback: Path | None = None,
    export: Path | None = None,
) -> dict:
    """The report on a window of captures against a package's reference (and on labelled
    ``feedback``, if given; ``export``: the window's images as PNGs for people to label)."""
    reference = load_reference(package)
    truth, other_shape = (
        read_feedback(feedback, reference.image_shape, reference.classes) if feedback else (None, 0)
    )
    window = read_window(captures, reference, since, until, export)
    labels = {
        name: judge(traffic, reference, params, truth)
        for name, traffic in sorted(window.traffic.items())
    }
    if truth is not None:
        matched = set().union(*(t.answered for t in window.traffic.values())) & set(truth)
        window.skipped["feedback images matching no capture"] = len(truth) - len(matched)
        window.skipped["feedback images of another size"] = other_shape
    return {
        "verdict": overall([label["verdict"] for label in labels.values()]),
        "model": reference.model,
        "version": reference.version,
        "package": str(package),
        "reference": {"split": reference.split, "images": int(reference.predicted.sum())},
        "window": {
            "captures": str(captures),
            "files": window.files,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "first": window.first,
            "last": window.last,
            "skipped_images": dict(sorted(window.skipped.items())),
        },
        "params": params.model_dump(),
        "labels": labels,
    }


def summary_lines(report: dict) -> list[str]:
    """What the command prints: one line per label, one per drifted statistic."""
    lines = []
    for name, label in report["labels"].items():
        lines.append(f"monitor: {name}: {label['verdict']} ({label['images']} images)")
        live = label.get("live_accuracy")
        if live and live["images"]:
            test = live["test_accuracy"]
            lines.append(
                f"monitor: {name}: live accuracy {live['accuracy']:.4f} on {live['images']}"
                f" labelled images" + (f" (test {test:.4f})" if test is not None else "")
            )
        for test in label["tests"]:
            if test["drift"]:
                shift = test.get("class_shift", test["value"])
                lines.append(
                    f"monitor: {name}: {test['statistic']} drifted: {test['test']}"
                    f" p={test['p_value']:.2g}, shift {shift:.3f} ({test['threshold']})"
                )
    if not report["labels"]:
        lines.append(
            f"monitor: no captured images of {report['model']}"
            + (f" version {report['version']}" if report["version"] else "")
            + f" in {report['window']['captures']}"
        )
    lines.append(f"monitor: verdict: {report['verdict']}")
    return lines


def write_report(report: dict, folder: Path) -> None:
    """``report.json`` and ``report.html`` in ``folder``, each written whole or not at all."""
    write_json(folder / "report.json", report)
    write_text(folder / "report.html", page(report))


def write_textfile(report: dict, path: Path) -> None:
    """The verdict as Prometheus metrics, in the text format node_exporter's textfile collector
    reads (``infra/prometheus/alerts.yml``: ``ServedModelDrift``); written whole, by a rename."""
    registry = CollectorRegistry()
    drifted = Gauge(
        "serving_monitor_drifted_statistics",
        "Statistics the monitor found drifted in the last window (0: none)",
        ["model", "label"],
        registry=registry,
    )
    judged = Gauge(
        "serving_monitor_judged",
        "1 if the label had enough captures for a verdict, else 0",
        ["model", "label"],
        registry=registry,
    )
    for name, label in report["labels"].items():
        drifted.labels(report["model"], name).set(len(label.get("drifted", [])))
        judged.labels(report["model"], name).set(int(label["verdict"] != TOO_FEW))
    Gauge(
        "serving_monitor_last_run_timestamp_seconds",
        "When the monitor last judged a window",
        ["model"],
        registry=registry,
    ).labels(report["model"]).set_to_current_time()
    write_to_textfile(str(path), registry)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.monitor", description=__doc__)
    parser.add_argument("--captures", type=Path, required=True, help="capture files' folder")
    parser.add_argument("--package", type=Path, required=True, help="the served package")
    parser.add_argument("--since", type=aware_time, help="first capture time, ISO 8601 (UTC)")
    parser.add_argument("--until", type=aware_time, help="end of the window, ISO 8601 (UTC)")
    parser.add_argument("--report", type=Path, help="folder for report.json and report.html")
    parser.add_argument("--textfile", type=Path, help="a .prom file for node_exporter")
    parser.add_argument("--feedback", type=Path, help="labelled images: <folder>/<class>/*.png")
    parser.add_argument("--export", type=Path, help="write the window's images here, to label")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="its monitor:")
    return parser.parse_args(argv)


def aware_time(text: str) -> datetime:
    when = parse_time(text)
    if when is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time")
    return when


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params).monitor
    report = monitor(
        args.captures, args.package, params, args.since, args.until, args.feedback, args.export
    )
    if args.report:
        write_report(report, args.report)
    if args.textfile:
        write_textfile(report, args.textfile)
    print("\n".join(summary_lines(report)))
    sys.exit(EXIT_CODES[report["verdict"]])


if __name__ == "__main__":
    run_stage("monitor", main)
