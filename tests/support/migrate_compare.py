"""Compare what a query returned on one Flux shape with what its migration returned on another.

``gotk-relay migrate`` promises that a migrated query returns, at every instant, what the original
returned on the other shape of the same objects, "after the documented label mapping". This
module is that mapping, applied to query results (pure; the e2e test feeds it Prometheus' JSON):

* ``__name__``: the four Flux metric names are dropped (each shape's own; a migrated query that
  aggregates per object has none); any other name stays;
* the kind: legacy ``kind``, kube-state-metrics ``customresource_kind``, operator ``kind`` → ``kind``;
* the state labels are dropped: legacy ``status`` and ``type`` name one of an object's series,
  info ``ready`` and ``suspended`` are the object's state; a migrated filter selects the same
  objects, so what is compared is which objects (groups) a result holds, and their values;
* dropped: the info shapes' ``customresource_group``, ``customresource_version`` and their
  info-only labels;
* ``namespace`` names whatever exposed the series, which differs by pipeline (the relay writes
  legacy series with ``controller_namespace``; kube-state-metrics' series keep its own): a
  per-scenario value map says which values are the same (a value mapped to None is dropped).

Every other label is compared as it is, and values bit for bit (any NaN equals any NaN). Both
sides are compared as multisets: a key one side holds twice (an object that was False and then
Unknown within a ``max_over_time`` window has two series on both shapes) must be held twice, with
the same values, by the other.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gotk_relay.migrate.shapes import (
    FLUX_METRICS,
    KSM_INFO,
    KSM_ONLY_LABELS,
    OPERATOR_INFO,
    OPERATOR_ONLY_LABELS,
)

NEUTRAL_NAME = "flux"
INFO_METRICS = frozenset({KSM_INFO, OPERATOR_INFO})
RENAMED = {"customresource_kind": "kind"}
STATE_LABELS = frozenset({"status", "type", "ready", "suspended"})
DROPPED = (
    STATE_LABELS
    | frozenset({"customresource_group", "customresource_version"})
    | KSM_ONLY_LABELS
    | OPERATOR_ONLY_LABELS
)

NamespaceMap = Mapping[str, str | None]
"""``namespace`` label value → the value both sides compare as (None: the label is dropped)."""

LabelKey = tuple[tuple[str, str], ...]
PointKey = tuple[LabelKey, float | None]
"""A result point's identity: neutral labels and, in a range result, the step's timestamp."""


class MappingConflict(ValueError):
    """Two labels of one series map to the same neutral name (``kind`` and ``customresource_kind``)."""


def neutral_labels(labels: Mapping[str, str], namespaces: NamespaceMap | None = None) -> LabelKey:
    """``labels`` as the shape-neutral key both sides of a comparison are reduced to."""
    namespaces = namespaces or {}
    out: dict[str, str] = {}
    for name, value in labels.items():
        if name in DROPPED:
            continue
        if name == "__name__" and value in FLUX_METRICS:
            continue
        if name == "namespace" and value in namespaces:
            mapped = namespaces[value]
            if mapped is None:
                continue
            value = mapped
        target = RENAMED.get(name, name)
        if target in out:
            raise MappingConflict(f"{format_labels(labels)}: two labels map to {target!r}")
        out[target] = value
    return tuple(sorted(out.items()))


def same_value(a: float, b: float) -> bool:
    """Bit-for-bit equality, except that every NaN equals every NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack("<d", a) == struct.pack("<d", b)


def format_labels(labels: Mapping[str, str] | LabelKey) -> str:
    pairs = dict(labels)
    name = pairs.pop("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


def format_point(key: PointKey, value: float) -> str:
    labels, at = key
    stamp = "" if at is None else f" @{at:.3f}"
    return f"{format_labels(labels)}{stamp} = {value!r}"


@dataclass(frozen=True)
class Result:
    """One query's answer as points: ``(labels, timestamp or None, value)``.

    ``kind`` is Prometheus' ``resultType`` (``vector``, ``matrix``, ``scalar``, ``string``) or
    ``values`` for a template query's set of label values (their points carry ``{"": value}``).
    """

    kind: str
    points: tuple[tuple[Mapping[str, str], float | None, float], ...]


def from_prometheus(data: Mapping[str, Any]) -> Result:
    """A Prometheus ``/api/v1/query`` or ``/api/v1/query_range`` ``data`` object as a Result.

    Instant vectors drop the evaluation timestamp (all points share it); range results keep each
    step's. Values arrive as Go's shortest round-trip strings, so ``float()`` is exact.
    """
    kind = str(data["resultType"])
    result = data["result"]
    points: list[tuple[Mapping[str, str], float | None, float]] = []
    if kind == "vector":
        points = [(item["metric"], None, float(item["value"][1])) for item in result]
    elif kind == "matrix":
        for item in result:
            points.extend((item["metric"], float(t), float(v)) for t, v in item["values"])
    elif kind == "scalar":
        points = [({}, None, float(result[1]))]
    else:  # a string: compared as its text under an empty label set
        points = [({"": str(result[1])}, None, 0.0)]
    return Result(kind, tuple(points))


def label_value_result(values: Iterable[str], label: str) -> Result:
    """A template query's label values (``label`` is the label they were read from)."""
    return Result("values", tuple(({label: v}, None, 1.0) for v in sorted(set(values))))


def neutral(
    result: Result, namespaces: NamespaceMap | None = None
) -> tuple[dict[PointKey, list[float]], list[str]]:
    """The result's points by neutral key (a key may hold several), and the conflicts found."""
    points: dict[PointKey, list[float]] = {}
    problems: list[str] = []
    for labels, at, value in result.points:
        if result.kind == "values":
            ((label, text),) = labels.items()
            mapped = _template_value(label, text, namespaces or {})
            if mapped is None:
                continue
            key: PointKey = ((("", mapped),), None)
            points[key] = [value]  # a set: the same value twice is the same value
            continue
        try:
            key = (neutral_labels(labels, namespaces), at)
        except MappingConflict as exc:
            problems.append(f"conflict: {exc}")
            continue
        points.setdefault(key, []).append(value)
    return points, problems


def _template_value(label: str, value: str, namespaces: NamespaceMap) -> str | None:
    if label == "namespace" and value in namespaces:
        return namespaces[value]
    if label == "__name__" and value in FLUX_METRICS:
        return NEUTRAL_NAME  # ``label_values(__name__)``: each shape's own names, one entry
    return value


@dataclass(frozen=True)
class Diff:
    """What only the original and only the migrated query returned (after mapping)."""

    only_original: tuple[str, ...] = ()
    only_migrated: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.only_original or self.only_migrated)


def compare(original: Result, migrated: Result, namespaces: NamespaceMap | None = None) -> Diff:
    """Differences between two results after the label mapping; empty (falsy) when equal."""
    if original.kind != migrated.kind:
        return Diff((f"<{original.kind}>",), (f"<{migrated.kind}>",))
    left, left_problems = neutral(original, namespaces)
    right, right_problems = neutral(migrated, namespaces)
    only_left = list(left_problems)
    only_right = list(right_problems)
    for key in left.keys() | right.keys():
        a, b = _unmatched(left.get(key, []), right.get(key, []))
        only_left.extend(format_point(key, value) for value in a)
        only_right.extend(format_point(key, value) for value in b)
    return Diff(tuple(sorted(only_left)), tuple(sorted(only_right)))


def _unmatched(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    """The values of ``a`` and ``b`` left once each is paired with an equal one of the other."""
    rest = list(b)
    left: list[float] = []
    for value in a:
        for i, other in enumerate(rest):
            if same_value(value, other):
                del rest[i]
                break
        else:
            left.append(value)
    return left, rest


# Grafana's variables, as they appear in dashboard queries. Only names starting with a letter or
# an underscore: ``$1`` and ``${1}`` are label_replace's capture groups, not variables.
_INTERVAL_MACROS = re.compile(
    r"\$(?:\{__(?:rate_interval|interval|range)\}|__(?:rate_interval|interval|range)\b)"
)
_VARIABLE = re.compile(r"\$\{[A-Za-z_][^}]*\}|\[\[[A-Za-z_][^\]]*\]\]|\$[A-Za-z_]\w*")


def substitute_grafana(text: str) -> str:
    """``text`` with Grafana's variables replaced as the e2e test evaluates it: interval macros
    (``$__interval``, ``$__rate_interval``, ``$__range``) by ``5m``, every other variable
    (``$namespace``, ``${namespace}``, ``[[namespace]]``) by ``.*`` (they sit in regex matchers:
    the dashboards' "All")."""
    return _VARIABLE.sub(".*", _INTERVAL_MACROS.sub("5m", text))
