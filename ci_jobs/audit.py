"""Reproducibility audit: a forced re-run must give every output the hash it had before.

    cp dvc.lock /tmp/dvc.lock.pushed && dvc repro --force
    python -m ci_jobs.audit /tmp/dvc.lock.pushed dvc.lock

The nightly job first restores the pushed outputs (``dvc repro --pull --allow-missing``), keeps
that ``dvc.lock``, re-runs every stage with ``--force``, and compares. Any output whose hash
changed (or that appeared or vanished) fails the job, named with both hashes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from classifier.errors import run_stage


def output_hashes(lock_text: str) -> dict[str, str]:
    """``stage: path`` -> md5 of every output recorded in a dvc.lock."""
    stages = yaml.safe_load(lock_text)["stages"]
    return {
        f"{name}: {out['path']}": out["md5"]
        for name, stage in stages.items()
        for out in stage.get("outs", [])
    }


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per output that is not byte-identical in both."""
    lines = []
    for output in sorted(before.keys() | after.keys()):
        old, new = before.get(output, "absent"), after.get(output, "absent")
        if old != new:
            lines.append(f"{output}: {old} -> {new}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.audit", description=__doc__)
    parser.add_argument("before", type=Path, help="the dvc.lock of the pushed outputs")
    parser.add_argument("after", type=Path, help="the dvc.lock of the forced re-run")
    args = parser.parse_args(argv)
    before, after = (output_hashes(path.read_text()) for path in (args.before, args.after))
    changed = differences(before, after)
    if changed:
        print("\n".join(changed))
        print(
            f"audit: error: {len(changed)} of {len(before)} outputs differ after a forced re-run;"
            " the pipeline is not reproducible (see above)",
            file=sys.stderr,
        )
        return 1
    print(f"audit: all {len(before)} outputs reproduced byte for byte")
    return 0


if __name__ == "__main__":
    run_stage("audit", lambda: main(sys.argv[1:]))
