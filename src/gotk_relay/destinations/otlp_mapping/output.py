"""The OTLP request being built (``Output``): each ResourceMetrics, ScopeMetrics and Metric
created on first use, and the data points the builders add to them.

Resource and scope
    Series are grouped into one ResourceMetrics per distinct values of ``resource_labels``
    (default ``job``, ``instance``). ``job`` becomes ``service.name`` and ``instance``
    ``service.instance.id``, which is what the spec asks for and what Mimir / Grafana Cloud turn
    back into ``job`` and ``instance``; any other resource label becomes a resource attribute of
    the same name. The raw ``job``/``instance`` are *not* copied as well: Mimir would then put
    them a second time into ``target_info``. Resource labels are never data point attributes.
    ``otel_scope_name``/``otel_scope_version`` labels select the instrumentation scope (and are
    not attributes); otherwise the scope is gotk-relay itself, as the spec requires of a
    translator. ``prometheus.type`` is set in the metric's metadata when the type came from
    metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ...model import Exemplar, Labels
from .labelsets import RowInfo
from .naming import NO_RECORDED_VALUE, NS_PER_MS, Ctx, Kind, Temporality, otel_unit

Point = pb.NumberDataPoint | pb.HistogramDataPoint | pb.ExponentialHistogramDataPoint

_RESOURCE_ATTRIBUTES: Final = {"job": "service.name", "instance": "service.instance.id"}
_CUMULATIVE: Final = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA: Final = pb.AGGREGATION_TEMPORALITY_DELTA


def uint(value: float) -> int:
    """OTLP counts are unsigned integers; Prometheus' are floats (negative only if broken)."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return round(value)


def _hex_id(text: str, size: int) -> bytes | None:
    if len(text) != 2 * size:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class Output:
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

    def encoded(self, info: RowInfo, data: str, kind: Kind) -> list[bytes]:
        """Where to append the encoded points of ``info``'s series as a ``data`` metric: points
        made as bytes (``number_bytes``) cost a fraction of a upb message built field by
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

    def _scope(self, ctx: Ctx) -> pb.ScopeMetrics:
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

    def metric(self, ctx: Ctx, name: str, data: str, kind: Kind) -> pb.Metric:
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
        ctx: Ctx,
        name: str,
        data: str,
        kind: Kind,
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
