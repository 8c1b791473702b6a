"""Stage ``prepare``: read the source's images, check them, split train/validation/test
(stratified, seeded) and write each split as a few shards of records.

Writes ``data/prepared/{train,validation,test}/*.bin`` and the dataset's description
``data/prepared/dataset.json`` (``classifier/dataset.py``: what every later stage reads instead of
constants), and the data report ``reports/data_validation.json``. The source is MNIST (its own test
split) or a folder of images (its own train/ and test/, or a test split made here with
``prepare.test_fraction``).

Two passes, neither holding the images: the first decodes and checks each image and appends it to
a spool file; the second copies each spooled record to its place in its split. Which split an
image goes to and where in it are decided by a seeded hash of its pixels, not by how the source
lists it: the same images give the same prepared bytes, whether they come as IDX files or PNGs,
in any file order. The checks hold eight bytes per image (a digest of its pixels as the model
sees them), not the images. Hard errors stop the stage in one line; soft findings go to the data
report. Does not import TensorFlow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.dataset import (
    SPLITS,
    Dataset,
    SplitWriter,
    background_of,
    border_sums,
    class_counts,
    shard_capacity,
    write_contract,
)
from classifier.errors import StageError, run_stage
from classifier.files import atomic_path, write_json
from classifier.folder import FolderSource
from classifier.mnist import MnistSource
from classifier.params import DataParams, PrepareParams, load_params
from classifier.paths import Paths
from classifier.sources import Source

SPOOL = ".spool"
SPOOL_CHUNK = 8 * 2**20  # bytes of the spool read at once
TEST_KEY, VALIDATION_KEY, ORDER_KEY, SAMPLE_KEY = 1, 2, 3, 4  # what a content key decides


def pixel_digest(pixels: bytes) -> int:
    """A content digest of one image, to find exact duplicates."""
    return int.from_bytes(hashlib.blake2b(pixels, digest_size=8).digest(), "little")


def duplicates_within(digests: np.ndarray) -> int:
    """How many images repeat an earlier image of the same split."""
    return len(digests) - len(np.unique(digests))


def class_imbalance(counts: dict[str, int]) -> float:
    """Largest / smallest class count (inf when a class has none)."""
    smallest = min(counts.values())
    return max(counts.values()) / smallest if smallest else float("inf")


def check_every_class_present(counts: dict[str, dict[str, int]], params: PrepareParams) -> None:
    """Each class needs training and test examples: too small a class cannot be split."""
    for name in counts["train"]:
        total = sum(split_counts[name] for split_counts in counts.values())
        if not counts["train"][name]:
            raise StageError(
                f"class {name!r} has no training images ({total} in all); add images of {name!r}"
            )
        if not counts["test"][name]:
            raise StageError(
                f"class {name!r} has {total} images, too few to hold out prepare.test_fraction"
                f" {params.test_fraction} of them for test; add images of {name!r}"
            )


def check_validation_split(counts: dict[str, dict[str, int]], params: PrepareParams) -> None:
    """Training needs validation images (its per-epoch metrics and the resume record use them)."""
    if not sum(counts["validation"].values()):
        training = sum(counts["train"].values())
        raise StageError(
            f"prepare.validation_fraction {params.validation_fraction} of {training} training"
            " images leaves none for validation (each class rounds to 0); add images or raise"
            " prepare.validation_fraction"
        )


def check_balance(counts: dict[str, int], params: PrepareParams) -> float:
    imbalance = class_imbalance(counts)
    if imbalance > params.max_class_imbalance:
        raise StageError(
            f"train class imbalance {imbalance:.3f} (largest/smallest class) exceeds"
            f" prepare.max_class_imbalance {params.max_class_imbalance}; counts {counts}; add"
            " images to the small classes or raise the limit"
        )
    return imbalance


def leaked(test_digests: np.ndarray, train_digests: np.ndarray) -> np.ndarray:
    """Indices of the test images that also appear among the training images (leakage)."""
    return np.flatnonzero(np.isin(test_digests, train_digests))


def leakage_error(leaked_names: list[str], count: int, params: PrepareParams) -> StageError:
    return StageError(
        f"{count} test images also appear in train (leakage), e.g. {', '.join(leaked_names)};"
        " remove them from one side or raise prepare.max_train_test_duplicates"
        f" (now {params.max_train_test_duplicates})"
    )


def open_source(data: DataParams, root: Path = Path()) -> Source:
    """The source ``params.yaml`` names, its folder taken from ``root``."""
    if data.source == "mnist":
        return MnistSource(root / data.folder)
    return FolderSource(root / data.folder, (*data.image_size, data.channels))


def content_keys(digests: np.ndarray, seed: int, purpose: int) -> np.ndarray:
    """A seeded pseudo-random 64-bit key per image, a function of its pixels only (splitmix64
    of the digest): sorting by it shuffles, whatever order the source lists the images in."""
    with np.errstate(over="ignore"):
        z = digests + np.uint64((seed * 4 + purpose) * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def by_key(indices: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``indices`` sorted by their keys (ties by index)."""
    return indices[np.lexsort((indices, keys[indices]))]


def stratified_split(
    labels: np.ndarray, fraction: float, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (kept, held out): ``fraction`` of every class, the ones with the lowest keys.

    Both index arrays are sorted.
    """
    held_out = []
    for label in np.unique(labels):
        members = by_key(np.flatnonzero(labels == label), keys)
        held_out.append(members[: round(len(members) * fraction)])
    held = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held, assume_unique=True)
    return kept, held


@dataclass(frozen=True)
class Part:
    """One prepared split: which source split its examples come from, in their final order."""

    source_split: str
    members: np.ndarray  # indices into the source split; position i holds members[i]


def sampled(
    part: Part, labels: np.ndarray, digests: np.ndarray, fraction: float, seed: int
) -> Part:
    """``fraction`` of every class of ``part`` (at least one image), the ones with the lowest
    keys: a quick run's split, stratified like the whole one and a subset of it."""
    keys = content_keys(digests, seed, SAMPLE_KEY)
    part_labels = labels[part.members]
    kept = []
    for label in np.unique(part_labels):
        members = part.members[part_labels == label]
        kept.append(by_key(members, keys)[: max(1, round(len(members) * fraction))])
    return Part(part.source_split, np.sort(np.concatenate(kept)) if kept else part.members)


def split_plan(
    labels: dict[str, np.ndarray], digests: dict[str, np.ndarray], params: PrepareParams
) -> dict[str, Part]:
    """Where every example goes: train, validation and test, each in its seeded order."""
    train_digests = digests["train"]
    pool = np.arange(len(labels["train"]))
    if "test" in labels:
        test = Part("test", np.arange(len(labels["test"])))
    else:
        keys = content_keys(train_digests, params.seed, TEST_KEY)
        kept, held = stratified_split(labels["train"], params.test_fraction, keys)
        test, pool = Part("train", held), kept
    keys = content_keys(train_digests[pool], params.seed, VALIDATION_KEY)
    fit, validation = stratified_split(labels["train"][pool], params.validation_fraction, keys)
    parts = {
        "train": Part("train", pool[fit]),
        "validation": Part("train", pool[validation]),
        "test": test,
    }
    if params.sample_fraction < 1:
        parts = {
            name: sampled(
                part,
                labels[part.source_split],
                digests[part.source_split],
                params.sample_fraction,
                params.seed,
            )
            for name, part in parts.items()
        }
    ordered = {}
    for name, part in parts.items():
        keys = content_keys(digests[part.source_split], params.seed, ORDER_KEY)
        ordered[name] = Part(part.source_split, by_key(part.members, keys))
    return ordered


def spool_images(
    source: Source, labels: dict[str, np.ndarray], shape: tuple[int, ...], spool: Path
) -> dict[str, np.ndarray]:
    """Pass one: decode and check every image, append its record to ``spool`` (source order);
    return each source split's pixel digests."""
    digests = {}
    with spool.open("wb") as out:
        for split, split_labels in labels.items():
            digests[split] = np.zeros(len(split_labels), np.uint64)
            count = 0
            for index, image in enumerate(source.images(split)):
                if image.shape != shape:
                    raise StageError(
                        f"{source.example_name(split, index)} is {image.shape}, expected {shape}"
                    )
                if not image.any():
                    raise StageError(
                        f"{source.example_name(split, index)} is an empty (all-zero) image;"
                        " remove it"
                    )
                pixels = image.tobytes()
                digests[split][index] = pixel_digest(pixels)
                out.write(bytes((int(split_labels[index]),)) + pixels)
                count = index + 1
            if count != len(split_labels):
                raise StageError(
                    f"{source.name}: {split} listed {len(split_labels)} images, read {count}"
                )
    return digests


def write_parts(
    spool: Path,
    directory: Path,
    labels: dict[str, np.ndarray],
    plan: dict[str, Part],
    shape: tuple[int, int, int],
) -> dict[str, dict]:
    """Pass two: copy each spooled record to its place; return per split its pixel mean and the
    mean border pixel of its images."""
    record_bytes = 1 + int(np.prod(shape))
    per_shard = shard_capacity(shape)
    # Destination of each spooled record: (split index, position), in spool order.
    offsets = np.cumsum([0, *(len(split_labels) for split_labels in labels.values())])
    start = dict(zip(labels, offsets[:-1].tolist(), strict=True))
    target = np.full(offsets[-1], -1, np.int8)  # -1: in no split; 5 bytes an image in all
    position = np.zeros(offsets[-1], np.int32)
    for number, name in enumerate(SPLITS):
        part = plan[name]
        target[start[part.source_split] + part.members] = number
        position[start[part.source_split] + part.members] = np.arange(len(part.members))
    writers = [
        SplitWriter(directory / name, len(plan[name].members), record_bytes, per_shard)
        for name in SPLITS
    ]
    pixel_sums, border_total = np.zeros(len(SPLITS)), np.zeros(len(SPLITS))
    done = 0
    with spool.open("rb") as stream:
        while chunk := stream.read(SPOOL_CHUNK // record_bytes * record_bytes or record_bytes):
            records = np.frombuffer(chunk, np.uint8).reshape(-1, record_bytes)
            where = target[done : done + len(records)]
            slots = position[done : done + len(records)]
            done += len(records)
            chosen = where >= 0  # all, unless prepare.sample_fraction left some out
            records, where, slots = records[chosen], where[chosen], slots[chosen]
            for record, split_number, slot in zip(records, where, slots, strict=True):
                writers[split_number].write(int(slot), record.tobytes())
            images = records[:, 1:].reshape(-1, *shape)
            pixel_sums += np.bincount(where, images.mean(axis=(1, 2, 3)), minlength=len(SPLITS))
            border_total += np.bincount(where, border_sums(images), minlength=len(SPLITS))
    for writer in writers:
        writer.close()
    sizes = [max(1, len(plan[name].members)) for name in SPLITS]
    return {
        name: {"pixel_mean": pixel_sums[n] / sizes[n], "border": border_total[n] / sizes[n]}
        for n, name in enumerate(SPLITS)
    }


def prepare(
    source: Source, params: PrepareParams, shape: tuple[int, int, int], paths: Paths
) -> dict:
    """Check, split and write ``paths.prepared_dir`` and ``paths.data_report``; return the
    report. Nothing is written unless all is well."""
    labels = source.labels()
    with atomic_path(paths.prepared_dir) as staged:
        staged.mkdir()
        spool = staged / SPOOL
        digests = spool_images(source, labels, shape, spool)
        plan = split_plan(labels, digests, params)
        part_labels = {n: labels[p.source_split][p.members] for n, p in plan.items()}
        part_digests = {n: digests[p.source_split][p.members] for n, p in plan.items()}
        counts = {n: class_counts(part_labels[n], source.classes) for n in SPLITS}
        check_every_class_present(counts, params)
        check_validation_split(counts, params)
        imbalance = check_balance(counts["train"], params)
        training = np.concatenate([part_digests["train"], part_digests["validation"]])
        leaks = leaked(part_digests["test"], training)
        if len(leaks) > params.max_train_test_duplicates:
            test = plan["test"]
            first = np.sort(test.members[leaks])[:3]  # in the source's order
            names = [source.example_name(test.source_split, int(index)) for index in first]
            raise leakage_error(names, len(leaks), params)
        means = write_parts(spool, staged, labels, plan, shape)
        spool.unlink()
        dataset = Dataset(
            source.name,
            *shape,
            source.classes,
            counts,
            source.checksum(),
            background_of(means["train"]["border"]),
            shard_capacity(shape),
        )
        write_contract(staged, dataset)
    report = {
        "source": source.report(),
        "split": {
            **{name: len(part.members) for name, part in plan.items()},
            "seed": params.seed,
            "sample_fraction": params.sample_fraction,
            "test_from": "source" if "test" in labels else "prepare.test_fraction",
        },
        **{
            name: {
                "count": len(plan[name].members),
                "class_counts": counts[name],
                "duplicate_images": duplicates_within(part_digests[name]),
                "pixel_mean": round(float(means[name]["pixel_mean"]), 4),
            }
            for name in SPLITS
        },
        "class_imbalance": round(imbalance, 4),
        "train_test_duplicates": len(leaks),
    }
    write_json(paths.data_report, report)
    return report


def main() -> None:
    config = load_params()
    paths = Paths()
    shape = (*config.data.image_size, config.data.channels)
    report = prepare(open_source(config.data, paths.root), config.prepare, shape, paths)
    split = report["split"]
    print(
        f"prepare: {report['source']['name']}: train {split['train']}, validation"
        f" {split['validation']}, test {split['test']}; train/test duplicates"
        f" {report['train_test_duplicates']}"
    )


if __name__ == "__main__":
    run_stage("prepare", main)
