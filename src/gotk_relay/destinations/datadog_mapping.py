"""Prometheus series → Datadog ``/api/v2/series`` items, as pure functions and small state holders.

Kept apart from the HTTP client so every rule is a table row in a unit test. The rules follow
Datadog's documented intake (``shared/reference/vendors.md``, Datadog section):

Names
    A metric name may hold ASCII letters, digits, ``_`` and ``.`` and must start with a letter;
    anything else (Prometheus' ``:`` of recording rules included) becomes ``_``, leading
    characters that are not letters are removed, and the result is cut to 200 characters.
    Nothing is lowercased or collapsed: metric names are case-sensitive in Datadog and an
    unchanged ``http_requests_total`` is what users search for.
Tags
    Each label but ``__name__`` (and the ``host_label``) becomes ``name:value``, normalised the way
    Datadog itself would store it, so what the relay sends is what the UI shows: lowercased,
    letters (Unicode ones too, as Datadog allows), digits and ``_ - : . /`` kept, every other
    character ``_``, leading non-letters removed (a tag starts with a letter), cut to 200
    characters, trailing ``:`` removed (a tag cannot end with one). So ``kind="HelmRelease"``
    arrives as ``kind:helmrelease`` and ``le="+Inf"`` as ``le:_inf``. The key is what precedes
    the first ``:``; a value may contain more (``instance:10.0.0.1:8080``).
Host
    The ``host_label``'s value becomes the series' ``resources: [{"type": "host", ...}]`` and
    is not also a tag, as the Datadog Agent reports hosts.
Points
    Timestamps are whole seconds (milliseconds floored). Datadog stores neither Prometheus'
    stale marker nor NaN/±Inf (JSON has no such numbers), so those samples are skipped and
    counted; so are points more than an hour old or ten minutes ahead, which the intake refuses.
Types
    From metadata when the relay has seen some: v2 per-series metadata, else the v1 family
    metadata cached by :class:`TypeCache` (exact family, or the family a ``_total``/``_bucket``/
    ``_sum``/``_count``/``_created`` part belongs to); else name suffixes: ``_total``,
    ``_count``, ``_sum``, ``_bucket`` are counters, everything else is a gauge; ``_created``
    is dropped when metadata says it is a counter's creation time (not a value to chart).
    Classic histogram and summary parts (``_bucket``/``_sum``/``_count``) are counters, summary
    quantiles gauges; gauge-histogram parts are gauges.
Counters
    With ``counters: count`` a counter is sent as Datadog's ``count`` (type 1) with the
    semantics of the Agent's ``monotonic_count``: the increase since the previous sample of the
    same series (labels). The first sample of a series only records the value (nothing to
    subtract from); a value lower than the previous one is a reset, so the increase is the value
    itself; a sample not newer than the last one seen is ignored (a resend, or out of order).
    With ``counters: gauge`` the cumulative value is sent as a gauge.
Native histograms
    Skipped and counted: the v2 series API has no type for them (``distribution`` points need
    the separate sketches intake, not this JSON API).
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from sys import intern
from typing import Any, Final

from ..model import Batch, FamilyMetadata, Labels, MetricType, Series, is_stale
from . import rows as _rows
from .rows import Item
from .rows import labels as row_labels

# Datadog's MetricIntakeType numbers.
TYPE_UNSPECIFIED: Final = 0
TYPE_COUNT: Final = 1
TYPE_RATE: Final = 2
TYPE_GAUGE: Final = 3

MAX_NAME_LENGTH: Final = 200
MAX_TAG_LENGTH: Final = 200
MAX_AGE_MS: Final = 3600 * 1000  # the intake refuses points older than an hour
MAX_AHEAD_MS: Final = 600 * 1000  # ... or more than ten minutes in the future

# Reasons a sample is not sent, as counted in ``Mapped.skipped`` (and the client's ``skipped``).
STALE: Final = "stale"
NOT_FINITE: Final = "not_finite"
TOO_OLD: Final = "too_old"
TOO_NEW: Final = "too_new"
NATIVE_HISTOGRAM: Final = "native_histogram"
CREATED: Final = "created"
INVALID_NAME: Final = "invalid_name"
COUNTER_FIRST: Final = "counter_first"  # first sample of a counter: no delta yet
OUT_OF_ORDER: Final = "out_of_order"  # counter sample not newer than the last one seen

_NAME_FAST = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,199}")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")
_TAG_FAST = re.compile(r"[a-z][a-z0-9_\-:./]{0,199}")
_TAG_BAD = re.compile(r"[^\w\-:./]")  # \w: Unicode letters and digits, and _


class Kind(Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    DROP = "drop"


def normalize_metric_name(name: str) -> str:
    """Datadog's metric-name rules (see the module docstring); "" when nothing usable is left."""
    if _NAME_FAST.fullmatch(name):
        return name
    out = _NAME_BAD.sub("_", name)
    start = 0
    while start < len(out) and not ("a" <= out[start].lower() <= "z"):
        start += 1
    return out[start : start + MAX_NAME_LENGTH]


def normalize_tag(tag: str) -> str:
    """Datadog's tag rules (see the module docstring); "" when nothing usable is left."""
    lowered = tag.lower()
    if _TAG_FAST.fullmatch(lowered) and not lowered.endswith(":"):
        return lowered  # the common case: nothing to replace, cut or strip
    out = _TAG_BAD.sub("_", lowered)
    start = 0
    while start < len(out) and not out[start].isalpha():
        start += 1
    return out[start : start + MAX_TAG_LENGTH].rstrip(":")


def series_tags(
    labels: Labels, host_label: str | None, static_tags: Iterable[str] = ()
) -> tuple[list[str], str]:
    """The tags of a series (label order, then ``static_tags``, duplicates removed) and its host
    ("" when there is none)."""
    tags: list[str] = []
    seen: set[str] = set()
    host = ""
    for key, value in labels:
        if key == "__name__":
            continue
        if host_label is not None and key == host_label:
            host = value
            continue
        tag = normalize_tag(f"{key}:{value}")
        if tag and tag not in seen:
            seen.add(tag)
            tags.append(tag)
    for tag in static_tags:
        if tag and tag not in seen:
            seen.add(tag)
            tags.append(tag)
    return tags, host


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


CounterMark = tuple[int, float]  # (timestamp ms, cumulative value) of a counter's last sample


class CounterStore:
    """Last accepted (timestamp, value) per counter series, bounded in time and size.

    Only values Datadog accepted are committed (by the client, after a 202), so a retried
    request never computes its deltas from its own, unacknowledged, samples. A series not
    committed for ``ttl`` seconds, or the least recently committed beyond ``max_series``, is
    forgotten: its next sample is a first observation again (one increase is not sent).
    """

    def __init__(self, max_series: int = 500_000, ttl: float = 3600.0) -> None:
        self.max_series = max_series
        self.ttl = ttl
        self._marks: OrderedDict[Labels, tuple[int, float, float]] = OrderedDict()

    def get(self, key: Labels) -> CounterMark | None:
        found = self._marks.get(key)
        return None if found is None else (found[0], found[1])

    def commit(self, key: Labels, mark: CounterMark, now: float) -> None:
        current = self._marks.pop(key, None)
        if current is not None and current[0] > mark[0]:
            mark = (current[0], current[1])  # never go back in time
        self._marks[key] = (mark[0], mark[1], now)
        while len(self._marks) > self.max_series:
            self._marks.popitem(last=False)

    def commit_all(self, marks: Iterable[tuple[Labels, CounterMark]], now: float) -> None:
        """``commit`` of each (key, mark), in order: one loop for a request's counters."""
        store = self._marks
        pop = store.pop
        for key, mark in marks:
            current = pop(key, None)
            if current is not None and current[0] > mark[0]:
                store[key] = (current[0], current[1], now)  # never go back in time
            else:
                store[key] = (mark[0], mark[1], now)
        while len(store) > self.max_series:
            store.popitem(last=False)

    def expire(self, now: float) -> int:
        """Forget series not committed for ``ttl`` seconds; how many were forgotten."""
        gone = 0
        while self._marks:
            key, (_, _, seen) = next(iter(self._marks.items()))
            if seen >= now - self.ttl:
                break
            del self._marks[key]
            gone += 1
        return gone

    def __len__(self) -> int:
        return len(self._marks)


def counter_step(last: CounterMark | None, ts: int, value: float) -> tuple[float | None, str]:
    """One counter sample against the series' last one: (delta to send or None, why not).

    ``monotonic_count``: first sample → nothing; not newer → ignored; lower → reset, the value
    itself is the increase; else the difference.
    """
    if last is None:
        return None, COUNTER_FIRST
    if ts <= last[0]:
        return None, OUT_OF_ORDER
    if value >= last[1]:
        return value - last[1], ""
    return value, ""


@dataclass
class MappedSeries:
    """One Datadog series of one Prometheus series, with what committing it means.

    ``marks`` hold, for counters, the counter state after each point; ``final`` the state after
    the series' last sample in the batch (which may be later than its last point, e.g. a first
    observation), committed when the request carrying this series is accepted.
    """

    key: Labels
    metric: str
    type: int
    tags: Sequence[str]
    host: str
    points: list[tuple[int, float]] = field(default_factory=list)
    marks: Sequence[CounterMark] = field(default_factory=list)
    final: CounterMark | None = None
    interval: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "type": self.type,
            "points": [{"timestamp": ts, "value": value} for ts, value in self.points],
        }
        if self.tags:
            out["tags"] = list(self.tags)
        if self.host:
            out["resources"] = [{"name": self.host, "type": "host"}]
        if self.interval:
            out["interval"] = self.interval
        return out

    def row(self) -> Row:
        """This series as a ``Row`` (its label set's info not kept)."""
        return [
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points,
            self.marks,
            self.final,
            self.interval,
            None,
        ]

    def split(self) -> tuple[MappedSeries, MappedSeries]:
        """Two series holding the first and second half of the points (for a 413)."""
        mid = len(self.points) // 2
        first = MappedSeries(
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points[:mid],
            self.marks[:mid],
            self.marks[mid - 1] if self.marks else None,
            self.interval,
        )
        second = MappedSeries(
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points[mid:],
            self.marks[mid:],
            self.final,
            self.interval,
        )
        return first, second


@dataclass
class Mapped:
    """A batch in Datadog's terms: the series to send, counter state that no point carries
    (series whose samples were all first observations, too old, ...), and the skipped samples
    by reason."""

    series: list[MappedSeries]
    updates: dict[Labels, CounterMark]
    skipped: Counter[str]


@dataclass(frozen=True)
class MappingOptions:
    host_label: str | None = None
    counters_as_count: bool = True
    static_tags: tuple[str, ...] = ()


# A mapped series as a list, in ``MappedSeries``' field order (key, metric, type, tags, host,
# points, marks, final, interval), then its label set's ``SeriesInfo`` (None when not
# memoized): the destination's hot loop makes one per series, and a list costs a fraction of a
# dataclass (a ``MappedSeries`` is made only where one is asked for).
Row = list[Any]
# [labels, name, tags, host, the tags' and host's JSON once rendered, (token, metric, kind,
# counted) as last resolved in the conversion of that ``NameCache`` token] of one label set.
SeriesInfo = list[Any]
Names = dict[tuple[str, MetricType | None], tuple[str, Kind]]


class NameCache(Names):
    """The ``names`` of one conversion, with a token by which the label sets' infos remember
    what they resolved to in it (a token, not the cache: an info must not keep it alive)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = object()


class LabelKey(tuple):  # type: ignore[type-arg]
    """A label set (equal to, and hashing as, the plain tuple) whose hash is computed once: a
    memoized series is looked up several times per sample (merging, counter state), and a
    tuple of ~10 pairs hashes its every string again each time."""

    def __init__(self, labels: Labels) -> None:
        self._hash = tuple.__hash__(self)

    def __hash__(self) -> int:
        return self._hash


def series_info(labels: Labels, options: MappingOptions) -> SeriesInfo:
    """What a label set maps to whatever its samples: memoized by the caller."""
    labels = LabelKey(labels)
    name = ""
    for key, value in labels:
        if key == "__name__":
            name = value
            break
    tags, host = series_tags(labels, options.host_label, options.static_tags)
    # A tuple of strings, which the collector stops walking (it walks every memo).
    return [labels, name, tuple([intern(tag) for tag in tags]), host, None, None]


class SeriesMemo:
    """The ``SeriesInfo`` of each label set seen, by its encoded bytes (a row's key) and by
    the label set itself: one info per label set, whatever bytes encoded it, so series of one
    label set merge by the info's identity. The owner bounds it (``clear``)."""

    def __init__(self) -> None:
        self.by_bytes: dict[bytes, SeriesInfo] = {}
        self.by_labels: dict[Labels, SeriesInfo] = {}

    def __len__(self) -> int:
        return len(self.by_labels)

    def clear(self) -> None:
        self.by_bytes.clear()
        self.by_labels.clear()


@dataclass
class MappedRows:
    """``Mapped`` with the series as ``Row`` lists."""

    rows: list[Row]
    updates: dict[Labels, CounterMark]
    skipped: Counter[str]


def map_batch(
    batch: Batch,
    options: MappingOptions,
    types: TypeCache,
    counters: CounterStore,
    now_ms: int,
    pending: dict[Labels, CounterMark] | None = None,
    names: Names | None = None,
) -> Mapped:
    """Map ``batch`` without changing ``counters`` (the caller commits after delivery).

    ``types`` learns the batch's own metadata first, so a batch that carries its families'
    types is typed by them. The same Prometheus series met twice (merged queue entries) is one
    Datadog series, its samples in arrival order. ``pending`` carries the counter state of
    earlier, not yet committed, batches of one conversion into this one (and is updated), so
    deltas stay exact across the batches a large one is cut into; ``names`` likewise carries
    the names and kinds already resolved (their types learnt before).
    """
    types.observe(batch.metadata)
    mapped = map_items(batch.series, options, types, counters, now_ms, pending, names)
    return Mapped([MappedSeries(*row[:9]) for row in mapped.rows], mapped.updates, mapped.skipped)


# ``datadog_rows`` in ``_rows.c``: ``map_items``' loop over rows, compiled (None: not built, or
# GOTK_RELAY_NO_EXTENSIONS set); it counts skipped samples by these reasons, in this order.
_native: Any = _rows._native
_NATIVE_REASONS: Final = (
    STALE,
    NOT_FINITE,
    TOO_NEW,
    OUT_OF_ORDER,
    TOO_OLD,
    COUNTER_FIRST,
    INVALID_NAME,
    CREATED,
)


def _resolved(
    names: Names, name: str, declared: MetricType | None, families: Mapping[str, MetricType]
) -> tuple[str, Kind]:
    """A name's Datadog name and kind, resolved once per conversion (``names``)."""
    resolved = names.get((name, declared))
    if resolved is None:  # a batch holds many series of few names
        resolved = names[(name, declared)] = (
            normalize_metric_name(name),
            resolve_kind(name, declared, families),
        )
    return resolved


def map_items(
    items: Iterable[Item],
    options: MappingOptions,
    types: TypeCache,
    counters: CounterStore,
    now_ms: int,
    pending: dict[Labels, CounterMark] | None,
    names: Names | None,
    memo: SeriesMemo | None = None,
) -> MappedRows:
    """``map_batch``'s mapping of series given as ``Series`` or as ``rows`` rows without a rest
    (their label set looked up in ``memo`` by its encoded bytes, learnt on a miss): one loop
    for both, so the two cannot differ. The caller bounds ``memo``."""
    skipped: Counter[str] = Counter()
    out: dict[int, Row] = {}  # by the id of the series' info: one per label set (SeriesMemo)
    if names is None:
        names = {}
    if pending is None:
        pending = {}  # counter state as of this batch, uncommitted
    if memo is None:
        memo = SeriesMemo()
    by_bytes, by_labels = memo.by_bytes, memo.by_labels
    oldest = now_ms - MAX_AGE_MS
    newest = now_ms + MAX_AHEAD_MS
    families = types.types
    counters_as_count = options.counters_as_count
    marks = counters._marks  # read only: CounterStore.get without a call per sample
    drop, counter = Kind.DROP, Kind.COUNTER
    token = names.token if isinstance(names, NameCache) else object()  # else: this call only
    todo = items if isinstance(items, list) else list(items)
    native = _native
    params = (oldest, newest, counters_as_count, drop, counter, TYPE_COUNT, TYPE_GAUGE)
    counts = [0] * len(_NATIVE_REASONS)
    index, size = 0, len(todo)
    while index < size:
        if native is not None:  # the loop below, compiled, for as many rows as it can map
            index = native.datadog_rows(
                todo, index, names, by_bytes, pending, marks, out, counts, params
            )
            if index >= size:
                break
        item = todo[index]  # a Series, or a row whose labels or name are new: mapped here
        index += 1
        if not isinstance(item, Series):  # a row: its labels memoized by their bytes
            key_bytes, samples, _ = item
            info = by_bytes.get(key_bytes)
            if info is None:
                labels = row_labels(key_bytes)
                info = by_labels.get(labels)
                if info is None:
                    info = series_info(labels, options)
                    by_labels[info[0]] = info
                by_bytes[key_bytes] = info
            if not samples:
                continue
            key, name, declared = info[0], info[1], None
            known = info[5]  # resolved already in this conversion (same ``names``)?
            if known is not None and known[0] is token:
                metric, dropped, is_count = known[1], known[2], known[3]
            else:
                metric, kind = _resolved(names, name, None, families)
                dropped = kind is drop
                is_count = kind is counter and counters_as_count
                # Plain values only: the collector stops walking it (it walks every memo).
                info[5] = (token, metric, dropped, is_count)
        else:
            if item.histograms:
                skipped[NATIVE_HISTOGRAM] += len(item.histograms)
            if not item.samples:
                continue
            samples = tuple([(sample.value, sample.timestamp) for sample in item.samples])
            info = by_labels.get(item.labels)
            if info is None:
                info = series_info(item.labels, options)
                by_labels[info[0]] = info
            key, name = info[0], info[1]
            declared = item.metadata.type if item.metadata is not None else None
            metric, kind = _resolved(names, name, declared, families)
            dropped = kind is drop
            is_count = kind is counter and counters_as_count
        if not metric:
            skipped[INVALID_NAME] += len(samples)
            continue
        if dropped:
            skipped[CREATED] += len(samples)
            continue
        mapped = out.get(id(info))
        if mapped is None:
            kind_number = TYPE_COUNT if is_count else TYPE_GAUGE
            # A gauge's marks stay empty: a shared tuple, not a list per series.
            marks_of: list[CounterMark] | tuple[()] = [] if is_count else ()
            mapped = [key, metric, kind_number, info[2], info[3], [], marks_of, None, 0, info]
            out[id(info)] = mapped
        points: list[tuple[int, float]] = mapped[5]
        for value, ts in samples:
            if value - value != 0.0:  # NaN or ±Inf (one test for the common, finite, case)
                skipped[STALE if is_stale(value) else NOT_FINITE] += 1
                continue
            if ts > newest:  # a clock ahead: must not become a counter's last value either
                skipped[TOO_NEW] += 1
                continue
            if is_count:
                # counter_step, inlined (the hot path); ``marks`` entries are (ts, value, seen)
                last = pending.get(key) or marks.get(key)
                if last is not None and ts <= last[0]:
                    skipped[OUT_OF_ORDER] += 1
                    continue
                pending[key] = mapped[7] = (ts, value)
                if ts < oldest:  # an observation all the same: the next delta starts here
                    skipped[TOO_OLD] += 1
                    continue
                if last is None:
                    skipped[COUNTER_FIRST] += 1
                    continue
                if not points:
                    mapped[8] = max(1, round((ts - last[0]) / 1000))
                points.append((ts // 1000, value - last[1] if value >= last[1] else value))
                mapped[6].append((ts, value))
                continue
            if ts < oldest:
                skipped[TOO_OLD] += 1
                continue
            points.append((ts // 1000, value))
    for reason, count in zip(_NATIVE_REASONS, counts, strict=True):
        if count:
            skipped[reason] += count
    rows: list[Row] = []
    updates: dict[Labels, CounterMark] = {}
    for mapped in out.values():
        if mapped[5]:
            rows.append(mapped)
        elif mapped[7] is not None:
            updates[mapped[0]] = mapped[7]
    return MappedRows(rows, updates, skipped)
