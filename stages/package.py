"""Stage ``package``: export a servable, verified SavedModel with its model card.

Layout is one TensorFlow Serving model version, ``dist/<model_name>/`` (``saved_model.pb``,
``variables/``, ``fingerprint.pb``), with ``assets.extra/``: the model card, a labelled sample
of test images for the live check after a deploy, and the reference the monitor compares live
traffic with (``classifier/reference.py``). The release gives it its version number
(``releases/<model_name>/<N>/``). Like TFX's pusher, it packages only a model that the ``test``
stage blessed: a "failed" verdict in ``reports/test.json`` stops it with the failed gates, so
``dvc repro`` fails and nothing is written. How the export is made and checked:
``classifier/export.py``; what the card says: ``classifier/model_card.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classifier.dataset import load_dataset, load_split
from classifier.errors import StageError, run_stage
from classifier.export import export_savedmodel, serving_signature, verify_export
from classifier.files import atomic_path, file_md5, save_arrays, to_json
from classifier.model import load_model
from classifier.model_card import CARD_DIR, CARD_JSON, CARD_MARKDOWN, card_markdown, model_card
from classifier.params import Params, load_params
from classifier.paths import Paths
from classifier.reference import REFERENCE_JSON, reference
from classifier.savedmodel import PREDICT_BATCH

VERIFY_EXAMPLES = 10_000  # the first test images: both loaders' check and the monitor's reference
SAMPLE_IMAGES = 300  # the first test images (a random sample: shards are in seeded-hash order)
SAMPLE_DIR = f"{CARD_DIR}/sample"  # images.npy, labels.npy: read by serving/smoke.py


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to produce it") from None


def require_blessing(test_report: dict) -> None:
    """Refuse a model that failed the quality gate, naming every failed gate."""
    gate = test_report["gate"]
    if not gate["passed"]:
        raise StageError(
            "quality gate failed: " + "; ".join(gate["failures"]) + f"; the model is not"
            f" packaged (details in {Paths.test_report})"
        )


def write_sample(
    directory: Path, images: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> dict:
    """Store the labelled sample beside the model; return what the card says of it."""
    save_arrays(directory / SAMPLE_DIR, {"images": images, "labels": labels.astype(np.int32)})
    return {
        "folder": SAMPLE_DIR,
        "images": len(images),
        "accuracy": round(float((predicted == labels).mean()), 6),
    }


def write_reference(directory: Path, reference: dict) -> dict:
    """Store the monitor's reference beside the model; return what the card says of it."""
    # one line: 40,000 values, which indentation would spread over as many lines
    (directory / REFERENCE_JSON).write_text(json.dumps(reference, sort_keys=True) + "\n")
    return {
        "file": REFERENCE_JSON,
        "split": reference["split"],
        "images": reference["images"],
        "means": {name: entry["mean"] for name, entry in reference["statistics"].items()},
    }


def package(params: Params, paths: Paths) -> Path:
    """Export, verify and document a blessed model; return the package's folder."""
    test_report = read_json(paths.test_report)
    require_blessing(test_report)
    model = load_model(paths.trained_model)
    dataset = load_dataset(paths.prepared_dir)
    images, labels = load_split("test", paths.prepared_dir, limit=VERIFY_EXAMPLES)
    target = paths.export_dir(params.package)
    with atomic_path(target) as staged:
        export_savedmodel(model, staged, dataset.classes)
        probabilities = model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
        verification = verify_export(staged, probabilities, images, dataset.classes)
        sample = write_sample(
            staged,
            images[:SAMPLE_IMAGES],
            labels[:SAMPLE_IMAGES],
            probabilities[:SAMPLE_IMAGES].argmax(axis=1),
        )
        monitored = write_reference(
            staged, reference(images, probabilities, dataset.classes, split="test")
        )
        card = model_card(
            params,
            dataset,
            read_json(paths.test_metrics),
            test_report,
            read_json(paths.data_report),
            verification,
            read_json(paths.train_report),
            file_md5(paths.trained_model),
            serving_signature(staged),
            sample,
            monitored,
        )
        (staged / CARD_JSON).write_text(to_json(card))
        (staged / CARD_MARKDOWN).write_text(card_markdown(card))
    return target


def main() -> None:
    target = package(load_params(), Paths())
    print(f"package: verified SavedModel written to {target}")


if __name__ == "__main__":
    run_stage("package", main)
