"""``rw1.encode_cached`` (hand-rolled) against ``rw1.encode_reference`` (upb): the same bytes, always.

Tests of what an encoding must be run over both encoders by name (``ENCODERS``); the
equivalence tests call ``encode_cached`` itself, which never falls back to the reference.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Labels,
    MetricType,
    Sample,
    Series,
    float_bits,
)
from gotk_relay.wire import rw1, rw1_bytes
from tests.support.strategies import (
    canonical,
    label_names,
    label_values,
    metric_types,
    series,
    timestamps,
)


def _from_bits(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


# Every double, NaN payloads and signs included, not only the ones st.floats likes to draw.
any_double = st.integers(0, 2**64 - 1).map(_from_bits)
nan_payloads = (
    st.integers(1, 2**52 - 1)
    .flatmap(
        lambda payload: st.sampled_from(
            [0x7FF0000000000000 | payload, 0xFFF0000000000000 | payload]
        )
    )
    .map(_from_bits)
)
sample_values = st.one_of(
    st.sampled_from([0.0, -0.0, STALE_NAN, float("inf"), float("-inf"), 5e-324]),
    nan_payloads,
    any_double,
    st.floats(),
)
int64s = st.one_of(
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63), 1_764_000_000_000]),
    st.integers(-(2**63), 2**63 - 1),
    timestamps,
)
# Empty names and values are not valid remote write, but the encoder is not where that is
# checked, and proto3 omits an empty string: both encoders must agree on that.
any_names = st.one_of(st.just(""), label_names, st.just("__name__"))
any_values = st.one_of(st.just(""), label_values, st.text(max_size=80))
label_tuples = st.lists(st.tuples(any_names, any_values), max_size=14).map(tuple)


@st.composite
def plain_series(draw: st.DrawFn, *, int_values: bool = False) -> Series:
    """What the fast path encodes itself: labels and samples, no histograms or exemplars."""
    value = st.one_of(sample_values, st.integers(-(2**60), 2**60)) if int_values else sample_values
    samples = [Sample(v, t) for v, t in draw(st.lists(st.tuples(value, int64s), max_size=4))]
    return Series(draw(label_tuples), tuple(samples))


families = st.builds(
    FamilyMetadata,
    st.one_of(st.just(""), label_values),
    st.one_of(metric_types, st.integers(-(2**31), 2**31 - 1)),
    st.text(max_size=60),
    st.text(max_size=8),
)


@st.composite
def batches(draw: st.DrawFn, *, int_values: bool = False) -> Batch:
    items = draw(st.lists(st.one_of(plain_series(int_values=int_values), series()), max_size=8))
    return Batch(tuple(items), tuple(draw(st.lists(families, max_size=3))))


ENCODERS = [
    pytest.param(rw1.encode_cached, id="cached"),
    pytest.param(rw1.encode_reference, id="reference"),
]


# Label sets for the label writer: long values (a Label of 124 bytes or more takes a longer
# length), non-ASCII, and strs that are not UTF-8 encodable (a lone surrogate).
writer_values = st.one_of(
    any_values,
    st.text(min_size=100, max_size=300),
    st.text(alphabet=st.characters(codec=None), max_size=6),
)
writer_labels = st.lists(st.tuples(any_names, writer_values), max_size=6).map(tuple)


def _written(encode: Callable[[Labels], bytes], labels: Labels) -> object:
    try:
        return encode(labels)
    except UnicodeEncodeError:
        return "not UTF-8 encodable"


@pytest.mark.skipif(rw1_bytes.encode_labels_compiled is None, reason="the extensions are not built")
@settings(max_examples=300)
@given(writer_labels)
@example((("a" * 60, "b" * 60),))  # 120 bytes: the last length of one byte
@example((("a" * 60, "b" * 64),))  # 124 bytes: a two-byte length
@example((("", ""), ("a", ""), ("", "b")))
@example((("\ud800", "x"),))
def test_the_compiled_label_writer_writes_the_references_bytes(labels: Labels) -> None:
    """``rw1._encode_labels`` (``_survey.c``'s ``encode_labels`` where built) against the
    Python reference: the same bytes, or both refuse a str that is not UTF-8 encodable; and
    the compiled label match accepts what they write."""
    compiled = rw1_bytes.encode_labels_compiled
    assert compiled is not None and rw1._encode_labels is compiled
    written = _written(compiled, labels)
    assert written == _written(rw1._encode_labels_reference, labels)
    if isinstance(written, bytes) and rw1_bytes.labels_equal_compiled is not None:
        assert rw1_bytes.labels_equal_compiled(written, labels)


def _cached_series(labels: Labels) -> Series:
    return Series(labels, (Sample(1.5, 1_764_000_000_000),))


@pytest.mark.slow
@settings(max_examples=300)
@given(batches(int_values=True))
@example(Batch((Series(()),)))
@example(Batch((Series((("", ""),), (Sample(0.0, 0), Sample(-0.0, 0))),)))
@example(Batch((Series((("a", "b"),), (Sample(1, -1), Sample(2**53 + 1, 2**63 - 1))),)))
def test_the_cached_encoder_writes_upb_bytes(batch: Batch) -> None:
    want = rw1.encode_reference(batch)
    assert rw1.encode_cached(batch) == want  # it has no fallback: these are its own bytes
    assert rw1.encode_cached(batch) == want  # label sets now cached
    assert rw1.encode(batch) == want


@pytest.mark.slow
@pytest.mark.parametrize("encode", ENCODERS)
@settings(max_examples=300)
@given(batch=batches())
def test_round_trip_keeps_float_bits(encode: Callable[[Batch], bytes], batch: Batch) -> None:
    # Enum values outside MetricType decode as UNKNOWN: keep to those that round-trip.
    batch = batch._replace(
        metadata=tuple(
            m._replace(type=MetricType(m.type)) for m in batch.metadata if 0 <= m.type <= 7
        )
    )
    assert canonical(rw1.decode(encode(batch), validate=False)) == canonical(batch)


@pytest.mark.parametrize("encode", ENCODERS)
@given(value=any_double)
def test_every_double_bit_pattern_survives(encode: Callable[[Batch], bytes], value: float) -> None:
    # The cached encoder's float bytes come from struct; a NaN payload must survive it.
    bits = float_bits(value)
    assert struct.unpack("<Q", struct.pack("<d", value))[0] == bits
    sample = encode(Batch((Series((("__name__", "x"),), (Sample(value, 1),)),)))
    got = rw1.decode(sample, validate=False).series[0].samples[0].value
    assert float_bits(got) == bits


@pytest.mark.parametrize("encode", ENCODERS)
@pytest.mark.parametrize(
    ("value", "present"),
    [(0.0, False), (-0.0, True), (STALE_NAN, True), (0, False)],
    ids=["+0", "-0", "stale", "int0"],
)
def test_a_double_is_omitted_only_when_all_its_bits_are_zero(
    encode: Callable[[Batch], bytes], value: float, present: bool
) -> None:
    raw = encode(Batch((Series((), (Sample(value, 0),)),)))
    assert raw == rw1.encode_reference(Batch((Series((), (Sample(value, 0),)),)))
    assert (b"\x09" in raw) is present


def test_the_usual_batch_is_the_cached_encoders_own_work() -> None:
    """Labels, one and several samples, a histogram and an exemplar (spliced in from upb's
    TimeSeries), metadata: ``encode_cached`` models all of it, so it gives the bytes itself
    (it raises on what it does not model) and ``encode`` never needs the reference."""
    labels = tuple(sorted({"__name__": "gotk_reconcile_condition", "name": "x", "ns": ""}.items()))
    batch = Batch(
        (
            _cached_series(labels),
            Series(labels, (Sample(1.0, 5), Sample(float("nan"), -5))),
            Series(labels, (), (Histogram(5, count_value=1),), (Exemplar((("a", "b"),), 1.0, 2),)),
        ),
        (FamilyMetadata("gotk_reconcile_condition", MetricType.GAUGE, "Help.", ""),),
    )
    want = rw1.encode_reference(batch)
    assert rw1.encode_cached(batch) == want
    assert rw1.encode_cached(batch) == want  # its label sets cached now
    assert rw1.encode(batch) == want


def _outcome(encoder: object, batch: Batch) -> object:
    try:
        return encoder(batch)  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


_NAME = ("__name__", "up")


@pytest.mark.parametrize(
    "batch",
    [
        Batch((Series((_NAME,), (Sample(1.0, True),)),)),
        Batch((Series((_NAME,), (Sample(1.0, 1.0),)),)),  # type: ignore[arg-type]
        Batch((Series((_NAME,), (Sample(1.0, 2**63),)),)),
        Batch((Series((_NAME,), (Sample(1.0, -(2**63) - 1),)),)),
        Batch((Series((_NAME,), (Sample(True, 1),)),)),
        Batch((Series((_NAME,), (Sample(2**1024, 1),)),)),
        Batch((Series((_NAME,), (Sample("1", 1),)),)),  # type: ignore[arg-type]
        Batch((Series((_NAME, ("job", "\ud800")), (Sample(1.0, 1),)),)),
        Batch((Series((_NAME, ("job", b"x")), (Sample(1.0, 1),)),)),  # type: ignore[arg-type]
        Batch((Series((_NAME, ("job", None)), (Sample(1.0, 1),)),)),  # type: ignore[arg-type]
        Batch((), (FamilyMetadata(None, MetricType.GAUGE),)),  # type: ignore[arg-type]
        Batch((), (FamilyMetadata("up", 2**31),)),  # type: ignore[arg-type]
        Batch((), (FamilyMetadata("up", -1),)),  # type: ignore[arg-type]
        Batch((), (FamilyMetadata("up", True),)),  # type: ignore[arg-type]
    ],
    ids=[
        "bool-timestamp",
        "float-timestamp",
        "timestamp-over-int64",
        "timestamp-under-int64",
        "bool-value",
        "int-value-beyond-double",
        "str-value",
        "lone-surrogate",
        "bytes-label",
        "none-label",
        "none-family",
        "type-beyond-int32",
        "negative-type",
        "bool-type",
    ],
)
def test_what_the_cached_encoder_does_not_model_ends_as_upb_would(batch: Batch) -> None:
    # The same bytes, or the same kind of error.
    want = _outcome(rw1.encode_reference, batch)
    assert _outcome(rw1.encode, batch) == want
    cached = _outcome(rw1.encode_cached, batch)
    assert cached == want or isinstance(cached, type)  # upb's bytes, or it gives up


def test_the_labels_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rw1.LABELS_CACHE, "limit", 8)
    for i in range(100):
        batch = Batch(tuple(_cached_series((("__name__", f"m{i}_{j}"),)) for j in range(3)))
        assert rw1.encode_cached(batch) == rw1.encode_reference(batch)
        assert len(rw1.LABELS_CACHE) <= 8
    assert len(rw1.LABELS_CACHE) > 0


def test_a_cached_label_set_is_found_by_value_not_identity() -> None:
    labels: Labels = (("__name__", "gotk_x"), ("name", "a" * 200), ("ns", "é"))
    first = rw1.encode_cached(Batch((_cached_series(labels),)))
    held = len(rw1.LABELS_CACHE)
    copy = tuple((str(k), "".join(v)) for k, v in labels)
    assert copy is not labels
    assert rw1.encode_cached(Batch((_cached_series(copy),))) == first
    assert len(rw1.LABELS_CACHE) == held  # the copy found the first one's entry


_FLUX_VALUES = st.sampled_from([1.0, 0.0, -0.0, 2.5, STALE_NAN, float("nan"), float("inf"), 1])
_STAMPS = st.one_of(
    st.sampled_from([1_764_000_000_000, 1 << 35, (1 << 42) - 1, 0, 1, -1, 1 << 42]), int64s
)


@settings(max_examples=300)
@given(
    st.lists(label_tuples, min_size=1, max_size=4),
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 3), st.lists(st.tuples(_FLUX_VALUES, _STAMPS), max_size=2)),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_the_same_label_tuples_every_batch_encode_as_upb_does(
    label_sets: list[Labels], rows: list[list[tuple[int, list[tuple[float, int]]]]]
) -> None:
    """What the Flux rewriter hands the encoder: its output tuples again and again (found by
    id after the second time), 1.0 / +0.0 / -0.0 / stale values, 7-byte timestamps or not."""
    for batch_rows in rows:
        batch = Batch(
            tuple(
                Series(label_sets[i % len(label_sets)], tuple(Sample(v, t) for v, t in samples))
                for i, samples in batch_rows
            )
        )
        want = rw1.encode_reference(batch)
        assert rw1.encode_cached(batch) == want
        assert rw1.encode_cached(batch) == want


@settings(max_examples=300)
@given(
    st.lists(st.tuples(label_tuples, _FLUX_VALUES), min_size=1, max_size=4),
    st.integers(1 << 35, (1 << 42) - 1),
)
def test_series_prefixes_and_a_timestamp_field_are_the_encoding(
    rows: list[tuple[Labels, float]], timestamp: int
) -> None:
    """What the Flux rewriter keeps per object: each output's bytes up to its timestamp."""
    labels = [label_set for label_set, _ in rows]
    values = [value for _, value in rows]
    prefixes = rw1.series_prefixes(labels, values)
    batch = Batch(tuple(Series(ls, (Sample(v, timestamp),)) for ls, v in rows))
    try:
        want = rw1.encode_reference(batch)
    except Exception:  # upb refuses some label (a lone surrogate): so must the prefixes
        assert prefixes is None
        return
    if any(type(v) is not float for v in values):
        assert prefixes is None
        return
    assert prefixes is not None
    stamp = rw1.timestamp_field(timestamp)
    assert len(stamp) == rw1.STAMP_FIELD_LEN
    assert stamp.join((*prefixes, b"")) == want
