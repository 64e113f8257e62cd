"""The OTLP request being built (``Output``): each ResourceMetrics, ScopeMetrics and Metric
created on first use, and the data points the builders add to them, written as bytes.

Bytes, not upb
    A request of rows is mostly gauges and counters whose points come encoded (``encoder``).
    Building every metric in upb, merging those points into it (a parse) and serializing the
    whole (a second pass) cost more than encoding the points. So the request is written here:
    a metric's own fields and its Gauge's or Sum's fields but the points are serialized once
    per mapper and kept (``Heads``), and the metric is written as those with its points
    between. Each metric has one ``gauge``/``sum`` field: a second one would be merged into
    the first by upb, Go and Java, but replace it in gogo-generated code (the OpenTelemetry
    Collector's), losing a Sum's temporality. A metric given points field by field
    (histograms, summaries, the decoded path) is a upb message, its encoded points merged in.

Resource and scope
    Series are grouped into one ResourceMetrics per distinct values of ``resource_labels``
    (default ``job``, ``instance``). ``job`` becomes ``service.name`` and ``instance``
    ``service.instance.id``, which is what the spec asks for and what Mimir / Grafana Cloud turn
    back into ``job`` and ``instance``; any other resource label becomes a resource attribute of
    the same name. The raw ``job``/``instance`` are *not* copied as well: Mimir would then put
    them a second time into ``target_info``. Resource labels are never data point attributes.
    The labels of the resource's ``target_info`` series (``MappingState.target_info``; the
    series itself is no metric) are further resource attributes, as they are.
    ``otel_scope_*`` labels make the instrumentation scope (``otel_scope_name``, ``_version``,
    ``_schema_url``, and the others its attributes, the prefix cut) and are not point
    attributes; without any, the scope is gotk-relay itself, as the spec requires of a
    translator. ``prometheus.type`` is set in the metric's metadata when the type came from
    metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ...model import Exemplar, Labels
from ...wire.rw1 import uvarint
from .labelsets import RowInfo
from .naming import NO_RECORDED_VALUE, NS_PER_MS, Ctx, Kind, Scope, Temporality, otel_unit

Point = pb.NumberDataPoint | pb.HistogramDataPoint | pb.ExponentialHistogramDataPoint

_RESOURCE_ATTRIBUTES: Final = {"job": "service.name", "instance": "service.instance.id"}
_CUMULATIVE: Final = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA: Final = pb.AGGREGATION_TEMPORALITY_DELTA


_UINT64_MAX: Final = 2**64 - 1


def uint(value: float) -> int:
    """OTLP counts are unsigned 64-bit integers; Prometheus' are floats (negative only if
    broken). A count past 2**64 - 1 is held at it: upb refuses a larger one, and the request
    could never be sent."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return min(round(value), _UINT64_MAX)


def _hex_id(text: str, size: int) -> bytes | None:
    if len(text) != 2 * size:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class _Entry:
    """One Metric of the request: its fields but the data (``head``) and its Gauge's or Sum's
    fields but the points (``tail``), shared by the requests of a ``Heads``; the encoded
    NumberDataPoints (``parts``); the upb message instead, once a point is added field by
    field (``message``), the parts before it merged into it."""

    __slots__ = ("data", "field", "head", "message", "parts", "tail")

    def __init__(self, head: bytes, tail: bytes, field: int, data: str) -> None:
        self.head = head
        self.tail = tail
        self.field = field  # the Metric field of its data (``data``: gauge, sum, ...)
        self.data = data
        self.message: pb.Metric | None = None
        self.parts: list[bytes] = []

    def merge_parts(self) -> None:
        """Move the encoded points into the message, after its own."""
        if self.parts and self.message is not None:
            target = self.message.gauge if self.data == "gauge" else self.message.sum
            target.MergeFromString(b"".join(self.parts))
            self.parts.clear()

    def write(self, out: list[bytes]) -> int:
        """Append this metric as a ``ScopeMetrics.metrics`` field to ``out`` in pieces (its
        points' bytes as they are, not joined here); the bytes appended."""
        if self.message is not None:
            self.merge_parts()
            body = bytes(self.message.SerializeToString())
            key = _key(2, len(body))
            out += (key, body)
            return len(key) + len(body)
        parts = self.parts
        data = sum(map(len, parts)) + len(self.tail)
        inner = _key(self.field, data)
        size = len(self.head) + len(inner) + data
        key = _key(2, size)
        out += (key, self.head, inner)
        out += parts
        out.append(self.tail)
        return len(key) + size


def _written(entry: _Entry) -> bytes:
    """``entry`` as ``write`` appends it (``otlp_serialized`` asks for those with a message)."""
    out: list[bytes] = []
    entry.write(out)
    return b"".join(out)


# The serialized headers a mapper's requests share: a gauge's or sum's metric fields but its
# data and its data's fields but the points, by (name, data, kind, temporality); a
# ResourceMetrics' resource and a ScopeMetrics' scope fields, by their values. Bounded by
# ``Output``.
Heads = dict[tuple[object, ...], tuple[bytes, bytes, int] | bytes]
_MAX_HEADS: Final = 16_384


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return uvarint(number << 3 | 2) + uvarint(len(body)) + body


def _key(number: int, size: int) -> bytes:
    """A length-delimited field's key and length, for a body of ``size`` bytes written after
    it (fields 1 to 15: a one-byte key)."""
    return bytes((number << 3 | 2,)) + uvarint(size)


class Output:
    """The request being built: each ResourceMetrics, ScopeMetrics and Metric made on first use,
    in that order, written as bytes by ``serialized``. A metric whose points all come encoded
    (``encoded``: the rows' gauges and counters) is never a upb message: it is written from
    headers made once per mapper (``Heads``) and its points' bytes; one given points field by
    field (``metric``: ``number``, histograms, summaries) is, the encoded points it was given
    before merged into it first."""

    # What ``_rows.otlp_rows`` makes a metric new to the request of (``_entry``'s, in C, once
    # the mapper has its headers; no other class: it sets the slots ``__init__`` sets).
    entry_type: Final = _Entry

    def __init__(
        self,
        resource_labels: Sequence[str],
        temporality: Temporality,
        heads: Heads | None = None,
        native: Any = None,
        target_info: Mapping[tuple[str, ...], Labels] | None = None,
    ) -> None:
        self.resource_labels = tuple(resource_labels)
        # Each resource's target_info labels, its further attributes (MappingState.target_info).
        self._target_info: Mapping[tuple[str, ...], Labels] = (
            {} if target_info is None else target_info
        )
        self._native = native  # rows.LOOPS.compiled (_rows.otlp_serialized), or None
        self.temporality = _DELTA if temporality == "delta" else _CUMULATIVE
        self._heads: Heads = {} if heads is None else heads
        if len(self._heads) > _MAX_HEADS:
            self._heads.clear()
        # resource → scope → its metrics, in the order first used (the request's order).
        self._tree: dict[tuple[str, ...], dict[Scope, list[_Entry]]] = {}
        # (resource, scope, name, data) → its metric: RowInfo.metric_key's key, or the plain
        # tuple, which equals it.
        self._metrics: dict[tuple[object, ...], _Entry] = {}
        self._attributes: dict[Labels, list[KeyValue]] = {}
        self.points = 0

    def encoded(self, info: RowInfo, data: str, kind: Kind) -> list[bytes]:
        """Where to append the encoded points of ``info``'s series as a ``data`` metric (a gauge
        or a sum): points made as bytes (``number_bytes``) cost a fraction of a upb message
        built field by field; they follow the metric's other points, in order."""
        key = info.metric_key(data)
        found = self._metrics.get(key)
        if found is None:
            ctx = info.ctx
            found = self._entry(ctx.resource, ctx.scope, info.name, data, kind, key)
        return found.parts

    def _entry(
        self,
        resource: tuple[str, ...],
        scope: Scope,
        name: str,
        data: str,
        kind: Kind,
        key: tuple[object, ...],
    ) -> _Entry:
        head_key = (name, data, kind, self.temporality)
        found = self._heads.get(head_key)
        if not isinstance(found, tuple):
            found = self._heads[head_key] = self._metric_parts(name, data, kind)
        entry = self._metrics[key] = _Entry(*found, data)
        scopes = self._tree.get(resource)
        if scopes is None:
            scopes = self._tree[resource] = {}
        entries = scopes.get(scope)
        if entries is None:
            entries = scopes[scope] = []
        entries.append(entry)
        return entry

    def serialized(self) -> bytes:
        """The request, as bytes: what upb would serialize of the request the calls built.

        Written in one join: each message's length is summed from its pieces and its key put in
        the place kept for it, so the points' bytes are copied once (nesting them field by field
        copied each of them five times). Compiled: ``_rows.otlp_serialized``, the same bytes."""
        if self._native is not None:
            return bytes(
                self._native.otlp_serialized(
                    self._tree, self._resource_head, self._scope_head, _written
                )
            )
        out: list[bytes] = []
        for resource, scopes in self._tree.items():
            at = len(out)
            out.append(b"")  # ExportMetricsServiceRequest.resource_metrics' key, once known
            head = self._resource_head(resource)
            out.append(head)
            size = len(head)
            for scope, entries in scopes.items():
                scope_at = len(out)
                out.append(b"")  # ResourceMetrics.scope_metrics' key
                scope_head = self._scope_head(scope)
                out.append(scope_head)
                scope_size = len(scope_head)
                for entry in entries:
                    scope_size += entry.write(out)  # ScopeMetrics.metrics
                out[scope_at] = _key(2, scope_size)
                size += len(out[scope_at]) + scope_size
            out[at] = _key(1, size)
        return b"".join(out)

    def message(self) -> ExportMetricsServiceRequest:
        """The request as a upb message (parsed from ``serialized``)."""
        request = ExportMetricsServiceRequest()
        request.ParseFromString(self.serialized())
        return request

    def _resource_head(self, resource: tuple[str, ...]) -> bytes:
        """ResourceMetrics.resource: the resource labels' values as attributes, then the labels
        of the resource's ``target_info`` as they are (the spec alters neither keys nor
        values); absent when there are none. Made when the request is serialized, so a
        ``target_info`` anywhere in the request applies to all of it."""
        extra = self._target_info.get(resource, ())
        key = ("resource", resource, extra)
        found = self._heads.get(key)
        if not isinstance(found, bytes):
            message = Resource()
            for label, value in zip(self.resource_labels, resource, strict=True):
                if value:
                    message.attributes.add(
                        key=_RESOURCE_ATTRIBUTES.get(label, label),
                        value=AnyValue(string_value=value),
                    )
            taken = {attribute.key for attribute in message.attributes}
            for label, value in extra:
                if label not in taken:
                    message.attributes.add(key=label, value=AnyValue(string_value=value))
            found = _field(1, message.SerializeToString()) if message.attributes else b""
            self._heads[key] = found
        return found

    def _scope_head(self, scope: Scope) -> bytes:
        """ScopeMetrics.scope, always present, and its schema_url when set (field 3, written
        before the metrics, field 2: protobuf takes fields in any order)."""
        key = ("scope", scope)
        found = self._heads.get(key)
        if not isinstance(found, bytes):
            name, version, schema_url, attributes = scope
            message = InstrumentationScope(
                name=name, version=version, attributes=self.attributes(attributes)
            )
            found = _field(1, message.SerializeToString())
            if schema_url:
                found += _field(3, schema_url.encode())
            self._heads[key] = found
        return found

    def attributes(self, labels: Labels) -> list[KeyValue]:
        found = self._attributes.get(labels)
        if found is None:
            found = self._attributes[labels] = [
                KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in labels
            ]
        return found

    def metric(self, ctx: Ctx, name: str, data: str, kind: Kind) -> pb.Metric:
        """The metric's upb message, to add points to field by field: the encoded points it
        was given so far are merged into it first (they came first)."""
        key = (ctx.resource, ctx.scope, name, data)
        entry = self._metrics.get(key)
        if entry is None:
            entry = self._entry(ctx.resource, ctx.scope, name, data, kind, key)
        if entry.message is None:
            entry.message = self._metric_message(name, data, kind)
        entry.merge_parts()
        return entry.message

    def _metric_parts(self, name: str, data: str, kind: Kind) -> tuple[bytes, bytes, int]:
        """A metric serialized but its data, its data (a Gauge, a Sum...) but the points, and
        the number of the data's field."""
        metric = self._metric_message(name, data, kind)
        field = metric.WhichOneof("data")
        assert field is not None  # _metric_message sets one
        tail = bytes(getattr(metric, field).SerializeToString())
        metric.ClearField(field)
        number = pb.Metric.DESCRIPTOR.fields_by_name[field].number
        return bytes(metric.SerializeToString()), tail, number

    def _metric_message(self, name: str, data: str, kind: Kind) -> pb.Metric:
        """A metric's fields but its points."""
        metric = pb.Metric(name=name, description=kind.help, unit=otel_unit(kind.unit))
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
        ctx: Ctx,
        name: str,
        data: str,
        kind: Kind,
        ts: int,
        start: int,
        value: float | None,
    ) -> pb.NumberDataPoint:
        metric = self.metric(ctx, name, data, kind)  # its encoded points first
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
        ctx: Ctx,
        name: str,
        kind: Kind,
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
            point.count = uint(count)
            if sum_ is not None and not math.isnan(sum_):
                point.sum = sum_
            if counts:
                point.explicit_bounds.extend(bounds)
                point.bucket_counts.extend(counts)
        self.points += 1
        return point

    def summary(
        self,
        ctx: Ctx,
        name: str,
        kind: Kind,
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
            point.count = uint(count)
            point.sum = sum_
            for q in sorted(quantiles or {}):
                point.quantile_values.add(quantile=q, value=(quantiles or {})[q])
        self.points += 1


def bucket_counts(cumulative: Sequence[tuple[float, float]], count: float) -> list[int]:
    """Prometheus' cumulative ``le`` buckets as OTLP's per-bucket counts (+Inf last)."""
    out: list[int] = []
    below = 0.0
    for _, value in cumulative:
        out.append(uint(value - below))
        below = max(below, value)
    out.append(uint(count - below))
    return out


def add_exemplar(point: Point, exemplar: Exemplar) -> None:
    # An exemplar at a time OTLP's nanoseconds cannot hold is left out (upb would refuse it).
    if not 0 <= exemplar.timestamp * NS_PER_MS <= _UINT64_MAX:
        return
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
