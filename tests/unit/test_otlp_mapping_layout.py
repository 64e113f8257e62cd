"""The OTLP mapping's layout (issue 18): each module of the package imports only those before
it, so the package reads top-down without cycles, and the names importers use stay importable
from the package."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import gotk_relay.destinations.otlp_mapping as otlp_mapping

PACKAGE: Final = Path(otlp_mapping.__file__).resolve().parent
PREFIX: Final = "gotk_relay.destinations.otlp_mapping."
# The modules in the order they build on each other (package docstring).
ORDER: Final = (
    "naming",
    "encoder",
    "labelsets",
    "state",
    "output",
    "builder",
    "numbers",
    "classic",
    "native",
    "mapper",
)


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


@pytest.mark.parametrize(
    "name",
    ["Mapper", "MappingState", "StreamKey", "StreamState", "Mapped", "to_otlp", "otel_unit"],
)
def test_the_names_importers_use_are_the_packages(name: str) -> None:
    assert name in otlp_mapping.__all__
    assert getattr(otlp_mapping, name) is not None
