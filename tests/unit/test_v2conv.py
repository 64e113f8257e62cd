"""rw2.from_v1: remote write 1.0 request bytes to remote write 2.0 request bytes.

The spec is the reference, ``rw2.from_v1_reference`` (``rw2.encode(rw1.decode(raw))``): the
compiled walk (``_v2.c``) must give its bytes exactly, for every encoding a sender may use, and
give way to it (None) only for what it does not model. Both conversions must keep what a v1
request says: labels, samples with their exact float bits, histograms, exemplars, and v1's
family metadata on each series of the family.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    STALE_NAN_BITS,
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Metadata,
    MetricType,
    Sample,
    Series,
    float_bits,
)
from gotk_relay.wire import rw1, rw2, write_v2_pb2
from gotk_relay.wire.errors import DecodeError
from tests.support.hand_proto import key, ld, series
from tests.support.strategies import (
    ORDINARY_NAN,
    canonical,
    label_values,
    metric_types,
    odd_v1_requests,
    pb_varint,
    v1_batches,
    v2_batches,
)

Convert = Callable[[bytes], bytes]
needs_native = pytest.mark.skipif(not rw2.NATIVE, reason="gotk_relay.wire._v2 is not built")


def _compiled(raw: bytes) -> bytes:
    converted: bytes | None = rw2.from_v1_walk(raw)
    assert converted is not None, "the compiled conversion gave way on a request it models"
    return converted


@pytest.fixture(params=["c", "python"])
def convert(request: pytest.FixtureRequest) -> Convert:
    """Each conversion on its own: the compiled one must not give way to the reference."""
    if request.param == "c":
        if not rw2.NATIVE:
            pytest.skip("gotk_relay.wire._v2 is not built")
        return _compiled
    return rw2.from_v1_reference


def _series(
    name: str,
    *labels: tuple[str, str],
    samples: tuple[Sample, ...] = (Sample(1.0, 1000),),
    histograms: tuple[Histogram, ...] = (),
    exemplars: tuple[Exemplar, ...] = (),
) -> Series:
    return Series((("__name__", name), *labels), samples, histograms, exemplars)


def _decoded(converted: bytes) -> Batch:
    return rw2.decode(converted, validate=False)


def test_the_converter_is_built() -> None:
    """The README's install builds it beside ``_survey``; without it a remote write 2.0
    destination converts every request through the model, ~100 times slower."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        pytest.skip("GOTK_RELAY_NO_EXTENSIONS is set: the Python reference is under test")
    assert rw2.NATIVE, f"gotk_relay.wire._v2 is not built for {sys.executable}"
    assert rw2.from_v1 is rw2.from_v1_compiled  # the switch; the other side: the test below


def test_no_extensions_switches_the_converter_off() -> None:
    code = "from gotk_relay.wire import rw2; print(rw2.NATIVE, rw2.from_v1(b'').hex())"
    env = {**os.environ, "GOTK_RELAY_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "2200"]


# -- the compiled bytes are the reference's ---------------------------------------------------


@needs_native
@settings(max_examples=150, deadline=None)
@given(v1_batches())
def test_compiled_bytes_equal_the_reference(batch: Batch) -> None:
    raw = rw1.encode(batch)
    assert _compiled(raw) == rw2.from_v1_reference(raw)


@st.composite
def _with_families(draw: st.DrawFn) -> Batch:
    """A v1 batch whose metadata names its series' families: by their own name, by the name
    less a suffix the reference strips, or a name no series has; some named twice."""
    batch = draw(v1_batches())
    stems = [s.name for s in batch.series] + [s.name + "_" for s in batch.series]
    names = draw(
        st.lists(
            st.one_of(
                st.sampled_from(stems) if stems else label_values,
                label_values,
                st.just(""),
            ),
            max_size=6,
        )
    )
    # a series named after the family plus a suffix (_bucket, _total, ...): its family's entry
    suffixed = [
        s._replace(labels=(("__name__", s.name + suffix), *s.labels[1:]))
        for s, suffix in zip(
            batch.series,
            draw(st.lists(st.sampled_from(["", "_bucket", "_total", "_gsum", "_info"]))),
            strict=False,
        )
    ]
    families = tuple(
        FamilyMetadata(
            name,
            draw(metric_types),
            draw(st.text(max_size=12)),
            draw(st.sampled_from(["", "seconds", "bytes"])),
        )
        for name in names
    )
    return Batch(tuple(suffixed) + batch.series[len(suffixed) :], families)


@needs_native
@settings(max_examples=150, deadline=None)
@given(_with_families())
def test_compiled_metadata_mapping_equals_the_reference(batch: Batch) -> None:
    raw = rw1.encode(batch)
    assert _compiled(raw) == rw2.from_v1_reference(raw)


@pytest.mark.slow
@needs_native
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_v1_requests())
def test_compiled_bytes_equal_the_reference_for_any_encoding(request: tuple[bytes, Batch]) -> None:
    """Fields in any order, unknown fields, wide varints, unpacked repeated scalars, a label's
    name or value repeated (the last one wins): the same request, so the same bytes."""
    raw, _ = request
    assert _compiled(raw) == rw2.from_v1_reference(raw)


@pytest.mark.slow
@needs_native
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), odd_v1_requests().map(lambda r: r[0])), st.data())
def test_compiled_gives_way_or_agrees_on_any_bytes(raw: bytes, data: st.DataObject) -> None:
    """Mangled bytes: the compiled walk never reads past its input and never answers what the
    reference would not; where it gives way, ``from_v1`` says what the reference says."""
    if raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1 :]
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    converted = rw2.from_v1_walk(raw)
    try:
        expected = rw2.from_v1_reference(raw)
    except (DecodeError, ValueError, OverflowError):  # the last two: int() of a float count
        assert converted is None
        with pytest.raises((DecodeError, ValueError, OverflowError)):
            rw2.from_v1(raw)
    else:
        assert converted is None or converted == expected
        assert rw2.from_v1(raw) == expected


# -- what either conversion keeps --------------------------------------------------------------


# The fixture hands over a pure function: sharing it between examples is harmless.
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=v1_batches())
def test_series_come_through_unchanged(convert: Convert, batch: Batch) -> None:
    raw = rw1.encode(batch._replace(metadata=()))
    assert canonical(_decoded(convert(raw)).series) == canonical(batch.series)


@pytest.mark.parametrize(
    ("value", "bits"),
    [
        (STALE_NAN, STALE_NAN_BITS),
        (ORDINARY_NAN, 0x7FF8000000000001),
        (-0.0, 0x8000000000000000),
        (0.0, 0),
        (float("inf"), 0x7FF0000000000000),
    ],
    ids=["stale-nan", "ordinary-nan", "negative-zero", "zero", "inf"],
)
def test_sample_values_keep_their_bits(convert: Convert, value: float, bits: int) -> None:
    raw = rw1.encode(Batch((_series("up", samples=(Sample(value, 5),)),)))
    (sample,) = _decoded(convert(raw)).series[0].samples
    assert (float_bits(sample.value), sample.timestamp) == (bits, 5)


def test_an_empty_request_is_a_request_with_only_the_empty_symbol(convert: Convert) -> None:
    assert convert(b"") == b"\x22\x00"


def test_a_metadata_only_request_has_no_series(convert: Convert) -> None:
    raw = rw1.encode(Batch((), (FamilyMetadata("up", MetricType.GAUGE, "Up.", ""),)))
    assert convert(raw) == b"\x22\x00"


def test_a_series_with_neither_samples_nor_histograms_is_left_out() -> None:
    """Prometheus' 1.0 handler takes a series with no samples and writes nothing; a 2.0 receiver
    (Prometheus 3.8+, and this relay's) refuses the whole request for one. So the 2.0 request
    leaves it out, exemplars and all, and names none of its strings."""
    kept = (
        _series("up", ("job", "a")),
        _series(
            "h",
            samples=(),
            histograms=(
                Histogram(
                    timestamp=5,
                    count_value=3,
                    zero_count=1,
                    positive_spans=(BucketSpan(0, 2),),
                    positive_deltas=(1, 0),
                ),
            ),
        ),
    )
    empty = _series("gone", ("only", "labels"), samples=())
    with_exemplar = _series(
        "gone_too", samples=(), exemplars=(Exemplar((("trace_id", "t1"),), 1.0, 5),)
    )
    raw = rw1.encode(Batch((empty, kept[0], with_exemplar, kept[1], empty)))
    converted = rw2.from_v1(raw)
    assert converted == rw2.from_v1_reference(raw)
    assert canonical(rw2.decode(converted).series) == canonical(kept)  # validated as 3.8 does
    symbols = set(write_v2_pb2.Request.FromString(converted).symbols)
    assert not symbols & {"gone", "only", "labels", "gone_too", "trace_id", "t1"}
    # the compiled walk gives way to the reference for such a request, not for the others
    if rw2.NATIVE:
        assert rw2.from_v1_walk(raw) is None
        assert rw2.from_v1_walk(rw1.encode(Batch(kept))) is not None


_INT_HISTOGRAM = Histogram(
    timestamp=1_700_000_000_000,
    count_value=12,
    zero_count=2,
    sum=3.5,
    schema=-2,
    zero_threshold=1e-128,
    negative_spans=(BucketSpan(-3, 2), BucketSpan(0, 0)),
    negative_deltas=(1, -1),
    positive_spans=(BucketSpan(1, 3),),
    positive_deltas=(2, -(2**63), 2**63 - 1),
    reset_hint=2,
)
_FLOAT_HISTOGRAM = Histogram(
    timestamp=-5,
    count_value=12.5,
    zero_count=0.0,
    is_float=True,
    sum=STALE_NAN,
    schema=-53,
    negative_counts=(1.0, -0.0),
    positive_spans=(BucketSpan(2**31 - 1, 2**32 - 1),),
    positive_counts=(ORDINARY_NAN,),
    reset_hint=3,
    custom_values=(0.5, 1.0, float("inf")),
)


@pytest.mark.parametrize(
    "item",
    [
        _series("h", samples=(), histograms=(_INT_HISTOGRAM,)),
        _series("h", samples=(), histograms=(_FLOAT_HISTOGRAM,)),
        _series("h", samples=(), histograms=(Histogram(timestamp=0),)),
        _series("h", samples=(), histograms=(_INT_HISTOGRAM, _FLOAT_HISTOGRAM)),
        _series(
            "x",
            ("job", "a"),
            exemplars=(
                Exemplar((("trace_id", "abc"), ("job", "a")), STALE_NAN, 7),
                Exemplar((), 0.0, 0),
            ),
        ),
        Series((("job", "no-name"),), (Sample(2.0, 1),)),
        _series("x", ("big", "v" * 300_000), ("small", "w")),
        _series("x", *((f"l{i:03d}", f"v{i % 7}") for i in range(200))),
        _series("x", ("e", ""), samples=(Sample(1.0, 0), Sample(2.0, -1), Sample(0.0, 2**62))),
        _series(
            "x", exemplars=(Exemplar(tuple((f"e{i:03d}", str(i)) for i in range(200)), 1.0, 2),)
        ),
        _series(
            "h",
            samples=(),
            histograms=(
                _INT_HISTOGRAM._replace(
                    positive_spans=(BucketSpan(0, 300),), positive_deltas=tuple(range(-150, 150))
                ),
            ),
        ),
    ],
    ids=[
        "int-histogram",
        "float-histogram",
        "empty-histogram",
        "two-histograms",
        "exemplars",
        "no-metric-name",
        "huge-label-value",
        "200-labels",
        "empty-value-odd-timestamps",
        "exemplar-with-200-labels",
        "histogram-of-300-buckets",
    ],
)
def test_series_of_every_kind_come_through(convert: Convert, item: Series) -> None:
    raw = rw1.encode(Batch((item, item._replace(labels=(*item.labels, ("zz", "second"))))))
    assert canonical(_decoded(convert(raw)).series) == canonical(
        (item, item._replace(labels=(*item.labels, ("zz", "second"))))
    )
    if rw2.NATIVE:
        assert _compiled(raw) == rw2.from_v1_reference(raw)


def test_strings_repeated_across_series_are_one_symbol(convert: Convert) -> None:
    batch = Batch(
        tuple(
            _series("up" if i % 2 else "down", ("job", "node"), ("instance", f"h{i % 300}"))
            for i in range(3000)
        )
    )
    request = write_v2_pb2.Request.FromString(convert(rw1.encode(batch)))
    symbols = list(request.symbols)
    assert symbols[:7] == ["", "__name__", "down", "job", "node", "instance", "h0"]
    assert len(symbols) == len(set(symbols)) == 7 + 1 + 299  # the first 7, "up", h1..h299
    assert canonical(_decoded(convert(rw1.encode(batch))).series) == canonical(batch.series)


def test_more_distinct_strings_than_a_request_of_its_size_usually_holds(convert: Convert) -> None:
    # The compiled tables are sized from the request's length; these outgrow them 4 times.
    batch = Batch(tuple(_series("m", ("v", str(i)), ("w", f"{i}w")) for i in range(6000)))
    raw = rw1.encode(batch)
    request = write_v2_pb2.Request.FromString(convert(raw))
    assert (
        len(request.symbols) == len(set(request.symbols)) == 5 + 2 * 6000
    )  # "", __name__, m, v, w
    assert canonical(_decoded(convert(raw)).series) == canonical(batch.series)


@needs_native
@pytest.mark.parametrize("middle", [4, 20, 100])
def test_labels_alike_at_both_ends_hash_apart(middle: int) -> None:
    """The labels table's hash counts every byte of a Label: one of its first and last 16
    bytes made labels that differ only in the middle (a request's values are anyone's) share
    one slot chain, and each lookup walked all of them (20,000 series: 707 ms against 4)."""
    from gotk_relay.wire import _v2  # type: ignore[attr-defined]

    labels = [
        b"\x0a\x01a\x12" + rw1.uvarint(32 + middle) + b"A" * 16 + b"%0*d" % (middle, i) + b"B" * 16
        for i in range(2000)
    ]
    assert len({_v2.hash_label(label) for label in labels}) >= 1998  # 32 bits: a rare pair
    batch = Batch(
        tuple(_series("m", ("a", "A" * 16 + f"{i:0{middle}d}" + "B" * 16)) for i in range(2000))
    )
    raw = rw1.encode(batch)
    assert _compiled(raw) == rw2.from_v1_reference(raw)


@needs_native
def test_the_labels_tables_hash_is_seeded_per_process() -> None:
    """Which strings collide cannot be worked out offline and sent: each process draws its
    own seed."""
    code = (
        "from gotk_relay.wire import _v2; "
        "print(_v2.hash_label(b'\\x0a\\x01a\\x12\\x02up'), _v2.hash_label(b'x' * 100))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 2


@pytest.mark.parametrize(
    ("name", "families", "expected"),
    [
        ("up", [("up", MetricType.GAUGE, "Up.", "")], Metadata(MetricType.GAUGE, "Up.", "")),
        (
            "lat_bucket",
            [("lat", MetricType.HISTOGRAM, "Latency.", "seconds")],
            Metadata(MetricType.HISTOGRAM, "Latency.", "seconds"),
        ),
        (
            "http_requests_total",
            [("http_requests", MetricType.COUNTER, "", "")],
            Metadata(MetricType.COUNTER, "", ""),
        ),
        ("up", [("down", MetricType.GAUGE, "Down.", "")], None),
        (
            "up",
            [("up", MetricType.GAUGE, "First.", ""), ("up", MetricType.COUNTER, "Last.", "")],
            Metadata(MetricType.COUNTER, "Last.", ""),
        ),
        (
            "x_total",
            [("x_total", MetricType.COUNTER, "Own.", ""), ("x", MetricType.GAUGE, "Stem.", "")],
            Metadata(MetricType.COUNTER, "Own.", ""),
        ),
    ],
    ids=["own-name", "bucket-suffix", "total-suffix", "no-family", "last-wins", "own-first"],
)
def test_v1_family_metadata_goes_on_each_series_of_the_family(
    convert: Convert,
    name: str,
    families: list[tuple[str, MetricType, str, str]],
    expected: Metadata | None,
) -> None:
    batch = Batch(
        (_series(name), _series(name, ("i", "2"))),
        tuple(FamilyMetadata(*family) for family in families),
    )
    got = _decoded(convert(rw1.encode(batch)))
    assert [s.metadata for s in got.series] == [expected, expected]


def test_an_unknown_metric_type_is_unknown(convert: Convert) -> None:
    # type 9 is no MetricType: rw1 decodes it as UNKNOWN (0), which v2 omits
    meta = ld(3, key(1, 0) + pb_varint(9) + ld(2, b"up") + ld(4, b"Up."))
    raw = series((b"__name__", b"up")) + meta
    assert _decoded(convert(raw)).series[0].metadata == Metadata(MetricType.UNKNOWN, "Up.", "")


# -- what the compiled walk leaves to the reference ------------------------------------------


def _histogram_series(fields: bytes) -> bytes:
    return series((b"__name__", b"h"), tail=ld(4, fields))


@needs_native
@pytest.mark.parametrize(
    ("raw", "gives_way"),
    [
        (series((b"__name__", b"up"), (b"job", b"\xff")), True),
        (series((b"__name__", b"up"), (b"job", b"\xed\xa0\x80")), True),
        (ld(1, ld(1, ld(1, b"__name__") + ld(2, b"\xc0\xaf"))), True),
        (series((b"__name__", b"up"))[:-3], True),
        (series((b"__name__", b"up")) + key(1, 0) + b"\x01", True),
        (series((b"__name__", b"up")) + key(7, 3), True),
        (ld(3, ld(2, b"up\xff")), True),
        (_histogram_series(key(1, 0) + b"\x05" + key(7, 1) + struct.pack("<d", 2.5)), True),
        (_histogram_series(key(2, 1) + struct.pack("<d", 2.5) + key(6, 0) + b"\x03"), False),
        (_histogram_series(ld(10, b"\x00" * 7)), True),
        (series((b"__name__", b"up")) + key(99, 5) + b"abcd" + key(98, 1) + b"\x00" * 8, False),
    ],
    ids=[
        "invalid-utf8",
        "surrogate",
        "overlong-utf8",
        "truncated",
        "series-as-varint",
        "group",
        "metadata-invalid-utf8",
        "int-count-float-zero-count",
        "float-count-int-zero-count",
        "packed-doubles-not-8-bytes",
        "unknown-top-level-fields",
    ],
)
def test_compiled_gives_way_only_where_the_reference_decides(raw: bytes, gives_way: bool) -> None:
    converted = rw2.from_v1_walk(raw)
    assert (converted is None) == gives_way
    try:
        expected = rw2.from_v1_reference(raw)
    except (DecodeError, ValueError):
        with pytest.raises((DecodeError, ValueError)):
            rw2.from_v1(raw)
    else:
        assert rw2.from_v1(raw) == expected
        if converted is not None:
            assert converted == expected


# -- rw2.to_v1: a received 2.0 request as the 1.0 request the fast path takes -----------------


def _v2_requests() -> st.SearchStrategy[bytes]:
    """2.0 requests as a sender writes them (with metadata on some series, histograms and
    exemplars on some), then some bytes changed or cut."""
    sent = st.builds(rw2.encode, v2_batches())

    @st.composite
    def damaged(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(sent))
        if data and draw(st.booleans()):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        if data and draw(st.booleans()):
            del data[draw(st.integers(0, len(data) - 1)) :]
        return bytes(data)

    return st.one_of(sent, damaged(), st.binary(max_size=48))


@needs_native
@settings(max_examples=300, deadline=None)
@given(_v2_requests(), st.sampled_from([1 << 40, 200, 40]))
def test_to_v1_compiled_gives_way_or_equals_the_reference(raw: bytes, bound: int) -> None:
    """The compiled walk answers exactly what the model answers (``rw2.to_v1_reference``: the
    request decoded, encoded as 1.0 with its series' metadata as family entries), or gives way
    (None) and the request is decoded. It never gives way on a plain request of samples."""
    compiled = rw2.to_v1_compiled(raw, bound)
    reference = rw2.to_v1_reference(raw, bound)
    if compiled is not None:
        assert compiled == reference
    if reference is not None and raw == rw2.encode(rw2.decode(raw, validate=False)):
        assert compiled is not None, "gave way on a request it models"


def test_to_v1_gives_way_on_what_1_0_cannot_carry() -> None:
    """Start and created timestamps (of samples and histograms): the decoded path keeps them
    for 2.0 destinations; samples and histograms in one series, a reference out of range or
    a bad first symbol: the decoded path words the refusal."""
    base = Series((("__name__", "m"),), (Sample(1.0, 1000),))
    for item in (
        base._replace(histograms=(Histogram(1000, count_value=1),)),
        base._replace(samples=(), histograms=(Histogram(1000, count_value=1, start_timestamp=5),)),
        base._replace(samples=(Sample(1.0, 1000, 500),)),
        base._replace(created_timestamp=500),
    ):
        sent = rw2.encode(Batch((item,)))
        assert rw2.to_v1_reference(sent, 1 << 40) is None
        if rw2.NATIVE:
            assert rw2.to_v1_compiled(sent, 1 << 40) is None
    bad = write_v2_pb2.Request.FromString(rw2.encode(Batch((base,))))
    bad.timeseries[0].labels_refs[1] = 99
    assert rw2.to_v1_reference(bad.SerializeToString(), 1 << 40) is None
    if rw2.NATIVE:
        assert rw2.to_v1_compiled(bad.SerializeToString(), 1 << 40) is None


@needs_native
def test_to_v1_carries_histograms_and_exemplars_as_the_decoded_path_encodes_them() -> None:
    """A 2.0 request of native histograms (integer and float, custom buckets) and samples with
    exemplars is taken on the fast path, as the reference encodes it, its counts for 2.0's
    written headers included."""
    hist = Histogram(
        1000,
        count_value=7,
        sum=3.5,
        schema=1,
        zero_threshold=0.001,
        zero_count=1,
        positive_spans=(BucketSpan(0, 2), BucketSpan(1, 1)),
        positive_deltas=(1, 2, -1),
    )
    floats = hist._replace(
        is_float=True,
        count_value=7.0,
        zero_count=1.0,
        positive_deltas=(),
        positive_counts=(1.0, 3.0, 2.0),
        custom_values=(),
    )
    batch = Batch(
        (
            Series(
                (("__name__", "h"), ("job", "j")),
                (),
                (hist, floats._replace(timestamp=2000)),
                (Exemplar((("trace_id", "cd"),), 0.25, 1500),),
            ),
            Series(
                (("__name__", "c_total"), ("job", "j")),
                (Sample(1.0, 1000), Sample(2.0, 2000)),
                exemplars=(
                    Exemplar((("trace_id", "ab"),), 1.0, 1000),
                    Exemplar((), 0.0, 0),
                ),
            ),
        )
    )
    sent = rw2.encode(batch)
    found = rw2.to_v1_compiled(sent, 1 << 40)
    assert found is not None
    assert found == rw2.to_v1_reference(sent, 1 << 40)
    assert (found.samples, found.histograms, found.exemplars) == (2, 2, 3)
    assert canonical(rw1.decode(found.v1)) == canonical(rw1.decode(rw1.encode(batch)))


@needs_native
def test_to_v1_stops_at_the_expansion_bound_before_writing_it() -> None:
    """A 1 MiB symbol that 200 series refer to is 200 MiB of labels once resolved: the walk
    gives way (the decoded path answers 413) without writing them: a fresh process doing it
    peaks far below that."""
    script = (
        "from gotk_relay.model import Batch, Sample, Series\n"
        "from gotk_relay.wire import rw2\n"
        "long = 'x' * (1 << 20)\n"
        "batch = Batch(tuple(Series((('__name__', 'm'), ('i', str(i)), ('v', long)), "
        "(Sample(1.0, 1),)) "
        "for i in range(200)))\n"
        "sent = rw2.encode(batch)\n"
        "assert len(sent) < 2 << 20\n"
        "assert rw2.to_v1_compiled(sent, 8 << 20) is None\n"
        # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
        "print(next(line.split()[1] for line in open('/proc/self/status') "
        "if line.startswith('VmHWM')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(done.stdout) < 120 * 1024, f"peak RSS {int(done.stdout) // 1024} MiB"
