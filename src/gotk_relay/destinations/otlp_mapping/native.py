"""Native histograms: standard schemas become ExponentialHistograms (OTLP index = Prometheus
index - 1, scale = schema); custom-bucket ones (schema -53) become explicit-bounds Histograms.
Delta points subtract at the coarser of two schemas; buckets that cannot be subtracted make a
new baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate, islice
from typing import Final, NamedTuple

from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ...model import BucketSpan, Histogram, Series, is_stale
from .builder import Builder
from .naming import NO_RECORDED_VALUE, NS_PER_MS, Ctx, Kind, StreamKey, without
from .output import Point, add_exemplar, uint
from .state import NativeState, cumulative_start

NHCB_SCHEMA: Final = -53  # native histogram with custom buckets
# OTLP buckets are dense from an offset: a histogram whose used buckets lie further apart than
# this is merged to a coarser scale until they fit, as an OpenTelemetry SDK does past its
# max_size (every bucket of a schema nests in one of the next lower). A schema-8 histogram
# spanning 1 µs to 1000 s uses 7,680; an index gap of billions (anyone may send one) would
# otherwise be as many zeros, each a Python int, in memory at once.
MAX_DENSE_BUCKETS: Final = 16_384
MIN_SCALE: Final = -10  # the data model's lowest: beyond it a point is not mapped
# The data model's highest: a schema above it (Prometheus defines -4 to 8, and its receivers
# reduce 9 to 52 to 8) is merged down to it, which is exact, as for MAX_DENSE_BUCKETS.
MAX_SCALE: Final = 20
SINT32: Final = range(-(2**31), 2**31)  # OTLP's bucket indexes (its offset is a sint32)


def _native_buckets(
    spans: Sequence[BucketSpan], deltas: Sequence[int], counts: Sequence[float], is_float: bool
) -> dict[int, float]:
    """Bucket index -> count. Spans longer than the buckets given end with the buckets (a
    request validated strictly has as many as its spans say, as Prometheus requires; one
    forwarded under framing-only validation may not, and its spans' lengths, up to 2^32 each,
    are not the measure of the work)."""
    values: Iterable[float] = counts if is_float else accumulate(float(d) for d in deltas)
    out: dict[int, float] = {}
    it = iter(values)
    index = 0
    for span in spans:
        index += span.offset
        for value in islice(it, span.length):
            out[index] = value
            index += 1
    return out


def _dense_scale(schema: int, *sides: Mapping[int, float]) -> int | None:
    """How many schemas lower the used buckets of ``sides`` fit MAX_DENSE_BUCKETS each and the
    scale is at most MAX_SCALE (0 when both hold as it is), or None when not even at
    MIN_SCALE."""
    ranges = [
        (min(used), max(used)) for used in ([i for i, c in s.items() if c] for s in sides) if used
    ]
    by = max(0, schema - MAX_SCALE)
    if schema - by < MIN_SCALE:
        return None
    while any(
        _ceil_shift(high, by) - _ceil_shift(low, by) >= MAX_DENSE_BUCKETS for low, high in ranges
    ):
        by += 1
        if schema - by < MIN_SCALE:
            return None
    return by


def _ceil_shift(index: int, by: int) -> int:
    """ceil(index / 2^by), ``by`` cut as ``_downscale`` cuts it (exact: see there)."""
    by = min(by, max(64, abs(index).bit_length()))
    return (index + (1 << by) - 1) >> by


def _downscale(buckets: Mapping[int, float], by: int) -> dict[int, float]:
    """Merge buckets to a schema ``by`` lower: index i covers (b^(i-1), b^i], so it goes to
    ceil(i / 2^by)."""
    if by <= 0:
        return dict(buckets)
    if by > 64:  # a schema drop no real stream makes (the strict check takes any sint32 schema)
        # For |i| < 2^n and any by >= n, i / 2^by lies in (-1, 1): ceil(i / 2^by) is 1 for
        # i > 0 and 0 for i <= 0, whatever by. With n the bit length of the largest |i| (at
        # most 32 for one span, more as offsets add up), by cut to max(n, 64) merges exactly
        # as by does, without ints of ``by`` bits (a drop of 2^32 - 1 took seconds and a
        # gigabyte for one bucket).
        by = min(by, max(64, max(map(abs, buckets), default=0).bit_length()))
    out: dict[int, float] = {}
    for index, count in buckets.items():
        target = (index + (1 << by) - 1) >> by
        out[target] = out.get(target, 0.0) + count
    return out


def _used_range(buckets: Mapping[int, float]) -> tuple[int, int] | None:
    """The lowest and highest index of the buckets counting something, or None."""
    used = [i for i, c in buckets.items() if c]
    return (min(used), max(used)) if used else None


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


class Native(Builder):
    """The native histogram builders of a ``Mapper``."""

    def native(self, series: Series, kind: Kind) -> None:
        name = series.name
        rest = without(series.labels, "__name__")
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
                last = self.emit_native(ctx, name, kind, ts, min(start, ts), None, h.schema) or last
                continue
            cur = _NativeValues.of(h)
            explicit = h.start_timestamp or series.created_timestamp
            outcome, delta = "new", cur
            if prev is not None:
                outcome, delta = _native_delta(_NativeValues.of_state(prev), cur)
                if h.reset_hint == 1 or ts >= explicit > prev.last_ms:
                    outcome, delta = "reset", cur
            if not self.delta:
                start = cumulative_start(prev, ts, explicit, outcome == "reset")
                if prev is None or ts > prev.last_ms:
                    self.updates[key] = cur.state(start, ts)
                last = self.emit_native(ctx, name, kind, ts, start, cur, h.schema) or last
                continue
            if prev is not None and ts <= prev.last_ms:
                continue
            self.updates[key] = cur.state(prev.start_ms if prev else ts, ts)
            if prev is None or outcome == "incompatible":
                continue  # a new baseline: nothing to subtract from
            last = self.emit_native(ctx, name, kind, ts, prev.last_ms, delta, h.schema) or last
        if last is not None:
            for exemplar in series.exemplars:
                add_exemplar(last, exemplar)

    def emit_native(
        self,
        ctx: Ctx,
        name: str,
        kind: Kind,
        ts: int,
        start: int,
        values: _NativeValues | None,
        schema: int,
    ) -> Point | None:
        """The point, or None (counted in ``unmapped``) for one whose buckets lie too far apart
        for OTLP's dense buckets even at ``MIN_SCALE``, whose schema is below it, or with a
        bucket past the indexes OTLP numbers. A schema above ``MAX_SCALE`` is merged down."""
        if schema == NHCB_SCHEMA:
            if values is None:
                return self.out.histogram(ctx, name, kind, ts, start, stale=True)
            bounds = values.custom_values
            counts = [uint(values.positive.get(i, 0.0)) for i in range(len(bounds) + 1)]
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
        positive: Mapping[int, float] = {}
        negative: Mapping[int, float] = {}
        sides: list[tuple[Mapping[int, float], tuple[int, int] | None]] = []
        if values is not None:
            by = _dense_scale(values.schema, values.positive, values.negative)
            if by is None:
                self.unmapped += 1
                return None
            positive = _downscale(values.positive, by)
            negative = _downscale(values.negative, by)
            values = values._replace(schema=values.schema - by)
            sides = [(positive, _used_range(positive)), (negative, _used_range(negative))]
            # Prometheus bucket i is OTLP bucket i - 1, which must be a sint32 (an index the
            # strict check lets reach -2^31, and 2^31 - 1 and past as offsets add up).
            if any(
                r is not None and not (r[0] - 1 in SINT32 and r[1] - 1 in SINT32) for _, r in sides
            ):
                self.unmapped += 1
                return None
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
        point.count = uint(values.total)
        point.zero_count = uint(values.zero_count)
        point.zero_threshold = values.zero_threshold
        if not math.isnan(values.sum):
            point.sum = values.sum
        for (buckets, used), target in zip(sides, (point.positive, point.negative), strict=True):
            if used is None:
                continue
            low, high = used
            target.offset = low - 1  # Prometheus bucket i is OTLP bucket i - 1
            target.bucket_counts.extend(uint(buckets.get(i, 0.0)) for i in range(low, high + 1))
        return point
