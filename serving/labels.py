"""Canary and rollback: move TensorFlow Serving's ``stable`` and ``canary`` version labels.

    python -m serving.labels --base-path /models/mnist canary <version>
    python -m serving.labels --base-path /models/mnist promote --gateway http://127.0.0.1:8601
    python -m serving.labels --base-path /models/mnist rollback    # stable goes back

Clients address ``/v1/models/<model>/labels/stable`` (or ``canary``); TF Serving follows the
labels in the model config file. The labels live in ``labels.json`` beside the versions, with
the stables they replaced, and the config is written from it: the config cannot hold that
history, which rollback needs. ``labels.json`` is written before the config, so a kill between
the two is repaired by the next sync or label change.

- No labels yet (the first sync): ``stable`` is the highest version on the host.
- ``promote``: the canary becomes stable, the old stable goes on the history, no canary is left;
  only on evidence: what the gateway counted for the canary must hold up against stable's
  (``serving/evidence.py``), else nothing moves and every shortfall is named with its numbers.
  ``--force`` promotes anyway, and ``labels.json``'s ``history`` says so, with what was
  overridden. Every label change is in that history, with its time and, for a promotion, the
  evidence.
- ``rollback``: stable goes back to the last stable it replaced that is still on the host (so
  repeated rollbacks walk back through the promotions); with no such version, to the highest
  version below it. The canary is left as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from classifier.errors import StageError, run_stage
from classifier.files import write_json
from classifier.params import PARAMS_FILE, MonitorParams, load_params
from serving import model_config
from serving.evidence import canary_failures, evidence_of, read_metrics
from serving.layout import Host


@dataclass(frozen=True)
class Labels:
    stable: int | None = None
    canary: int | None = None
    earlier_stables: tuple[int, ...] = ()  # most recent last
    history: tuple[dict, ...] = ()  # every change, oldest first

    def in_config(self) -> dict[str, int]:
        named = {"stable": self.stable, "canary": self.canary}
        return {label: version for label, version in named.items() if version is not None}

    def describe(self) -> str:
        return ", ".join(
            f"{label} {'none' if version is None else version}"
            for label, version in (("stable", self.stable), ("canary", self.canary))
        )


def load(host: Host) -> Labels:
    if not host.labels.exists():
        return Labels()
    try:
        state = json.loads(host.labels.read_text())
        return Labels(
            state["stable"],
            state["canary"],
            tuple(state["earlier_stables"]),
            tuple(state.get("history", [])),  # labels.json from before the history was kept
        )
    except (ValueError, KeyError, TypeError) as error:
        raise StageError(
            f"{host.labels} is unreadable ({error}); restore it, or delete it to make the highest"
            " version stable at the next sync"
        ) from None


def apply(host: Host, labels: Labels) -> None:
    """Record ``labels`` and write the config that serves them."""
    versions = host.versions()
    for label, version in labels.in_config().items():
        if version not in versions:
            raise StageError(
                f"{label} is version {version}, which is gone from {host.base}; run"
                " `python -m serving.sync` to fetch it again, or move the label"
            )
    state = {
        "stable": labels.stable,
        "canary": labels.canary,
        "earlier_stables": list(labels.earlier_stables),
        "history": list(labels.history),
    }
    write_json(host.labels, state)
    model_config.write(host, labels.in_config())


def with_default_stable(labels: Labels, versions: list[int]) -> Labels:
    """The first sync's labels: the highest version is stable."""
    if labels.stable is None and versions:
        return replace(labels, stable=max(versions))
    return labels


def require_on_host(version: int, versions: list[int]) -> None:
    if version not in versions:
        have = ", ".join(map(str, versions)) or "none"
        raise StageError(
            f"version {version} is not on this host (it has {have}); run `python -m serving.sync`"
            " to fetch published versions, or pick one it has"
        )


def set_canary(labels: Labels, version: int, versions: list[int]) -> Labels:
    require_on_host(version, versions)
    if version == labels.stable:
        raise StageError(f"version {version} is already stable; a canary is another version")
    return replace(labels, canary=version)


def promote(labels: Labels) -> Labels:
    if labels.canary is None:
        raise StageError(
            "there is no canary to promote; set one first: python -m serving.labels canary <v>"
        )
    earlier = labels.earlier_stables
    if labels.stable is not None:
        earlier = (*earlier, labels.stable)
    return replace(labels, stable=labels.canary, canary=None, earlier_stables=earlier)


def rollback(labels: Labels, versions: list[int]) -> Labels:
    earlier = list(labels.earlier_stables)
    while earlier:
        version = earlier.pop()
        if version in versions and version != labels.stable:
            return without_canary_on_stable(
                replace(labels, stable=version, earlier_stables=tuple(earlier))
            )
    stable = labels.stable
    lower = [version for version in versions if stable is not None and version < stable]
    if not lower:
        raise StageError(
            f"nothing to roll back to: stable {labels.stable} has no earlier stable and no lower"
            " version on this host; stable is unchanged"
        )
    return without_canary_on_stable(replace(labels, stable=max(lower), earlier_stables=()))


def without_canary_on_stable(labels: Labels) -> Labels:
    """A canary is another version than stable; rolled back onto it, it is stable, not a canary."""
    return replace(labels, canary=None) if labels.canary == labels.stable else labels


@dataclass(frozen=True)
class Promotion:
    """How ``promote`` is to judge the canary: the gateway whose metrics are the evidence (None:
    no evidence), the thresholds, and whether to promote whatever it says."""

    gateway: str | None = None
    params: MonitorParams | None = None
    force: bool = False


def judge_canary(host: Host, labels: Labels, promotion: Promotion) -> tuple[dict, list[str]]:
    """The evidence on the canary and stable, and every way the canary falls short."""
    if labels.canary is None:
        return {}, []  # promote() says there is nothing to promote
    if promotion.gateway is None:
        return {}, ["no evidence: give --gateway URL, the gateway in front of this server"]
    metrics = read_metrics(promotion.gateway)
    canary = evidence_of(metrics, host.model, "canary", labels.canary)
    stable = evidence_of(metrics, host.model, "stable", labels.stable)
    evidence = {
        "gateway": promotion.gateway,
        "canary": canary.summary(),
        "stable": stable.summary(),
    }
    return evidence, canary_failures(canary, stable, promotion.params)


def change(
    host: Host, command: str, version: int | None, promotion: Promotion = Promotion()
) -> Labels:
    """Apply one label command to the host's labels, and record it in their history."""
    never_synced = StageError(
        f"{host.base} has no stable version yet; run `python -m serving.sync --base-path"
        f" {host.base}` first"
    )
    if not host.base.is_dir():
        raise never_synced
    with host.lock("labels"):
        versions = host.versions()
        labels = load(host)
        if labels.stable is None:
            raise never_synced
        entry: dict = {"command": command}
        if command == "canary":
            labels = set_canary(labels, version, versions)
        elif command == "promote":
            evidence, failures = judge_canary(host, labels, promotion)
            if failures and not promotion.force:
                raise StageError(
                    f"canary version {labels.canary} not promoted: {'; '.join(failures)};"
                    " stable is unchanged (--force promotes anyway, recorded in the labels'"
                    " history)"
                )
            labels = promote(labels)
            entry.update(evidence=evidence, forced_past=failures if promotion.force else [])
        else:
            labels = rollback(labels, versions)
        entry.update(time=utc_now(), stable=labels.stable, canary=labels.canary)
        labels = replace(labels, history=(*labels.history, entry))
        apply(host, labels)
    return labels


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.labels", description=__doc__)
    parser.add_argument("--base-path", type=Path, required=True, help="the model's base path")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("canary", help="label a version canary").add_argument("version", type=int)
    promoting = commands.add_parser("promote", help="the canary becomes stable, on evidence")
    promoting.add_argument("--gateway", help="the gateway's URL, whose metrics are the evidence")
    promoting.add_argument("--params", type=Path, default=PARAMS_FILE, help="its monitor: section")
    promoting.add_argument("--force", action="store_true", help="promote whatever the evidence")
    commands.add_parser("rollback", help="stable goes back to the previous stable")
    args = parser.parse_args(argv)
    host = Host(args.base_path.absolute())
    promotion = Promotion()
    if args.command == "promote":
        promotion = Promotion(args.gateway, load_params(args.params).monitor, args.force)
    labels = change(host, args.command, getattr(args, "version", None), promotion)
    forced = labels.history[-1].get("forced_past")
    if forced:
        print(f"labels: promoted by --force past: {'; '.join(forced)}", file=sys.stderr)
    print(f"labels: {labels.describe()} (written to {host.config})")


if __name__ == "__main__":
    run_stage("labels", main)
