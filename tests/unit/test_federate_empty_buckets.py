"""``FederateStore.stream`` over many buckets that give no line: label sets whose first label
sorts before ``__name__`` (``A="v1"`` on ``gotk_x``) all fall in one family (""), and a query
that matches none or few of them looks at each such bucket once, without searching the family
for it (a search per bucket made a scrape quadratic in them). The text stays the reference's
(``FederateStore.render``) for every query, and the pieces still come every ``chunk`` series."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Final

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations.federate import FederateStore
from gotk_relay.model import Batch, FamilyMetadata, Labels, MetricType, Sample, Series
from gotk_relay.selectors import parse_selectors

FAMILIES: Final = (
    FamilyMetadata("gotk_x", MetricType.GAUGE, "x"),
    FamilyMetadata("h", MetricType.HISTOGRAM, "a histogram"),
)
# Selectors matching none, one, some or all of the unnamed buckets, by name, regex or label.
MATCHES: Final = [
    [],
    ["gotk_none"],
    ['{__name__=~"none.*"}'],
    ["gotk_x"],
    ['{A="v3"}'],
    ['{A=~"v1.*"}'],
    ['{B="w2"}', "h_bucket"],
    ['{__name__="gotk_x", A="v5"}', '{__name__=~"h_.*", l="1"}'],
    ['{l="1"}'],
]
LABELS: Final = st.builds(
    lambda upper, other, name, value: (
        *((("A", upper),) if upper else ()),  # labels sorting before __name__
        *((("B", other),) if other else ()),
        ("__name__", name),
        ("l", value),
    ),
    st.sampled_from(["", *(f"v{i}" for i in range(12))]),
    st.sampled_from(["", "w1", "w2"]),
    st.sampled_from(["gotk_x", "gotk_y", "h_bucket", "h_count", "up"]),
    st.sampled_from(["0", "1", "2"]),
)


class _Counted(str):
    """A label value that counts the comparisons of equality made with it: the work of
    finding a bucket's key among others (a search of a list compares each key before it)."""

    __slots__ = ()
    compared: ClassVar[int] = 0

    def __eq__(self, other: object) -> bool:
        _Counted.compared += 1
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        _Counted.compared += 1
        return str.__ne__(self, other)

    __hash__ = str.__hash__


def _unnamed_store(count: int) -> FederateStore:
    """``count`` series of ``gotk_x``, each its own bucket (its first label ``A``), in the
    family ""; their values count comparisons (no line is made of them: the compiled line
    maker takes exact strings)."""
    store = FederateStore(['{__name__=~".+"}'], 10 * count)
    rows = (
        Series((("A", _Counted(f"v{i}")), ("__name__", "gotk_x")), (Sample(1.0, 1),))
        for i in range(count)
    )
    store.update(Batch(tuple(rows)))
    assert len(store) == count
    return store


async def _pieces(store: FederateStore, matches: list[str], chunk: int) -> list[bytes]:
    return [piece async for piece in store.stream(store.query(matches), chunk)]


def test_a_query_matching_no_bucket_compares_each_key_a_bounded_number_of_times() -> None:
    """No line: the first scrape sorts the keys (n log n comparisons), a later one compares
    none; a search of the family per bucket compared about count² / 2 of them."""
    count, chunk = 1_000, 7

    async def run() -> None:
        for matches in (["gotk_none"], ['{__name__=~"none.*"}']):
            store = _unnamed_store(count)
            _Counted.compared = 0
            first = await _pieces(store, matches, chunk)
            sorting = _Counted.compared
            assert sorting <= 4 * count * count.bit_length(), (matches, sorting)
            for _ in range(2):
                _Counted.compared = 0
                again = await _pieces(store, matches, chunk)
                assert _Counted.compared <= count, (matches, _Counted.compared)
                assert again == first
            # Nothing to send, but a (empty) piece every chunk series looked at: the loop turns.
            assert first == [b""] * (count // chunk), matches

    asyncio.run(run())


def test_the_comparisons_grow_linearly_with_the_buckets() -> None:
    """Four times the buckets: at most about four times the comparisons on a later scrape
    (a search per bucket made it sixteen times)."""

    async def compared(count: int) -> int:
        store = _unnamed_store(count)
        await _pieces(store, ["gotk_none"], 16)  # the keys sorted, kept for the next scrapes
        _Counted.compared = 0
        await _pieces(store, ["gotk_none"], 16)
        return _Counted.compared

    async def run() -> None:
        small, large = await compared(250), await compared(1_000)
        assert large <= 4 * small + 1_000, (small, large)

    asyncio.run(run())


def test_a_line_in_a_late_unnamed_bucket_starts_its_family_there() -> None:
    """The family "" written once, where its first line comes, with the later buckets of the
    family after it (as the reference renders them), past the buckets without a line."""
    store = FederateStore(['{__name__=~".+"}'], 100)
    rows: list[Labels] = [(("A", f"v{i}"), ("__name__", "gotk_x")) for i in range(30)]
    rows.append((("__name__", "up"),))
    store.update(Batch(tuple(Series(labels, (Sample(2.0, 5),)) for labels in rows)))

    async def run() -> None:
        for matches in (['{A=~"v2.*"}'], ['{A="v29"}', "up"], ["gotk_none"], []):
            for chunk in (1, 3, 256):
                want = store.render(parse_selectors(matches) if matches else None)
                assert b"".join(await _pieces(store, matches, chunk)).decode() == want

    asyncio.run(run())
    # One header, then the eleven lines of v2 and v20..v29 (label order), none of the others.
    text = store.render(parse_selectors(['{A=~"v2.*"}'])).splitlines()
    assert [line[:1] == "#" for line in text] == [True] + [False] * 11
    assert [line.split('"')[1] for line in text[1:]] == ["v2", *(f"v{i}" for i in range(20, 30))]


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(LABELS, st.integers(0, 3)), max_size=40),
    metadata=st.booleans(),
    chunk=st.integers(1, 9),
)
def test_the_stream_is_the_reference_render_over_unnamed_buckets(
    rows: list[tuple[Labels, int]], metadata: bool, chunk: int
) -> None:
    """Many buckets of the family "" among named ones, with or without metadata: every query
    streams the reference text, whatever the piece size, on a first scrape and a later one."""
    store = FederateStore(['{__name__=~".+"}'], 100)
    store.update(
        Batch(
            tuple(Series(labels, (Sample(float(v), v),)) for labels, v in rows),
            FAMILIES if metadata else (),
        )
    )

    async def run() -> None:
        for matches in MATCHES:
            want = store.render(parse_selectors(matches) if matches else None)
            for _ in range(2):
                got = b"".join(await _pieces(store, matches, chunk)).decode()
                assert got == want, matches

    asyncio.run(run())
