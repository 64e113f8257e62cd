"""The Flux rewriter as it was before its speed-up, kept verbatim as the oracle the sped-up
``FluxRewriter`` is compared with (``tests/unit/test_flux_speed_equivalence.py``): the speed-up
changes how the rewriter gets its answers, never the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Labels,
    Metadata,
    Sample,
    Series,
    is_stale,
    labels_from,
)
from gotk_relay.rules.flux import (
    CONDITION_METADATA,
    DELETED,
    INFO_METADATA,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    STATUSES,
    SUSPEND_METADATA,
    SUSPEND_STATUS,
    FluxConfig,
    FluxStats,
)
from gotk_relay.rules.flux_kinds import BY_KIND, FluxKind

_LEGACY_STATUSES: Final = frozenset((*STATUSES, DELETED))

_KSM_COMMON: Final = frozenset(
    ("customresource_group", "customresource_kind", "customresource_version", "ready", "suspended")
)
_KSM_OWN: Final = {k.kind: _KSM_COMMON | k.extra_label_names for k in BY_KIND.values()}
# Labels of a legacy series that the info shape expresses otherwise (or not at all).
_LEGACY_OWN: Final = frozenset(
    ("__name__", "kind", "type", "status", "namespace", "exported_namespace", "ready", "suspended")
)
_EXPORTED: Final = "exported_"
_NEVER: Final = -(1 << 63)
_MAX_INPUTS: Final = 8


@dataclass(frozen=True, slots=True)
class _Route:
    """What an input series is, worked out once per label set (cached)."""

    forward: bool  # gotk_resource_info → legacy; False: legacy → gotk_resource_info
    key: Labels  # the object's identity: output labels without __name__/type/status/ready/suspended
    kind: FluxKind
    ready: str = "Unknown"  # forward only
    suspended: bool = False  # forward only
    status: str = ""  # reverse only: the condition status, "" for gotk_suspend_status


class _Input:
    __slots__ = ("stale_ts", "value_ts")

    def __init__(self) -> None:
        self.value_ts = _NEVER
        self.stale_ts = _NEVER


class _Object:
    """Liveness bookkeeping shared by both directions."""

    __slots__ = (
        "deadline",
        "inputs",
        "interval",
        "key",
        "kind",
        "last_seen",
        "newest_value_ts",
        "open",
    )

    def __init__(self, key: Labels, kind: FluxKind, clock: int) -> None:
        self.key = key
        self.kind = kind
        self.inputs: dict[Labels, _Input] = {}
        self.newest_value_ts = _NEVER
        self.interval = 0  # gap between the two newest value timestamps; 0: unknown
        self.open = False  # outputs carry a value and have not been ended since
        self.last_seen = clock
        self.deadline: int | None = None  # relay clock at which a pending end is due

    def note(self, labels: Labels, ts: int, stale: bool) -> None:
        entry = self.inputs.get(labels)
        if entry is None:
            if len(self.inputs) >= _MAX_INPUTS:
                self._evict()
            entry = self.inputs[labels] = _Input()
        if stale:
            entry.stale_ts = max(entry.stale_ts, ts)
        else:
            entry.value_ts = max(entry.value_ts, ts)
            if ts > self.newest_value_ts:
                if self.newest_value_ts != _NEVER:
                    self.interval = ts - self.newest_value_ts
                self.newest_value_ts = ts

    def _evict(self) -> None:
        oldest = min(
            self.inputs, key=lambda k: max(self.inputs[k].value_ts, self.inputs[k].stale_ts)
        )
        del self.inputs[oldest]
        self.newest_value_ts = max((i.value_ts for i in self.inputs.values()), default=_NEVER)

    def live(self) -> bool:
        newest = self.newest_value_ts
        return any(i.value_ts == newest and i.value_ts > i.stale_ts for i in self.inputs.values())

    def end_ts(self) -> int:
        return max((i.stale_ts for i in self.inputs.values()), default=_NEVER)


class _InfoObject(_Object):
    """A Flux object seen through gotk_resource_info; its outputs are the legacy series."""

    __slots__ = ("out_last", "outputs", "ready", "state_ts", "suspended")

    def __init__(
        self, key: Labels, kind: FluxKind, clock: int, outputs: tuple[tuple[Labels, Metadata], ...]
    ) -> None:
        super().__init__(key, kind, clock)
        self.outputs = outputs  # condition series (STATUSES [+ Deleted]) then gotk_suspend_status
        self.state_ts = _NEVER
        self.ready = "Unknown"
        self.suspended = False
        self.out_last = _NEVER

    def observe(self, route: _Route, ts: int) -> None:
        """A value sample: the newest one decides what the outputs say (first wins on ties)."""
        if ts > self.state_ts:
            self.state_ts, self.ready, self.suspended = ts, route.ready, route.suspended


class _LegacyObject(_Object):
    """A Flux object seen through the legacy gauges; its output is one gotk_resource_info."""

    __slots__ = ("cond", "current", "current_ready", "last_emit", "out_last", "suspend")

    def __init__(self, key: Labels, kind: FluxKind, clock: int) -> None:
        super().__init__(key, kind, clock)
        self.cond: dict[str, tuple[int, float]] = {}  # status → newest (timestamp, value)
        self.suspend: tuple[int, float] | None = None
        self.current: Labels | None = None  # the open info series
        self.current_ready: str | None = None
        self.out_last: dict[Labels, int] = {}  # per info series ever written for the object
        self.last_emit = _NEVER  # newest timestamp written on any of them

    def observe(self, route: _Route, ts: int, value: float) -> None:
        """A value sample: keep the newest value of each status series and of suspend."""
        if route.status:
            seen = self.cond.get(route.status)
            if seen is None or ts > seen[0]:
                self.cond[route.status] = (ts, value)
        elif self.suspend is None or ts > self.suspend[0]:
            self.suspend = (ts, value)

    def winner(self) -> str | None:
        """The status whose series is 1 at the newest timestamp (ties keep the current one)."""
        best: str | None = None
        best_ts = _NEVER
        for status in (*STATUSES, DELETED):
            seen = self.cond.get(status)
            if seen is None or seen[1] != 1.0:
                continue
            if seen[0] > best_ts or (seen[0] == best_ts and status == self.current_ready):
                best, best_ts = status, seen[0]
        return best


class _Emitter:
    """Synthesized samples of one rewrite() call, grouped by series in first-emission order."""

    __slots__ = ("families", "series")

    def __init__(self) -> None:
        self.series: dict[Labels, tuple[Metadata, list[Sample]]] = {}
        self.families: dict[str, Metadata] = {}

    def add(self, labels: Labels, metadata: Metadata, ts: int, value: float) -> None:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = (metadata, [])
            self.families.setdefault(_metric_name(labels), metadata)
        entry[1].append(Sample(value, ts))


def _metric_name(labels: Labels) -> str:
    if labels and labels[0][0] == "__name__":
        return labels[0][1]
    for key, value in labels:
        if key == "__name__":
            return value
    return ""


def _ksm_value(labels: dict[str, str], name: str) -> str:
    """A KSM label's value; ``exported_<name>`` if a scrape target label took the plain name."""
    return labels.get(_EXPORTED + name, labels.get(name, ""))


class OracleRewriter:
    """The rewriter as it was before its speed-up, verbatim but for this name."""

    def __init__(self, config: FluxConfig, route_cache_max: int | None = None) -> None:
        self.config = config
        self.stats = FluxStats()
        names: set[str] = set()
        if config.mode in ("legacy", "both"):
            names.add(RESOURCE_INFO)
        if config.mode in ("resource_info", "both"):
            names.update((RECONCILE_CONDITION, SUSPEND_STATUS))
        self._names = frozenset(names)
        self._statuses = (*STATUSES, DELETED) if config.emit_deleted else STATUSES
        self._grace_ms = None if config.stale_grace is None else round(config.stale_grace * 1000)
        self._grace_cap_ms = round(config.grace_cap * 1000)
        self._expiry_ms = round(config.idle_expiry * 1000)
        self._info: dict[Labels, _InfoObject] = {}
        self._legacy: dict[Labels, _LegacyObject] = {}
        self._pending: dict[tuple[bool, Labels], _Object] = {}
        self._routes: dict[Labels, _Route | None] = {}
        # Objects refused at max_objects: key → (clock of its last refusal, refusal number).
        # Each is counted once; past max_objects remembered, the least recently refused is
        # forgotten; one not refused for idle_expiry is forgotten (then it counts again).
        self._refused: dict[tuple[bool, Labels], tuple[int, int]] = {}
        self._refusals = 0
        self._route_cache_max = route_cache_max or max(4096, 4 * config.max_objects)
        self._clock = _NEVER
        self._expiry_floor = _NEVER  # no object's last_seen is below this

    def may_match(self, name: str) -> bool:
        """Whether series named ``name`` can be inputs in this mode (for a decode fast path)."""
        return name in self._names

    def rewrite(self, batch: Batch, now_ms: int | None = None) -> Batch:
        """The batch to forward: inputs (unless ``keep_source`` is off), then synthesized series.

        ``now_ms`` is the relay clock (arrival time); without it the batch's newest Flux sample
        timestamp stands in. Pending ends that fall due are written even into a batch without
        Flux series, so pass ``now_ms`` for timely stale markers on quiet relays.
        """
        if not self._names:
            return batch
        matched: dict[int, _Route] = {}
        for index, series in enumerate(batch.series):
            name = _metric_name(series.labels)
            if name in self._names:
                route = self._route(series.labels, name)
                if route is not None:
                    matched[index] = route
        if not matched and not self._pending and now_ms is None:
            return batch
        self._advance_clock(batch, matched, now_ms)
        emitter = _Emitter()
        untracked: set[int] = set()
        if matched:
            self._process(batch, matched, emitter, untracked)
        self._commit_due(emitter)
        self._expire()
        self.stats.objects_tracked = len(self._info) + len(self._legacy)
        self.stats.objects_refused = len(self._refused)
        return self._output(batch, matched, untracked, emitter)

    # -- classification -------------------------------------------------------------------

    def _route(self, labels: Labels, name: str) -> _Route | None:
        if labels in self._routes:
            return self._routes[labels]
        if name == RESOURCE_INFO:
            route = self._classify_info(labels)
        else:
            route = self._classify_legacy(labels, name)
        if len(self._routes) >= self._route_cache_max:
            self._routes.clear()
        self._routes[labels] = route
        return route

    def _classify_info(self, labels: Labels) -> _Route | None:
        given = dict(labels)
        kind = BY_KIND.get(_ksm_value(given, "customresource_kind"))
        if kind is None or _ksm_value(given, "customresource_group") != kind.group:
            return None
        if not given.get("name"):
            return None
        own = _KSM_OWN[kind.kind]
        out: dict[str, str] = {}
        for key, value in labels:
            if key in own:
                if _EXPORTED + key in given:  # the scrape's label; KSM's was renamed
                    out[key] = value
            elif not (key.startswith(_EXPORTED) and key[len(_EXPORTED) :] in own):
                out[key] = value
        for key in ("__name__", "type", "status", "exported_namespace"):
            out.pop(key, None)
        namespace = given.get("exported_namespace") or given.get("namespace", "")
        if self.config.label_shape == "stored":
            out["exported_namespace"] = namespace
            out["namespace"] = self.config.controller_namespace
        else:
            out["namespace"] = namespace
        if self.config.set_job:
            out["job"] = kind.controller
        out["kind"] = kind.kind
        ready = _ksm_value(given, "ready")
        return _Route(
            forward=True,
            key=labels_from(out),
            kind=kind,
            ready={status.lower(): status for status in STATUSES}.get(ready.lower(), "Unknown"),
            suspended=_ksm_value(given, "suspended").lower() == "true",
        )

    def _classify_legacy(self, labels: Labels, name: str) -> _Route | None:
        given = dict(labels)
        kind = BY_KIND.get(given.get("kind", ""))
        if kind is None or not given.get("name"):
            return None
        status = ""
        if name == RECONCILE_CONDITION:
            status = given.get("status", "")
            if given.get("type") != "Ready" or status not in _LEGACY_STATUSES:
                return None
        out = {key: value for key, value in labels if key not in _LEGACY_OWN}
        out["customresource_group"] = kind.group
        out["customresource_kind"] = kind.kind
        out["customresource_version"] = self.config.versions[kind.kind]
        out["exported_namespace"] = given.get("exported_namespace") or given.get("namespace", "")
        if given.get("exported_namespace") and given.get("namespace"):
            out["namespace"] = given["namespace"]  # stored shape: the controller's, kept
        return _Route(forward=False, key=labels_from(out), kind=kind, status=status)

    # -- processing -----------------------------------------------------------------------

    def _advance_clock(self, batch: Batch, matched: dict[int, _Route], now_ms: int | None) -> None:
        if now_ms is not None:
            clock = now_ms
        else:
            indices = matched.keys() if matched else range(len(batch.series))
            clock = max(
                (s.timestamp for i in indices for s in batch.series[i].samples), default=_NEVER
            )
        self._clock = max(self._clock, clock)

    def _process(
        self, batch: Batch, matched: dict[int, _Route], emitter: _Emitter, untracked: set[int]
    ) -> None:
        """Apply the batch's Flux samples in timestamp order, one timestamp at a time.

        All of an object's samples at one timestamp (one scrape: the three conditions and the
        suspend gauge, or a new series and the old one's stale marker) are applied before the
        object is evaluated once for that timestamp, so their order inside the batch is moot.
        """
        events: list[tuple[int, bool, int, float]] = [
            (sample.timestamp, is_stale(sample.value), index, sample.value)
            for index in matched
            for sample in batch.series[index].samples
        ]
        events.sort(key=lambda event: (event[0], event[1]))  # stable: batch order on ties
        touched: dict[int, tuple[_Object, bool]] = {}  # id → (object, had a value sample)
        for position, (ts, stale, index, value) in enumerate(events):
            route = matched[index]
            obj: _Object | None
            if route.forward:
                obj = self._info.get(route.key) or self._admit_info(route)
            else:
                obj = self._legacy.get(route.key) or self._admit_legacy(route)
            if obj is None:
                untracked.add(index)
            else:
                obj.last_seen = self._clock
                obj.note(batch.series[index].labels, ts, stale)
                if not stale:
                    if isinstance(obj, _InfoObject):
                        obj.observe(route, ts)
                    elif isinstance(obj, _LegacyObject):
                        obj.observe(route, ts, value)
                had_value = touched.get(id(obj), (obj, False))[1]
                touched[id(obj)] = (obj, had_value or not stale)
            if position + 1 == len(events) or events[position + 1][0] != ts:
                for obj, had_value in touched.values():
                    self._evaluate(obj, ts, had_value, emitter)
                touched.clear()

    def _evaluate(self, obj: _Object, ts: int, had_value: bool, emitter: _Emitter) -> None:
        forward = isinstance(obj, _InfoObject)
        if had_value:
            if isinstance(obj, _InfoObject):
                self._forward_emit(obj, ts, emitter)
            elif isinstance(obj, _LegacyObject):
                self._reverse_emit(obj, ts, emitter)
        self._settle(obj, forward)

    def _room(self, route: _Route) -> bool:
        key = (route.forward, route.key)
        if len(self._info) + len(self._legacy) < self.config.max_objects:
            self._refused.pop(key, None)
            return True
        if key not in self._refused:
            self.stats.objects_rejected += 1
            if len(self._refused) >= self.config.max_objects:
                oldest = min(self._refused, key=lambda k: self._refused[k][1])
                del self._refused[oldest]
        self._refusals += 1
        self._refused[key] = (self._clock, self._refusals)
        return False

    def _admit_info(self, route: _Route) -> _InfoObject | None:
        if not self._room(route):
            return None
        base = dict(route.key)
        conditions = [
            {**base, "__name__": RECONCILE_CONDITION, "type": "Ready", "status": status}
            for status in self._statuses
        ]
        outputs = (
            *((labels_from(labels), CONDITION_METADATA) for labels in conditions),
            (labels_from({**base, "__name__": SUSPEND_STATUS}), SUSPEND_METADATA),
        )
        obj = self._info[route.key] = _InfoObject(route.key, route.kind, self._clock, outputs)
        return obj

    def _admit_legacy(self, route: _Route) -> _LegacyObject | None:
        if not self._room(route):
            return None
        obj = self._legacy[route.key] = _LegacyObject(route.key, route.kind, self._clock)
        return obj

    def _settle(self, obj: _Object, forward: bool) -> None:
        """Cancel a pending end when the object is live again, or start one when it is not."""
        if obj.live():
            if obj.deadline is not None:
                obj.deadline = None
                del self._pending[(forward, obj.key)]
        elif obj.open and obj.deadline is None:
            if self._grace_ms is not None:
                grace = self._grace_ms
            elif obj.interval > 0:
                grace = min(self._grace_cap_ms, obj.interval + 5000)
            else:
                grace = self._grace_cap_ms
            obj.deadline = self._clock + grace
            self._pending[(forward, obj.key)] = obj

    def _commit_due(self, emitter: _Emitter) -> None:
        if not self._pending:
            return
        clock = self._clock
        due = [
            k for k, o in self._pending.items() if o.deadline is not None and o.deadline <= clock
        ]
        for key in due:
            obj = self._pending.pop(key)
            obj.deadline = None
            if not obj.open or obj.live():
                continue
            if isinstance(obj, _InfoObject):
                self._end_info_object(obj, emitter)
            elif isinstance(obj, _LegacyObject):
                self._close_info(obj, max(obj.end_ts(), obj.last_emit + 1), emitter)

    def _expire(self) -> None:
        cutoff = self._clock - self._expiry_ms
        if self._expiry_floor > cutoff:
            return
        floor = self._clock
        tables: tuple[tuple[bool, dict[Labels, _InfoObject] | dict[Labels, _LegacyObject]], ...]
        tables = ((True, self._info), (False, self._legacy))
        for forward, table in tables:
            expired = [key for key, obj in table.items() if obj.last_seen <= cutoff]
            for key in expired:
                del table[key]
                self._pending.pop((forward, key), None)
            self.stats.objects_expired += len(expired)
            for obj in table.values():
                floor = min(floor, obj.last_seen)
        for refused, (last, _) in list(self._refused.items()):
            if last <= cutoff:
                del self._refused[refused]
            else:
                floor = min(floor, last)
        self._expiry_floor = floor

    # -- forward: gotk_resource_info → legacy ---------------------------------------------

    def _forward_emit(self, obj: _InfoObject, ts: int, emitter: _Emitter) -> None:
        if ts > obj.out_last:
            ready = obj.ready
            values = [1.0 if status == ready else 0.0 for status in self._statuses]
            values.append(1.0 if obj.suspended else 0.0)
            self._emit_all(obj, ts, values, emitter)
            obj.open = True
        elif ts < obj.out_last or not obj.open:
            self.stats.out_of_order_dropped += len(obj.outputs)

    def _end_info_object(self, obj: _InfoObject, emitter: _Emitter) -> None:
        ts = max(obj.end_ts(), obj.out_last + 1)
        # The same object under another exposer (every label but these equal) is open: its
        # exposer changed (a new kube-state-metrics pod), it was not deleted.
        exposer = {"instance", "pod", "job", "service", "endpoint", "container"}

        def sibling(key: Labels) -> Labels:
            return tuple(pair for pair in key if pair[0] not in exposer)

        moved = any(
            other is not obj and other.open and sibling(other.key) == sibling(obj.key)
            for other in self._info.values()
        )
        if self.config.emit_deleted and not moved:
            values = [1.0 if status == DELETED else 0.0 for status in self._statuses]
            values.append(0.0)
        else:
            values = [STALE_NAN] * len(obj.outputs)
            self.stats.stale_emitted += len(values)
        self._emit_all(obj, ts, values, emitter)
        obj.open = False

    def _emit_all(self, obj: _InfoObject, ts: int, values: list[float], emitter: _Emitter) -> None:
        for (labels, metadata), value in zip(obj.outputs, values, strict=True):
            emitter.add(labels, metadata, ts, value)
        obj.out_last = ts
        self.stats.outputs_emitted += len(values)

    # -- reverse: legacy → gotk_resource_info ---------------------------------------------

    def _reverse_emit(self, obj: _LegacyObject, ts: int, emitter: _Emitter) -> None:
        winner = obj.winner()
        if winner == DELETED:  # the pre-2.1 controllers' word that the object is gone
            if obj.current is not None:
                self._close_info(obj, max(ts, obj.last_emit + 1), emitter)
            return
        if winner is None and obj.kind.has_ready:
            return  # between two statuses (the old one is 0, the new 1 not seen yet): wait
        desired = self._info_labels(obj, winner)
        if desired == obj.current:
            last = obj.out_last[desired]
            if ts > last:
                self._emit_info(obj, desired, ts, 1.0, emitter)
            elif ts < last:
                self.stats.out_of_order_dropped += 1
            return
        # A new ready/suspended: end the open series and start the new one at the same instant,
        # never before anything already written for the object, so at most one is open.
        at = ts if ts > obj.last_emit else obj.last_emit + 1
        if obj.current is not None:
            self._close_info(obj, at, emitter)
        self._emit_info(obj, desired, at, 1.0, emitter)
        obj.current, obj.current_ready, obj.open = desired, winner, True

    def _info_labels(self, obj: _LegacyObject, ready: str | None) -> Labels:
        labels = dict(obj.key)
        labels["__name__"] = RESOURCE_INFO
        if obj.kind.has_ready and ready is not None:
            labels["ready"] = ready
        if obj.suspend is not None:
            labels["suspended"] = "true" if obj.suspend[1] != 0.0 else "false"
        return labels_from(labels)

    def _close_info(self, obj: _LegacyObject, ts: int, emitter: _Emitter) -> None:
        if obj.current is None:
            return
        self._emit_info(obj, obj.current, ts, STALE_NAN, emitter)
        self.stats.stale_emitted += 1
        obj.current, obj.current_ready, obj.open = None, None, False

    def _emit_info(
        self, obj: _LegacyObject, labels: Labels, ts: int, value: float, emitter: _Emitter
    ) -> None:
        emitter.add(labels, INFO_METADATA, ts, value)
        obj.out_last[labels] = ts
        obj.last_emit = max(obj.last_emit, ts)
        self.stats.outputs_emitted += 1

    # -- output ---------------------------------------------------------------------------

    def _output(
        self, batch: Batch, matched: dict[int, _Route], untracked: set[int], emitter: _Emitter
    ) -> Batch:
        removed: set[int] = set() if self.config.keep_source else matched.keys() - untracked
        if not emitter.series and not removed:
            return batch
        kept = (
            batch.series
            if not removed
            else tuple(s for i, s in enumerate(batch.series) if i not in removed)
        )
        synthesized = tuple(
            Series(labels, tuple(samples), metadata=metadata)
            for labels, (metadata, samples) in emitter.series.items()
        )
        present = {m.family for m in batch.metadata}
        families = tuple(
            FamilyMetadata(family, metadata.type, metadata.help, metadata.unit)
            for family, metadata in emitter.families.items()
            if family not in present
        )
        return Batch(kept + synthesized, batch.metadata + families)
