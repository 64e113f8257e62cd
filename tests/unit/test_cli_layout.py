"""The command line's layout (issue 18): each module of the package imports only those before
it, and the names the entry point and the tests use stay importable from ``gotk_relay.cli``."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import gotk_relay.cli as cli

PACKAGE: Final = Path(cli.__file__).resolve().parent
# The modules in the order they build on each other (package docstring).
ORDER: Final = ("parser", "tools", "serve")


def siblings(name: str) -> set[str]:
    """The package's modules that module ``name`` imports (relative imports, at any depth)."""
    out: set[str] = set()
    path = PACKAGE / f"{name}.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("name", ORDER)
def test_modules_import_only_those_before_them(name: str) -> None:
    found = siblings(name)
    assert found <= set(ORDER[: ORDER.index(name)]), f"{name} imports {sorted(found)}"


def test_every_module_has_its_place() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)


def test_the_entry_point_is_the_packages_main() -> None:
    pyproject = PACKAGE.parents[2] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    assert 'gotk-relay = "gotk_relay.cli:main"' in pyproject.read_text()
    assert cli.main(["check-config", str(PACKAGE.parent / "default.yml")]) == 0
