"""The prepared splits as ``tf.data`` streams: read shard by shard, never a whole split at once.

Training order is a pure function of ``(seed, epoch)``: each epoch visits the shards in an order
drawn from ``(seed, epoch)`` and each shard's records in an order drawn from ``(seed, epoch,
shard)``, with stateless shuffles, so epoch 5 is the same whether or not epochs 0-4 ran in this
process (what makes resuming exact). ``prepare`` already wrote the records in a seeded order
over the whole split, so every shard is a fair sample of every class.
"""

from __future__ import annotations

import math
from pathlib import Path

import tensorflow as tf

from classifier.dataset import LABEL_BYTES, Dataset


def _decode(records: tf.Tensor, dataset: Dataset) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 records ``[B, record_bytes]`` as images ``[B, H, W, C]`` and labels ``[B]``."""
    images = tf.reshape(records[:, LABEL_BYTES:], [-1, *dataset.input_shape])
    return images, tf.cast(records[:, 0], tf.int32)


def _paths(dataset: Dataset, prepared_dir: Path, split: str) -> list[str]:
    return [str(path) for path in dataset.shard_paths(prepared_dir, split)]


def split_batches(
    dataset: Dataset, prepared_dir: Path, split: str, batch_size: int
) -> tf.data.Dataset:
    """``(images, labels)`` batches of ``split`` in its stored order."""
    return (
        tf.data.FixedLengthRecordDataset(_paths(dataset, prepared_dir, split), dataset.record_bytes)
        .batch(batch_size)
        .map(lambda raw: _decode(tf.io.decode_raw(raw, tf.uint8), dataset))
        .apply(_batch_count(math.ceil(dataset.size(split) / batch_size)))
        .prefetch(2)
    )


def _batch_count(batches: int):
    """Tell Keras how many batches a stream has (files do not say): it then neither warns that
    the input "ran out of data" nor asks for one batch more."""
    return tf.data.experimental.assert_cardinality(batches)


def training_batches(
    dataset: Dataset,
    prepared_dir: Path,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
) -> tf.data.Dataset:
    """``(images, one-hot labels)`` batches of the train split for epochs ``first_epoch ..
    epochs-1``, each epoch in its own seeded order (the last batch of an epoch may be short)."""
    paths = tf.constant(_paths(dataset, prepared_dir, "train"))
    shards = len(dataset.shard_paths(prepared_dir, "train"))

    def shard_records(epoch_key: tf.Tensor, shard: tf.Tensor) -> tf.data.Dataset:
        raw = tf.io.decode_raw(tf.io.read_file(paths[shard]), tf.uint8)
        records = tf.reshape(raw, [-1, dataset.record_bytes])
        key = tf.random.experimental.stateless_fold_in(epoch_key, shard, alg="philox")
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(records)[0]), seed=key, alg="philox"
        )
        return tf.data.Dataset.from_tensor_slices(tf.gather(records, order))

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        shard_order = tf.random.experimental.stateless_shuffle(
            tf.range(shards), seed=key, alg="philox"
        )
        return (
            tf.data.Dataset.from_tensor_slices(shard_order)
            .flat_map(lambda shard: shard_records(key, shard))
            .batch(batch_size)
        )

    def with_one_hot(records: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = _decode(records, dataset)
        return images, one_hot(labels, dataset.num_classes)

    per_epoch = math.ceil(dataset.size("train") / batch_size)
    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_batches)
        .map(with_one_hot)
        .apply(_batch_count((epochs - first_epoch) * per_epoch))
        .prefetch(2)
    )


def one_hot(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Class indices as the one-hot rows the loss takes (label smoothing needs whole rows)."""
    return tf.one_hot(labels, num_classes)
