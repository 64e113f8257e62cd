"""Bounded caches by name: what a family counts, and what /metrics shows of it."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import gotk_relay.destinations.datadog  # imported only for a datadog: destination
import gotk_relay.destinations.otlp
import gotk_relay.server  # noqa: F401 - it imports the other modules that own a family
from gotk_relay import caches
from gotk_relay.destinations.datadog_mapping import CounterStore
from gotk_relay.destinations.otlp_mapping.state import CounterState, MappingState
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1


def _gauges(telemetry: Telemetry) -> dict[tuple[str, str], float]:
    text = generate_latest(telemetry.registry).decode()
    return {
        (sample.name, sample.labels["cache"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("gotk_relay_cache_")
        for sample in family.samples
    }


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 60)), max_size=8))
def test_a_family_sums_its_live_caches(sizes: list[tuple[int, int]]) -> None:
    family = caches.Family("test", 7)
    held = []
    for limit, count in sizes:
        cache: caches.Bounded[int, int] = family.new(limit)
        cache.entries.update((i, i) for i in range(count))
        held.append(cache)
    assert family.entries() == sum(count for _, count in sizes)
    assert family.capacity() == sum(limit for limit, _ in sizes)
    assert sorted(len(c) for c in family.live()) == sorted(count for _, count in sizes)


def test_a_cache_no_longer_used_leaves_its_family() -> None:
    family = caches.Family("test", 7)
    kept: caches.Bounded[str, int] = family.new()
    dropped: caches.Bounded[str, int] = family.new(3)
    dropped.entries["x"] = 1
    assert (kept.limit, family.capacity(), family.entries()) == (7, 10, 1)
    del dropped
    gc.collect()
    assert family.live() == [kept] and family.capacity() == 7 and family.entries() == 0


def test_family_gives_one_family_per_name() -> None:
    first = caches.family("test-once", 5)
    assert caches.family("test-once", 9) is first and first.limit == 5
    del caches.FAMILIES["test-once"]


@pytest.mark.parametrize(
    "name",
    _NAMES := [
        "rw1_labels",
        "rw1_label_fields",
        "picked_labels",
        "picked_label_bytes",
        "relabel",
        "selectors",
        "datadog_label_sets",
        "otlp_label_sets",
        "datadog_counters",
        "otlp_streams",
    ],
    ids=_NAMES,
)
def test_metrics_show_each_cache_family(name: str) -> None:
    telemetry = Telemetry()
    family = caches.FAMILIES[name]
    gauges = _gauges(telemetry)
    assert gauges[("gotk_relay_cache_entries", name)] == family.entries()
    assert gauges[("gotk_relay_cache_limit", name)] == family.capacity()


def test_the_encoders_label_cache_on_metrics_follows_what_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    telemetry = Telemetry()
    monkeypatch.setattr(rw1.LABELS_CACHE, "limit", 4)
    for i in range(10):
        rw1.encode(Batch((Series((("__name__", f"cache_metric_{i}"),), (Sample(1.0, 1),)),)))
    gauges = _gauges(telemetry)
    assert gauges[("gotk_relay_cache_limit", "rw1_labels")] == 4
    assert 0 < gauges[("gotk_relay_cache_entries", "rw1_labels")] <= 4
    assert gauges[("gotk_relay_cache_entries", "rw1_labels")] == len(rw1.LABELS_CACHE)


NOW_MS = 1_800_000_000_000  # a timestamp field of rw1.STAMP_FIELD_LEN bytes, as the pieces assume


def test_the_encoders_label_field_cache_stays_in_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each (name, value) the series pieces are cut from (the Flux outputs' encoder) is kept,
    oldest dropped first, and the pieces read from it are the fields rw1 writes."""
    telemetry = Telemetry()
    monkeypatch.setattr(rw1.FIELDS_CACHE, "limit", 4)
    for i in range(10):
        labels = (("__name__", "pieces_metric"), ("name", f"object-{i}"))
        pieces = rw1.series_pieces([labels], [1.0])
        assert pieces is not None
        assert b"".join(pieces[0]) + rw1.timestamp_field(NOW_MS) == rw1.encode(
            Batch((Series(labels, (Sample(1.0, NOW_MS),)),))
        )
        assert len(rw1.FIELDS_CACHE) <= 4
    gauges = _gauges(telemetry)
    assert gauges[("gotk_relay_cache_limit", "rw1_label_fields")] == 4
    assert gauges[("gotk_relay_cache_entries", "rw1_label_fields")] == len(rw1.FIELDS_CACHE)
    assert ("name", "object-9") in rw1.FIELDS_CACHE.entries


@given(
    limit=st.integers(1, 40),
    keys=st.lists(st.integers(0, 60), max_size=300),
)
def test_a_full_cache_drops_its_oldest_slice_never_all(limit: int, keys: list[int]) -> None:
    """The owner's pattern (make room on a miss, then add): never above the limit, what is
    kept is the newest insertions in order, and a full cache keeps all but a slice."""
    cache: caches.Bounded[int, int] = caches.Family("test", limit).new()
    inserted: list[int] = []  # insertion order of what the cache was given
    for key in keys:
        if key in cache.entries:
            continue  # a hit: no bookkeeping
        before = len(cache)
        dropped = cache.make_room()
        assert dropped == inserted[: len(dropped)]  # the oldest, in order
        del inserted[: len(dropped)]
        if before < limit:
            assert dropped == []
        else:
            assert len(dropped) == max(1, limit // caches.SLICE) < limit or limit == 1
        cache.entries[key] = key
        inserted.append(key)
        assert len(cache) <= limit
        assert list(cache.entries) == inserted


def test_make_room_after_the_limit_was_lowered_comes_back_under_it() -> None:
    cache: caches.Bounded[int, int] = caches.Family("test", 100).new()
    cache.entries.update((i, i) for i in range(100))
    cache.limit = 10
    dropped = cache.make_room()
    assert dropped == list(range(91)) and list(cache.entries) == list(range(91, 100))


def test_a_saturating_bound_learns_to_its_limit_and_empties_once_an_interval() -> None:
    """Below the limit a memo learns; at it, it stops; a full memo is emptied an interval
    after it was first found full (or last emptied), not before, and a clock that went back
    starts the interval again; its owner hears once each time it turns full (its log line);
    its family counts it while it lives."""
    family = caches.Family("test", 3)
    bound = family.saturating(interval=10.0)
    held = [1, 2]
    bound.watch(lambda: len(held))
    assert bound.learns(2) and not bound.learns(3)
    assert (family.entries(), family.capacity()) == (2, 3)
    assert not bound.empties(2, 100.0)  # not full
    assert not bound.turned_full() and not bound.full
    assert not bound.empties(3, 100.0)  # found full now: the interval starts
    assert bound.full and bound.turned_full() and not bound.turned_full()  # told once
    assert not bound.empties(3, 109.9)
    assert not bound.turned_full()
    assert bound.empties(3, 110.0)
    assert not bound.full and not bound.turned_full()
    assert not bound.empties(3, 115.0)  # refilled: it turned full again
    assert bound.turned_full()
    assert not bound.empties(3, 50.0)  # the clock went back: counted from here
    assert not bound.empties(3, 59.0)
    assert bound.empties(3, 60.0)
    del bound
    gc.collect()
    assert family.bounds() == [] and family.capacity() == 0


def _commit(state: CounterStore | MappingState, keys: list[str]) -> None:
    if isinstance(state, CounterStore):
        state.commit_keys([(key.encode(), (1_000, 1.0)) for key in keys], now=1.0)
    else:
        state.commit({("counter", key, ()): CounterState(0, 1_000, 1.0) for key in keys})


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("datadog_counters", lambda: CounterStore(max_series=2)),
        ("otlp_streams", lambda: MappingState(max_streams=2)),
    ],
    ids=["datadog", "otlp"],
)
def test_a_destinations_state_is_shown_while_it_lives(name: str, make: object) -> None:
    """The Datadog destinations' counter state and the OTLP destinations' streams are bounded
    by their own rule (the least recently committed go first), and shown as the caches are:
    entries and limit summed over destinations, a destination's leaving with it."""
    telemetry = Telemetry()
    gc.collect()
    before = _gauges(telemetry)
    state = make()  # type: ignore[operator]
    _commit(state, ["a", "b", "c"])  # one over its bound
    during = _gauges(telemetry)
    assert during[("gotk_relay_cache_limit", name)] == before[("gotk_relay_cache_limit", name)] + 2
    assert (
        during[("gotk_relay_cache_entries", name)] == before[("gotk_relay_cache_entries", name)] + 2
    )
    del state
    assert _gauges(telemetry) == before
