"""Prometheus series (or rows) → Datadog series: ``map_batch`` and its loop, ``map_items``, whose
rows part ``datadog_rows`` in ``_rows.c`` compiles (``rows.LOOPS`` chooses).

Points
    Timestamps are whole seconds (milliseconds floored). Datadog stores neither Prometheus'
    stale marker nor NaN/±Inf (JSON has no such numbers), so those samples are skipped and
    counted, as is a counter's increase past the largest double (``not_finite``); so are points
    more than an hour old or ten minutes ahead, which the intake refuses.
Native histograms
    Skipped and counted: the v2 series API has no type for them (``distribution`` points need
    the separate sketches intake, not this JSON API).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from math import inf
from typing import Final, NamedTuple

from ...model import Batch, MetricType, Series, is_stale
from ..rows import LOOPS, Item, Loops
from ..rows import labels as row_labels
from .counters import CounterMark, CounterStore
from .flux import FLUX_KEY, flux_name
from .intake import (
    COUNTER_FIRST,
    CREATED,
    INF_BUCKET,
    INVALID_NAME,
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    NATIVE_HISTOGRAM,
    NOT_FINITE,
    OUT_OF_ORDER,
    STALE,
    TOO_NEW,
    TOO_OLD,
    TYPE_COUNT,
    TYPE_GAUGE,
)
from .kinds import Kind, TypeCache, resolve_kind
from .names import normalize_metric_name
from .series import (
    OMITTED,
    Mapped,
    MappedRows,
    MappedSeries,
    MappingOptions,
    NameCache,
    Names,
    Row,
    SeriesMemo,
    series_info,
)


def map_batch(
    batch: Batch,
    options: MappingOptions,
    types: TypeCache,
    counters: CounterStore,
    now_ms: int,
    pending: dict[bytes, CounterMark] | None = None,
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


# ``datadog_rows`` in ``_rows.c`` (``Loops.compiled``): ``map_items``' loop over rows, compiled;
# it counts skipped samples by these reasons, in this order.
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
) -> tuple[str | None, Kind]:
    """A name's Datadog name and kind, resolved once per conversion (``names``); the name is
    None for a series not sent (``OMITTED``: the compiled loop leaves it to Python). A name
    ``series_info`` marked with ``FLUX_KEY`` gets the Flux integration's (``flux.py``)."""
    resolved = names.get((name, declared))
    if resolved is None:  # a batch holds many series of few names
        found = flux_name(name[len(FLUX_KEY) :]) if name.startswith(FLUX_KEY) else None
        if name == OMITTED:
            resolved = (None, Kind.DROP)
        elif found is not None:
            resolved = (found.metric, found.kind)
        else:
            resolved = (normalize_metric_name(name), resolve_kind(name, declared, families))
        names[(name, declared)] = resolved
    return resolved


class Emit(NamedTuple):
    """Where ``map_items`` writes a step's series as it maps them, in arrival order, with the
    compiled loops: a step of label sets all memoized, no two alike, whose rows are so final
    once mapped (``datadog_rows`` fused; docs/performance.md, "Rendered as mapped"). ``data``
    and ``ends`` are a ``datadog.Rendered``'s, ``kept`` what ``datadog.render_all`` keeps of
    each, and ``row`` renders a row mapped in Python (``render_all`` of it)."""

    heads: dict[tuple[str, int], bytes]
    scalar: Callable[[object], bytes]
    data: bytearray
    ends: bytearray
    kept: list[Row | None]
    row: Callable[[Row], None]


def map_items(
    items: Iterable[Item],
    options: MappingOptions,
    types: TypeCache,
    counters: CounterStore,
    now_ms: int,
    pending: dict[bytes, CounterMark] | None,
    names: Names | None,
    memo: SeriesMemo | None = None,
    loops: Loops = LOOPS,
    emit: Emit | None = None,
) -> MappedRows:
    """``map_batch``'s mapping of series given as ``Series`` or as ``rows`` rows without a rest
    (their label set looked up in ``memo`` by its encoded bytes, learnt on a miss): one loop
    for both, so the two cannot differ. The caller bounds ``memo``. With ``emit``, the rows of
    a step it can take are rendered there, not returned (see ``Emit``); the series are the same
    either way, in the same order."""
    skipped: Counter[str] = Counter()
    out: dict[bytes, Row] = {}  # by counter_key: one row per label set
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
    native = loops.compiled
    key_index = memo.index
    if native is not None and key_index is None:
        key_index = memo.index = native.key_index()
    params = (oldest, newest, counters_as_count, drop, counter, TYPE_COUNT, TYPE_GAUGE)
    counts = [0] * len(_NATIVE_REASONS)
    updates: dict[bytes, CounterMark] = {}
    fused = None
    # A step of known, distinct label sets: their infos, found once (None otherwise).
    known = native.distinct_rows(todo, key_index) if emit is not None and native else None
    if emit is not None and known is not None:
        fused = (emit.heads, emit.scalar, emit.data, emit.ends, emit.kept, updates, known)
    index, size = 0, len(todo)
    while index < size:
        if native is not None:  # the loop below, compiled, for as many rows as it can map
            index = native.datadog_rows(
                todo, index, names, by_bytes, pending, marks, out, counts, params, key_index, fused
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
                learns = memo.learns(len(memo))  # else mapped afresh each time it comes
                if info is None:
                    info = series_info(labels, options)
                    if learns:
                        by_labels[info[0]] = info
                if learns:
                    by_bytes[key_bytes] = info
                    if native is not None:
                        native.key_index_add(key_index, key_bytes, info)
            if not samples:
                continue
            key, name, declared = info[6], info[1], None
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
                if memo.learns(len(memo)):
                    by_labels[info[0]] = info
            key, name = info[6], info[1]
            declared = item.metadata.type if item.metadata is not None else None
            metric, kind = _resolved(names, name, declared, families)
            dropped = kind is drop
            is_count = kind is counter and counters_as_count
        if metric is None:  # a series the Flux integration does not send
            skipped[INF_BUCKET] += len(samples)
            continue
        if not metric:
            skipped[INVALID_NAME] += len(samples)
            continue
        if dropped:
            skipped[CREATED] += len(samples)
            continue
        mapped = out.get(key)
        if mapped is None:
            kind_number = TYPE_COUNT if is_count else TYPE_GAUGE
            # A gauge's marks stay empty: a shared tuple, not a list per series.
            marks_of: list[CounterMark] | tuple[()] = [] if is_count else ()
            mapped = [key, metric, kind_number, info[2], info[3], [], marks_of, None, 0, info]
            out[key] = mapped
        points: list[tuple[int, float]] = mapped[5]
        for value, ts in samples:
            if value - value != 0.0:  # NaN or ±Inf (one test for the common, finite, case)
                skipped[STALE if is_stale(value) else NOT_FINITE] += 1
                continue
            if ts > newest:  # a clock ahead: must not become a counter's last value either
                skipped[TOO_NEW] += 1
                continue
            if is_count:
                # monotonic_count: a first sample sends nothing, one not newer is ignored, a
                # lower one is a reset (its value is the increase); ``marks``: (ts, value, seen)
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
                increase = value - last[1] if value >= last[1] else value
                # An increase past the largest double (from -1.7e308 to 1.7e308) is inf, which
                # JSON cannot hold (the intake refuses the request): not sent, counted as a
                # non-finite sample, but an observation all the same, as TOO_OLD's.
                if increase == inf:
                    skipped[NOT_FINITE] += 1
                    continue
                if not points:
                    mapped[8] = max(1, round((ts - last[0]) / 1000))
                points.append((ts // 1000, increase))
                mapped[6].append((ts, value))
                continue
            if ts < oldest:
                skipped[TOO_OLD] += 1
                continue
            points.append((ts // 1000, value))
        if fused is not None and emit is not None:  # final: no other row of its label set
            del out[key]
            if points:
                emit.row(mapped)
            elif mapped[7] is not None:
                updates[key] = mapped[7]
    for reason, count in zip(_NATIVE_REASONS, counts, strict=True):
        if count:
            skipped[reason] += count
    rows: list[Row] = []
    for mapped in out.values():
        if mapped[5]:
            rows.append(mapped)
        elif mapped[7] is not None:
            updates[mapped[0]] = mapped[7]
    return MappedRows(rows, updates, skipped)
