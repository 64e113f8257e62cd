"""Gauges and counters: a gauge (or an unknown-typed series) becomes a Gauge, a counter a
monotonic Sum, info and stateset series a non-monotonic cumulative Sum. A row's gauges and
counters are encoded straight to bytes (``encoder``); ``otlp_rows`` in ``_rows.c`` compiles
``gauge_row`` and ``counter_row``, and ``Mapper.map_plan`` chooses between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ...model import Series, is_stale
from .builder import Builder
from .encoder import number_bytes
from .labelsets import RowInfo
from .naming import Kind, StreamKey, without
from .output import add_exemplar
from .state import CounterState, counter_state, cumulative_start


class Numbers(Builder):
    """The gauge and counter builders of a ``Mapper``."""

    def gauge(self, series: Series, kind: Kind, role: str) -> None:
        rest = without(series.labels, "__name__")
        ctx = self.ctx(rest)
        data = "gauge" if role == "gauge" else "updown"
        for sample in series.samples:
            value = None if is_stale(sample.value) else sample.value
            start = 0
            if data == "updown":
                explicit = sample.start_timestamp or series.created_timestamp
                start = explicit if explicit and explicit <= sample.timestamp else sample.timestamp
            self.out.number(ctx, series.name, data, kind, sample.timestamp, start, value)

    def counter(self, series: Series, kind: Kind) -> None:
        name = series.name
        rest = without(series.labels, "__name__")
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
                    start = cumulative_start(prev, ts, explicit, False)
                    last = self.out.number(ctx, name, "sum", kind, ts, start, value)
                continue
            reset = prev is not None and (value < prev.value or ts >= explicit > prev.last_ms)
            if not self.delta:
                start = cumulative_start(prev, ts, explicit, reset)
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
                add_exemplar(last, exemplar)

    def gauge_row(
        self, info: RowInfo, samples: Sequence[tuple[float, int]], kind: Kind, role: str
    ) -> None:
        """``gauge`` for a row (no start or created timestamps in remote write 1.0)."""
        data = "gauge" if role == "gauge" else "updown"
        out = self.out.encoded(info, data, kind)
        attrs = info.attrs
        updown = data == "updown"
        for value, ts in samples:
            point = None if is_stale(value) else value
            out.append(number_bytes(attrs, ts, ts if updown else 0, point))
        self.out.points += len(samples)

    def counter_row(self, info: RowInfo, samples: Sequence[tuple[float, int]], kind: Kind) -> None:
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
                    start = cumulative_start(prev, ts, explicit, False)
                else:
                    reset = prev is not None and (
                        value < prev.value or ts >= explicit > prev.last_ms
                    )
                    if not delta_mode:
                        # cumulative_start, inlined (the hot path)
                        if explicit and explicit <= ts:
                            start = explicit
                        elif prev is None:
                            start = ts
                        elif reset:
                            start = prev.last_ms + 1 if prev.last_ms + 1 < ts else ts
                        else:
                            start = prev.start_ms if prev.start_ms < ts else ts
                        if prev is None or ts > prev.last_ms:
                            updates[key] = counter_state(start, ts, value)
                    elif prev is None:
                        updates[key] = counter_state(ts, ts, value)  # the baseline, not sent
                        continue
                    elif ts <= prev.last_ms:
                        continue  # a repeat or out of order: no interval to report
                    else:
                        updates[key] = counter_state(prev.start_ms, ts, value)
                        start, point = prev.last_ms, value if reset else value - prev.value
            if out is None:
                out = self.out.encoded(info, "sum", kind)
            out.append(number_bytes(attrs, ts, start, point))
            added += 1
        self.out.points += added
