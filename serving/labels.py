"""Canary and rollback: move TensorFlow Serving's ``stable`` and ``canary`` version labels.

    python -m serving.labels --base-path /models/mnist canary <version>
    python -m serving.labels --base-path /models/mnist promote     # canary becomes stable
    python -m serving.labels --base-path /models/mnist rollback    # stable goes back

Clients address ``/v1/models/<model>/labels/stable`` (or ``canary``); TF Serving follows the
labels in the model config file. The labels live in ``labels.json`` beside the versions, with
the stables they replaced, and the config is written from it: the config cannot hold that
history, which rollback needs. ``labels.json`` is written before the config, so a kill between
the two is repaired by the next sync or label change.

- No labels yet (the first sync): ``stable`` is the highest version on the host.
- ``promote``: the canary becomes stable, the old stable goes on the history, no canary is left.
- ``rollback``: stable goes back to the last stable it replaced that is still on the host (so
  repeated rollbacks walk back through the promotions); with no such version, to the highest
  version below it. The canary is left as it is.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from classifier.errors import StageError, run_stage
from classifier.files import write_json
from serving import model_config
from serving.layout import Host


@dataclass(frozen=True)
class Labels:
    stable: int | None = None
    canary: int | None = None
    earlier_stables: tuple[int, ...] = ()  # most recent last

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
        return Labels(state["stable"], state["canary"], tuple(state["earlier_stables"]))
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
    return Labels(stable=labels.canary, canary=None, earlier_stables=earlier)


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


def change(host: Host, command: str, version: int | None) -> Labels:
    """Apply one label command to the host's labels."""
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
        if command == "canary":
            labels = set_canary(labels, version, versions)
        elif command == "promote":
            labels = promote(labels)
        else:
            labels = rollback(labels, versions)
        apply(host, labels)
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.labels", description=__doc__)
    parser.add_argument("--base-path", type=Path, required=True, help="the model's base path")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("canary", help="label a version canary").add_argument("version", type=int)
    commands.add_parser("promote", help="the canary becomes stable")
    commands.add_parser("rollback", help="stable goes back to the previous stable")
    args = parser.parse_args(argv)
    host = Host(args.base_path.absolute())
    labels = change(host, args.command, getattr(args, "version", None))
    print(f"labels: {labels.describe()} (written to {host.config})")


if __name__ == "__main__":
    run_stage("labels", main)
