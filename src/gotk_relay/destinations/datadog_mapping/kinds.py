"""What a series is in Datadog's terms (``Kind``): a gauge, a counter, or dropped.

Types
    From metadata when the relay has seen some: v2 per-series metadata, else the v1 family
    metadata cached by :class:`TypeCache` (exact family, or the family a ``_total``/``_bucket``/
    ``_sum``/``_count``/``_created`` part belongs to); else name suffixes: ``_total``,
    ``_count``, ``_sum``, ``_bucket`` are counters, everything else is a gauge; ``_created``
    is dropped when metadata says it is a counter's creation time (not a value to chart).
    Classic histogram and summary parts (``_bucket``/``_sum``/``_count``) are counters, summary
    quantiles gauges; gauge-histogram parts are gauges.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Final

from ...model import FamilyMetadata, MetricType


class Kind(Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    DROP = "drop"


# Which name suffixes a family of each type owns (OpenMetrics part names).
_PARTS: Final[dict[MetricType, tuple[str, ...]]] = {
    MetricType.COUNTER: ("_total", "_created"),
    MetricType.HISTOGRAM: ("_bucket", "_sum", "_count", "_created"),
    MetricType.SUMMARY: ("_sum", "_count", "_created"),
    MetricType.GAUGEHISTOGRAM: ("_bucket", "_gcount", "_gsum"),
}
_ALL_PARTS: Final = ("_total", "_created", "_bucket", "_sum", "_count", "_gcount", "_gsum")
_COUNTER_SUFFIXES: Final = ("_total", "_count", "_sum", "_bucket")


def _suffix(name: str) -> str:
    for suffix in _ALL_PARTS:
        if name.endswith(suffix):
            return suffix
    return ""


def kind_for_type(mtype: MetricType, name: str) -> Kind | None:
    """What a series named ``name`` whose metadata says ``mtype`` is; None for UNKNOWN."""
    suffix = _suffix(name)
    if mtype is MetricType.COUNTER:
        return Kind.DROP if suffix == "_created" else Kind.COUNTER
    if mtype in (MetricType.HISTOGRAM, MetricType.SUMMARY):
        if suffix == "_created":
            return Kind.DROP
        counted = (
            ("_bucket", "_sum", "_count") if mtype is MetricType.HISTOGRAM else ("_sum", "_count")
        )
        return Kind.COUNTER if suffix in counted else Kind.GAUGE  # summary quantiles: gauges
    if mtype is MetricType.UNKNOWN:
        return None
    return Kind.GAUGE  # gauge, gauge histogram (all parts), info, stateset


def kind_by_suffix(name: str) -> Kind:
    """The fallback without metadata (the reference's suffix rules).

    ``_created`` is dropped only when metadata says the series is a counter's or histogram's
    creation time: by name alone it is as often a plain gauge (kube-state-metrics'
    ``kube_pod_created``), and dropping a gauge loses data.
    """
    return Kind.COUNTER if name.endswith(_COUNTER_SUFFIXES) else Kind.GAUGE


def resolve_kind(
    name: str, series_type: MetricType | None, families: Mapping[str, MetricType]
) -> Kind:
    """A series' kind: its own (v2) metadata, else its family's (v1), else its name suffix."""
    if series_type is not None:
        kind = kind_for_type(series_type, name)
        if kind is not None:
            return kind
    exact = families.get(name)
    if exact is not None:
        kind = kind_for_type(exact, name)
        if kind is not None:
            return kind
    suffix = _suffix(name)
    if suffix:
        family = families.get(name[: -len(suffix)])
        if family is not None and suffix in _PARTS.get(family, ()):
            kind = kind_for_type(family, name)
            if kind is not None:
                return kind
    return kind_by_suffix(name)


class TypeCache:
    """Metric family → type, from the v1 metadata the destination has seen.

    Prometheus sends v1 metadata apart from the samples (every minute, by default), and the
    relay queues it with shard 0 only, so a series can arrive before its family's metadata:
    until then its type comes from its name suffix. Bounded: beyond ``max_families`` the oldest
    entry goes.
    """

    def __init__(self, max_families: int = 100_000) -> None:
        self.max_families = max_families
        self._types: OrderedDict[str, MetricType] = OrderedDict()

    def observe(self, metadata: Iterable[FamilyMetadata]) -> None:
        for family in metadata:
            if family.type is MetricType.UNKNOWN:
                continue
            self._types.pop(family.family, None)
            self._types[family.family] = family.type
            if len(self._types) > self.max_families:
                self._types.popitem(last=False)

    @property
    def types(self) -> Mapping[str, MetricType]:
        return self._types
