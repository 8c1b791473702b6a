"""The watch over a worker joining its cluster, in a process of its own.

TensorFlow's ``MultiWorkerMirroredStrategy`` waits for every worker without end, inside C++
that holds Python's GIL: no thread of the worker runs meanwhile, so the watch cannot be one.
``classifier.cluster.join`` starts this with a pipe on its stdin and closes the pipe once the
cluster has met (or the worker died): then it exits quietly. If ``timeout_s`` passes first, it
prints the one line naming each worker it cannot reach, on the worker's own stderr, and kills
the worker (exit status 137: it cannot be asked to stop while it waits).

    python -m classifier.cluster_watch PID TIMEOUT_S INDEX WORKER_ADDRESS...
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys

TIMEOUT_ENV = "TRAIN_CLUSTER_TIMEOUT_S"


def unreachable(address: str) -> str | None:
    """Why ``address`` cannot be reached now; None if it accepts a connection."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return None
    except OSError as error:
        return error.strerror.lower() if error.strerror else str(error) or "no answer"


def give_up_line(index: int, workers: list[str], timeout_s: float) -> str:
    missing = [
        f"worker {peer} at {address} ({why})"
        for peer, address in enumerate(workers)
        if peer != index and (why := unreachable(address))
    ] or ["the others answer but did not join (another cluster's TF_CONFIG?)"]
    return (
        f"train: error: worker {index} did not meet the cluster within {timeout_s:g} s:"
        f" {'; '.join(missing)}; start every worker of TF_CONFIG, check each address and that"
        f" its port is open, or set {TIMEOUT_ENV} for slower starts"
    )


def watch(pid: int, timeout_s: float, index: int, workers: list[str]) -> int:
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    if ready:  # the pipe closed: the cluster met, or the worker is gone
        return 0
    print(give_up_line(index, workers, timeout_s), file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGKILL)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.cluster_watch", description=__doc__)
    parser.add_argument("pid", type=int, help="the worker's process")
    parser.add_argument("timeout_s", type=float)
    parser.add_argument("index", type=int, help="the worker's index in TF_CONFIG")
    parser.add_argument("workers", nargs="+", help="every worker's host:port, in order")
    args = parser.parse_args(argv)
    return watch(args.pid, args.timeout_s, args.index, args.workers)


if __name__ == "__main__":
    sys.exit(main())
