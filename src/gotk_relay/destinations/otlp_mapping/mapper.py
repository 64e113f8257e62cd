"""``Mapper``: what each series of a batch is (``resolve``, ``role``) and which builder maps it,
a batch one ``feed`` late so a ``_created`` series reaches its family; and ``to_otlp``, a batch
mapped at once. ``loops.compiled.otlp_rows`` (``_rows.c``) is ``gauge_row`` and ``counter_row``
compiled (``rows.LOOPS`` chooses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from ... import caches
from ...model import Batch, Exemplar, Labels, MetricType, Series, is_stale
from ..rows import LOOPS, Item, Loops
from ..rows import labels as row_labels
from .builder import Group
from .classic import Classic
from .labelsets import RowInfo
from .naming import (
    MAX_MS,
    PARTS,
    SUFFIXES,
    Kind,
    StreamKey,
    Temporality,
    family_of,
    shape_of,
    without,
)
from .native import Native
from .numbers import Numbers
from .state import CounterState, Mapped, MappingState, StreamState

# The target info metric: an info family "target" (OpenMetrics), or a gauge named so.
_TARGET_INFO: Final = frozenset({("target", "_info"), ("target_info", "")})
_CTX_LIMIT: Final = 100_000  # label sets whose resource/scope/attributes a mapping remembers
# Label sets a client remembers by their bytes (``RowInfo``, ~2-3 KiB each with their strings).
_ROWS_LIMIT: Final = 65_536
# Label sets per MappingState and resource_labels (caches.Saturating: full, it stops learning,
# and is emptied at most every 10 minutes); gotk_relay_cache_entries{cache="otlp_label_sets"}.
ROW_MEMOS: Final = caches.family("otlp_label_sets", _ROWS_LIMIT)


def _series_shape(series: Series) -> tuple[str, MetricType] | None:
    """The family shape a decoded series shows by its name and labels (None when its
    metadata types it, or its name tells nothing)."""
    if series.metadata is not None and series.metadata.type is not MetricType.UNKNOWN:
        return None
    return shape_of(series.name, {k for k, _ in series.labels})


# A series to map: a Series (samples None), or a row's info and its samples.
_Planned = tuple["Series | RowInfo", "Kind", str, "Sequence[tuple[float, int]] | None"]


class Checkpoint(NamedTuple):
    """A ``Mapper``'s state between two requests (``Mapper.checkpoint``)."""

    waiting: list[_Planned]
    waiting_points: int
    groups: dict[StreamKey, dict[int, Group]]
    exemplars: dict[StreamKey, list[Exemplar]]
    grouped: int
    updates: dict[StreamKey, StreamState]
    unmapped: int


class Mapper(Numbers, Classic, Native):
    """Maps batches into requests: ``to_otlp`` in steps, for what is too large to map at once.

    ``feed`` maps a batch into the request being built, ``take`` hands it over (with its stream
    updates) and starts the next, ``finish`` emits the classic histogram and summary points still
    waiting for parts. Between two ``take``s the caller commits the taken updates (or stops):
    ``prev`` reads them from the state. A ``_created`` series or a family's shape seen in an
    earlier batch of the same mapping still applies to later ones.
    """

    def __init__(
        self,
        state: MappingState,
        temporality: Temporality,
        resource_labels: Sequence[str],
        loops: Loops = LOOPS,
    ) -> None:
        super().__init__(state, temporality, resource_labels, loops.compiled)
        self.loops = loops
        self.waiting: list[_Planned] = []  # the last batch fed, not mapped yet
        self.waiting_points = 0  # its samples and histograms
        self.seen_shapes: dict[str, MetricType] = {}
        self._rows = state.rows.setdefault(self.resource_labels, {})
        self._row_keys = state.row_keys.setdefault(self.resource_labels, {})
        bound = state.row_bounds.get(self.resource_labels)
        if bound is None:
            bound = state.row_bounds[self.resource_labels] = ROW_MEMOS.saturating()
            bound.watch(self._rows.__len__)
        self._row_bound = bound
        self._kinds: dict[tuple[str, bool, bool], tuple[Kind, str]] = {}
        self._kinds_at = (-1, -1)
        self._shapes_version = 0

    def resolve(self, series: Series, name: str, shapes: Mapping[str, MetricType]) -> Kind:
        meta = series.metadata
        if meta is not None and meta.type is not MetricType.UNKNOWN:
            family, suffix = family_of(name, meta.type)
            return Kind(meta.type, family, suffix, meta.help, meta.unit, True)
        families = self.state.families
        exact = families.get(name)
        if exact is not None and exact.type is not MetricType.UNKNOWN:
            family, suffix = family_of(name, exact.type)
            return Kind(exact.type, family, suffix, exact.help, exact.unit, True)
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                fam = families.get(name[: -len(suffix)])
                if fam is not None and suffix in PARTS.get(fam.type, ()):
                    return Kind(fam.type, fam.family, suffix, fam.help, fam.unit, True)
        help_, unit = (meta.help, meta.unit) if meta is not None else ("", "")
        if exact is not None:
            help_, unit = exact.help or help_, exact.unit or unit
        if exact is not None:
            # Family metadata that says "unknown" (a family exposed with a HELP and no TYPE,
            # or as untyped): a gauge, as the compatibility spec requires, with
            # prometheus.type="unknown". Names decide only for series no family metadata
            # describes (yet: remote write 1.0 sends it apart, once a minute), and for a 2.0
            # series whose metadata has no type (2.0 cannot tell unknown from not sent).
            return Kind(MetricType.UNKNOWN, name, "", help_, unit, True)
        labels = series.labels
        if name.endswith("_bucket") and any(k == "le" for k, _ in labels):
            return Kind(MetricType.HISTOGRAM, name[:-7], "_bucket", help_, unit)
        if any(k == "quantile" for k, _ in labels):
            return Kind(MetricType.SUMMARY, name, "", help_, unit)
        for suffix in ("_sum", "_count", "_created"):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                guess = shapes.get(base) or self.state.inferred.get(base)
                if guess is not None and suffix in PARTS.get(guess, ()):
                    return Kind(guess, base, suffix, help_, unit)
        if name.endswith("_total") and len(name) > 6:
            return Kind(MetricType.COUNTER, name[:-6], "_total", help_, unit)
        return Kind(MetricType.UNKNOWN, name, "", help_, unit)

    def shapes(self, batch: Batch | Iterable[Series]) -> dict[str, MetricType]:
        """Families this batch shows the shape of, for series whose type only names can tell."""
        series = batch.series if isinstance(batch, Batch) else batch
        return self._learn_shapes([(item, None, None) for item in series])

    def _learn_shapes(
        self, entries: Iterable[tuple[Series, object, RowInfo | None]]
    ) -> dict[str, MetricType]:
        out: dict[str, MetricType] = {}
        for series, _, info in entries:
            found = info.shape if info is not None else _series_shape(series)
            if found is not None:
                out[found[0]] = found[1]
        return self._inferred(out)

    def _inferred(self, learnt: dict[str, MetricType]) -> dict[str, MetricType]:
        """``learnt``, the shapes a batch shows, once the state has inferred those whose family
        it has no metadata for."""
        for family, mtype in learnt.items():
            if family not in self.state.families:
                self.state.infer(family, mtype)
        return learnt

    @staticmethod
    def role(kind: Kind, labels: Labels) -> str:
        mtype, suffix = kind.type, kind.suffix
        if (kind.family, suffix) in _TARGET_INFO:
            return "target"
        if mtype is MetricType.COUNTER:
            return "created" if suffix == "_created" else "counter"
        if mtype is MetricType.HISTOGRAM:
            if suffix == "_bucket":
                return "bucket" if any(k == "le" for k, _ in labels) else "gauge"
            return {"_sum": "sum", "_count": "count", "_created": "created"}.get(suffix, "gauge")
        if mtype is MetricType.SUMMARY:
            if not suffix:
                return "quantile" if any(k == "quantile" for k, _ in labels) else "gauge"
            return {"_sum": "sum", "_count": "count", "_created": "created"}[suffix]
        if mtype is MetricType.GAUGEHISTOGRAM:
            return "drop"
        if mtype in (MetricType.INFO, MetricType.STATESET):
            return "updown"
        return "gauge"

    # -- the batch -------------------------------------------------------------------------

    def run(self, batch: Batch) -> Mapped:
        self.feed(batch)
        self.finish()
        return self.take()

    def feed(self, batch: Batch | list[Item]) -> None:
        """Read ``batch`` and map the one fed before it into the request being built.

        Mapping a batch one ``feed`` late lets the ``_created`` series of the next one reach
        the counters and histograms they belong to (OpenMetrics puts ``_created`` after its
        family: a cut between the two would otherwise lose the start time). Classic histogram
        and summary parts wait in ``groups`` for the rest of their point, which may be in a
        later batch. ``finish`` maps what waits.

        A batch may also be a step of ``rows.entry_steps``: its rows' label sets are looked up
        by their bytes (``RowInfo``), and their gauges and counters encoded straight to bytes.
        """
        if isinstance(batch, Batch):
            self.state.learn(batch.metadata)
            items: Sequence[Item] = batch.series
        else:
            items = batch
        memo, bound = self._rows, self._row_bound
        native = self.loops.compiled
        index = self.state.row_indexes.get(self.resource_labels)
        if len(memo) >= bound.limit and bound.empties(len(memo), self.state.clock()):
            memo.clear()
            self._row_keys.clear()
            self.state.row_indexes.pop(self.resource_labels, None)  # dropped with the memo
            index = None
        if native is not None and index is None:
            # The memo's index in C (_rows.key_index, as Datadog's): a row's key found by a
            # seeded hash instead of the dict's SipHash of its ~300 bytes. It holds what the
            # memo holds (added below, dropped with it); a key it lacks is looked up in the dict.
            index = self.state.row_indexes[self.resource_labels] = native.key_index()
            for memo_key, memo_info in memo.items():
                native.key_index_add(index, memo_key, memo_info)
        learnt: dict[str, MetricType] = {}  # the shapes the batch shows (_learn_shapes' loop)
        # Each row's info the index holds (a step's rows looked up in one call); a step of rows
        # whose label sets are all known (a steady source's) runs both loops below in C
        # (otlp_known, otlp_plan), what they leave to Python by _plan_row.
        indexed: Sequence[RowInfo | None] = ()
        known: list[RowInfo] | None = None
        if native is not None and isinstance(items, list):
            indexed, all_known = native.otlp_known(index, items, learnt)
            if all_known:
                known = indexed  # type: ignore[assignment]  # no None in it
        entries: list[tuple[Series, Sequence[tuple[float, int]] | None, RowInfo | None]] = []
        for at, item in enumerate(items if known is None else ()):
            if isinstance(item, Series):
                entries.append((item, None, None))
                series_shape = _series_shape(item)
                if series_shape is not None:
                    learnt[series_shape[0]] = series_shape[1]
                continue
            key, row_samples, _ = item
            info = indexed[at] if indexed else None
            if info is None:
                info = memo.get(key)
            if info is None:
                learns = bound.learns(len(memo))  # else mapped afresh each time it comes
                info = RowInfo(row_labels(key), self._ctx_of, self._row_keys if learns else None)
                if learns:
                    memo[key] = info
                    if native is not None:
                        native.key_index_add(index, key, info)
            entries.append((info.shell, row_samples, info))
            shape = info.shape
            if shape is not None:
                learnt[shape[0]] = shape[1]
        shapes = self.seen_shapes
        learnt = self._inferred(learnt)
        if any(shapes.get(family) is not mtype for family, mtype in learnt.items()):
            self._shapes_version += 1
        shapes.update(learnt)
        if len(shapes) > self.state.max_families:  # what it forgets is still in state.inferred
            shapes.clear()
            shown = entries if known is None else [(info.shell, None, info) for info in known]
            shapes.update(self._learn_shapes(shown))
            self._shapes_version += 1
        if len(self.created) > self.state.max_streams:
            self.created.clear()
        if len(self._ctx) > _CTX_LIMIT:
            self._ctx.clear()
        # Kind and role by (name, has le, has quantile): all a row's resolve and role read,
        # kept while what they depend on (families, inferred and seen shapes) is unchanged.
        if self._kinds_at != (self.state.version, self._shapes_version):
            self._kinds.clear()
            self._kinds_at = (self.state.version, self._shapes_version)
        kinds = self._kinds
        plan: list[_Planned] = []
        waiting_points = 0
        if known is not None:
            assert native is not None and isinstance(items, list)
            at, size = 0, len(known)
            while at < size:
                at, points, unmapped = native.otlp_plan(known, items, at, kinds, plan)
                waiting_points += points
                self.unmapped += unmapped
                if at < size:
                    waiting_points += self._plan_row(known[at], items[at][1], shapes, plan)
                    at += 1
        for series, samples, info in entries:
            if info is None:
                name = series.name
                if not name:
                    self.unmapped += len(series.samples) + len(series.histograms)
                    continue
                series = self._in_range(series)
                kind = self.resolve(series, name, shapes)
                role = self.role(kind, series.labels) if series.samples else "none"
                if role == "created":
                    rest = without(series.labels, "__name__")
                    for sample in series.samples:
                        created = _created_ms(sample.value)
                        if created:
                            self.created[(kind.family, rest)] = created
                    continue
                plan.append((series, kind, role, None))
                waiting_points += len(series.samples) + len(series.histograms)
                continue
            assert samples is not None
            waiting_points += self._plan_row(info, samples, shapes, plan)
        waiting, self.waiting = self.waiting, plan
        self.waiting_points = waiting_points
        self.map_plan(waiting)

    def _in_range(self, series: Series) -> Series:
        """``series`` without the samples and histograms at a time OTLP cannot hold (counted
        in ``unmapped``), as ``_plan_row`` leaves them out of a row."""
        if all(0 <= s.timestamp <= MAX_MS for s in series.samples) and all(
            0 <= h.timestamp <= MAX_MS for h in series.histograms
        ):
            return series
        samples = tuple(s for s in series.samples if 0 <= s.timestamp <= MAX_MS)
        histograms = tuple(h for h in series.histograms if 0 <= h.timestamp <= MAX_MS)
        self.unmapped += (
            len(series.samples) - len(samples) + len(series.histograms) - len(histograms)
        )
        return series._replace(samples=samples, histograms=histograms)

    def _plan_row(
        self,
        info: RowInfo,
        samples: Sequence[tuple[float, int]],
        shapes: Mapping[str, MetricType],
        plan: list[_Planned],
    ) -> int:
        """A row's kind and role (resolved once per ``kind_key`` while ``_kinds`` holds), and
        the row put in ``plan``; the samples planned."""
        name = info.name
        if not name:
            self.unmapped += len(samples)
            return 0
        if not samples:
            return 0  # role "none", and no histograms in a row
        if not all(0 <= ts <= MAX_MS for _, ts in samples):
            # A time OTLP's nanoseconds cannot hold (before 1970, past 2554): no point can
            # carry it (it made the encoding raise, and the sender retry for ever).
            kept = tuple(sample for sample in samples if 0 <= sample[1] <= MAX_MS)
            self.unmapped += len(samples) - len(kept)
            samples = kept
            if not samples:
                return 0
        kinds = self._kinds
        cached = info.kind_key
        found = kinds.get(cached)
        if found is None:
            kind = self.resolve(info.shell, name, shapes)
            found = kinds[cached] = (kind, self.role(kind, info.shell.labels))
        kind, role = found
        if role == "created":
            for value, _ in samples:
                created = _created_ms(value)
                if created:
                    self.created[(kind.family, info.rest)] = created
            return 0
        plan.append((info, kind, role, samples))
        return len(samples)

    def map_plan(self, plan: list[_Planned]) -> None:
        index, size = 0, len(plan)
        native = self.loops.compiled
        while index < size:
            if native is not None:  # gauge_row and counter_row, compiled, for what they can
                index, added = native.otlp_rows(
                    plan,
                    index,
                    self.out,
                    self.updates,
                    self.state.streams,
                    self.created,
                    CounterState,
                    self.delta,
                )
                self.out.points += added
                if index >= size:
                    break
            series, kind, role, samples = plan[index]
            index += 1
            if role == "target":
                self._target(series, samples)
                continue
            if samples is not None:  # a row
                assert isinstance(series, RowInfo)
                if role == "counter":
                    self.counter_row(series, samples, kind)
                elif role in ("gauge", "updown"):
                    self.gauge_row(series, samples, kind, role)
                elif role == "drop":
                    self.unmapped += len(samples)
                elif role != "none":
                    self.part(series.series(samples), kind, role)
                continue
            assert isinstance(series, Series)
            if series.histograms:
                self.native(series, kind)
            if role == "none":
                continue
            if role == "drop":
                self.unmapped += len(series.samples)
            elif role in ("gauge", "updown"):
                self.gauge(series, kind, role)
            elif role == "counter":
                self.counter(series, kind)
            else:
                self.part(series, kind, role)

    def _target(
        self, series: Series | RowInfo, samples: Sequence[tuple[float, int]] | None
    ) -> None:
        """A ``target_info`` series: not a metric, its labels its resource's attributes
        (the compatibility spec's "target" info metric); its last sample a stale marker, the
        target is gone and so are they."""
        if isinstance(series, RowInfo):
            ctx, last = series.ctx, samples[-1][0] if samples else None
        else:
            ctx = self.ctx(without(series.labels, "__name__"))
            last = series.samples[-1].value if series.samples else None
        if last is not None:
            self.state.learn_target(ctx.resource, None if is_stale(last) else ctx.attributes)

    def finish(self) -> None:
        """Map the batch waiting, and emit every classic histogram and summary point still
        waiting for parts."""
        waiting, self.waiting, self.waiting_points = self.waiting, [], 0
        self.map_plan(waiting)
        self.flush_groups()

    def flush_groups(self) -> None:
        """Emit every classic histogram and summary point still waiting for parts."""
        for key, by_ts in self.groups.items():
            self.finish_groups(key, by_ts)
        self.groups.clear()
        self.group_exemplars.clear()
        self.grouped = 0

    def checkpoint(self) -> Checkpoint:
        """What a request's mapping changes of this mapper, as it is now: ``rewind`` puts it
        back (what waits, the parts grouped, the stream updates), so that steps mapped after
        it can be mapped again (a mapping that raised) into the same points. What was learnt
        meanwhile is kept, as the next request would keep it: the families and shapes the
        steps showed (a ``_count`` series mapped again after its family's ``_bucket`` showed
        it is a histogram's is mapped as one), ``_created`` times, label sets' contexts."""
        groups = {
            key: {ts: g.copy() for ts, g in by_ts.items()} for key, by_ts in self.groups.items()
        }
        exemplars = {key: list(found) for key, found in self.group_exemplars.items()}
        return Checkpoint(
            self.waiting,
            self.waiting_points,
            groups,
            exemplars,
            self.grouped,
            dict(self.updates),
            self.unmapped,
        )

    def rewind(self, to: Checkpoint) -> None:
        """Back to ``to`` (see ``checkpoint``), the request being built empty."""
        self.waiting, self.waiting_points = to.waiting, to.waiting_points
        self.groups = {
            key: {ts: g.copy() for ts, g in by_ts.items()} for key, by_ts in to.groups.items()
        }
        self.group_exemplars = {key: list(found) for key, found in to.exemplars.items()}
        self.grouped, self.updates, self.unmapped = to.grouped, dict(to.updates), to.unmapped
        self.out = self._output()

    def cut(self) -> tuple[bytes, int]:
        """The request mapped so far, serialized, and its point count; mapping goes on into a
        new one (stream updates are kept for ``take``). Serialized requests concatenate into
        one (protobuf repeated fields), so a large request is serialized in parts."""
        out = self.out
        self.out = self._output()
        return out.serialized(), out.points

    def take(self) -> Mapped:
        """The request mapped since the last ``take``, and its stream updates; the next request
        starts empty and reads the state the caller committed in between."""
        mapped = Mapped(self.out.message(), self.out.points, self.updates, self.unmapped)
        self.out = self._output()
        self.updates = {}
        self.unmapped = 0
        return mapped


def to_otlp(
    batch: Batch,
    state: MappingState,
    *,
    temporality: Temporality = "cumulative",
    resource_labels: Sequence[str] = ("job", "instance"),
) -> Mapped:
    """Map ``batch`` to one request. Learns family metadata into ``state`` at once; stream
    state changes come back in ``Mapped.updates`` for the caller to commit after delivery."""
    return Mapper(state, temporality, resource_labels).run(batch)


def _created_ms(value: float) -> int:
    """A ``_created`` sample's time in ms, or 0 (none) for one that is not a time OTLP holds:
    not finite, not positive, or past ``MAX_MS`` (a point starts there; an out-of-range one
    made every conversion of the request fail, and its sender retry it for ever)."""
    if math.isfinite(value) and value > 0 and value * 1000 <= MAX_MS:
        return int(value * 1000)
    return 0
