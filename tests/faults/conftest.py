"""Fault-suite fixtures: collect each scenario's accounting line for the terminal summary.

The lines are printed by the tests too (visible with ``-s``) and repeated in assertion
messages; the summary shows them for a plain ``pytest tests/faults`` run, passed or failed,
since the figures matter as much as the verdict. The scenarios and their loader are in
``tests/support`` (``fault_scenarios``, ``fault_load``), which ``bench/faults.py`` runs too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a scenario line now and list it again in the terminal summary."""
    lines = request.config.stash.setdefault(_LINES, [])

    def add(line: str) -> None:
        print(line)
        lines.append(line)

    return add


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.write_line(line)
