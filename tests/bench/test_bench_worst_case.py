"""``bench/worst_case.py`` runs every shape and reports every size. Never speed.

The machine is shared and ``--quick`` times each shape at its two smallest sizes only, so no
timing or growth ratio is asserted: only that the run completes, prints each shape's rows and
its growth line, and writes the JSON with the shapes and sizes asked for.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.worst_case import SHAPES

REPO = Path(__file__).resolve().parents[2]


def run_worst_case(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.worst_case`` with ``argv``, from the repository's root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "bench.worst_case", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quick_run_reports_every_shape_and_size(tmp_path: Path) -> None:
    out = tmp_path / "worst_case.json"
    done = run_worst_case("--quick", "--json", str(out))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    stdout = done.stdout
    assert stdout.splitlines()[0].split()[:4] == ["shape", "size", "ms", "×growth"]
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["quick"] is True
    assert list(report["shapes"]) == list(SHAPES)
    for name, (unit, sizes) in SHAPES.items():
        result = report["shapes"][name]
        assert result["unit"] == unit
        assert result["sizes"] == list(sizes[:2]), name
        assert [row["size"] for row in result["rows"]] == list(sizes[:2]), name
        for row in result["rows"]:
            assert isinstance(row["ms"], float), (name, row)
        assert result["rows"][0]["growth"] is None
        assert isinstance(result["rows"][1]["growth"], float)
        for size in sizes[:2]:
            line = rf"^{re.escape(name)}\s+{re.escape(unit)}={size}\s+[\d.]+\s"
            assert re.search(line, stdout, re.MULTILINE), f"no row for {name} {size}:\n{stdout}"
        growth = rf"^{re.escape(name)}\s+growth per doubling: ×[\d.]+ \(max\)$"
        assert re.search(growth, stdout, re.MULTILINE), f"no growth line for {name}:\n{stdout}"
    # The shapes with a baseline time it beside their own figure.
    for name in ("survey", "v2-collisions"):
        assert all(row["baseline_ms"] is not None for row in report["shapes"][name]["rows"])
    # v2-symbols' requests pass receiver.max_decompressed_bytes once resolved: refused.
    assert all(row["note"].startswith("413") for row in report["shapes"]["v2-symbols"]["rows"])


def test_an_unknown_shape_is_refused() -> None:
    done = run_worst_case("--shapes", "survey,quadratic")
    assert done.returncode == 2
    assert "unknown shape(s) ['quadratic']" in done.stderr
