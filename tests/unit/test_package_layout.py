"""The layout of the packages split by responsibility (issue 18): each module imports only the
package's modules before it, so a package reads top-down without cycles; every module has its
place in that order; and the names the rest of the relay imports stay importable from the
package, as before the split."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Final

import pytest

import gotk_relay

SOURCE: Final = Path(gotk_relay.__file__).resolve().parent
# Each package's modules in the order they build on each other (its docstring says the same).
ORDER: Final[dict[str, tuple[str, ...]]] = {
    "gotk_relay.config": (
        "base",
        "client",
        "destinations",
        "receiver",
        "document",
        "env",
        "loading",
    ),
    "gotk_relay.cli": ("parser", "tools", "serve"),
    "gotk_relay.destinations.otlp_mapping": (
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
    ),
    "gotk_relay.destinations.datadog_mapping": (
        "intake",
        "names",
        "kinds",
        "counters",
        "series",
        "mapper",
    ),
}
MODULES: Final = [(package, name) for package, names in ORDER.items() for name in names]


def folder(package: str) -> Path:
    return SOURCE.joinpath(*package.split(".")[1:])


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module ``node`` (in the file ``path``) imports from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = ["gotk_relay", *path.relative_to(SOURCE).parent.parts]
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def siblings(package: str, name: str) -> set[str]:
    """The modules of ``package`` that its module ``name`` imports, at any depth of the file."""
    path = folder(package) / f"{name}.py"
    found: set[str] = set()
    for node in ast.walk(tree(path)):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = absolute(path, node)
        if module == package:  # from . import x
            found.update(alias.name for alias in node.names)
        elif module.startswith(f"{package}."):
            found.add(module.removeprefix(f"{package}.").split(".")[0])
    return found


@pytest.mark.parametrize(("package", "name"), MODULES, ids=[f"{p}.{n}" for p, n in MODULES])
def test_a_module_imports_only_those_before_it(package: str, name: str) -> None:
    before = ORDER[package][: ORDER[package].index(name)]
    found = siblings(package, name)
    assert found <= set(before), f"{name} imports {sorted(found - set(before))}"


@pytest.mark.parametrize("package", ORDER)
def test_every_module_has_its_place(package: str) -> None:
    modules = {p.stem for p in folder(package).glob("*.py")} - {"__init__"}
    assert modules == set(ORDER[package])


@pytest.mark.parametrize("package", ORDER)
def test_the_names_the_relay_imports_are_the_packages(package: str) -> None:
    """What the modules outside the package import from it, it exports (``__all__``)."""
    wanted: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if folder(package) in path.parents:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.ImportFrom) and absolute(path, node) == package:
                wanted.update(alias.name for alias in node.names)
    exported = set(importlib.import_module(package).__all__)
    assert wanted, f"nothing imports from {package}: the walk is wrong"
    assert wanted <= exported, sorted(wanted - exported)
