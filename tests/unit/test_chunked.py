"""``destinations.chunked``: queued entries as small batches that, put back together, are the
entries' own series and metadata, whatever the field order and however large a series is."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import Entry, compress, decode_entry, encode_entry
from gotk_relay.destinations.chunked import entry_batches, split_batch
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Labels,
    MetricType,
    Protocol,
    Sample,
    Series,
    float_bits,
    iter_points,
)
from gotk_relay.wire import rw1
from gotk_relay.wire.errors import DecodeError


def _chunks(entries: list[Entry], budget: int) -> list[Batch]:
    async def collect() -> list[Batch]:
        return [batch async for batch in entry_batches(entries, budget)]

    return asyncio.run(collect())


def _points(batches: list[Batch]) -> list[tuple[Labels, int, object]]:
    """Every point with its labels, floats as their bits (NaN payloads and -0.0 included)."""
    out: list[tuple[Labels, int, object]] = []
    for batch in batches:
        for labels, ts, value in iter_points(batch):
            out.append((labels, ts, float_bits(value) if isinstance(value, float) else value))
    return out


def _exemplars(batches: list[Batch]) -> list[tuple[Labels, Exemplar]]:
    return [(s.labels, e) for b in batches for s in b.series for e in s.exemplars]


values = st.one_of(
    st.floats(allow_nan=False), st.just(STALE_NAN), st.just(-0.0), st.just(float("nan"))
)
samples = st.lists(st.builds(Sample, values, st.integers(-(2**62), 2**62)), max_size=300).map(tuple)
histograms = st.lists(
    st.integers(0, 2**40).map(
        lambda ts: Histogram(
            ts,
            count_value=3,
            sum=1.5,
            positive_spans=(BucketSpan(0, 2),),
            positive_deltas=(1, 1),
        )
    ),
    max_size=20,
).map(tuple)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
series = st.builds(
    Series,
    st.lists(st.tuples(names, names), min_size=1, max_size=4).map(
        lambda pairs: (("__name__", pairs[0][1]), *sorted(dict(pairs).items()))
    ),
    samples,
    histograms,
    exemplars=st.lists(
        st.builds(
            Exemplar, st.just((("trace_id", "ab"),)), st.floats(allow_nan=False), st.integers(0, 99)
        ),
        max_size=2,
    ).map(tuple),
)
metadata = st.lists(
    st.builds(FamilyMetadata, names, st.sampled_from(list(MetricType)), names, names), max_size=3
).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.builds(Batch, st.lists(series, max_size=6).map(tuple), metadata), max_size=4),
    st.sampled_from([64, 512, 8192]),
)
def test_chunks_put_together_are_the_entries(batches: list[Batch], budget: int) -> None:
    entries = [encode_entry(batch, Protocol.V1) for batch in batches]
    whole = [decode_entry(entry) for entry in entries]
    chunks = _chunks(entries, budget)
    assert _points(chunks) == _points(whole)  # every point, in order, with its exact bits
    assert _exemplars(chunks) == _exemplars(whole)
    # Metadata first, all of it, in order.
    assert [m for c in chunks for m in c.metadata] == [m for b in whole for m in b.metadata]
    first_series = next((i for i, c in enumerate(chunks) if c.series), len(chunks))
    assert not any(c.metadata for c in chunks[first_series:])


def test_a_large_series_is_cut_by_samples_into_bounded_batches() -> None:
    labels = (("__name__", "big"), ("job", "a"))
    big = Series(labels, tuple(Sample(i * 0.25, 1000 + i) for i in range(20_000)))
    chunks = [c for c in _chunks([encode_entry(Batch((big,)), Protocol.V1)], 4096) if c.series]
    assert len(chunks) > 50
    assert all(len(c.series) == 1 and c.series[0].labels == labels for c in chunks)
    # Each holds about the budget: the labels, and one sample field at most over it.
    assert max(len(rw1.encode(c)) for c in chunks) <= 4096 + 64
    assert [s for c in chunks for s in c.series[0].samples] == list(big.samples)


def _field(number: int, payload: bytes) -> bytes:
    return rw1.uvarint(number << 3 | 2) + rw1.uvarint(len(payload)) + payload


def _sample(value: float, ts: int) -> bytes:
    return b"\x09" + struct.pack("<d", value) + b"\x10" + rw1.uvarint(ts)


def test_any_field_order_and_unknown_fields_are_read_as_protobuf_does() -> None:
    """Labels after the samples, an unknown field of each wire type, a two-byte tag: a
    TimeSeries that is not Prometheus' field order is still cut with its labels on each piece."""
    label = _field(1, _field(1, b"__name__") + _field(2, b"late"))
    unknown = b"\x28\x07" + b"\x31" + bytes(8) + b"\x3d" + bytes(4) + _field(99, b"x")
    fields = [_field(2, _sample(float(i), 5000 + i)) for i in range(600)]
    timeseries = b"".join([*fields[:300], unknown, label, *fields[300:]])
    message = _field(1, timeseries) + b"\xa0\x06\x01"  # unknown field 100 of the request
    chunks = [c for c in _chunks([Entry(compress(message), Protocol.V1, 600, 0)], 512) if c.series]
    assert len(chunks) > 5
    assert {c.series[0].labels for c in chunks} == {(("__name__", "late"),)}
    assert [s for c in chunks for s in c.series[0].samples] == [
        Sample(float(i), 5000 + i) for i in range(600)
    ]


@pytest.mark.parametrize(
    "payload",
    [b"\x0a\x05\x0a", b"\x0b\x00", b"\x0a\x80"],
    ids=["field-past-end", "group-wire-type", "truncated-varint"],
)
def test_a_malformed_entry_raises_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        _chunks([Entry(compress(payload), Protocol.V1, 1, 0)], 512)


def test_remote_write_2_entries_are_decoded_whole() -> None:
    one = Series((("__name__", "v2"),), (Sample(1.5, 7),))
    meta = FamilyMetadata("v2", MetricType.GAUGE, "h", "")
    chunks = _chunks([encode_entry(Batch((one,), (meta,)), Protocol.V2)], 64)
    assert _points(chunks) == _points([Batch((one,))])


@settings(max_examples=60, deadline=None)
@given(st.lists(series, max_size=5).map(tuple), metadata, st.integers(1, 400))
def test_split_batch_takes_exactly_that_many_points_first(
    parts: tuple[Series, ...], meta: tuple[FamilyMetadata, ...], points: int
) -> None:
    batch = Batch(parts, meta)
    head, rest = split_batch(batch, points)
    assert head.point_count == min(points, batch.point_count)
    assert head.metadata == meta
    assert (rest is None) == (batch.point_count <= points)
    together = [head] if rest is None else [head, rest]
    assert _points(together) == _points([batch])
    assert _exemplars(together) == _exemplars([batch])
