"""dvc.yaml declares exactly what each stage runs and reads, so DVC re-runs exactly what changed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from classifier.paths import Paths
from testbed.repo import REPO_ROOT

PIPELINE = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
SECTIONS = ["data", "prepare", "build", "train", "test", "package"]


PACKAGES = ("stages", "classifier")


def _file(module: str) -> Path:
    """``stages.train`` -> ``stages/train.py``; a package -> its ``__init__.py``."""
    path = REPO_ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """The project modules (of ``stages`` and ``classifier``) that ``module`` imports."""
    found = set()
    for node in ast.walk(ast.parse(_file(module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in PACKAGES:  # modules, or names
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGES):
            found |= {node.module, node.module.split(".")[0]}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGES)}
            found |= {a.name.split(".")[0] for a in node.names if a.name.startswith(PACKAGES)}
    return {name for name in found if _file(name).exists()}


def _closure(module: str) -> set[str]:
    seen, pending = {module, "stages"}, [module, "stages"]  # running stages.x runs stages/ first
    while pending:
        for imported in _imports(pending.pop()) - seen:
            seen.add(imported)
            pending.append(imported)
    return seen


def _sections_read(module: str) -> list[str]:
    source = _file(f"stages.{module}").read_text()
    sections = set(re.findall(r"load_params\(\)\.(\w+)", source))
    for name in re.findall(r"(\w+) = load_params\(\)$", source, re.M):  # then name.<section>
        sections |= set(re.findall(rf"\b{name}\.(\w+)", source))
    if re.search(r"load_params\(\)(?![.\n])", source):
        return SECTIONS  # the whole params object is passed on
    return sorted(sections)


def _module(stage: dict) -> str:
    return re.fullmatch(r"python -m stages\.(\w+)", stage["cmd"]).group(1)


def _declared(stage: dict, key: str) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in stage.get(key, [])]


@pytest.mark.parametrize("name", list(PIPELINE))
def test_code_deps_are_exactly_the_modules_the_stage_runs(name: str) -> None:
    stage = PIPELINE[name]
    declared = {d for d in stage["deps"] if d.startswith(tuple(f"{p}/" for p in PACKAGES))}
    expected = {str(_file(m).relative_to(REPO_ROOT)) for m in _closure(f"stages.{_module(stage)}")}
    assert declared == expected


@pytest.mark.parametrize("name", list(PIPELINE))
def test_params_are_exactly_the_sections_the_stage_reads(name: str) -> None:
    stage = PIPELINE[name]
    assert sorted(stage.get("params", [])) == sorted(_sections_read(_module(stage)))


def test_every_artifact_path_is_a_declared_output_and_all_are_cached() -> None:
    outputs = set()
    for stage in PIPELINE.values():
        for key in ("outs", "metrics", "plots"):
            outputs |= set(_declared(stage, key))
            for entry in stage.get(key, []):
                options = next(iter(entry.values())) if isinstance(entry, dict) else {}
                assert options.get("cache", True), "cache: false keeps outputs off the remote"
    relative = {name: getattr(Paths, name) for name, value in vars(Paths).items()}
    artifacts = {str(path) for path in relative.values() if isinstance(path, Path)} - {
        str(Paths.train_state_dir),
        str(Paths.dist_dir),
        str(Paths.train_log_dir),
        str(Paths.champion_dir),  # a dependency: the model to beat
    }
    assert artifacts <= outputs
    assert "dist/${package.model_name}" in outputs
    assert "champion" in PIPELINE["test"]["deps"]
    assert {"metrics/train/metrics.json", "metrics/train/plots/metrics"} <= outputs


def test_train_never_sees_the_test_set() -> None:
    assert "data/prepared/test" not in PIPELINE["train"]["deps"]
    assert "data/prepared/test" in PIPELINE["test"]["deps"]
