"""datadog_mapping.CounterStore: the state counters' deltas are computed from. A commit never
goes back in time, the least recently committed series go first beyond ``max_series``, a series
not committed for ``ttl`` seconds is forgotten; the compiled commit of a request's rows
(``datadog_commit``) and its Python twin keep the same state."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay.destinations.datadog_mapping import CounterStore, counter_key
from gotk_relay.destinations.rows import COMPILED, PYTHON, Loops

IMPLEMENTATIONS: dict[str, Loops | None] = {"python": PYTHON, "compiled": COMPILED}


@pytest.fixture(params=list(IMPLEMENTATIONS), ids=list(IMPLEMENTATIONS))
def loops(request: pytest.FixtureRequest) -> Loops:
    found = IMPLEMENTATIONS[request.param]
    if found is None:
        pytest.skip("the _rows extension is not built")
    return found


def _labels(index: int) -> tuple[tuple[str, str], ...]:
    return (("__name__", "c_total"), ("pod", f"p{index}"))


def _row(index: int, final: tuple[int, float] | None) -> list[Any]:
    """A mapped row as the mapping makes it: key, ..., final mark (index 7), ..."""
    return [counter_key(_labels(index)), "c.total", 1, (), "", [], [], final, 0, None]


# A request: rows of (series, final mark or None); ``now`` rises with each request.
REQUESTS = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 7),
            st.one_of(st.none(), st.tuples(st.integers(0, 6), st.floats(0, 100))),
        ),
        max_size=8,
    ),
    max_size=8,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=REQUESTS, max_series=st.integers(1, 6))
def test_commits_keep_the_newest_mark_of_the_most_recent_series(
    loops: Loops, requests: list[list[tuple[int, tuple[int, float] | None]]], max_series: int
) -> None:
    store = CounterStore(max_series=max_series)
    model: dict[int, tuple[int, float, float]] = {}  # least recently committed first
    for now, request in enumerate(requests):
        store.commit_rows([_row(i, final) for i, final in request], float(now), loops)
        for i, final in request:
            if final is None:
                continue
            kept = model.pop(i, None)
            ts, value = (kept[0], kept[1]) if kept and kept[0] > final[0] else final
            model[i] = (ts, value, float(now))
        while len(model) > max_series:
            del model[next(iter(model))]
    assert list(store._marks.items()) == [
        (counter_key(_labels(i)), mark) for i, mark in model.items()
    ]
    for i in range(8):
        want = model.get(i)
        assert store.get(_labels(i)) == (None if want is None else want[:2])


def test_a_series_not_committed_for_the_ttl_is_forgotten() -> None:
    store = CounterStore(ttl=60.0)
    for i in range(5):
        store.commit(_labels(i), (1000, 1.0), now=100.0 + i)
    store.commit(_labels(0), (2000, 2.0), now=200.0)  # committed again: the most recent now
    assert store.expire(now=163.5) == 3  # p1, p2, p3 last committed before 103.5
    assert [store.get(_labels(i)) for i in range(5)] == [(2000, 2.0), None, None, None, (1000, 1.0)]
    assert store.expire(now=163.5) == 0
    assert len(store) == 2


def test_a_mark_as_new_as_the_kept_one_replaces_it(loops: Loops) -> None:
    store = CounterStore()
    store.commit_rows([_row(0, (5000, 1.0)), _row(1, (5000, 1.0))], 1.0, loops)
    store.commit_rows([_row(0, (5000, 2.0)), _row(1, (4000, 9.0))], 2.0, loops)
    assert store.get(_labels(0)) == (5000, 2.0)  # the same time: the later commit's value
    assert store.get(_labels(1)) == (5000, 1.0)  # older: the kept mark stays
