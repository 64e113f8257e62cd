"""The hypothesis profiles of tests/conftest.py: `dev` caps even a test's own example count, so
`pytest -m "not slow"` stays quick; `ci` (scripts/test) runs each test's own count."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DEV_EXAMPLES, PROFILE

_RUNS: list[int] = []


@settings(max_examples=300, database=None)
@given(st.integers())
def test_examples_run_under_the_active_profile(value: int) -> None:
    _RUNS.append(value)


def test_the_profile_decided_how_many_examples_ran() -> None:
    """The property above, run again here (so that no worker's test order matters): under `dev`
    at most the cap, under `ci` more than the cap (the test asks for 300; hypothesis may stop
    early only once it has tried every value, which integers never exhaust). Collection capped
    the function itself under `dev` (tests/conftest.py), so a direct call runs as pytest's."""
    _RUNS.clear()
    test_examples_run_under_the_active_profile()
    assert _RUNS
    if PROFILE == "dev":
        assert len(_RUNS) <= DEV_EXAMPLES
    else:
        assert len(_RUNS) > DEV_EXAMPLES
