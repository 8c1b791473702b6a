"""Resuming ``train`` exactly: after every epoch the model (with its optimizer state and the
random-number state the ``.keras`` format leaves out) and the metric history are checkpointed;
a killed run, started again, continues from the last finished epoch and ends with the same model,
byte for byte, as an uninterrupted one. A checkpoint is resumed only by the run that made it
(same params, code, inputs and hardware: :func:`fingerprint`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from classifier.files import remove, write_json
from classifier.model import load_model, save_model
from classifier.params import TrainParams


def fingerprint(params: TrainParams, inputs: list[Path], environment: dict) -> str:
    """Identifies a training run: a checkpoint is only resumed by the run that made it.

    ``inputs`` are the files the run reads, its code included (the stage's module): a checkpoint
    of other code, data or model is never resumed. The environment is part of it too: a
    checkpoint made on other hardware (e.g. another replica count, hence another global batch)
    would not continue the same run.
    """
    digest = hashlib.sha256(params.model_dump_json().encode())
    digest.update(json.dumps(environment, sort_keys=True).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def unsaved_state(model: keras.Model) -> list:
    """Variables the ``.keras`` format leaves out: the random-number state of e.g. Dropout.

    Restoring them is what makes a resumed epoch drop the same units as an uninterrupted one.
    """
    saved = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


class TrainingState:
    """The resume checkpoint: model + optimizer after the last finished epoch, and the history."""

    def __init__(self, directory: Path, run_fingerprint: str):
        self.directory = directory
        self.model_file = directory / "checkpoint.keras"
        self.progress_file = directory / "progress.json"
        self.run_fingerprint = run_fingerprint

    def finished_epochs(self) -> int:
        """The epochs ``load`` would resume after, read without loading anything (0 if none)."""
        try:
            progress = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return 0
        if progress.get("fingerprint") != self.run_fingerprint or not self.model_file.exists():
            return 0
        return len(progress["history"])

    def load(self) -> tuple[keras.Model, list[dict]] | None:
        """The checkpoint of this same run, if there is one; any other checkpoint is discarded.

        A checkpoint of other params, code or inputs is superseded: it can never be resumed.
        """
        if not self.directory.exists():
            return None
        try:
            progress = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = {}
        if progress.get("fingerprint") != self.run_fingerprint or not self.model_file.exists():
            print(f"train: discarding {self.directory}/, the checkpoint of another run")
            self.clear()
            return None
        model = load_model(self.model_file)
        for variable, value in zip(unsaved_state(model), progress["unsaved_state"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return model, progress["history"]

    def save(self, model: keras.Model, history: list[dict]) -> None:
        # Model first, then progress: progress never points at a checkpoint that isn't complete.
        save_model(model, self.model_file)
        progress = {
            "fingerprint": self.run_fingerprint,
            "history": history,
            "unsaved_state": [keras.ops.convert_to_numpy(v).tolist() for v in unsaved_state(model)],
        }
        write_json(self.progress_file, progress)

    def clear(self) -> None:
        remove(self.directory)


class Checkpoint(keras.callbacks.Callback):
    def __init__(self, state: TrainingState, history: list[dict]):
        super().__init__()
        self.state, self.history = state, history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.append({name: float(value) for name, value in (logs or {}).items()})
        self.state.save(self.model, self.history)
