"""The rules' layout (issue 18): rules/ does not import the wire format, and the Flux package's
modules each import only those before them, so they read top-down without cycles."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from test_write_layout import imported

import gotk_relay.rules

RULES: Final = Path(gotk_relay.rules.__file__).resolve().parent
# The Flux package's modules in the order they build on each other (package docstring).
ORDER: Final = ("names", "config", "stats", "state", "classify", "emitter", "rewriter")


@pytest.mark.parametrize(
    "path", sorted(RULES.rglob("*.py")), ids=lambda p: str(p.relative_to(RULES))
)
def test_rules_do_not_import_the_wire_format(path: Path) -> None:
    wire = {m for m in imported(path) if m.startswith("gotk_relay.wire")}
    assert not wire, f"{path.name} imports {sorted(wire)}"


@pytest.mark.parametrize("name", ORDER)
def test_flux_modules_import_only_those_before_them(name: str) -> None:
    siblings = {
        m.removeprefix("gotk_relay.rules.flux.").split(".")[0]
        for m in imported(RULES / "flux" / f"{name}.py")
        if m.startswith("gotk_relay.rules.flux.")
    }
    assert siblings <= set(ORDER[: ORDER.index(name)]), f"{name} imports {sorted(siblings)}"


def test_every_flux_module_has_its_place() -> None:
    modules = {p.stem for p in (RULES / "flux").glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)
