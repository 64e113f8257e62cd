"""Remote-write series → an OTLP ``ExportMetricsServiceRequest``: the pure half of ``otlp:``.

It follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec, so a metric that
goes Prometheus → gotk-relay → OTLP → Mimir comes out under the name and labels it went in with.

Resource and scope
    Series are grouped into one ResourceMetrics per distinct values of ``resource_labels``
    (default ``job``, ``instance``). ``job`` becomes ``service.name`` and ``instance``
    ``service.instance.id``, which is what the spec asks for and what Mimir / Grafana Cloud turn
    back into ``job`` and ``instance``; any other resource label becomes a resource attribute of
    the same name. The raw ``job``/``instance`` are *not* copied as well: Mimir would then put
    them a second time into ``target_info``. Resource labels are never data point attributes.
    ``otel_scope_name``/``otel_scope_version`` labels select the instrumentation scope (and are
    not attributes); otherwise the scope is gotk-relay itself, as the spec requires of a
    translator.

Types
    A series' type comes from its metadata: RW 2.0 per-series metadata first, then RW 1.0 family
    metadata, which Prometheus sends in separate requests, so ``MappingState`` keeps it from
    earlier batches (bounded). Without metadata, the name decides: ``_bucket`` with ``le`` →
    histogram part, a ``quantile`` label → summary part, ``_sum``/``_count`` of a family seen
    with buckets or quantiles → its part, ``_total`` → counter, anything else → gauge (the spec's
    rule for unknown-typed metrics). Counter → monotonic Sum; gauge/unknown → Gauge; info and
    stateset → non-monotonic cumulative Sum; gauge histograms are dropped (the spec says so).
    ``prometheus.type`` is set in the metric's metadata when the type came from metadata.

Classic histograms and summaries
    The ``_bucket{le}``, ``_sum`` and ``_count`` series with the same other labels and the same
    timestamp become one data point. Prometheus shards and batches by series, so the parts of one
    histogram can arrive in different requests; what can be assembled from one request is:
    without ``_count``, the ``+Inf`` bucket is the count; without buckets, a point with count
    and sum only (valid OTLP); missing interior buckets merge into their neighbours (cumulative
    buckets stay correct). A group with neither ``_count`` nor ``+Inf`` (or a summary without
    ``_count``, as the spec requires) cannot be a valid point and is counted in ``unmapped``.
    ``_created`` series are consumed as the start time of their counter/histogram/summary.

Native histograms
    Standard schemas become ExponentialHistograms (OTLP index = Prometheus index - 1, scale =
    schema); custom-bucket ones (schema -53) become explicit-bounds Histograms.

Time
    ``time_unix_nano = ts_ms * 1_000_000``. Cumulative points start at the RW 2.0 start/created
    timestamp or ``_created`` when known; otherwise at the first time the relay saw the stream
    (the spec's "unknown start time": the first point has start == time), and just after the
    previous point when the stream went down (a reset). Delta points start at the previous
    point; the first observation of a stream only sets the baseline; a decrease is a reset whose
    delta is the new value. Summaries have no temporality in OTLP and stay cumulative; so do
    non-monotonic sums. Stale markers become points flagged ``NO_RECORDED_VALUE`` (the OTel
    equivalent) and leave the stream's state alone.

State
    ``to_otlp`` does not change per-stream state: it returns ``updates`` that the client commits
    only after the destination accepted the request, so a retried request (which reuses the same
    body) never subtracts twice, and a dropped one leaves the baseline where it was, so the next
    delta still covers the interval.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Final, Literal, NamedTuple, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from .. import __version__
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
    is_stale,
)
from ..wire.rw1 import uvarint
from . import rows as _rows_module
from .rows import Item
from .rows import labels as row_labels

Temporality = Literal["cumulative", "delta"]

NS_PER_MS: Final = 1_000_000
NO_RECORDED_VALUE: Final[int] = int(pb.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
SCOPE_NAME: Final = "gotk-relay"
NHCB_SCHEMA: Final = -53  # native histogram with custom buckets
_INF = math.inf
_RESOURCE_ATTRIBUTES: Final = {"job": "service.name", "instance": "service.instance.id"}
_SCOPE_LABELS: Final = frozenset({"otel_scope_name", "otel_scope_version"})
_CUMULATIVE: Final = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
_CTX_LIMIT: Final = 100_000  # label sets whose resource/scope/attributes a mapping remembers
# Label sets a client remembers by their bytes (``_RowInfo``, ~2-3 KiB each with their strings).
_ROWS_LIMIT: Final = 65_536
_DELTA: Final = pb.AGGREGATION_TEMPORALITY_DELTA

# Which name suffixes belong to a family of each type (the series named like the family itself
# is the summary's quantiles, or a counter/gauge/unknown/stateset sample).
_PARTS: Final[dict[MetricType, tuple[str, ...]]] = {
    MetricType.COUNTER: ("_total", "_created"),
    MetricType.HISTOGRAM: ("_bucket", "_sum", "_count", "_created"),
    MetricType.SUMMARY: ("_sum", "_count", "_created"),
    MetricType.GAUGEHISTOGRAM: ("_bucket", "_gsum", "_gcount", "_created"),
    MetricType.INFO: ("_info",),
}
_SUFFIXES: Final = ("_bucket", "_count", "_sum", "_total", "_created", "_info", "_gcount", "_gsum")

# Prometheus unit names → UCUM-style OTLP units, as the spec asks ("seconds" → "s", "ratio" → "1").
_UNITS: Final = {
    "seconds": "s",
    "second": "s",
    "milliseconds": "ms",
    "microseconds": "us",
    "nanoseconds": "ns",
    "minutes": "min",
    "minute": "min",
    "hours": "h",
    "hour": "h",
    "days": "d",
    "day": "d",
    "bytes": "By",
    "byte": "By",
    "kilobytes": "kBy",
    "megabytes": "MBy",
    "gigabytes": "GBy",
    "terabytes": "TBy",
    "kibibytes": "KiBy",
    "mebibytes": "MiBy",
    "gibibytes": "GiBy",
    "tebibytes": "TiBy",
    "bits": "bit",
    "meters": "m",
    "volts": "V",
    "amperes": "A",
    "joules": "J",
    "watts": "W",
    "grams": "g",
    "celsius": "Cel",
    "hertz": "Hz",
    "percent": "%",
    "ratio": "1",
}


def otel_unit(unit: str) -> str:
    """A Prometheus unit in OTLP spelling (``bytes_per_second`` → ``By/s``); unknown ones kept."""
    if "_per_" in unit:
        num, den = unit.split("_per_", 1)
        return f"{otel_unit(num)}/{_UNITS.get(den, den)}"
    return _UNITS.get(unit, unit)


# ---------------------------------------------------------------------------------------------
# Per-stream state (immutable values, so an uncommitted update can never leak into the state)


class CounterState(NamedTuple):
    start_ms: int
    last_ms: int
    value: float


class ClassicState(NamedTuple):
    start_ms: int
    last_ms: int
    total: float  # count (``count`` would shadow tuple.count)
    sum: float | None
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), finite les, sorted


class SummaryState(NamedTuple):
    start_ms: int
    last_ms: int
    total: float  # count (``count`` would shadow tuple.count)


class NativeState(NamedTuple):
    start_ms: int
    last_ms: int
    schema: int
    zero_threshold: float
    custom_values: tuple[float, ...]
    total: float  # count (``count`` would shadow tuple.count)
    zero_count: float
    sum: float
    positive: tuple[tuple[int, float], ...]  # (Prometheus bucket index, absolute count)
    negative: tuple[tuple[int, float], ...]


StreamState = CounterState | ClassicState | SummaryState | NativeState


def _counter_state(start_ms: int, last_ms: int, value: float) -> CounterState:
    # ``CounterState(...)`` without its generated ``__new__``, which costs a Python call.
    return tuple.__new__(CounterState, (start_ms, last_ms, value))


StreamKey = tuple[str, str, Labels]  # (kind, metric name, labels without __name__/le/quantile)

_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class MappingState:
    """What an OTLP client remembers between batches, bounded so a churning source cannot grow
    it without end (the least recently updated entries are forgotten first).

    ``families``: RW 1.0 metadata (types, help, units), learned at once since it is knowledge,
    not data. ``inferred``: family shapes guessed from names (a ``_bucket{le}`` makes its family a
    histogram) so a ``_count`` in a later request is still recognised. ``streams``: per-stream
    start times and last values, changed only by ``commit``.
    """

    def __init__(self, max_streams: int = 200_000, max_families: int = 50_000) -> None:
        self.max_streams = max_streams
        self.max_families = max_families
        self.families: OrderedDict[str, FamilyMetadata] = OrderedDict()
        self.inferred: OrderedDict[str, MetricType] = OrderedDict()
        self.streams: OrderedDict[StreamKey, StreamState] = OrderedDict()
        # Label sets by their encoded bytes, per resource_labels (see ``_RowInfo``).
        self.rows: dict[tuple[str, ...], dict[bytes, _RowInfo]] = {}
        self.version = 0  # changes whenever families or inferred do: what a type depends on

    def learn(self, metadata: Iterable[FamilyMetadata]) -> None:
        for meta in metadata:
            _remember(self.families, meta.family, meta, self.max_families)
            self.version += 1

    def infer(self, family: str, mtype: MetricType) -> None:
        if self.inferred.get(family) is not mtype:
            _remember(self.inferred, family, mtype, self.max_families)
            self.version += 1

    def commit(self, updates: Mapping[StreamKey, StreamState]) -> None:
        """Make a delivered request's stream updates the new baseline."""
        streams, limit = self.streams, self.max_streams
        for key, value in updates.items():  # _remember, in one loop
            streams[key] = value
            streams.move_to_end(key)
        while len(streams) > limit:
            streams.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Mapped:
    request: ExportMetricsServiceRequest
    points: int  # OTLP data points in ``request``
    updates: dict[StreamKey, StreamState]  # commit after the destination accepted ``request``
    unmapped: int  # remote-write samples/histograms that could form no valid OTLP point


# ---------------------------------------------------------------------------------------------
# Mapping


class _Kind(NamedTuple):
    """What a series is: its type, its family (metric name of histograms/summaries) and part."""

    type: MetricType
    family: str
    suffix: str
    help: str = ""
    unit: str = ""
    typed: bool = False  # the type came from metadata (then ``prometheus.type`` is set)


class _Ctx(NamedTuple):
    resource: tuple[str, ...]  # values of the resource labels
    scope: tuple[str, str]
    attributes: Labels


@dataclass(slots=True)
class _Group:
    """The parts of one classic histogram or summary point (one stream, one timestamp)."""

    ctx: _Ctx
    kind: _Kind
    buckets: dict[float, float] = field(default_factory=dict)
    quantiles: dict[float, float] = field(default_factory=dict)
    count: float | None = None
    sum: float | None = None
    stale: bool = False
    samples: int = 0


Point = pb.NumberDataPoint | pb.HistogramDataPoint | pb.ExponentialHistogramDataPoint
# ``otlp_rows`` in ``_rows.c``: ``Mapper.gauge_row`` and ``counter_row`` compiled (None: not
# built, or GOTK_RELAY_NO_EXTENSIONS set).
_native: Any = _rows_module._native
# A series to map: a Series (samples None), or a row's info and its samples.
_Planned = tuple["Series | _RowInfo", "_Kind", str, "Sequence[tuple[float, int]] | None"]


def _family_of(name: str, mtype: MetricType) -> tuple[str, str]:
    for suffix in _PARTS.get(mtype, ()):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _without(labels: Labels, *names: str) -> Labels:
    return tuple(pair for pair in labels if pair[0] not in names)  # the pairs themselves


def _uint(value: float) -> int:
    """OTLP counts are unsigned integers; Prometheus' are floats (negative only if broken)."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return round(value)


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _hex_id(text: str, size: int) -> bytes | None:
    if len(text) != 2 * size:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _shape(name: str, keys: set[str]) -> tuple[str, MetricType] | None:
    """The family a series named ``name`` with label names ``keys`` shows the shape of."""
    if name.endswith("_bucket") and "le" in keys:
        return name[:-7], MetricType.HISTOGRAM
    if "quantile" in keys:
        return name, MetricType.SUMMARY
    if name.endswith("_total"):
        return name[:-6], MetricType.COUNTER
    return None


def _cumulative_start(prev: StreamState | None, ts: int, explicit: int, reset: bool) -> int:
    if explicit and explicit <= ts:
        return explicit
    if prev is None:
        return ts  # unknown start time: a zero-duration first point
    if reset:
        # The reset happened after the previous point; a start on it would collide with that
        # point's sample in a backend that writes a zero at the start time.
        return min(prev.last_ms + 1, ts)
    return min(prev.start_ms, ts)


def _native_buckets(
    spans: Sequence[BucketSpan], deltas: Sequence[int], counts: Sequence[float], is_float: bool
) -> dict[int, float]:
    values: Iterable[float] = counts if is_float else accumulate(float(d) for d in deltas)
    out: dict[int, float] = {}
    it = iter(values)
    index = 0
    for span in spans:
        index += span.offset
        for _ in range(span.length):
            out[index] = next(it, 0.0)
            index += 1
    return out


def _downscale(buckets: Mapping[int, float], by: int) -> dict[int, float]:
    """Merge buckets to a schema ``by`` lower: index i covers (b^(i-1), b^i], so it goes to
    ceil(i / 2^by)."""
    if by <= 0:
        return dict(buckets)
    out: dict[int, float] = {}
    for index, count in buckets.items():
        target = (index + (1 << by) - 1) >> by
        out[target] = out.get(target, 0.0) + count
    return out


class _RestKey(tuple):  # type: ignore[type-arg]
    """A tuple equal to (and hashing as) the plain one, its hash computed once: label sets and
    the keys holding them are looked up several times per sample."""

    def __init__(self, items: Iterable[object]) -> None:
        self._hash = tuple.__hash__(self)

    def __hash__(self) -> int:
        return self._hash


_FIELD_KEY: Final = b"\x0a"  # KeyValue.key, AnyValue.string_value
_FIELD_VALUE: Final = b"\x12"  # KeyValue.value
_FIELD_ATTRIBUTE: Final = b"\x3a"  # NumberDataPoint.attributes (7)
_STALE_FLAGS: Final = b"\x40" + bytes((NO_RECORDED_VALUE,))  # NumberDataPoint.flags (8)
_TIME: Final = struct.Struct("<BQ")  # time_unix_nano (3, fixed64)
_TIME_VALUE: Final = struct.Struct("<BQBd")  # time_unix_nano, as_double (4, double)
_START_TIME_VALUE: Final = struct.Struct("<BQBQBd")  # start_time_unix_nano (2) first


def _string_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + uvarint(len(raw)) + raw


def _attributes_bytes(attributes: Labels) -> bytes:
    """``attributes`` as NumberDataPoint.attributes fields (KeyValue with a string AnyValue)."""
    out = []
    for key, value in attributes:
        any_value = _string_field(_FIELD_KEY, value)  # a oneof member: sent even when ""
        pair = _string_field(_FIELD_KEY, key) + _FIELD_VALUE + uvarint(len(any_value)) + any_value
        out.append(_FIELD_ATTRIBUTE + uvarint(len(pair)) + pair)
    return b"".join(out)


def _number_bytes(attrs: bytes, ts: int, start: int, value: float | None) -> bytes:
    """An encoded NumberDataPoint, as ``_Output.number`` would fill it (times in ms), framed as
    a Gauge's or Sum's ``data_points`` field (1)."""
    if value is None:
        body = _TIME.pack(0x19, ts * NS_PER_MS) if ts else b""
        if start:
            body = b"\x11" + struct.pack("<Q", start * NS_PER_MS) + body
        body += attrs + _STALE_FLAGS
    elif start and ts:
        body = _START_TIME_VALUE.pack(0x11, start * NS_PER_MS, 0x19, ts * NS_PER_MS, 0x21, value)
        body += attrs
    elif ts:
        body = _TIME_VALUE.pack(0x19, ts * NS_PER_MS, 0x21, value) + attrs
    else:
        body = b"\x11" + struct.pack("<Q", start * NS_PER_MS) if start else b""
        body += b"\x21" + struct.pack("<d", value) + attrs
    size = len(body)
    if size < 0x80:
        return bytes((0x0A, size)) + body
    if size < 0x4000:
        return bytes((0x0A, size & 0x7F | 0x80, size >> 7)) + body
    return b"\x0a" + uvarint(size) + body


class _RowInfo:
    """What a label set (a ``rows`` key) maps to whatever its samples, kept across requests:
    its labels, name, the labels without ``__name__`` (``rest``, hash kept), its resource,
    scope and encoded attributes, its counter stream key, and what ``resolve``/``role`` read
    of it (a ``Series`` shell without samples, ``le``/``quantile`` presence)."""

    __slots__ = (
        "_metric_key",
        "attrs",
        "counter_key",
        "ctx",
        "has_le",
        "has_quantile",
        "name",
        "rest",
        "shape",
        "shell",
    )

    def __init__(self, labels: Labels, ctx_of: Callable[[Labels], _Ctx]) -> None:
        self.shell = Series(labels)
        self.name = self.shell.name
        self.rest = _RestKey(_without(labels, "__name__"))
        self.ctx = ctx_of(self.rest)
        self.attrs = _attributes_bytes(self.ctx.attributes)
        # Its hash kept too: looked up three to five times per sample.
        self.counter_key: StreamKey = _RestKey(("counter", self.name, self.rest))
        keys = {k for k, _ in labels}
        self.has_le = "le" in keys
        self.has_quantile = "quantile" in keys
        self.shape = _shape(self.name, keys)
        self._metric_key: tuple[object, ...] = ()  # of the last data asked for: one, in practice

    def metric_key(self, data: str) -> tuple[object, ...]:
        """``_Output``'s key of this series' metric of ``data``, its hash computed once."""
        found = self._metric_key
        if not found or found[3] != data:
            ctx = self.ctx
            found = self._metric_key = _RestKey((ctx.resource, ctx.scope, self.name, data))
        return found

    def series(self, samples: Sequence[tuple[float, int]]) -> Series:
        return Series(self.shell.labels, tuple(Sample(v, t) for v, t in samples))


class _Output:
    """Builds the request, creating each ResourceMetrics / ScopeMetrics / Metric on first use."""

    def __init__(self, resource_labels: Sequence[str], temporality: Temporality) -> None:
        self.request = ExportMetricsServiceRequest()
        self.resource_labels = tuple(resource_labels)
        self.temporality = _DELTA if temporality == "delta" else _CUMULATIVE
        self._resources: dict[tuple[str, ...], pb.ResourceMetrics] = {}
        self._scopes: dict[tuple[tuple[str, ...], tuple[str, str]], pb.ScopeMetrics] = {}
        self._metrics: dict[tuple[object, ...], pb.Metric] = {}
        self._attributes: dict[Labels, list[KeyValue]] = {}
        self.points = 0
        # Encoded NumberDataPoints of each metric not yet merged into it, in order (see
        # ``encoded``), by the metric's key in ``_metrics``.
        self._pending: dict[tuple[object, ...], tuple[pb.Metric, str, list[bytes]]] = {}

    def encoded(self, info: _RowInfo, data: str, kind: _Kind) -> list[bytes]:
        """Where to append the encoded points of ``info``'s series as a ``data`` metric: points
        made as bytes (``_number_bytes``) cost a fraction of a upb message built field by
        field; they are merged into the metric, in order, by ``flush``."""
        key = info.metric_key(data)
        found = self._pending.get(key)
        if found is None:
            metric = self.metric(info.ctx, info.name, data, kind)
            found = self._pending[key] = (metric, data, [])
        return found[2]

    def flush(self, key: tuple[object, ...] | None = None) -> None:
        """Merge the encoded points waiting for the metric of ``key`` (all: None) into it."""
        if key is None:
            waiting = list(self._pending.values())
            self._pending.clear()
        else:
            found = self._pending.pop(key, None)
            if found is None:
                return
            waiting = [found]
        for target, data, points in waiting:
            if points:  # framed already: a Gauge's or Sum's data_points, in order
                (target.gauge if data == "gauge" else target.sum).MergeFromString(b"".join(points))

    def attributes(self, labels: Labels) -> list[KeyValue]:
        found = self._attributes.get(labels)
        if found is None:
            found = self._attributes[labels] = [
                KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in labels
            ]
        return found

    def _scope(self, ctx: _Ctx) -> pb.ScopeMetrics:
        key = (ctx.resource, ctx.scope)
        scope = self._scopes.get(key)
        if scope is not None:
            return scope
        resource = self._resources.get(ctx.resource)
        if resource is None:
            resource = self._resources[ctx.resource] = self.request.resource_metrics.add()
            for label, value in zip(self.resource_labels, ctx.resource, strict=True):
                if value:
                    resource.resource.attributes.add(
                        key=_RESOURCE_ATTRIBUTES.get(label, label),
                        value=AnyValue(string_value=value),
                    )
        name, version = ctx.scope
        added: pb.ScopeMetrics = resource.scope_metrics.add(
            scope=InstrumentationScope(name=name, version=version)
        )
        self._scopes[key] = added
        return added

    def metric(self, ctx: _Ctx, name: str, data: str, kind: _Kind) -> pb.Metric:
        key = (ctx.resource, ctx.scope, name, data)
        found = self._metrics.get(key)
        if found is not None:
            return found
        metric: pb.Metric = self._scope(ctx).metrics.add(
            name=name, description=kind.help, unit=otel_unit(kind.unit)
        )
        self._metrics[key] = metric
        if kind.typed:
            metric.metadata.add(
                key="prometheus.type", value=AnyValue(string_value=kind.type.name.lower())
            )
        if data == "gauge":
            metric.gauge.SetInParent()
        elif data == "sum":
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = self.temporality
        elif data == "updown":
            metric.sum.is_monotonic = False
            metric.sum.aggregation_temporality = _CUMULATIVE
        elif data == "histogram":
            metric.histogram.aggregation_temporality = self.temporality
        elif data == "exponential":
            metric.exponential_histogram.aggregation_temporality = self.temporality
        else:
            metric.summary.SetInParent()
        return metric

    def number(
        self,
        ctx: _Ctx,
        name: str,
        data: str,
        kind: _Kind,
        ts: int,
        start: int,
        value: float | None,
    ) -> pb.NumberDataPoint:
        metric = self.metric(ctx, name, data, kind)
        if self._pending:  # encoded points of this metric go first, as they came first
            self.flush((ctx.resource, ctx.scope, name, data))
        points = metric.gauge.data_points if data == "gauge" else metric.sum.data_points
        point: pb.NumberDataPoint = points.add(
            attributes=self.attributes(ctx.attributes), time_unix_nano=ts * NS_PER_MS
        )
        if start:
            point.start_time_unix_nano = start * NS_PER_MS
        if value is None:
            point.flags = NO_RECORDED_VALUE
        else:
            point.as_double = value
        self.points += 1
        return point

    def histogram(
        self,
        ctx: _Ctx,
        name: str,
        kind: _Kind,
        ts: int,
        start: int,
        *,
        count: float = 0.0,
        sum_: float | None = None,
        bounds: Sequence[float] = (),
        counts: Sequence[int] = (),
        stale: bool = False,
    ) -> pb.HistogramDataPoint:
        metric = self.metric(ctx, name, "histogram", kind)
        point: pb.HistogramDataPoint = metric.histogram.data_points.add(
            attributes=self.attributes(ctx.attributes),
            start_time_unix_nano=start * NS_PER_MS,
            time_unix_nano=ts * NS_PER_MS,
        )
        if stale:
            point.flags = NO_RECORDED_VALUE
        else:
            point.count = _uint(count)
            if sum_ is not None and not math.isnan(sum_):
                point.sum = sum_
            if counts:
                point.explicit_bounds.extend(bounds)
                point.bucket_counts.extend(counts)
        self.points += 1
        return point

    def summary(
        self,
        ctx: _Ctx,
        name: str,
        kind: _Kind,
        ts: int,
        start: int,
        *,
        count: float = 0.0,
        sum_: float = 0.0,
        quantiles: Mapping[float, float] | None = None,
        stale: bool = False,
    ) -> None:
        metric = self.metric(ctx, name, "summary", kind)
        point = metric.summary.data_points.add(
            attributes=self.attributes(ctx.attributes),
            start_time_unix_nano=start * NS_PER_MS,
            time_unix_nano=ts * NS_PER_MS,
        )
        if stale:
            point.flags = NO_RECORDED_VALUE
        else:
            point.count = _uint(count)
            point.sum = sum_
            for q in sorted(quantiles or {}):
                point.quantile_values.add(quantile=q, value=(quantiles or {})[q])
        self.points += 1


class _NativeValues(NamedTuple):
    schema: int
    zero_threshold: float
    custom_values: tuple[float, ...]
    total: float  # count (``count`` would shadow tuple.count)
    zero_count: float
    sum: float
    positive: dict[int, float]
    negative: dict[int, float]

    @staticmethod
    def of(h: Histogram) -> _NativeValues:
        return _NativeValues(
            h.schema,
            h.zero_threshold,
            tuple(h.custom_values),
            float(h.count_value),
            float(h.zero_count),
            h.sum,
            _native_buckets(h.positive_spans, h.positive_deltas, h.positive_counts, h.is_float),
            _native_buckets(h.negative_spans, h.negative_deltas, h.negative_counts, h.is_float),
        )

    @staticmethod
    def of_state(s: NativeState) -> _NativeValues:
        return _NativeValues(
            s.schema,
            s.zero_threshold,
            s.custom_values,
            s.total,
            s.zero_count,
            s.sum,
            dict(s.positive),
            dict(s.negative),
        )

    def state(self, start_ms: int, last_ms: int) -> NativeState:
        return NativeState(
            start_ms,
            last_ms,
            self.schema,
            self.zero_threshold,
            self.custom_values,
            self.total,
            self.zero_count,
            self.sum,
            tuple(sorted(self.positive.items())),
            tuple(sorted(self.negative.items())),
        )


def _native_delta(prev: _NativeValues, cur: _NativeValues) -> tuple[str, _NativeValues]:
    """("incompatible" | "reset" | "ok", cur - prev at the coarser of the two schemas)."""
    if prev.custom_values != cur.custom_values or prev.zero_threshold != cur.zero_threshold:
        return "incompatible", cur
    schema = min(prev.schema, cur.schema)
    if cur.schema == NHCB_SCHEMA or prev.schema == NHCB_SCHEMA:
        if prev.schema != cur.schema:
            return "incompatible", cur
        schema = cur.schema
    p_pos = _downscale(prev.positive, prev.schema - schema)
    p_neg = _downscale(prev.negative, prev.schema - schema)
    c_pos = _downscale(cur.positive, cur.schema - schema)
    c_neg = _downscale(cur.negative, cur.schema - schema)
    reset = cur.total < prev.total or cur.zero_count < prev.zero_count
    pos: dict[int, float] = {}
    neg: dict[int, float] = {}
    for c, p, out in ((c_pos, p_pos, pos), (c_neg, p_neg, neg)):
        for index in c.keys() | p.keys():
            diff = c.get(index, 0.0) - p.get(index, 0.0)
            if diff < 0:
                reset = True
            out[index] = diff
    if reset:
        return "reset", cur
    delta = _NativeValues(
        schema,
        cur.zero_threshold,
        cur.custom_values,
        cur.total - prev.total,
        cur.zero_count - prev.zero_count,
        cur.sum - prev.sum,
        pos,
        neg,
    )
    return "ok", delta


class Mapper:
    """Maps batches into requests: ``to_otlp`` in steps, for what is too large to map at once.

    ``feed`` maps a batch into the request being built, ``take`` hands it over (with its stream
    updates) and starts the next, ``finish`` emits the classic histogram and summary points still
    waiting for parts. Between two ``take``s the caller commits the taken updates (or stops):
    ``prev`` reads them from the state. A ``_created`` series or a family's shape seen in an
    earlier batch of the same mapping still applies to later ones.
    """

    def __init__(
        self, state: MappingState, temporality: Temporality, resource_labels: Sequence[str]
    ) -> None:
        self.state = state
        self.delta = temporality == "delta"
        self.resource_labels = tuple(resource_labels)
        self._resource_set = frozenset(resource_labels)
        self.out = _Output(resource_labels, temporality)
        self.updates: dict[StreamKey, StreamState] = {}
        self.unmapped = 0
        self.created: dict[tuple[str, Labels], int] = {}
        self.groups: dict[StreamKey, dict[int, _Group]] = {}
        self.group_exemplars: dict[StreamKey, list[Exemplar]] = {}
        self.grouped = 0  # samples held in ``groups``
        self.waiting: list[_Planned] = []  # the last batch fed, not mapped yet
        self.waiting_points = 0  # its samples and histograms
        self.seen_shapes: dict[str, MetricType] = {}
        self._ctx: dict[Labels, _Ctx] = {}
        self._rows = state.rows.setdefault(self.resource_labels, {})
        self._kinds: dict[tuple[str, bool, bool], tuple[_Kind, str]] = {}
        self._kinds_at = (-1, -1)
        self._shapes_version = 0

    # -- helpers ---------------------------------------------------------------------------

    def prev(self, key: StreamKey) -> StreamState | None:
        found = self.updates.get(key)
        return found if found is not None else self.state.streams.get(key)

    def ctx(self, rest: Labels) -> _Ctx:
        """Resource, scope and attributes of a series' labels (``__name__`` etc. removed)."""
        found = self._ctx.get(rest)
        if found is not None:
            return found
        found = self._ctx[rest] = self._ctx_of(rest)
        return found

    def _ctx_of(self, rest: Labels) -> _Ctx:
        values = dict(rest)
        resource = tuple(values.get(label, "") for label in self.resource_labels)
        scope_name = values.get("otel_scope_name", "")
        scope = (
            (scope_name, values.get("otel_scope_version", ""))
            if scope_name
            else (SCOPE_NAME, __version__)
        )
        attributes = tuple(
            pair
            for pair in rest
            if pair[0] not in self._resource_set and pair[0] not in _SCOPE_LABELS
        )
        return _Ctx(resource, scope, attributes)

    def resolve(self, series: Series, name: str, shapes: Mapping[str, MetricType]) -> _Kind:
        meta = series.metadata
        if meta is not None and meta.type is not MetricType.UNKNOWN:
            family, suffix = _family_of(name, meta.type)
            return _Kind(meta.type, family, suffix, meta.help, meta.unit, True)
        families = self.state.families
        exact = families.get(name)
        if exact is not None and exact.type is not MetricType.UNKNOWN:
            family, suffix = _family_of(name, exact.type)
            return _Kind(exact.type, family, suffix, exact.help, exact.unit, True)
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                fam = families.get(name[: -len(suffix)])
                if fam is not None and suffix in _PARTS.get(fam.type, ()):
                    return _Kind(fam.type, fam.family, suffix, fam.help, fam.unit, True)
        help_, unit = (meta.help, meta.unit) if meta is not None else ("", "")
        if exact is not None:
            help_, unit = exact.help or help_, exact.unit or unit
        labels = series.labels
        if name.endswith("_bucket") and any(k == "le" for k, _ in labels):
            return _Kind(MetricType.HISTOGRAM, name[:-7], "_bucket", help_, unit)
        if any(k == "quantile" for k, _ in labels):
            return _Kind(MetricType.SUMMARY, name, "", help_, unit)
        for suffix in ("_sum", "_count", "_created"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                guess = shapes.get(base) or self.state.inferred.get(base)
                if guess is not None and suffix in _PARTS.get(guess, ()):
                    return _Kind(guess, base, suffix, help_, unit)
        if name.endswith("_total") and len(name) > 6:
            return _Kind(MetricType.COUNTER, name[:-6], "_total", help_, unit)
        return _Kind(MetricType.UNKNOWN, name, "", help_, unit)

    def shapes(self, batch: Batch | Iterable[Series]) -> dict[str, MetricType]:
        """Families this batch shows the shape of, for series whose type only names can tell."""
        series = batch.series if isinstance(batch, Batch) else batch
        return self._learn_shapes([(item, None, None) for item in series])

    def _learn_shapes(
        self, entries: Iterable[tuple[Series, object, _RowInfo | None]]
    ) -> dict[str, MetricType]:
        out: dict[str, MetricType] = {}
        for series, _, info in entries:
            if info is not None:
                found = info.shape
            elif series.metadata is not None and series.metadata.type is not MetricType.UNKNOWN:
                continue
            else:
                found = _shape(series.name, {k for k, _ in series.labels})
            if found is not None:
                out[found[0]] = found[1]
        for family, mtype in out.items():
            if family not in self.state.families:
                self.state.infer(family, mtype)
        return out

    @staticmethod
    def role(kind: _Kind, labels: Labels) -> str:
        mtype, suffix = kind.type, kind.suffix
        if mtype is MetricType.COUNTER:
            return "created" if suffix == "_created" else "counter"
        if mtype is MetricType.HISTOGRAM:
            if suffix == "_bucket":
                return "bucket" if any(k == "le" for k, _ in labels) else "gauge"
            return {"_sum": "sum", "_count": "count", "_created": "created"}.get(suffix, "gauge")
        if mtype is MetricType.SUMMARY:
            if not suffix:
                return "quantile" if any(k == "quantile" for k, _ in labels) else "gauge"
            return {"_sum": "sum", "_count": "count", "_created": "created"}[suffix]
        if mtype is MetricType.GAUGEHISTOGRAM:
            return "drop"
        if mtype in (MetricType.INFO, MetricType.STATESET):
            return "updown"
        return "gauge"

    # -- the batch -------------------------------------------------------------------------

    def run(self, batch: Batch) -> Mapped:
        self.feed(batch)
        self.finish()
        return self.take()

    def feed(self, batch: Batch | list[Item]) -> None:
        """Read ``batch`` and map the one fed before it into the request being built.

        Mapping a batch one ``feed`` late lets the ``_created`` series of the next one reach
        the counters and histograms they belong to (OpenMetrics puts ``_created`` after its
        family: a cut between the two would otherwise lose the start time). Classic histogram
        and summary parts wait in ``groups`` for the rest of their point, which may be in a
        later batch. ``finish`` maps what waits.

        A batch may also be a step of ``rows.entry_steps``: its rows' label sets are looked up
        by their bytes (``_RowInfo``), and their gauges and counters encoded straight to bytes.
        """
        if isinstance(batch, Batch):
            self.state.learn(batch.metadata)
            items: Sequence[Item] = batch.series
        else:
            items = batch
        memo = self._rows
        if len(memo) > _ROWS_LIMIT:
            memo.clear()
        entries: list[tuple[Series, Sequence[tuple[float, int]] | None, _RowInfo | None]] = []
        for item in items:
            if isinstance(item, Series):
                entries.append((item, None, None))
                continue
            key, row_samples, _ = item
            info = memo.get(key)
            if info is None:
                info = memo[key] = _RowInfo(row_labels(key), self._ctx_of)
            entries.append((info.shell, row_samples, info))
        shapes = self.seen_shapes
        learnt = self._learn_shapes(entries)
        if any(shapes.get(family) is not mtype for family, mtype in learnt.items()):
            self._shapes_version += 1
        shapes.update(learnt)
        if len(shapes) > self.state.max_families:  # what it forgets is still in state.inferred
            shapes.clear()
            shapes.update(self._learn_shapes(entries))
            self._shapes_version += 1
        if len(self.created) > self.state.max_streams:
            self.created.clear()
        if len(self._ctx) > _CTX_LIMIT:
            self._ctx.clear()
        # Kind and role by (name, has le, has quantile): all a row's resolve and role read,
        # kept while what they depend on (families, inferred and seen shapes) is unchanged.
        if self._kinds_at != (self.state.version, self._shapes_version):
            self._kinds.clear()
            self._kinds_at = (self.state.version, self._shapes_version)
        kinds = self._kinds
        plan: list[_Planned] = []
        waiting_points = 0
        for series, samples, info in entries:
            if info is None:
                name = series.name
                if not name:
                    self.unmapped += len(series.samples) + len(series.histograms)
                    continue
                kind = self.resolve(series, name, shapes)
                role = self.role(kind, series.labels) if series.samples else "none"
                if role == "created":
                    rest = _without(series.labels, "__name__")
                    for sample in series.samples:
                        if math.isfinite(sample.value) and sample.value > 0:
                            self.created[(kind.family, rest)] = int(sample.value * 1000)
                    continue
                plan.append((series, kind, role, None))
                waiting_points += len(series.samples) + len(series.histograms)
                continue
            assert samples is not None
            name = info.name
            if not name:
                self.unmapped += len(samples)
                continue
            if not samples:
                continue  # role "none", and no histograms in a row
            cached = (name, info.has_le, info.has_quantile)
            found = kinds.get(cached)
            if found is None:
                kind = self.resolve(series, name, shapes)
                found = kinds[cached] = (kind, self.role(kind, series.labels))
            kind, role = found
            if role == "created":
                for value, _ in samples:
                    if math.isfinite(value) and value > 0:
                        self.created[(kind.family, info.rest)] = int(value * 1000)
                continue
            plan.append((info, kind, role, samples))
            waiting_points += len(samples)
        waiting, self.waiting = self.waiting, plan
        self.waiting_points = waiting_points
        self.map_plan(waiting)

    def map_plan(self, plan: list[_Planned]) -> None:
        index, size = 0, len(plan)
        native = _native
        while index < size:
            if native is not None:  # gauge_row and counter_row, compiled, for what they can
                index, added = native.otlp_rows(
                    plan,
                    index,
                    self.out,
                    self.updates,
                    self.state.streams,
                    self.created,
                    CounterState,
                    self.delta,
                )
                self.out.points += added
                if index >= size:
                    break
            series, kind, role, samples = plan[index]
            index += 1
            if samples is not None:  # a row
                assert isinstance(series, _RowInfo)
                if role == "counter":
                    self.counter_row(series, samples, kind)
                elif role in ("gauge", "updown"):
                    self.gauge_row(series, samples, kind, role)
                elif role == "drop":
                    self.unmapped += len(samples)
                elif role != "none":
                    self.part(series.series(samples), kind, role)
                continue
            assert isinstance(series, Series)
            if series.histograms:
                self.native(series, kind)
            if role == "none":
                continue
            if role == "drop":
                self.unmapped += len(series.samples)
            elif role in ("gauge", "updown"):
                self.gauge(series, kind, role)
            elif role == "counter":
                self.counter(series, kind)
            else:
                self.part(series, kind, role)

    def finish(self) -> None:
        """Map the batch waiting, and emit every classic histogram and summary point still
        waiting for parts."""
        waiting, self.waiting, self.waiting_points = self.waiting, [], 0
        self.map_plan(waiting)
        self.flush_groups()

    def flush_groups(self) -> None:
        """Emit every classic histogram and summary point still waiting for parts."""
        for key, by_ts in self.groups.items():
            self.finish_groups(key, by_ts)
        self.groups.clear()
        self.group_exemplars.clear()
        self.grouped = 0

    def cut(self) -> tuple[bytes, int]:
        """The request mapped so far, serialized, and its point count; mapping goes on into a
        new one (stream updates are kept for ``take``). Serialized requests concatenate into
        one (protobuf repeated fields), so a large request is serialized in parts."""
        out = self.out
        out.flush()
        self.out = _Output(self.resource_labels, "delta" if self.delta else "cumulative")
        return out.request.SerializeToString(), out.points

    def take(self) -> Mapped:
        """The request mapped since the last ``take``, and its stream updates; the next request
        starts empty and reads the state the caller committed in between."""
        self.out.flush()
        mapped = Mapped(self.out.request, self.out.points, self.updates, self.unmapped)
        self.out = _Output(self.resource_labels, "delta" if self.delta else "cumulative")
        self.updates = {}
        self.unmapped = 0
        return mapped

    # -- gauges and counters ---------------------------------------------------------------

    def gauge(self, series: Series, kind: _Kind, role: str) -> None:
        rest = _without(series.labels, "__name__")
        ctx = self.ctx(rest)
        data = "gauge" if role == "gauge" else "updown"
        for sample in series.samples:
            value = None if is_stale(sample.value) else sample.value
            start = 0
            if data == "updown":
                explicit = sample.start_timestamp or series.created_timestamp
                start = explicit if explicit and explicit <= sample.timestamp else sample.timestamp
            self.out.number(ctx, series.name, data, kind, sample.timestamp, start, value)

    def counter(self, series: Series, kind: _Kind) -> None:
        name = series.name
        rest = _without(series.labels, "__name__")
        ctx = self.ctx(rest)
        key: StreamKey = ("counter", name, rest)
        last: pb.NumberDataPoint | None = None
        for sample in series.samples:
            ts, value = sample.timestamp, sample.value
            prev = self.prev(key)
            assert prev is None or isinstance(prev, CounterState)
            if is_stale(value):
                start = (prev.last_ms if self.delta else prev.start_ms) if prev else ts
                last = self.out.number(ctx, name, "sum", kind, ts, min(start, ts), None)
                continue
            explicit = (
                sample.start_timestamp
                or series.created_timestamp
                or self.created.get((kind.family, rest), 0)
            )
            if math.isnan(value):  # not a count: pass it on, but never as a baseline
                if not self.delta:
                    start = _cumulative_start(prev, ts, explicit, False)
                    last = self.out.number(ctx, name, "sum", kind, ts, start, value)
                continue
            reset = prev is not None and (value < prev.value or ts >= explicit > prev.last_ms)
            if not self.delta:
                start = _cumulative_start(prev, ts, explicit, reset)
                if prev is None or ts > prev.last_ms:
                    self.updates[key] = CounterState(start, ts, value)
                last = self.out.number(ctx, name, "sum", kind, ts, start, value)
                continue
            if prev is None:
                self.updates[key] = CounterState(ts, ts, value)  # the baseline, not sent
                continue
            if ts <= prev.last_ms:
                continue  # a repeat or out of order: no interval to report
            self.updates[key] = CounterState(prev.start_ms, ts, value)
            delta = value if reset else value - prev.value
            last = self.out.number(ctx, name, "sum", kind, ts, prev.last_ms, delta)
        if last is not None:
            for exemplar in series.exemplars:
                _add_exemplar(last, exemplar)

    def gauge_row(
        self, info: _RowInfo, samples: Sequence[tuple[float, int]], kind: _Kind, role: str
    ) -> None:
        """``gauge`` for a row (no start or created timestamps in remote write 1.0)."""
        data = "gauge" if role == "gauge" else "updown"
        out = self.out.encoded(info, data, kind)
        attrs = info.attrs
        updown = data == "updown"
        for value, ts in samples:
            point = None if is_stale(value) else value
            out.append(_number_bytes(attrs, ts, ts if updown else 0, point))
        self.out.points += len(samples)

    def counter_row(
        self, info: _RowInfo, samples: Sequence[tuple[float, int]], kind: _Kind
    ) -> None:
        """``counter`` for a row, its points encoded (a row has no exemplars)."""
        key, attrs, delta_mode = info.counter_key, info.attrs, self.delta
        updates, streams = self.updates, self.state.streams
        out: list[bytes] | None = None  # the metric is made with its first point, as in counter
        added = 0
        for value, ts in samples:
            prev = updates.get(key) or streams.get(key)
            assert prev is None or isinstance(prev, CounterState)
            point: float | None = value
            if value != value and is_stale(value):
                start = (prev.last_ms if delta_mode else prev.start_ms) if prev else ts
                start, point = min(start, ts), None
            else:
                explicit = self.created.get((kind.family, info.rest), 0) if self.created else 0
                if value != value:  # not a count: pass it on, but never as a baseline
                    if delta_mode:
                        continue
                    start = _cumulative_start(prev, ts, explicit, False)
                else:
                    reset = prev is not None and (
                        value < prev.value or ts >= explicit > prev.last_ms
                    )
                    if not delta_mode:
                        # _cumulative_start, inlined (the hot path)
                        if explicit and explicit <= ts:
                            start = explicit
                        elif prev is None:
                            start = ts
                        elif reset:
                            start = prev.last_ms + 1 if prev.last_ms + 1 < ts else ts
                        else:
                            start = prev.start_ms if prev.start_ms < ts else ts
                        if prev is None or ts > prev.last_ms:
                            updates[key] = _counter_state(start, ts, value)
                    elif prev is None:
                        updates[key] = _counter_state(ts, ts, value)  # the baseline, not sent
                        continue
                    elif ts <= prev.last_ms:
                        continue  # a repeat or out of order: no interval to report
                    else:
                        updates[key] = _counter_state(prev.start_ms, ts, value)
                        start, point = prev.last_ms, value if reset else value - prev.value
            if out is None:
                out = self.out.encoded(info, "sum", kind)
            out.append(_number_bytes(attrs, ts, start, point))
            added += 1
        self.out.points += added

    # -- classic histograms and summaries --------------------------------------------------

    def part(self, series: Series, kind: _Kind, role: str) -> None:
        labels = series.labels
        le: float | None = None
        quantile: float | None = None
        if role == "bucket":
            le = _float_or_none(dict(labels)["le"])
            rest = _without(labels, "__name__", "le")
        elif role == "quantile":
            quantile = _float_or_none(dict(labels)["quantile"])
            rest = _without(labels, "__name__", "quantile")
        else:
            rest = _without(labels, "__name__")
        if (role == "bucket" and le is None) or (role == "quantile" and quantile is None):
            self.unmapped += len(series.samples)  # le="NaN" or not a number
            return
        shape = "histogram" if kind.type is MetricType.HISTOGRAM else "summary"
        key: StreamKey = (shape, kind.family, rest)
        by_ts = self.groups.setdefault(key, {})
        ctx: _Ctx | None = None
        for sample in series.samples:
            group = by_ts.get(sample.timestamp)
            if group is None:
                ctx = ctx or self.ctx(rest)
                group = by_ts[sample.timestamp] = _Group(ctx, kind)
            group.samples += 1
            self.grouped += 1
            value = sample.value
            if is_stale(value):
                group.stale = True
            elif role == "bucket":
                assert le is not None
                group.buckets[le] = value
            elif role == "quantile":
                assert quantile is not None
                group.quantiles[quantile] = value
            elif role == "count":
                group.count = value
            else:
                group.sum = value
        if series.exemplars:
            self.group_exemplars.setdefault(key, []).extend(series.exemplars)

    def finish_groups(self, key: StreamKey, by_ts: dict[int, _Group]) -> None:
        explicit = self.created.get((key[1], key[2]), 0)
        last: pb.HistogramDataPoint | None = None
        for ts in sorted(by_ts):
            group = by_ts[ts]
            if key[0] == "histogram":
                last = self.classic(key, ts, group, explicit) or last
            else:
                self.summary(key, ts, group, explicit)
        if last is not None:
            for exemplar in self.group_exemplars.get(key, ()):
                _add_exemplar(last, exemplar)

    def classic(
        self, key: StreamKey, ts: int, group: _Group, explicit: int
    ) -> pb.HistogramDataPoint | None:
        name, ctx, kind = key[1], group.ctx, group.kind
        prev = self.prev(key)
        assert prev is None or isinstance(prev, ClassicState)
        if group.stale:
            start = (prev.last_ms if self.delta else prev.start_ms) if prev else ts
            return self.out.histogram(ctx, name, kind, ts, min(start, ts), stale=True)
        count = group.count if group.count is not None else group.buckets.get(_INF)
        if count is None or math.isnan(count):
            self.unmapped += group.samples  # neither _count nor the +Inf bucket arrived
            return None
        finite = sorted(le for le in group.buckets if le != _INF)
        cumulative = tuple((le, group.buckets[le]) for le in finite)
        has_buckets = bool(group.buckets)
        reset = False
        if prev is not None:
            before = dict(prev.buckets)
            reset = (
                count < prev.total
                or any(v < before[le] for le, v in cumulative if le in before)
                or ts >= explicit > prev.last_ms
            )
        if not self.delta:
            start = _cumulative_start(prev, ts, explicit, reset)
            if prev is None or ts > prev.last_ms:
                self.updates[key] = ClassicState(start, ts, count, group.sum, cumulative)
            return self.out.histogram(
                ctx,
                name,
                kind,
                ts,
                start,
                count=count,
                sum_=group.sum,
                bounds=finite,
                counts=_bucket_counts(cumulative, count) if has_buckets else (),
            )
        if prev is None:
            self.updates[key] = ClassicState(ts, ts, count, group.sum, cumulative)
            return None
        if ts <= prev.last_ms:
            return None
        self.updates[key] = ClassicState(prev.start_ms, ts, count, group.sum, cumulative)
        if reset:
            d_count, d_sum, d_cumulative = count, group.sum, cumulative
        else:
            before = dict(prev.buckets)
            # Bounds only one of the two points has cannot be subtracted: their buckets merge
            # into the neighbours', which keeps every remaining bucket exact.
            d_cumulative = tuple((le, v - before[le]) for le, v in cumulative if le in before)
            d_count = count - prev.total
            d_sum = group.sum - prev.sum if group.sum is not None and prev.sum is not None else None
        return self.out.histogram(
            ctx,
            name,
            kind,
            ts,
            prev.last_ms,
            count=d_count,
            sum_=d_sum,
            bounds=[le for le, _ in d_cumulative],
            counts=_bucket_counts(d_cumulative, d_count) if has_buckets else (),
        )

    def summary(self, key: StreamKey, ts: int, group: _Group, explicit: int) -> None:
        name, ctx, kind = key[1], group.ctx, group.kind
        prev = self.prev(key)
        assert prev is None or isinstance(prev, SummaryState)
        if group.stale:
            start = prev.start_ms if prev else ts
            self.out.summary(ctx, name, kind, ts, min(start, ts), stale=True)
            return
        if group.count is None or math.isnan(group.count):
            self.unmapped += group.samples  # the spec: a summary without _count is dropped
            return
        reset = prev is not None and (group.count < prev.total or ts >= explicit > prev.last_ms)
        # OTLP summaries are cumulative whatever the destination's temporality.
        start = _cumulative_start(prev, ts, explicit, reset)
        if prev is None or ts > prev.last_ms:
            self.updates[key] = SummaryState(start, ts, group.count)
        self.out.summary(
            ctx,
            name,
            kind,
            ts,
            start,
            count=group.count,
            sum_=group.sum if group.sum is not None else 0.0,
            quantiles=group.quantiles,
        )

    # -- native histograms -----------------------------------------------------------------

    def native(self, series: Series, kind: _Kind) -> None:
        name = series.name
        rest = _without(series.labels, "__name__")
        ctx = self.ctx(rest)
        key: StreamKey = ("native", name, rest)
        last: Point | None = None
        for h in series.histograms:
            ts = h.timestamp
            if h.reset_hint == 3:  # GAUGE: a gauge histogram, which the spec drops
                self.unmapped += 1
                continue
            prev = self.prev(key)
            assert prev is None or isinstance(prev, NativeState)
            if is_stale(h.sum):
                start = (prev.last_ms if self.delta else prev.start_ms) if prev else ts
                last = self.emit_native(ctx, name, kind, ts, min(start, ts), None, h.schema)
                continue
            cur = _NativeValues.of(h)
            explicit = h.start_timestamp or series.created_timestamp
            outcome, delta = "new", cur
            if prev is not None:
                outcome, delta = _native_delta(_NativeValues.of_state(prev), cur)
                if h.reset_hint == 1 or ts >= explicit > prev.last_ms:
                    outcome, delta = "reset", cur
            if not self.delta:
                start = _cumulative_start(prev, ts, explicit, outcome == "reset")
                if prev is None or ts > prev.last_ms:
                    self.updates[key] = cur.state(start, ts)
                last = self.emit_native(ctx, name, kind, ts, start, cur, h.schema)
                continue
            if prev is not None and ts <= prev.last_ms:
                continue
            self.updates[key] = cur.state(prev.start_ms if prev else ts, ts)
            if prev is None or outcome == "incompatible":
                continue  # a new baseline: nothing to subtract from
            last = self.emit_native(ctx, name, kind, ts, prev.last_ms, delta, h.schema)
        if last is not None:
            for exemplar in series.exemplars:
                _add_exemplar(last, exemplar)

    def emit_native(
        self,
        ctx: _Ctx,
        name: str,
        kind: _Kind,
        ts: int,
        start: int,
        values: _NativeValues | None,
        schema: int,
    ) -> Point:
        if schema == NHCB_SCHEMA:
            if values is None:
                return self.out.histogram(ctx, name, kind, ts, start, stale=True)
            bounds = values.custom_values
            counts = [_uint(values.positive.get(i, 0.0)) for i in range(len(bounds) + 1)]
            return self.out.histogram(
                ctx,
                name,
                kind,
                ts,
                start,
                count=values.total,
                sum_=values.sum,
                bounds=bounds,
                counts=counts,
            )
        metric = self.out.metric(ctx, name, "exponential", kind)
        point: pb.ExponentialHistogramDataPoint = metric.exponential_histogram.data_points.add(
            attributes=self.out.attributes(ctx.attributes),
            start_time_unix_nano=start * NS_PER_MS,
            time_unix_nano=ts * NS_PER_MS,
        )
        self.out.points += 1
        if values is None:
            point.flags = NO_RECORDED_VALUE
            return point
        point.scale = values.schema
        point.count = _uint(values.total)
        point.zero_count = _uint(values.zero_count)
        point.zero_threshold = values.zero_threshold
        if not math.isnan(values.sum):
            point.sum = values.sum
        for buckets, target in (
            (values.positive, point.positive),
            (values.negative, point.negative),
        ):
            used = [i for i, c in buckets.items() if c]
            if not used:
                continue
            low, high = min(used), max(used)
            target.offset = low - 1  # Prometheus bucket i is OTLP bucket i - 1
            target.bucket_counts.extend(_uint(buckets.get(i, 0.0)) for i in range(low, high + 1))
        return point


def _bucket_counts(cumulative: Sequence[tuple[float, float]], count: float) -> list[int]:
    """Prometheus' cumulative ``le`` buckets as OTLP's per-bucket counts (+Inf last)."""
    out: list[int] = []
    below = 0.0
    for _, value in cumulative:
        out.append(_uint(value - below))
        below = max(below, value)
    out.append(_uint(count - below))
    return out


def _add_exemplar(point: Point, exemplar: Exemplar) -> None:
    target = point.exemplars.add(
        time_unix_nano=exemplar.timestamp * NS_PER_MS, as_double=exemplar.value
    )
    for key, value in exemplar.labels:
        if key == "trace_id" and (trace := _hex_id(value, 16)) is not None:
            target.trace_id = trace
        elif key == "span_id" and (span := _hex_id(value, 8)) is not None:
            target.span_id = span
        else:
            target.filtered_attributes.add(key=key, value=AnyValue(string_value=value))


def to_otlp(
    batch: Batch,
    state: MappingState,
    *,
    temporality: Temporality = "cumulative",
    resource_labels: Sequence[str] = ("job", "instance"),
) -> Mapped:
    """Map ``batch`` to one request. Learns family metadata into ``state`` at once; stream
    state changes come back in ``Mapped.updates`` for the caller to commit after delivery."""
    return Mapper(state, temporality, resource_labels).run(batch)
