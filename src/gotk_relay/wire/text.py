"""Prometheus text exposition format in and out, through prometheus-client's parser and writer.

In: ``send`` and ``rewrite`` read files a user can write by hand (or copy from a /metrics page).
Out: ``/federate`` and ``rewrite`` print what would be forwarded, with timestamps, the way
Prometheus' own /federate does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from ..model import Batch, FamilyMetadata, Labels, MetricType, Sample, Series, labels_from
from .errors import DecodeError

_TYPES = {
    "counter": MetricType.COUNTER,
    "gauge": MetricType.GAUGE,
    "histogram": MetricType.HISTOGRAM,
    "gaugehistogram": MetricType.GAUGEHISTOGRAM,
    "summary": MetricType.SUMMARY,
    "info": MetricType.INFO,
    "stateset": MetricType.STATESET,
}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}


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
            mtype = _TYPES.get(family.type, MetricType.UNKNOWN)
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


class _Snapshot(Collector):
    """Feeds fixed families to prometheus-client's writer (which escapes and formats values)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(
    points: Iterable[tuple[Labels, float, int | None]],
    metadata: dict[str, FamilyMetadata] | None = None,
) -> str:
    """Text format for ``(labels, value, timestamp_ms)`` points, grouped by metric name."""
    families: dict[str, Metric] = {}
    meta = metadata or {}
    for labels, value, ts in points:
        name = next((v for k, v in labels if k == "__name__"), "")
        family = families.get(name)
        if family is None:
            info = meta.get(name)
            mtype = _TYPE_NAMES.get(info.type, "untyped") if info else "untyped"
            if mtype not in ("gauge", "counter", "untyped", "info", "stateset"):
                mtype = "untyped"  # histogram/summary parts are rendered sample by sample
            family = families[name] = Metric(name, info.help if info else "", mtype)
            family.type = mtype
        family.add_sample(
            name,
            {k: v for k, v in labels if k != "__name__"},
            value,
            None if ts is None else ts / 1000.0,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(list(families.values())))
    return generate_latest(registry).decode("utf-8")
