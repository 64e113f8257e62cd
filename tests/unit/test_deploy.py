"""What the docs and the deployment files say about the relay stays true of it. The Kubernetes
packages themselves are rendered and checked in tests/integration/test_kustomize.py."""

from __future__ import annotations

import re
from pathlib import Path

from gotk_relay.config import default_config_text, load_text

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_config_loads() -> None:
    assert load_text(default_config_text(), "<embedded default>").federate.enabled


def test_no_doc_says_the_relay_answers_429() -> None:
    # A full queue is a 503 (Prometheus retries it; it drops a 429 unless retry_on_http_429).
    claim = re.compile(r"(relay|gotk-relay) (says|answers|returns|responds) 429", re.IGNORECASE)
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "deploy").rglob("*")]
    files += list((REPO / "config").rglob("*.yml"))
    found = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in files
        if path.is_file()
        for line in path.read_text().splitlines()
        if claim.search(line)
    ]
    assert found == []
