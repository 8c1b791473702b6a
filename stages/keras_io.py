"""Saving and loading ``.keras`` models so that equal models give equal bytes.

Keras' native format is a zip holding ``config.json``, ``metadata.json`` (with the save date) and
``model.weights.h5``; the zip entries carry timestamps too, and ``config.json`` numbers objects
shared between layers (e.g. a dtype policy) by their memory address. We rewrite the archive with a
fixed date, fixed entry times and shared objects numbered in order of appearance, so the file's
bytes depend only on the model.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import keras

from stages.artifacts import atomic_path
from stages.cli import StageError

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
FIXED_SAVE_DATE = "1980-01-01@00:00:00"  # Keras' own date format


def renumber_shared_objects(config: Any, numbers: dict[int, int] | None = None) -> Any:
    """Replace address-based ``shared_object_id`` values by 1, 2, ... in order of appearance."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, list):
        return [renumber_shared_objects(item, numbers) for item in config]
    if not isinstance(config, dict):
        return config
    renumbered = {}
    for key, value in config.items():
        if key == "shared_object_id":
            renumbered[key] = numbers.setdefault(value, len(numbers) + 1)
        else:
            renumbered[key] = renumber_shared_objects(value, numbers)
    return renumbered


def normalize_keras_archive(path: Path) -> None:
    """Rewrite a ``.keras`` zip in place with sorted entries, fixed times and a fixed save date."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    if "config.json" in entries:
        config = renumber_shared_objects(json.loads(entries["config.json"]))
        entries["config.json"] = json.dumps(config).encode()
    if "metadata.json" in entries:
        metadata = json.loads(entries["metadata.json"])
        metadata["date_saved"] = FIXED_SAVE_DATE
        entries["metadata.json"] = json.dumps(metadata, sort_keys=True).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])


def save_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` (with its optimizer state) atomically and reproducibly."""
    with atomic_path(path) as staged:
        model.save(staged)
        normalize_keras_archive(staged)


def load_model(path: Path) -> keras.Model:
    if not path.exists():
        raise StageError(f"{path} is missing; run the stage that writes it (`dvc repro`)")
    return keras.models.load_model(path)
