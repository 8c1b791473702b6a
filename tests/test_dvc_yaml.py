"""dvc.yaml declares exactly what each stage runs and reads, so DVC re-runs exactly what changed."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from stages import paths
from testbed.repo import REPO_ROOT

PIPELINE = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
SECTIONS = ["data", "prepare", "build", "train", "test", "package"]


def _stage_imports(module: str) -> set[str]:
    tree = ast.parse((REPO_ROOT / "stages" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "stages":  # modules, or names
            modules = (a.name for a in node.names)  # from stages/__init__.py (CPU_RECIPE)
            found |= {name for name in modules if (REPO_ROOT / "stages" / f"{name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("stages.")}
    return found


def _closure(module: str) -> set[str]:
    seen, pending = {module}, [module]
    while pending:
        for imported in _stage_imports(pending.pop()) - seen:
            seen.add(imported)
            pending.append(imported)
    return seen


def _sections_read(module: str) -> list[str]:
    source = (REPO_ROOT / "stages" / f"{module}.py").read_text()
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
    declared = {d for d in stage["deps"] if d.startswith("stages/")}
    expected = {f"stages/{m}.py" for m in _closure(_module(stage))} | {"stages/__init__.py"}
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
    artifacts = {str(value) for name, value in vars(paths).items() if name.isupper()} - {
        str(paths.TRAIN_STATE_DIR),
        str(paths.DIST_DIR),
        str(paths.TRAIN_LOG_DIR),
    }
    assert artifacts <= outputs
    assert "dist/${package.model_name}/${package.version}" in outputs
    assert {"metrics/train/metrics.json", "metrics/train/plots/metrics"} <= outputs


def test_train_never_sees_the_test_set() -> None:
    assert "data/prepared/test" not in PIPELINE["train"]["deps"]
    assert "data/prepared/test" in PIPELINE["test"]["deps"]
