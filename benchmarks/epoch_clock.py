"""Training time per epoch and test accuracy after it: one clock, so every benchmark times alike.

An epoch's time is everything ``fit`` does from its start until this callback's turn at its end:
its validation and the epoch-end callbacks registered before this one (in ``stages.train.train``,
the checkpoint and the log), as they count in the ``train`` stage. The test evaluation that
follows is not timed.
"""

from __future__ import annotations

import time

import keras
import numpy as np

TARGET_ACCURACY = 0.99
EVAL_BATCH = 1000


class EpochClock(keras.callbacks.Callback):
    """Per epoch: seconds, CPU seconds, training seconds so far, images/s, then test accuracy.

    CPU seconds are steadier than wall time on a busy machine (though not immune to it).
    """

    def __init__(self, name: str, train_images: int, images: np.ndarray, labels: np.ndarray):
        super().__init__()
        self.name, self.train_images, self.images, self.labels = name, train_images, images, labels
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.started
        cpu_seconds = time.process_time() - self.cpu_started
        probabilities = self.model.predict(self.images, batch_size=EVAL_BATCH, verbose=0)
        accuracy = float((probabilities.argmax(axis=1) == self.labels).mean())
        elapsed = seconds + (self.epochs[-1]["elapsed_s"] if self.epochs else 0.0)
        self.epochs.append(
            {
                "epoch": epoch + 1,
                "seconds": round(seconds, 3),
                "cpu_seconds": round(cpu_seconds, 3),
                "elapsed_s": round(elapsed, 3),
                "images_per_s": round(self.train_images / seconds, 1),
                "test_accuracy": round(accuracy, 6),
            }
        )
        print(
            f"{self.name} epoch {epoch + 1}: {seconds:.1f} s ({cpu_seconds:.1f} s CPU),"
            f" test accuracy {accuracy:.4f}",
            flush=True,
        )


def first_reaching(epochs: list[dict], target: float = TARGET_ACCURACY) -> dict | None:
    """The first of ``epochs`` whose test accuracy is at or above ``target``; None if none is."""
    return next((epoch for epoch in epochs if epoch["test_accuracy"] >= target), None)
