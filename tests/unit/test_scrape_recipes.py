"""Every relay config in docs/scrape.md loads as check-config loads it, and scrapes something."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gotk_relay.config import load_text

PAGE = Path(__file__).resolve().parents[2] / "docs" / "scrape.md"
BLOCK = re.compile(r"```yaml\n# recipe: (?P<name>[\w-]+)\n(?P<body>.*?)```", re.DOTALL)


def _recipes() -> list[tuple[str, str]]:
    return [(m["name"], m["body"]) for m in BLOCK.finditer(PAGE.read_text())]


def test_the_page_has_the_datadog_only_recipe() -> None:
    assert {"datadog-only", "agent-federate-no-prometheus"} <= {n for n, _ in _recipes()}


@pytest.mark.parametrize(("name", "body"), _recipes(), ids=[n for n, _ in _recipes()])
def test_recipe_loads_and_scrapes(name: str, body: str) -> None:
    env_line = re.search(r"^# env: (.+)$", body, re.MULTILINE)
    environ = {var.strip(): "x" for var in env_line.group(1).split(",")} if env_line else {}
    config = load_text(body, f"docs/scrape.md#{name}", environ)
    assert config.scrape_configs
    assert config.destinations() or config.federate.enabled
