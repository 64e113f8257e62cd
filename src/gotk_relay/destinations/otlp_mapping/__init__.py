"""Remote-write series → an OTLP ``ExportMetricsServiceRequest``: the pure half of ``otlp:``.

It follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility" spec, so a metric that
goes Prometheus → gotk-relay → OTLP → Mimir comes out under the name and labels it went in with.
Counter → monotonic Sum; gauge/unknown → Gauge; info and stateset → non-monotonic cumulative
Sum; classic and native histograms and summaries → their OTLP points; gauge histograms are
dropped (the spec says so). Each module's docstring gives the rules of its part.

Modules, in the order they build on each other: ``naming`` (types, families, units, resource
and scope), ``encoder`` (data points as bytes), ``labelsets`` (a row's label set, resolved
once), ``state`` (what a client remembers; start times and commits), ``output`` (the request
being built), ``builder`` (what the metric-type builders share), ``numbers`` (gauges and
counters), ``classic`` (classic histograms and summaries), ``native`` (native histograms),
``mapper`` (``Mapper`` and ``to_otlp``).
"""

from __future__ import annotations

from .mapper import Mapper, to_otlp
from .naming import (
    NO_RECORDED_VALUE,
    NS_PER_MS,
    SCOPE_NAME,
    StreamKey,
    Temporality,
    otel_unit,
)
from .native import NHCB_SCHEMA
from .output import Point
from .state import (
    ClassicState,
    CounterState,
    Mapped,
    MappingState,
    NativeState,
    StreamState,
    SummaryState,
)

__all__ = [
    "NHCB_SCHEMA",
    "NO_RECORDED_VALUE",
    "NS_PER_MS",
    "SCOPE_NAME",
    "ClassicState",
    "CounterState",
    "Mapped",
    "Mapper",
    "MappingState",
    "NativeState",
    "Point",
    "StreamKey",
    "StreamState",
    "SummaryState",
    "Temporality",
    "otel_unit",
    "to_otlp",
]
