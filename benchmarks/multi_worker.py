"""What training on a cluster costs per step: ``train`` as one worker and as two workers of
MultiWorkerMirroredStrategy on 127.0.0.1; write MULTI_WORKER.md.

    .venv/bin/python -m benchmarks.multi_worker [--epochs 3]

Both runs train the small params' model on the same 6,000 real MNIST digits, each worker in a
workspace of its own (``testbed/workers.py``). On one machine the two workers share its cores,
so two are not faster: the point is the collective's overhead (gradients all-reduced over gRPC
at every step) against one worker's step. Steps per second and examples per second are read
from the chief's own epoch lines (Keras' ``ms/step``), the last epoch's (the first includes
tracing).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

from benchmarks.machine import cpu_model
from classifier.errors import run_stage
from testbed.loopback import free_ports
from testbed.repo import write_params
from testbed.suite import fast_params, write_prepared_subset
from testbed.workers import WorkerProcesses, worker_workspace

REPORT = Path(__file__).with_name("MULTI_WORKER.md")
STEP = re.compile(r"^(\d+)/\d+ - \S+ - (\d+)ms/step")


def source_workspace(root: Path, epochs: int) -> Path:
    """Prepared digits, the untrained model and the small params: what each worker is given."""
    import classifier  # noqa: F401 (the CPU recipe, before TensorFlow)
    from classifier.mnist import MNIST_MODEL_IO
    from classifier.model import build_model, save_model
    from classifier.params import parse_params

    raw = fast_params(train={"epochs": epochs})
    root.mkdir(parents=True)
    write_params(root, raw)
    write_prepared_subset(root / "data/prepared", train=6000, validation=500, test=500)
    params = parse_params(raw)
    save_model(
        build_model(params.build, "float32", *MNIST_MODEL_IO), root / "models/untrained.keras"
    )
    return root


def run_cluster(source: Path, root: Path, workers: int) -> dict:
    spaces = [worker_workspace(source, root / f"w{index}") for index in range(workers)]
    ports = free_ports(workers)
    with WorkerProcesses() as workers:  # killed if one fails or a wait runs out
        processes = [workers.start(space, ports, index) for index, space in enumerate(spaces)]
        outputs = [process.communicate(timeout=1800) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed:\n{err[-3000:]}")
    steps = [match for line in outputs[0][0].splitlines() if (match := STEP.match(line))]
    ms_per_step = int(steps[-1][2])
    batch = yaml.safe_load((source / "params.yaml").read_text())["train"]["batch_size"] * workers
    return {
        "workers": workers,
        "steps_per_epoch": int(steps[-1][1]),
        "ms_per_step": ms_per_step,
        "steps_per_second": 1000 / ms_per_step,
        "examples_per_second": 1000 / ms_per_step * batch,
        "global_batch": batch,
    }


def write_report(runs: list[dict], epochs: int, report: Path) -> None:
    rows = "\n".join(
        f"| {r['workers']} | {r['global_batch']} | {r['steps_per_epoch']} | {r['ms_per_step']} |"
        f" {r['steps_per_second']:.1f} | {r['examples_per_second']:.0f} |"
        for r in runs
    )
    one, two = runs
    report.write_text(
        f"""# Training on a cluster: one worker against two

`.venv/bin/python -m benchmarks.multi_worker --epochs {epochs}` on {cpu_model()},
{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}: `train` with the small params on 6,000 real
MNIST digits, as one worker and as two workers of MultiWorkerMirroredStrategy on 127.0.0.1 (each
in its own workspace, both on this machine's cores). The last epoch's step time, from the chief's
own epoch line.

| workers | global batch | steps per epoch | ms per step | steps per second | examples per second |
|---|---|---|---|---|---|
{rows}

Two workers take {two["ms_per_step"] / one["ms_per_step"]:.1f}x one worker's time per step for
twice the examples: {two["examples_per_second"] / one["examples_per_second"]:.0%} of one
worker's examples per second. On one machine the two share its cores, so this is the price of
the collective (each step's gradients all-reduced between the processes over gRPC) and of the
cores' sharing, not a speed-up; across machines each worker has its own cores and the
all-reduce crosses the network instead (docs/multi-worker.md).
"""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_worker", description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPORT, help="the report (Markdown)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        source = source_workspace(root / "source", args.epochs)
        runs = [run_cluster(source, root / f"cluster-{n}", n) for n in (1, 2)]
    write_report(runs, args.epochs, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    run_stage("multi_worker", main)
