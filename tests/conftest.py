import os
from pathlib import Path

import pytest
from hypothesis import settings

# Shared helpers live in tests/support, imported as ``tests.support.<module>``: the repository's
# root is on pytest's ``pythonpath`` (pyproject.toml), as it is for ``python -m bench.run``.

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE. `ci` (scripts/test sets it) is hypothesis's
# defaults plus each test's own example count: the full search. `dev`, the default, runs at most
# DEV_EXAMPLES examples per property, so `pytest -m "not slow"` stays a quick signal.
DEV_EXAMPLES = 20
settings.register_profile("ci")
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


# What may run beside another test (scripts/test runs these on two cores, pytest-xdist, then the
# rest one at a time): the unit tests, and the integration modules whose relays run in the test's
# own process, that start no process and bound no time or memory of their own. Anything that
# starts real processes, measures wall time, RSS or the event loop, or binds fixed resources stays
# out: a neighbour on the other core would skew what it asserts.
_PARALLEL_DIRS = (_TESTS / "unit",)
_PARALLEL_MODULES = frozenset(
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


# The outage tests wait out a 62 s outage at 500 samples/s: their relays need little CPU and
# nothing they assert is timed (the drain wait is 30 s), so the wait overlaps the unit tests.
_PARALLEL_FILES = frozenset({_TESTS / "faults" / "test_outage.py"})


def _parallel(path: Path) -> bool:
    if path in _PARALLEL_FILES or any(d in path.parents for d in _PARALLEL_DIRS):
        return True
    return path.parent == _TESTS / "integration" and path.name in _PARALLEL_MODULES


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
        if _parallel(Path(item.path)):
            item.add_marker(pytest.mark.parallel)
        if PROFILE == "dev":
            _cap_examples(item)
