"""``FederateStore.stream`` (what GET /federate sends) is byte for byte the text the reference
renderer (``FederateStore.render``: every series matched, sorted and formatted at once) gives for
the same store, whatever the writes, stale markers, metadata, selectors and piece size; and a
refused series is counted once and costs no selector once refused."""

from __future__ import annotations

import asyncio
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations.federate import KEPT_INDEXES, FederateStore, _entries_of
from gotk_relay.model import STALE_NAN, Batch, FamilyMetadata, Labels, MetricType, Sample, Series
from gotk_relay.selectors import parse_selectors

NAMES: Final = ["a", "b_total", "b", "h_bucket", "h_sum", "h_count", "h", "gotk_x", "s"]
FAMILIES: Final = [
    FamilyMetadata("h", MetricType.HISTOGRAM, 'a "histogram"\nwith \\ in its help'),
    FamilyMetadata("b", MetricType.COUNTER, "a counter"),
    FamilyMetadata("s", MetricType.SUMMARY, ""),
    FamilyMetadata("gotk_x", MetricType.GAUGE, "ü"),
    FamilyMetadata("a", MetricType.INFO, "named as a family that never writes its name"),
]
# Selector sets: by name (the name index), by label equality (the label index), both, neither.
MATCHES: Final = [
    [],
    ["a"],
    ['{__name__="h_bucket"}', "s", "nothing"],
    ['{l="1"}'],
    ['h_bucket{l="2"}', '{__name__="a", m="x"}'],
    ['{l="1", m="y"}', '{m="x"}'],
    ['{__name__=~"h.*"}'],
    ['{l=~"1|2"}', "b"],
    ['{A="z"}'],
    ['{__name__="a", l="1"}', '{__name__=~"b.*", l="2"}'],
]
VALUES: Final = st.sampled_from(["0", "1", "2", 'q"uote', "back\\slash", "new\nline", "é"])
LABELS: Final = st.builds(
    lambda name, value, m, upper: (
        *((("A", upper),) if upper else ()),  # a label sorting before __name__
        ("__name__", name),
        ("l", value),
        *((("m", m),) if m else ()),
    ),
    st.sampled_from(NAMES),
    VALUES,
    st.sampled_from(["", "x", "y"]),
    st.sampled_from(["", "z"]),
)
VALUE: Final = st.sampled_from(
    [0.0, -0.0, 1.0, 0.5, 1e21, 123456789.0, float("inf"), float("-inf"), float("nan"), STALE_NAN]
)
# A step: series written (labels, value, timestamp), and whether v1 metadata comes with them.
STEPS: Final = st.lists(
    st.tuples(st.lists(st.tuples(LABELS, VALUE, st.integers(0, 5)), max_size=12), st.booleans()),
    min_size=1,
    max_size=6,
)


async def _streamed(store: FederateStore, matches: list[str], chunk: int) -> str:
    pieces = [piece async for piece in store.stream(store.query(matches), chunk)]
    return b"".join(pieces).decode()


def _batch(rows: list[tuple[Labels, float, int]], metadata: bool) -> Batch:
    return Batch(
        tuple(Series(labels, (Sample(value, ts),)) for labels, value, ts in rows),
        tuple(FAMILIES) if metadata else (),
    )


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, chunk=st.integers(1, 9), max_series=st.integers(1, 30))
def test_the_stream_is_the_reference_render_after_every_step(
    steps: list[tuple[list[tuple[Labels, float, int]], bool]], chunk: int, max_series: int
) -> None:
    """Renders between writes: lines kept from an earlier render, sorted buckets with new and
    removed series, label indexes built by an earlier request, all give the reference text."""

    async def run() -> None:
        store = FederateStore(['{__name__=~".+"}', '{A="z"}'], max_series)
        for rows, metadata in steps:
            store.update(_batch(rows, metadata))
            for matches in MATCHES:
                want = store.render(parse_selectors(matches) if matches else None)
                assert await _streamed(store, matches, chunk) == want, matches

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(steps=STEPS, chunk=st.integers(1, 5))
def test_writes_between_the_pieces_of_a_stream_show_one_sample_or_the_other(
    steps: list[tuple[list[tuple[Labels, float, int]], bool]], chunk: int
) -> None:
    """A write after the first piece: each line is the series' sample before or after it; the
    next stream is the reference text again."""

    async def run() -> None:
        store = FederateStore(['{__name__=~".+"}', '{A="z"}'], 100)
        store.update(_batch(*steps[0]))
        before = set(store.render().splitlines())
        pieces: list[bytes] = []
        async for piece in store.stream(store.query([]), chunk):
            if not pieces:
                for rows, metadata in steps[1:]:
                    store.update(_batch(rows, metadata))
            pieces.append(piece)
        got = [line for line in b"".join(pieces).decode().splitlines() if line[:1] != "#"]
        after = set(store.render().splitlines())
        assert set(got) <= before | after
        assert await _streamed(store, [], chunk) == store.render()

    asyncio.run(run())


def _gotk(i: int) -> Series:
    return Series((("__name__", "gotk_x"), ("name", f"o{i}")), (Sample(1.0, 1000),))


def test_a_refused_series_is_counted_once_and_costs_no_selector() -> None:
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=10)
    series = tuple(_gotk(i) for i in range(30))
    assert store.update(Batch(series)) == 20  # 20 distinct series refused
    first = store.selector_checks
    for _ in range(5):
        assert store.update(Batch(series)) == 0  # the same tuples: one lookup each
        # New tuples of the refused series (a decoder without a cache): a hash, no selector.
        assert store.update(Batch(tuple(_gotk(i) for i in range(10, 30)))) == 0
    assert store.selector_checks == first
    assert store.refused == 20
    assert len(store) == 10


def test_refusals_are_remembered_within_the_bound_and_room_is_taken_again() -> None:
    store = FederateStore(['{__name__=~"gotk_.*"}'], max_series=3)
    store.update(Batch(tuple(_gotk(i) for i in range(3))))
    assert store.update(Batch(tuple(_gotk(i) for i in range(3, 100)))) == 97
    assert len(store._refused) == 4 * 3  # the oldest refusals are forgotten: bounded
    # A stale marker frees a slot: a refused series written again is stored.
    gone = Series(_gotk(0).labels, (Sample(STALE_NAN, 2000),))
    store.update(Batch((gone,)))
    assert store.update(Batch((_gotk(99),))) == 0
    assert _gotk(99).labels in {labels for labels, *_ in asyncio.run(store.snapshot()).points}


@pytest.mark.parametrize(
    ("matches", "names", "labels"),
    [
        (["up", '{__name__="down"}'], {"up", "down"}, None),
        (['up{job="a"}'], {"up"}, [[("job", "a")]]),
        (
            ['{job="a", x=~"b"}', '{__name__=~"u.*", y="c", z=""}'],
            None,
            [[("job", "a")], [("y", "c")]],
        ),
        (['{job=~"a"}'], None, None),
        (["up", '{job!="a", __name__=~"x"}'], None, None),
    ],
    ids=["names", "name-and-label", "labels", "regex-only", "one-without-name"],
)
def test_query_plans(
    matches: list[str], names: set[str] | None, labels: list[list[tuple[str, str]]] | None
) -> None:
    query = FederateStore(["up"], 1).query(matches)
    assert query.names == (None if names is None else frozenset(names))
    assert query.equalities == labels


def test_label_indexes_stay_exact_and_bounded_through_churn() -> None:
    """Series ending and coming back (stale markers) leave removed entries in an index built by
    an earlier request: skipped while few, the index dropped and built again when they outnumber
    the stored series; every answer stays the reference text."""

    def series(i: int, value: float, ts: int) -> Series:
        labels = (("__name__", "gotk_x"), ("name", f"o{i % 50}"), ("ns", f"n{i % 5}"))
        return Series(labels, (Sample(value, ts),))

    async def run() -> None:
        store = FederateStore(['{__name__=~"gotk_.*"}'], 1000)
        store.update(Batch(tuple(series(i, 1.0, 1) for i in range(50))))
        matches = ['{ns="n1"}', '{name="o7", ns="n2"}']
        want = store.render(parse_selectors(matches))
        assert await _streamed(store, matches, 3) == want
        assert set(store._indexes) == {"ns", "name", *KEPT_INDEXES}
        for ts in range(2, 70):  # 68 rounds of 25 series ending and coming back: 1700 removals
            store.update(Batch(tuple(series(i, STALE_NAN, ts) for i in range(0, 50, 2))))
            store.update(Batch(tuple(series(i, float(ts), ts) for i in range(0, 50, 2))))
            if ts % 10 == 0:
                want = store.render(parse_selectors(matches))
                assert await _streamed(store, matches, 3) == want
        assert store._indexes  # built again by the last request
        for index in store._indexes.values():
            # 1,700 removed entries were made: at most as many as the stored series plus 1024
            # stay before an index is dropped.
            held = sum(len(_entries_of(posting)) for posting in index.values())
            assert held <= len(store) + 1024

    asyncio.run(run())


@pytest.mark.parametrize(
    ("before", "added"),
    [(0, 5_000), (2_000, 200)],
    ids=["runs-merged", "put-in-place"],
)
def test_a_render_cancelled_while_it_orders_new_series_leaves_them_to_the_next(
    before: int, added: int
) -> None:
    """A render's task cancelled (its request timed out) while it puts new series in order:
    the lock is released and the next render has every series, in order."""

    async def run() -> None:
        store = FederateStore(['{__name__=~"gotk_.*"}'], 100_000)
        store.update(Batch(tuple(_gotk(i) for i in range(before))))
        await _streamed(store, [], 1024)
        store.update(Batch(tuple(_gotk(i) for i in range(before, before + added))))
        render = asyncio.create_task(_streamed(store, [], 1024))
        for _ in range(10_000):  # a turn of the loop each: the render starts ordering
            if store._sorting.locked():
                break
            await asyncio.sleep(0)
        assert store._sorting.locked()
        render.cancel()
        with pytest.raises(asyncio.CancelledError):
            await render
        assert not store._sorting.locked()
        assert await _streamed(store, [], 1024) == store.render()
        assert len(store.render().splitlines()) == before + added + 1  # and a TYPE line

    asyncio.run(run())
