"""Every relay config in docs/recipes.md passes check-config, so the recipes cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.server import CONTROLLER_PAGE, KSM_PAGE

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
BLOCK = re.compile(r"```yaml\n# recipe: (?P<name>[\w-]+)\n(?P<body>.*?)```", re.DOTALL)


def _recipes() -> list[tuple[str, str]]:
    return [(m["name"], m["body"]) for m in BLOCK.finditer(RECIPES.read_text())]


def test_the_page_has_every_recipe_the_issue_asks_for() -> None:
    names = {name for name, _ in _recipes()}
    assert {
        "mimir",
        "grafana-cloud",
        "victoriametrics",
        "thanos",
        "datadog",
        "datadog-agent-federate",
        "datadog-flux-integration",
        "otlp",
        "flux-operator",
    } <= names


@pytest.mark.parametrize(("name", "body"), _recipes(), ids=[n for n, _ in _recipes()])
def test_recipe_passes_check_config(name: str, body: str) -> None:
    env_line = re.search(r"^# env: (.+)$", body, re.MULTILINE)
    environ = {var.strip(): "x" for var in env_line.group(1).split(",")} if env_line else {}
    config = load_text(body, f"docs/recipes.md#{name}", environ)
    assert config.destinations() or config.federate.enabled


def test_the_agent_check_config_gives_each_endpoint_its_own_flux_page() -> None:
    """The check keeps its scrapers by URL: one URL for both options loses one of them."""
    block = RECIPES.read_text().split("# not-a-relay-config\n", 1)[1].split("```", 1)[0]
    check = yaml.safe_load(block)["instances"][0]
    assert check["openmetrics_endpoint"].endswith(":9201" + CONTROLLER_PAGE)
    assert check["kube_state_metrics_endpoint"].endswith(":9201" + KSM_PAGE)
