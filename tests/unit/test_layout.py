"""The layout (issue 18, docs/architecture.md): each package's modules import only the package's
modules before them, so a package reads top-down without cycles (the write path's in the order
a request travels); every module has its place in that order; the names the rest of the relay
imports from a split package stay importable from it; the rules and the codecs import nothing
of the path, and the scan workers take the edge checks from the write path, not the server."""

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
    # The write path's stages, in the order a request travels (write/__init__.py).
    "gotk_relay.write": ("edge", "routing", "views", "scan", "admission"),
    "gotk_relay.rules.flux": (
        "names",
        "config",
        "stats",
        "state",
        "classify",
        "emitter",
        "operator",
        "tracked",
        "rewriter",
        "persist",
    ),
    "gotk_relay.config": (
        "base",
        "client",
        "destinations",
        "receiver",
        "scrape",
        "document",
        "env",
        "yaml_text",
        "loading",
    ),
    "gotk_relay.cli": ("parser", "tools", "migrate", "serve"),
    # The query migration: the shapes, PromQL text, the rewrite, Grafana's variable queries,
    # files, the check against a Prometheus (migrate/__init__.py).
    "gotk_relay.migrate": ("shapes", "printer", "rewrite", "templates", "files", "check"),
    "gotk_relay.scrape": ("targets", "promtext", "openmetrics", "parse", "staleness", "loop"),
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
        "flux",
        "series",
        "mapper",
    ),
}
MODULES: Final = [(package, name) for package, names in ORDER.items() for name in names]
# Packages that re-export what the rest of the relay imports from them (``__all__``).
EXPORTING: Final = [package for package in ORDER if package != "gotk_relay.write"]
# What comes after the write path's stages: none of its modules imports these.
LATER: Final = ("gotk_relay.server", "gotk_relay.worker_pool", "gotk_relay.cli")


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


@pytest.mark.parametrize("package", EXPORTING)
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


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, and each name imported from
    one as ``module.name``."""
    found: set[str] = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(path, node)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("name", ORDER["gotk_relay.write"])
def test_no_stage_imports_what_comes_after_the_write_path(name: str) -> None:
    later = {m for m in imported(folder("gotk_relay.write") / f"{name}.py") if m.startswith(LATER)}
    assert not later, f"{name} imports {sorted(later)}"


@pytest.mark.parametrize(
    "path",
    sorted(folder("gotk_relay.rules").rglob("*.py")),
    ids=lambda p: str(p.relative_to(SOURCE)),
)
def test_the_rules_do_not_import_the_wire_format(path: Path) -> None:
    wire = {m for m in imported(path) if m.startswith("gotk_relay.wire")}
    assert not wire, f"{path.name} imports {sorted(wire)}"


@pytest.mark.parametrize(
    "path", sorted(folder("gotk_relay.wire").glob("*.py")), ids=lambda p: p.name
)
def test_the_codecs_import_nothing_of_the_path(path: Path) -> None:
    path_modules = ("gotk_relay.write", "gotk_relay.relay", "gotk_relay.delivery", *LATER)
    found = {m for m in imported(path) if m.startswith(path_modules)}
    assert not found, f"{path.name} imports {sorted(found)}"


@pytest.mark.parametrize("name", ORDER["gotk_relay.scrape"])
def test_the_scrape_input_feeds_the_relay_and_takes_nothing_else_of_the_path(name: str) -> None:
    """The scrape input is a stage before the rules: it hands its batches to ``Relay.admit``
    and reuses the destinations' client credentials and TLS context; nothing else of what comes
    after."""
    found = imported(folder("gotk_relay.scrape") / f"{name}.py")
    after = ("gotk_relay.write", "gotk_relay.destinations", "gotk_relay.relay", *LATER)
    allowed = {
        "gotk_relay.relay",
        "gotk_relay.relay.Relay",
        "gotk_relay.destinations.http",
        "gotk_relay.destinations.http.auth_headers",
        "gotk_relay.destinations.tls",
        "gotk_relay.destinations.tls.client_ssl_context",
    }
    assert not {m for m in found if m.startswith(after)} - allowed


def test_the_scan_worker_takes_the_edge_checks_from_the_write_path_not_the_server() -> None:
    found = imported(SOURCE / "scan_worker.py")
    assert "gotk_relay.write.edge" in found
    assert not {m for m in found if m.startswith("gotk_relay.server")}
