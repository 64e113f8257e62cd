"""wire.validate: exactly the remote write 1.0 requests Prometheus 3 and Mimir accept, surveyed.

Table tests give each rule its accepted and refused encodings; the properties check, for
requests in every encoding protobuf allows, that the check agrees with upb on what they hold and
that sorting a label set changes nothing but its order.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay.model import Batch, Histogram, Labels, Sample, Series
from gotk_relay.wire import remote_pb2, rw1, rw1_bytes, rw2, validate, write_v2_pb2
from gotk_relay.wire.errors import DecodeError
from gotk_relay.wire.labels import (
    NO_LIMITS,
    LabelLimitError,
    Limits,
    TooManySamplesError,
    TooManySeriesError,
    is_sorted,
)
from tests.support.hand_proto import key, label, ld, sample, series
from tests.support.strategies import (
    canonical,
    odd_v1_requests,
    odd_v2_requests,
    pb_varint,
    v1_batches,
    v2_batches,
)

UP = (b"__name__", b"up")
JOB = (b"job", b"a")
OK = series(UP, JOB)
LIMITS = Limits(
    max_series=3,
    max_labels_per_series=4,
    max_label_name_length=8,
    max_label_value_length=8,
    max_samples=5,
)


def run(raw: bytes, limits: Limits = LIMITS) -> rw1_bytes.Survey:
    return validate.survey(raw, frozenset({b"up"}), frozenset({b"gotk_"}), limits)


# -- accepted ------------------------------------------------------------------------------

HIST = (
    key(1, 0)
    + pb_varint(3)  # count_int
    + key(4, 0)
    + pb_varint(1)  # schema (sint32 -1)
    + ld(8, key(1, 0) + b"\x00" + key(2, 0) + b"\x02")  # negative span
    + ld(9, b"\x02\x01")  # negative_deltas, packed
    + ld(11, key(1, 0) + b"\x02" + key(2, 0) + b"\x01")  # positive span: 1 bucket
    + key(12, 0)
    + b"\x04"  # positive_deltas, unpacked
    + ld(13, struct.pack("<d", 1.0))  # positive_counts, packed (an integer one ignores them)
)
CUSTOM_HIST = (  # custom buckets: bounds 0.5 and 1, buckets [0, 0.5] (1) and (1, +Inf] (2)
    key(2, 1)
    + struct.pack("<d", 3.0)  # count_float
    + key(4, 0)
    + pb_varint(105)  # schema (sint32 -53)
    + ld(11, key(2, 0) + b"\x01")  # positive span: offset 0, 1 bucket
    + ld(11, key(1, 0) + b"\x02" + key(2, 0) + b"\x01")  # offset 1, 1 bucket
    + ld(13, struct.pack("<dd", 1.0, 2.0))  # positive_counts, packed
    + key(16, 1)
    + struct.pack("<d", 0.5)  # custom_values, unpacked
    + ld(16, struct.pack("<d", 1.0))  # and packed
)
# fmt: off
ACCEPTED: list[tuple[str, bytes, int, int]] = [  # id, request, points, sorted
    ("empty-request", b"", 0, 0),
    ("prometheus-shape", OK, 1, 0),
    ("empty-label-value", series(UP, (b"job", b"")), 1, 0),
    ("value-field-omitted", ld(1, label(b"__name__", b"up") + ld(1, ld(1, b"job")) + sample()), 1, 0),
    ("unsorted", series(JOB, UP), 1, 1),
    ("unsorted-one-of-two", OK + series(JOB, UP), 2, 1),
    ("labels-after-samples", ld(1, sample() + label(*JOB) + sample() + label(*UP)), 2, 1),
    ("no-samples", series(UP, tail=b""), 0, 0),
    ("histogram", series(UP, tail=ld(4, HIST)), 1, 0),
    ("histogram-and-sample", series(UP, tail=ld(4, HIST) + sample()), 2, 0),
    ("custom-buckets-histogram", series(UP, tail=ld(4, CUSTOM_HIST)), 1, 0),
    ("exemplar", series(UP, tail=sample() + ld(3, label(b"trace", b"\xc3\xa9") + key(2, 1) + bytes(8))), 1, 0),
    ("sample-one-byte-timestamp", series(UP, tail=ld(2, key(1, 1) + bytes(8) + key(2, 0) + b"\x05")), 1, 0),
    ("sample-without-value", series(UP, tail=ld(2, key(2, 0) + b"\x05")), 1, 0),
    ("sample-without-timestamp", series(UP, tail=ld(2, key(1, 1) + bytes(8))), 1, 0),
    ("sample-empty", series(UP, tail=ld(2, b"")), 1, 0),
    ("sample-timestamp-twice", series(UP, tail=ld(2, key(2, 0) + b"\x05" + key(2, 0) + b"\x06")), 1, 0),
    ("sample-timestamp-first", series(UP, tail=ld(2, key(2, 0) + b"\x05" + key(1, 1) + bytes(8))), 1, 0),
    ("negative-timestamp", series(UP, tail=ld(2, key(2, 0) + pb_varint(-1))), 1, 0),
    ("five-byte-varint-length", ld(1, label(*UP), pad=4), 0, 0),
    ("five-byte-varint-key", key(1, 2, pad=4) + pb_varint(len(label(*UP))) + label(*UP), 0, 0),
    ("ten-byte-varint-value", series(UP, tail=ld(2, key(2, 0) + pb_varint(5, pad=9))), 1, 0),
    ("ten-byte-varint-top-bits-dropped", series(UP, tail=ld(2, key(2, 0) + b"\xff" * 9 + b"\x7f")), 1, 0),
    ("five-byte-key-in-label", ld(1, ld(1, key(1, 2, pad=4) + b"\x08__name__" + ld(2, b"up"))), 0, 0),
    ("repeated-name-last-wins", ld(1, ld(1, ld(1, b"job") + ld(2, b"x") + ld(1, b"__name__") + ld(2, b"up"))), 0, 0),
    ("unknown-varint-top", key(9, 0) + pb_varint(2**64 - 1) + OK, 1, 0),
    ("unknown-i64-series", ld(1, label(*UP) + key(7, 1) + bytes(8)), 0, 0),
    ("unknown-i32-label", ld(1, ld(1, ld(1, b"__name__") + key(3, 5) + bytes(4) + ld(2, b"up"))), 0, 0),
    ("unknown-len-sample", series(UP, tail=ld(2, ld(9, b"\xff\xff") + key(2, 0) + b"\x01")), 1, 0),
    ("reserved-field-2-top", ld(2, b"anything") + OK, 1, 0),
    ("metadata", OK + ld(3, key(1, 0) + b"\x01" + ld(2, b"up") + ld(3, b"\xff") + ld(4, b"Up."), 0), 1, 0),
    ("utf8-everywhere", series((b"__name__", "ü".encode()), ("ŝ".encode(), "😀".encode())), 1, 0),
]
# fmt: on


@pytest.mark.parametrize(
    ("raw", "points", "unsorted"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted(raw: bytes, points: int, unsorted: int) -> None:
    found = run(raw, NO_LIMITS)
    assert found.points == points
    assert found.sorted == unsorted
    assert len(found.raw) == len(raw)
    assert (found.raw is raw) == (unsorted == 0)
    # upb reads the output as it reads the input, but for label order.
    want = rw1.decode(raw, validate=False)
    got = rw1.decode(found.raw, validate=False)
    assert canonical(got) == canonical(_sorted(want))
    assert len(got.series) == found.series


def _sorted(batch: Batch) -> Batch:
    return batch._replace(
        series=tuple(s._replace(labels=tuple(sorted(s.labels))) for s in batch.series)
    )


def test_survey_picks_by_name_and_prefix_from_the_sorted_request() -> None:
    flux = series((b"name", b"x"), (b"__name__", b"gotk_resource_info"))
    found = run(OK + series((b"__name__", b"down")) + flux + ld(3, ld(2, b"up")), NO_LIMITS)
    assert found.series == 3
    assert found.picked == [OK[2:], rw1_bytes.split(found.raw).series[2]]
    assert rw1.decode(rw1_bytes.rebuild(found.picked[1:]), validate=False).series[0].labels == (
        ("__name__", "gotk_resource_info"),
        ("name", "x"),
    )
    assert found.metadata == [ld(2, b"up")]


# -- refused -------------------------------------------------------------------------------

LABEL_FIELD = label(*UP)
# fmt: off
REFUSED: list[tuple[str, bytes, type[Exception], str]] = [  # id, request, error, fragment
    # protobuf framing
    ("trailing-garbage", OK + b"\x0a", DecodeError, "truncated varint"),
    ("trailing-zero", OK + b"\x00", DecodeError, "field number 0"),
    ("varint-11-bytes", series(UP, tail=ld(2, key(2, 0) + b"\xff" * 10 + b"\x01")), DecodeError, "longer than 10 bytes"),
    ("length-of-6-bytes", ld(1, label(*UP), pad=5), DecodeError, "length varint longer than 5 bytes"),
    ("key-of-6-bytes", key(1, 2, pad=5) + pb_varint(len(label(*UP))) + label(*UP), DecodeError, "field key longer than 5 bytes"),
    ("key-over-32-bits", pb_varint(1 << 32 | 2) + b"\x00", DecodeError, "over 32 bits"),
    ("length-past-end-top", b"\x0a\x64abc", DecodeError, "declares 100 bytes, 3 left"),
    ("huge-declared-length", b"\x0a" + pb_varint(2**32 - 1) + OK, DecodeError, "declares 4294967295 bytes"),
    ("declared-length-of-10-bytes", b"\x0a" + pb_varint(2**63) + OK, DecodeError, "length varint longer than 5 bytes"),
    ("length-past-series", ld(1, b"\x0a\x20" + LABEL_FIELD), DecodeError, "timeseries[0]: TimeSeries: field labels declares 32 bytes, 16 left"),
    ("truncated-label", ld(1, b"\x0a\x05\x0a\x08__"), DecodeError, "timeseries[0]"),
    ("label-value-length-past-label", ld(1, b"\x0a\x06\x0a\x01a\x12\x02b" + label(*UP)), DecodeError, "timeseries[0]: labels[0]: Label: field value declares 2 bytes, 1 left"),
    ("label-length-past-series", ld(1, b"\x0a\x7f\x0a\x01a\x12\x01b"), DecodeError, "declares 127 bytes"),
    ("sample-two-varints", series(UP, tail=ld(2, key(2, 0) + b"\x05\x06")), DecodeError, "field number 0"),
    ("sample-unterminated-varint", series(UP, tail=ld(2, key(1, 1) + bytes(8) + key(2, 0) + b"\x85\x86")), DecodeError, "truncated varint"),
    ("truncated-sample-double", series(UP, tail=ld(2, b"\x09\x00\x00")), DecodeError, "truncated"),
    ("truncated-sample-varint", series(UP, tail=ld(2, b"\x10\xff")), DecodeError, "truncated varint"),
    ("truncated-unknown-i32", series(UP, tail=key(9, 5) + b"\x00"), DecodeError, "truncated"),
    ("field-0-top", b"\x00\x01" + OK, DecodeError, "field number 0"),
    ("field-0-series", ld(1, LABEL_FIELD + b"\x00\x01"), DecodeError, "field number 0"),
    ("field-0-label", ld(1, ld(1, ld(1, b"__name__") + b"\x02\x00")), DecodeError, "field number 0"),
    ("group-top", key(1, 3) + key(1, 4), DecodeError, "group wire type 3"),
    ("end-group-top", key(5, 4), DecodeError, "group wire type 4"),
    ("unknown-group-series", ld(1, LABEL_FIELD + key(9, 3) + key(9, 4)), DecodeError, "group wire type 3"),
    ("group-in-sample", series(UP, tail=ld(2, key(1, 3) + key(1, 4))), DecodeError, "group"),
    ("wire-type-6", key(1, 6), DecodeError, "wire type 6"),
    ("wire-type-7-series", ld(1, LABEL_FIELD + key(1, 7)), DecodeError, "wire type 7"),
    # a declared field of another wire type (gogo-protobuf: wrong wireType)
    ("timeseries-as-varint", key(1, 0) + b"\x01", DecodeError, "timeseries (1) has wire type VARINT, declared LEN"),
    ("metadata-as-i64", OK + key(3, 1) + bytes(8), DecodeError, "metadata (3) has wire type I64"),
    ("labels-as-varint", ld(1, key(1, 0) + b"\x01"), DecodeError, "labels (1) has wire type VARINT"),
    ("samples-as-i32", ld(1, LABEL_FIELD + key(2, 5) + bytes(4)), DecodeError, "samples (2) has wire type I32"),
    ("exemplars-as-varint", ld(1, LABEL_FIELD + key(3, 0) + b"\x00"), DecodeError, "exemplars (3)"),
    ("histograms-as-i64", ld(1, LABEL_FIELD + key(4, 1) + bytes(8)), DecodeError, "histograms (4)"),
    ("label-name-as-varint", ld(1, ld(1, key(1, 0) + b"\x01")), DecodeError, "name (1) has wire type VARINT"),
    ("label-value-as-i64", ld(1, ld(1, ld(1, b"__name__") + key(2, 1) + bytes(8))), DecodeError, "value (2) has wire type I64"),
    ("sample-value-as-varint", series(UP, tail=ld(2, key(1, 0) + b"\x01")), DecodeError, "value has wire type VARINT, declared I64"),
    ("sample-timestamp-as-i64", series(UP, tail=ld(2, key(2, 1) + bytes(8))), DecodeError, "timestamp has wire type I64, declared VARINT"),
    ("exemplar-labels-as-varint", series(UP, tail=ld(3, key(1, 0) + b"\x00")), DecodeError, "field labels (1) has wire type VARINT"),
    ("histogram-count-int-as-i64", series(UP, tail=ld(4, key(1, 1) + bytes(8))), DecodeError, "has wire type I64, declared VARINT"),
    ("histogram-span-as-varint", series(UP, tail=ld(4, key(8, 0) + b"\x00")), DecodeError, "declared LEN"),
    ("histogram-span-offset-as-len", series(UP, tail=ld(4, ld(11, ld(1, b"")))), DecodeError, "declared VARINT"),
    ("packed-doubles-not-whole", series(UP, tail=ld(4, ld(10, bytes(7)))), DecodeError, "not whole doubles"),
    # a native histogram's spans against its buckets, in Prometheus' words (Validate)
    ("histogram-spans-need-more-buckets", series(UP, tail=ld(4, ld(11, key(2, 0) + b"\x03") + key(12, 0) + b"\x02")), DecodeError, 'invalid native histogram in series up{} (timeseries[0]): histograms[0]: positive side: spans need 3 buckets, have 1 buckets'),
    ("histogram-float-spans-its-counts", series(UP, tail=ld(4, HIST) + ld(4, key(2, 1) + bytes(8) + ld(8, key(2, 0) + b"\x01") + key(9, 0) + b"\x02")), DecodeError, "histograms[1]: negative side: spans need 1 buckets, have 0 buckets"),
    ("histogram-second-span-negative-offset", series(UP, tail=ld(4, ld(8, key(2, 0) + b"\x01") + ld(8, key(1, 0) + b"\x03" + key(2, 0) + b"\x01") + ld(9, b"\x02\x02"))), DecodeError, "negative side: span number 2 with offset -2"),
    ("packed-varints-truncated", series(UP, tail=ld(4, ld(9, b"\x01\x80"))), DecodeError, "truncated varint"),
    ("metadata-type-as-len", OK + ld(3, ld(1, b"")), DecodeError, "declared VARINT"),
    # strings
    ("utf8-label-name", series(UP, (b"\xff\xfe", b"x")), DecodeError, r'invalid UTF-8 in label name "\xff\xfe"'),
    ("utf8-label-value", series((b"__name__", b"\xc3\x28")), DecodeError, 'invalid UTF-8 in the value of label "__name__"'),
    ("utf8-surrogate", series(UP, (b"a", b"\xed\xa0\x80")), DecodeError, "invalid UTF-8"),
    ("utf8-overlong", series(UP, (b"a", b"\xc0\xaf")), DecodeError, "invalid UTF-8"),
    ("utf8-beyond-unicode", series(UP, (b"a", b"\xf4\x90\x80\x80")), DecodeError, "invalid UTF-8"),
    ("utf8-overridden-name-is-checked-too", ld(1, ld(1, ld(1, b"\xff") + ld(1, b"__name__") + ld(2, b"up")) + sample()), DecodeError, "invalid UTF-8 in an overridden Label.name"),
    ("utf8-exemplar-label", series(UP, tail=ld(3, label(b"trace", b"\xff"))), DecodeError, "invalid UTF-8 in Label.value"),
    ("utf8-metadata-family", OK + ld(3, ld(2, b"\xff")), DecodeError, "invalid UTF-8 in MetricMetadata.metric_family_name"),
    ("utf8-metadata-help", OK + ld(3, ld(4, b"\xff")), DecodeError, "invalid UTF-8 in MetricMetadata.help"),
    ("utf8-metadata-unit", OK + ld(3, ld(5, b"\xff")), DecodeError, "invalid UTF-8 in MetricMetadata.unit"),
    # label sets
    ("duplicate-name", series((b"__name__", b"x"), (b"a", b"1"), (b"a", b"2")), DecodeError, 'duplicate label name "a" in series x{a="1",a="2"}'),
    ("duplicate-name-unsorted", series((b"a", b"1"), (b"__name__", b"x"), (b"a", b"1")), DecodeError, "duplicate label name"),
    ("duplicate-metric-name", series(UP, UP), DecodeError, 'duplicate label name "__name__"'),
    ("empty-label-name", series(UP, (b"", b"x")), DecodeError, "empty label name"),
    ("name-field-omitted", ld(1, label(*UP) + ld(1, ld(2, b"x"))), DecodeError, "empty label name"),
    ("no-metric-name", series(JOB), DecodeError, "series without a metric name"),
    ("no-labels", series(tail=sample()), DecodeError, "series without a metric name"),
    ("empty-metric-name", series((b"__name__", b""), JOB), DecodeError, "empty metric name"),
    ("first-bad-series-named", OK + series(JOB, JOB, (b"__name__", b"first")) + series((b"__name__", b"second"), JOB, JOB), DecodeError, "first"),
    ("newline-in-reason-escaped", series((b"__name__", b"a\nb"), JOB, JOB), DecodeError, r"a\nb"),
    # limits
    ("too-many-labels", series(UP, *((b"l%d" % i, b"v") for i in range(4))), LabelLimitError, "5 labels, over receiver.max_labels_per_series (4)"),
    ("label-name-too-long", series(UP, (b"n" * 9, b"v")), LabelLimitError, "max_label_name_length (8)"),
    ("label-value-too-long-in-bytes", series(UP, (b"job", "é".encode() * 5)), LabelLimitError, "of 10 bytes, over receiver.max_label_value_length (8)"),
    ("limits-before-rules", series(UP, UP, UP, UP, UP), LabelLimitError, "max_labels_per_series"),
    ("too-many-series", OK * 4, TooManySeriesError, "request has 4 series, over receiver.max_series_per_request (3)"),
    ("too-many-samples", series(UP, tail=sample() * 6), TooManySamplesError, "request has 6 samples and histograms"),
    ("too-many-points-with-histograms", series(UP, tail=sample() * 3 + ld(4, HIST) * 3), TooManySamplesError, "6 samples and histograms"),
    ("too-many-samples-over-series", OK + series(UP, tail=sample() * 5), TooManySamplesError, "over receiver.max_samples_per_request (5)"),
    ("series-count-before-series-framing", ld(1, b"\x00") + OK * 3, TooManySeriesError, "4 series"),
]
# fmt: on


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused(raw: bytes, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as caught:
        run(raw)
    assert type(caught.value) is error
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    # The full decode path refuses it with the same words.
    with pytest.raises(error, match=None) as again:
        rw1.decode(raw, limits=LIMITS)
    assert str(again.value) == str(caught.value)


def test_every_rule_named_in_issue_16_has_a_case() -> None:
    ids = {case[0] for case in REFUSED}
    assert {
        "utf8-label-name",
        "utf8-label-value",
        "duplicate-name",
        "empty-label-name",
        "too-many-labels",
        "samples-as-i32",
        "group-top",
        "trailing-garbage",
        "varint-11-bytes",
        "field-0-top",
        "huge-declared-length",
        "too-many-samples",
        "no-metric-name",
        "empty-metric-name",
        "utf8-metadata-help",
        "utf8-exemplar-label",
    } <= ids


def test_a_series_bomb_is_counted_without_walking_it() -> None:
    """3M samples in one series: refused by the C-speed count before any Python walk (fast)."""
    raw = series(UP, tail=b"\x12\x00" * 3_000_000)
    with pytest.raises(TooManySamplesError, match="3000000 samples"):
        run(raw, Limits(max_samples=1_000_000))


# -- properties ----------------------------------------------------------------------------

NAMES = frozenset({b"up", b"gotk_resource_info"})
PREFIXES = frozenset({b"a"})


def _picked(batch: Batch) -> list[int]:
    return [
        i
        for i, s in enumerate(batch.series)
        if s.name.encode() in NAMES or s.name.encode().startswith(tuple(PREFIXES))
    ]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_v1_requests())
def test_any_valid_encoding_is_accepted_and_agrees_with_upb(case: tuple[bytes, Batch]) -> None:
    raw, written = case
    # upb reads what the encoder wrote (the encoder is sound) ...
    assert canonical(rw1.decode(raw, validate=False)) == canonical(written)
    found = validate.survey(raw, NAMES, PREFIXES, NO_LIMITS)
    # ... and the survey's request holds the same, label sets sorted and nothing else changed.
    assert canonical(rw1.decode(found.raw, validate=False)) == canonical(_sorted(written))
    assert found.series == len(written.series)
    assert found.points == written.point_count
    unsorted = [i for i, s in enumerate(written.series) if list(s.labels) != sorted(s.labels)]
    assert found.sorted == len(unsorted)
    assert len(found.raw) == len(raw)
    before, after = rw1_bytes.split(raw), rw1_bytes.split(found.raw)
    for i, (old, new) in enumerate(zip(before.series, after.series, strict=True)):
        assert (old == new) == (i not in unsorted)
        assert sorted(old) == sorted(new)  # the same bytes, moved
    assert after.metadata == before.metadata == found.metadata
    assert found.picked == [after.series[i] for i in _picked(written)]
    # The full decode path: the same batch, counted the same.
    decoded = rw1.decode_counted(raw)
    assert canonical(decoded.batch) == canonical(_sorted(written))
    assert decoded.sorted == found.sorted


@settings(max_examples=100, deadline=None)
@given(v1_batches())
def test_a_request_as_prometheus_writes_it_is_returned_as_it_came(batch: Batch) -> None:
    raw = rw1.encode(batch)
    found = validate.survey(raw, NAMES, PREFIXES, NO_LIMITS)
    assert found.raw is raw and found.sorted == 0
    assert found.picked == [rw1_bytes.split(raw).series[i] for i in _picked(batch)]


def _mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    if not raw:
        return st.binary(max_size=8)
    positions = st.integers(0, len(raw) - 1)
    flip = st.tuples(positions, st.integers(0, 255)).map(
        lambda pv: raw[: pv[0]] + bytes([pv[1]]) + raw[pv[0] + 1 :]
    )
    cut = positions.map(lambda p: raw[:p])
    insert = st.tuples(positions, st.binary(min_size=1, max_size=3)).map(
        lambda pb: raw[: pb[0]] + pb[1] + raw[pb[0] :]
    )
    return st.one_of(flip, cut, insert)


@pytest.mark.slow
@settings(max_examples=180, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_v1_requests().flatmap(lambda case: _mutations(case[0])))
def test_fuzz_whatever_is_accepted_upb_reads_the_same(raw: bytes) -> None:
    """Mutated requests: refused with a DecodeError (of a kind), or accepted as upb reads them
    (the check is stricter than upb, never looser), label sets valid and sorted."""
    try:
        found = validate.survey(raw, NAMES, PREFIXES, NO_LIMITS)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    upb = remote_pb2.WriteRequest.FromString(raw)  # never raises for an accepted request
    batch = rw1.decode(found.raw, validate=False)
    assert len(upb.timeseries) == found.series == len(batch.series)
    assert found.points == batch.point_count
    for item in batch.series:
        names = [name for name, _ in item.labels]
        assert names == sorted(set(names)) and "" not in names
        assert item.name


@pytest.mark.parametrize(
    "decode",
    [
        pytest.param(lambda raw: rw1.decode(raw, limits=LIMITS), id="rw1-decode"),
        pytest.param(lambda raw: run(raw), id="survey"),
    ],
)
def test_both_ways_take_the_limits_from_receiver_config(decode: Callable[[bytes], object]) -> None:
    with pytest.raises(TooManySamplesError):
        decode(series(UP, tail=sample() * 6))
    assert decode(series(UP, tail=sample() * 5)) is not None


def test_sorted_series_keep_samples_exemplars_and_histograms() -> None:
    item = Series(
        (("b", "2"), ("__name__", "x"), ("a", "1")),
        (Sample(1.5, 7),),
        histograms=(Histogram(9, count_value=2, zero_count=2),),
    )
    raw = remote_pb2.WriteRequest()
    ts = raw.timeseries.add()
    for name, value in item.labels:
        ts.labels.add(name=name, value=value)
    ts.samples.add(value=1.5, timestamp=7)
    rw1.fill_histogram(ts.histograms.add(), item.histograms[0])
    decoded = rw1.decode_counted(raw.SerializeToString())
    assert decoded.sorted == 1
    got: Labels = decoded.batch.series[0].labels
    assert got == (("__name__", "x"), ("a", "1"), ("b", "2"))
    assert decoded.batch.series[0].samples == item.samples
    assert decoded.batch.series[0].histograms[0].count_value == 2


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v2_batches().map(rw2.encode).flatmap(_mutations))
def test_fuzz_v2_whatever_passes_check_v2_upb_reads(raw: bytes) -> None:
    """Remote write 2.0: the framing check is never looser than upb, and its errors are one
    line; what it accepts, upb parses."""
    try:
        validate.check_v2(raw)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    write_v2_pb2.Request.FromString(raw)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_v2_requests())
def test_any_valid_v2_encoding_is_accepted_and_decoded_sorted(case: tuple[bytes, Batch]) -> None:
    raw, batch = case
    validate.check_v2(raw)
    decoded = rw2.decode_counted(raw)
    assert canonical(decoded.batch) == canonical(rw2.decode(rw2.encode(batch)))
    unsorted = sum(1 for s in rw2.decode(raw, validate=False).series if not is_sorted(s.labels))
    assert decoded.sorted == unsorted


# -- native histograms: every rule of Prometheus' Validate ---------------------------------


def _h(*fields: bytes) -> bytes:
    return b"".join(fields)


def _zig(value: int) -> bytes:
    return pb_varint((value << 1) ^ (value >> 63))


def _span(offset: int, length: int) -> bytes:
    return key(1, 0) + _zig(offset) + key(2, 0) + pb_varint(length)


def _d(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


INT = key(1, 0)  # count_int, its value follows
FLOAT = key(2, 1)  # count_float, 8 bytes follow
SCHEMA = key(4, 0)
CUSTOM = SCHEMA + _zig(-53)
POS_SPAN, NEG_SPAN = 11, 8
POS_DELTAS, NEG_DELTAS, POS_COUNTS, NEG_COUNTS, BOUNDS = 12, 9, 13, 10, 16

# (id, a histogram Prometheus refuses, what it says, the nearest one it accepts)
# fmt: off
HISTOGRAM_RULES: list[tuple[str, bytes, str, bytes]] = [
    ("schema-above-52", _h(SCHEMA + _zig(53)), "invalid schema, which must be between -4 and 52 for exponential buckets (9 to 52 are reduced to 8), or -53 for custom buckets, got schema 53", _h(SCHEMA + _zig(52))),
    ("schema-below-minus-4", _h(SCHEMA + _zig(-5)), "got schema -5", _h(SCHEMA + _zig(-4))),
    ("schema-minus-52", _h(SCHEMA + _zig(-52)), "got schema -52", _h(CUSTOM)),
    ("schema-past-sint32-truncated", _h(SCHEMA + pb_varint(1 << 32 | 106)), "got schema 53", _h(SCHEMA + pb_varint(1 << 32 | 104))),
    ("int-bucket-below-zero", _h(INT + b"\x01", ld(POS_SPAN, _span(0, 2)), ld(POS_DELTAS, _zig(2) + _zig(-3))), "positive side: bucket number 2 has observation count of -1", _h(INT + b"\x03", ld(POS_SPAN, _span(0, 2)), ld(POS_DELTAS, _zig(2) + _zig(-1)))),
    ("int-negative-side-bucket-below-zero", _h(INT + b"\x00", ld(NEG_SPAN, _span(0, 1)), ld(NEG_DELTAS, _zig(-1))), "negative side: bucket number 1 has observation count of -1", _h(INT + b"\x01", ld(NEG_SPAN, _span(0, 1)), ld(NEG_DELTAS, _zig(1)))),
    ("int-deltas-wrap-around-int64", _h(INT + b"\x00", ld(POS_SPAN, _span(0, 2)), ld(POS_DELTAS, _zig(2**63 - 1) + _zig(1))), "positive side: bucket number 2 has observation count of -9223372036854775808", _h(INT + pb_varint(2**63 - 1), ld(POS_SPAN, _span(0, 1)), ld(POS_DELTAS, _zig(2**63 - 1)))),
    ("int-count-above-buckets", _h(INT + b"\x05", ld(POS_SPAN, _span(0, 1)), key(POS_DELTAS, 0) + _zig(2)), "2 observations found in buckets, but the Count field is 5", _h(INT + b"\x05", key(6, 0) + b"\x03", ld(POS_SPAN, _span(0, 1)), key(POS_DELTAS, 0) + _zig(2))),
    ("int-count-below-buckets-nan-sum", _h(INT + b"\x01", key(3, 1) + _d(math.nan), key(6, 0) + b"\x02"), "should be at least the number of observations", _h(INT + b"\x03", key(3, 1) + _d(math.nan), key(6, 0) + b"\x02")),
    ("int-count-sum-wraps-uint64", _h(INT + b"\x00", key(6, 0) + pb_varint(2**64 - 1), ld(POS_SPAN, _span(0, 1)), key(POS_DELTAS, 0) + _zig(2)), "1 observations found in buckets, but the Count field is 0", _h(INT + b"\x01", key(6, 0) + pb_varint(2**64 - 1), ld(POS_SPAN, _span(0, 1)), key(POS_DELTAS, 0) + _zig(2))),
    ("int-zero-count-as-float-is-0", _h(INT + b"\x02", key(7, 1) + _d(2.0)), "0 observations found in buckets, but the Count field is 2", _h(INT + b"\x00", key(7, 1) + _d(2.0))),
    ("float-count-below-zero", _h(FLOAT + _d(-1.0)), "observation count is -1.0", _h(FLOAT + _d(math.nan))),
    ("float-zero-count-below-zero", _h(FLOAT + _d(0.0), key(7, 1) + _d(-0.5)), "zero bucket has observation count of -0.5", _h(FLOAT + _d(0.0), key(7, 1) + _d(-0.0))),
    ("float-bucket-below-zero", _h(FLOAT + _d(1.0), ld(POS_SPAN, _span(0, 2)), ld(POS_COUNTS, _d(1.0, -1.0))), "positive side: bucket number 2 has observation count of -1.0", _h(FLOAT + _d(1.0), ld(POS_SPAN, _span(0, 2)), ld(POS_COUNTS, _d(1.0, math.nan)))),
    ("float-negative-side-bucket-below-zero", _h(FLOAT + _d(1.0), ld(NEG_SPAN, _span(0, 1)), ld(NEG_COUNTS, _d(-2.0))), "negative side: bucket number 1 has observation count of -2.0", _h(FLOAT + _d(1.0), ld(NEG_SPAN, _span(0, 1)), ld(NEG_COUNTS, _d(2.0)))),
    ("float-ignores-deltas", _h(FLOAT + _d(1.0), ld(POS_SPAN, _span(0, 1)), ld(POS_DELTAS, _zig(-5))), "positive side: spans need 1 buckets, have 0 buckets", _h(FLOAT + _d(1.0), ld(POS_SPAN, _span(0, 1)), ld(POS_DELTAS, _zig(-5)), ld(POS_COUNTS, _d(1.0)))),
    ("exponential-with-bounds", _h(ld(BOUNDS, _d(1.0))), "histogram with exponential schema must not have custom bounds", _h(ld(BOUNDS, b""))),
    ("custom-bound-nan", _h(CUSTOM, ld(BOUNDS, _d(1.0, math.nan))), "custom buckets: histogram custom bounds must not be NaN", _h(CUSTOM, ld(BOUNDS, _d(1.0, 2.0)))),
    ("custom-bounds-not-increasing", _h(CUSTOM, ld(BOUNDS, _d(1.0, 1.0))), "custom buckets: previous bound is 1.0 and current is 1.0", _h(CUSTOM, ld(BOUNDS, _d(-math.inf, 1.0)))),
    ("custom-last-bound-inf", _h(CUSTOM, ld(BOUNDS, _d(1.0, math.inf))), "custom buckets: last +Inf bound must not be explicitly defined", _h(CUSTOM, ld(BOUNDS, _d(1.0, 1e308)))),
    ("custom-first-span-negative", _h(INT + b"\x01", CUSTOM, ld(BOUNDS, _d(1.0)), ld(POS_SPAN, _span(-1, 1)), key(POS_DELTAS, 0) + _zig(1)), "custom buckets: span number 1 with offset -1", _h(INT + b"\x01", CUSTOM, ld(BOUNDS, _d(1.0)), ld(POS_SPAN, _span(1, 1)), key(POS_DELTAS, 0) + _zig(1))),
    ("custom-spans-past-bounds", _h(INT + b"\x01", CUSTOM, ld(BOUNDS, _d(1.0)), ld(POS_SPAN, _span(2, 1)), key(POS_DELTAS, 0) + _zig(1)), "only 1 custom bounds defined which is insufficient to cover total span length of 3", _h(INT + b"\x01", CUSTOM, ld(BOUNDS, _d(1.0, 2.0)), ld(POS_SPAN, _span(2, 1)), key(POS_DELTAS, 0) + _zig(1))),
    ("custom-spans-need-buckets", _h(CUSTOM, ld(BOUNDS, _d(1.0)), ld(POS_SPAN, _span(0, 1))), "custom buckets: spans need 1 buckets, have 0 buckets", _h(CUSTOM, ld(BOUNDS, _d(1.0)), ld(POS_SPAN, _span(0, 0)))),
    ("custom-zero-count", _h(INT + b"\x01", CUSTOM, key(6, 0) + b"\x01"), "custom buckets: must have zero count of 0", _h(FLOAT + _d(1.0), CUSTOM, key(6, 0) + b"\x01")),
    ("custom-zero-count-nan", _h(FLOAT + _d(1.0), CUSTOM, key(7, 1) + _d(math.nan)), "custom buckets: must have zero count of 0", _h(FLOAT + _d(1.0), CUSTOM, key(7, 1) + _d(-0.0))),
    ("custom-zero-threshold", _h(CUSTOM, key(5, 1) + _d(1e-9)), "custom buckets: must have zero threshold of 0", _h(CUSTOM, key(5, 1) + _d(-0.0))),
    ("custom-negative-spans", _h(CUSTOM, ld(NEG_SPAN, _span(0, 0))), "custom buckets: must not have negative spans", _h(CUSTOM, ld(POS_SPAN, _span(0, 0)))),
    ("custom-negative-buckets", _h(CUSTOM, ld(NEG_DELTAS, _zig(0))), "custom buckets: must not have negative buckets", _h(FLOAT + _d(0.0), CUSTOM, ld(NEG_DELTAS, _zig(0)))),
]
# fmt: on


def _v2_with(histogram: bytes) -> bytes:
    request = write_v2_pb2.Request(symbols=["", "__name__", "up"])
    request.timeseries.add(labels_refs=[1, 2]).histograms.append(
        write_v2_pb2.Histogram.FromString(histogram)
    )
    return bytes(request.SerializeToString())


@pytest.mark.parametrize(
    ("bad", "words", "good"),
    [case[1:] for case in HISTOGRAM_RULES],
    ids=[case[0] for case in HISTOGRAM_RULES],
)
def test_native_histograms_are_judged_as_prometheus_validates_them(
    bad: bytes, words: str, good: bytes
) -> None:
    """Each rule of Prometheus' ``Validate`` (v3.9, after its remote-write handler reduces
    schemas 9 to 52 to 8), next to the nearest histogram it accepts: the reference words the
    refusal, the C walk agrees, and a 2.0 request of the same histogram is refused alike."""
    refused, accepted = series(UP, tail=ld(4, bad)), series(UP, tail=ld(4, good))
    with pytest.raises(DecodeError) as caught:
        run(refused)
    prefix = "invalid native histogram in series up{} (timeseries[0]): histograms[0]: "
    assert str(caught.value).startswith(prefix)
    assert words in str(caught.value)
    assert run(accepted).points == 1
    if rw1_bytes.NATIVE:
        names, prefixes = frozenset({b"up"}), frozenset({b"gotk_"})
        assert isinstance(rw1_bytes.survey(refused, names, prefixes, LIMITS), rw1_bytes.Refused)
        assert isinstance(rw1_bytes.survey(accepted, names, prefixes, LIMITS), rw1_bytes.Survey)
    with pytest.raises(DecodeError, match=re.escape(words)):
        rw2.decode(_v2_with(bad))
    assert len(rw2.decode(_v2_with(good)).series[0].histograms) == 1
