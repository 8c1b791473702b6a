"""Stage ``build``: construct and compile the model from ``params.yaml`` for the prepared
dataset's image shape and classes (``data/prepared/dataset.json``); save it untrained.

Outputs the model (``models/untrained.keras``) and its layer summary, size and dtype policy
(``models/summary.txt``). The size reaches the experiments table through ``test``'s metrics.
"""

from __future__ import annotations

import os
from unittest import mock

import keras

from classifier import runtime
from classifier.dataset import load_dataset
from classifier.errors import run_stage
from classifier.files import write_text
from classifier.model import build_model, save_model
from classifier.params import load_params
from classifier.paths import Paths

SUMMARY_WIDTH = 100


def summary_text(model: keras.Model) -> str:
    """Keras' layer table, at a fixed width.

    Keras sizes the table to the terminal (via rich, which reads ``COLUMNS``); fixing the width
    makes the file the same whether the stage runs in a terminal, in CI or under ``dvc exp``.
    """
    lines: list[str] = []
    with mock.patch.dict(os.environ, {"COLUMNS": str(SUMMARY_WIDTH)}):
        model.summary(print_fn=lambda line, **_: lines.append(line), line_length=SUMMARY_WIDTH)
    return "\n".join(lines) + "\n"


def main() -> None:
    params, paths = load_params().build, Paths()
    policy = runtime.precision_policy(params.mixed_precision, bool(runtime.gpu_names()))
    dataset = load_dataset(paths.prepared_dir)
    model = build_model(params, policy, dataset.input_shape, dataset.num_classes)
    save_model(model, paths.untrained_model)
    write_text(paths.model_summary, summary_text(model) + f"Dtype policy: {policy}\n")
    print(f"build: {model.count_params()} parameters, dtype policy {policy}")


if __name__ == "__main__":
    run_stage("build", main)
