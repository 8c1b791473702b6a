"""serving.model_config writes what TensorFlow Serving parses as its ``ModelServerConfig``
(``tests/tf_serving_config.py``: its messages, and protobuf's own text-format parser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from serving import model_config
from serving.layout import Host
from testbed.tf_serving_config import parse_config


def test_the_config_serves_the_given_versions_with_labels() -> None:
    text = model_config.render("mnist", Path("/models/mnist"), [2, 1], {"stable": 1, "canary": 2})
    assert parse_config(text) == {
        "name": "mnist",
        "base_path": "/models/mnist",
        "platform": "tensorflow",
        "versions": [1, 2],
        "labels": {"stable": 1, "canary": 2},
    }
    assert 'version_labels {\n      key: "canary"\n      value: 2\n    }' in text


def test_quotes_and_backslashes_in_the_base_path_survive() -> None:
    path = Path('/srv/odd "models"\\mnist')
    assert parse_config(model_config.render("mnist", path, [1], {}))["base_path"] == str(path)


def test_write_lists_every_version_folder_of_the_host_and_nothing_else(tmp_path: Path) -> None:
    host = Host(tmp_path / "mnist")
    for name in ("1", "3", "10", ".incoming-4-abc", "07", "notes"):
        (host.base / name).mkdir(parents=True)
    (host.base / "5").write_text("a file, not a version")
    model_config.write(host, {"stable": 3})
    parsed = parse_config(host.config.read_text())
    assert parsed["versions"] == [1, 3, 10] and parsed["labels"] == {"stable": 3}
    assert parsed["base_path"] == str(host.base) and parsed["name"] == "mnist"
    assert sorted(p.name for p in host.base.iterdir() if p.name.startswith(".")) == [
        ".incoming-4-abc"
    ]  # written in place by rename: no temporary left beside it


def test_a_misspelt_field_would_not_parse() -> None:
    text = model_config.render("mnist", Path("/m"), [1], {}).replace("base_path", "basepath")
    with pytest.raises(text_format.ParseError, match="basepath"):
        parse_config(text)
