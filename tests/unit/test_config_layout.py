"""The configuration's layout (issue 18): each module of the package imports only those before
it, so the package reads top-down without cycles, and every name importers take from
``gotk_relay.config`` stays importable from the package."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import gotk_relay.config as config

PACKAGE: Final = Path(config.__file__).resolve().parent
PREFIX: Final = "gotk_relay.config."
# The modules in the order they build on each other (package docstring).
ORDER: Final = ("base", "client", "destinations", "receiver", "document", "env", "loading")


def siblings(name: str) -> set[str]:
    """The package's modules that module ``name`` imports."""
    out: set[str] = set()
    path = PACKAGE / f"{name}.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
            out.add((node.module or "").removeprefix(PREFIX).split(".")[0])
    return out


@pytest.mark.parametrize("name", ORDER)
def test_modules_import_only_those_before_them(name: str) -> None:
    found = siblings(name)
    assert found <= set(ORDER[: ORDER.index(name)]), f"{name} imports {sorted(found)}"


def test_every_module_has_its_place() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)


def test_every_name_the_relay_imports_from_config_is_exported() -> None:
    """The modules outside the package import ``from .config import X`` as before the split."""
    source = PACKAGE.parent
    wanted: set[str] = set()
    for path in source.rglob("*.py"):
        if PACKAGE in path.parents:
            continue
        depth = len(path.relative_to(source).parts)  # 1: gotk_relay/x.py, 2: gotk_relay/a/x.py
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (
                (node.level == depth and node.module == "config")
                or node.module == "gotk_relay.config"
            ):
                wanted.update(alias.name for alias in node.names)
    assert wanted, "no importer found: the walk is wrong"
    assert wanted <= set(config.__all__), sorted(wanted - set(config.__all__))
