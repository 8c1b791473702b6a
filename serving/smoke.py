"""The live check after a deploy: ask the running TensorFlow Serving what it serves, and score it.

    python -m serving.smoke --url http://127.0.0.1:8501 --model mnist --label canary --package DIR
    python -m serving.smoke --url http://127.0.0.1:8501 --model mnist --version 3 --package DIR

``DIR`` is the released version expected there (the host's synced copy, ``/models/mnist/3``, or
a download of ``releases/mnist/3/``): its ``MANIFEST.json`` names the version, its model card the
serving signature and the labelled sample of test images the package carries. Through TensorFlow
Serving's documented REST API only:

1. ``GET /v1/models/<model>/labels/<label>`` (or ``/versions/<N>``): the expected version, in
   state ``AVAILABLE``;
2. ``GET …/metadata``: that version answers, with the package's ``serving_default`` signature
   (input and output names, dtypes and shapes);
3. ``POST …:predict`` with the sample, in batches (``{"instances": …}``, the row format): the
   accuracy must be at least the package's own on that sample minus ``--tolerance``.

It prints the accuracy and the latency of the predict requests (p50, p99). Anything else — a
wrong version under the label, another signature, low accuracy, no answer in ``--timeout``
seconds — is one line and exit status 1. Run it after every sync that moved a label
(docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.errors import StageError, run_stage
from classifier.model_card import CARD_JSON
from serving.manifest import NAME as MANIFEST
from serving.signature import describe_signature

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Expected:
    """What the package says the server must show."""

    version: int
    tensors: dict  # {"inputs": ..., "outputs": ...}, serving/signature.py
    images: np.ndarray
    labels: np.ndarray
    accuracy: float  # the package's own on the sample


def read_package(directory: Path) -> Expected:
    """The version, signature and labelled sample of a released package folder."""
    try:
        version = json.loads((directory / MANIFEST).read_text())["version"]
        card = json.loads((directory / CARD_JSON).read_text())
        sample = directory / card["sample"]["folder"]
        images = np.load(sample / "images.npy", allow_pickle=False)
        labels = np.load(sample / "labels.npy", allow_pickle=False)
        return Expected(
            version, card["signature"]["tensors"], images, labels, card["sample"]["accuracy"]
        )
    except FileNotFoundError as missing:
        raise StageError(
            f"{directory} is not a released version of a package of this pipeline"
            f" ({Path(missing.filename).name} is missing): pass the synced copy of the release,"
            " e.g. /models/mnist/3"
        ) from None
    except (KeyError, TypeError, ValueError) as error:
        raise StageError(
            f"{directory} has an unreadable manifest or model card ({error})"
        ) from None


class Server:
    """TensorFlow Serving's REST API for one model, as its documentation describes it."""

    def __init__(self, url: str, model: str, timeout: float):
        if not url.startswith(("http://", "https://")):
            raise StageError(f"--url {url} is not http:// or https://, e.g. http://HOST:8501")
        self.root = f"{url.rstrip('/')}/v1/models/{model}"
        self.timeout = timeout

    def call(self, path: str, body: dict | None = None) -> dict:
        url = self.root + path
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if body is None else "POST"
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise StageError(
                f"{request.method} {url} answered {error.code}: {server_error(error.read())}"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise StageError(
                f"no answer from {url} ({reason}) within {self.timeout:g} s; is TensorFlow Serving"
                " running there with its REST port (--rest_api_port)?"
            ) from None
        except ValueError:
            raise StageError(f"{url} answered something that is not JSON") from None


def server_error(body: bytes) -> str:
    """TensorFlow Serving's ``{"error": "..."}``, or the raw body."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200] or "no body"


def check_status(status: dict, expected: int, where: str) -> None:
    versions = {
        str(entry.get("version")): entry.get("state")
        for entry in status.get("model_version_status", [])
    }
    if str(expected) not in versions:
        found = ", ".join(f"{v} ({s})" for v, s in sorted(versions.items())) or "none"
        raise StageError(f"{where} serves version {found}, not the expected {expected}")
    if versions[str(expected)] != "AVAILABLE":
        raise StageError(f"{where}: version {expected} is {versions[str(expected)]}, not AVAILABLE")


def signature_difference(expected: dict, served: dict) -> str | None:
    """The first input or output that differs, in words, or None."""
    for side in ("inputs", "outputs"):
        ours, theirs = expected.get(side, {}), served.get(side, {})
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name):
                return f"{side[:-1]} {name}: served {theirs.get(name)}, packaged {ours.get(name)}"
    return None


def check_metadata(metadata: dict, expected: Expected, where: str) -> None:
    answered = str(metadata.get("model_spec", {}).get("version"))
    if answered != str(expected.version):
        raise StageError(f"{where}: the metadata is version {answered}'s, not {expected.version}'s")
    signatures = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    if SIGNATURE not in signatures:
        raise StageError(f"{where} has no {SIGNATURE} signature (it has: {', '.join(signatures)})")
    difference = signature_difference(expected.tensors, describe_signature(signatures[SIGNATURE]))
    if difference:
        raise StageError(f"{where} has another {SIGNATURE} signature: {difference}")


def predict(server: Server, path: str, expected: Expected, batch: int) -> tuple[float, list]:
    """Send the sample in batches; return the accuracy and each request's seconds."""
    correct, seconds = 0, []
    for start in range(0, len(expected.images), batch):
        images = expected.images[start : start + batch]
        began = time.perf_counter()
        answer = server.call(
            f"{path}:predict", {"signature_name": SIGNATURE, "instances": images.tolist()}
        )
        seconds.append(time.perf_counter() - began)
        try:
            predicted = [int(row["class_index"]) for row in answer["predictions"]]
        except (KeyError, TypeError, ValueError):
            raise StageError(
                f"{path}:predict did not answer with class_index predictions"
            ) from None
        if len(predicted) != len(images):
            raise StageError(
                f"{path}:predict answered {len(predicted)} predictions for {len(images)} images"
            )
        correct += int((np.array(predicted) == expected.labels[start : start + batch]).sum())
    return correct / len(expected.images), seconds


def smoke(server: Server, selector: str, expected: Expected, tolerance: float, batch: int) -> str:
    """Every check, in order; the summary line, or a StageError naming the first that fails."""
    where = f"{server.root}{selector}"
    check_status(server.call(selector), expected.version, where)
    check_metadata(server.call(f"{selector}/metadata"), expected, where)
    accuracy, seconds = predict(server, selector, expected, batch)
    floor = expected.accuracy - tolerance
    if accuracy < floor:
        raise StageError(
            f"{where} scores {accuracy:.4f} on the {len(expected.labels)} sample images, below the"
            f" package's {expected.accuracy:.4f} minus --tolerance {tolerance:g}"
        )
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return (
        f"{where}: version {expected.version} AVAILABLE, signature as packaged; accuracy"
        f" {accuracy:.4f} on {len(expected.labels)} sample images (package"
        f" {expected.accuracy:.4f});"
        f" predict latency p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(seconds)} requests"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.smoke", description=__doc__)
    parser.add_argument("--url", required=True, help="the REST API, e.g. http://127.0.0.1:8501")
    parser.add_argument("--model", required=True, help="the served model's name")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", help="the version label to check, e.g. stable or canary")
    which.add_argument("--version", type=int, help="the version number to check")
    parser.add_argument("--package", type=Path, required=True, help="the released version's folder")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="accuracy allowed below the package's"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each answer"
    )
    parser.add_argument("--batch", type=int, default=50, help="images per predict request")
    args = parser.parse_args(argv)
    expected = read_package(args.package)
    if args.version is not None and args.version != expected.version:
        raise StageError(
            f"--version {args.version}, but {args.package} is version {expected.version}"
        )
    selector = f"/labels/{args.label}" if args.label else f"/versions/{args.version}"
    server = Server(args.url, args.model, args.timeout)
    print(f"smoke: {smoke(server, selector, expected, args.tolerance, args.batch)}")


if __name__ == "__main__":
    run_stage("smoke", main)
