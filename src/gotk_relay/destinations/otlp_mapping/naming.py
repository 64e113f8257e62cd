"""What a remote-write series is called in OTLP: its type and family, its unit, its resource,
scope and attributes, and the key of its stream.

Types
    A series' type comes from its metadata: RW 2.0 per-series metadata first, then RW 1.0 family
    metadata, which Prometheus sends in separate requests, so ``MappingState`` keeps it from
    earlier batches (bounded). Family metadata of type unknown makes a gauge (the spec's rule
    for unknown-typed metrics), whatever the name. Without metadata (or with a 2.0 type left
    unspecified, which cannot tell unknown from not sent), the name decides: ``_bucket`` with
    ``le`` → histogram part, a ``quantile`` label → summary part, ``_sum``/``_count`` of a
    family seen with buckets or quantiles → its part, ``_total`` → counter, anything else →
    gauge. ``Mapper.resolve`` applies these rules; the tables are here.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ...model import Labels, MetricType

Temporality = Literal["cumulative", "delta"]

NS_PER_MS: Final = 1_000_000
# The latest time OTLP's fixed64 nanoseconds hold, in ms (year 2554).
MAX_MS: Final = (2**64 - 1) // NS_PER_MS
NO_RECORDED_VALUE: Final[int] = int(pb.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
SCOPE_NAME: Final = "gotk-relay"


# Which name suffixes belong to a family of each type (the series named like the family itself
# is the summary's quantiles, or a counter/gauge/unknown/stateset sample).
PARTS: Final[dict[MetricType, tuple[str, ...]]] = {
    MetricType.COUNTER: ("_total", "_created"),
    MetricType.HISTOGRAM: ("_bucket", "_sum", "_count", "_created"),
    MetricType.SUMMARY: ("_sum", "_count", "_created"),
    MetricType.GAUGEHISTOGRAM: ("_bucket", "_gsum", "_gcount", "_created"),
    MetricType.INFO: ("_info",),
}
SUFFIXES: Final = ("_bucket", "_count", "_sum", "_total", "_created", "_info", "_gcount", "_gsum")

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


StreamKey = tuple[str, str, Labels]  # (kind, metric name, labels without __name__/le/quantile)


class Kind(NamedTuple):
    """What a series is: its type, its family (metric name of histograms/summaries) and part."""

    type: MetricType
    family: str
    suffix: str
    help: str = ""
    unit: str = ""
    typed: bool = False  # the type came from metadata (then ``prometheus.type`` is set)


# An instrumentation scope: name, version, schema URL and attributes (the series'
# ``otel_scope_*`` labels, or the relay itself).
Scope = tuple[str, str, str, Labels]
SCOPE_PREFIX: Final = "otel_scope_"


class Ctx(NamedTuple):
    resource: tuple[str, ...]  # values of the resource labels
    scope: Scope
    attributes: Labels


def family_of(name: str, mtype: MetricType) -> tuple[str, str]:
    for suffix in PARTS.get(mtype, ()):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def without(labels: Labels, *names: str) -> Labels:
    return tuple(pair for pair in labels if pair[0] not in names)  # the pairs themselves


def shape_of(name: str, keys: set[str]) -> tuple[str, MetricType] | None:
    """The family a series named ``name`` with label names ``keys`` shows the shape of."""
    if name.endswith("_bucket") and "le" in keys:
        return name[:-7], MetricType.HISTOGRAM
    if "quantile" in keys:
        return name, MetricType.SUMMARY
    if name.endswith("_total"):
        return name[:-6], MetricType.COUNTER
    return None
