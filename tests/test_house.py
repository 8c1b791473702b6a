"""The house rules the code's layout keeps: tests and benchmarks are peers that share helpers from
``testbed`` (and tests their own ``tests/helpers.py``), never import one another, and nothing
imports a private name from another package."""

from __future__ import annotations

import ast
from pathlib import Path

from testbed.repo import REPO_ROOT

PACKAGES = ("benchmarks", "bootstrap", "ci_jobs", "classifier", "reporting", "serving", "stages",
            "testbed", "tests")  # fmt: skip


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).glob("*.py"))


def test_no_test_module_is_imported_by_another_module() -> None:
    offending = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for package in PACKAGES
        for path in modules(package)
        for module, _ in imports(path)
        if module.startswith("tests.") and module != "tests.helpers"
    ]
    assert offending == []


def test_benchmarks_and_testbed_never_import_tests() -> None:
    offending = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for package in ("benchmarks", "testbed")
        for path in modules(package)
        for module, _ in imports(path)
        if module == "tests" or module.startswith("tests.")
    ]
    assert offending == []


def test_no_private_name_is_imported_across_packages() -> None:
    offending = [
        f"{path.relative_to(REPO_ROOT)} imports {module}.{name}"
        for package in PACKAGES
        for path in modules(package)
        for module, names in imports(path)
        for name in names
        if name.startswith("_")
        and module.split(".")[0] != package
        and module.split(".")[0] in PACKAGES
    ]
    assert offending == []


def test_the_checks_see_an_offence(tmp_path: Path) -> None:
    """The parser finds what the rules look for (a check that could never fail proves nothing)."""
    sample = tmp_path / "sample.py"
    sample.write_text("from tests.test_infra import render\nfrom testbed.s3 import _client\n")
    assert imports(sample) == [("tests.test_infra", ["render"]), ("testbed.s3", ["_client"])]
