"""TensorFlow Serving's ``ModelServerConfig``, parsed as TF Serving parses its config file.

TF Serving's protos are not installed here, so the messages the file uses are declared from
``tensorflow_serving/config/model_server_config.proto`` (and the version policy's
``file_system_storage_path_source.proto``; the ``--monitoring_config_file``'s
``monitoring_config.proto``) with the same names, types and numbers, and the file
is parsed with protobuf's own text-format parser: a misspelt field or bad syntax fails to parse.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

FIELD = descriptor_pb2.FieldDescriptorProto


def field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False):
    label = FIELD.LABEL_REPEATED if repeated else FIELD.LABEL_OPTIONAL
    described = FIELD(name=name, number=number, type=kind, label=label)
    if type_name:
        described.type_name = type_name
    return described


def config_message_classes():
    """``tensorflow.serving.ModelServerConfig`` and ``MonitoringConfig``, as far as the files
    use them."""
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
    prometheus = file.message_type.add(name="PrometheusConfig")  # monitoring_config.proto
    prometheus.field.extend(
        [field("enable", 1, FIELD.TYPE_BOOL), field("path", 2, FIELD.TYPE_STRING)]
    )
    file.message_type.add(name="MonitoringConfig").field.append(
        field("prometheus_config", 1, FIELD.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return [
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("ModelServerConfig", "MonitoringConfig")
    ]


ModelServerConfig, MonitoringConfig = config_message_classes()


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


def parse_monitoring_config(text: str) -> dict:
    """The ``--monitoring_config_file``: whether and where Prometheus metrics are exported."""
    config = text_format.Parse(text, MonitoringConfig())
    return {
        "prometheus_config": {
            "enable": config.prometheus_config.enable,
            "path": config.prometheus_config.path,
        }
    }
