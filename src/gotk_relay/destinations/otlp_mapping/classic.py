"""Classic histograms and summaries: the ``_bucket{le}``, ``_sum`` and ``_count`` series with
the same other labels and the same timestamp become one data point.

Prometheus shards and batches by series, so the parts of one histogram can arrive in different
requests; what can be assembled from one request is: without ``_count``, the ``+Inf`` bucket is
the count; without buckets, a point with count and sum only (valid OTLP); missing interior
buckets merge into their neighbours (cumulative buckets stay correct). A group with neither
``_count`` nor ``+Inf`` (or a summary without ``_count``, as the spec requires) cannot be a
valid point and is counted in ``unmapped``. ``_created`` series are consumed (by ``Mapper``) as
the start time of their counter/histogram/summary. Gauge histograms are dropped, as the spec
says.
"""

from __future__ import annotations

import math

from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ...model import MetricType, Series, is_stale
from .builder import Builder, Group
from .naming import Ctx, Kind, StreamKey, without
from .output import add_exemplar, bucket_counts
from .state import ClassicState, SummaryState, cumulative_start

_INF = math.inf


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


class Classic(Builder):
    """The classic histogram and summary builders of a ``Mapper``: parts wait in ``groups``
    until ``finish_groups`` makes their points."""

    def part(self, series: Series, kind: Kind, role: str) -> None:
        labels = series.labels
        le: float | None = None
        quantile: float | None = None
        if role == "bucket":
            le = _float_or_none(dict(labels)["le"])
            rest = without(labels, "__name__", "le")
        elif role == "quantile":
            quantile = _float_or_none(dict(labels)["quantile"])
            rest = without(labels, "__name__", "quantile")
        else:
            rest = without(labels, "__name__")
        if (role == "bucket" and le is None) or (role == "quantile" and quantile is None):
            self.unmapped += len(series.samples)  # le="NaN" or not a number
            return
        shape = "histogram" if kind.type is MetricType.HISTOGRAM else "summary"
        key: StreamKey = (shape, kind.family, rest)
        by_ts = self.groups.setdefault(key, {})
        ctx: Ctx | None = None
        for sample in series.samples:
            group = by_ts.get(sample.timestamp)
            if group is None:
                ctx = ctx or self.ctx(rest)
                group = by_ts[sample.timestamp] = Group(ctx, kind)
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

    def finish_groups(self, key: StreamKey, by_ts: dict[int, Group]) -> None:
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
                add_exemplar(last, exemplar)

    def classic(
        self, key: StreamKey, ts: int, group: Group, explicit: int
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
            start = cumulative_start(prev, ts, explicit, reset)
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
                counts=bucket_counts(cumulative, count) if has_buckets else (),
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
            counts=bucket_counts(d_cumulative, d_count) if has_buckets else (),
        )

    def summary(self, key: StreamKey, ts: int, group: Group, explicit: int) -> None:
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
        start = cumulative_start(prev, ts, explicit, reset)
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
