"""Stage ``package``: export a servable, verified SavedModel with its model card.

Layout is TensorFlow Serving's, ``dist/<model_name>/<version>/`` (``saved_model.pb``,
``variables/``), with the model card in ``assets.extra/`` (the SavedModel folder for files that
travel with a model but are not part of the graph). The ``serving_default`` signature takes raw
uint8 images ``[N, H, W, C]`` (the dataset's shape, ``data/prepared/dataset.json``) and returns
``probabilities`` ``[N, K]``, ``class_index`` ``[N]`` and ``class_name`` ``[N]`` (a string), so no
client needs a label map.
The export holds only the model's weights (their underlying TensorFlow variables, in the model's
own order) and that function, so equal models give equal bytes and the graph's saver restores
the very variables the signature reads. Before it is moved into place it is loaded back,
independently of Keras, in both ways a SavedModel is loaded: by ``tf.saved_model.load`` and in a
TF1 session as TensorFlow Serving loads it (``classifier/savedmodel.py``); each must predict
exactly what the trained model does on the whole test set.

Like TFX's pusher, it packages only a model that the ``test`` stage blessed: a "failed" verdict in
``reports/test.json`` stops it with the failed gates, so ``dvc repro`` fails and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from classifier.dataset import Dataset, load_dataset, load_split
from classifier.errors import StageError, run_stage
from classifier.files import atomic_path, file_md5, to_json
from classifier.model import load_model
from classifier.params import Params, load_params
from classifier.paths import Paths
from classifier.savedmodel import (
    CARD_DIR,
    LOAD_ERRORS,
    PREDICT_BATCH,
    SIGNATURE,
    error_gist,
    predict_with_export,
    run_signature_in_session,
)

FINGERPRINT_FILE = "fingerprint.pb"
PROBABILITY_TOLERANCE = 1e-5
LIBRARIES = ("tensorflow", "keras", "numpy", "dvc", "dvclive")
VERIFY_EXAMPLES = 10_000  # the first test images, run through both loaders and compared
SINGLE_IMAGES = 8  # test images also run one at a time in the session, a server's usual request
TF2_LOADER = "tf.saved_model.load"
SESSION_LOADER = "tf.compat.v1.saved_model.loader.load"  # a TF1 session, as TensorFlow Serving


def export_savedmodel(model: keras.Model, directory: Path, classes: tuple[str, ...]) -> None:
    """Write ``model`` as a SavedModel whose ``serving_default`` takes raw uint8 images and
    answers with the probabilities, the most probable class's index and its name in ``classes``.

    The same model gives the same bytes, in any process. ``keras.export.ExportArchive`` does not:

    - it saves the variables the endpoint reads, under ``_all_variables/<i>``, in the order of
      ``ConcreteFunction.variables``, which TensorFlow keeps in a set keyed by ``id()``
      (``FuncGraph._watched_variables``), so the order, the checkpoint keys and the graph's
      variable nodes change from one process to the next;
    - it also saves all of ``model.variables``, which include the Dropout layers' seed-generator
      state: not stored in the ``.keras`` file, it is drawn at random on every load.

    So we save only ``model.weights`` (no seeds, no metrics), in the model's own order, from a
    plain ``tf.Module``; each weight is stored once (the archive stored it twice). Were ``serve``
    to read any other variable, saving would fail (an untracked resource), not vary. Function
    names in ``saved_model.pb`` carry TensorFlow's process-wide trace counter, so the bytes are
    equal between processes that run the same code, as DVC runs this stage, not within one.

    We track each weight's underlying ``tf.Variable`` (``.value``), not the ``keras.Variable``
    wrapping it: saving a wrapper exports its ``tf.Variable`` (the handle ``serve`` reads) and then
    a new ``tf.Variable`` copy of it (``Variable``, ``Variable_1``, ...) as the wrapper's own, and
    the graph's saver restores only those copies. ``tf.saved_model.load`` did not mind (it binds the
    function to objects, not graph handles), but TensorFlow Serving's session loader then ran
    ``serve`` on variables nobody restored ("Could not find variable probabilities/kernel").
    """

    names = tf.constant(classes)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(names, class_index),
        }

    signature = tf.function(
        serve,
        input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, "images")],
        autograph=False,
    ).get_concrete_function()
    root = tf.Module()
    root.model_weights = [weight.value for weight in model.weights]
    tf.saved_model.save(root, str(directory), signatures={SIGNATURE: signature})
    make_fingerprint_uuid_content_derived(directory)


def make_fingerprint_uuid_content_derived(directory: Path) -> None:
    """Replace the random ``uuid`` of ``fingerprint.pb`` by one derived from its content hashes.

    TensorFlow writes a fresh random UUID into every fingerprint and has no option to fix it;
    the other fields hash ``saved_model.pb`` and the checkpoint. A UUID made from those hashes
    still names this SavedModel, but the same model now gets the same one. Rewriting is safe:
    loading reads the fingerprint only for its hashes (metrics), never the uuid.
    """
    path = directory / FINGERPRINT_FILE
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))  # TF's form: a 128-bit decimal
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def predict_in_session(directory: Path, images: np.ndarray, batch_size: int) -> dict:
    """The session loader's outputs, or a StageError if the export does not run there."""
    try:
        return run_signature_in_session(directory, images, batch_size)
    except LOAD_ERRORS as error:
        raise StageError(
            f"exported model does not run in a TF1 session, as TensorFlow Serving loads it"
            f" ({error_gist(error)}); the export was not written"
        ) from None


def compare(
    loader: str, outputs: dict, expected: np.ndarray, batch_size: int, classes: tuple[str, ...]
) -> dict:
    """One check's record, or a StageError if ``outputs`` differ from the trained model's."""
    index = expected.argmax(axis=1)
    names = np.array([name.encode() for name in classes], dtype=object)[index]
    mismatches = int(
        ((outputs["class_index"] != index) | (np.asarray(outputs["class_name"]) != names)).sum()
    )
    max_difference = float(np.abs(outputs["probabilities"] - expected).max())
    if mismatches or max_difference > PROBABILITY_TOLERANCE:
        raise StageError(
            f"exported model disagrees with the trained model when loaded by {loader} (batches"
            f" of {batch_size}): {mismatches} different classes, probabilities differ by up to"
            f" {max_difference:.2e} (tolerance {PROBABILITY_TOLERANCE}); the export was not"
            " written"
        )
    return {
        "loader": loader,
        "examples": len(expected),
        "batch_size": batch_size,
        "max_probability_difference": max_difference,
    }


def verify_export(
    directory: Path, model: keras.Model, images: np.ndarray, classes: tuple[str, ...]
) -> dict:
    """Check the export predicts exactly what the trained model does, loaded either way a
    SavedModel is (TF2 objects; a TF1 session, as TensorFlow Serving, in full batches and one
    image at a time); return what was checked."""
    expected = model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
    single = slice(0, SINGLE_IMAGES)
    checks = [
        compare(
            TF2_LOADER, predict_with_export(directory, images), expected, PREDICT_BATCH, classes
        ),
        compare(
            SESSION_LOADER,
            predict_in_session(directory, images, PREDICT_BATCH),
            expected,
            PREDICT_BATCH,
            classes,
        ),
        compare(
            SESSION_LOADER,
            predict_in_session(directory, images[single], 1),
            expected[single],
            1,
            classes,
        ),
    ]
    return {
        "examples": len(images),
        "classes_equal": True,
        "max_probability_difference": max(c["max_probability_difference"] for c in checks),
        "checks": checks,
    }


def library_versions() -> dict[str, str]:
    """The pinned libraries the model was made with (requirements.lock pins every other one).

    Not the interpreter: Python 3.11, 3.12 and 3.13 train the same bytes from the same lock
    (measured with ``testbed.weights_probe``), and naming the one in use would make the package,
    hence the committed ``dvc.lock``, differ by the Python a clone happens to have.
    """
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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


def describe_images(dataset: Dataset) -> str:
    kind = "grayscale" if dataset.channels == 1 else "RGB"
    return f"{dataset.height}x{dataset.width} {kind}"


def model_card(
    params: Params,
    dataset: Dataset,
    test_metrics: dict,
    test_report: dict,
    data_report: dict,
    verification: dict,
    environment: dict,
    trained_model_md5: str,
) -> dict:
    """What a user of the package needs to know: what it does, how well, from what, built how.

    ``environment`` is train's record of where it ran (``reports/train.json``): with
    ``build.mixed_precision: auto`` and several GPUs the weights depend on the hardware.
    Provenance is the trained model's md5 (as in ``dvc.lock``), not a git revision: the commit
    that records ``dvc.lock`` cannot name itself, so a revision would make every fresh clone
    package different bytes than the committed ``dvc.lock`` says.
    """
    return {
        "model_name": params.package.model_name,
        "version": params.package.version,
        "task": (
            f"classify a {describe_images(dataset)} image as one of {dataset.num_classes}"
            f" classes ({', '.join(dataset.classes)})"
        ),
        "signature": {
            "name": SIGNATURE,
            "inputs": {
                "images": f"uint8 [N, {dataset.height}, {dataset.width}, {dataset.channels}],"
                " pixel values 0-255"
            },
            "outputs": {
                "probabilities": f"float32 [N, {dataset.num_classes}], softmax over the classes",
                "class_index": "int32 [N], the most probable class's index",
                "class_name": "string [N], the most probable class's name",
            },
        },
        "metrics": {
            "accuracy": test_metrics["accuracy"],
            "loss": test_metrics["loss"],
            "per_class": test_report["per_class"],
            "evaluated_on": f"the {dataset.source} test split, {test_report['examples']} images",
        },
        "verification": verification,
        "dataset": dataset.to_dict(),
        "data": {
            "source": data_report["source"],
            "split": data_report["split"],
        },
        "params": params.model_dump(),
        "environment": environment,
        "libraries": library_versions(),
        "trained_model_md5": trained_model_md5,
    }


def card_markdown(card: dict) -> str:
    metrics = card["metrics"]
    recall_rows = "\n".join(
        f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |"
        for name, s in metrics["per_class"].items()
    )
    dataset = card["dataset"]
    classes = ", ".join(f"`{name}`" for name in dataset["classes"])
    source, split = card["data"]["source"], card["data"]["split"]
    files = (
        "\n".join(f"- `{name}`: md5 `{entry['md5']}`" for name, entry in source["files"].items())
        if isinstance(source.get("files"), dict)
        else f"{source['files']} image files in `{source['folder']}`."
    )
    libraries = ", ".join(f"{name} {version}" for name, version in card["libraries"].items())
    checks = "\n".join(
        f"| `{c['loader']}` | {c['examples']} | {c['batch_size']} |"
        f" {c['max_probability_difference']:.1e} |"
        for c in card["verification"]["checks"]
    )
    where = card["environment"]
    tensorflow = where["tensorflow"]
    recipe = ", ".join(f"`{name}={value}`" for name, value in where["cpu_recipe"].items())
    cuda = (
        f"CUDA {tensorflow['cuda_version']}, cuDNN {tensorflow['cudnn_version']}"
        if tensorflow["cuda_build"]
        else "no CUDA"
    )
    return f"""# Model card: {card["model_name"]}, version {card["version"]}

**Task:** {card["task"]}.

**Serving:** TensorFlow SavedModel, signature `{card["signature"]["name"]}`:
input `images` {card["signature"]["inputs"]["images"]};
outputs `probabilities` {card["signature"]["outputs"]["probabilities"]},
`class_index` {card["signature"]["outputs"]["class_index"]},
`class_name` {card["signature"]["outputs"]["class_name"]}.

## Quality ({metrics["evaluated_on"]})

Accuracy **{metrics["accuracy"]:.4f}**, loss {metrics["loss"]:.4f}.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{recall_rows}

Export verified: loaded back by TensorFlow's Python loader and in a TF1 session as TensorFlow
Serving loads it (`{SESSION_LOADER}`), the exported model predicts what the trained model does
(same classes, probabilities within {PROBABILITY_TOLERANCE:g}; largest difference
{card["verification"]["max_probability_difference"]:.1e}):

| loader | test images | batch size | largest probability difference |
|---|---|---|---|
{checks}

## Data

Source `{dataset["source"]}` (content checksum `{dataset["checksum"]}`), classes {classes};
split {split["train"]} train / {split["validation"]} validation / {split["test"]} test
(stratified, seed {split["seed"]}).
{files}

## Build

Trained model `models/model.keras` md5 `{card["trained_model_md5"]}` (as in `dvc.lock`);
{libraries}.
Trained on {where["device"]}{": " + ", ".join(where["gpus"]) if where["gpus"] else ""}
({where["strategy"]} strategy, {where["replicas"]} replica(s), global batch
{where["global_batch_size"]}, peak learning rate {where["peak_learning_rate"]:g}), dtype policy
{where["precision_policy"]}, XLA {"on" if where["xla"] else "off"}; TensorFlow
{tensorflow["version"]} built with {cuda}; CPU recipe {recipe} (the repository's
docs/reproducibility.md).
All parameters are in `model_card.json`.

## Limits

Trained and evaluated only on images of the `{dataset["source"]}` dataset: expect lower accuracy
on images unlike them (other framing, size, lighting or, for grayscale, inverted brightness).
"""


def package(params: Params, paths: Paths) -> Path:
    """Export, verify and document a blessed model; return the version directory."""
    test_report = read_json(paths.test_report)
    require_blessing(test_report)
    model = load_model(paths.trained_model)
    dataset = load_dataset(paths.prepared_dir)
    images, _ = load_split("test", paths.prepared_dir, limit=VERIFY_EXAMPLES)
    target = paths.export_dir(params.package)
    with atomic_path(target) as staged:
        export_savedmodel(model, staged, dataset.classes)
        verification = verify_export(staged, model, images, dataset.classes)
        card = model_card(
            params,
            dataset,
            read_json(paths.test_metrics),
            test_report,
            read_json(paths.data_report),
            verification,
            read_json(paths.train_report),
            file_md5(paths.trained_model),
        )
        (staged / CARD_DIR).mkdir(exist_ok=True)
        (staged / CARD_DIR / "model_card.json").write_text(to_json(card))
        (staged / CARD_DIR / "model_card.md").write_text(card_markdown(card))
    return target


def main() -> None:
    target = package(load_params(), Paths())
    print(f"package: verified SavedModel written to {target}")


if __name__ == "__main__":
    run_stage("package", main)
