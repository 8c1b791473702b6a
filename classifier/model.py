"""The network (a small convnet built from ``build.*`` params for the dataset's shape and
classes) and its ``.keras`` files, saved so that equal models give equal bytes.

Keras' native format is a zip holding ``config.json``, ``metadata.json`` (with the save date) and
``model.weights.h5``; the zip entries carry timestamps too, and ``config.json`` numbers objects
shared between layers (e.g. a dtype policy) by their memory address. ``save_model`` rewrites the
archive with a fixed date, fixed entry times and shared objects numbered in order of appearance,
so the file's bytes depend only on the model. A model is loaded under the dtype policy it was
built under.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import keras
from keras import layers

from classifier.errors import StageError
from classifier.files import atomic_path
from classifier.params import BuildParams

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def _conv_block(x, filters: int, params: BuildParams):
    if not params.batch_norm:
        return layers.Conv2D(
            filters, params.kernel_size, padding=params.padding, activation="relu"
        )(x)
    x = layers.Conv2D(filters, params.kernel_size, padding=params.padding, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def build_model(
    params: BuildParams, policy: str, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Construct and compile the model described by ``params`` for uint8 images of
    ``input_shape`` (height, width, channels) and ``num_classes`` classes, under ``policy``."""
    # Layer names (conv2d, conv2d_1, ...) are saved with the model; a fresh session makes them
    # independent of whatever was built earlier in this process.
    keras.backend.clear_session()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(params.seed)
        images = keras.Input(input_shape, dtype="uint8", name="images")
        x = layers.Rescaling(1 / 255)(images)
        for index, filters in enumerate(params.conv_filters):
            if index:
                x = layers.MaxPooling2D()(x)
            x = _conv_block(x, filters, params)
        x = layers.Flatten()(x)
        if params.dense_units:
            x = layers.Dropout(params.dropout)(x)
            x = layers.Dense(params.dense_units, activation="relu")(x)
        x = layers.Dropout(params.dropout)(x)
        # float32 output keeps softmax and the loss exact under mixed precision.
        probabilities = layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="probabilities"
        )(x)
        model = keras.Model(images, probabilities, name="convnet")
    finally:
        keras.config.set_dtype_policy(previous_policy)
    model.compile(
        optimizer=OPTIMIZERS[params.optimizer](learning_rate=params.learning_rate),
        # Labels arrive one-hot (classifier.streams.one_hot), as label smoothing needs them.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        # Saved with the model. Keras' default, "auto", would save True when built on a GPU, yet
        # the pipeline trains with TF op determinism, under which Keras refuses XLA (and TF has
        # no deterministic XLA MaxPool gradient on a GPU): off, stated, the same on any machine.
        jit_compile=False,
    )
    # Create the optimizer's slots now, so that the saved model loads without a state mismatch.
    model.optimizer.build(model.trainable_variables)
    return model


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


def built_policy(config: dict[str, Any]) -> str:
    """The dtype policy a model was built under, read from its saved layers' policies.

    Keras saves every layer's policy but not the functional model's own, so a mixed-precision
    model would load under the global policy (float32), and ``compile_from_config`` would then
    leave out the LossScaleOptimizer that mixed precision needs (and drop the saved optimizer
    state, which no longer fits). A mixed layer policy means the model was built under it.
    """
    names = set()
    for layer in config["config"]["layers"]:
        dtype = layer["config"].get("dtype")
        names.add(dtype["config"]["name"] if isinstance(dtype, dict) else dtype)
    mixed = sorted(name for name in names if isinstance(name, str) and name.startswith("mixed_"))
    return mixed[0] if mixed else "float32"


def save_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` (with its optimizer state) atomically and reproducibly."""
    with atomic_path(path) as staged:
        model.save(staged)
        normalize_keras_archive(staged)


def load_model(path: Path) -> keras.Model:
    if not path.exists():
        raise StageError(f"{path} is missing; run the stage that writes it (`dvc repro`)")
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(built_policy(config))
    try:
        return keras.models.load_model(path)
    finally:
        keras.config.set_dtype_policy(previous)
