"""destinations.rows: the compiled walk and its twin read what rw1.decode reads, and the Datadog
and OTLP mappings of rows are the mappings of the decoded series, point for point."""

from __future__ import annotations

import asyncio
import gc
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gotk_relay import caches
from gotk_relay.delivery.entry import encode_entry
from gotk_relay.destinations import datadog
from gotk_relay.destinations.chunked import entry_batches
from gotk_relay.destinations.datadog_mapping import (
    CounterStore,
    Emit,
    MappedSeries,
    MappingOptions,
    NameCache,
    SeriesMemo,
    TypeCache,
    map_batch,
    map_items,
    normalize_tag,
    series_tags,
)
from gotk_relay.destinations.datadog_mapping.counters import counter_key
from gotk_relay.destinations.otlp_mapping import Mapper, MappingState, to_otlp
from gotk_relay.destinations.otlp_mapping import mapper as mapper_module
from gotk_relay.destinations.otlp_mapping.encoder import attributes_bytes
from gotk_relay.destinations.rows import COMPILED, PYTHON, Item, Loops, entry_steps, labels, series
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    Exemplar,
    FamilyMetadata,
    MetricType,
    Protocol,
    Sample,
    Series,
)
from gotk_relay.wire import rw1
from gotk_relay.wire.errors import DecodeError
from tests.support.strategies import ORDINARY_NAN, canonical, odd_v1_requests

IMPLEMENTATIONS: dict[str, Loops | None] = {"python": PYTHON, "compiled": COMPILED}
NOW_MS = 1_764_000_000_000


@pytest.fixture(params=list(IMPLEMENTATIONS), ids=list(IMPLEMENTATIONS))
def loops(request: pytest.FixtureRequest) -> Loops:
    """The compiled walk and mapping loops, or their Python twins (map_items' own loop,
    render, Mapper.gauge_row and counter_row): each test runs both."""
    found = IMPLEMENTATIONS[request.param]
    if found is None:
        pytest.skip("the _rows extension is not built")
    return found


def _bits(samples: Any) -> list[tuple[bytes, int]]:
    return [(struct.pack("<d", value), ts) for value, ts in samples]


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(odd_v1_requests())
def test_rows_read_every_encoding_as_rw1_decodes_it(
    loops: Loops, request: tuple[bytes, Batch]
) -> None:
    raw, _ = request
    decoded = rw1.decode(raw, validate=False).series
    found, end = loops.walk(raw, 0, len(raw))
    assert end == len(raw)
    assert len(found) == len(decoded)
    for (key, samples, rest), want in zip(found, decoded, strict=True):
        if rest is None:  # labels and samples only: the key decodes to the labels
            assert not want.histograms and not want.exemplars
            assert labels(key) == want.labels
            assert _bits(samples) == _bits((s.value, s.timestamp) for s in want.samples)
        else:  # the whole series' payload, decoded in full
            assert canonical(series(rest)) == canonical(want)


@pytest.mark.parametrize("budget", [1, 60, 200, 1 << 20], ids=["1B", "60B", "200B", "whole"])
def test_rows_take_whole_series_within_the_budget_and_stop_before_a_larger_one(
    loops: Loops, budget: int
) -> None:
    items = [
        Series((("__name__", f"s{i}"), ("pad", "x" * (10 * i))), (Sample(1.0, i),))
        for i in range(8)
    ]
    metadata = (FamilyMetadata("s1", MetricType.GAUGE, "help", ""),)
    raw = rw1.encode(Batch(tuple(items), metadata))
    sizes = [len(rw1.encode(Batch((item,)))) for item in items]  # each series' field
    pos, seen = 0, 0
    while seen < len(items):
        found, after = loops.walk(raw, pos, budget)
        if found:
            assert sum(sizes[seen : seen + len(found)]) <= budget
            assert (
                seen + len(found) == len(items) or sum(sizes[seen : seen + len(found) + 1]) > budget
            )
        else:  # the next series alone is over the budget: the caller cuts it
            assert after == pos and sizes[seen] > budget
            found, after = loops.walk(raw, pos, sizes[seen])
            assert len(found) == 1
        assert [labels(key) for key, _, _ in found] == [
            s.labels for s in items[seen : seen + len(found)]
        ]
        seen += len(found)
        pos = after
    assert loops.walk(raw, pos, budget) == ([], len(raw))  # metadata after the series: passed over


def _ld(number: int, payload: bytes, wide: bool = False) -> bytes:
    """A length-delimited field; ``wide``: its tag and length as two-byte varints (valid, and
    never what Prometheus writes)."""
    tag, size = rw1.uvarint(number << 3 | 2), rw1.uvarint(len(payload))
    if wide:
        tag, size = (v[:-1] + bytes([v[-1] | 0x80, 0]) for v in (tag, size))
    return tag + size + payload


def _sample_bytes(value: float, ts: int, order: str) -> bytes:
    value_field = b"\x09" + struct.pack("<d", value)
    ts_field = b"\x10" + rw1.uvarint(ts & (1 << 64) - 1)
    return {
        "usual": value_field + ts_field,
        "reversed": ts_field + value_field,
        "value only": value_field,
        "time only": ts_field,
        "then unknown": value_field + ts_field + b"\x18\x01",
        "twice": value_field + ts_field + value_field + b"\x10\x05",
        "unknown for time": value_field + b"\x18\x05",  # a varint where the time would be
    }[order]


_ORDERS = (
    "usual",
    "reversed",
    "value only",
    "time only",
    "then unknown",
    "twice",
    "unknown for time",
)


def test_rows_read_the_usual_encoding_and_its_neighbours_as_rw1_decodes_them(
    loops: Loops,
) -> None:
    """The walk's inline reading of the usual field (a one-byte tag and length) and of the
    usual sample (value, then timestamp) against rw1.decode, at the edges where it must hand
    over: a label of 127 and 128 bytes (a two-byte length), wide tags and lengths, samples in
    other orders, repeated fields, unknown fields, negative timestamps."""
    series_fields = []
    for index, size in enumerate((0, 1, 121, 122, 123, 124, 125, 126, 127, 128, 300)):
        label = _ld(1, b"x" * size) + _ld(2, b"v" * size, wide=index % 3 == 0)
        name = _ld(1, _ld(1, b"__name__") + _ld(2, b"m%d" % index))
        labels_bytes = name + _ld(1, label, wide=index % 2 == 0) if size else name
        ts = (-1, 0, 1, 1 << 40, -(1 << 62), NOW_MS)[index % 6]
        samples = b"".join(
            _ld(2, _sample_bytes(float(index) + k / 4, ts + k, _ORDERS[(index + k) % 7]))
            for k in range(3)
        )
        series_fields.append(_ld(1, labels_bytes + samples))
    raw = b"".join(series_fields)
    decoded = rw1.decode(raw, validate=False).series
    found, end = loops.walk(raw, 0, len(raw))
    assert end == len(raw)
    assert [labels(key) for key, _, rest in found if rest is None] == [s.labels for s in decoded]
    assert [_bits(samples) for _, samples, _ in found] == [
        _bits((s.value, s.timestamp) for s in want.samples) for want in decoded
    ]
    truncated = _ld(1, _ld(2, b"\x09" + struct.pack("<d", 1.0) + b"\x10\xff"))
    with pytest.raises(DecodeError):
        loops.walk(truncated, 0, len(truncated))


def test_render_writes_any_timestamp_and_interval_as_python_formats_them(loops: Loops) -> None:
    """The compiled render writes seconds and intervals itself (not through str()): every
    int64, negative ones and the extremes, and ints beyond (through str()), as ``render``
    (the JSON of the series, where orjson can write it)."""
    times = [0, 1, -1, 9, 10, -10, 1_764_000_000, -(1 << 63), (1 << 63) - 1, 1 << 70, -(1 << 70)]
    metrics = ("m0", "m1", "m2")  # each as a count and as a gauge: one head each

    def rows() -> list[Any]:  # each with an info (a label set's memo) to keep its tags' JSON
        return [
            [
                *MappedSeries(
                    b"k%d" % i,
                    metrics[i % 3],
                    i % 2,
                    ("a:b",),
                    "h",
                    [(t, 0.5), (-t, 2.0)],
                    interval=abs(t) if i % 2 else 0,
                ).row()[:9],
                [None] * 7,
            ]
            for i, t in enumerate(times)
        ]

    want = [datadog.render(row, {}) for row in rows()]
    assert want[:9] == [orjson.dumps(MappedSeries(*row[:9]).to_dict()) for row in rows()[:9]]
    heads: dict[tuple[str, int], bytes] = {}
    parts: list[bytes] = []
    made = rows()
    datadog.render_all(made, heads, parts, loops)
    datadog.render_all(made, heads, parts, loops)  # heads and tags' JSON known: compiled
    assert parts == want * 2


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=12))
def test_render_keeps_the_rows_a_piece_still_needs(loops: Loops, shapes: list[Any]) -> None:
    """``kept`` gets each rendered row again where a piece still needs it once its JSON is
    made (a counter's: its state is committed with the piece; several points: a 413 may split
    it by points), None for a series of one point that is not a counter; the JSON is the same
    with or without it, whoever renders the row (the Python render the first time a label
    set is met, the compiled one after)."""

    def rows() -> list[Any]:
        return [
            [
                *MappedSeries(
                    b"k%d" % i,
                    "m",
                    1 if counter else 3,
                    ("a:b",),
                    "",
                    [(1_764_000_000 + k, float(k)) for k in range(points)],
                    final=(1_764_000_000_000, 1.0) if counter else None,
                ).row()[:9],
                [None] * 7,
            ]
            for i, (points, counter) in enumerate(shapes)
        ]

    made = rows()
    heads: dict[tuple[str, int], bytes] = {}
    for _ in range(2):  # the first time rendered in Python, then by the compiled loop
        want: list[bytes] = []
        datadog.render_all(rows(), {}, want, loops)
        parts: list[bytes] = []
        kept: list[Any] = []
        datadog.render_all(made, heads, parts, loops, kept)
        assert parts == want
        assert [row is not None for row in kept] == [c or p > 1 for p, c in shapes]
        assert all(k is r for k, r in zip(kept, made, strict=True) if k is not None)
        # Into one buffer (what a batch's pieces are cut from): the same JSON, where it starts.
        rendered = datadog.Rendered()
        datadog.render_all(made, heads, rendered, loops, [])
        starts = rendered.starts()
        assert len(rendered) == len(want) and starts[-1] == len(rendered.data)
        assert [rendered.data[a : b - 1] for a, b in pairwise(starts)] == want
        assert all(rendered.data[b - 1 : b] == b"," for b in starts[1:])


# -- the mappings: rows against decoded series ----------------------------------------------

_NAMES = (
    "up",
    "http_requests_total",
    "rpc_seconds_count",
    "rpc_seconds_sum",
    "rpc_seconds_bucket",
    "rpc_seconds",
    "c_total",
    "c_created",
    "kube_pod_created",
    "job:rate5m",
    "9lead",
    # Families datadog flux_integration renames and retags (and whose +Inf bucket it skips).
    "gotk_reconcile_condition",
    "gotk_reconcile_duration_seconds_bucket",
    "controller_runtime_reconcile_total",
    "gotk_resource_info",
)
_values = st.one_of(
    st.floats(allow_nan=False, min_value=-1e12, max_value=1e12),
    st.sampled_from([STALE_NAN, ORDINARY_NAN, float("inf"), float("-inf"), -0.0, 0.0]),
)
_times = st.one_of(
    st.integers(NOW_MS - 2 * 3600_000, NOW_MS + 20 * 60_000), st.integers(NOW_MS - 60_000, NOW_MS)
)


@st.composite
def _traffic(draw: st.DrawFn) -> Batch:
    """Series of few names and label sets (so names repeat, and series merge), few with
    exemplars (the compiled loops map a name's series after its first, without exemplars)."""
    out = []
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4, unique=True))
    for _ in range(draw(st.integers(0, 30))):
        labels = [("__name__", draw(st.sampled_from(names)))]
        labels += [("instance", draw(st.sampled_from(["a:1", "b:2", "c:3", "d:4"]))), ("job", "j")]
        extra = draw(
            st.sampled_from(
                [
                    (),
                    (("le", "0.5"),),
                    (("le", "+Inf"),),
                    (("quantile", "0.9"),),
                    (("Host", "H-1"),),
                    (("exported_namespace", "apps"), ("namespace", "flux-system")),
                ]
            )
        )
        labels = sorted([*labels, *extra])
        samples = tuple(
            Sample(v, t)
            for v, t in sorted(
                draw(st.lists(st.tuples(_values, _times), max_size=3)), key=lambda p: p[1]
            )
        )
        if samples and draw(st.booleans()):  # a resend: the same timestamp again
            samples += (Sample(samples[-1].value + 1.0, samples[-1].timestamp),)
        exemplars = tuple(
            Exemplar((("trace_id", "ab" * 16),), 1.0, NOW_MS)
            for _ in range(draw(st.sampled_from([0, 0, 0, 1])))
        )
        out.append(Series(tuple(labels), samples, (), exemplars))
    metadata = tuple(
        FamilyMetadata(name, draw(st.sampled_from(list(MetricType))), "h", "seconds")
        for name in draw(
            st.lists(st.sampled_from(["rpc_seconds", "c", "kube_pod_created", "up"]), max_size=2)
        )
    )
    return Batch(tuple(out), metadata)


def _steps(batch: Batch, loops: Loops) -> list[Batch | list[Item]]:
    async def collect() -> list[Batch | list[Item]]:
        entries = [encode_entry(batch, Protocol.V1)]
        return [step async for step in entry_steps(entries, 1 << 20, loops)]

    return asyncio.run(collect())


def _seeded_counters(batch: Batch) -> CounterStore:
    """Counter state for most series: some before the hour Datadog takes, most within it."""
    counters = CounterStore()
    for index, item in enumerate(batch.series):
        if index % 4 != 3:
            ago = 3600_000 + 1000 * index if index % 4 == 0 else 1800_000 + 1000 * index
            counters.commit(item.labels, (NOW_MS - ago, 5.0 * (index % 3)), 0.0)
    return counters


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_traffic(), st.booleans(), st.sampled_from([None, "Host"]), st.booleans())
def test_datadog_maps_rows_as_it_maps_decoded_series(
    loops: Loops, batch: Batch, as_count: bool, host_label: str | None, flux: bool
) -> None:
    """The rows of a batch whose label sets the client knows already (as in every scrape but
    the first), against ``map_batch`` of the decoded batch, from the same counter state; with
    and without ``flux_integration`` (whose skipped +Inf buckets the compiled loop leaves to
    Python)."""
    options = MappingOptions(
        host_label=host_label,
        counters_as_count=as_count,
        static_tags=("env:x",),
        flux_integration=flux,
        flux_keep=("job",) if flux else (),
    )
    decoded = rw1.decode(rw1.encode(batch), validate=False)
    want = map_batch(decoded, options, TypeCache(), _seeded_counters(batch), NOW_MS)
    memo = SeriesMemo()
    steps = _steps(batch, loops)
    for learn in (True, False):  # a first conversion teaches the memo the label sets
        types = TypeCache()
        rows_out: list[Any] = []
        updates: dict[Any, Any] = {}
        skipped: Counter[str] = Counter()
        pending: dict[Any, Any] = {}
        names = NameCache()
        counters = CounterStore() if learn else _seeded_counters(batch)
        for step in steps:
            if isinstance(step, Batch):
                types.observe(step.metadata)
                items: list[Item] = list(step.series)
            else:
                items = step
            got = map_items(items, options, types, counters, NOW_MS, pending, names, memo, loops)
            rows_out.extend(got.rows)
            updates.update(got.updates)
            skipped.update(got.skipped)
    assert [MappedSeries(*row[:9]).to_dict() for row in rows_out] == [
        s.to_dict() for s in want.series
    ]
    parts: list[bytes] = []
    heads: dict[tuple[str, int], bytes] = {}
    datadog.render_all(rows_out, heads, parts, loops)  # heads and tags' JSON made as they are met
    datadog.render_all(rows_out, heads, parts, loops)  # all made already
    assert parts == [orjson.dumps(s.to_dict()) for s in want.series] * 2  # the body's JSON
    assert [(row[0], row[7]) for row in rows_out] == [(s.key, s.final) for s in want.series]
    assert updates == want.updates
    assert skipped == want.skipped


@st.composite
def _distinct_traffic(draw: st.DrawFn) -> Batch:
    """Series of distinct label sets without exemplars, most of one sample: steps the compiled
    loop renders as it maps them once their label sets are known."""
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4, unique=True))
    out = []
    for i in range(draw(st.integers(1, 40))):
        extra = draw(
            st.sampled_from(
                [(), (("Host", "H-1"),), (("le", "+Inf"),), (("exported_namespace", "apps"),)]
            )
        )
        labels = sorted([("__name__", draw(st.sampled_from(names))), ("i", str(i)), *extra])
        count = draw(st.sampled_from([1, 1, 1, 0, 2]))
        # Also times just past the hour: a counter's sample after its seeded state is then
        # skipped as too old, its state kept (_seeded_counters).
        past_the_hour = st.integers(NOW_MS - 3_640_000, NOW_MS - 3_600_001)
        times = st.one_of(_times, past_the_hour, past_the_hour)
        points = draw(st.lists(st.tuples(_values, times), min_size=count, max_size=count))
        out.append(Series(tuple(labels), tuple(Sample(v, t) for v, t in sorted(points, key=_ts))))
    return Batch(tuple(out))


def _ts(point: tuple[float, int]) -> int:
    return point[1]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(_traffic(), _distinct_traffic()), st.booleans(), st.booleans())
def test_datadog_steps_rendered_as_mapped_are_what_mapping_then_rendering_makes(
    loops: Loops, batch: Batch, as_count: bool, flux: bool
) -> None:
    """With ``Emit``, the compiled loop renders a step of known, distinct label sets as it maps
    it: the JSON, where each series starts, what pieces keep of each, the counter updates, the
    skipped samples and the counter state are those of mapping every step, then rendering its
    rows; in the scrape that teaches the memo and in the next, with label sets met twice in a
    step (merged) or not, in both loops."""
    options = MappingOptions(
        host_label="Host", counters_as_count=as_count, flux_integration=flux, flux_keep=("job",)
    )
    # A scrape of the same label sets, each one sample in the hour, teaches the memo the label
    # sets and their tags' JSON, and the heads theirs (the compiled loop leaves a series whose
    # JSON parts are not made to Python); then the drawn samples, mapped twice.
    teach = Batch(
        tuple(Series(item.labels, (Sample(1.0, NOW_MS - 1000),)) for item in batch.series),
        batch.metadata,
    )
    taught = (_steps(teach, loops), _steps(batch, loops), _steps(batch, loops))

    def scrapes(fused: bool) -> list[Any]:
        memo, seen_out = SeriesMemo(), []
        heads: dict[tuple[str, int], bytes] = {}
        counters = _seeded_counters(batch)
        for steps in taught:
            rendered = datadog.Rendered()
            kept: list[Any] = []
            updates: dict[Any, Any] = {}
            skipped: Counter[str] = Counter()
            pending: dict[Any, Any] = {}
            names, types = NameCache(), TypeCache()

            def one(
                row: Any, rendered: datadog.Rendered = rendered, kept: list[Any] = kept
            ) -> None:
                datadog.render_all([row], heads, rendered, loops, kept)

            emit = Emit(heads, datadog._scalar, rendered.data, rendered.ends, kept, one)
            for step in steps:
                if isinstance(step, Batch):
                    types.observe(step.metadata)
                items: list[Item] = list(step.series) if isinstance(step, Batch) else list(step)
                got = map_items(
                    items,
                    options,
                    types,
                    counters,
                    NOW_MS,
                    pending,
                    names,
                    memo,
                    loops,
                    emit if fused else None,
                )
                datadog.render_all(got.rows, heads, rendered, loops, kept)
                updates.update(got.updates)
                skipped.update(got.skipped)
            seen_out.append(
                (
                    bytes(rendered.data),
                    rendered.starts(),
                    [None if row is None else (row[0], row[5], row[7], row[8]) for row in kept],
                    updates,
                    skipped,
                    pending,
                )
            )
        return seen_out

    assert scrapes(fused=True) == scrapes(fused=False)


def test_datadog_rows_of_many_names_in_one_step_keep_each_its_own_metric(loops: Loops) -> None:
    """Hundreds of names in one step, all resolved before (the compiled loop keeps the last
    resolutions by the name's identity, in fewer slots than names): each row gets its own
    name's metric and type."""
    names_list = [f"n{i}_total" if i % 2 else f"n{i}" for i in range(256)]
    batch = Batch(
        tuple(
            Series((("__name__", name), ("i", str(i))), (Sample(float(i), NOW_MS - 1000),))
            for i, name in enumerate(names_list)
        )
    )
    options = MappingOptions(counters_as_count=False)
    memo, names, counters = SeriesMemo(), NameCache(), CounterStore()
    for _ in range(2):  # the second time every name and label set is known: one compiled call
        rows: list[Any] = []
        for step in _steps(batch, loops):
            items = list(step.series) if isinstance(step, Batch) else step
            got = map_items(items, options, TypeCache(), counters, NOW_MS, {}, names, memo, loops)
            rows += got.rows
        assert [(row[1], row[5]) for row in rows] == [
            (name, [((NOW_MS - 1000) // 1000, float(i))]) for i, name in enumerate(names_list)
        ]


def test_datadog_label_sets_learnt_by_either_loop_map_alike_and_the_index_goes_with_the_memo() -> (
    None
):
    """The compiled loop finds label sets through an index of the memo's by_bytes: label sets
    the Python loop learnt (by_bytes only) are found and indexed, the mapping is the Python
    loop's, the index never holds more than by_bytes, and clearing the memo drops it."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    batch = Batch(
        tuple(
            Series(
                (("__name__", f"m{i % 7}"), ("i", str(i)), ("pad", "p" * (i % 40))),
                (Sample(float(i), NOW_MS - 1000),),
            )
            for i in range(300)
        )
    )
    options = MappingOptions(counters_as_count=False)
    memo, names = SeriesMemo(), NameCache()

    def mapped(loops: Loops) -> list[Any]:
        rows: list[Any] = []
        for step in _steps(batch, loops):
            items = list(step.series) if isinstance(step, Batch) else step
            got = map_items(
                items, options, TypeCache(), CounterStore(), NOW_MS, {}, names, memo, loops
            )
            rows += [(row[1], row[3], row[5]) for row in got.rows]
        return rows

    want = mapped(PYTHON)  # learns every label set, by_bytes only
    assert memo.index is None and len(memo.by_bytes) == 300
    assert mapped(COMPILED) == want
    assert COMPILED.compiled.key_index_size(memo.index) == 300  # learnt from by_bytes
    assert mapped(COMPILED) == want  # through the index alone
    assert COMPILED.compiled.key_index_size(memo.index) == 300
    memo.clear()
    assert memo.index is None
    assert mapped(COMPILED) == want  # learnt anew: by Python, indexed as it learns
    assert COMPILED.compiled.key_index_size(memo.index) == len(memo.by_bytes) == 300


def test_the_key_index_holds_every_key_it_is_given() -> None:
    """The compiled index of a memo's label sets keeps every key added and finds each again,
    whatever the process's seed: one that left a key out (its run of slots full at half load)
    sent every step holding that key to the slower path for as long as the memo lived. At
    200,000 keys an index lost some in 5 to 7 processes of 10, and these eight indexes in 7 or
    more of 10 (the seed is the process's: a statistical check, as a property test is)."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    native = COMPILED.compiled
    for run in range(8):
        index = native.key_index()
        keys = [
            b"\x0a\x10\x0a\x08__name__\x12\x04up_%d\x0a\x01i\x12%d" % (run, i)
            for i in range(200_000)
        ]
        for number, key in enumerate(keys):
            native.key_index_add(index, key, number)
        assert native.key_index_size(index) == len(keys)
        assert native.key_index_infos(index, [(key, (), None) for key in keys]) == list(
            range(len(keys))
        )


@contextmanager
def _this_thread_alone() -> Iterator[None]:
    """While the collector's objects are counted, no other thread runs Python code (none
    allocates): under ``pytest -n 2`` the worker's execnet thread reads the controller's
    messages as they come, and its objects were counted now and then (1 run in 5 failed)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)  # nothing here blocks, so the GIL is not handed over
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_a_datadog_memo_leaves_the_collector_nothing_to_walk() -> None:
    """The label sets a Datadog destination memoizes (each one's info and label key, and the
    memo's dicts once a full collection saw them hold only those) are not walked by the garbage
    collector: with 50,000 of them every full collection held the event loop ≈65 ms."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    batch = Batch(
        tuple(
            Series((("__name__", f"m{i % 9}"), ("i", str(i))), (Sample(1.0, NOW_MS - 1000),))
            for i in range(3000)
        )
    )
    steps = _steps(batch, COMPILED)
    options = MappingOptions(counters_as_count=False)
    with _this_thread_alone():
        gc.collect()
        before = len(gc.get_objects())
        memo = SeriesMemo()
        for step in steps:
            items = list(step.series) if isinstance(step, Batch) else list(step)
            map_items(items, options, TypeCache(), CounterStore(), NOW_MS, {}, NameCache(), memo)
        gc.collect()
        held = len(gc.get_objects()) - before
    assert len(memo) == 3000
    assert held < 50  # not thousands: one per label set or more


def test_an_otlp_memo_and_plan_leave_the_collector_nothing_to_walk() -> None:
    """What an OTLP destination remembers of each label set (its info and the keys, context and
    shell it holds) and the plan of a step are not walked by the garbage collector: with 50,000
    label sets every full collection held the event loop 70-100 ms. Mapped twice: the second
    time the step is planned in C, and the plan of each step waits for the next."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    batch = Batch(
        tuple(
            Series(
                (("__name__", f"m{i % 9}_total"), ("i", str(i)), ("job", "j")),
                (Sample(float(i), NOW_MS - 1000),),
            )
            for i in range(3000)
        )
    )
    steps = _steps(batch, COMPILED)
    state = MappingState()
    mapper = Mapper(state, "cumulative", ("job", "instance"), COMPILED)
    with _this_thread_alone():
        gc.collect()
        before = len(gc.get_objects())
        waiting = []
        for _ in range(3):  # learnt by Python, then planned in C; counter states made in C
            for step in steps:
                mapper.feed(step)
                waiting.append(len(gc.get_objects()) - before)
            mapper.finish()
            state.commit(mapper.take().updates)
        gc.collect()
        held = len(gc.get_objects()) - before
    assert len(state.rows[("job", "instance")]) == 3000 == len(state.streams)
    # Not thousands (one per label set or more); the last step's plan waits for the next feed.
    assert waiting[-1] < 500
    assert held < 100


def test_a_datadog_batch_waiting_on_the_intake_leaves_the_collector_no_long_list() -> None:
    """While a batch's requests wait on Datadog, what they keep (the rows a piece still needs,
    None for the others, and where each series starts in its JSON) is lists of as many items as
    series: untracked, so that young and middle collections do not walk them item by item."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    from gotk_relay.config import DatadogConfig

    batch = Batch(
        tuple(
            Series(
                (("__name__", f"c{i % 7}_total" if i % 2 else f"g{i % 7}"), ("i", str(i))),
                (Sample(float(i), NOW_MS - 2000), Sample(float(i + 1), NOW_MS - 1000)),
            )
            for i in range(5000)
        )
    )
    client = datadog.DatadogClient(
        "dd",
        DatadogConfig(url="http://127.0.0.1:9/api/v2/series", api_key="x"),
        lambda: NOW_MS / 1000,
    )
    long_lists: list[int] = []

    def long() -> list[list[Any]]:  # source lines (linecache's) aside
        return [
            o
            for o in gc.get_objects()
            if type(o) is list and len(o) >= 1000 and type(o[0]) is not str
        ]

    there = long()  # other tests' (held: their ids stay theirs)
    known = {id(o) for o in there}

    def look() -> None:
        long_lists.extend(len(o) for o in long() if id(o) not in known)

    async def accepted(body: bytes, api_key: str) -> tuple[int, Any, str]:
        look()  # the pieces wait
        return 202, {}, ""

    compress = client._compress

    async def compressing(raw: bytes) -> bytes:
        look()  # the batch's rows and offsets, being cut into pieces
        return await compress(raw)

    client._post = accepted  # type: ignore[method-assign]
    client._compress = compressing  # type: ignore[method-assign]

    async def send() -> Any:
        try:
            return await client.send([encode_entry(batch, Protocol.V1)])
        finally:
            await client.close()

    assert asyncio.run(send()).outcome.name == "OK"
    assert long_lists == []


def test_datadog_flux_integration_rows_skip_the_inf_bucket_in_both_loops(loops: Loops) -> None:
    """A known ``le="+Inf"`` bucket of a Flux histogram among mapped rows: the compiled loop
    hands it to Python, which skips it as ``inf_bucket``; the rows around it are mapped."""
    base = (("exported_namespace", "apps"), ("kind", "HelmRelease"), ("name", "podinfo"))
    bucket = "gotk_reconcile_duration_seconds_bucket"
    batch = Batch(
        tuple(
            Series(((("__name__", bucket), *base, ("le", le))), (Sample(value, NOW_MS - 1000),))
            for le, value in (("0.5", 1.0), ("+Inf", 3.0), ("1", 2.0))
        )
    )
    options = MappingOptions(flux_integration=True)
    memo = SeriesMemo()
    counters = CounterStore()
    for item in batch.series:
        counters.commit(item.labels, (NOW_MS - 16_000, 0.0), 0.0)
    for _ in range(2):  # the second time every label set is memoized: the compiled path
        rows: list[Any] = []
        skipped: Counter[str] = Counter()
        for step in _steps(batch, loops):
            items = list(step.series) if isinstance(step, Batch) else step
            got = map_items(
                items, options, TypeCache(), counters, NOW_MS, {}, NameCache(), memo, loops
            )
            rows += got.rows
            skipped.update(got.skipped)
        assert skipped == Counter({"inf_bucket": 1})
        assert [(row[1], row[2], sorted(row[3]), row[5]) for row in rows] == [
            (
                "fluxcd.gotk.reconcile.duration.seconds.bucket",
                1,
                ["kind:helmrelease", "name:podinfo", "namespace:apps", f"upper_bound:{bound}"],
                [((NOW_MS - 1000) // 1000, value)],
            )
            for bound, value in (("0.5", 1.0), ("1.0", 2.0))
        ]


def _map_twice(
    batch: Batch, loops: Loops, options: MappingOptions, counters: CounterStore
) -> Iterator[tuple[list[Any], dict[bytes, Any], Counter[str]]]:
    """``batch``'s rows mapped twice, nothing committed: the first time each name is resolved
    in Python (the compiled loop maps the later series of it), the second time every name and
    label set is known (the compiled loop maps them all)."""
    memo, names = SeriesMemo(), NameCache()
    for _ in range(2):
        rows: list[Any] = []
        updates: dict[bytes, Any] = {}
        skipped: Counter[str] = Counter()
        for step in _steps(batch, loops):
            items = list(step.series) if isinstance(step, Batch) else step
            got = map_items(items, options, TypeCache(), counters, NOW_MS, {}, names, memo, loops)
            rows += got.rows
            updates.update(got.updates)
            skipped.update(got.skipped)
        yield rows, updates, skipped


def test_datadog_a_counter_increase_past_the_largest_double_is_not_sent(loops: Loops) -> None:
    """From -1.7e308 to 1.7e308 a counter increases by inf, which JSON cannot hold (the intake
    refuses the request): not sent, counted as ``not_finite``, but its state moves on as a
    point too old to send does: the next sample's increase (0) and interval start there."""
    jobs = "abcde"
    counters = CounterStore()
    for job in jobs:
        labels = (("__name__", "c_total"), ("job", job))
        counters.commit(labels, (NOW_MS - 10_000, -1.7e308), 0.0)
    samples = {
        "a": (Sample(1.7e308, NOW_MS - 6000), Sample(1.7e308, NOW_MS - 1000)),
        "b": (Sample(1.7e308, NOW_MS - 6000), Sample(1.7e308, NOW_MS - 1000)),
        "c": (Sample(1.7e308, NOW_MS - 6000), Sample(1.7e308, NOW_MS - 1000)),
        "d": (Sample(1.7e308, NOW_MS - 6000),),  # nothing sent: its state is an update
        "e": (Sample(1.7e308, NOW_MS - 6000),),
    }
    batch = Batch(
        tuple(Series((("__name__", "c_total"), ("job", job)), samples[job]) for job in jobs)
    )
    for rows, updates, skipped in _map_twice(batch, loops, MappingOptions(), counters):
        assert skipped == Counter({"not_finite": 5})
        assert [(row[1], row[2], row[5], row[6], row[7], row[8]) for row in rows] == [
            (
                "c_total",
                1,
                [((NOW_MS - 1000) // 1000, 0.0)],
                [(NOW_MS - 1000, 1.7e308)],
                (NOW_MS - 1000, 1.7e308),
                5,  # since the skipped point, not since the committed one
            )
        ] * 3
        assert updates == {
            counter_key((("__name__", "c_total"), ("job", job))): (NOW_MS - 6000, 1.7e308)
            for job in "de"
        }


@pytest.mark.parametrize("flux", [False, True])
def test_datadog_metric_names_like_the_mappings_markers_are_plain_names(
    loops: Loops, flux: bool
) -> None:
    """The mapping marks a label set's name for a Flux series it does not send and for one it
    sends as the integration's: no metric name is taken for either (a name of "\\x00omitted"
    was counted as ``inf_bucket``, one of "\\x00fluxcd\\x00gotk_suspend_status" was sent as
    the integration's fluxcd.gotk.suspend.status even with it off)."""
    marked = ["\x00omitted", "\x00fluxcd\x00gotk_suspend_status"]
    batch = Batch(
        tuple(
            Series(
                (("__name__", name), ("exported_namespace", "apps"), ("job", job)),
                (Sample(1.0, NOW_MS - 1000),),
            )
            for name in marked
            for job in "abc"
        )
    )
    options = MappingOptions(counters_as_count=False, flux_integration=flux)
    for rows, _, skipped in _map_twice(batch, loops, options, CounterStore()):
        assert skipped == Counter()
        assert [row[1] for row in rows] == ["omitted"] * 3 + ["fluxcd_gotk_suspend_status"] * 3


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_traffic(), _traffic(), st.sampled_from(["cumulative", "delta"]))
def test_otlp_maps_rows_as_it_maps_decoded_series(
    loops: Loops, first: Batch, second: Batch, temporality: Any
) -> None:
    """Two requests, each mapped and its stream state committed (so the second meets the
    first's counters): the rows' requests are the decoded series' requests."""
    reference, state = MappingState(), MappingState()
    for batch in (first, second, first._replace(series=first.series[::-1])):
        decoded = rw1.decode(rw1.encode(batch), validate=False)
        want = to_otlp(decoded, reference, temporality=temporality)
        reference.commit(want.updates)
        mapper = Mapper(state, temporality, ("job", "instance"), loops)
        for step in _steps(batch, loops):
            mapper.feed(step)
        mapper.finish()
        got = mapper.take()
        state.commit(got.updates)
        assert got.request == want.request
        assert got.points == want.points
        assert got.updates == want.updates
        assert got.unmapped == want.unmapped


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", ""]),  # instance
            st.sampled_from(["", "lib", "lib@schema"]),  # otel_scope_name (@: and more)
            st.sampled_from(["g", "c_total"]),
            st.sampled_from(["encoded", "field by field"]),
            st.integers(0, 400),  # points, then the attribute's length
            st.integers(0, 20_000),
        ),
        max_size=12,
    )
)
def test_a_request_is_serialized_alike_by_both_loops(ops: list[Any]) -> None:
    """``Output.serialized`` compiled (``_rows.otlp_serialized``) writes the bytes its Python
    twin writes: resources, scopes, metrics of encoded points, metrics given points field by
    field (and both), of any size (every length's varint)."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    from gotk_relay.destinations.otlp_mapping.builder import Builder
    from gotk_relay.destinations.otlp_mapping.encoder import number_bytes
    from gotk_relay.destinations.otlp_mapping.labelsets import RowInfo
    from gotk_relay.destinations.otlp_mapping.naming import Kind

    builders = [
        Builder(MappingState(), "cumulative", ("job", "instance"), native)
        for native in (None, COMPILED.compiled)
    ]
    for instance, scope, name, how, points, width in ops:
        labels: tuple[tuple[str, str], ...] = (("__name__", name), ("instance", instance))
        labels += (("job", "j"),)
        name_, _, more = scope.partition("@")
        labels += (("otel_scope_name", name_),) if name_ else ()
        if more:  # a schema URL and a scope attribute: the scope's head written in Python
            labels += (("otel_scope_schema_url", "https://s/1.0"), ("otel_scope_team", "x"))
        labels += (("pod", "p" * (width // 4)),)
        data = "sum" if name.endswith("_total") else "gauge"
        kind = Kind(MetricType.COUNTER if data == "sum" else MetricType.GAUGE, name, "")
        for builder in builders:
            info = RowInfo(labels, builder._ctx_of)
            for ts in range(1, min(points, 40) + 1):
                if how == "encoded":
                    point = number_bytes(info.attrs, ts, 1, float(ts))
                    builder.out.encoded(info, data, kind).append(point)
                else:
                    builder.out.number(info.ctx, name, data, kind, ts, 1, float(ts))
    python, compiled = (builder.out.serialized() for builder in builders)
    assert compiled == python
    assert builders[1].out.message() == builders[0].out.message()


def _flat(steps: list[Batch | list[Item]]) -> tuple[list[Any], list[Any]]:
    """Every sample (with its series' labels) and every other part of a series, in order."""
    samples: list[Any] = []
    rest: list[Any] = []
    for step in steps:
        items = list(step.series) if isinstance(step, Batch) else step
        for item in items:
            if isinstance(item, Series):
                samples += [(item.labels, *_bits([(s.value, s.timestamp)])) for s in item.samples]
                rest += [canonical(h) for h in item.histograms] + list(item.exemplars)
            else:
                samples += [(labels(item[0]), *_bits([s])) for s in item[1]]
    return samples, rest


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(1, 400), st.booleans()), min_size=1, max_size=5),
    st.sampled_from([64, 512, 4096, 1 << 20]),
)
def test_steps_hold_every_sample_in_order_whatever_the_budget(
    loops: Loops, shapes: list[tuple[int, bool]], budget: int
) -> None:
    """Long series (cut by samples) and short ones, some with exemplars: the steps hold what
    ``entry_batches`` (decoded objects) holds, sample for sample, in order."""
    items = tuple(
        Series(
            (("__name__", f"s{i}"), ("pod", "p" * i)),
            tuple(Sample(float(k), NOW_MS + k) for k in range(count)),
            (),
            (Exemplar((("trace_id", "ab"),), 1.0, NOW_MS),) if with_exemplar else (),
        )
        for i, (count, with_exemplar) in enumerate(shapes)
    )
    entries = [
        encode_entry(Batch(items, ()), Protocol.V1),
        encode_entry(Batch(items[:1], ()), Protocol.V1),
    ]

    async def both() -> tuple[list[Any], list[Any]]:
        steps = [step async for step in entry_steps(entries, budget, loops)]
        batches = [batch async for batch in entry_batches(entries, 4096)]
        return steps, batches  # type: ignore[return-value]

    steps, batches = asyncio.run(both())
    assert _flat(steps) == _flat(batches)


def test_small_entries_are_read_together_and_keep_their_order(loops: Loops) -> None:
    """A destination keeping a few series of each request queues an entry per request: runs of
    such 1.0 entries are read as one message (``COALESCE_BYTES``), a 2.0 entry between them
    where it was, every sample and metadata family in order, as ``entry_batches`` has them."""
    from gotk_relay.destinations.rows import COALESCE_BYTES
    from gotk_relay.model import FamilyMetadata, MetricType

    def entry(i: int, protocol: Protocol = Protocol.V1) -> Any:
        item = Series(
            (("__name__", f"gotk_x{i % 3}"), ("i", str(i))), (Sample(1.0 * i, NOW_MS + i),)
        )
        metadata = (
            (FamilyMetadata(f"gotk_x{i % 3}", MetricType.GAUGE, "h", ""),) if i % 7 == 0 else ()
        )
        return encode_entry(Batch((item,), metadata), protocol)

    entries = [entry(i) for i in range(40)]
    entries.insert(20, entry(99, Protocol.V2))

    async def both() -> tuple[list[Any], list[Any]]:
        steps = [step async for step in entry_steps(entries, 1 << 20, loops)]
        batches = [batch async for batch in entry_batches(entries, 4096)]
        return steps, batches  # type: ignore[return-value]

    steps, batches = asyncio.run(both())
    assert _flat(steps) == _flat(batches)
    metadata = [m for step in steps if isinstance(step, Batch) for m in step.metadata]
    assert metadata == [m for b in batches for m in b.metadata]
    # Two runs of 1.0 entries around the 2.0 one: two messages of rows, not forty.
    assert sum(1 for step in steps if isinstance(step, list) and step) == 2
    assert COALESCE_BYTES >= 1 << 16


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=12),
    st.integers(1, 40),
)
def test_a_step_is_cut_at_its_budget_of_points(
    loops: Loops, shapes: list[tuple[int, bool]], points: int
) -> None:
    """``split_step``: the first part holds the step's first ``points`` samples (a row or a
    decoded series cut where they end), the rest every other one, in order, and the count it
    returns is what the first part holds."""
    from gotk_relay.destinations.rows import split_step, step_points

    step: list[Item] = []
    for i, (count, decoded) in enumerate(shapes):
        samples = tuple(Sample(float(k), NOW_MS + k) for k in range(count))
        if decoded:
            step.append(Series((("__name__", f"s{i}"),), samples))
        else:
            step.append((b"key%d" % i, tuple((s.value, s.timestamp) for s in samples), None))

    def flat(items: list[Item]) -> list[tuple[Any, float]]:
        out: list[tuple[Any, float]] = []
        for item in items:
            if isinstance(item, Series):
                out += [(item.labels, s.value) for s in item.samples]
            else:
                out += [(item[0], value) for value, _ in item[1]]
        return out

    first, rest, taken = split_step(list(step), points, loops)
    total = step_points(step)
    assert taken == step_points(first) == min(points, total)
    assert flat(first) + flat(rest or []) == flat(step)
    assert (rest is None) == (total <= points)


# ---- a memo miss: a key's label set, and what the destinations derive from it ----------------

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from("aZ09_-:./+ É"), max_size=12
)
_LONG = st.sampled_from(["", "x" * 127, "y" * 128, "Ab" * 100, "a" * 199, "b:" * 101])


def _label_field(name: bytes, value: bytes, shape: str) -> bytes:
    """One Label field of a row key, its message written as ``shape`` says: canonical ones
    (both fields, or an empty one omitted) and the neighbours the compiled reader hands over
    (two-byte tags among them)."""
    payload = {
        "canonical": (_ld(1, name) if name else b"") + (_ld(2, value) if value else b""),
        "both written": _ld(1, name) + _ld(2, value),
        "wide": _ld(1, name, wide=True) + _ld(2, value, wide=True),
        "value first": _ld(2, value) + _ld(1, name),
        "name twice": _ld(1, b"gone") + _ld(1, name) + _ld(2, value),
        "unknown field": _ld(1, name) + _ld(2, value) + b"\x18\x01",
        "bad utf-8": _ld(1, name) + _ld(2, value + b"\xff"),
    }[shape]
    return _ld(1, payload, wide=shape == "wide")


_SHAPES = (
    "canonical",
    "both written",
    "wide",
    "value first",
    "name twice",
    "unknown field",
    "bad utf-8",
)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(_TEXT | _LONG, _TEXT | _LONG, st.sampled_from(_SHAPES)), min_size=0, max_size=6
    )
)
def test_a_key_reads_as_the_label_set_rw1_decodes_with_its_strings_interned(
    fields: list[tuple[str, str, str]],
) -> None:
    """A memo miss reads the key's label set in C (canonical Labels) and hands anything else
    to rw1.decode: either way the label set rw1.decode reads, each string the interned one
    (memos share them), and the same error for bytes that are not UTF-8."""
    key = b"".join(_label_field(k.encode(), v.encode(), shape) for k, v, shape in fields)
    try:
        want = labels(key, PYTHON)
    except DecodeError:
        if COMPILED is not None:
            with pytest.raises(DecodeError):
                labels(key, COMPILED)
        return
    assert want == series(key).labels
    if COMPILED is None:
        return
    got = labels(key, COMPILED)
    assert got == want
    assert all(text is sys.intern(text) for pair in got for text in pair)
    if all(shape in ("canonical", "both written") for _, _, shape in fields):
        assert COMPILED.compiled.labels(key) == want  # read in C, not handed over


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_TEXT | _LONG | st.sampled_from(["__name__", "host"]), _TEXT | _LONG)),
    st.sampled_from([None, "host", "É"]),
    st.lists(st.sampled_from(["env:prod", "", "team:a", "kind:helmrelease"]), max_size=3),
)
def test_tags_counter_keys_and_attributes_of_a_label_set_match_their_twins(
    pairs: list[tuple[str, str]], host_label: str | None, static_tags: list[str]
) -> None:
    """What a memo miss derives from a label set, compiled and in Python: the Datadog tags
    (lowercased in C where a tag is one as it stands, else normalised by normalize_tag) and
    host, the counter key, and the OTLP attributes' bytes."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    label_set = tuple(pairs)
    statics = tuple(static_tags)
    assert series_tags(label_set, host_label, statics, COMPILED) == series_tags(
        label_set, host_label, statics, PYTHON
    )
    assert counter_key(label_set, COMPILED) == counter_key(label_set, PYTHON)
    assert attributes_bytes(label_set, COMPILED) == attributes_bytes(label_set, PYTHON)


def test_tags_that_are_tags_as_they_stand_and_those_normalize_tag_rewrites() -> None:
    """The compiled fast path's edges, each against normalize_tag: case, the characters a tag
    keeps, a first character that is not a letter, 200 characters and 201, a trailing ':'."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    cases = [
        ("Kind", "HelmRelease"),
        ("le", "+Inf"),
        ("_x", "y"),
        ("9", "y"),
        ("a", "b-c:d.e/f_9"),
        ("a", "b c"),
        ("a", "x" * 198),
        ("a", "x" * 199),
        ("a", "x:"),
        ("a", ""),
        ("a", "É"),
        ("a", "\u00e9"),
    ]
    for pair in cases:
        label_set = (pair,)
        assert series_tags(label_set, None, (), COMPILED) == (
            [t] if (t := normalize_tag(f"{pair[0]}:{pair[1]}")) else [],
            "",
        ), pair


# ---- more label sets than a destination remembers ------------------------------------------


def _cycle(count: int, round_: int) -> Batch:
    """One scrape of ``count`` label sets (a cycle: each comes once a round)."""
    return Batch(
        tuple(
            Series(
                (("__name__", f"m{i % 5}"), ("i", str(i)), ("job", "j")),
                (Sample(float(i + round_), NOW_MS - 60_000 + 1000 * round_),),
            )
            for i in range(count)
        )
    )


def test_a_full_datadog_memo_keeps_what_it_holds_and_maps_the_rest_afresh(loops: Loops) -> None:
    """Over its bound the memo stops learning instead of forgetting: the label sets it holds
    keep hitting round after round (the first ones learnt; the compiled loop's index holds the
    same), and every series is mapped as with a memo without a bound."""
    options = MappingOptions(counters_as_count=False)
    bound = caches.Saturating(40)
    memo, free = SeriesMemo(bound.learns), SeriesMemo()
    for round_ in range(3):
        got: list[Any] = []
        want: list[Any] = []
        for target, into in ((memo, got), (free, want)):
            for step in _steps(_cycle(100, round_), loops):
                items = list(step.series) if isinstance(step, Batch) else step
                found = map_items(
                    items,
                    options,
                    TypeCache(),
                    CounterStore(),
                    NOW_MS,
                    {},
                    NameCache(),
                    target,
                    loops,
                )
                into += [(row[1], row[3], row[5]) for row in found.rows]
        assert got == want and len(got) == 100
        assert len(memo) == 40 and len(free) == 100
        assert {info[0][1][1] for info in memo.by_bytes.values()} == {str(i) for i in range(40)}
        if loops.compiled is not None and memo.index is not None:
            assert loops.compiled.key_index_size(memo.index) == 40


def test_a_full_otlp_memo_keeps_what_it_holds_and_is_emptied_once_an_interval(
    loops: Loops,
) -> None:
    """The OTLP rows' memo (per MappingState and resource_labels) likewise: full, it stops
    learning and the requests are those of an unbounded one; it is emptied when full at most
    once per interval of the state's clock, then learns again."""
    now = [1000.0]
    state, reference = MappingState(clock=lambda: now[0]), MappingState()
    reference.row_bounds[("job",)] = caches.Saturating(1 << 30)  # no bound to speak of
    limit = mapper_module.ROW_MEMOS.limit
    mapper_module.ROW_MEMOS.limit = 40
    try:
        for round_ in range(4):
            if round_ == 3:
                now[0] += 600.0  # an interval later: the full memo is emptied, then refilled
            outputs = []
            for target in (state, reference):
                mapper = Mapper(target, "cumulative", ("job",), loops)
                for step in _steps(_cycle(100, round_), loops):
                    mapper.feed(step)
                mapper.finish()
                got = mapper.take()
                target.commit(got.updates)
                outputs.append(got.request)
            assert outputs[0] == outputs[1]
            memo = state.rows[("job",)]
            assert len(memo) == 40 and len(reference.rows[("job",)]) == 100
            held = {info.shell.labels[1][1] for info in memo.values()}
            assert held == {str(i) for i in range(40)}  # the first learnt, every round
            if round_ == 0:
                first = list(memo.values())
            kept = all(a is b for a, b in zip(first, memo.values(), strict=True))
            assert kept == (round_ < 3)  # emptied an interval after it was found full
            # The keys the held infos share, one object per value: 5 kinds, 5 metrics, a
            # resource and a scope, however many label sets (and emptied with the memo).
            shared = state.row_keys[("job",)]
            assert len(shared) == 12
            if round_ == 0:
                shared_first = list(shared)
            assert all((shared[key] is key) == (round_ < 3) for key in shared_first)
            for info in memo.values():
                metric = info.metric_key("gauge")
                assert shared[metric] is metric and shared[info.kind_key] is info.kind_key
                assert shared[info.ctx.resource] is info.ctx.resource
            bounds = mapper_module.ROW_MEMOS.bounds()
            assert any(b.limit == 40 and len(b) == 40 for b in bounds)
            if loops.compiled is not None:  # its index in C holds what the memo holds
                index = state.row_indexes[("job",)]
                assert loops.compiled.key_index_size(index) == 40
                assert loops.compiled.key_index_infos(index, [(k, (), None) for k in memo]) == [
                    *memo.values()
                ]
        # A label set the full memo does not keep shares nothing: nothing added for it.
        unkept = Batch((Series((("__name__", "unkept"), ("job", "j")), (Sample(1.0, NOW_MS),)),))
        mapper = Mapper(state, "cumulative", ("job",), loops)
        for step in _steps(unkept, loops):
            mapper.feed(step)
        mapper.finish()
        assert len(mapper.take().request.resource_metrics) == 1
        assert len(state.row_keys[("job",)]) == 12
    finally:
        mapper_module.ROW_MEMOS.limit = limit


_EDGE_VALUES = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    99.0,
    1e15,
    9999999999999998.0,
    1e16,
    -1e16,
    -9999999999999998.0,
    float(2**53),
    float(2**53 + 2),
    1.7e9,
    0.5,
    -2.5,
    1e-5,
    1e-7,
    5e-324,
    1.7976931348623157e308,
    123456789.123,
]


@settings(max_examples=150)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20))
def test_render_writes_every_value_as_the_series_json_does(values: list[float]) -> None:
    """The compiled render writes a whole number below 1e16 itself ("%d.0", "-0.0") and any
    other value through orjson: byte for byte the JSON of the series either way."""
    if COMPILED is None:
        pytest.skip("the _rows extension is not built")
    values = [*_EDGE_VALUES, *values]

    def rows() -> list[Any]:
        return [
            [
                *MappedSeries(b"k%d" % i, "m", 0, ("a:b",), "", [(1_764_000_000, v)]).row()[:9],
                [None] * 7,
            ]
            for i, v in enumerate(values)
        ]

    want = [orjson.dumps(MappedSeries(*row[:9]).to_dict()) for row in rows()]
    assert [datadog.render(row, {}) for row in rows()] == want
    heads: dict[tuple[str, int], bytes] = {}
    parts: list[bytes] = []
    made = rows()
    datadog.render_all(made, heads, parts, COMPILED)
    parts.clear()
    datadog.render_all(made, heads, parts, COMPILED)  # heads and tags' JSON known: compiled
    assert parts == want


def test_entries_known_to_hold_no_families_are_not_read_for_them(loops: Loops) -> None:
    """Most sample requests carry no metadata (Prometheus sends it apart): their entries say
    so, and the converters' first pass (every family before any series) skips them instead of
    decompressing them once more; an entry that may hold families, alone or in a run read
    together, is read as before."""
    from gotk_relay.delivery.entry import Entry
    from gotk_relay.model import FamilyMetadata, MetricType

    family = FamilyMetadata("up", MetricType.GAUGE, "h", "")
    item = Series((("__name__", "up"),), (Sample(1.0, NOW_MS),))
    with_family = encode_entry(Batch((item,), (family,)), Protocol.V1)
    without = encode_entry(Batch((item,), ()), Protocol.V1)
    assert with_family.families and not without.families

    def families(entries: list[Entry]) -> list[FamilyMetadata]:
        async def collect() -> list[Any]:
            return [step async for step in entry_steps(entries, 1 << 20, loops)]

        steps = asyncio.run(collect())
        return [m for step in steps if isinstance(step, Batch) for m in step.metadata]

    assert families([with_family]) == [family]
    assert families([without, with_family, without]) == [family]  # one run, read together
    # The flag is what is trusted: a body whose entry says "none" is not opened for families.
    assert families([with_family._replace(families=False)]) == []
    assert families([with_family._replace(families=False), without]) == []


def _feed_rows(mapper: Mapper, batch: Batch, loops: Loops) -> None:
    """``batch`` fed to ``mapper`` as the OTLP client feeds a queued entry: step by step."""

    async def steps() -> list[Any]:
        return [s async for s in entry_steps([encode_entry(batch, Protocol.V1)], 1 << 20, loops)]

    for step in asyncio.run(steps()):
        mapper.feed(step)


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
@pytest.mark.parametrize("created", [9.3e15, 1e300, float("inf"), -5.0])
def test_a_created_time_otlp_cannot_hold_is_no_created_time(
    loops: Loops, temporality: str, created: float
) -> None:
    """A ``_created`` value past what OTLP's nanoseconds hold (or not a time at all) is taken
    as no created time, on both loops: the counter's point starts at its sample. It made the
    compiled loop raise, and the sender retry the request for ever."""
    batch = Batch(
        (
            Series((("__name__", "req_created"), ("job", "j")), (Sample(created, NOW_MS),)),
            Series((("__name__", "req_total"), ("job", "j")), (Sample(5.0, NOW_MS),)),
        )
    )
    state = MappingState()
    points = []
    for _ in range(2):  # in delta mode the second request sends a point
        mapper = Mapper(state, temporality, ("job",), loops)
        _feed_rows(mapper, batch, loops)
        mapper.finish()
        taken = mapper.take()
        state.commit(taken.updates)
        points = [
            (p.start_time_unix_nano, p.time_unix_nano, p.as_double)
            for rm in taken.request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            for p in metric.sum.data_points
        ]
    if temporality == "cumulative":
        assert points == [(NOW_MS * 1_000_000, NOW_MS * 1_000_000, 5.0)]


@pytest.mark.parametrize("as_series", [False, True], ids=["rows", "series"])
def test_a_sample_at_a_time_otlp_cannot_hold_is_unmapped(loops: Loops, as_series: bool) -> None:
    """A timestamp before 1970 or past what OTLP's nanoseconds hold (year 2554): no point can
    carry it, so it is counted as unmapped, on both loops, from rows and from decoded series;
    the other samples map as ever. It made the encoding raise, and the sender retry the request
    for ever."""
    far = (2**64 - 1) // 1_000_000 + 1
    batch = Batch(
        (
            Series(
                (("__name__", "temp"), ("job", "j")),
                (Sample(1.0, -1), Sample(2.0, NOW_MS), Sample(3.0, far)),
            ),
            Series((("__name__", "req_total"), ("job", "j")), (Sample(5.0, far),)),
        )
    )
    mapper = Mapper(MappingState(), "cumulative", ("job",), loops)
    if as_series:
        mapper.feed(batch)
    else:
        _feed_rows(mapper, batch, loops)
    mapper.finish()
    taken = mapper.take()
    points = [
        (p.time_unix_nano, p.as_double)
        for rm in taken.request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for p in (*metric.gauge.data_points, *metric.sum.data_points)
    ]
    assert points == [(NOW_MS * 1_000_000, 2.0)]
    assert taken.unmapped == 3


def test_a_classic_histogram_count_past_uint64_is_held_at_its_largest(loops: Loops) -> None:
    """OTLP counts are uint64: a ``_count`` (or bucket) of 2**64 or more is sent as 2**64 - 1
    rather than making the request unsendable (upb refused it, and the sender retried it for
    ever)."""
    huge = 2.0**65
    labels = (("job", "j"),)
    batch = Batch(
        (
            Series((("__name__", "lat_bucket"), *labels, ("le", "+Inf")), (Sample(huge, NOW_MS),)),
            Series((("__name__", "lat_count"), *labels), (Sample(huge, NOW_MS),)),
            Series((("__name__", "lat_sum"), *labels), (Sample(3.0, NOW_MS),)),
        ),
        (FamilyMetadata("lat", MetricType.HISTOGRAM, "", ""),),
    )
    mapper = Mapper(MappingState(), "cumulative", ("job",), loops)
    mapper.feed(batch)
    mapper.finish()
    taken = mapper.take()
    counts = [
        p.count
        for rm in taken.request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for p in metric.histogram.data_points
    ]
    assert counts == [2**64 - 1]


def _small_steps(batch: Batch, loops: Loops, size: int) -> list[Batch | list[Item]]:
    """``batch``'s steps cut into steps of ``size`` series (more places for a mapping to stop)."""
    out: list[Batch | list[Item]] = []
    for step in _steps(batch, loops):
        if isinstance(step, Batch):
            out.append(step)
        else:
            out.extend(step[i : i + size] for i in range(0, len(step), size))
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    _traffic(),
    _traffic(),
    st.sampled_from(["cumulative", "delta"]),
    st.integers(1, 3),
    st.integers(0, 12),
    st.booleans(),
)
@example(
    first=Batch(()),
    second=Batch(
        (
            Series((("__name__", "rpc_seconds_count"), ("job", "j")), (Sample(0.0, NOW_MS),)),
            *[Series((("__name__", "up"), ("job", "j")))] * 4,
            Series((("__name__", "rpc_seconds_bucket"), ("job", "j"), ("le", "0.5"))),
            Series((("__name__", "up"), ("job", "j"))),
        )
    ),
    temporality="cumulative",
    size=1,
    stop=6,
    flushed=False,
)
def test_otlp_mapper_rewound_to_a_checkpoint_maps_again_as_the_first_time(
    loops: Loops,
    first: Batch,
    second: Batch,
    temporality: Any,
    size: int,
    stop: int,
    flushed: bool,
) -> None:
    """What the OTLP client does when mapping a request raised: the mapper is put back where
    the request started (``Mapper.rewind``) and its steps are mapped again. Whatever the
    abandoned attempt did (steps fed, histogram parts grouped or flushed, parts of the request
    cut), the request mapped again is the one a mapper that never stopped maps, once that one
    knows what the attempt learnt (families and shapes, which a rewind keeps)."""
    states = MappingState(), MappingState()
    mappers = [Mapper(state, temporality, ("job", "instance"), loops) for state in states]
    requests = []
    for mapper, state in zip(mappers, states, strict=True):
        for step in _small_steps(first, loops, size):
            mapper.feed(step)
        state.commit(mapper.take().updates)  # the first request, accepted
    steps = _small_steps(second, loops, size)
    mapper = mappers[1]
    checkpoint = mapper.checkpoint()
    for step in steps[:stop]:  # the attempt given up
        mapper.feed(step)
    if flushed:
        mapper.flush_groups()
    mapper.cut()
    mapper.rewind(checkpoint)
    reference, learnt = states  # mappers[0] never stopped; mappers[1] was rewound
    reference.inferred.update(learnt.inferred)
    reference.version += 1
    mappers[0].seen_shapes.update(mapper.seen_shapes)
    mappers[0]._shapes_version += 1
    for mapper in mappers:
        for step in steps:
            mapper.feed(step)
        mapper.finish()
        requests.append(mapper.take())
    want, got = requests
    assert got.request == want.request
    assert (got.points, got.updates, got.unmapped) == (want.points, want.updates, want.unmapped)
