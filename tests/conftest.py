import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Shared helpers live in tests/support, imported as ``tests.support.<module>``: the repository's
# root is on pytest's ``pythonpath`` (pyproject.toml), as it is for ``python -m bench.run``.

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE. `ci` (scripts/test sets it) is hypothesis's
# defaults plus each test's own example count: the full search. It sets no deadline: the
# properties run beside each other and beside real processes, and how fast a conversion or a
# rule runs is the benchmark's to measure (bench/), not a test's. `dev`, the default, runs at most
# DEV_EXAMPLES examples per property, so `pytest -m "not slow"` stays a quick signal.
DEV_EXAMPLES = 20
settings.register_profile("ci", deadline=None)
settings.register_profile("dev", max_examples=DEV_EXAMPLES, deadline=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)

# Suites that start real processes (Prometheus, vmagent, VictoriaMetrics, the relay, the
# benchmark) take seconds per test: `pytest -m "not slow"` leaves them out for a quick signal.
_TESTS = Path(__file__).parent
_MARKS_BY_DIR = {
    _TESTS / "e2e": ("e2e", "slow"),
    _TESTS / "faults": ("faults", "slow"),
    _TESTS / "bench": ("slow",),
}


# How scripts/test runs the suite. First everything not marked `alone`, on three pytest-xdist
# workers on two cores (`-n 3 --dist loadgroup`):
# - the unit tests and the integration modules whose relays run in the test's own process
#   (_IN_PROCESS): spread over the workers, CPU-bound, nothing timed;
# - the tests that start real processes and only wait on them, with deadlines many times what
#   the work needs: one after another on one worker (the group "processes",
#   pytest_xdist_make_scheduler below), so that two of them never share the machine, beside the
#   CPU-bound ones;
# - the outage tests (62 s outages at 500 samples/s, little CPU): a group of their own, so that
#   the module's outage runs once.
# Then the tests marked `alone`, one at a time on an otherwise quiet machine: they assert wall
# time, RSS, the event loop or throughput, or load the machine themselves. A neighbour on the
# other core would skew what they assert.
_IN_PROCESS_DIRS = (_TESTS / "unit",)
_IN_PROCESS_MODULES = frozenset(
    f"test_{name}.py"
    for name in (
        "cache_metrics",
        "delivery",
        "fastpath_relay",
        "flux_flip_scale",
        "flux_restart",
        "label_set_memo_warning",
        "limits",
        "otlp",
        "pipeline_relay",
        "poison",
        "receiver",
        "remote_write_keys",
        "spool_relay",
        "strict_corpus",
    )
)
_GROUPS = {_TESTS / "faults" / "test_outage.py": "outage"}


def _group(path: Path) -> str | None:
    """The group of a test that may run beside others: None for the in-process ones."""
    if any(d in path.parents for d in _IN_PROCESS_DIRS):
        return None
    if path.parent == _TESTS / "integration" and path.name in _IN_PROCESS_MODULES:
        return None
    return _GROUPS.get(path, "processes")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` (scripts/test), on the controller: each test is a unit of work of its
    own, except that a group's tests (_group) go to one worker, one after another.

    Grouped by path here, not by xdist's ``xdist_group`` marker: pytest-xdist 3.8 marks a group
    by renaming each item's ``_nodeid``, which pytest 9.2 no longer reads, so its groups are
    silently spread over every worker."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            group = _group(_TESTS.parent / nodeid.split("::", 1)[0])
            return nodeid if group is None else f"group:{group}"

    return ByGroup(config, log)


def _cap_examples(item: pytest.Item) -> None:
    """Under `dev`, cap a test's own ``@settings(max_examples=N)`` too.

    Hypothesis lets a test's explicit settings override the profile; the settings a ``@given``
    test runs with are the object it keeps on the test function, replaced here by a copy with
    fewer examples (the rest unchanged).
    """
    test = getattr(item, "obj", None)
    own = getattr(test, "_hypothesis_internal_use_settings", None)
    if isinstance(own, settings) and own.max_examples > DEV_EXAMPLES:
        test._hypothesis_internal_use_settings = settings(own, max_examples=DEV_EXAMPLES)  # type: ignore[union-attr]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(item.path).parents
        for directory, marks in _MARKS_BY_DIR.items():
            if directory in parents:
                for mark in marks:
                    item.add_marker(getattr(pytest.mark, mark))
        if item.get_closest_marker("alone") is None:
            item.add_marker(pytest.mark.parallel)
        if PROFILE == "dev":
            _cap_examples(item)


# -- the fault scenarios' accounting lines ---------------------------------------------------
# Each scenario of tests/faults prints one line (acked, delivered, lost, ...), repeated in the
# terminal summary, passed or failed, since the figures matter as much as the verdict. Under
# pytest-xdist a worker's lines reach the controller, which prints the summary, in its
# ``workeroutput``. The scenarios and their loader are in tests/support (fault_scenarios,
# fault_load), which bench/faults.py runs too.
_FAULT_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a scenario line now and list it again in the terminal summary."""
    lines = request.config.stash.setdefault(_FAULT_LINES, [])

    def add(line: str) -> None:
        print(line)
        lines.append(line)

    return add


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["fault_lines"] = session.config.stash.get(_FAULT_LINES, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist, on the controller: a worker ended; keep its scenario lines for the summary."""
    lines = getattr(node, "workeroutput", {}).get("fault_lines", [])
    node.config.stash.setdefault(_FAULT_LINES, []).extend(lines)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_FAULT_LINES, [])
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.write_line(line)
