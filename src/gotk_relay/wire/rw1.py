"""Remote write 1.0 (``prometheus.WriteRequest``) to and from the internal model."""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtoDecodeError

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
from .errors import DecodeError
from .labels import NO_LIMITS, Limits, check_series, check_series_count

CONTENT_TYPE = "application/x-protobuf"
VERSION = "0.1.0"


def decode(data: bytes, *, validate: bool = True, limits: Limits = NO_LIMITS) -> Batch:
    """Parse an uncompressed WriteRequest; labels are checked unless ``validate`` is false.

    ``limits`` apply either way; the series count is checked before any series is converted.
    """
    request = pb.WriteRequest()
    try:
        request.ParseFromString(data)
    except ProtoDecodeError as exc:
        raise DecodeError(f"invalid protobuf WriteRequest: {exc}") from exc
    check_series_count(len(request.timeseries), limits)
    series = tuple(_series(ts) for ts in request.timeseries)
    if validate or limits.bounds_labels:
        for item in series:
            check_series(item.labels, limits, validate=validate)
    metadata = tuple(
        FamilyMetadata(m.metric_family_name, _metric_type(m.type), m.help, m.unit)
        for m in request.metadata
    )
    return Batch(series, metadata)


def encode(batch: Batch) -> bytes:
    """Serialize to a WriteRequest (RW 2.0's start/created timestamps have no place in it)."""
    request = pb.WriteRequest()
    add = request.timeseries.add
    for series in batch.series:
        ts = add()
        ts.labels.extend(pb.Label(name=k, value=v) for k, v in series.labels)
        ts.samples.extend(pb.Sample(value=s.value, timestamp=s.timestamp) for s in series.samples)
        for hist in series.histograms:
            fill_histogram(ts.histograms.add(), hist)
        for ex in series.exemplars:
            pex = ts.exemplars.add(value=ex.value, timestamp=ex.timestamp)
            pex.labels.extend(pb.Label(name=k, value=v) for k, v in ex.labels)
    for meta in batch.metadata:
        request.metadata.add(
            type=int(meta.type), metric_family_name=meta.family, help=meta.help, unit=meta.unit
        )
    return bytes(request.SerializeToString())


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
