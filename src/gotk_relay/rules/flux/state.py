"""What the Flux rules keep: a route per input label set, and a state record per Flux object."""

from __future__ import annotations

from typing import Final

from ...model import Labels, Metadata, labels_from
from ..flux_kinds import FluxKind
from .names import DELETED, INFO_METADATA, RESOURCE_INFO, STATUSES

NEVER: Final = -(1 << 63)  # before any timestamp
_MAX_INPUTS: Final = 8  # input series remembered per object

# Synthesized series written together: their labels, and their metadata in the same order.
Outputs = tuple[tuple[Labels, ...], tuple[Metadata, ...]]
Values = tuple[float, ...]  # one per output
# An owner's outputs' remote write 1.0 encoding as pieces, some shared with other outputs and
# objects, with ``emitter.SLOT`` where each output's timestamp field goes (``emitter.prefixes``).
Pieces = tuple[bytes | bytearray, ...]


class Route:
    """What an input series is, worked out once per label set (cached), and where its state is.

    The classification never changes for a label set. ``obj`` and ``input`` remember the state
    record and input entry this label set last updated, so a steady scrape reaches them without
    hashing the object's identity or the series' labels again (a labels tuple does not cache its
    hash: each lookup hashes every pair). Both are checked on use, since expiry
    (``FluxObject.gone``) and input eviction (``Input.dropped``) retire them.
    """

    __slots__ = (
        "forward",
        "input",
        "key",
        "kind",
        "labels",
        "obj",
        "ready",
        "replica",
        "status",
        "suspended",
        "values",
    )

    def __init__(
        self,
        labels: Labels,
        forward: bool,
        key: Labels,
        kind: FluxKind,
        *,
        ready: str = "Unknown",
        suspended: bool = False,
        status: str = "",
        values: Values = (),
        replica: tuple[str, ...] = (),
    ) -> None:
        self.labels = labels  # the label set it was worked out for (this very tuple)
        self.forward = forward  # gotk_resource_info → legacy; False: legacy → gotk_resource_info
        self.key = key  # the object's identity: output labels without name/type/status/ready/...
        self.kind = kind
        self.ready = ready  # forward only
        self.suspended = suspended  # forward only
        self.values = values  # forward only: what the outputs say for ready/suspended
        self.status = status  # reverse only: the condition status, "" for gotk_suspend_status
        self.replica = replica  # forward: the flux.replica_labels values that reported it
        self.obj: FluxObject | None = None
        self.input: Input | None = None


class Input:
    """One input series of an object: its label set, and what its newest samples were."""

    __slots__ = ("dropped", "labels", "replica", "stale_ts", "value_ts")

    def __init__(self, labels: Labels, replica: tuple[str, ...] = ()) -> None:
        self.labels = labels
        self.replica = replica  # the replica whose series it is (flux.replica_labels)
        self.value_ts = NEVER
        self.stale_ts = NEVER
        self.dropped = False  # evicted from its object's inputs


class FluxObject:
    """Liveness bookkeeping shared by both directions."""

    __slots__ = (
        "deadline",
        "gone",
        "inputs",
        "interval",
        "key",
        "kind",
        "last_seen",
        "newest_value_ts",
        "open",
        "row",
        "stored_inputs",
    )

    def __init__(self, key: Labels, kind: FluxKind, clock: int) -> None:
        self.key = key
        self.kind = kind
        # Its input series, first seen first: a tuple, as most objects have one (a dict of one
        # entry took ~220 bytes more per object), and at most _MAX_INPUTS are searched.
        self.inputs: tuple[Input, ...] = ()
        self.newest_value_ts = NEVER
        # The gap between its two newest value timestamps (its scrape interval); 0: unknown.
        self.interval = 0
        self.open = False  # outputs carry a value and have not been ended since
        self.last_seen = clock
        self.deadline: int | None = None  # relay clock at which a pending end is due
        self.gone = False  # expired: no longer in the rewriter's tables
        # With the state persisted (persist.py): its row there (0: none yet), and the inputs
        # that row holds, in order (rewritten only when they change).
        self.row = 0
        self.stored_inputs: tuple[Input, ...] = ()

    def input_for(self, labels: Labels, replica: tuple[str, ...] = ()) -> Input:
        for entry in self.inputs:
            if entry.labels is labels or entry.labels == labels:
                return entry
        if len(self.inputs) >= _MAX_INPUTS:
            self._evict()
        entry = Input(labels, replica)
        self.inputs = (*self.inputs, entry)
        return entry

    def leader(self) -> tuple[str, ...] | None:
        """The replica the object follows: the first, in label order, whose newest input has
        no stale marker at or after its newest value (None: no replica is live)."""
        newest: dict[tuple[str, ...], Input] = {}
        for entry in self.inputs:
            found = newest.get(entry.replica)
            if found is None or entry.value_ts > found.value_ts:
                newest[entry.replica] = entry
        live = [r for r, e in newest.items() if e.value_ts > e.stale_ts]
        return min(live) if live else None

    def _evict(self) -> None:
        oldest = min(self.inputs, key=lambda entry: max(entry.value_ts, entry.stale_ts))
        oldest.dropped = True
        self.inputs = tuple(entry for entry in self.inputs if entry is not oldest)
        self.newest_value_ts = max((i.value_ts for i in self.inputs), default=NEVER)

    def newer_value(self, ts: int) -> None:
        """A value timestamp after every one seen: the newest, and the interval it makes."""
        if self.newest_value_ts != NEVER:
            self.interval = ts - self.newest_value_ts
        self.newest_value_ts = ts

    def live(self) -> bool:
        newest = self.newest_value_ts
        for entry in self.inputs:  # noqa: SIM110 (a loop: no generator per call)
            if entry.value_ts == newest and newest > entry.stale_ts:
                return True
        return False

    def end_ts(self) -> int:
        return max((i.stale_ts for i in self.inputs), default=NEVER)

    def observe(self, route: Route, ts: int, value: float) -> None:
        """A value sample of one of its inputs (each direction keeps what it needs of it)."""
        raise NotImplementedError


class InfoObject(FluxObject):
    """A Flux object seen through gotk_resource_info; its outputs are the legacy series."""

    __slots__ = (
        "emit_call",
        "encoded_for",
        "out_last",
        "outputs",
        "pieces",
        "ready",
        "state_ts",
        "suspended",
        "values",
    )

    def __init__(
        self, key: Labels, kind: FluxKind, clock: int, outputs: Outputs, values: Values
    ) -> None:
        super().__init__(key, kind, clock)
        self.outputs = outputs  # condition series (STATUSES [+ Deleted]) then gotk_suspend_status
        self.state_ts = NEVER
        self.ready = "Unknown"
        self.suspended = False
        self.values = values  # what the outputs say for ready/suspended
        self.out_last = NEVER
        self.emit_call = 0  # the rewrite() call that last emitted it (see Emitter.add)
        # The values its outputs' pieces were made for, and the pieces (emitter.prefixes): two
        # slots rather than a tuple of them, a tuple less per object.
        self.encoded_for: Values | None = None
        self.pieces: Pieces = ()

    def observe(self, route: Route, ts: int, value: float) -> None:
        """A value sample: the newest one decides what the outputs say (first wins on ties)."""
        if ts > self.state_ts:
            self.state_ts, self.ready, self.suspended = ts, route.ready, route.suspended
            self.values = route.values


class InfoSeries:
    """One gotk_resource_info series a legacy object may write (one per ready/suspended)."""

    __slots__ = ("emit_call", "encoded_for", "labels", "last", "outputs", "pieces")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.outputs: Outputs = ((labels,), (INFO_METADATA,))
        self.last = NEVER  # the last timestamp written on it
        self.emit_call = 0  # as InfoObject's
        self.encoded_for: Values | None = None  # as InfoObject's
        self.pieces: Pieces = ()


class LegacyObject(FluxObject):
    """A Flux object seen through the legacy gauges; its output is one gotk_resource_info."""

    __slots__ = ("cond", "current", "current_ready", "infos", "last_emit", "suspend")

    def __init__(self, key: Labels, kind: FluxKind, clock: int) -> None:
        super().__init__(key, kind, clock)
        self.cond: dict[str, tuple[int, float]] = {}  # status → newest (timestamp, value)
        self.suspend: tuple[int, float] | None = None
        self.current: InfoSeries | None = None  # the open info series
        self.current_ready: str | None = None
        # Every info series ever written for the object, by (ready, suspended) as they appear
        # in its labels: at most 4 × 3, and one labels tuple each, so "the same series" is `is`.
        self.infos: dict[tuple[str | None, bool | None], InfoSeries] = {}
        self.last_emit = NEVER  # newest timestamp written on any of them

    def observe(self, route: Route, ts: int, value: float) -> None:
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
        best_ts = NEVER
        for status in (*STATUSES, DELETED):
            seen = self.cond.get(status)
            if seen is None or seen[1] != 1.0:
                continue
            if seen[0] > best_ts or (seen[0] == best_ts and status == self.current_ready):
                best, best_ts = status, seen[0]
        return best

    def info_series(self, ready: str | None) -> InfoSeries:
        """The info series for ``ready`` and the current suspend value."""
        shown_ready = ready if self.kind.has_ready else None
        shown_suspend = None if self.suspend is None else self.suspend[1] != 0.0
        return self.info_shown(shown_ready, shown_suspend)

    def info_shown(self, shown_ready: str | None, shown_suspend: bool | None) -> InfoSeries:
        """The info series whose labels show ``shown_ready`` and ``shown_suspend`` (None: no
        such label)."""
        found = self.infos.get((shown_ready, shown_suspend))
        if found is None:
            labels = dict(self.key)
            labels["__name__"] = RESOURCE_INFO
            if shown_ready is not None:
                labels["ready"] = shown_ready
            if shown_suspend is not None:
                labels["suspended"] = "true" if shown_suspend else "false"
            found = self.infos[(shown_ready, shown_suspend)] = InfoSeries(labels_from(labels))
        return found
