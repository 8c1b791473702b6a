"""serving.labels: canary, promote and rollback move TF Serving's labels, and survive syncs.

A host here is a base path with version folders (the label commands never read a model); the
config each command writes is parsed as TensorFlow Serving parses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.errors import StageError, run_stage
from serving import labels
from serving.labels import Labels
from serving.layout import Host
from testbed.tf_serving_config import parse_config


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A host with versions 1-4, stable 2, no canary."""
    host = Host(tmp_path / "mnist")
    for version in (1, 2, 3, 4):
        (host.version_dir(version) / "variables").mkdir(parents=True)
    labels.apply(host, Labels(stable=2))
    return host


def command(host: Host, capsys, *args: str) -> tuple[int, str, str]:
    """``python -m serving.labels --base-path <host> ARGS``: exit status, stdout, stderr."""
    try:
        run_stage("labels", lambda: labels.main(["--base-path", str(host.base), *args]))
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def served(host: Host) -> dict[str, int]:
    config = parse_config(host.config.read_text())
    assert config["versions"] == host.versions() == [1, 2, 3, 4]
    return config["labels"]


def test_first_sync_makes_the_highest_version_stable() -> None:
    assert labels.with_default_stable(Labels(), [1, 3, 2]) == Labels(stable=3)
    assert labels.with_default_stable(Labels(stable=1), [1, 3]) == Labels(stable=1)
    assert labels.with_default_stable(Labels(), []) == Labels()


def test_canary_then_promote(host: Host, capsys) -> None:
    assert command(host, capsys, "canary", "3") == (
        0,
        f"labels: stable 2, canary 3 (written to {host.config})\n",
        "",
    )
    assert served(host) == {"stable": 2, "canary": 3}
    before = host.labels.read_text()
    assert command(host, capsys, "promote") == (  # no gateway: no evidence, no promotion
        1,
        "",
        "labels: error: canary version 3 not promoted: no evidence: give --gateway URL, the"
        " gateway in front of this server; stable is unchanged (--force promotes anyway,"
        " recorded in the labels' history)\n",
    )
    assert host.labels.read_text() == before
    code, out, err = command(host, capsys, "promote", "--force")
    assert (code, out) == (0, f"labels: stable 3, canary none (written to {host.config})\n")
    assert (
        err == "labels: promoted by --force past: no evidence: give --gateway URL, the"
        " gateway in front of this server\n"
    )
    assert served(host) == {"stable": 3}
    state = json.loads(host.labels.read_text())
    assert (state["stable"], state["canary"], state["earlier_stables"]) == (3, None, [2])
    canary, promotion = state["history"]
    assert (canary["command"], canary["stable"], canary["canary"]) == ("canary", 2, 3)
    assert (promotion["command"], promotion["stable"], promotion["canary"]) == ("promote", 3, None)
    assert promotion["forced_past"] == [
        "no evidence: give --gateway URL, the gateway in front of this server"
    ]
    assert promotion["time"].endswith("Z") and promotion["time"] >= canary["time"]


def test_rollback_walks_back_through_promotions_then_to_lower_versions(host: Host, capsys) -> None:
    for version in ("3", "4"):
        command(host, capsys, "canary", version)
        command(host, capsys, "promote", "--force")
    assert served(host) == {"stable": 4}
    stables = []
    for _ in range(3):
        code, out, _ = command(host, capsys, "rollback")
        assert code == 0, out
        stables.append(served(host)["stable"])
    assert stables == [3, 2, 1]  # the promotions' stables, then the next lower version
    code, out, err = command(host, capsys, "rollback")
    assert (code, out) == (1, "")
    assert err == (
        "labels: error: nothing to roll back to: stable 1 has no earlier stable and no lower"
        " version on this host; stable is unchanged\n"
    )
    assert served(host) == {"stable": 1}


def test_rollback_skips_earlier_stables_that_are_gone(host: Host, capsys) -> None:
    """Version 5 was stable once, then retracted and removed from the host."""
    labels.apply(host, Labels(stable=4, earlier_stables=(2, 5)))
    assert command(host, capsys, "rollback")[0] == 0
    assert served(host) == {"stable": 2}
    assert json.loads(host.labels.read_text())["earlier_stables"] == []


def test_the_canary_is_kept_across_a_rollback(host: Host, capsys) -> None:
    labels.apply(host, Labels(stable=3, canary=4, earlier_stables=(2,)))
    command(host, capsys, "rollback")
    assert served(host) == {"stable": 2, "canary": 4}


def test_a_rollback_onto_the_canary_leaves_no_canary(host: Host, capsys) -> None:
    """Stable and canary on one version would split nothing: it is stable, and canary is free."""
    labels.apply(host, Labels(stable=3, canary=2, earlier_stables=(2,)))
    assert command(host, capsys, "rollback")[0] == 0
    assert served(host) == {"stable": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("canary", "9"),
            "version 9 is not on this host (it has 1, 2, 3, 4); run `python -m serving.sync` to"
            " fetch published versions, or pick one it has",
        ),
        (("canary", "2"), "version 2 is already stable; a canary is another version"),
        (
            ("promote",),
            "there is no canary to promote; set one first: python -m serving.labels canary <v>",
        ),
    ],
)
def test_refusals_are_one_line_and_change_nothing(
    host: Host, capsys, args: tuple[str, ...], message: str
) -> None:
    before = host.config.read_text(), host.labels.read_text()
    assert command(host, capsys, *args) == (1, "", f"labels: error: {message}\n")
    assert (host.config.read_text(), host.labels.read_text()) == before


def test_a_host_that_never_synced_is_refused(tmp_path: Path, capsys) -> None:
    host = Host(tmp_path / "mnist")
    (host.version_dir(1)).mkdir(parents=True)
    code, _, err = command(host, capsys, "canary", "1")
    assert code == 1
    assert err == (
        f"labels: error: {host.base} has no stable version yet; run `python -m serving.sync"
        f" --base-path {host.base}` first\n"
    )
    assert not host.config.exists()


def test_a_missing_base_path_is_refused_and_not_created(tmp_path: Path, capsys) -> None:
    host = Host(tmp_path / "mnist")
    code, _, err = command(host, capsys, "promote")
    assert code == 1 and err.startswith(f"labels: error: {host.base} has no stable version yet")
    assert not host.base.exists()


def test_labels_never_point_at_a_version_the_host_lacks(host: Host) -> None:
    """Were a labelled folder deleted by hand, no config would send clients to it."""
    before = host.config.read_text()
    with pytest.raises(StageError, match=r"^canary is version 7, which is gone from .*; run"):
        labels.apply(host, Labels(stable=2, canary=7))
    assert host.config.read_text() == before


def test_an_unreadable_state_file_is_refused(host: Host, capsys) -> None:
    host.labels.write_text("{not json")
    code, _, err = command(host, capsys, "rollback")
    assert code == 1
    assert err.startswith(f"labels: error: {host.labels} is unreadable (")
    assert err.endswith(
        "; restore it, or delete it to make the highest version stable at the next sync\n"
    )
