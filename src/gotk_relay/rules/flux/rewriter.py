"""The Flux rewriter: each batch's Flux samples applied to the objects' state, in time order."""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from ... import native
from ...model import (
    STALE_NAN,
    STALE_NAN_BITS,
    Batch,
    FamilyMetadata,
    Labels,
    Series,
    float_bits,
    label_value,
)
from .classify import NOT_FLUX, Classifier
from .config import AUTO_MARGIN, FluxConfig
from .emitter import (
    FORWARD,
    FORWARD_FAMILIES,
    INFO,
    Emitter,
    SeriesEncoder,
    prefixes,
    stamped,
    timestamp_field,
)
from .names import (
    DELETED,
    INFO_METADATA,
    OPERATOR_INFO,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    SUSPEND_STATUS,
)
from .operator import OperatorMapping
from .state import (
    NEVER,
    FluxObject,
    InfoObject,
    InfoSeries,
    Input,
    LegacyObject,
    Outputs,
    Route,
    Values,
)
from .stats import FluxStats
from .tracked import TrackedObjects

# The compiled twin of steady's two loops when built (setup.py; native.load says when it is
# not): the one switch between it and the Python loops (_steady_pick, _steady_apply).
_STEADY: Any = native.load(f"{__package__}._steady")
if _STEADY is not None:
    _STEADY.setup(Route, InfoObject, Input)
_JOIN: Final = b"".join

# Labels that name what exposed an object's series (the scrape target), not the object: a
# restarted kube-state-metrics pod reports the same object under new ones.
_EXPOSER_LABELS: Final = frozenset({"instance", "pod", "job", "service", "endpoint", "container"})


def _sibling_key(key: Labels) -> Labels:
    """A forward object's identity less the labels naming its exposer (``_siblings``)."""
    return tuple(pair for pair in key if pair[0] not in _EXPOSER_LABELS)


class Steady(NamedTuple):
    """What ``FluxRewriter.steady`` wrote: the relay queues ``body`` (then ``families``' metadata)
    where it would queue ``rewrite()``'s synthesized series, and the federate store keeps each
    group's outputs at ``newest``."""

    groups: list[tuple[Outputs, Values]]  # per object: its outputs and the values written
    # The remote write 1.0 encoding of the synthesized series, in rewrite()'s order, in pieces
    # of about STEADY_CHUNK bytes: a request of 1000 objects writes ~1.6 MB, which the relay
    # compresses a piece at a time rather than joined whole (delivery.entry.made_entry).
    chunks: tuple[bytes, ...]
    outputs: int  # synthesized series, one sample each
    newest: int  # their timestamp
    families: tuple[FamilyMetadata, ...]  # the metadata rewrite() would append to the batch

    @property
    def body(self) -> bytes:
        """The chunks joined: the whole encoding."""
        return b"".join(self.chunks)


class Rewritten(NamedTuple):
    """What the Flux rules made of a batch (``FluxRewriter.apply``), for admission and the
    federate store. ``batch`` is the batch as forwarded: ``rewrite()``'s output, or, when the
    rules took their steady shortcut, the inputs with the families the outputs need; then
    ``steady`` holds the outputs, written as bytes, and no ``Series`` of them was made."""

    batch: Batch
    steady: Steady | None = None


AUTO_MARGIN_MS: Final = round(AUTO_MARGIN * 1000)
# Pieces joined into one chunk of a steady output (~100 objects, ~140 KB): a join allocates a
# buffer record (80 bytes) per piece, 1.9 MB for the ~24,000 of a 1000-object request at once.
STEADY_CHUNK_PIECES: Final = 2048
# Ends written by one call at most; the others stay due for the next (a request, or the relay's
# clock, which comes back at once while some are due): a fleet deleted at once (20,000 objects
# ending together held the event loop 2.3 s) is written a few hundred objects at a time.
MAX_ENDS_PER_CALL: Final = 500
_ONE: Final[Values] = (1.0,)
_STALE: Final[Values] = (STALE_NAN,)


_Event = tuple[int, bool, int, float, Route]  # timestamp, stale marker, series index, value


def _event_order(event: _Event) -> tuple[int, bool]:
    return event[0], event[1]


class FluxRewriter:
    """Turns each incoming batch into the batch to forward; see the package docstring.

    ``rewrite()`` returns the input object itself when it has nothing to add or remove, so a
    relay whose traffic holds no Flux series pays one name check per series.
    """

    def __init__(self, config: FluxConfig, encoder: SeriesEncoder | None = None) -> None:
        """``encoder`` (``wire.rw1``) lets the rewriter write its outputs' bytes as it makes
        them (``encoded``, ``steady``); without one it writes series only."""
        self.config = config
        self._encoder = encoder
        # Routes input series to their objects; its route cache is bounded by cache_max.
        self.classifier = Classifier(config)
        self.stats = FluxStats()
        names: set[str] = set()
        if config.mode in ("legacy", "both"):
            names.update((RESOURCE_INFO, OPERATOR_INFO))
        if config.mode in ("resource_info", "both"):
            names.update((RECONCILE_CONDITION, SUSPEND_STATUS))
        self._names = frozenset(names)
        # In resource_info and both modes the operator's report is also written in KSM's shape.
        self._operator = (
            OperatorMapping(config) if config.mode in ("resource_info", "both") else None
        )
        self._operator_seen = False  # the steady shortcut does not map: declined once seen
        self._replicas = bool(config.replica_labels)
        # A fixed grace (flux.stale_grace), or None: each object's own (see _grace).
        self._grace_ms = None if config.stale_grace is None else round(config.stale_grace * 1000)
        self._grace_cap_ms = round(config.grace_cap * 1000)
        self._expiry_ms = round(config.idle_expiry * 1000)
        self._info: dict[Labels, InfoObject] = {}
        self._legacy: dict[Labels, LegacyObject] = {}
        # With emit_deleted: the forward objects by their identity less the labels that name
        # what exposed them (``_sibling_key``), so that an identity that ends while another of
        # the same object is open (kube-state-metrics restarted as a new pod) ends with stale
        # markers, not with the "Deleted" snapshot: the object was not deleted. Kept by every
        # change to ``_info`` (_track_info, _untrack_info).
        self._siblings: dict[Labels, dict[Labels, InfoObject]] | None = (
            {} if config.emit_deleted else None
        )
        self._pending: dict[tuple[bool, Labels], FluxObject] = {}
        # The pending ends by deadline, so that a request looks at the due ones only, not at
        # every pending one (tens of thousands while a fleet's objects end): (deadline, seq,
        # key), a heap; an entry counts while _pending_seq holds its seq for the key (an end
        # cancelled or started again leaves its old entry behind, skipped when it surfaces).
        # Seqs grow as keys enter _pending, so they also give its order.
        self._deadlines: list[tuple[int, int, tuple[bool, Labels]]] = []
        self._pending_seq: dict[tuple[bool, Labels], int] = {}
        self._seq = itertools.count()
        # Objects refused at max_objects (key → relay clock of their last refusal), least
        # recently refused first: each is counted once in objects_rejected, not once per batch.
        # At most max_objects of them (the oldest is forgotten past that, and counts again if
        # refused again); one not refused for idle_expiry is forgotten, as a tracked one is.
        self._refused: OrderedDict[tuple[bool, Labels], int] = OrderedDict()
        self._clock = NEVER
        self._expiry_floor = NEVER  # no object's last_seen is below this, but those aging
        # Objects due to expire within a sixteenth of idle_expiry of the last full scan, as
        # (last_seen then, forward, key), the oldest last: taken one by one as the clock passes
        # them, so objects last seen at many different times cost a full scan per sixteenth of
        # idle_expiry, not one per request (100,000 such objects: 13 ms a request for an hour).
        self._aging: list[tuple[int, bool, Labels]] = []
        self._calls = 0  # rewrite() calls that emitted or could have: stamps emissions
        # The last rewrite()'s synthesized series, their encoding and newest timestamp.
        self._encoded: tuple[tuple[Series, ...], bytes, int] | None = None
        # With the state persisted (persist.py sets it to {}): the objects whose state changed
        # and the ones forgotten since their rows were last written; None: not persisted.
        self.changed: dict[FluxObject, None] | None = None
        self.forgotten: list[FluxObject] = []
        if config.emit_deleted:
            statuses = self.classifier.statuses
            deleted = tuple(1.0 if status == DELETED else 0.0 for status in statuses)
            self._end_values: Values = (*deleted, 0.0)
        else:
            self._end_values = (STALE_NAN,) * (len(self.classifier.statuses) + 1)

    def encoded(self, series: tuple[Series, ...]) -> tuple[bytes, int] | None:
        """The remote write 1.0 encoding of ``series`` and their newest timestamp, if ``series``
        are exactly the last rewrite()'s synthesized series and it could write them itself.

        ``rw1.encode(Batch(series))`` would give the same bytes (the tests hold them equal): this
        saves the relay encoding series the rewriter has just put together (see
        ``Emitter.encode``). Each series then has one sample, so ``len(series)`` is its count.
        """
        found = self._encoded
        if found is None or len(series) != len(found[0]):
            return None
        if not all(map(operator.is_, series, found[0])):
            return None
        return found[1], found[2]

    def restore(self, objects: list[FluxObject], clock: int) -> None:
        """Take ``objects`` (a previous run's, ``persist.py``) as the tracked ones, with relay
        clock ``clock`` (it never goes back): pending ends are pending again, and objects not
        seen for ``idle_expiry`` are forgotten at the next call."""
        self._info.clear()
        if self._siblings is not None:
            self._siblings.clear()
        self._legacy.clear()
        self._pending.clear()
        self._deadlines.clear()
        self._pending_seq.clear()
        for obj in objects:
            if isinstance(obj, InfoObject):
                self._track_info(obj.key, obj)
            elif isinstance(obj, LegacyObject):
                self._legacy[obj.key] = obj
            if obj.deadline is not None:
                self._start_end((isinstance(obj, InfoObject), obj.key), obj, obj.deadline)
        self._clock = max(self._clock, clock)
        self._expiry_floor = NEVER
        self._aging = []
        self.stats.objects_tracked = len(self._info) + len(self._legacy)

    def rewind(self, changed: Iterable[FluxObject], stored: Iterable[FluxObject]) -> None:
        """Undo what calls did to objects since their state was last stored (``persist.py``,
        after a write that was rolled back): ``changed``, the objects changed or forgotten
        since, leave the tables, and ``stored``, the same objects as their rows hold them, take
        their places (an object not stored yet is just gone). Routes find the stored ones as
        they find an object admitted again after its expiry (``gone``)."""
        back = {(isinstance(obj, InfoObject), obj.key): obj for obj in stored}
        placed: list[tuple[tuple[bool, Labels], FluxObject]] = []
        for obj in changed:
            if obj.gone:
                continue
            key = (isinstance(obj, InfoObject), obj.key)
            self._cancel_end(key)
            obj.gone = True
            found = back.pop(key, None)
            self._place(key, found)  # in place: the tables keep their order (an expiry scan's)
            if found is not None:
                placed.append((key, found))
        for key, obj in back.items():  # forgotten since: tracked again
            self._place(key, obj)
            placed.append((key, obj))
        for key, obj in placed:
            if obj.deadline is not None:
                self._start_end(key, obj, obj.deadline)
        self._expiry_floor = NEVER  # the next call scans every object for expiry
        self._aging = []
        self._encoded = None
        self.stats.objects_tracked = len(self._info) + len(self._legacy)

    def _place(self, key: tuple[bool, Labels], obj: FluxObject | None) -> None:
        """``obj`` tracked at ``key`` (None: nothing is)."""
        forward, labels = key
        if obj is None:
            if forward:
                self._untrack_info(labels)
            else:
                self._legacy.pop(labels, None)
        elif isinstance(obj, InfoObject):
            self._track_info(labels, obj)
        elif isinstance(obj, LegacyObject):
            self._legacy[labels] = obj

    def _track_info(self, key: Labels, obj: InfoObject) -> None:
        self._info[key] = obj
        if self._siblings is not None:
            self._siblings.setdefault(_sibling_key(key), {})[key] = obj

    def _untrack_info(self, key: Labels) -> InfoObject | None:
        obj = self._info.pop(key, None)
        if self._siblings is not None:
            sibling = _sibling_key(key)
            found = self._siblings.get(sibling)
            if found is not None:
                found.pop(key, None)
                if not found:
                    del self._siblings[sibling]
        return obj

    def _exposed_elsewhere(self, obj: InfoObject) -> bool:
        """Whether another identity of ``obj``'s object (the same labels but those naming
        what exposed it) is open: then ``obj`` ends because its exposer changed, not because
        the object was deleted."""
        if self._siblings is None:
            return False
        found = self._siblings.get(_sibling_key(obj.key), {})
        return any(other is not obj and other.open for other in found.values())

    @property
    def clock(self) -> int:
        """The relay clock: the newest ``now_ms`` (or Flux sample timestamp) seen."""
        return self._clock

    def tracked(self) -> TrackedObjects:
        """The objects tracked now, read-only (``tracked.py``): references copied in C (a
        fraction of a millisecond at 100,000 objects), described later, off the event loop."""
        return TrackedObjects((*self._info.values(), *self._legacy.values()))

    def due(self, now_ms: int) -> bool:
        """Whether an object's end falls due by relay clock ``now_ms``: a call then writes it."""
        heap, seqs = self._deadlines, self._pending_seq
        while heap and seqs.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # an end cancelled or started again since
        return bool(heap) and heap[0][0] <= now_ms

    def _start_end(self, key: tuple[bool, Labels], obj: FluxObject, deadline: int) -> None:
        """``obj`` ends at ``deadline`` unless it is live again by then."""
        obj.deadline = deadline
        self._pending[key] = obj
        seq = self._pending_seq[key] = next(self._seq)
        heap = self._deadlines
        heapq.heappush(heap, (deadline, seq, key))
        if len(heap) > 2 * len(self._pending) + 1024:  # mostly entries that no longer count
            seqs = self._pending_seq
            self._deadlines = [
                (o.deadline, seqs[k], k) for k, o in self._pending.items() if o.deadline is not None
            ]
            heapq.heapify(self._deadlines)

    def _cancel_end(self, key: tuple[bool, Labels]) -> FluxObject | None:
        """The object whose end at ``key`` no longer comes (its heap entry stays, skipped)."""
        self._pending_seq.pop(key, None)
        obj = self._pending.pop(key, None)
        if obj is not None:
            obj.deadline = None
        return obj

    def apply(self, batch: Batch, now_ms: int | None, max_outputs: int | None) -> Rewritten:
        """The rules applied to ``batch``: the steady shortcut (``steady``) when ``max_outputs``
        is given and the batch is in the steady state, else ``rewrite``; the same effect on the
        state either way (``tests/unit/test_flux_steady.py`` holds them equal)."""
        if max_outputs is not None and now_ms is not None:
            found = self.steady(batch, now_ms, max_outputs)
            if found is not None:
                return Rewritten(Batch(batch.series, batch.metadata + found.families), found)
        return Rewritten(self.rewrite(batch, now_ms))

    def rewrite(self, batch: Batch, now_ms: int | None = None) -> Batch:
        """The batch to forward: inputs (unless ``keep_source`` is off), then synthesized series.

        ``now_ms`` is the relay clock (arrival time); without it the batch's newest Flux sample
        timestamp stands in. Pending ends that fall due are written even into a batch without
        Flux series, so pass ``now_ms`` for timely stale markers on quiet relays.
        """
        names = self._names
        self._encoded = None
        if not names:
            return batch
        mapped = self._operator_series(batch) if self._operator is not None else {}
        classify = self.classifier
        by_id = classify.by_id
        matched: dict[int, Route] = {}
        # Every Flux sample as (timestamp, is stale marker, series index, value, route), and
        # whether they already come in (timestamp, stale) order: a scrape's samples share one
        # timestamp, so they usually do and need no sort.
        events: list[_Event] = []
        append = events.append
        in_order = True
        last_ts: float = -math.inf
        last_stale = False
        for index, series in enumerate(batch.series):
            labels = series.labels
            route = by_id.get(labels)
            if route is None or route.labels is not labels:
                name = label_value(labels, "__name__")
                if name not in names:
                    continue
                route = classify.route(labels, name)
            if route is not NOT_FLUX:
                matched[index] = route
                for value, ts, _ in series.samples:
                    stale = value != value and float_bits(value) == STALE_NAN_BITS
                    if ts < last_ts or (ts == last_ts and last_stale and not stale):
                        in_order = False
                    last_ts, last_stale = ts, stale
                    append((ts, stale, index, value, route))
        if not matched and not mapped and not self._pending and now_ms is None:
            return batch
        self._advance_clock(batch, matched, events, now_ms)
        self._calls += 1
        emitter = Emitter(self._calls, self._encoder)
        untracked: set[int] = set()
        if events:
            if not in_order:
                events.sort(key=_event_order)  # stable: batch order on ties
            self._process(batch, events, emitter, untracked)
        self._commit_due(emitter)
        self._expire()
        self.stats.objects_tracked = len(self._info) + len(self._legacy)
        self.stats.objects_refused = len(self._refused)
        return self._output(batch, matched, untracked, emitter, mapped)

    def steady(self, batch: Batch, now_ms: int, max_outputs: int) -> Steady | None:
        """``rewrite(batch, now_ms)`` for a batch in the steady state, or None (nothing changed).

        The steady state is the scrape after scrape of a cluster where nothing happens: every
        Flux series is a ``gotk_resource_info`` series already routed to its tracked object,
        with one sample, all at one timestamp that is newer than anything seen for the object,
        on distinct objects, none of them with its end pending, and no end falls due. Then the
        rules come down to: each object takes the sample's state and writes its outputs at that
        timestamp, and nothing else happens. Written out here, that skips the events, the
        emitter and the ``Series`` of every output, which were most of what a Flux-heavy stream
        cost. The effect on the
        state and what is written are exactly ``rewrite()``'s (``Steady.body`` is what the
        relay would queue for its output; ``tests/unit/test_flux_steady.py`` runs both on
        messy traffic). Anything else (a new object, a stale marker, a resend, a Ready change,
        more than ``max_outputs`` outputs) returns None before changing anything, and the caller
        takes ``rewrite()``. Series whose metric name no rule reads are left alone, as there.
        """
        names = self._names
        if not names or self._operator_seen:
            return None
        # Ends pending elsewhere in the fleet do not matter here, unless one falls due now
        # (rewrite() writes it) or the object is one of this batch's (checked below).
        if self._pending and self.due(max(self._clock, now_ms)):
            return None
        encoder = self._encoder
        if encoder is None:
            return None
        stamp = [b""]  # the timestamp field the outputs are joined around (_steady_begin)

        def begin(ts: int | None, outputs: int) -> int | None:
            return self._steady_begin(ts, outputs, max_outputs, now_ms, encoder, stamp)

        if _STEADY is not None and not self._replicas:
            found = _STEADY.steady(
                batch.series,
                self.classifier.by_id.get,
                names,
                label_value,
                prefixes,
                encoder,
                begin,
                _JOIN,
                self.changed,
                STEADY_CHUNK_PIECES,
            )
            if found is None:
                return None
            groups, chunks, blocks, outputs, ts = found
        else:
            picked = self._steady_pick(batch, names, encoder)
            if picked is None:
                return None
            ts = picked[0][3] if picked else None
            outputs = sum(len(route.values) for _, route, _, _ in picked)
            clock = begin(ts, outputs)
            if clock is None:
                return None
            groups, chunks, blocks = self._steady_apply(picked, clock)
        self.stats.outputs_emitted += outputs
        self._expire()
        self.stats.objects_tracked = len(self._info) + len(self._legacy)
        self.stats.objects_refused = len(self._refused)
        newest = NEVER if ts is None else ts
        families: tuple[FamilyMetadata, ...] = ()
        if ts is not None:  # some object was written
            present = {m.family for m in batch.metadata}
            families = tuple(f for f in FORWARD_FAMILIES if f.family not in present)
        if blocks or not chunks:
            stamped(stamp[0])  # again: _expire() may have written other outputs since
            chunks.append(b"".join(blocks))
        return Steady(groups, tuple(chunks), outputs, newest, families)

    def _steady_pick(
        self, batch: Batch, names: frozenset[str], encoder: SeriesEncoder
    ) -> list[tuple[InfoObject, Route, Input, int]] | None:
        """``steady``'s first loop (``_steady.steady``'s reference): each routed series' object,
        route, input and timestamp, if every one is a quiet scrape of its object; else None.
        Changes nothing but the objects' cached pieces (``prefixes``)."""
        by_id = self.classifier.by_id
        replicas = self._replicas
        ts: int | None = None
        picked: list[tuple[InfoObject, Route, Input, int]] = []
        seen: set[int] = set()
        for series in batch.series:
            labels = series.labels
            route = by_id.get(labels)
            if route is None or route.labels is not labels:
                # label_value(labels, "__name__"), inlined: once per series that is not a routed
                # Flux input (bench.inprocess flux-heavy: 3-4% of a request with the call).
                name = labels[0][1] if labels and labels[0][0] == "__name__" else None
                if name is None:
                    name = label_value(labels, "__name__")
                if name in names:
                    return None  # unrouted yet, or not a Flux object: rewrite() decides
                continue
            obj = route.obj
            entry = route.input
            samples = series.samples
            if (
                not route.forward
                or not isinstance(obj, InfoObject)  # forward routes lead to _info's objects
                or obj.gone
                or obj.deadline is not None  # its end is pending: rewrite() cancels it
                or entry is None
                or entry.dropped
                or len(samples) != 1
                or series.histograms
                or id(obj) in seen
                or (replicas and route.replica != obj.leader())
            ):
                return None
            value, sample_ts, _ = samples[0]
            if ts is None:
                ts = sample_ts
            if (
                sample_ts != ts
                or value != value  # NaN: a stale marker, or a value rewrite() must weigh
                or sample_ts <= obj.out_last
                or sample_ts <= obj.newest_value_ts
                or sample_ts <= obj.state_ts
                or sample_ts <= entry.value_ts
                or sample_ts <= entry.stale_ts
            ):
                return None
            # emitter.prefixes' cache hit, inlined (one call per object and scrape otherwise).
            if obj.encoded_for is not route.values and prefixes(obj, route.values, encoder) is None:
                return None
            seen.add(id(obj))
            picked.append((obj, route, entry, sample_ts))
        return picked

    def _steady_begin(
        self,
        ts: int | None,
        outputs: int,
        max_outputs: int,
        now_ms: int,
        encoder: SeriesEncoder,
        stamp: list[bytes],
    ) -> int | None:
        """Between ``steady``'s loops: None if the outputs cannot be written at ``ts`` (None:
        nothing picked) or are too many; else the state starts to change, as rewrite() would
        change it, and the relay clock is returned."""
        if ts is not None:
            field = timestamp_field(ts, encoder)
            if field is None or outputs > max_outputs:
                return None
            stamp[0] = field
        self._encoded = None
        self._clock = clock = max(self._clock, now_ms)
        self._calls += 1
        stamped(stamp[0])  # the joins that follow read it
        return clock

    def _steady_apply(
        self, picked: list[tuple[InfoObject, Route, Input, int]], clock: int
    ) -> tuple[list[tuple[Outputs, Values]], list[bytes], list[bytes | bytearray]]:
        """``steady``'s second loop (``_steady.steady``'s reference): each picked object takes
        its sample's state and its outputs' pieces are joined, a chunk at a time."""
        groups: list[tuple[Outputs, Values]] = []
        blocks: list[bytes | bytearray] = []  # objects' pieces, joined a chunk at a time
        chunks: list[bytes] = []
        gap_from, gap = NEVER, 0  # the interval from the last newest value timestamp met
        for obj, route, entry, ts in picked:
            obj.last_seen = clock
            # InfoObject.observe and FluxObject.newer_value, inlined: per object and scrape,
            # the calls were a tenth of this method (bench.inprocess flux-heavy). The checks
            # made ts newer than its state, its newest value and its last output.
            obj.state_ts = ts
            obj.ready, obj.suspended, obj.values = route.ready, route.suspended, route.values
            previous = obj.newest_value_ts
            if previous != NEVER:
                if previous != gap_from:
                    gap_from, gap = previous, ts - previous
                obj.interval = gap  # objects scraped together share one int, not one each
            entry.value_ts = obj.newest_value_ts = obj.out_last = ts
            obj.open = True  # live: its newest input has no stale marker (deadline stays None)
            groups.append((obj.outputs, obj.values))
            blocks += obj.pieces
            if len(blocks) >= STEADY_CHUNK_PIECES:
                chunks.append(b"".join(blocks))
                blocks.clear()
        changed = self.changed
        if changed is not None:
            for found in picked:
                changed[found[0]] = None
        return groups, chunks, blocks

    # -- processing -----------------------------------------------------------------------

    def _advance_clock(
        self, batch: Batch, matched: dict[int, Route], events: list[_Event], now_ms: int | None
    ) -> None:
        if now_ms is not None:
            clock = now_ms
        elif matched:
            clock = max((event[0] for event in events), default=NEVER)
        else:
            clock = max((s.timestamp for x in batch.series for s in x.samples), default=NEVER)
        self._clock = max(self._clock, clock)

    def _process(
        self, batch: Batch, events: list[_Event], emitter: Emitter, untracked: set[int]
    ) -> None:
        """Apply the batch's Flux samples in timestamp order, one timestamp at a time.

        All of an object's samples at one timestamp (one scrape: the three conditions and the
        suspend gauge, or a new series and the old one's stale marker) are applied before the
        object is evaluated once for that timestamp, so their order inside the batch is moot.
        """
        series = batch.series
        clock = self._clock
        touched: dict[FluxObject, bool] = {}  # object → had a value sample, in first-touch order
        current = events[0][0] if events else NEVER
        for ts, stale, index, value, route in events:
            if ts != current:
                if touched:
                    self._evaluate(touched, current, emitter)
                current = ts
            obj = route.obj
            if obj is None or obj.gone:
                obj = self._find(route)
                if obj is None:
                    untracked.add(index)
                    continue
            obj.last_seen = clock
            entry = route.input
            if entry is None or entry.dropped:
                entry = route.input = obj.input_for(series[index].labels, route.replica)
            if stale:
                if ts > entry.stale_ts:
                    entry.stale_ts = ts
                if obj not in touched:
                    touched[obj] = False
            else:
                if ts > entry.value_ts:
                    entry.value_ts = ts
                if ts > obj.newest_value_ts:
                    obj.newer_value(ts)
                if self._replicas and route.replica != obj.leader():
                    touched.setdefault(obj, False)  # another replica's: only its liveness counts
                    continue
                obj.observe(route, ts, value)
                touched[obj] = True
        if touched:
            self._evaluate(touched, current, emitter)

    def _find(self, route: Route) -> FluxObject | None:
        """The route's object, admitted if new; remembered on the route (None: refused)."""
        obj: FluxObject | None
        if route.forward:
            obj = self._info.get(route.key) or self._admit_info(route)
        else:
            obj = self._legacy.get(route.key) or self._admit_legacy(route)
        route.obj, route.input = obj, None
        return obj

    def _evaluate(self, touched: dict[FluxObject, bool], ts: int, emitter: Emitter) -> None:
        """Emit what each touched object says at ``ts``, then start or cancel its end."""
        dropped = 0
        for obj, had_value in touched.items():
            if isinstance(obj, InfoObject):
                forward = True
                if had_value:
                    if ts > obj.out_last:
                        self._emit_all(obj, ts, obj.values, emitter)
                        obj.open = True
                    elif ts < obj.out_last or not obj.open:
                        dropped += len(obj.values)
            else:
                forward = False
                if had_value and isinstance(obj, LegacyObject):
                    self._reverse_emit(obj, ts, emitter)
            if self._live(obj):
                if obj.deadline is not None:
                    self._cancel_end((forward, obj.key))
            elif obj.open and obj.deadline is None:
                self._start_end((forward, obj.key), obj, self._clock + self._grace(obj))
        self.stats.out_of_order_dropped += dropped
        if self.changed is not None:
            self.changed.update(dict.fromkeys(touched))
        touched.clear()

    def _live(self, obj: FluxObject) -> bool:
        """Whether the object exists: its newest input is live, or with flux.replica_labels,
        one replica's newest input is (the others may have gone away)."""
        return obj.leader() is not None if self._replicas else obj.live()

    def _grace(self, obj: FluxObject) -> int:
        """How long an object that looks gone waits for a replacement input before its end is
        written: ``flux.stale_grace``, else one of its scrape intervals and a margin (a Ready
        change's two halves come from one scrape, so both have arrived by then)."""
        if self._grace_ms is not None:
            return self._grace_ms
        cap = self._grace_cap_ms
        return min(cap, obj.interval + AUTO_MARGIN_MS) if obj.interval > 0 else cap

    def _room(self, route: Route) -> bool:
        """Whether a new object may be tracked; a refusal is counted once per object (see
        ``_refused``), however many batches it is refused in."""
        key = (route.forward, route.key)
        refused = self._refused
        if len(self._info) + len(self._legacy) < self.config.max_objects:
            refused.pop(key, None)  # tracked now: refused again later, it counts again
            return True
        if key in refused:
            refused.move_to_end(key)
        else:
            self.stats.objects_rejected += 1
            if len(refused) >= self.config.max_objects:
                refused.popitem(last=False)
        refused[key] = self._clock
        return False

    def _admit_info(self, route: Route) -> InfoObject | None:
        if not self._room(route):
            return None
        classify = self.classifier
        outputs = classify.forward_outputs(route.key)
        values = classify.forward_values("Unknown", False)
        obj = InfoObject(route.key, route.kind, self._clock, outputs, values)
        self._track_info(route.key, obj)
        return obj

    def _admit_legacy(self, route: Route) -> LegacyObject | None:
        if not self._room(route):
            return None
        obj = self._legacy[route.key] = LegacyObject(route.key, route.kind, self._clock)
        return obj

    def _commit_due(self, emitter: Emitter) -> None:
        heap = self._deadlines
        if not heap:
            return
        clock, seqs = self._clock, self._pending_seq
        found: list[tuple[int, tuple[bool, Labels]]] = []
        while heap and heap[0][0] <= clock and len(found) < MAX_ENDS_PER_CALL:
            _, seq, key = heapq.heappop(heap)
            if seqs.get(key) == seq:
                found.append((seq, key))
        found.sort()  # in the order they began pending, as the pending dict keeps them
        changed = self.changed
        for _, key in found:
            obj = self._cancel_end(key)
            assert obj is not None
            if changed is not None:
                changed[obj] = None
            if not obj.open or self._live(obj):
                continue
            if isinstance(obj, InfoObject):
                self._end_info_object(obj, emitter)
            elif isinstance(obj, LegacyObject):
                self._close_info(obj, max(obj.end_ts(), obj.last_emit + 1), emitter)

    def _forget(self, forward: bool, key: Labels) -> None:
        found = self._untrack_info(key) if forward else self._legacy.pop(key)
        assert found is not None
        obj: FluxObject = found
        obj.gone = True
        self._cancel_end((forward, key))
        if self.changed is not None:
            self.forgotten.append(obj)
        self.stats.objects_expired += 1

    def _expire(self) -> None:
        cutoff = self._clock - self._expiry_ms
        aging = self._aging
        while aging and aging[-1][0] <= cutoff:
            _, forward, key = aging.pop()
            obj = (self._info if forward else self._legacy).get(key)
            # One seen again since is left to a full scan: the floor is at most the clock of
            # the last one, which its last_seen is past.
            if obj is not None and obj.last_seen <= cutoff:
                self._forget(forward, key)
        if self._expiry_floor > cutoff:
            return
        horizon = cutoff + max(self._expiry_ms // 16, 1)
        floor = self._clock
        aging = []
        tables: tuple[tuple[bool, dict[Labels, InfoObject] | dict[Labels, LegacyObject]], ...]
        tables = ((True, self._info), (False, self._legacy))
        for forward, table in tables:
            expired = [key for key, obj in table.items() if obj.last_seen <= cutoff]
            for key in expired:
                self._forget(forward, key)
            for key, obj in table.items():
                seen = obj.last_seen
                if seen <= horizon:
                    aging.append((seen, forward, key))
                elif seen < floor:
                    floor = seen
        aging.sort(key=operator.itemgetter(0), reverse=True)
        self._aging = aging
        refused = self._refused
        while refused:
            oldest, last = next(iter(refused.items()))  # the least recently refused
            if last > cutoff:
                floor = min(floor, last)
                break
            del refused[oldest]
        self._expiry_floor = floor

    # -- forward: gotk_resource_info → legacy ---------------------------------------------

    def _end_info_object(self, obj: InfoObject, emitter: Emitter) -> None:
        ts = max(obj.end_ts(), obj.out_last + 1)
        values = self._end_values
        if self.config.emit_deleted and self._exposed_elsewhere(obj):
            # Its exposer changed (a new kube-state-metrics pod reports it): the old
            # controllers' series just went stale then; Deleted 1 would fire the old alert's
            # join (max by object) for the lookback.
            values = (STALE_NAN,) * len(values)
        if values[0] != values[0]:  # stale markers (NaN)
            self.stats.stale_emitted += len(values)
        self._emit_all(obj, ts, values, emitter)
        obj.open = False

    def _emit_all(self, obj: InfoObject, ts: int, values: Values, emitter: Emitter) -> None:
        emitter.add(obj, FORWARD, ts, values)
        obj.out_last = ts
        self.stats.outputs_emitted += len(values)

    # -- reverse: legacy → gotk_resource_info ---------------------------------------------

    def _reverse_emit(self, obj: LegacyObject, ts: int, emitter: Emitter) -> None:
        winner = obj.winner()
        if winner == DELETED:  # the pre-2.1 controllers' word that the object is gone
            if obj.current is not None:
                self._close_info(obj, max(ts, obj.last_emit + 1), emitter)
            return
        if winner is None and obj.kind.has_ready:
            return  # between two statuses (the old one is 0, the new 1 not seen yet): wait
        desired = obj.info_series(winner)
        if desired is obj.current:
            if ts > desired.last:
                self._emit_info(obj, desired, ts, _ONE, emitter)
            elif ts < desired.last:
                self.stats.out_of_order_dropped += 1
            return
        # A new ready/suspended: end the open series and start the new one at the same instant,
        # never before anything already written for the object, so at most one is open.
        at = ts if ts > obj.last_emit else obj.last_emit + 1
        if obj.current is not None:
            self._close_info(obj, at, emitter)
        self._emit_info(obj, desired, at, _ONE, emitter)
        obj.current, obj.current_ready, obj.open = desired, winner, True

    def _close_info(self, obj: LegacyObject, ts: int, emitter: Emitter) -> None:
        if obj.current is None:
            return
        self._emit_info(obj, obj.current, ts, _STALE, emitter)
        self.stats.stale_emitted += 1
        obj.current, obj.current_ready, obj.open = None, None, False

    def _emit_info(
        self, obj: LegacyObject, info: InfoSeries, ts: int, value: Values, emitter: Emitter
    ) -> None:
        emitter.add(info, INFO, ts, value)
        info.last = ts
        obj.last_emit = max(obj.last_emit, ts)
        self.stats.outputs_emitted += 1

    # -- output ---------------------------------------------------------------------------

    def _operator_series(self, batch: Batch) -> dict[int, Series]:
        """The operator's series in KSM's shape, by their index in the batch (see operator.py)."""
        mapping = self._operator
        assert mapping is not None
        out: dict[int, Series] = {}
        for index, series in enumerate(batch.series):
            labels = series.labels
            if label_value(labels, "__name__") != OPERATOR_INFO:
                continue
            mapped = mapping.labels(labels)
            if mapped is not None:
                out[index] = Series(mapped, series.samples, (), (), INFO_METADATA)
        if out:
            self._operator_seen = True
        return out

    def _output(
        self,
        batch: Batch,
        matched: dict[int, Route],
        untracked: set[int],
        emitter: Emitter,
        mapped: dict[int, Series],
    ) -> Batch:
        removed: set[int] = set()
        if not self.config.keep_source:
            removed = (matched.keys() - untracked) | mapped.keys()
        if not emitter.labels and not removed and not mapped:
            return batch
        kept = (
            batch.series
            if not removed
            else tuple(s for i, s in enumerate(batch.series) if i not in removed)
        )
        synthesized = tuple(emitter.series())
        if emitter.blocks is not None and synthesized:
            self._encoded = (synthesized, b"".join(emitter.blocks), emitter.newest)
        present = {m.family for m in batch.metadata}
        written = dict(emitter.families)
        if mapped:
            written.setdefault(RESOURCE_INFO, INFO_METADATA)
        families = tuple(
            FamilyMetadata(family, metadata.type, metadata.help, metadata.unit)
            for family, metadata in written.items()
            if family not in present
        )
        return Batch(kept + synthesized + tuple(mapped.values()), batch.metadata + families)
