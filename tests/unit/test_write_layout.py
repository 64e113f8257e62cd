"""The write path's layout (issue 18): its modules read top-down in the order a request
travels, each importing only the stages before it; the codecs and the scan workers import
nothing of the stages after them (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import gotk_relay

ROOT: Final = Path(gotk_relay.__file__).resolve().parent
# The stages in travel order (write/__init__.py).
STAGES: Final = ("edge", "routing", "views", "scan", "admission")
# What comes after the write stages: a stage must not import these.
LATER: Final = ("gotk_relay.server", "gotk_relay.worker_pool", "gotk_relay.cli")


def imported(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (relative imports resolved)."""
    # The package a relative import starts from: the module's own (``__init__`` included).
    package = ["gotk_relay", *path.relative_to(ROOT).with_suffix("").parts][:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_stages_before_it(stage: str) -> None:
    found = imported(ROOT / "write" / f"{stage}.py")
    stages = {m.split(".")[2] for m in found if m.startswith("gotk_relay.write.")}
    assert stages <= set(STAGES[: STAGES.index(stage)]), f"{stage} imports {sorted(stages)}"
    later = {m for m in found if m.startswith(LATER)}
    assert not later, f"{stage} imports {sorted(later)}"


def test_every_write_module_has_its_place() -> None:
    modules = {p.stem for p in (ROOT / "write").glob("*.py")} - {"__init__"}
    assert modules == set(STAGES)


@pytest.mark.parametrize("path", sorted((ROOT / "wire").glob("*.py")), ids=lambda p: p.name)
def test_the_codecs_import_nothing_of_the_path(path: Path) -> None:
    path_modules = ("gotk_relay.write", "gotk_relay.relay", "gotk_relay.delivery", *LATER)
    found = {m for m in imported(path) if m.startswith(path_modules)}
    assert not found, f"{path.name} imports {sorted(found)}"


def test_the_scan_worker_takes_the_edge_checks_from_the_write_path_not_the_server() -> None:
    found = imported(ROOT / "scan_worker.py")
    assert "gotk_relay.write.edge" in found
    assert not {m for m in found if m.startswith("gotk_relay.server")}
