"""Prometheus text exposition format in and out, read with prometheus-client's
parser, written here (see ``render``).

In: ``send`` and ``rewrite`` read files a user can write by hand (or copy from a /metrics page).
Out: ``/federate`` and ``rewrite`` print what would be forwarded, with timestamps, the way
Prometheus' own /federate does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from ..model import Batch, FamilyMetadata, Labels, MetricType, Sample, Series, labels_from
from .errors import DecodeError

# prometheus-client's Go-like float formatting: +Inf, -Inf, NaN and Go's exponents for large
# values, as Prometheus writes them, but Python's ".0" on whole numbers ("2.0" where Prometheus
# writes "2") and "-0.0" for a negative zero ("0"); every parser reads both the same.
_go_float: Callable[[float], str] = floatToGoString

# prometheus-client's parsers' family types, as remote write's metadata types.
TYPES: Final[Mapping[str, MetricType]] = {
    "counter": MetricType.COUNTER,
    "gauge": MetricType.GAUGE,
    "histogram": MetricType.HISTOGRAM,
    "gaugehistogram": MetricType.GAUGEHISTOGRAM,
    "summary": MetricType.SUMMARY,
    "info": MetricType.INFO,
    "stateset": MetricType.STATESET,
    "unknown": MetricType.UNKNOWN,
}


# What ``render`` writes: the text exposition format 0.0.4 (prometheus-client's own
# CONTENT_TYPE_LATEST names 1.0.0, its newer writer's, which /metrics keeps).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse(text: str, default_timestamp_ms: int) -> Batch:
    """A Batch with one series per distinct label set, samples in file order.

    Lines without a timestamp get ``default_timestamp_ms``. TYPE/HELP lines become family
    metadata, as a v1 sender would send them.
    """
    order: list[Labels] = []
    samples: dict[Labels, list[Sample]] = {}
    metadata: list[FamilyMetadata] = []
    try:
        for family in text_string_to_metric_families(text):
            mtype = TYPES.get(family.type, MetricType.UNKNOWN)
            if mtype is not MetricType.UNKNOWN or family.documentation:
                metadata.append(
                    FamilyMetadata(family.name, mtype, family.documentation, family.unit)
                )
            for s in family.samples:
                labels = labels_from({**s.labels, "__name__": s.name})
                if labels not in samples:
                    order.append(labels)
                    samples[labels] = []
                ts = default_timestamp_ms if s.timestamp is None else _to_ms(s.timestamp)
                samples[labels].append(Sample(float(s.value), ts))
    except ValueError as exc:
        raise DecodeError(f"invalid text exposition: {exc}") from exc
    series = tuple(
        Series(labels, tuple(sorted(samples[labels], key=lambda s: s.timestamp)))
        for labels in order
    )
    return Batch(series, tuple(metadata))


def _to_ms(timestamp: object) -> int:
    return round(float(timestamp) * 1000)  # type: ignore[arg-type]


# The text format (0.0.4) knows these types; the others are written as what a scraper of that
# format reads them as (OpenMetrics' info and stateset are gauges there).
_TEXT_TYPES: Final = {
    MetricType.COUNTER: "counter",
    MetricType.GAUGE: "gauge",
    MetricType.HISTOGRAM: "histogram",
    MetricType.SUMMARY: "summary",
    MetricType.INFO: "gauge",
    MetricType.STATESET: "gauge",
}
# The series names a family of each type writes besides its own name (or instead of it).
_PARTS: Final = {
    MetricType.HISTOGRAM: ("_bucket", "_sum", "_count"),
    MetricType.SUMMARY: ("_sum", "_count"),
    MetricType.COUNTER: ("_total",),
    MetricType.INFO: ("_info",),
}


def family_of(name: str, metadata: Mapping[str, FamilyMetadata]) -> FamilyMetadata | None:
    """The metadata of the family a series named ``name`` belongs to, if known: that of the
    name without the suffix its family's type writes (``_bucket``/``_sum``/``_count`` of a
    histogram, ``_total`` of a counter as OpenMetrics names the family, ...), else that of the
    name itself (a gauge, a counter as the text format names it, a summary's quantiles, an
    info family named as its series)."""
    for suffix in ("_bucket", "_sum", "_count", "_total", "_info"):
        if name.endswith(suffix):
            base = metadata.get(name[: -len(suffix)])
            if base is not None and suffix in _PARTS.get(base.type, ()):
                return base
    found = metadata.get(name)
    if found is None or found.type is MetricType.HISTOGRAM:
        return None  # a series named as the family of a type that never writes that name
    # An info family takes a series of its own name too: kube-state-metrics, asked for
    # OpenMetrics, types its info families that way (``# TYPE gotk_resource_info info``).
    return found


def render(
    points: Iterable[tuple[Labels, float, int | None]],
    metadata: Mapping[str, FamilyMetadata] | None = None,
) -> str:
    """Text format (0.0.4) for ``(labels, value, timestamp_ms)`` points, a family at a time.

    Each family is written once, under the name the format wants on its ``# TYPE`` line (a
    histogram's or summary's own name, a counter's series name), with its HELP and type from
    ``metadata`` (by family name, as remote write 1.0 names them), its series in the order
    given; series of no known family are ``untyped``. prometheus-client's writer is not used
    here: it renames families by OpenMetrics' rules (a counter ``x_total`` becomes
    ``x_total_total``) and cannot hold a histogram's parts given as plain series.
    """
    meta = metadata or {}
    families: dict[str, tuple[FamilyMetadata | None, list[str]]] = {}
    for labels, value, ts in points:
        name = series_name(labels)
        key, info = family_key(name, meta)
        family = families.get(key)
        if family is None:
            family = families[key] = (info, [])
        family[1].append(_sample_line(name, labels, value, ts))
    out: list[str] = []
    for key, (info, lines) in families.items():
        out.append(family_header(key, info))
        out.extend(lines)
    return "".join(out)


def series_name(labels: Labels) -> str:
    """The name a line is written under: a leading ``__name__``'s value, else ''."""
    return labels[0][1] if labels and labels[0][0] == "__name__" else ""


def family_key(
    name: str, metadata: Mapping[str, FamilyMetadata]
) -> tuple[str, FamilyMetadata | None]:
    """The name of the family a series named ``name`` is written under, and its metadata."""
    info = family_of(name, metadata)
    return (name if info is None or info.type not in _FAMILY_NAMED else info.family), info


def family_header(key: str, info: FamilyMetadata | None) -> str:
    """A family's ``# HELP`` (when it has one) and ``# TYPE`` lines."""
    mtype = _TEXT_TYPES.get(info.type, "untyped") if info is not None else "untyped"
    if info is not None and info.help:
        return f"# HELP {key} {_escape_help(info.help)}\n# TYPE {key} {mtype}\n"
    return f"# TYPE {key} {mtype}\n"


# Families written under their own name; the others under each series' name.
_FAMILY_NAMED: Final = frozenset({MetricType.HISTOGRAM, MetricType.SUMMARY})


def _sample_line(name: str, labels: Labels, value: float, ts: int | None) -> str:
    stamp = "" if ts is None else f" {ts:d}"
    return f"{sample_head(name, labels)} {_go_float(value)}{stamp}\n"


def sample_head(name: str, labels: Labels) -> str:
    """A sample line up to its value: the name and the labels but ``__name__``, escaped."""
    pairs = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels if k != "__name__")
    return f"{name}{{{pairs}}}" if pairs else name


def go_float(value: float) -> str:
    """A value as the text format writes it (see ``_go_float`` for where Prometheus differs)."""
    return _go_float(value)


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
