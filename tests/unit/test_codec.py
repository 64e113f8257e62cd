"""Remote write 1.0 / 2.0 codecs: lossless round trips and conversion, exact float bits."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Metadata,
    MetricType,
    Sample,
    Series,
    float_bits,
    is_stale,
    with_series_families,
)
from gotk_relay.wire import remote_pb2, rw1, rw2, write_v2_pb2
from gotk_relay.wire.errors import DecodeError
from tests.support.strategies import ORDINARY_NAN, canonical, series, v1_batches, v2_batches


@pytest.mark.slow
@settings(max_examples=300)
@given(v1_batches())
def test_v1_round_trip_is_lossless(batch: Batch) -> None:
    assert canonical(rw1.decode(rw1.encode(batch), validate=False)) == canonical(batch)


@pytest.mark.slow
@settings(max_examples=300)
@given(v2_batches())
def test_v2_round_trip_is_lossless(batch: Batch) -> None:
    # Decoded, the series' own metadata also come as their families' entries (for 1.0).
    assert canonical(rw2.decode(rw2.encode(batch), validate=False)) == canonical(
        with_series_families(batch)
    )


@settings(max_examples=200)
@given(v1_batches(), st.data())
def test_v1_to_v2_to_v1_keeps_series_and_their_metadata(batch: Batch, data: st.DataObject) -> None:
    # v2 carries metadata per series, so a v1 family survives when a series bears its name.
    # (A family matched through a suffix, like http_requests for http_requests_total, comes
    # back under the series' name: v2 has no notion of families.)
    names = sorted({s.name for s in batch.series})
    assume(not any(a != b and b.startswith(a + "_") for a in names for b in names))
    families = (
        tuple(
            FamilyMetadata(
                name,
                data.draw(st.sampled_from(list(MetricType))),
                data.draw(st.text(max_size=9)),
                "",
            )
            for name in data.draw(st.lists(st.sampled_from(names), unique=True))
            if names
        )
        if names
        else ()
    )
    batch = Batch(batch.series, families)
    back = rw1.decode(
        rw1.encode(_v1_view(rw2.decode(rw2.encode(batch), validate=False))), validate=False
    )
    assert canonical(back.series) == canonical(batch.series)
    assert set(back.metadata) == set(families)


@pytest.mark.slow
@settings(max_examples=200)
@given(v2_batches())
def test_v2_to_v1_to_v2_keeps_everything_v1_can_carry(batch: Batch) -> None:
    # v1 has no start/created timestamps; metadata goes per family (one per metric name).
    consistent = _one_metadata_per_name(batch)
    v1 = rw1.decode(rw1.encode(_v1_view(consistent)), validate=False)
    back = rw2.decode(rw2.encode(v1), validate=False)
    expected = Batch(
        tuple(
            s._replace(
                samples=tuple(x._replace(start_timestamp=0) for x in s.samples),
                histograms=tuple(h._replace(start_timestamp=0) for h in s.histograms),
                created_timestamp=0,
            )
            for s in consistent.series
        ),
        (),
    )
    assert canonical(back) == canonical(with_series_families(expected))


def _one_metadata_per_name(batch: Batch) -> Batch:
    first: dict[str, Metadata | None] = {}
    for s in batch.series:
        first.setdefault(s.name, s.metadata)
    return Batch(tuple(s._replace(metadata=first[s.name]) for s in batch.series), ())


def _v1_view(batch: Batch) -> Batch:
    """What a v1 encoder is given for a v2 batch: per-series metadata lifted to families."""
    families: dict[str, FamilyMetadata] = {}
    for s in batch.series:
        if s.metadata is not None:
            families.setdefault(s.name, FamilyMetadata(s.name, *s.metadata))
    return Batch(
        tuple(s._replace(metadata=None) for s in batch.series),
        batch.metadata + tuple(families.values()),
    )


@pytest.mark.parametrize(
    "value",
    [STALE_NAN, ORDINARY_NAN, float("inf"), float("-inf"), -0.0, 5e-324],
    ids=["stale", "nan", "+inf", "-inf", "-0", "denormal"],
)
@pytest.mark.parametrize("codec", [rw1, rw2], ids=["v1", "v2"])
def test_special_values_keep_their_bits(codec: object, value: float) -> None:
    batch = Batch((Series((("__name__", "up"),), (Sample(value, 1),)),))
    got = codec.decode(codec.encode(batch)).series[0].samples[0].value  # type: ignore[attr-defined]
    assert float_bits(got) == float_bits(value)


def test_stale_marker_is_not_an_ordinary_nan() -> None:
    assert is_stale(STALE_NAN)
    assert not is_stale(ORDINARY_NAN)
    assert float_bits(STALE_NAN) == 0x7FF0000000000002


def test_v2_encoding_starts_symbols_with_empty_string_and_dedupes() -> None:
    batch = Batch(
        (
            Series(
                (("__name__", "a"), ("job", "x")),
                (Sample(1, 1),),
                metadata=Metadata(MetricType.GAUGE, "h", ""),
            ),
            Series((("__name__", "b"), ("job", "x")), (Sample(2, 1),)),
        )
    )
    request = write_v2_pb2.Request.FromString(rw2.encode(batch))
    assert request.symbols[0] == ""
    assert len(request.symbols) == len(set(request.symbols))
    assert request.timeseries[0].metadata.type == MetricType.GAUGE


def test_v1_metadata_is_attached_to_v2_series_by_family() -> None:
    batch = Batch(
        (
            Series((("__name__", "http_requests_total"),), (Sample(1, 1),)),
            Series((("__name__", "lat_bucket"), ("le", "1")), (Sample(1, 1),)),
        ),
        (
            FamilyMetadata("http_requests", MetricType.COUNTER, "Requests.", ""),
            FamilyMetadata("lat", MetricType.HISTOGRAM, "Latency.", "seconds"),
        ),
    )
    got = rw2.decode(rw2.encode(batch))
    assert got.series[0].metadata == Metadata(MetricType.COUNTER, "Requests.", "")
    assert got.series[1].metadata == Metadata(MetricType.HISTOGRAM, "Latency.", "seconds")


def _v1(*labels: tuple[str, str]) -> bytes:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    for k, v in labels:
        ts.labels.add(name=k, value=v)
    ts.samples.add(value=1, timestamp=1)
    raw: bytes = req.SerializeToString()
    return raw


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_v1(("job", "x")), "without a metric name"),
        (_v1(("__name__", "up"), ("", "x")), "empty label name"),
        (_v1(("__name__", "up"), ("job", "a"), ("job", "b")), "duplicate label name"),
        (_v1(("__name__", "")), "empty metric name"),
        (b"\x0a\xff\xff\xff\xff\x0f", "invalid protobuf"),
        (b"\x08", "invalid protobuf"),
    ],
    ids=[
        "no-name",
        "empty-name",
        "duplicate",
        "empty-metric-name",
        "truncated",
        "wrong-wire-type",
    ],
)
def test_v1_malformed_requests_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        rw1.decode(body)


@pytest.mark.parametrize(
    ("labels", "unsorted"),
    [
        ((("__name__", "up"), ("job", "")), 0),
        ((("job", "a"), ("__name__", "up")), 1),
        ((("z", "1"), ("a", ""), ("__name__", "up")), 1),
    ],
    ids=["empty-value", "unsorted", "unsorted-with-empty-value"],
)
def test_v1_sets_prometheus_accepts_are_decoded_sorted_and_counted(
    labels: tuple[tuple[str, str], ...], unsorted: int
) -> None:
    """Empty values and any label order are valid (Prometheus 3, Mimir, VictoriaMetrics take
    them); the decoder hands on the set sorted by name and says how many it sorted."""
    decoded = rw1.decode_counted(_v1(*labels))
    assert [s.labels for s in decoded.batch.series] == [tuple(sorted(labels))]
    assert decoded.sorted == unsorted


def _v2(symbols: list[str], refs: list[int], help_ref: int = 0) -> bytes:
    req = write_v2_pb2.Request(symbols=symbols)
    ts = req.timeseries.add(labels_refs=refs)
    ts.samples.add(value=1, timestamp=1)
    ts.metadata.help_ref = help_ref
    raw: bytes = req.SerializeToString()
    return raw


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_v2(["", "__name__", "up"], [1, 7]), "out of range"),
        (_v2(["", "__name__", "up"], [1, 2], help_ref=9), "help_ref: symbol ref 9 out of range"),
        (_v2(["", "__name__", "up"], [1, 2, 1]), "odd number"),
        (_v2(["x", "__name__", "up"], [1, 2]), r"symbols\[0\]"),
        (b"\x2a\x03\x0a\x01", "invalid protobuf"),
        (_v2(["", "__name__", "up", "a"], [1, 2, 3, 2, 3, 2]), 'duplicate label name "a"'),
        (_v2(["", "__name__", "up", "a"], [3, 2]), "without a metric name"),
        (_v2(["", "__name__", "up", "a"], [1, 0]), "empty metric name"),
        (_v2(["", "__name__", "up", "a"], [1, 2, 0, 2]), "empty label name"),
        (b"\x2a\x02\x10\x01", "samples .2. has wire type VARINT, declared LEN"),
        (b"\x2a\x02\x13\x14", "group wire type"),
    ],
    ids=[
        "label-ref",
        "help-ref",
        "odd-refs",
        "symbols0",
        "truncated",
        "duplicate",
        "no-name",
        "empty-name-value",
        "empty-label-name",
        "wrong-wire-type",
        "group",
    ],
)
def test_v2_malformed_requests_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        rw2.decode(body)


def test_v2_unsorted_label_sets_are_decoded_sorted_and_counted() -> None:
    body = _v2(["", "__name__", "up", "job", "a", "b", ""], [3, 4, 1, 2, 5, 6])
    decoded = rw2.decode_counted(body)
    assert decoded.batch.series[0].labels == (("__name__", "up"), ("b", ""), ("job", "a"))
    assert decoded.sorted == 1


def test_v2_series_with_samples_and_histograms_is_refused() -> None:
    req = write_v2_pb2.Request(symbols=["", "__name__", "up"])
    ts = req.timeseries.add(labels_refs=[1, 2])
    ts.samples.add(value=1, timestamp=1)
    ts.histograms.add(count_int=1, timestamp=1)
    with pytest.raises(DecodeError, match="both samples and histograms"):
        rw2.decode(req.SerializeToString())


def test_v2_histograms_whose_spans_do_not_cover_their_buckets_are_refused() -> None:
    req = write_v2_pb2.Request(symbols=["", "__name__", "up"])
    ts = req.timeseries.add(labels_refs=[1, 2])
    ts.histograms.add(count_int=3, timestamp=1, positive_deltas=[1, 1])
    ts.histograms[0].positive_spans.add(offset=0, length=4_000_000_000)
    with pytest.raises(DecodeError) as caught:
        rw2.decode(req.SerializeToString())
    assert str(caught.value) == (
        "invalid native histogram in series up{} (timeseries[0]): histograms[0]: "
        "positive side: spans need 4000000000 buckets, have 2 buckets"
    )
    # Spans that cover them are a histogram as any other.
    ts.histograms[0].positive_spans[0].length = 2
    assert rw2.decode(req.SerializeToString()).series[0].histograms[0].positive_deltas == (1, 1)


@given(series(v2=True))
def test_decode_never_raises_anything_but_decode_error_on_mangled_bytes(item: Series) -> None:
    data = bytearray(rw2.encode(Batch((item,))))
    for cut in (len(data) // 2, len(data) - 1):
        for codec in (rw1, rw2):
            with contextlib.suppress(DecodeError):
                codec.decode(bytes(data[:cut]))
