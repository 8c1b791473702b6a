"""serving.model_config writes what TensorFlow Serving parses as its ``ModelServerConfig``.

TF Serving's protos are not installed here, so the messages the file uses are declared from
``tensorflow_serving/config/model_server_config.proto`` (and the version policy's
``file_system_storage_path_source.proto``) with the same names, types and numbers, and the file
is parsed with protobuf's own text-format parser: a misspelt field or bad syntax fails to parse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from serving import model_config
from serving.layout import Host

FIELD = descriptor_pb2.FieldDescriptorProto


def field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False):
    label = FIELD.LABEL_REPEATED if repeated else FIELD.LABEL_OPTIONAL
    described = FIELD(name=name, number=number, type=kind, label=label)
    if type_name:
        described.type_name = type_name
    return described


def config_message_class():
    """``tensorflow.serving.ModelServerConfig``, as far as the file uses it."""
    file = descriptor_pb2.FileDescriptorProto(
        name="model_server_config_subset.proto", package="tensorflow.serving", syntax="proto3"
    )
    policy = file.message_type.add(name="ServableVersionPolicy")
    policy.nested_type.add(name="Specific").field.append(
        field("versions", 1, FIELD.TYPE_INT64, repeated=True)
    )
    policy.field.append(
        field(
            "specific",
            102,
            FIELD.TYPE_MESSAGE,
            ".tensorflow.serving.ServableVersionPolicy.Specific",
        )
    )
    config = file.message_type.add(name="ModelConfig")
    labels_entry = config.nested_type.add(name="VersionLabelsEntry")
    labels_entry.options.map_entry = True
    labels_entry.field.extend(
        [field("key", 1, FIELD.TYPE_STRING), field("value", 2, FIELD.TYPE_INT64)]
    )
    config.field.extend(
        [
            field("name", 1, FIELD.TYPE_STRING),
            field("base_path", 2, FIELD.TYPE_STRING),
            field("model_platform", 4, FIELD.TYPE_STRING),
            field(
                "model_version_policy",
                7,
                FIELD.TYPE_MESSAGE,
                ".tensorflow.serving.ServableVersionPolicy",
            ),
            field(
                "version_labels",
                8,
                FIELD.TYPE_MESSAGE,
                ".tensorflow.serving.ModelConfig.VersionLabelsEntry",
                repeated=True,
            ),
        ]
    )
    file.message_type.add(name="ModelConfigList").field.append(
        field("config", 1, FIELD.TYPE_MESSAGE, ".tensorflow.serving.ModelConfig", repeated=True)
    )
    file.message_type.add(name="ModelServerConfig").field.append(
        field("model_config_list", 1, FIELD.TYPE_MESSAGE, ".tensorflow.serving.ModelConfigList")
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig")
    return message_factory.GetMessageClass(descriptor)


ModelServerConfig = config_message_class()


def parse_config(text: str) -> dict:
    """The one model's name, base path, platform, served versions and labels."""
    (config,) = text_format.Parse(text, ModelServerConfig()).model_config_list.config
    return {
        "name": config.name,
        "base_path": config.base_path,
        "platform": config.model_platform,
        "versions": list(config.model_version_policy.specific.versions),
        "labels": dict(config.version_labels),
    }


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
