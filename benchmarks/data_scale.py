"""Cost as the data grows: ``prepare`` and one epoch of ``train`` on 1x, 4x and 16x MNIST's
training set; write the numbers to benchmarks/DATA_SCALE.md.

    MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.data_scale

The k-times set is MNIST's 60,000 training digits k times, copy j shifted by a pixel or two
(``SHIFTS[j]``: no two copies alike), with MNIST's own test set. Each scale runs in a fresh git
copy of this working tree: the stages as DVC runs them (``python -m stages.<name>``, default
params but one epoch), each stage's wall time and peak RSS (its process tree, ``wait4``); then
``dvc add``, ``dvc status`` and ``dvc push`` (to a local remote) of the prepared data, in a DVC
repository of its own. Last, the folder source at 1x: the 60,000 training digits as PNG files,
``dvc add`` of the folder, ``prepare`` (which then makes the test split) and ``dvc status``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from benchmarks.machine import busy_note, cpu_model
from benchmarks.overheads import Measured, measure
from benchmarks.stage_clock import clocked_seconds
from classifier.errors import run_stage
from classifier.mnist import (
    IMAGES_NDIM,
    LABELS_NDIM,
    RAW_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    read_idx,
)
from stages.fetch import fetch_all
from testbed.images import write_class_folders
from testbed.repo import BIN, REPO_ROOT, copy_of_repository, git, write_params

REPORT = REPO_ROOT / "benchmarks" / "DATA_SCALE.md"
RESULTS = REPO_ROOT / "benchmarks" / "DATA_SCALE.json"
SHIFTS = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1)]
SHIFTS += [(-1, 1), (2, 0), (0, 2), (-2, 0), (0, -2), (2, 2), (-2, -2), (2, -2)]
RSS_GOAL, TIME_GOAL = 0.15, 0.20  # at 16x against 1x: peak RSS within 15%, time/image within 20%
STAGES = ("prepare", "build", "train")
PREPARE_RUNS = 5


def seconds(measured: Measured) -> float:
    return measured.seconds


def idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + np.array(shape, ">u4").tobytes()


def write_scaled_raw(mnist_raw: Path, raw_dir: Path, scale: int) -> None:
    """``data/raw`` with ``scale`` shifted copies of MNIST's training digits, written a copy at
    a time, and MNIST's own test files."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    images = read_idx(mnist_raw / TRAIN_IMAGES.name, IMAGES_NDIM)
    labels = read_idx(mnist_raw / TRAIN_LABELS.name, LABELS_NDIM)
    with (raw_dir / TRAIN_IMAGES.name).open("wb") as out:
        out.write(idx_header((scale * len(images), 28, 28)))
        for dy, dx in SHIFTS[:scale]:
            out.write(np.roll(images, (dy, dx), axis=(1, 2)).tobytes())
    (raw_dir / TRAIN_LABELS.name).write_bytes(
        idx_header((scale * len(labels),)) + np.tile(labels, scale).tobytes()
    )
    for raw in (TEST_IMAGES, TEST_LABELS):
        shutil.copy(mnist_raw / raw.name, raw_dir / raw.name)


def run(command: list[str], cwd: Path) -> Measured:
    env = {**os.environ, "PYTHONPATH": "", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = measure(command, cwd, env)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{result.output[-3000:]}")
    return result


def stage(name: str, repo: Path) -> Measured:
    return run([str(BIN / "python"), "-m", f"stages.{name}"], repo)


def keras_ms_per_step(log: str) -> float:
    """The ``NNms/step`` of the last epoch line Keras printed (``verbose=2``)."""
    found = re.findall(r"(\d+)ms/step", log)
    if not found:
        sys.exit(f"no epoch line in the train stage's output:\n{log[-2000:]}")
    return float(found[-1])


def dvc_costs(data: Path, scratch: Path) -> dict[str, float]:
    """``dvc add``, ``dvc status`` and ``dvc push`` of ``data`` (moved into a DVC repository of
    its own, with a local remote), in seconds; and how many files it is."""
    repo = scratch / "dvc-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    run([str(BIN / "dvc"), "init", "-q"], repo)
    run([str(BIN / "dvc"), "remote", "add", "-d", "store", str(scratch / "remote")], repo)
    shutil.move(data, repo / data.name)
    files = sum(1 for path in (repo / data.name).rglob("*") if path.is_file())
    added = run([str(BIN / "dvc"), "add", data.name], repo)
    status = run([str(BIN / "dvc"), "status"], repo)
    pushed = run([str(BIN / "dvc"), "push"], repo)
    return {"files": files, "add_s": added.seconds, "status_s": status.seconds,
            "push_s": pushed.seconds}  # fmt: skip


def workspace(scratch: Path, params_changes: dict) -> Path:
    repo = copy_of_repository(scratch / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in params_changes.items():
        params[section].update(values)
    write_params(repo, params)
    return repo


def measure_scale(mnist_raw: Path, scale: int) -> dict:
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        repo = workspace(scratch, {"train": {"epochs": 1}})
        write_scaled_raw(mnist_raw, repo / "data/raw", scale)
        # prepare's time is mostly disk (spool, shards, fsync): the median of a few runs, each
        # also timing its own work (start-up and imports left out)
        clock = [str(BIN / "python"), "-m", "benchmarks.stage_clock", "prepare"]
        prepares = sorted((run(clock, repo) for _ in range(PREPARE_RUNS)), key=seconds)
        runs = {"prepare": prepares[len(prepares) // 2]}
        runs.update({name: stage(name, repo) for name in STAGES if name != "prepare"})
        worked = statistics.median(clocked_seconds(r.output) for r in prepares)
        split = json.loads((repo / "reports/data_validation.json").read_text())["split"]
        batch = yaml.safe_load((repo / "params.yaml").read_text())["train"]["batch_size"]
        result = {
            "scale": scale,
            "train_images": split["train"],
            "source_images": scale * 60000,
            "stages": {
                n: {"s": r.seconds, "peak_rss_mib": r.peak_rss_mib} for n, r in runs.items()
            },
            "prepare_us_per_image": 1e6 * worked / (scale * 60000),
            # Keras' own per-step time of the epoch (its log line), without the stage's start-up
            "train_us_per_image": 1000 * keras_ms_per_step(runs["train"].output) / batch,
        }
        result["prepared"] = dvc_costs(repo / "data/prepared", scratch)
    return result


def measure_folder(mnist_raw: Path) -> dict:
    """The folder source at 1x: MNIST's training digits as 60,000 PNG files."""
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        changes = {"data": {"source": "folder", "folder": "data/images"}}
        repo = workspace(scratch, changes)
        images = read_idx(mnist_raw / TRAIN_IMAGES.name, IMAGES_NDIM)[..., np.newaxis]
        labels = read_idx(mnist_raw / TRAIN_LABELS.name, LABELS_NDIM)
        write_class_folders(repo / "data/images", images, labels, tuple(map(str, range(10))))
        added = run([str(BIN / "dvc"), "add", "data/images"], repo)
        prepared = stage("prepare", repo)
        status = run([str(BIN / "dvc"), "status"], repo)
        return {
            "files": len(labels),
            "dvc_add_s": added.seconds,
            "prepare_s": prepared.seconds,
            "prepare_peak_rss_mib": prepared.peak_rss_mib,
            "dvc_status_s": status.seconds,
        }


def verdicts(results: list[dict]) -> dict[str, dict]:
    """Per stage: peak RSS and time per image of the largest scale against 1x."""
    first, last = results[0], results[-1]
    out = {}
    for name in ("prepare", "train"):
        a, b = first["stages"][name], last["stages"][name]
        per_a, per_b = per_image(first, name), per_image(last, name)
        out[name] = {
            "rss_ratio": b["peak_rss_mib"] / a["peak_rss_mib"],
            "time_per_image_ratio": per_b / per_a,
        }
    return out


def per_image(result: dict, stage_name: str) -> float:
    """Microseconds per image: ``prepare``'s own work (start-up and imports left out) per source
    image;
    ``train``'s step time per training image, as Keras timed the epoch."""
    return result[f"{stage_name}_us_per_image"]


def met(held: bool) -> str:
    return "met" if held else "**not met**"


def write_report(results: list[dict], folder: dict | None) -> None:
    RESULTS.write_text(json.dumps({"scales": results, "folder": folder}, indent=2) + "\n")
    rows = "\n".join(
        f"| {r['scale']}x | {r['source_images']:,} | `{name}` | {s['s']:.1f} s"
        f" | {per_image(r, name):.0f} µs | {s['peak_rss_mib']:.0f} MiB |"
        for r in results
        for name, s in r["stages"].items()
        if name != "build"
    )
    dvc_rows = "\n".join(
        f"| {r['scale']}x | {r['prepared']['files']} | {r['prepared']['add_s']:.1f} s"
        f" | {r['prepared']['status_s']:.2f} s | {r['prepared']['push_s']:.1f} s |"
        for r in results
    )
    goal_rows = "\n".join(
        f"| `{name}` | {v['rss_ratio']:.3f} ({met(v['rss_ratio'] <= 1 + RSS_GOAL)})"
        f" | {v['time_per_image_ratio']:.3f}"
        f" ({met(abs(v['time_per_image_ratio'] - 1) <= TIME_GOAL)}) |"
        for name, v in verdicts(results).items()
    )
    rss_goal = f"goal ≤ {1 + RSS_GOAL:.2f}"
    time_goal = f"goal {1 - TIME_GOAL:.2f}–{1 + TIME_GOAL:.2f}"
    folder_text = (
        f"""## The folder source at 1x

{folder["files"]:,} PNG files (MNIST's training digits, `data/images/<digit>/<n>.png`):
`dvc add data/images` {folder["dvc_add_s"]:.1f} s; `prepare` {folder["prepare_s"]:.1f} s
(peak RSS {folder["prepare_peak_rss_mib"]:.0f} MiB; it decodes every PNG and makes the test
split); `dvc status` afterwards {folder["dvc_status_s"]:.2f} s.
"""
        if folder
        else ""
    )
    load = os.getloadavg()[0]
    train_growth = (
        results[-1]["stages"]["train"]["peak_rss_mib"]
        - results[0]["stages"]["train"]["peak_rss_mib"]
    )
    REPORT.write_text(f"""# Cost as the data grows

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/data_scale.py` on
{os.cpu_count()} CPU cores ({cpu_model()}), no GPU; Python {platform.python_version()}; load
average at the end {load:.2f}. Reproduce:
`MNIST_MIRROR=../shared/datasets/mnist .venv/bin/python -m benchmarks.data_scale`.
{busy_note(load)}
Default params, one epoch. The k-times set: MNIST's training digits k times, each copy shifted
by up to two pixels; MNIST's test set. Wall time: the stage's process, start-up included
(`prepare`: the median of {PREPARE_RUNS} runs, its time being mostly disk). Time per image:
`prepare`'s own work per source image (its `main()`, timed in its process by
`benchmarks/stage_clock.py`, start-up and imports left out; the median of the runs); `train`'s
time per training image in the epoch, as Keras timed its steps (`ms/step` over the batch of 64),
without TensorFlow's start-up and the validation pass: the parts that do not grow with the data
are left out.

| scale | source images | stage | wall time | per image | peak RSS |
|---|---|---|---|---|---|
{rows}

Goals, the largest scale against 1x:

| stage | peak RSS ratio ({rss_goal}) | time per image ratio ({time_goal}) |
|---|---|---|
{goal_rows}

The prepared data in DVC (`dvc add`, then `dvc status`, then `dvc push` to a local remote):

| scale | files | `dvc add` | `dvc status` | `dvc push` |
|---|---|---|---|---|
{dvc_rows}

{folder_text}
## Where the memory goes

`train` holds one shard at a time (up to 32 MiB of records: read, decoded and shuffled, three
tensors of that size while it is being used) and the batches in flight; the rest of its peak is
TensorFlow's and the model's, which do not depend on the data. What it gains from 1x to 16x
({train_growth:+.0f} MiB) is not broken down here; the shards are the same size at every scale
(1x has one full shard and a short one), so the likely part is the allocator keeping buffers of
the shards it went through. `prepare` holds no images (one at a time while decoding, then
records copied in 8 MiB chunks) but keeps a few bytes per image to check and split the data:
the label (1 byte), a 64-bit pixel digest (duplicates, leakage, the seeded order), the split and
position of each (5 bytes), and sorting temporaries: tens of MiB per million images, small
against its start-up (Python, NumPy, Pillow).
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--no-folder", action="store_true", help="skip the 60,000-PNG folder")
    args = parser.parse_args()
    mirror = os.environ.get("MNIST_MIRROR")
    if not mirror:
        sys.exit("set MNIST_MIRROR (e.g. ../shared/datasets/mnist)")
    with tempfile.TemporaryDirectory() as name:
        mnist_raw = Path(name) / "raw"
        fetch_all(mnist_raw, [str(Path(mirror).resolve())])
        assert {path.name for path in mnist_raw.iterdir()} == {raw.name for raw in RAW_FILES}
        results = [measure_scale(mnist_raw, scale) for scale in args.scales]
        folder = None if args.no_folder else measure_folder(mnist_raw)
    write_report(results, folder)
    print(REPORT.read_text())


if __name__ == "__main__":
    run_stage("data_scale", main)
