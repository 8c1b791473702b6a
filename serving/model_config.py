"""TensorFlow Serving's model config file (text protobuf ``ModelServerConfig``) for one model.

Every version on the host is listed under ``specific``, so each is loaded: TF Serving moves an
existing label only to a version it has loaded, and a rollback target must be ready at once.
The file is rewritten whole and renamed into place, so TF Serving, which re-reads it every
``--model_config_file_poll_wait_seconds``, never sees half of it.
"""

from __future__ import annotations

from pathlib import Path

from classifier.files import write_text
from serving.layout import Host


def quoted(text: str) -> str:
    """A text-protobuf string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(model: str, base_path: Path, versions: list[int], labels: dict[str, int]) -> str:
    """The config serving ``versions`` of ``model`` from ``base_path``, with ``labels``."""
    lines = [
        "model_config_list {",
        "  config {",
        f"    name: {quoted(model)}",
        f"    base_path: {quoted(str(base_path))}",
        '    model_platform: "tensorflow"',
        "    model_version_policy {",
        "      specific {",
        *(f"        versions: {version}" for version in sorted(versions)),
        "      }",
        "    }",
    ]
    for label, version in sorted(labels.items()):
        lines += [
            "    version_labels {",
            f"      key: {quoted(label)}",
            f"      value: {version}",
            "    }",
        ]
    return "\n".join([*lines, "  }", "}", ""])


def write(host: Host, labels: dict[str, int]) -> None:
    """Write the host's config: every version it has, ``labels`` on them."""
    write_text(host.config, render(host.model, host.base, host.versions(), labels))
