"""The model card: what a user of the package needs to know — what it does, how well (and how
well the champion it beat did, on the same images), from what data, built how — as
``model_card.json`` for programs and ``model_card.md`` for people, in the package's
``assets.extra/`` (the SavedModel folder for files that travel with a model but are not part of
its graph). The release adds the version it assigns, the commit and ``dvc.lock``
(``ci_jobs/release.py``).
"""

from __future__ import annotations

import json
from importlib import metadata

from classifier.dataset import Dataset
from classifier.files import to_json
from classifier.params import Params

CARD_DIR = "assets.extra"  # the SavedModel's folder for files beside the graph, not part of it
CARD_JSON = f"{CARD_DIR}/model_card.json"
CARD_MARKDOWN = f"{CARD_DIR}/model_card.md"
LIBRARIES = ("tensorflow", "keras", "numpy", "dvc", "dvclive")


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
    serving_signature: dict,
    sample: dict,
    reference: dict,
) -> dict:
    """What a user of the package needs to know: what it does, how well, from what, built how.

    ``environment`` is train's record of where it ran (``reports/train.json``): with
    ``build.mixed_precision: auto`` and several GPUs the weights depend on the hardware.
    Provenance is the trained model's md5 (as in ``dvc.lock``), not a git revision: the commit
    that records ``dvc.lock`` cannot name itself, so a revision would make every fresh clone
    package different bytes than the committed ``dvc.lock`` says; the release records the
    commit and ``dvc.lock`` in its copy of the card (``release``). ``serving_signature`` is the
    exported signature as TensorFlow Serving's metadata API describes it, ``sample`` the labelled
    test images the package carries for the live check (``serving/smoke.py``), ``reference``
    what the monitor compares live traffic with (``classifier/reference.py``).
    """
    return {
        "model_name": params.package.model_name,
        "task": (
            f"classify a {describe_images(dataset)} image as one of {dataset.num_classes}"
            f" classes ({', '.join(dataset.classes)})"
        ),
        "signature": {
            "name": serving_signature["name"],
            "inputs": {
                "images": f"uint8 [N, {dataset.height}, {dataset.width}, {dataset.channels}],"
                " pixel values 0-255"
            },
            "outputs": {
                "probabilities": f"float32 [N, {dataset.num_classes}], softmax over the classes",
                "class_index": "int32 [N], the most probable class's index",
                "class_name": "string [N], the most probable class's name",
            },
            "tensors": {key: serving_signature[key] for key in ("inputs", "outputs")},
        },
        "metrics": {
            "accuracy": test_metrics["accuracy"],
            "loss": test_metrics["loss"],
            "per_class": test_report["per_class"],
            "evaluated_on": f"the {dataset.source} test split, {test_report['examples']} images",
            "champion": test_report["champion"],
            "comparison": test_report.get("comparison"),
        },
        "sample": sample,
        "reference": reference,
        "verification": verification,
        "dataset": dataset.to_dict(),
        "data": {
            "source": data_report["source"],
            "split": data_report["split"],
        },
        "params": params.model_dump(exclude={"monitor"}),  # what made the model
        "environment": environment,
        "libraries": library_versions(),
        "trained_model_md5": trained_model_md5,
    }


def quality_table(metrics: dict) -> str:
    """Per class: precision, recall, F1, support; with a champion, its recall and the change."""
    comparison = metrics.get("comparison")
    head = "| class | precision | recall | F1 | support |"
    rule = "|---|---|---|---|---|"
    if comparison:
        head += " champion's recall | change |"
        rule += "---|---|"
    rows = []
    for name, s in metrics["per_class"].items():
        row = (
            f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f}"
            f" | {s['support']} |"
        )
        if comparison:
            row += (
                f" {comparison[name]['champion_recall']:.4f} | {comparison[name]['change']:+.4f} |"
            )
        rows.append(row)
    return "\n".join([head, rule, *rows])


def champion_sentence(metrics: dict) -> str:
    champion = metrics["champion"]
    if champion.get("source") is None:
        return (
            "No champion was compared (a first model, or `test.champion` empty): the gate was"
            " absolute only."
        )
    release = f", release {champion['release']}" if champion.get("release") else ""
    change = metrics["accuracy"] - champion["accuracy"]
    return (
        f"Champion `{champion['source']}`{release} (the model it must beat), scored on the same"
        f" images: accuracy {champion['accuracy']:.4f}, change {change:+.4f}."
    )


UNRELEASED = "Not released yet: the release assigns the version and records the commit here.\n"


def release_section(release: dict | None) -> str:
    if not release:
        return UNRELEASED
    return (
        f"Version {release['version']}, released from commit `{release['git_commit']}` with"
        f" `dvc.lock` sha256 `{release['dvc_lock_sha256']}` (a copy is `assets.extra/dvc.lock`).\n"
    )


def title(card: dict) -> str:
    release = card.get("release")
    version = f", version {release['version']}" if release else ""
    return f"# Model card: {card['model_name']}{version}\n"


def released(card_json: bytes, card_text: bytes, release: dict) -> tuple[bytes, bytes]:
    """The package's card, JSON and Markdown, with the release's section: the rest unchanged."""
    card = json.loads(card_json)
    text = card_text.decode()
    if not text.startswith(title(card)) or UNRELEASED not in text:
        raise ValueError("its model_card.md is not an unreleased card of this pipeline")
    card["release"] = release
    text = text.replace(title({**card, "release": None}), title(card), 1)
    return to_json(card).encode(), text.replace(UNRELEASED, release_section(release), 1).encode()


def reference_sentence(reference: dict) -> str:
    means = ", ".join(f"{name} (mean {mean:g})" for name, mean in reference["means"].items())
    return (
        "The monitor (`python -m serving.monitor`) compares live traffic with"
        f" `{reference['file']}`: per image of {reference['images']} {reference['split']}"
        f" images, {means}; and the classes predicted."
    )


def card_markdown(card: dict) -> str:
    metrics, sample, verified = card["metrics"], card["sample"], card["verification"]
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
    return f"""{title(card)}
**Task:** {card["task"]}.

**Serving:** TensorFlow SavedModel, signature `{card["signature"]["name"]}`:
input `images` {card["signature"]["inputs"]["images"]};
outputs `probabilities` {card["signature"]["outputs"]["probabilities"]},
`class_index` {card["signature"]["outputs"]["class_index"]},
`class_name` {card["signature"]["outputs"]["class_name"]}.

## Quality ({metrics["evaluated_on"]})

Accuracy **{metrics["accuracy"]:.4f}**, loss {metrics["loss"]:.4f}.
{champion_sentence(metrics)}

{quality_table(metrics)}

The package carries {sample["images"]} labelled test images (`{sample["folder"]}`), on which it
scores {sample["accuracy"]:.4f}: the live check after a deploy (`python -m serving.smoke`) sends
them to the server.

{reference_sentence(card["reference"])}

Export verified: loaded back by TensorFlow's Python loader and in a TF1 session as TensorFlow
Serving loads it (`{verified["checks"][-1]["loader"]}`), the exported model predicts what the
trained model does (same classes, probabilities within {verified["tolerance"]:g}; largest
difference {verified["max_probability_difference"]:.1e}):

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
({where["strategy"]} strategy, {where.get("workers", 1)} worker(s), {where["replicas"]}
replica(s), global batch {where["global_batch_size"]}, peak learning rate
{where["peak_learning_rate"]:g}), dtype policy {where["precision_policy"]}, XLA
{"on" if where["xla"] else "off"}; TensorFlow {tensorflow["version"]} built with {cuda}; CPU
recipe {recipe} (the repository's docs/reproducibility.md).
All parameters are in `model_card.json`.

## Release

{release_section(card.get("release"))}
## Limits

Trained and evaluated only on images of the `{dataset["source"]}` dataset: expect lower accuracy
on images unlike them (other framing, size, lighting or, for grayscale, inverted brightness).
"""
