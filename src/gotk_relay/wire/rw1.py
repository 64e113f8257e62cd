"""Remote write 1.0 (``prometheus.WriteRequest``) to and from the internal model."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from math import copysign
from typing import NamedTuple

from google.protobuf.message import DecodeError as ProtoDecodeError

from .. import caches
from ..caches import Bounded
from ..model import (
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Labels,
    MetricType,
    Sample,
    Series,
)
from . import remote_pb2 as pb
from . import rw1_bytes
from . import validate as strict
from .errors import DecodeError
from .labels import NO_LIMITS, Limits, check_points, check_series, check_series_count

CONTENT_TYPE = "application/x-protobuf"
VERSION = "0.1.0"


class Decoded(NamedTuple):
    """A decoded request and how many of its series had their labels sorted on the way."""

    batch: Batch
    sorted: int = 0
    # Remote write 2.0: its labels' bytes once the symbols are resolved (rw2.decode_counted),
    # which the relay's queues hold; 0 for 1.0, whose size is the request's.
    expanded: int = 0


def decode(data: bytes, *, validate: bool = True, limits: Limits = NO_LIMITS) -> Batch:
    """Parse an uncompressed WriteRequest: ``decode_counted(...).batch``."""
    return decode_counted(data, validate=validate, limits=limits).batch


def decode_counted(data: bytes, *, validate: bool = True, limits: Limits = NO_LIMITS) -> Decoded:
    """Parse an uncompressed WriteRequest, checked as strictly as Prometheus 3 and Mimir do.

    With ``validate`` the request passes ``validate.survey`` first (protobuf strictness, UTF-8,
    label rules, every limit; the errors it words are the ones sent back) and label sets not
    sorted by name come out sorted, counted in ``Decoded.sorted``. Without it (decoding what
    the relay itself queued) only ``limits`` apply, the series and point counts first.
    """
    sorted_count = 0
    if validate:
        data, sorted_count = _checked(data, limits)
    request = pb.WriteRequest()
    try:
        request.ParseFromString(data)
    except ProtoDecodeError as exc:
        raise DecodeError(f"invalid protobuf WriteRequest: {exc}") from exc
    if not validate:
        check_series_count(len(request.timeseries), limits)
        if limits.max_samples < len(data) // 2:  # a point takes 2 bytes at least
            check_points(
                sum(len(ts.samples) + len(ts.histograms) for ts in request.timeseries), limits
            )
    series = tuple(_series(ts) for ts in request.timeseries)
    if not validate and limits.bounds_labels:
        for item in series:
            check_series(item.labels, limits, validate=False)
    metadata = tuple(
        FamilyMetadata(m.metric_family_name, _metric_type(m.type), m.help, m.unit)
        for m in request.metadata
    )
    return Decoded(Batch(series, metadata), sorted_count)


def _checked(data: bytes, limits: Limits) -> tuple[bytes, int]:
    """``validate.survey``'s raw and sorted count: the compiled walk where it is built, the
    reference (which words the refusal) where it refused or is not built, as the fast path
    checks (write/scan.py); the reference costs Python work per label."""
    found = rw1_bytes.survey(data, frozenset(), frozenset(), limits)
    if not isinstance(found, rw1_bytes.Survey):
        suspect = -1 if found is None else found.series
        found = strict.survey(data, frozenset(), frozenset(), limits, suspect=suspect)
    return found.raw, found.sorted


def encode(batch: Batch) -> bytes:
    """Serialize to a WriteRequest (RW 2.0's start/created timestamps have no place in it).

    The one switch between the two encoders: ``encode_cached``, and ``encode_reference`` for a
    batch holding anything the cached one does not model (a value upb would convert or refuse,
    a string that is not UTF-8 encodable), which then encodes it or raises what upb raises.
    """
    try:
        return encode_cached(batch)
    except Exception:
        return encode_reference(batch)


def encode_reference(batch: Batch) -> bytes:
    """The reference encoder (upb): ``encode_cached``'s bytes must equal these (tests compare)."""
    request = pb.WriteRequest()
    add = request.timeseries.add
    for series in batch.series:
        _fill_series(add(), series)
    for meta in batch.metadata:
        request.metadata.add(
            type=int(meta.type), metric_family_name=meta.family, help=meta.help, unit=meta.unit
        )
    return bytes(request.SerializeToString())


def _fill_series(ts: pb.TimeSeries, series: Series) -> None:
    ts.labels.extend(pb.Label(name=k, value=v) for k, v in series.labels)
    ts.samples.extend(pb.Sample(value=s.value, timestamp=s.timestamp) for s in series.samples)
    for hist in series.histograms:
        fill_histogram(ts.histograms.add(), hist)
    for ex in series.exemplars:
        pex = ts.exemplars.add(value=ex.value, timestamp=ex.timestamp)
        pex.labels.extend(pb.Label(name=k, value=v) for k, v in ex.labels)


class _Unmodelled(Exception):
    """A value whose encoding (or refusal) only upb knows exactly."""


# Tags (field number << 3 | wire type) of the fields the fast path writes.
_TAG_TIMESERIES = 0x0A  # WriteRequest.timeseries, TimeSeries.labels, Label.name: 1, LEN
_TAG_METADATA = 0x1A  # WriteRequest.metadata: 3, LEN
_TAG_SAMPLES = 0x12  # TimeSeries.samples, Label.value: 2, LEN
_TAG_SAMPLE_VALUE = 0x09  # Sample.value: 1, I64
_TAG_SAMPLE_TIMESTAMP = 0x10  # Sample.timestamp: 2, VARINT
_TAG_META_TYPE = 0x08  # MetricMetadata.type: 1, VARINT
_TAG_META_FAMILY = 0x12  # MetricMetadata.metric_family_name: 2, LEN
_TAG_META_HELP = 0x22  # MetricMetadata.help: 4, LEN
_TAG_META_UNIT = 0x2A  # MetricMetadata.unit: 5, LEN
_ONE_BYTE = tuple(bytes((i,)) for i in range(256))
_SAMPLE_HEADER = tuple(bytes((_TAG_SAMPLES, n)) for n in range(128))
_ZERO_DOUBLE = bytes(8)
_INT64_MIN = -(1 << 63)
_INT64_LIMIT = 1 << 63
_UINT64_SPAN = 1 << 64
_pack_double = struct.Struct("<d").pack
_pack_tagged_double = struct.Struct("<Bd").pack  # "<": no padding between tag and value


class _Encoded(NamedTuple):
    """A label set's encoding, and the series headers of its usual one-sample series.

    The headers (tag and length, shared objects) are those of a series whose sample has a
    7-byte timestamp field (tag + 6-byte varint: every millisecond time from 1971 to 2109) and
    a value (``valued``), or +0.0, which proto3 omits (``zero``: a Flux status that is not the
    current one).
    """

    labels: Labels  # the tuple first seen with this content
    encoded: bytes
    valued: bytes
    zero: bytes


# Encoded labels per label set: the same synthesized and scraped series come back every batch,
# so most label sets cost one lookup. When full, its oldest slice is dropped (insertion order,
# not LRU, so a hit needs no bookkeeping). It keeps its label tuples alive (~2.7 KB for 12
# labels, encoding included), so the entry count bounds its memory: ~45 MB at most, however
# many distinct series pass. Only ``_encoded`` drops entries, from ``_labels_by_id`` too.
LABELS_CACHE: Bounded[Labels, _Encoded] = caches.family("rw1_labels", 16_384).new()
_labels_cache = LABELS_CACHE.entries
# The same entries by the id of their tuple, for label sets handed again as the very same tuple
# (the Flux rewriter's outputs, the fast path's cached label sets): found without hashing every
# pair. Only tuples held by ``LABELS_CACHE`` are entered, so an id here is never reused.
_labels_by_id: dict[int, _Encoded] = {}
# One label's field per (name, value): ``series_pieces`` encodes output series label by label,
# and a Flux object's outputs share most of their pairs with each other and with the other
# objects (namespace, kind, the KSM scrape's labels). ~200 bytes an entry at most.
FIELDS_CACHE: Bounded[tuple[str, str], bytes] = caches.family("rw1_label_fields", 16_384).new()
_fields_cache = FIELDS_CACHE.entries
_STAMP_LEN = 7
_VALUED_SAMPLE_HEADER = bytes((_TAG_SAMPLES, 9 + _STAMP_LEN))
_ZERO_SAMPLE_HEADER = bytes((_TAG_SAMPLES, _STAMP_LEN))
# The sample header and value of the most common value there is (Flux: the current status).
_ONE_SAMPLE_HEAD = _VALUED_SAMPLE_HEADER + struct.pack("<Bd", _TAG_SAMPLE_VALUE, 1.0)
# Timestamps repeat across a batch's series (one scrape, one evaluation): so do their varints.
_TIMESTAMP_CACHE_MAX = 4_096
_timestamp_cache: dict[int, bytes] = {}
# A series' tag and length; its lengths are few (and < 2**14 unless a label is huge).
_SERIES_HEADER_LIMIT = 1 << 14
_series_headers: dict[int, bytes] = {}


def uvarint(n: int) -> bytes:
    """Protobuf's base-128 varint of ``n`` ≥ 0 (snappy's length preamble is the same)."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int64(n: int) -> bytes:
    """Proto int64/int32: a negative value is its 64-bit two's complement (10 bytes)."""
    if n < 0:
        if n < _INT64_MIN:
            raise _Unmodelled
        n += _UINT64_SPAN
    elif n >= _INT64_LIMIT:
        raise _Unmodelled
    return uvarint(n)


def _string(tag: int, text: str) -> bytes:
    """A string field, absent when empty (proto3 implicit presence)."""
    if type(text) is not str:  # None would pass for empty here; upb has its own views on it
        raise _Unmodelled
    if not text:
        return b""
    data = text.encode()  # UnicodeEncodeError on a lone surrogate, as upb raises
    return _ONE_BYTE[tag] + uvarint(len(data)) + data


def _length_prefixed(tag: int, body: bytes) -> bytes:
    return _ONE_BYTE[tag] + uvarint(len(body)) + body


def _encode_labels_reference(labels: Labels) -> bytes:
    """A label set's Label fields as rw1 writes them: in order, name then value, an empty
    string omitted, shortest lengths. Raises for a str that is not UTF-8 encodable."""
    out = bytearray()
    for name, value in labels:
        name_bytes = name.encode()  # UnicodeEncodeError on a lone surrogate, as upb raises
        value_bytes = value.encode()
        name_len = len(name_bytes)
        value_len = len(value_bytes)
        if name_len and value_len and name_len + value_len < 124:
            # Both fields present and every length one byte: the usual label, written directly.
            out += bytes((_TAG_TIMESERIES, name_len + value_len + 4, _TAG_TIMESERIES, name_len))
            out += name_bytes
            out += bytes((_TAG_SAMPLES, value_len))
            out += value_bytes
        else:
            out += _length_prefixed(
                _TAG_TIMESERIES, _string(_TAG_TIMESERIES, name) + _string(_TAG_SAMPLES, value)
            )
    return bytes(out)


# The one switch: the compiled writer (``_survey.c``, the encoding ``labels_equal`` reads) or
# the reference; tests call both. A miss of the label caches costs this per label set.
_encode_labels: Callable[[Labels], bytes] = (
    rw1_bytes.encode_labels_compiled or _encode_labels_reference
)


def _timestamp(timestamp: int) -> bytes:
    """The Sample.timestamp field of a non-zero int timestamp."""
    encoded = _timestamp_cache.get(timestamp)
    if encoded is None:
        encoded = _ONE_BYTE[_TAG_SAMPLE_TIMESTAMP] + _int64(timestamp)
        if len(_timestamp_cache) >= _TIMESTAMP_CACHE_MAX:
            _timestamp_cache.clear()
        _timestamp_cache[timestamp] = encoded
    return encoded


def _encode_sample(value: float, timestamp: int) -> bytes:
    # upb converts an int to a double as struct does; bools and other numbers (which upb
    # converts or refuses its own way) are left to it.
    if (type(value) is not float and type(value) is not int) or type(timestamp) is not int:
        raise _Unmodelled
    if value:  # NaN included
        body = _pack_tagged_double(_TAG_SAMPLE_VALUE, value)
    else:
        # A double is absent when its bits are all zero: +0.0 is omitted, -0.0 is not.
        bits = _pack_double(value)
        body = b"" if bits == _ZERO_DOUBLE else _ONE_BYTE[_TAG_SAMPLE_VALUE] + bits
    if timestamp:
        body += _timestamp(timestamp)
    return _SAMPLE_HEADER[len(body)] + body  # at most 9 + 11 bytes


def _encode_metadata(meta: FamilyMetadata) -> bytes:
    kind = int(meta.type)
    if not -(1 << 31) <= kind < 1 << 31:  # upb refuses an enum value beyond int32
        raise _Unmodelled
    body = b"".join(
        (
            _ONE_BYTE[_TAG_META_TYPE] + _int64(kind) if kind else b"",
            _string(_TAG_META_FAMILY, meta.family),
            _string(_TAG_META_HELP, meta.help),
            _string(_TAG_META_UNIT, meta.unit),
        )
    )
    return _length_prefixed(_TAG_METADATA, body)


def _series_header(length: int) -> bytes:
    header = _series_headers.get(length)
    if header is None:
        header = _ONE_BYTE[_TAG_TIMESERIES] + uvarint(length)
        if length < _SERIES_HEADER_LIMIT:
            _series_headers[length] = header
    return header


def _encoded(labels: Labels) -> _Encoded:
    """The cache entry of ``labels``; a tuple seen twice is then also found by its id."""
    entry = _labels_cache.get(labels)
    if entry is None:
        encoded = _encode_labels(labels)
        size = len(encoded) + 2
        entry = _Encoded(
            labels,
            encoded,
            _series_header(size + 9 + _STAMP_LEN),
            _series_header(size + _STAMP_LEN),
        )
        if len(_labels_cache) >= LABELS_CACHE.limit:
            # The oldest slice; each key is its entry's tuple, so its id leaves with it.
            for dropped in LABELS_CACHE.make_room():
                _labels_by_id.pop(id(dropped), None)
        _labels_cache[labels] = entry
    elif entry.labels is labels:
        _labels_by_id[id(labels)] = entry
    return entry


STAMP_FIELD_LEN = _STAMP_LEN  # what ``series_prefixes`` assumes ``timestamp_field`` gives


def timestamp_field(timestamp: int) -> bytes:
    """The encoded Sample.timestamp field of a non-zero int64 timestamp (tag + varint)."""
    return _timestamp_cache.get(timestamp) or _timestamp(timestamp)


def series_prefixes(labels: Sequence[Labels], values: Sequence[float]) -> tuple[bytes, ...] | None:
    """For one-sample series, each one's bytes up to its timestamp field, or None.

    ``prefix + timestamp_field(ts)`` is exactly what ``encode`` writes for
    ``Series(labels, (Sample(value, ts),))`` when that field is ``STAMP_FIELD_LEN`` bytes long.
    Why: a rule whose output label sets and values repeat (the Flux rewriter: four series per
    object, one state for many scrapes) can keep these and write a scrape's outputs with one
    join. None when a value or a label is one only upb encodes (see ``encode``).
    """
    pieces = series_pieces(labels, values)
    return None if pieces is None else tuple(b"".join(parts) for parts in pieces)


def series_pieces(
    labels: Sequence[Labels], values: Sequence[float]
) -> tuple[tuple[bytes, ...], ...] | None:
    """``series_prefixes`` cut at each label: per series its header, each label's field in
    order, then its sample up to the timestamp field; joined, each is that series' prefix.

    Why: output series that share most of their labels (a Flux object's four) can then keep
    the bytes of the labels they share once (``rules/flux/emitter.py``). None as there.
    """
    out: list[tuple[bytes, ...]] = []
    try:
        for label_set, value in zip(labels, values, strict=True):
            if type(value) is not float:
                return None
            fields = [_fields_cache.get(pair) or _field(pair) for pair in label_set]
            size = sum(map(len, fields)) + 2
            if value == 1.0:
                header, head = _series_header(size + 9 + _STAMP_LEN), _ONE_SAMPLE_HEAD
            elif value or copysign(1.0, value) < 0.0:
                header = _series_header(size + 9 + _STAMP_LEN)
                head = _VALUED_SAMPLE_HEADER + _pack_tagged_double(_TAG_SAMPLE_VALUE, value)
            else:
                header, head = _series_header(size + _STAMP_LEN), _ZERO_SAMPLE_HEADER
            out.append((header, *fields, head))
    except Exception:  # a label upb would refuse or convert its own way
        return None
    return tuple(out)


def _field(pair: tuple[str, str]) -> bytes:
    """One label's field, kept in ``FIELDS_CACHE`` (raises as ``_encode_labels``)."""
    field = _encode_labels((pair,))
    if len(_fields_cache) >= FIELDS_CACHE.limit:
        FIELDS_CACHE.make_room()
    _fields_cache[pair] = field
    return field


def encode_cached(batch: Batch) -> bytes:
    """``encode_reference``'s bytes, hand-rolled, label set encodings kept in ``LABELS_CACHE``.

    Why: building upb objects per label and sample was the largest cost in the relay's profile
    on Flux-heavy traffic. Fields in field-number order, as upb writes them. Raises on anything
    it does not model (see ``encode``) rather than guess; it never calls the reference itself.
    """
    parts: list[bytes] = []
    append = parts.append
    by_id = _labels_by_id
    timestamps = _timestamp_cache
    for series in batch.series:
        if series.histograms or series.exemplars:
            # Rare, and upb's encoding of them is the reference: splice its bytes in.
            ts = pb.TimeSeries()
            _fill_series(ts, series)
            append(_length_prefixed(_TAG_TIMESERIES, bytes(ts.SerializeToString())))
            continue
        labels = series.labels
        entry = by_id.get(id(labels))
        if entry is None or entry.labels is not labels:
            entry = _encoded(labels)
        samples = series.samples
        if len(samples) == 1:
            # The common case inlined: one float sample, a timestamp of 7 bytes.
            sample = samples[0]
            value = sample[0]
            timestamp = sample[1]
            if type(value) is float and type(timestamp) is int:
                stamp = timestamps.get(timestamp) or _timestamp(timestamp)
                if len(stamp) == _STAMP_LEN:
                    if value == 1.0:
                        append(entry.valued)
                        append(entry.encoded)
                        append(_ONE_SAMPLE_HEAD)
                    elif value or copysign(1.0, value) < 0.0:  # NaN is truthy; -0.0 is written
                        append(entry.valued)
                        append(entry.encoded)
                        append(_VALUED_SAMPLE_HEADER)
                        append(_pack_tagged_double(_TAG_SAMPLE_VALUE, value))
                    else:  # +0.0 (a Flux status that is not the current one): proto3 omits it
                        append(entry.zero)
                        append(entry.encoded)
                        append(_ZERO_SAMPLE_HEADER)
                    append(stamp)
                    continue
            points = _encode_sample(value, timestamp)
        else:
            points = b"".join([_encode_sample(s.value, s.timestamp) for s in samples])
        encoded = entry.encoded
        append(_series_header(len(encoded) + len(points)))
        append(encoded)
        append(points)
    for meta in batch.metadata:
        append(_encode_metadata(meta))
    return b"".join(parts)


def _metric_type(value: int) -> MetricType:
    try:
        return MetricType(value)
    except ValueError:
        return MetricType.UNKNOWN


def _labels(items: object) -> Labels:
    return tuple((label.name, label.value) for label in items)  # type: ignore[attr-defined]


def _series(ts: pb.TimeSeries) -> Series:
    return Series(
        labels=_labels(ts.labels),
        samples=tuple(Sample(s.value, s.timestamp) for s in ts.samples),
        histograms=tuple(histogram_from_proto(h) for h in ts.histograms),
        exemplars=tuple(Exemplar(_labels(e.labels), e.value, e.timestamp) for e in ts.exemplars),
    )


def histogram_from_proto(h: pb.Histogram) -> Histogram:
    """Shared by v1 and v2: their Histogram messages have the same field numbers and names."""
    is_float = h.WhichOneof("count") == "count_float"
    return Histogram(
        timestamp=h.timestamp,
        count_value=h.count_float if is_float else h.count_int,
        zero_count=h.zero_count_float
        if h.WhichOneof("zero_count") == "zero_count_float"
        else h.zero_count_int,
        is_float=is_float,
        sum=h.sum,
        schema=h.schema,
        zero_threshold=h.zero_threshold,
        negative_spans=tuple(BucketSpan(s.offset, s.length) for s in h.negative_spans),
        negative_deltas=tuple(h.negative_deltas),
        negative_counts=tuple(h.negative_counts),
        positive_spans=tuple(BucketSpan(s.offset, s.length) for s in h.positive_spans),
        positive_deltas=tuple(h.positive_deltas),
        positive_counts=tuple(h.positive_counts),
        reset_hint=h.reset_hint,
        custom_values=tuple(h.custom_values),
        start_timestamp=getattr(h, "start_timestamp", 0),
    )


def fill_histogram(target: pb.Histogram, hist: Histogram) -> None:
    """Fill a v1 or v2 Histogram message (same schema; v2 also has start_timestamp)."""
    if hist.is_float:
        target.count_float = float(hist.count_value)
        target.zero_count_float = float(hist.zero_count)
    else:
        target.count_int = int(hist.count_value)
        target.zero_count_int = int(hist.zero_count)
    target.sum = hist.sum
    target.schema = hist.schema
    target.zero_threshold = hist.zero_threshold
    for span in hist.negative_spans:
        target.negative_spans.add(offset=span.offset, length=span.length)
    target.negative_deltas.extend(hist.negative_deltas)
    target.negative_counts.extend(hist.negative_counts)
    for span in hist.positive_spans:
        target.positive_spans.add(offset=span.offset, length=span.length)
    target.positive_deltas.extend(hist.positive_deltas)
    target.positive_counts.extend(hist.positive_counts)
    target.reset_hint = hist.reset_hint
    target.timestamp = hist.timestamp
    target.custom_values.extend(hist.custom_values)
    if hist.start_timestamp and hasattr(target, "start_timestamp"):
        target.start_timestamp = hist.start_timestamp
