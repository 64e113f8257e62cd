"""After a stale marker, ``/federate`` holds a series as Prometheus' head does: a sample not
newer than the marker does not bring it back (Prometheus refuses it, out of order or a
duplicate at that timestamp), a newer one does. The store remembers the latest
``federate.TOMBSTONES`` removals; older ones are forgotten.
"""

from __future__ import annotations

import asyncio
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations import federate
from gotk_relay.destinations.federate import FederateStore
from gotk_relay.model import STALE_NAN, Batch, Labels, Sample, Series, is_stale

MATCH = ['{__name__=~"gotk_.*"}']


def _stored(store: FederateStore) -> dict[Labels, tuple[float, int | None]]:
    return {labels: (value, ts) for labels, value, ts in asyncio.run(store.snapshot()).points}


def _labels(name: str, index: int = 0) -> Labels:
    return (("__name__", name), ("i", str(index)))


def test_a_sample_not_newer_than_the_stale_marker_does_not_bring_the_series_back() -> None:
    store = FederateStore(MATCH, max_series=10)
    known = _labels("gotk_a")
    store.update(Batch((Series(known, (Sample(1.0, 100),)),)))
    store.update(Batch((Series(known, (Sample(STALE_NAN, 200),)),)))
    assert _stored(store) == {}
    # The tuple it held (its handle) and a new tuple of it (the selectors' path) alike.
    store.update(Batch((Series(known, (Sample(2.0, 150),)),)))
    store.update(Batch((Series(_labels("gotk_a"), (Sample(3.0, 200),)),)))
    assert _stored(store) == {}
    store.update(Batch((Series(known, (Sample(4.0, 201),)),)))
    assert _stored(store) == {known: (4.0, 201)}
    # Removed again, later: the newer marker is the one an older sample is judged by.
    store.update(Batch((Series(known, (Sample(STALE_NAN, 300),)),)))
    store.update(Batch((Series(known, (Sample(5.0, 250),)),)))
    assert _stored(store) == {}


def test_a_stale_marker_for_a_series_not_held_buries_it_too() -> None:
    """Prometheus appends the marker whether or not the series had samples: older ones are
    refused after it."""
    store = FederateStore(MATCH, max_series=10)
    labels = _labels("gotk_b")
    store.update(Batch((Series(labels, (Sample(STALE_NAN, 500),)),)))
    store.update(Batch((Series(labels, (Sample(1.0, 400),)),)))
    assert _stored(store) == {}
    store.update(Batch((Series(labels, (Sample(1.0, 501),)),)))
    assert _stored(store) == {labels: (1.0, 501)}


def test_a_stale_marker_for_a_series_refused_while_full_buries_it() -> None:
    """A full store refuses a series; its stale marker still counts once room is made."""
    store = FederateStore(MATCH, max_series=1)
    held, refused = _labels("gotk_e", 0), _labels("gotk_e", 1)
    assert store.update(Batch((Series(held, (Sample(1.0, 10),)),))) == 0
    assert store.update(Batch((Series(refused, (Sample(1.0, 10),)),))) == 1
    store.update(Batch((Series(_labels("gotk_e", 1), (Sample(STALE_NAN, 20),)),)))  # a new tuple
    store.update(Batch((Series(refused, (Sample(STALE_NAN, 30),)),)))  # the tuple it refused
    store.update(Batch((Series(held, (Sample(STALE_NAN, 40),)),)))  # room made
    store.update(Batch((Series(refused, (Sample(2.0, 25),)),)))
    assert _stored(store) == {}
    store.update(Batch((Series(refused, (Sample(3.0, 31),)),)))
    assert _stored(store) == {refused: (3.0, 31)}


def test_the_store_remembers_the_latest_removals_only() -> None:
    store = FederateStore(MATCH, max_series=federate.TOMBSTONES + 10)
    count = federate.TOMBSTONES + 1
    every = [_labels("gotk_c", i) for i in range(count)]
    store.update(Batch(tuple(Series(labels, (Sample(1.0, 10),)) for labels in every)))
    store.update(Batch(tuple(Series(labels, (Sample(STALE_NAN, 20),)) for labels in every)))
    first, last = every[0], every[-1]
    store.update(Batch((Series(first, (Sample(2.0, 15),)), Series(last, (Sample(2.0, 15),)))))
    # The oldest removal was forgotten: its older sample is taken, as a store without it would.
    assert _stored(store) == {first: (2.0, 15)}


# A series' writes: (which series, timestamp step, a value or a stale marker, a new tuple).
writes = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(-2, 3),
        st.sampled_from([1.0, 2.0, STALE_NAN]),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(writes, st.integers(1, 4))
def test_the_store_holds_what_prometheus_head_would_serve(
    script: list[tuple[int, int, float, bool]], per_batch: int
) -> None:
    """The reference: per series the last sample taken, a sample taken only when newer than
    it (a stale marker included); a series is served while that sample is not a marker."""
    store = FederateStore(MATCH, max_series=10)
    tuples = [_labels("gotk_d", i) for i in range(3)]
    head: dict[int, tuple[int, float]] = {}
    clock = [100, 100, 100]
    batch: list[Series] = []
    for index, step, value, fresh in script:
        clock[index] += step * 10
        ts = clock[index]
        labels = _labels("gotk_d", index) if fresh else tuples[index]
        batch.append(Series(labels, (Sample(value, ts),)))
        last = head.get(index)
        if last is None or ts > last[0]:
            head[index] = (ts, value)
        if len(batch) == per_batch:
            store.update(Batch(tuple(batch)))
            batch = []
    store.update(Batch(tuple(batch)))
    expected = {
        tuples[index]: (value, ts)
        for index, (ts, value) in head.items()
        if not (math.isnan(value) and is_stale(value))
    }
    assert _stored(store) == expected
