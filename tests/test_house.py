"""The house rules the code's layout keeps: tests and benchmarks are peers that share helpers from
``testbed`` (the suite's own in ``testbed/suite.py``), never import one another; ``tests/``
holds only tests and their conftest; nothing imports a private name from another package; every
command line is read by argparse and ends in ``run_stage`` (one line for bad input and for a fault
of the machine)."""

from __future__ import annotations

import ast
import os
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


def offences(packages: tuple[str, ...], rule, files=modules) -> list[str]:
    """``file imports module[.name]`` for every import that ``rule(package, module, name)``
    refuses (``name`` is None for the module itself)."""
    return [
        f"{os.path.relpath(path, REPO_ROOT)} imports {module}{f'.{name}' if name else ''}"
        for package in packages
        for path in files(package)
        for module, names in imports(path)
        for name in [None, *names]
        if rule(package, module, name)
    ]


def test_no_test_module_is_imported_by_another_module() -> None:
    def imports_a_test(package: str, module: str, name: str | None) -> bool:
        return name is None and module.startswith("tests.")

    assert offences(PACKAGES, imports_a_test) == []


def test_tests_holds_only_tests_and_their_conftest() -> None:
    others = [
        path.name
        for path in modules("tests")
        if not path.name.startswith("test_") and path.name not in ("conftest.py", "__init__.py")
    ]
    assert others == []


def test_benchmarks_and_testbed_never_import_tests() -> None:
    def imports_tests(package: str, module: str, name: str | None) -> bool:
        return name is None and module.split(".")[0] == "tests"

    assert offences(("benchmarks", "testbed"), imports_tests) == []


def test_no_private_name_is_imported_across_packages() -> None:
    def private_elsewhere(package: str, module: str, name: str | None) -> bool:
        home = module.split(".")[0]
        return bool(name) and name.startswith("_") and home != package and home in PACKAGES

    assert offences(PACKAGES, private_elsewhere) == []


def test_the_checks_see_an_offence(tmp_path: Path) -> None:
    """Each rule refuses what it is for (a check that could never fail proves nothing)."""
    sample = tmp_path / "sample.py"
    sample.write_text("from tests.test_infra import render\nfrom testbed.s3 import _client\n")
    assert imports(sample) == [("tests.test_infra", ["render"]), ("testbed.s3", ["_client"])]
    found = offences(
        ("benchmarks",),
        lambda package, module, name: name is None and module.startswith("tests."),
        files=lambda package: [sample],
    )
    assert len(found) == 1 and found[0].endswith("sample.py imports tests.test_infra")


def test_every_command_line_is_read_by_argparse() -> None:
    """A module that takes command-line arguments parses them with argparse (its usage, help and
    one-line errors), never by indexing ``argv`` by hand."""
    by_hand = []
    for package in PACKAGES[:-1]:  # not the tests
        for path in modules(package):
            text = path.read_text()
            takes_arguments = "sys.argv" in text or "def main(argv" in text
            if takes_arguments and "argparse" not in {module for module, _ in imports(path)}:
                by_hand.append(os.path.relpath(path, REPO_ROOT))
    assert by_hand == []


def test_every_command_line_ends_in_run_stage() -> None:
    """What a user runs (a stage, a serving or CI command, a benchmark, a report) reports bad
    input and faults of the machine in one line: its ``__main__`` goes through ``run_stage``.
    ``bootstrap`` runs before the environment exists (the standard library only)."""
    bare = []
    for package in ("benchmarks", "ci_jobs", "reporting", "serving", "stages"):
        for path in modules(package):
            text = path.read_text()
            main_block = text.partition('if __name__ == "__main__":')[2]
            if main_block and "run_stage(" not in main_block:
                bare.append(os.path.relpath(path, REPO_ROOT))
    assert bare == []
