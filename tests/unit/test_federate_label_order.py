"""``/federate`` over label sets as they come: a label whose name sorts before ``__name__``
(an upper-case initial, ``__hidden``) or a label with an empty value. Each series is stored and
written under Prometheus' identity of it (``federate.store_key``: the name first, empty values
left out), so its line names its metric, in its own family, and a series sent with and without
``a=""`` is one series. The streamed text stays the reference's (``FederateStore.render``) for
every query, and the text format parser reads every line back."""

from __future__ import annotations

import asyncio
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gotk_relay.destinations.federate import FederateStore, store_key
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Labels,
    MetricType,
    Sample,
    Series,
)
from gotk_relay.selectors import parse_selectors

FAMILIES: Final = (
    FamilyMetadata("gotk_x", MetricType.GAUGE, "x"),
    FamilyMetadata("h", MetricType.HISTOGRAM, "a histogram"),
)
# Selectors matching none, one, some or all of the series, by name, regex or label.
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
    ['{e="x"}'],
]
LABELS: Final = st.builds(
    lambda upper, other, name, value, empty: (
        *((("A", upper),) if upper is not None else ()),  # sorts before __name__
        *((("B", other),) if other is not None else ()),
        ("__name__", name),
        *((("e", empty),) if empty is not None else ()),  # "" is no label
        ("l", value),
    ),
    st.sampled_from([None, "", *(f"v{i}" for i in range(12))]),
    st.sampled_from([None, "", "w1", "w2"]),
    st.sampled_from(["gotk_x", "gotk_y", "h_bucket", "h_count", "up"]),
    st.sampled_from(["0", "1", "2"]),
    st.sampled_from([None, "", "x"]),
)


def _store(rows: list[tuple[Labels, float, int]], metadata: bool = False) -> FederateStore:
    store = FederateStore(['{__name__=~".+"}'], 1_000)
    for labels, value, timestamp in rows:  # one write each: later ones find earlier ones
        store.update(
            Batch((Series(labels, (Sample(value, timestamp),)),), FAMILIES if metadata else ())
        )
    return store


async def _text(
    store: FederateStore, matches: list[str], chunk: int = 256, oldest: int | None = None
) -> str:
    query = store.query(matches)
    return b"".join([p async for p in store.stream(query, chunk, oldest)]).decode()


def _parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample line as the text format parser reads it: (name, labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_label_sorting_before_the_name_keeps_the_line_named() -> None:
    store = _store([
        ((("Zone", "x"), ("__name__", "up_a")), 1.0, 5),
        ((("__hidden", "y"), ("__name__", "up_b")), 2.0, 5),
        ((("__name__", "up_c"), ("zone", "ok")), 3.0, 5),
    ])  # fmt: skip
    want = (
        "# TYPE up_a untyped\n"
        'up_a{Zone="x"} 1.0 5\n'
        "# TYPE up_b untyped\n"
        'up_b{__hidden="y"} 2.0 5\n'
        "# TYPE up_c untyped\n"
        'up_c{zone="ok"} 3.0 5\n'
    )
    for matches in ([], ["up_a", "up_b", "up_c"], ['{Zone="x"}', '{__hidden="y"}', "up_c"]):
        assert asyncio.run(_text(store, matches)) == want, matches
    assert store.render() == want
    assert (
        asyncio.run(_text(store, ['{Zone="x"}'])) == '# TYPE up_a untyped\nup_a{Zone="x"} 1.0 5\n'
    )


def test_an_empty_label_value_is_no_label() -> None:
    """As Prometheus holds them: one series, the newest sample wins, a stale marker sent with
    either form removes it."""
    store = _store([
        ((("__name__", "coll"), ("b", "x")), 1.0, 1_000),
        ((("__name__", "coll"), ("a", ""), ("b", "x")), 2.0, 2_000),
    ])  # fmt: skip
    assert store.render() == '# TYPE coll untyped\ncoll{b="x"} 2.0 2000\n'
    assert asyncio.run(_text(store, ["coll"])) == store.render()
    store.update(Batch((Series((("__name__", "coll"), ("b", "x")), (Sample(1.5, 1_500),)),)))
    assert store.render() == '# TYPE coll untyped\ncoll{b="x"} 2.0 2000\n'  # older: kept
    store.update(
        Batch((Series((("__name__", "coll"), ("a", ""), ("b", "x")), (Sample(STALE_NAN, 3_000),)),))
    )
    assert store.render() == "" and len(store) == 0


def test_store_key_is_prometheus_identity() -> None:
    usual = (("__name__", "up"), ("job", "a"))
    assert store_key(usual) is usual  # nothing to change: the very tuple
    assert store_key((("A", "1"), ("__name__", "up"), ("b", ""))) == (
        ("__name__", "up"),
        ("A", "1"),
    )
    assert store_key((("a", ""), ("b", "2"))) == (("b", "2"),)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(LABELS, st.integers(0, 3)), max_size=40),
    metadata=st.booleans(),
    chunk=st.integers(1, 9),
    oldest=st.one_of(st.none(), st.integers(0, 4)),
)
def test_the_stream_is_the_reference_render_and_parses(
    rows: list[tuple[Labels, int]], metadata: bool, chunk: int, oldest: int | None
) -> None:
    """Every query streams the reference text, whatever the piece size and lookback, on a
    first scrape and a later one; every line parses under its series' own name and holds its
    newest value."""
    store = _store([(labels, float(v), v) for labels, v in rows], metadata)
    newest: dict[Labels, tuple[int, float]] = {}
    for labels, v in rows:
        key = store_key(labels)
        if key not in newest or newest[key][0] < v:
            newest[key] = (v, float(v))

    async def run() -> None:
        for matches in MATCHES:
            want = store.render(parse_selectors(matches) if matches else None, oldest)
            for _ in range(2):
                assert await _text(store, matches, chunk, oldest) == want, matches
        everything = _parsed(await _text(store, []))
        assert everything == {
            (dict(key)["__name__"], tuple(sorted(p for p in key if p[0] != "__name__"))): value
            for key, (_, value) in newest.items()
        }

    asyncio.run(run())
