"""The champion: the model the ``test`` stage's challenger must beat, scored on the same images.

``test.champion`` names it:

- ``""``: none; the gate is absolute only (as TFX skips its change threshold on a first run);
- a folder inside ``champion/``: a package this pipeline made (e.g. a copy of ``dist/mnist``);
- a version number ``N``: the release ``N`` of the bucket, brought into
  ``champion/<model_name>/N/`` (with its MANIFEST.json) by ``python -m ci_jobs.champion``, and
  checked here against that manifest, file by file, before it is trusted.

``champion/`` is a dependency of ``test`` in ``dvc.yaml``, so what the setting resolves to is in
``dvc.lock`` by hash: a new champion re-runs ``test`` and what follows it, and nothing else. No
network is needed here: a release is read from its local copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.dataset import Dataset
from classifier.errors import StageError
from classifier.model_card import CARD_JSON
from classifier.paths import Paths
from serving.manifest import NAME as MANIFEST
from serving.manifest import ManifestError, digest, file_chunks, parse

FETCH = "python -m ci_jobs.champion"


@dataclass(frozen=True)
class Champion:
    directory: Path  # the package folder
    source: str  # as the report names it: the folder, relative to the repository
    release: int | None  # the bucket's version, when it is a release
    card: dict  # its model card

    def describe(self) -> dict:
        return {
            "source": self.source,
            "release": self.release,
            "model_name": self.card.get("model_name"),
            "trained_model_md5": self.card.get("trained_model_md5"),
        }


def release_dir(paths: Paths, model_name: str, version: int) -> Path:
    """Where ``python -m ci_jobs.champion`` puts release ``version`` of ``model_name``."""
    return paths.champion_dir / model_name / str(version)


def verify_release(directory: Path, model_name: str, version: int) -> None:
    """Every file of the local copy is the release's, byte for byte, and nothing else is there."""
    redo = f"run `{FETCH}` to bring release {version} again"
    try:
        entries = parse((directory / MANIFEST).read_bytes(), model_name, version)
    except FileNotFoundError:
        raise StageError(
            f"test.champion is release {version} but {directory} holds no {MANIFEST};"
            f" run `{FETCH}` (it needs the bucket) to bring it"
        ) from None
    except ManifestError as error:
        raise StageError(
            f"{directory / MANIFEST} is not release {version}'s: {error}; {redo}"
        ) from None
    present = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.name != MANIFEST
    }
    for name in sorted(present ^ set(entries)):
        where = "is not in" if name in present else "is missing from"
        raise StageError(f"{name} {where} {directory}, unlike its {MANIFEST}; {redo}")
    for name, entry in sorted(entries.items()):
        if digest(file_chunks(directory / name)) != entry:
            raise StageError(f"{directory / name} differs from its {MANIFEST}; {redo}")


def read_card(directory: Path, source: str) -> dict:
    try:
        return json.loads((directory / CARD_JSON).read_text())
    except FileNotFoundError:
        if not directory.is_dir():
            raise StageError(
                f"test.champion {source} does not exist; put the package of the model in"
                " production there (e.g. a copy of dist/<model_name>), or set test.champion to"
                " '' for none"
            ) from None
        raise StageError(
            f"test.champion {source} holds no {CARD_JSON}: it is not a package this"
            " pipeline made; point it at one (e.g. a copy of dist/<model_name>)"
        ) from None
    except ValueError as error:
        raise StageError(f"{directory / CARD_JSON} is not JSON ({error})") from None


def check_comparable(champion: Champion, dataset: Dataset) -> None:
    """The champion must answer the same question: the same classes, the same image shape."""
    theirs = champion.card.get("dataset", {})
    classes = tuple(theirs.get("classes", ()))
    if classes != dataset.classes:
        raise StageError(
            f"the champion ({champion.source}) classifies into {', '.join(classes) or 'nothing'},"
            f" the data into {', '.join(dataset.classes)}: they cannot be compared; set"
            " test.champion to a model of these classes, or '' for none"
        )
    shape = tuple(theirs.get(key) for key in ("height", "width", "channels"))
    if shape != dataset.input_shape:
        raise StageError(
            f"the champion ({champion.source}) takes images of {shape}, the data has"
            f" {dataset.input_shape} (height, width, channels): they cannot be compared; set"
            " test.champion to a model for these images, or '' for none"
        )


def resolve(setting: int | str, model_name: str, paths: Paths) -> Champion | None:
    """The champion ``test.champion`` names, checked, or None."""
    if setting == "":
        return None
    if isinstance(setting, int):
        directory = release_dir(paths, model_name, setting)
        verify_release(directory, model_name, setting)
        source = release_dir(Paths, model_name, setting).as_posix()
        return Champion(directory, source, setting, read_card(directory, source))
    directory = paths.root / setting
    return Champion(directory, setting, None, read_card(directory, setting))


def champion_probabilities(champion: Champion, batches: Iterable[np.ndarray]) -> np.ndarray:
    """The champion's probabilities for each image, through its own serving signature."""
    import tensorflow as tf

    from classifier.savedmodel import LOAD_ERRORS, SIGNATURE, error_gist

    try:
        signature = tf.saved_model.load(str(champion.directory)).signatures[SIGNATURE]
        return np.concatenate(
            [signature(images=tf.constant(batch, tf.uint8))["probabilities"] for batch in batches]
        )
    except LOAD_ERRORS as error:
        raise StageError(
            f"the champion ({champion.source}) does not run as a package of this pipeline"
            f" ({error_gist(error)}); point test.champion at one, or '' for none"
        ) from None
