"""Prometheus series → Datadog ``/api/v2/series`` items, as pure functions and small state holders.

Kept apart from the HTTP client so every rule is a table row in a unit test. The rules follow
Datadog's documented intake (``shared/reference/vendors.md``, Datadog section); each module's
docstring gives the rules of its part.

Modules, in the order they build on each other: ``intake`` (what the intake takes, and why a
sample is not sent), ``names`` (names, tags, host), ``kinds`` (gauge, counter or dropped),
``counters`` (counter state between requests), ``flux`` (``flux_integration``: the Flux
families named and tagged as Datadog's Flux check does), ``series`` (a mapped batch, options,
memoized label sets), ``mapper`` (``map_batch``, ``map_items``).
"""

from __future__ import annotations

from .counters import CounterMark, CounterStore, counter_key
from .flux import FLUX_KEY, FluxName, flux_applies, flux_labels, flux_name
from .intake import (
    COUNTER_FIRST,
    CREATED,
    INF_BUCKET,
    INVALID_NAME,
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    MAX_NAME_LENGTH,
    MAX_TAG_LENGTH,
    NATIVE_HISTOGRAM,
    NOT_FINITE,
    OUT_OF_ORDER,
    STALE,
    TOO_NEW,
    TOO_OLD,
    TYPE_COUNT,
    TYPE_GAUGE,
    TYPE_RATE,
    TYPE_UNSPECIFIED,
)
from .kinds import Kind, TypeCache, kind_by_suffix, kind_for_type, resolve_kind
from .mapper import Emit, map_batch, map_items
from .names import normalize_metric_name, normalize_tag, series_tags
from .series import (
    LabelKey,
    Mapped,
    MappedRows,
    MappedSeries,
    MappingOptions,
    NameCache,
    Names,
    Row,
    SeriesInfo,
    SeriesMemo,
    series_info,
)

__all__ = [
    "COUNTER_FIRST",
    "CREATED",
    "FLUX_KEY",
    "INF_BUCKET",
    "INVALID_NAME",
    "MAX_AGE_MS",
    "MAX_AHEAD_MS",
    "MAX_NAME_LENGTH",
    "MAX_TAG_LENGTH",
    "NATIVE_HISTOGRAM",
    "NOT_FINITE",
    "OUT_OF_ORDER",
    "STALE",
    "TOO_NEW",
    "TOO_OLD",
    "TYPE_COUNT",
    "TYPE_GAUGE",
    "TYPE_RATE",
    "TYPE_UNSPECIFIED",
    "CounterMark",
    "CounterStore",
    "Emit",
    "FluxName",
    "Kind",
    "LabelKey",
    "Mapped",
    "MappedRows",
    "MappedSeries",
    "MappingOptions",
    "NameCache",
    "Names",
    "Row",
    "SeriesInfo",
    "SeriesMemo",
    "TypeCache",
    "counter_key",
    "flux_applies",
    "flux_labels",
    "flux_name",
    "kind_by_suffix",
    "kind_for_type",
    "map_batch",
    "map_items",
    "normalize_metric_name",
    "normalize_tag",
    "resolve_kind",
    "series_info",
    "series_tags",
]
