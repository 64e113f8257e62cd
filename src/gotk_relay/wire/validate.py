"""The strict reference check of remote-write requests, in pure Python.

``survey`` accepts exactly the remote write 1.0 requests that Prometheus 3 and Mimir accept and
answers what the fast path needs of them (``rw1_bytes.Survey``); any other request raises the
error that is sent back, naming the first bad series in request order. The compiled scanner
(``rw1_bytes.survey``) answers the same for valid requests at speed and says None for any
invalid one; this module then words the refusal, and it is the whole check when the extension
is not built.
``check_v2`` is the same protobuf strictness for a remote write 2.0 Request (``rw2`` does the
label rules on the decoded request).

The protobuf rules, as gogo-protobuf (Prometheus, Mimir) applies them: any field order, values
as varints of up to 10 bytes, unknown field numbers skipped for wire types 0, 1, 2 and 5; a
declared field with another wire type, a group (wire types 3 and 4, anywhere), field number 0, a
length past its parent's end or trailing bytes that do not make a field are refused. Where upb
(the relay's own decoder, for every destination that converts) is stricter, its rule holds too,
so that nothing accepted here fails later: field keys and lengths of at most 5 bytes, and every
occurrence of a string valid UTF-8, also one a later occurrence overrides. Within a Label a
repeated name or value keeps its last occurrence. A label set must have non-empty, unique names
and a non-empty ``__name__``; empty values are allowed. A native histogram must be valid as
Prometheus' ``Validate`` judges it once its remote-write handler has read it
(``histogram_problem``: the schema, each side's spans against its buckets, bucket counts, the
count, custom bounds); its spans' lengths are what a consumer expands (OTLP's dense buckets), so
they may not claim more than the request holds. A set that is not sorted by name is not
refused: its Label fields come first, each as its own bytes, in name order (as Prometheus
writes a series), then its other fields in the order they came. The series keeps its length, so
only that series' bytes change and the request keeps its length.

Order of the checks: the request's own fields (framing of every top-level field), then the
series count (413), then the point count (413, counted by upb in C first, so an oversized
request is never walked here), then every MetricMetadata, then series by series, each: its
framing, label limits (400), then the label rules (400), then its histograms (400).
Cost: Python work per series, even in Prometheus' shape (the shapes it writes are read in a few
byte comparisons; figures: docs/performance.md), so a caller that runs this on a large request
(the default path does only for one the compiled scanner refused) should keep it off the event
loop or bound the request.
Errors: ``DecodeError``, ``LabelLimitError``, ``TooManySeriesError``, ``TooManySamplesError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from . import rw1_bytes
from .errors import DecodeError
from .labels import (
    LabelLimitError,
    Limits,
    check_points,
    check_series_count,
    clip,
    describe_raw,
    quote,
)
from .remote_pb2 import Histogram as HistogramProto
from .rw1_bytes import _varint

NAME: Final = b"__name__"
# Exactly one varint (of at most 10 bytes): what a Sample's timestamp field holds.
_ONE_VARINT: Final = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]", re.DOTALL).fullmatch
_VARINTS: Final = re.compile(rb"(?:[\x80-\xff]{0,9}[\x00-\x7f])*", re.DOTALL).fullmatch
_MAX_DEPTH: Final = 32  # nesting the schemas below can reach is 4; bounds a hostile schema walk

# Field kinds of the schemas: how a field's value must be encoded.
_VARINT: Final = "varint"  # int32/int64/uint32/uint64/sint*/enum/bool: wire type 0
_I64: Final = "i64"  # double/fixed64: wire type 1
_STRING: Final = "string"  # wire type 2, valid UTF-8
_PACKED_VARINT: Final = "packed varint"  # repeated varint scalar: wire type 0, or 2 packed
_PACKED_I64: Final = "packed i64"  # repeated double: wire type 1, or 2 packed

Schema = Mapping[int, tuple[str, str | None]]  # field -> (kind or "message", message name)
_WIRE_NAMES: Final = ("VARINT", "I64", "LEN", "SGROUP", "EGROUP", "I32", "6", "7")

_BUCKET_SPAN: Final[Schema] = {1: (_VARINT, None), 2: (_VARINT, None)}
_HISTOGRAM: Final[dict[int, tuple[str, str | None]]] = {
    1: (_VARINT, None),  # count_int
    2: (_I64, None),  # count_float
    3: (_I64, None),  # sum
    4: (_VARINT, None),  # schema
    5: (_I64, None),  # zero_threshold
    6: (_VARINT, None),  # zero_count_int
    7: (_I64, None),  # zero_count_float
    8: ("message", "BucketSpan"),
    9: (_PACKED_VARINT, None),
    10: (_PACKED_I64, None),
    11: ("message", "BucketSpan"),
    12: (_PACKED_VARINT, None),
    13: (_PACKED_I64, None),
    14: (_VARINT, None),  # reset_hint
    15: (_VARINT, None),  # timestamp
    16: (_PACKED_I64, None),  # custom_values
}
_SCHEMAS: Final[dict[str, Schema]] = {
    # remote write 1.0 (proto/remote.proto)
    "Label": {1: (_STRING, None), 2: (_STRING, None)},
    "Sample": {1: (_I64, None), 2: (_VARINT, None)},
    "Exemplar": {1: ("message", "Label"), 2: (_I64, None), 3: (_VARINT, None)},
    "Histogram": _HISTOGRAM,
    "BucketSpan": _BUCKET_SPAN,
    "MetricMetadata": {
        1: (_VARINT, None),
        2: (_STRING, None),
        4: (_STRING, None),
        5: (_STRING, None),
    },
    # remote write 2.0 (proto/write_v2.proto)
    "v2.Request": {4: (_STRING, None), 5: ("message", "v2.TimeSeries")},
    "v2.TimeSeries": {
        1: (_PACKED_VARINT, None),
        2: ("message", "v2.Sample"),
        3: ("message", "v2.Histogram"),
        4: ("message", "v2.Exemplar"),
        5: ("message", "v2.Metadata"),
        6: (_VARINT, None),
    },
    "v2.Sample": {1: (_I64, None), 2: (_VARINT, None), 3: (_VARINT, None)},
    "v2.Exemplar": {1: (_PACKED_VARINT, None), 2: (_I64, None), 3: (_VARINT, None)},
    "v2.Metadata": {1: (_VARINT, None), 3: (_VARINT, None), 4: (_VARINT, None)},
    "v2.Histogram": {**_HISTOGRAM, 17: (_VARINT, None)},
    "v2.BucketSpan": _BUCKET_SPAN,
}
_FIELD_NAMES: Final[dict[str, dict[int, str]]] = {
    "WriteRequest": {1: "timeseries", 3: "metadata"},
    "TimeSeries": {1: "labels", 2: "samples", 3: "exemplars", 4: "histograms"},
    "Label": {1: "name", 2: "value"},
    "Sample": {1: "value", 2: "timestamp"},
    "Exemplar": {1: "labels", 2: "value", 3: "timestamp"},
    "v2.TimeSeries": {
        1: "labels_refs",
        2: "samples",
        3: "histograms",
        4: "exemplars",
        5: "metadata",
    },
    "v2.Exemplar": {1: "labels_refs", 2: "value", 3: "timestamp"},
    "MetricMetadata": {2: "metric_family_name", 4: "help", 5: "unit"},
    "v2.Request": {4: "symbols", 5: "timeseries"},
}


def survey(
    raw: bytes,
    names: frozenset[bytes],
    prefixes: frozenset[bytes],
    limits: Limits,
    *,
    suspect: int = -1,
) -> rw1_bytes.Survey:
    """Check an uncompressed remote write 1.0 request and survey it (see the module docstring).

    ``picked`` holds the encoded series (as in the returned ``raw``) whose ``__name__`` is in
    ``names`` or starts with one of ``prefixes``; ``metadata`` every encoded MetricMetadata.

    ``suspect``: the index of the series the compiled walk refused the request in
    (``rw1_bytes.Refused``), which found every series before it valid: that series is checked right
    after the request's own fields, so wording a refusal costs one series in Python, not every
    series before it. The answer is the same with or without it.
    """
    end = len(raw)
    series_at: list[tuple[int, int]] = []
    metadata_at: list[tuple[int, int]] = []
    pos = 0
    while pos < end:
        field_at = pos
        key, pos = _field_key(raw, pos, end, "WriteRequest")
        number = key >> 3
        if number == 1 or number == 3:
            what = "timeseries" if number == 1 else "metadata"
            start, pos = _declared_len(raw, pos, end, key, f"WriteRequest.{what}", field_at)
            (series_at if number == 1 else metadata_at).append((start, pos))
        else:
            pos = _skip(raw, pos, end, key, "WriteRequest")
    check_series_count(len(series_at), limits)
    if limits.max_samples < len(raw) // 2:  # a point takes 2 bytes at least
        try:
            counted = rw1_bytes.count_points(raw)
        except DecodeError:
            counted = 0  # a broken series: the walk below says which, and bounds its count
        check_points(counted, limits)
    for index, (start, stop) in enumerate(metadata_at):
        try:
            _message(raw, start, stop, "MetricMetadata", f"metadata[{index}]", 0)
        except DecodeError as exc:
            raise DecodeError(f"invalid protobuf WriteRequest: {exc}") from None
    names_or_prefixes = bool(names or prefixes)
    starts = tuple(prefixes)
    points = 0
    picked: list[bytes] = []
    rewritten: list[tuple[int, bytes]] = []
    if 0 <= suspect < len(series_at):
        _series(raw, *series_at[suspect], suspect, limits)  # raises for the walk's refusal
    for index, (start, stop) in enumerate(series_at):
        count, name, reordered = _series(raw, start, stop, index, limits)
        points += count
        if points > limits.max_samples:
            check_points(points, limits)
        if reordered is not None:
            rewritten.append((start, reordered))
        if names_or_prefixes and (name in names or name.startswith(starts)):
            picked.append(raw[start:stop] if reordered is None else reordered)
    out = raw
    if rewritten:
        buffer = bytearray(raw)
        for start, content in rewritten:
            buffer[start : start + len(content)] = content
        out = bytes(buffer)
    metadata = [raw[start:stop] for start, stop in metadata_at]
    return rw1_bytes.Survey(len(series_at), points, picked, metadata, out, len(rewritten))


def check_v2(raw: bytes) -> None:
    """Refuse a remote write 2.0 Request whose protobuf encoding Prometheus 3 would refuse.

    The framing rules of ``survey`` over ``proto/write_v2.proto``, every symbol valid UTF-8;
    symbol references, label rules and limits are ``rw2.decode``'s, on the decoded request.
    """
    try:
        _message(raw, 0, len(raw), "v2.Request", "", 0)
    except DecodeError as exc:
        raise DecodeError(
            f"invalid protobuf io.prometheus.write.v2.Request: {_inner(exc)}"
        ) from None


# -- one series ---------------------------------------------------------------------------


def _series(
    raw: bytes, start: int, stop: int, index: int, limits: Limits
) -> tuple[int, bytes, bytes | None]:
    """Check series ``index`` (content ``raw[start:stop]``): its points, its metric name and its
    content with the labels sorted (None when they already are)."""
    labels: list[tuple[bytes, bytes, int, int]] = []  # name, value, field start, field end
    points = 0
    histograms = 0
    histogram_problem: str | None = None  # the first, worded once the labels are known
    pos = start
    varint = _ONE_VARINT
    try:
        while pos < stop:
            # The shapes Prometheus writes, read in a few byte comparisons (no varint loop): a
            # Label holding exactly a name and a value field, a Sample holding a value (or
            # none, 0) and a timestamp, all lengths one byte. Anything else, or anything these
            # do not fully match, takes the general walk below.
            tag = raw[pos]
            if tag == 0x0A and pos + 4 < stop:
                end_at = pos + 2 + raw[pos + 1]
                name_end = pos + 4 + raw[pos + 3]
                if (
                    end_at <= stop
                    and raw[pos + 1] < 0x80
                    and raw[pos + 2] == 0x0A
                    and name_end + 2 <= end_at
                    and raw[name_end] == 0x12
                    and raw[name_end + 1] == end_at - name_end - 2
                ):
                    labels.append(
                        (raw[pos + 4 : name_end], raw[name_end + 2 : end_at], pos, end_at)
                    )
                    pos = end_at
                    continue
            elif tag == 0x12 and pos + 3 < stop:
                size = raw[pos + 1]
                end_at = pos + 2 + size
                if end_at <= stop and (
                    (
                        11 <= size <= 20
                        and raw[pos + 2] == 0x09
                        and raw[pos + 11] == 0x10
                        and varint(raw, pos + 12, end_at)
                    )
                    or (2 <= size <= 11 and raw[pos + 2] == 0x10 and varint(raw, pos + 3, end_at))
                ):
                    points += 1
                    pos = end_at
                    continue
            field_at = pos
            key, pos = _field_key(raw, pos, stop, "TimeSeries")
            number = key >> 3
            if 1 <= number <= 4:
                what = _FIELD_NAMES["TimeSeries"][number]
                inner, pos = _declared_len(raw, pos, stop, key, f"TimeSeries.{what}", field_at)
                if number == 1:
                    name, value = _label(raw, inner, pos, f"labels[{len(labels)}]")
                    labels.append((name, value, field_at, pos))
                elif number == 2:
                    _message(raw, inner, pos, "Sample", f"samples[{points}]", 1)
                    points += 1
                elif number == 3:
                    _message(raw, inner, pos, "Exemplar", "exemplars", 1)
                else:
                    _message(raw, inner, pos, "Histogram", "histograms", 1)
                    if histogram_problem is None:
                        problem = _histogram_problem(raw, inner, pos)
                        if problem is not None:
                            histogram_problem = f"histograms[{histograms}]: {problem}"
                    histograms += 1
                    points += 1
            else:
                pos = _skip(raw, pos, stop, key, "TimeSeries")
    except DecodeError as exc:
        raise DecodeError(
            f"invalid protobuf WriteRequest: timeseries[{index}]: {_inner(exc)}"
        ) from None
    where = f"timeseries[{index}]"
    pairs = [(name, value) for name, value, _, _ in labels]
    problem = _limit_problem(pairs, limits)
    if problem:
        raise LabelLimitError(f"{problem} in series {describe_raw(pairs)} ({where})")
    problem, metric = _label_problem(pairs)
    if problem:
        raise DecodeError(f"{problem} in series {describe_raw(pairs)} ({where})")
    if histogram_problem is not None:
        raise DecodeError(
            f"invalid native histogram in series {describe_raw(pairs)} ({where}): "
            f"{histogram_problem}"
        )
    reordered = None
    if any(labels[i][0] >= labels[i + 1][0] for i in range(len(labels) - 1)):
        # Names are unique here, so the order is total. Each Label field keeps its own bytes;
        # they come first, in name order (as Prometheus writes a series), then the series'
        # other fields in the order they came. The series keeps its length.
        rest: list[bytes] = []
        cursor = start
        for _, _, field_start, field_end in labels:
            rest.append(raw[cursor:field_start])
            cursor = field_end
        rest.append(raw[cursor:stop])
        moved = b"".join(
            raw[field_start:field_end] for _, _, field_start, field_end in sorted(labels)
        )
        reordered = moved + b"".join(rest)
    return points, metric, reordered


class _Span(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...


class _Histogram(Protocol):
    """A native histogram as upb decodes it: remote write 1.0's or 2.0's (same field names)."""

    @property
    def count_int(self) -> int: ...
    @property
    def count_float(self) -> float: ...
    @property
    def zero_count_int(self) -> int: ...
    @property
    def zero_count_float(self) -> float: ...
    @property
    def sum(self) -> float: ...
    @property
    def schema(self) -> int: ...
    @property
    def zero_threshold(self) -> float: ...
    @property
    def negative_spans(self) -> Sequence[_Span]: ...
    @property
    def negative_deltas(self) -> Sequence[int]: ...
    @property
    def negative_counts(self) -> Sequence[float]: ...
    @property
    def positive_spans(self) -> Sequence[_Span]: ...
    @property
    def positive_deltas(self) -> Sequence[int]: ...
    @property
    def positive_counts(self) -> Sequence[float]: ...
    @property
    def custom_values(self) -> Sequence[float]: ...
    def WhichOneof(self, name: str) -> str | None: ...


CUSTOM_BUCKETS_SCHEMA: Final = -53
# Exponential schemas a receiver takes: Prometheus validates -4 to 8, and its remote-write
# handler first reduces 9 to 52 to 8 (prometheus#17189); -9 to -5 are refused.
EXPONENTIAL_SCHEMAS: Final = range(-4, 53)
_U64: Final = (1 << 64) - 1


def _spans_problem(spans: Sequence[_Span], buckets: int) -> str | None:
    for number, span in enumerate(spans[1:], 2):
        if span.offset < 0:
            return f"span number {number} with offset {span.offset}"
    needed = sum(span.length for span in spans)
    if needed != buckets:
        return f"spans need {needed} buckets, have {buckets} buckets"
    return None


def _buckets_problem(buckets: Sequence[int] | Sequence[float], deltas: bool) -> str | None:
    """Prometheus' ``checkHistogramBuckets``: every bucket count (deltas added up, with Go's
    int64 wrap-around) at least zero."""
    last = 0
    for number, bucket in enumerate(buckets, 1):
        if deltas:
            last = (last + int(bucket) + (1 << 63)) % (1 << 64) - (1 << 63)
            current: float = last
        else:
            current = bucket
        if current < 0:  # NaN is not
            return f"bucket number {number} has observation count of {current}"
    return None


def _custom_bounds_problem(
    bounds: Sequence[float], spans: Sequence[_Span], buckets: int
) -> str | None:
    """Prometheus' ``checkHistogramCustomBounds``."""
    previous = -math.inf
    for number, bound in enumerate(bounds):
        if math.isnan(bound):
            return "histogram custom bounds must not be NaN"
        if number > 0 and bound <= previous:
            return (
                f"previous bound is {previous} and current is {bound}: histogram custom bounds "
                "must be in strictly increasing order"
            )
        previous = bound
    if previous == math.inf:
        return "last +Inf bound must not be explicitly defined"
    for number, span in enumerate(spans, 1):
        if span.offset < 0:
            return f"span number {number} with offset {span.offset}"
    needed = sum(span.length for span in spans)
    if needed != buckets:
        return f"spans need {needed} buckets, have {buckets} buckets"
    extent = sum(span.length + span.offset for span in spans)
    if len(bounds) + 1 < extent:
        return (
            f"only {len(bounds)} custom bounds defined which is insufficient to cover total "
            f"span length of {extent}"
        )
    return None


def histogram_problem(h: _Histogram) -> str | None:
    """What Prometheus' ``Validate`` (model/histogram, v3.9) says of a native histogram as its
    remote-write handler reads it, in its words, or None. The count oneof says integer (deltas)
    or float (counts); the zero count is the member of its oneof of the same kind, else 0."""
    is_float = h.WhichOneof("count") == "count_float"
    zero_kind = h.WhichOneof("zero_count")
    negative = list(h.negative_counts if is_float else h.negative_deltas)
    positive = list(h.positive_counts if is_float else h.positive_deltas)
    zero: float
    if is_float:
        zero = h.zero_count_float if zero_kind == "zero_count_float" else 0.0
    else:
        zero = h.zero_count_int if zero_kind == "zero_count_int" else 0
    if h.schema == CUSTOM_BUCKETS_SCHEMA:
        problem = _custom_bounds_problem(h.custom_values, h.positive_spans, len(positive))
        if problem is not None:
            return f"custom buckets: {problem}"
        if zero != 0:  # NaN is not 0
            return "custom buckets: must have zero count of 0"
        if h.zero_threshold != 0:
            return "custom buckets: must have zero threshold of 0"
        if h.negative_spans:
            return "custom buckets: must not have negative spans"
        if negative:
            return "custom buckets: must not have negative buckets"
    elif h.schema in EXPONENTIAL_SCHEMAS:
        for side, spans, buckets in (
            ("positive", h.positive_spans, positive),
            ("negative", h.negative_spans, negative),
        ):
            problem = _spans_problem(spans, len(buckets))
            if problem is not None:
                return f"{side} side: {problem}"
        problem = _buckets_problem(negative, not is_float)
        if problem is not None:
            return f"negative side: {problem}"
        if is_float and zero < 0:
            return f"zero bucket has observation count of {zero}"
        if h.custom_values:
            return "histogram with exponential schema must not have custom bounds"
    else:
        return (
            "histogram has an invalid schema, which must be between -4 and 52 for exponential "
            f"buckets (9 to 52 are reduced to 8), or -53 for custom buckets, got schema {h.schema}"
        )
    if is_float:
        if h.count_float < 0:
            return f"observation count is {h.count_float}"
        problem = _buckets_problem(positive, False)
        return None if problem is None else f"positive side: {problem}"
    problem = _buckets_problem(positive, True)
    if problem is not None:
        return f"positive side: {problem}"
    found = 0 if zero_kind != "zero_count_int" else h.zero_count_int
    for deltas in (h.negative_deltas, h.positive_deltas):
        last = 0
        for delta in deltas:
            last = (last + delta) & _U64  # each >= 0 as int64: checked above
            found += last
    found &= _U64
    count = h.count_int
    if math.isnan(h.sum):
        if found > count:
            return (
                f"{found} observations found in buckets, but the Count field is {count}: "
                "histogram's observation count should be at least the number of observations "
                "found in the buckets"
            )
    elif found != count:
        return (
            f"{found} observations found in buckets, but the Count field is {count}: "
            "histogram's observation count should equal the number of observations found in "
            "the buckets (in absence of NaN)"
        )
    return None


def _histogram_problem(raw: bytes, start: int, stop: int) -> str | None:
    """``histogram_problem`` of the Histogram encoded in ``raw[start:stop]`` (framing checked)."""
    return histogram_problem(HistogramProto.FromString(raw[start:stop]))


def _label(raw: bytes, pos: int, stop: int, where: str) -> tuple[bytes, bytes]:
    """A Label's name and value bytes (last occurrence wins; UTF-8 is checked by the caller)."""
    name = value = b""
    counts = [0, 0]
    try:
        while pos < stop:
            field_at = pos
            key, pos = _field_key(raw, pos, stop, "Label")
            number = key >> 3
            if number == 1 or number == 2:
                what = "name" if number == 1 else "value"
                inner, pos = _declared_len(raw, pos, stop, key, f"Label.{what}", field_at)
                # An occurrence a later one overrides is still a proto3 string that upb (so
                # the relay's own decoder) refuses when it is not UTF-8; the last is named later.
                if number == 1:
                    if counts[0] and not _utf8(name):
                        raise DecodeError("invalid UTF-8 in an overridden Label.name")
                    name = raw[inner:pos]
                else:
                    if counts[1] and not _utf8(value):
                        raise DecodeError("invalid UTF-8 in an overridden Label.value")
                    value = raw[inner:pos]
                counts[number - 1] += 1
            else:
                pos = _skip(raw, pos, stop, key, "Label")
    except DecodeError as exc:
        raise DecodeError(f"{where}: {_inner(exc)}") from None
    return name, value


def _limit_problem(pairs: list[tuple[bytes, bytes]], limits: Limits) -> str | None:
    if len(pairs) > limits.max_labels_per_series:
        return (
            f"{len(pairs)} labels, over receiver.max_labels_per_series "
            f"({limits.max_labels_per_series})"
        )
    for name, value in pairs:
        if len(name) > limits.max_label_name_length:
            return (
                f"label name {_clipped(name)} of {len(name)} bytes, over "
                f"receiver.max_label_name_length ({limits.max_label_name_length})"
            )
        if len(value) > limits.max_label_value_length:
            return (
                f"value of label {_clipped(name)} of {len(value)} bytes, over "
                f"receiver.max_label_value_length ({limits.max_label_value_length})"
            )
    return None


def _label_problem(pairs: list[tuple[bytes, bytes]]) -> tuple[str | None, bytes]:
    """Why the label set is refused (or None), and its metric name."""
    seen: set[bytes] = set()
    metric = None
    for name, value in pairs:
        if not _utf8(name):
            return f"invalid UTF-8 in label name {_quote(name)}", b""
        if not _utf8(value):
            return f"invalid UTF-8 in the value of label {_quote(name)}", b""
        if not name:
            return "empty label name", b""
        if name in seen:
            return f"duplicate label name {_quote(name)}", b""
        seen.add(name)
        if name == NAME:
            metric = value
    if metric is None:
        return "series without a metric name (__name__)", b""
    if not metric:
        return "empty metric name (__name__)", b""
    return None, metric


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _clipped(name: bytes) -> str:
    """A label name as ``labels.limit_problem`` words it (so both paths say the same)."""
    return repr(clip(name.decode("utf-8", "backslashreplace")))


def _quote(data: bytes) -> str:
    return quote(data.decode("utf-8", "backslashreplace"))


# -- protobuf framing ---------------------------------------------------------------------


def _key(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A field key: a varint of at most 5 bytes and 32 bits (upb refuses wider ones)."""
    key, after = _varint(data, pos, end)
    if after - pos > 5 or key > 0xFFFFFFFF:
        raise DecodeError("invalid protobuf: field key longer than 5 bytes or over 32 bits")
    return key, after


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A LEN field's length: at most 5 bytes, as upb reads it (Prometheus never pads one)."""
    length, after = _varint(data, pos, end)
    if after - pos > 5:
        raise DecodeError("invalid protobuf: length varint longer than 5 bytes")
    return length, after


def _field_key(data: bytes, pos: int, end: int, message: str) -> tuple[int, int]:
    """A field's key, refusing field number 0 and the group wire types."""
    try:
        key, pos = _key(data, pos, end)
    except DecodeError as exc:
        raise DecodeError(_reason(exc, message)) from None
    if key >> 3 == 0:
        raise DecodeError(f"invalid protobuf {message}: field number 0")
    kind = key & 7
    if kind == 3 or kind == 4:
        raise DecodeError(
            f"invalid protobuf {message}: field {key >> 3} has group wire type {kind} "
            "(groups are not used by remote write)"
        )
    if kind > 5:
        raise DecodeError(f"invalid protobuf {message}: field {key >> 3} has wire type {kind}")
    return key, pos


def _inner(exc: DecodeError) -> str:
    """A nested message's reason without its own "invalid protobuf " (the outer one says it)."""
    text = str(exc)
    return text.removeprefix("invalid protobuf ")


def _reason(exc: DecodeError, message: str) -> str:
    """``rw1_bytes``' helpers say "invalid protobuf: why"; name the message instead."""
    text = str(exc)
    prefix = "invalid protobuf: "
    return f"invalid protobuf {message}: {text[len(prefix) :]}" if text.startswith(prefix) else text


def _declared_len(
    data: bytes, pos: int, end: int, key: int, field: str, field_at: int
) -> tuple[int, int]:
    """(content start, content end) of a declared LEN field; refuses another wire type."""
    message, _, label = field.partition(".")
    if key & 7 != 2:
        raise DecodeError(
            f"invalid protobuf {message}: field {label} ({key >> 3}) has wire type "
            f"{_WIRE_NAMES[key & 7]}, declared LEN (at byte {field_at})"
        )
    try:
        length, pos = _length(data, pos, end)
    except DecodeError as exc:
        raise DecodeError(_reason(exc, message)) from None
    if length > end - pos:
        raise DecodeError(
            f"invalid protobuf {message}: field {label} declares {length} bytes, "
            f"{end - pos} left (at byte {field_at})"
        )
    return pos, pos + length


def _skip(data: bytes, pos: int, end: int, key: int, message: str) -> int:
    """Skip an unknown field's value (wire types 0, 1, 2, 5: the key was checked)."""
    kind = key & 7
    try:
        if kind == 0:
            return _varint(data, pos, end)[1]
        if kind == 2:
            length, pos = _length(data, pos, end)
            if length > end - pos:
                raise DecodeError(f"invalid protobuf: field {key >> 3} is truncated")
            return pos + length
    except DecodeError as exc:
        raise DecodeError(_reason(exc, message)) from None
    width = 8 if kind == 1 else 4
    if width > end - pos:
        raise DecodeError(f"invalid protobuf {message}: field {key >> 3} is truncated")
    return pos + width


def _message(data: bytes, pos: int, end: int, message: str, where: str, depth: int) -> None:
    """Check a message of a schema in ``_SCHEMAS`` and, recursively, its sub-messages."""
    if depth > _MAX_DEPTH:
        raise DecodeError(f"invalid protobuf: {where}: nested too deeply")
    if message in _SAMPLES and _usual_sample(data, pos, end):
        return
    schema = _SCHEMAS[message]
    field_names = _FIELD_NAMES.get(message, {})
    counts: dict[int, int] = {}
    try:
        while pos < end:
            field_at = pos
            key, pos = _field_key(data, pos, end, message)
            number = key >> 3
            declared = schema.get(number)
            if declared is None:
                pos = _skip(data, pos, end, key, message)
                continue
            kind, sub = declared
            wire = key & 7
            label = field_names.get(number, str(number))
            if kind == _VARINT or (kind == _PACKED_VARINT and wire == 0):
                _expect(wire, 0, message, label, field_at)
                pos = _skip(data, pos, end, key, message)
            elif kind == _I64 or (kind == _PACKED_I64 and wire == 1):
                _expect(wire, 1, message, label, field_at)
                pos = _skip(data, pos, end, key, message)
            else:
                inner, pos = _declared_len(data, pos, end, key, f"{message}.{label}", field_at)
                if kind == _STRING:
                    if not _utf8(data[inner:pos]):
                        index = counts.get(number, 0)
                        raise DecodeError(
                            f"invalid UTF-8 in {message}.{label}[{index}]"
                            if message == "v2.Request"
                            else f"invalid UTF-8 in {message}.{label}"
                        )
                elif kind == _PACKED_VARINT:
                    _packed_varints(data, inner, pos, message, label)
                elif kind == _PACKED_I64:
                    if (pos - inner) % 8:
                        raise DecodeError(
                            f"invalid protobuf {message}: packed field {label} of "
                            f"{pos - inner} bytes is not whole doubles"
                        )
                else:
                    assert sub is not None
                    index = counts.get(number, 0)
                    child = f"{label}[{index}]" if message.endswith("Request") else label
                    _message(data, inner, pos, sub, child, depth + 1)
            counts[number] = counts.get(number, 0) + 1
    except DecodeError as exc:
        if not where:
            raise
        raise DecodeError(f"{where}: {_inner(exc)}") from None


_SAMPLES: Final = frozenset({"Sample", "v2.Sample"})


def _usual_sample(data: bytes, pos: int, end: int) -> bool:
    """Whether a Sample's content is ``09 <double> 10 <varint>`` or ``10 <varint>`` exactly (the
    encodings Prometheus writes): valid without the general walk."""
    size = end - pos
    if size >= 11 and data[pos] == 0x09 and data[pos + 9] == 0x10:
        return _ONE_VARINT(data, pos + 10, end) is not None
    if size >= 2 and data[pos] == 0x10:
        return _ONE_VARINT(data, pos + 1, end) is not None
    return False


def _expect(wire: int, wanted: int, message: str, label: str, field_at: int) -> None:
    if wire != wanted:
        raise DecodeError(
            f"invalid protobuf {message}: field {label} has wire type {_WIRE_NAMES[wire]}, "
            f"declared {_WIRE_NAMES[wanted]} (at byte {field_at})"
        )


def _packed_varints(data: bytes, pos: int, end: int, message: str, label: str) -> None:
    if _VARINTS(data, pos, end) is not None:  # one C call; the loop below words an error
        return
    read: Callable[[bytes, int, int], tuple[int, int]] = _varint
    try:
        while pos < end:
            pos = read(data, pos, end)[1]
    except DecodeError as exc:
        raise DecodeError(
            f"invalid protobuf {message}: packed field {label}: {_reason(exc, message)}"
        ) from None
