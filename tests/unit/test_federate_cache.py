"""Memoized selectors answer exactly as the uncached ones did, and their memos stay bounded."""

from __future__ import annotations

import asyncio
import math
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import promql_parser
import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay import selectors
from gotk_relay.destinations import federate
from gotk_relay.destinations.federate import FederateStore, Snapshot
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Labels,
    Metadata,
    MetricType,
    Sample,
    Series,
    is_stale,
)
from gotk_relay.selectors import SelectorError, memoize, parse_selector, parse_selectors


def _equal(want: str, equal: bool) -> Callable[[str], bool]:
    return lambda actual: (actual == want) is equal


def _matches(regex: Any, match: bool) -> Callable[[str], bool]:
    return lambda actual: (regex.match(actual) is not None) is match


def _reference(texts: Sequence[str]) -> Callable[[Labels], bool]:
    """The selectors as they were evaluated before memoization: a dict, a re2 match per label."""
    compiled: list[list[tuple[str, Callable[[str], bool]]]] = []
    for text in texts:
        expr = promql_parser.parse(text)
        checks: list[tuple[str, Callable[[str], bool]]] = []
        assert isinstance(expr, promql_parser.VectorSelector), text
        if expr.name:
            checks.append(("__name__", _equal(expr.name, True)))
        for m in expr.matchers.matchers:
            op, value = str(m.op), m.value
            regex = re2.compile(f"^(?:{value})$")
            if op in ("MatchOp.Equal", "="):
                checks.append((m.name, _equal(value, True)))
            elif op in ("MatchOp.NotEqual", "!="):
                checks.append((m.name, _equal(value, False)))
            elif op in ("MatchOp.Re", "=~"):
                checks.append((m.name, _matches(regex, True)))
            else:
                checks.append((m.name, _matches(regex, False)))
        compiled.append(checks)

    def any_of(labels: Labels) -> bool:
        values = dict(labels)
        return any(
            all(check(values.get(name, "")) for name, check in checks) for checks in compiled
        )

    return any_of


SELECTOR_SETS = [
    ['{__name__=~"gotk_.*"}'],
    ["up"],
    ['up{job="x"}'],
    ['{__name__=~"gotk_.*", __name__!~"gotk_resource_.*"}'],
    ['{__name__="gotk_x", __name__=~"gotk_.*"}'],
    ['{job=~"a|b"}'],
    ['{job!~"a|", __name__!="up"}'],
    ['{job!="x", __name__=~"a.*"}'],
    ['{foo="", __name__="up"}'],
    ['{foo="", job=~"a.*"}'],
    ['{foo=~"|x", job="a"}'],
    ['{__name__=~"(?i)GOTK_.*|up"}'],
    ["up", '{__name__=~"gotk_.*"}'],
    ["up", '{job="x"}'],
    ['{foo="", __name__="up"}', '{job=~"a.*"}'],
    ['{__name__=~"gotk_.*"}', '{__name__!~".*x.*", __name__=~".+"}'],
    ['{job="a"}', '{job=~"b.*"}'],
]
NAMES = ["__name__", "job", "foo", "instance"]
VALUES = ["", "up", "x", "a", "ab", "b", "bx", "gotk_x", "gotk_", "gotk_resource_info", "Gotk_y"]

# Unsorted too, but no name twice: label sets reach selectors validated (the data model forbids
# a repeated name), which lets a leading __name__ be read without walking the other labels.
label_lists = st.lists(
    st.tuples(st.sampled_from(NAMES), st.one_of(st.sampled_from(VALUES), st.text(max_size=6))),
    max_size=6,
    unique_by=lambda label: label[0],
).map(tuple)


@pytest.mark.parametrize("texts", SELECTOR_SETS, ids=[" | ".join(t) for t in SELECTOR_SETS])
@settings(max_examples=150)
@given(st.lists(label_lists, min_size=1, max_size=20))
def test_memoized_selectors_answer_as_uncached_ones(
    texts: list[str], label_sets: list[Labels]
) -> None:
    want = _reference(texts)
    got = parse_selectors(texts)
    singles = [parse_selector(t) for t in texts]
    for _ in range(2):  # the second pass answers from the memos
        for labels in label_sets:
            expected = want(labels)
            assert got(labels) is expected
            assert any(p(labels) for p in singles) is expected


@pytest.mark.parametrize(
    ("texts", "labels", "expected"),
    [
        (['{foo="", __name__="up"}'], (("__name__", "up"),), True),
        (['{foo="", __name__="up"}'], (("__name__", "up"), ("foo", "")), True),
        (['{foo="", __name__="up"}'], (("__name__", "up"), ("foo", "1")), False),
        (['{__name__=~"gotk_.*"}'], (("__name__", "gotk_x"),), True),
        (['{__name__=~"gotk_.*"}'], (("__name__", "xgotk_x"),), False),  # anchored
        (['{__name__=~"gotk_.*"}'], (("job", "a"), ("__name__", "gotk_x")), True),  # unsorted
        (["up", '{job="x"}'], (("__name__", "down"), ("job", "x")), True),
        (['{job!~"a|"}'], (("__name__", "up"),), False),
    ],
)
def test_selector_table(texts: list[str], labels: Labels, expected: bool) -> None:
    assert parse_selectors(texts)(labels) is expected
    assert _reference(texts)(labels) is expected


@pytest.mark.parametrize(
    "text",
    ['{foo=""}', '{foo=~".*"}', "up{", "sum(up)", '{a=~"("}', "up offset 5m", "up @ 100", "up[5m]"],
)
def test_invalid_selectors_are_still_refused(text: str) -> None:
    """As Prometheus' /federate refuses them (a selector takes no modifier, no range), and
    selectors that match every series (Prometheus serves those; refused here, as PromQL
    refuses them in a query, so that a typo does not ask for the whole store)."""
    with pytest.raises(SelectorError):
        parse_selectors([text])


@pytest.mark.parametrize(
    "texts",
    [['{__name__=~"gotk_.*"}'], ['{job=~"a.*", __name__!~"x.*"}'], ["up", '{job="x"}']],
    ids=["one-regex", "two-regexes", "equalities"],
)
def test_memos_stay_bounded(monkeypatch: pytest.MonkeyPatch, texts: list[str]) -> None:
    monkeypatch.setattr(selectors.MEMOS, "limit", 16)  # for the selectors parsed below
    want = _reference(texts)
    got = parse_selectors(texts)
    for i in range(500):
        labels = (("__name__", f"gotk_{i}"), ("job", f"a{i}"))
        assert got(labels) is want(labels)
        small = [memo for memo in selectors.MEMOS.live() if memo.limit == 16]
        assert small  # every selector set above memoizes something
        assert all(len(memo) <= 16 for memo in small)


def test_memoize_recomputes_after_it_empties() -> None:
    calls: list[str] = []

    def test(value: str) -> bool:
        calls.append(value)
        return value.startswith("a")

    memoized = memoize(test, limit=3)
    assert [memoized(v) for v in ("a", "b", "a", "c")] == [True, False, True, False]
    assert calls == ["a", "b", "c"]
    memoized("d")  # full: emptied, then "d" kept
    memoized("a")
    assert calls == ["a", "b", "c", "d", "a"]


def _snapshot(store: FederateStore) -> Snapshot:
    """What ``GET /federate`` renders: the stored points and family metadata."""
    return asyncio.run(store.snapshot())


def _stored(store: FederateStore) -> dict[Labels, tuple[float, int | None]]:
    return {labels: (value, ts) for labels, value, ts in _snapshot(store).points}


def _series(name: str, *samples: Sample) -> Series:
    return Series((("__name__", name), ("job", "x")), samples)


def test_federate_update_keeps_the_newest_sample_of_matching_series() -> None:
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=2)
    refused = store.update(
        Batch(
            (
                _series("gotk_a", Sample(1.0, 10)),
                _series("gotk_b", Sample(2.0, 30), Sample(3.0, 20), Sample(4.0, 30)),
                _series("up", Sample(5.0, 10)),
                _series("gotk_c", Sample(6.0, 10), Sample(7.0, 11)),
            )
        )
    )
    assert refused == 1  # one series, gotk_c, of two samples (up is not matched)
    assert _stored(store) == {
        _series("gotk_a").labels: (1.0, 10),
        _series("gotk_b").labels: (2.0, 30),  # the first of the newest, as max() picks
    }
    store.update(Batch((_series("gotk_a", Sample(9.0, 5)),)))  # older: ignored
    assert _stored(store)[_series("gotk_a").labels] == (1.0, 10)
    store.update(Batch((_series("gotk_a", Sample(STALE_NAN, 11)),)))
    assert _series("gotk_a").labels not in _stored(store)
    store.update(Batch((_series("gotk_b", Sample(float("nan"), 31)),)))  # a NaN, not stale
    assert _stored(store)[_series("gotk_b").labels][1] == 31


def test_the_first_sample_at_a_timestamp_stays() -> None:
    """As Prometheus keeps a series' first sample at a timestamp (it refuses the others: a
    duplicate sample, or a stale marker, at that timestamp), on every path: a new tuple (the
    slow path), the very tuple again (the compiled loop), a stale marker, and the Flux rules'
    steady output (``update_outputs``, a group it knows)."""
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=10)
    known = _series("gotk_a").labels
    store.update(Batch((Series(known, (Sample(1.0, 10),)),)))
    store.update(Batch((_series("gotk_a", Sample(2.0, 10)),)))  # another tuple of it
    store.update(Batch((Series(known, (Sample(3.0, 10),)),)))  # the tuple it holds
    store.update(Batch((Series(known, (Sample(STALE_NAN, 10),)),)))
    assert _stored(store) == {known: (1.0, 10)}
    store.update(Batch((Series(known, (Sample(4.0, 11),)),)))
    assert _stored(store) == {known: (4.0, 11)}

    group: tuple[tuple[Labels, ...], tuple[Metadata, ...]] = (
        (known,),
        (Metadata(MetricType.GAUGE, "", ""),),
    )
    values = (5.0,)
    store.update_outputs([(group, values)], 12, ())  # learnt
    store.update_outputs([(group, values)], 12, ())  # known: stamped by the compiled loop
    again = (6.0,)
    store.update_outputs([(group, again)], 12, ())
    assert _stored(store) == {known: (5.0, 12)}
    store.update_outputs([(group, again)], 13, ())
    assert _stored(store) == {known: (6.0, 13)}


def test_a_series_refused_under_one_tuple_and_stored_under_another_takes_its_samples() -> None:
    """A full store refuses a series, one series is removed, the same series comes again under
    a new tuple and is stored: the tuple it was refused under then brings its samples and its
    stale marker to the stored series, not nothing (the handle said "refused, still full")."""
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=1)
    first = _series("gotk_b").labels  # the tuple the decoder hands every time
    store.update(Batch((_series("gotk_a", Sample(1.0, 0)), Series(first, (Sample(1.0, 0),)))))
    assert list(_stored(store)) == [_series("gotk_a").labels]  # gotk_b refused: full
    store.update(Batch((_series("gotk_a", Sample(STALE_NAN, 1)),)))  # room again
    store.update(Batch((_series("gotk_b", Sample(2.0, 2)),)))  # stored, under a new tuple
    store.update(Batch((Series(first, (Sample(3.0, 3),)),)))
    assert _stored(store) == {first: (3.0, 3)}
    store.update(Batch((Series(first, (Sample(STALE_NAN, 4),)),)))
    assert _stored(store) == {}


def test_a_larger_bound_lets_refused_series_in_on_both_paths() -> None:
    """A reload that raises the bound (it follows ``flux.max_objects``) keeps what is stored:
    series refused so far are stored from the next update, the Flux rules' steady outputs (a
    group known from before) and a series under the tuple it was refused under alike."""
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=1)
    names: tuple[Labels, ...] = (_series("gotk_a").labels, _series("gotk_b").labels)
    gauge = Metadata(MetricType.GAUGE, "h")
    group = (names, (gauge, gauge))
    values = (1.0, 0.0)
    assert store.update_outputs([(group, values)], 5, ()) == 1  # gotk_b refused: full
    assert store.update_outputs([(group, values)], 6, ()) == 0  # known group, nothing new
    refused = _series("gotk_c").labels
    assert store.update(Batch((Series(refused, (Sample(2.0, 6),)),))) == 1
    assert list(_stored(store)) == [names[0]]
    store.max_series = 3
    store.update_outputs([(group, values)], 7, ())
    store.update(Batch((Series(refused, (Sample(2.0, 7),)),)))
    assert _stored(store) == {names[0]: (1.0, 7), names[1]: (0.0, 7), refused: (2.0, 7)}
    store.max_series = 2  # smaller: what is stored stays, nothing new comes in
    assert len(store) == 3


class _ReferenceStore:
    """The federate store's rules with nothing cached: a dict by label set, checked each time."""

    def __init__(self, texts: list[str], max_series: int) -> None:
        self.match = _reference(texts)
        self.max_series = max_series
        self.latest: dict[Labels, tuple[float, int]] = {}
        self.families: dict[str, tuple[object, ...]] = {}
        # Refused series, oldest first, at most 4 x max_series: each counted once while remembered.
        self.refused: dict[Labels, None] = {}
        # Series a stale marker removed: the marker's timestamp (the latest TOMBSTONES).
        self.buried: dict[Labels, int] = {}

    def update(self, batch: Batch) -> int:
        refused = 0
        for series in batch.series:
            if not series.samples or not self.match(series.labels):
                continue
            newest = max(series.samples, key=lambda s: s.timestamp)
            known = self.latest.get(series.labels)
            if known is not None and known[1] >= newest.timestamp:
                continue  # the first sample at a timestamp stays
            if math.isnan(newest.value) and is_stale(newest.value):
                self.latest.pop(series.labels, None)
                if self.buried.get(series.labels, -1) < newest.timestamp:
                    self.buried.pop(series.labels, None)
                    if len(self.buried) >= federate.TOMBSTONES:
                        del self.buried[next(iter(self.buried))]
                    self.buried[series.labels] = newest.timestamp
                continue
            if known is None and series.labels in self.buried:
                if newest.timestamp <= self.buried[series.labels]:
                    continue  # not newer than the stale marker that removed it
                del self.buried[series.labels]
            if known is None and len(self.latest) >= self.max_series:
                if series.labels not in self.refused:
                    if len(self.refused) >= 4 * self.max_series:
                        del self.refused[next(iter(self.refused))]
                    self.refused[series.labels] = None
                    refused += 1
                continue
            self.refused.pop(series.labels, None)
            self.latest[series.labels] = (newest.value, newest.timestamp)
            if series.metadata is not None:
                self.families[series.name] = tuple(series.metadata)
        for family in batch.metadata:
            if family.family in self.families or len(self.families) < self.max_series:
                self.families[family.family] = tuple(family)[1:]
        return refused


_NAMES = ["gotk_a", "gotk_b", "up", "gotk_c"]
_HELPS = [None, Metadata(MetricType.GAUGE, "one"), Metadata(MetricType.GAUGE, "two")]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, len(_NAMES) - 1),
                st.booleans(),  # the same tuple object as before, or an equal new one
                st.lists(
                    st.tuples(
                        st.sampled_from([1.0, 2.0, STALE_NAN, float("nan")]), st.integers(0, 6)
                    ),
                    max_size=3,
                ),
                st.integers(0, len(_HELPS) - 1),
            ),
            max_size=6,
        ),
        max_size=8,
    ),
    st.integers(1, 4),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_federate_store_answers_as_one_without_caches(
    batches: list[list[tuple[int, bool, list[tuple[float, int]], int]]],
    max_series: int,
    with_family: list[bool],
) -> None:
    """Handles by tuple identity, stale markers, older samples, a full store, metadata changes."""
    texts = ['{__name__=~"gotk_.*"}']
    store = FederateStore(texts, max_series)
    reference = _ReferenceStore(texts, max_series)
    shared = {name: (("__name__", name), ("job", "x")) for name in _NAMES}
    for number, rows in enumerate(batches):
        items = []
        for index, same, samples, help_index in rows:
            name = _NAMES[index]
            labels = shared[name] if same else tuple(list(shared[name]))
            items.append(
                Series(labels, tuple(Sample(v, t) for v, t in samples), metadata=_HELPS[help_index])
            )
        # A v1 request's own metadata for gotk_a, applied after its series.
        family = (
            (FamilyMetadata("gotk_a", MetricType.COUNTER, "v1"),) if with_family[number] else ()
        )
        batch = Batch(tuple(items), family)
        assert store.update(batch) == reference.update(batch)
        got = _stored(store)
        assert got.keys() == reference.latest.keys()
        for labels, (value, ts) in reference.latest.items():
            assert got[labels][1] == ts
            assert math.isnan(value) if math.isnan(got[labels][0]) else got[labels][0] == value
        families = _snapshot(store).metadata
        assert {k: tuple(v)[1:] for k, v in families.items()} == reference.families


def test_handles_on_tuples_seen_once_stay_bounded() -> None:
    """A decoder that makes new label tuples for every request (the general path) must not
    make the store keep every tuple it was ever handed alive: its memory stops growing."""
    store = FederateStore(['{__name__=~"gotk_.*"}'], 100_000)

    def rounds(first: int, last: int) -> None:
        for ts in range(first, last):
            items = tuple(
                Series((("__name__", "gotk_x"), ("name", str(i))), (Sample(1.0, ts),))
                for i in range(50)
            )
            store.update(Batch(items))

    tracemalloc.start()
    try:
        rounds(1, 60)  # past the point where old handles are dropped (~2 x 50 + 1024)
        settled = tracemalloc.get_traced_memory()[0]
        rounds(60, 400)  # 17,000 more tuples: ~3 MB if each stayed alive
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert len(store) == 50
    assert grown < 1_000_000
