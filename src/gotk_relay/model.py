"""The one internal model that remote write 1.0 and 2.0 both decode into and encode from.

Everything here is immutable (NamedTuples of tuples), so a rule or a destination that wants a
different batch builds a new one and the batch another destination holds cannot change under it.
Values are plain Python floats: a float keeps the exact IEEE-754 bits it was decoded with, so the
stale marker NaN 0x7ff0000000000002 survives as long as no arithmetic touches it (see
``is_stale``).

Labels are a tuple of ``(name, value)`` pairs in the order they arrived; remote write requires
them sorted by name, which the decoders check and the encoders keep.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import IntEnum, StrEnum
from operator import itemgetter
from typing import Final, NamedTuple

Labels = tuple[tuple[str, str], ...]

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
# Go's math.NaN(), what Prometheus' parsers give for "NaN" in an exposition.
NORMAL_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
_PACK_D = struct.Struct("<d")
_PACK_Q = struct.Struct("<Q")


def float_bits(value: float) -> int:
    """The IEEE-754 bits of ``value``: the only faithful way to compare NaNs."""
    return int(_PACK_Q.unpack(_PACK_D.pack(value))[0])


def is_stale(value: float) -> bool:
    """True for Prometheus' stale marker; ordinary NaN (0x7ff8000000000001) is a value."""
    return value != value and float_bits(value) == STALE_NAN_BITS


class Protocol(StrEnum):
    """The message a write request or a queued entry holds: the ``proto`` of its Content-Type,
    the values of ``protobuf_message``."""

    V1 = "prometheus.WriteRequest"
    V2 = "io.prometheus.write.v2.Request"


class MetricType(IntEnum):
    """Shared by v1 ``MetricMetadata.MetricType`` and v2 ``Metadata.MetricType`` (same numbers)."""

    UNKNOWN = 0
    COUNTER = 1
    GAUGE = 2
    HISTOGRAM = 3
    GAUGEHISTOGRAM = 4
    SUMMARY = 5
    INFO = 6
    STATESET = 7


class Sample(NamedTuple):
    value: float
    timestamp: int
    start_timestamp: int = 0  # RW 2.0 rc.4; 0 means unset, as on the wire


class BucketSpan(NamedTuple):
    offset: int
    length: int


class Histogram(NamedTuple):
    """A native histogram; ``is_float`` says which member of the count/zero_count oneofs is set."""

    timestamp: int
    count_value: int | float = 0  # `count` would shadow tuple.count
    zero_count: int | float = 0
    is_float: bool = False
    sum: float = 0.0
    schema: int = 0
    zero_threshold: float = 0.0
    negative_spans: tuple[BucketSpan, ...] = ()
    negative_deltas: tuple[int, ...] = ()
    negative_counts: tuple[float, ...] = ()
    positive_spans: tuple[BucketSpan, ...] = ()
    positive_deltas: tuple[int, ...] = ()
    positive_counts: tuple[float, ...] = ()
    reset_hint: int = 0
    custom_values: tuple[float, ...] = ()
    start_timestamp: int = 0


class Exemplar(NamedTuple):
    labels: Labels
    value: float
    timestamp: int


class Metadata(NamedTuple):
    """Per-series metadata (RW 2.0 carries it on each series)."""

    type: MetricType = MetricType.UNKNOWN
    help: str = ""
    unit: str = ""


# The series names a family of each type writes besides its own (a remote write 2.0 series
# carries its family's metadata, not the family's name).
_FAMILY_SUFFIXES: Final = {
    MetricType.HISTOGRAM: ("_bucket", "_sum", "_count"),
    MetricType.GAUGEHISTOGRAM: ("_bucket", "_gsum", "_gcount"),
    MetricType.SUMMARY: ("_sum", "_count"),
}


def family_name(series_name: str, mtype: MetricType) -> str:
    """The name of the family a series named ``series_name`` of type ``mtype`` belongs to: a
    histogram's ``x_bucket``, ``x_sum`` and ``x_count`` are the family ``x``."""
    for suffix in _FAMILY_SUFFIXES.get(mtype, ()):
        if series_name.endswith(suffix):
            return series_name[: -len(suffix)]
    return series_name


class FamilyMetadata(NamedTuple):
    """RW 1.0 metadata: one entry per metric family, sent beside (or apart from) the series."""

    family: str
    type: MetricType = MetricType.UNKNOWN
    help: str = ""
    unit: str = ""


class Series(NamedTuple):
    labels: Labels
    samples: tuple[Sample, ...] = ()
    histograms: tuple[Histogram, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    metadata: Metadata | None = None  # RW 2.0 only; None when the sender set none
    created_timestamp: int = 0  # RW 2.0 rc.3; 0 means unset

    @property
    def name(self) -> str:
        for key, value in self.labels:
            if key == "__name__":
                return value
        return ""


class Batch(NamedTuple):
    """One write request's worth of data, whatever protocol it came in."""

    series: tuple[Series, ...] = ()
    metadata: tuple[FamilyMetadata, ...] = ()

    @property
    def sample_count(self) -> int:
        return sum(len(s.samples) for s in self.series)

    @property
    def histogram_count(self) -> int:
        return sum(len(s.histograms) for s in self.series)

    @property
    def exemplar_count(self) -> int:
        return sum(len(s.exemplars) for s in self.series)

    @property
    def point_count(self) -> int:
        """Samples plus histograms: what queue capacity and sizing count."""
        # C iterators: this runs on every batch the rules make, twice, and a generator over the
        # series would run Python bytecode per series.
        series = self.series
        return sum(map(len, map(_SAMPLES, series))) + sum(map(len, map(_HISTOGRAMS, series)))


_SAMPLES = itemgetter(1)  # Series.samples
_HISTOGRAMS = itemgetter(2)  # Series.histograms
_LAST = itemgetter(-1)
_TIMESTAMP = itemgetter(1)  # Sample.timestamp
assert Series._fields[1:3] == ("samples", "histograms")


_METADATA = itemgetter(4)  # Series.metadata
assert Series._fields[4] == "metadata"


def with_series_families(batch: Batch) -> Batch:
    """``batch`` as a remote write 1.0 request carries it: for series that carry their own
    metadata, their family's entry added to ``batch.metadata`` where that has none for the
    family (each family once, first seen first), so that a 2.0 sender's metadata reaches 1.0
    destinations. A metadata of unknown type with no help or unit says nothing: not added."""
    series = batch.series
    if not any(map(_METADATA, series)):
        return batch
    present = {m.family for m in batch.metadata}
    added: list[FamilyMetadata] = []
    for item in series:
        meta = item.metadata
        if meta is None or (meta.type == MetricType.UNKNOWN and not meta.help and not meta.unit):
            continue
        family = family_name(item.name, meta.type)
        if family not in present:
            present.add(family)
            added.append(FamilyMetadata(family, meta.type, meta.help, meta.unit))
    return Batch(series, (*batch.metadata, *added)) if added else batch


def newest_timestamp(batch: Batch) -> int:
    """The newest timestamp among each series' last sample and last histogram (0 if none).

    Series keep their samples in time order, so the last is the newest. C iterators only: this
    runs on every batch the rules make, where a Python loop would cost bytecode per series.
    """
    series = batch.series
    newest: int = max(map(_TIMESTAMP, map(_LAST, filter(None, map(_SAMPLES, series)))), default=0)
    histograms: list[int] = [h[-1].timestamp for h in map(_HISTOGRAMS, series) if h]
    return max(0, newest, *histograms)


def labels_from(mapping: dict[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Sorted labels with empty values dropped, as Prometheus' ``labels.Builder`` makes them.

    Pairs given as tuples are kept, not copied: the Flux rules build label sets from an input's
    own pairs so that thousands of objects share them (``rules.flux.classify.Classifier.share``).
    """
    items = mapping.items() if isinstance(mapping, dict) else mapping
    return tuple(sorted([pair for pair in items if pair[1] != ""]))


def label_value(labels: Labels, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


def merge(batches: Iterable[Batch]) -> Batch:
    """Concatenate batches in order (what a sender does when it merges queued requests)."""
    series: list[Series] = []
    metadata: list[FamilyMetadata] = []
    for batch in batches:
        series.extend(batch.series)
        metadata.extend(batch.metadata)
    return Batch(tuple(series), tuple(metadata))


def iter_points(batch: Batch) -> Iterator[tuple[Labels, int, float | Histogram]]:
    """Every sample and histogram with its series' labels, in batch order."""
    for series in batch.series:
        for sample in series.samples:
            yield series.labels, sample.timestamp, sample.value
        for hist in series.histograms:
            yield series.labels, hist.timestamp, hist
