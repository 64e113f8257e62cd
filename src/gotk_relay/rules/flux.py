"""Flux object-state rewrites: ``gotk_resource_info`` (kube-state-metrics) ⇄ the legacy gauges.

Flux ≤ 2.1 controllers exposed, per object, ``gotk_reconcile_condition{type="Ready",status=...}``
(1 for the current status, 0 for the two others) and ``gotk_suspend_status``; Flux 2.2–2.5 removed
them in favour of one kube-state-metrics series ``gotk_resource_info{ready=...,suspended=...} 1``.
Dashboards and alerts written for either shape keep working when the relay synthesizes the other:

* ``mode: legacy``        gotk_resource_info → gotk_reconcile_condition ×3 (+ Deleted) and
  gotk_suspend_status ("forward");
* ``mode: resource_info`` the legacy pair → gotk_resource_info ("reverse");
* ``mode: both``          both, each from its own inputs only: synthesized series are appended
  to the output and never read back, so nothing is synthesized in a loop;
* ``mode: off``           the input batch object is returned as is.

Why this is stateful
--------------------
The two shapes put state in different places. KSM puts it in *labels*: when a Kustomization
goes from Ready=True to Ready=False, the series ``{ready="True"}`` ends (Prometheus writes a stale
marker, NaN bits 0x7ff0000000000002) and a new series ``{ready="False"}`` starts. The legacy shape
puts it in *values*: the same three series change value. Remote write shards by series, so the
new series and the old one's stale marker arrive in either order, often in different requests,
and a retried request can bring an old sample after newer ones. A stateless mapping would either
stale the legacy outputs on every Ready change (alerts flap, ``absent()`` fires) or let an old
sample flip them back. Hence one state record per Flux object.

Object identity and per-object state
------------------------------------
An object is the output label set without ``status`` (forward) or without ``ready``/``suspended``
(reverse): the labels that survive the mapping. KSM-only labels (``revision``, ``url``...) are
dropped, so a new revision, like a Ready change, is a new *input* series of the same object. For
every object the rewriter keeps

* its input series, by full label set: newest value timestamp and newest stale-marker timestamp
  (at most eight; the least recently seen goes first);
* the newest value sample seen (timestamp, ``ready``, ``suspended``): outputs always show it;
* the last timestamp emitted on its outputs. Forward outputs are always emitted together, so one
  number serves all of them; reverse keeps one per info series, since ``ready``/``suspended``
  changes start a new one;
* whether its outputs are open (carry a value, not yet ended) and, if it looks gone, when to end
  them.

Rules, in the order samples are processed: a batch's Flux samples sorted by timestamp (stable),
and all of an object's samples at one timestamp applied before the object is evaluated once for
it, so the order of series inside a batch does not matter:

1. A value sample updates the object's state only if it is newer than every value seen; outputs
   are emitted at the sample's timestamp only if that is after the last one emitted. Anything
   older is dropped and counted (``stats.out_of_order_dropped``): a late sample of the old input
   cannot flip outputs back. The same timestamp again on an open object (a resend, the other
   series of the same scrape) is the point already written and is skipped silently.
2. The object is *live* while the input holding its newest value timestamp has no stale marker
   at or after it. Asking only about the newest input (rather than "any input without a stale
   marker") keeps a superseded series whose stale marker was lost from holding the object open
   forever: KSM exposes one series per object at any time, so an older one is superseded anyway.
3. When an object with open outputs stops being live, its outputs are not staled at once: the
   replacement series of a Ready change may still be in flight in another request. The end is
   pending for ``stale_grace`` seconds of relay clock; any live input in the meantime cancels it.
   When it is due, every output gets a stale marker at the newest input stale-marker timestamp,
   or at last-emitted + 1 ms if that is not later. ``stale_grace: 0`` ends at the end of the
   same ``rewrite()`` call. Reverse mode ends an info series at once on ``status="Deleted"`` = 1.
4. State is bounded: at most ``max_objects`` objects (a new object beyond that is not tracked,
   counted in ``stats.objects_rejected`` on each refusal, and its input series are forwarded even
   with ``keep_source: false``, so nothing is lost); an object not seen for ``idle_expiry``
   seconds of relay clock is forgotten without emitting anything (its outputs then fade after the
   receiver's lookback, 5 minutes in Prometheus).

The relay clock is ``now_ms`` when given (the server passes arrival wall-clock time), else the
newest timestamp among the batch's Flux samples; it never goes backwards. Nothing here reads the
wall clock, so tests are deterministic.

Semantic choices
----------------
* ``emit_deleted``: the pre-2.1 recorder set, on deletion, ``status="Deleted"`` to 1 and
  True/False/Unknown to 0, and the controllers set ``gotk_suspend_status`` to 0. With the option
  on, live objects carry ``status="Deleted"`` 0, and an object's end writes that snapshot (Deleted
  1, the others 0, suspend 0) at the end timestamp *instead of* stale markers. The old alert
  ``max(False) by (...) + on(...) max(Deleted) by (...) * 2 == 1`` then resolves (0 + 2 ≠ 1);
  without stale markers the snapshot stays visible for the receiver's lookback (5 minutes), just
  as the old controllers kept exposing it. Any end of an identity counts, including a change of a
  kept label such as KSM's ``pod`` after a restart.
* ``gotk_resource_info`` is typed GAUGE: KSM declares the metric ``info``, but renders it as
  ``# TYPE gotk_resource_info gauge`` in the Prometheus text format (``SanitizeHeaders``), which is
  what Prometheus scrapes and forwards, and every backend knows gauges. Its help text is
  "The current state of a Flux resource." (Flux's config writes one text per kind, "The current
  state of a Flux <Kind> resource."; one family needs one text).
* Reverse synthesis writes no ``ready`` label for Alert and Provider, as KSM does not for them.
  ``set_job`` and ``label_shape`` concern forward outputs only.
* A KSM label that collided with a scrape target label (``endpoint`` of a Bucket under a
  ServiceMonitor, which adds ``endpoint="http"``) arrives as ``exported_<name>``: then the
  ``exported_`` one is KSM's and dropped, and the plain one, the scrape's, is kept.

Not thread-safe: one rewriter belongs to one asyncio loop, and ``rewrite()`` is synchronous, so
calls cannot interleave there.

Cost
----
``rewrite()`` runs on every request that holds Flux series, ~100 of them per 2000-series request
in a busy cluster, so the steady state (the same label sets every scrape, one timestamp per
scrape) is kept to a few µs per series: a label set's route remembers its object and input entry
(a labels tuple does not cache its hash, and each lookup hashed ~14 pairs), routes are also found
by the identity of the labels tuple a caching decoder (``wire.picked``) hands over, output label
sets and the values they take per state are built once per object, emissions are collected by
identity rather than by labels, and events already in timestamp order are not sorted. None of it
changes what is written: ``tests/unit/test_flux_speed_equivalence.py`` holds the implementation
before these changes and compares the two on long, messy traffic. A scrape in which nothing
changed can skip even that (``steady``: no events, no emitter, no ``Series`` per output), and
``tests/unit/test_flux_steady.py`` compares the relay with and without it.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from itertools import repeat
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..model import (
    STALE_NAN,
    STALE_NAN_BITS,
    Batch,
    FamilyMetadata,
    Labels,
    Metadata,
    MetricType,
    Sample,
    Series,
    float_bits,
    labels_from,
)
from ..units import parse_duration
from ..wire import rw1
from .flux_kinds import BY_KIND, DEFAULT_VERSIONS, FluxKind, suggest

RESOURCE_INFO: Final = "gotk_resource_info"
RECONCILE_CONDITION: Final = "gotk_reconcile_condition"
SUSPEND_STATUS: Final = "gotk_suspend_status"

CONDITION_HELP: Final = "The current condition status of a GitOps Toolkit resource reconciliation."
SUSPEND_HELP: Final = "The current suspend status of a GitOps Toolkit resource."
INFO_HELP: Final = "The current state of a Flux resource."
CONDITION_METADATA: Final = Metadata(MetricType.GAUGE, CONDITION_HELP)
SUSPEND_METADATA: Final = Metadata(MetricType.GAUGE, SUSPEND_HELP)
INFO_METADATA: Final = Metadata(MetricType.GAUGE, INFO_HELP)

STATUSES: Final = ("True", "False", "Unknown")
DELETED: Final = "Deleted"
_LEGACY_STATUSES: Final = frozenset((*STATUSES, DELETED))

# Labels KSM's Flux config writes on every kind besides name/exported_namespace.
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
_DEFAULT_GRACE: Final = 60.0
_VERSION: Final = re.compile(r"v\d+(?:(?:alpha|beta)\d+)?")


def _seconds(value: object, field: str) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f"flux.{field}: {value!r} is not a duration; write seconds (3600) or a Prometheus "
            "duration such as '1h' or '90s'"
        ) from None


class FluxConfig(BaseModel):
    """The ``flux:`` section of the relay configuration.

    Frozen, so a running rewriter's rules cannot change under it: a reload with an equal section
    keeps the old rewriter (and its state), any other builds a new one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["legacy", "resource_info", "both", "off"] = "legacy"
    keep_source: bool = True
    label_shape: Literal["stored", "raw"] = "stored"
    controller_namespace: str = "flux-system"
    set_job: bool = False
    emit_deleted: bool = False
    versions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VERSIONS))
    max_objects: int = 100_000
    idle_expiry: float = 3600.0
    stale_grace: float = _DEFAULT_GRACE  # or half of idle_expiry when that is shorter

    @model_validator(mode="before")
    @classmethod
    def _grace_default(cls, data: object) -> object:
        """Without an explicit stale_grace, a short idle_expiry halves it rather than fail."""
        if isinstance(data, dict) and "stale_grace" not in data and "idle_expiry" in data:
            try:
                expiry = _seconds(data["idle_expiry"], "idle_expiry")
            except ValueError:
                return data  # reported by the field validator
            if 0 < expiry <= _DEFAULT_GRACE:
                return {**data, "stale_grace": expiry / 2}
        return data

    @field_validator("idle_expiry", "stale_grace", mode="before")
    @classmethod
    def _duration(cls, value: object, info: ValidationInfo) -> float:
        return _seconds(value, info.field_name or "duration")

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_null(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, version in value.items():
            if kind not in BY_KIND:
                raise ValueError(f"flux.versions: unknown kind {kind!r}; {suggest(kind)}")
            if "/" in version:
                raise ValueError(
                    f"flux.versions.{kind}: {version!r} names a group; write the version only, "
                    f"e.g. {version.rsplit('/', 1)[1]!r}"
                )
            if not _VERSION.fullmatch(version):
                raise ValueError(
                    f"flux.versions.{kind}: {version!r} is not an API version; write one like "
                    "'v1' or 'v2beta1'"
                )
        return {**DEFAULT_VERSIONS, **value}

    @field_validator("controller_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "flux.controller_namespace: must not be empty; set the namespace Flux's "
                "controllers run in (usually flux-system)"
            )
        return value

    @field_validator("max_objects")
    @classmethod
    def _max_objects(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"flux.max_objects: {value} tracks nothing; set at least 1 (the default is 100000)"
            )
        return value

    @model_validator(mode="after")
    def _durations(self) -> FluxConfig:
        if self.idle_expiry <= 0:
            raise ValueError("flux.idle_expiry: must be positive; the default is 3600 (1h)")
        if self.stale_grace < 0:
            raise ValueError("flux.stale_grace: must not be negative; 0 ends objects at once")
        if self.stale_grace >= self.idle_expiry:
            raise ValueError(
                f"flux.stale_grace ({self.stale_grace:g}s) must be shorter than flux.idle_expiry "
                f"({self.idle_expiry:g}s), or objects would be forgotten before their end; "
                "lower stale_grace or raise idle_expiry"
            )
        return self


@dataclass(slots=True)
class FluxStats:
    """What telemetry reads: ``objects_tracked`` is a gauge, the rest are counters."""

    objects_tracked: int = 0
    outputs_emitted: int = 0  # synthesized samples, stale markers included
    out_of_order_dropped: int = 0  # output samples not written: not after the last one written
    stale_emitted: int = 0
    objects_expired: int = 0
    objects_rejected: int = 0  # refusals of a new object at max_objects, one per batch


# Synthesized series written together: their labels, and their metadata in the same order.
_Outputs = tuple[tuple[Labels, ...], tuple[Metadata, ...]]
_Values = tuple[float, ...]  # one per output
_Families = tuple[tuple[str, Metadata], ...]  # the families of an _Outputs, in order
# Values an owner wrote, and its outputs' encodings up to each timestamp field (then b""), so
# that ``timestamp.join`` of them is the remote write 1.0 encoding of one scrape's outputs.
_Encoded = tuple[_Values, tuple[bytes, ...]]
_FORWARD_FAMILIES: Final[_Families] = (
    (RECONCILE_CONDITION, CONDITION_METADATA),
    (SUSPEND_STATUS, SUSPEND_METADATA),
)
_INFO_FAMILIES: Final[_Families] = ((RESOURCE_INFO, INFO_METADATA),)
# The metadata rewrite() adds to a batch whose forward objects wrote outputs.
FORWARD_FAMILIES: Final = tuple(
    FamilyMetadata(family, meta.type, meta.help, meta.unit) for family, meta in _FORWARD_FAMILIES
)


class Steady(NamedTuple):
    """What ``FluxRewriter.steady`` wrote: the relay queues ``body`` (then ``families``' metadata)
    where it would queue ``rewrite()``'s synthesized series, and the federate store keeps each
    group's outputs at ``newest``."""

    groups: list[tuple[_Outputs, _Values]]  # per object: its outputs and the values written
    body: bytes  # the remote write 1.0 encoding of the synthesized series, in rewrite()'s order
    outputs: int  # synthesized series, one sample each
    newest: int  # their timestamp
    families: tuple[FamilyMetadata, ...]  # the metadata rewrite() would append to the batch


_ONE: Final[_Values] = (1.0,)
_STALE: Final[_Values] = (STALE_NAN,)
# The NamedTuples' own __new__ spells out every default by keyword; the output is built per
# sample, so it is made with tuple.__new__ and every field given (the same values either way).
_new = tuple.__new__


class _Route:
    """What an input series is, worked out once per label set (cached), and where its state is.

    The classification never changes for a label set. ``obj`` and ``input`` remember the state
    record and input entry this label set last updated, so a steady scrape reaches them without
    hashing the object's identity or the series' labels again (a labels tuple does not cache its
    hash: each lookup hashes every pair). Both are checked on use, since expiry
    (``_Object.gone``) and input eviction (``_Input.dropped``) retire them.
    """

    __slots__ = (
        "forward",
        "input",
        "key",
        "kind",
        "labels",
        "obj",
        "ready",
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
        values: _Values = (),
    ) -> None:
        self.labels = labels  # the label set it was worked out for (this very tuple)
        self.forward = forward  # gotk_resource_info → legacy; False: legacy → gotk_resource_info
        self.key = key  # the object's identity: output labels without name/type/status/ready/...
        self.kind = kind
        self.ready = ready  # forward only
        self.suspended = suspended  # forward only
        self.values = values  # forward only: what the outputs say for ready/suspended
        self.status = status  # reverse only: the condition status, "" for gotk_suspend_status
        self.obj: _Object | None = None
        self.input: _Input | None = None


class _Input:
    __slots__ = ("dropped", "stale_ts", "value_ts")

    def __init__(self) -> None:
        self.value_ts = _NEVER
        self.stale_ts = _NEVER
        self.dropped = False  # evicted from its object's inputs


class _Object:
    """Liveness bookkeeping shared by both directions."""

    __slots__ = (
        "deadline",
        "gone",
        "inputs",
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
        self.open = False  # outputs carry a value and have not been ended since
        self.last_seen = clock
        self.deadline: int | None = None  # relay clock at which a pending end is due
        self.gone = False  # expired: no longer in the rewriter's tables

    def input_for(self, labels: Labels) -> _Input:
        entry = self.inputs.get(labels)
        if entry is None:
            if len(self.inputs) >= _MAX_INPUTS:
                self._evict()
            entry = self.inputs[labels] = _Input()
        return entry

    def _evict(self) -> None:
        oldest = min(
            self.inputs, key=lambda k: max(self.inputs[k].value_ts, self.inputs[k].stale_ts)
        )
        self.inputs.pop(oldest).dropped = True
        self.newest_value_ts = max((i.value_ts for i in self.inputs.values()), default=_NEVER)

    def live(self) -> bool:
        newest = self.newest_value_ts
        for entry in self.inputs.values():
            if entry.value_ts == newest and newest > entry.stale_ts:
                return True
        return False

    def end_ts(self) -> int:
        return max((i.stale_ts for i in self.inputs.values()), default=_NEVER)

    def observe(self, route: _Route, ts: int, value: float) -> None:
        raise NotImplementedError


class _InfoObject(_Object):
    """A Flux object seen through gotk_resource_info; its outputs are the legacy series."""

    __slots__ = (
        "emit_at",
        "emit_call",
        "encoded",
        "out_last",
        "outputs",
        "ready",
        "state_ts",
        "suspended",
        "values",
    )

    def __init__(
        self, key: Labels, kind: FluxKind, clock: int, outputs: _Outputs, values: _Values
    ) -> None:
        super().__init__(key, kind, clock)
        self.outputs = outputs  # condition series (STATUSES [+ Deleted]) then gotk_suspend_status
        self.state_ts = _NEVER
        self.ready = "Unknown"
        self.suspended = False
        self.values = values  # what the outputs say for ready/suspended
        self.out_last = _NEVER
        self.emit_call = 0  # the rewrite() call that last emitted it (see _Emitter.add)
        self.emit_at = 0  # where its outputs are in that call's emitter
        self.encoded: _Encoded | None = None  # see _Emitter.encode

    def observe(self, route: _Route, ts: int, value: float) -> None:
        """A value sample: the newest one decides what the outputs say (first wins on ties)."""
        if ts > self.state_ts:
            self.state_ts, self.ready, self.suspended = ts, route.ready, route.suspended
            self.values = route.values


class _InfoSeries:
    """One gotk_resource_info series a legacy object may write (one per ready/suspended)."""

    __slots__ = ("emit_at", "emit_call", "encoded", "labels", "last", "outputs")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.outputs: _Outputs = ((labels,), (INFO_METADATA,))
        self.last = _NEVER  # the last timestamp written on it
        self.emit_call = 0  # as _InfoObject's
        self.emit_at = 0
        self.encoded: _Encoded | None = None


class _LegacyObject(_Object):
    """A Flux object seen through the legacy gauges; its output is one gotk_resource_info."""

    __slots__ = ("cond", "current", "current_ready", "infos", "last_emit", "suspend")

    def __init__(self, key: Labels, kind: FluxKind, clock: int) -> None:
        super().__init__(key, kind, clock)
        self.cond: dict[str, tuple[int, float]] = {}  # status → newest (timestamp, value)
        self.suspend: tuple[int, float] | None = None
        self.current: _InfoSeries | None = None  # the open info series
        self.current_ready: str | None = None
        # Every info series ever written for the object, by (ready, suspended) as they appear
        # in its labels: at most 4 × 3, and one labels tuple each, so "the same series" is `is`.
        self.infos: dict[tuple[str | None, bool | None], _InfoSeries] = {}
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

    def info_series(self, ready: str | None) -> _InfoSeries:
        """The info series for ``ready`` and the current suspend value."""
        shown_ready = ready if self.kind.has_ready else None
        shown_suspend = None if self.suspend is None else self.suspend[1] != 0.0
        found = self.infos.get((shown_ready, shown_suspend))
        if found is None:
            labels = dict(self.key)
            labels["__name__"] = RESOURCE_INFO
            if shown_ready is not None:
                labels["ready"] = shown_ready
            if shown_suspend is not None:
                labels["suspended"] = "true" if shown_suspend else "false"
            found = self.infos[(shown_ready, shown_suspend)] = _InfoSeries(labels_from(labels))
        return found


class _Emitter:
    """Synthesized samples of one rewrite() call: one entry per output series, in first-emission
    order, kept as flat lists that become Series at the end.

    Whatever emits (a forward object, whose outputs are always written together, or one info
    series of a reverse object) owns its output set, and no two owners have outputs with equal
    labels. So rather than look its labels up, an owner is stamped with the call that last
    emitted it and where its outputs are: a second emission in the same call (several timestamps
    in one batch) appends to the samples already there.
    """

    __slots__ = (
        "blocks",
        "call",
        "families",
        "labels",
        "metadata",
        "newest",
        "samples",
        "shared",
        "shared_ts",
    )

    def __init__(self, call: int) -> None:
        self.call = call  # unique per rewrite() call of one rewriter, never 0
        # The remote write 1.0 encoding of the outputs so far, an owner's outputs at a time, as
        # long as every output series has one sample (see encode); then None.
        self.blocks: list[bytes] | None = []
        self.newest = _NEVER  # newest timestamp in ``blocks``
        self.labels: list[Labels] = []
        self.metadata: list[Metadata] = []
        self.samples: list[tuple[Sample, ...]] = []
        self.families: dict[str, Metadata] = {}
        # Objects in one state write the same values at one scrape's timestamp: the samples
        # are equal (and immutable), so they are built once per values tuple and timestamp.
        # Each entry holds its values tuple, so the id it is filed under is not reused.
        self.shared: dict[int, tuple[_Values, tuple[tuple[Sample], ...]]] = {}
        self.shared_ts = _NEVER

    def add(
        self,
        owner: _InfoObject | _InfoSeries,
        families: _Families,
        ts: int,
        values: _Values,
    ) -> None:
        """Add a sample to each of the owner's outputs; ``families`` are theirs, in order."""
        if owner.emit_call != self.call:
            owner.emit_call = self.call
            owner.emit_at = len(self.labels)
            outputs = owner.outputs
            self.labels += outputs[0]
            self.metadata += outputs[1]
            if ts != self.shared_ts:
                self.shared.clear()
                self.shared_ts = ts
            known = self.shared.get(id(values))
            if known is None:
                fresh = tuple([(_new(Sample, (value, ts, 0)),) for value in values])
                known = self.shared[id(values)] = (values, fresh)
            self.samples += known[1]
            if families[0][0] not in self.families:
                self.families.update(families)
            if self.blocks is not None:
                self.encode(owner, ts, values)
        else:
            start = owner.emit_at
            for offset, value in enumerate(values):
                self.samples[start + offset] += (_new(Sample, (value, ts, 0)),)
            self.blocks = None  # a series with two samples: left to the encoder

    def encode(self, owner: _InfoObject | _InfoSeries, ts: int, values: _Values) -> None:
        """Add the encoding of the owner's outputs, just added with ``values`` at ``ts``.

        An owner keeps its outputs' bytes up to each timestamp field for the values it last
        wrote (an object's state lasts many scrapes), so a scrape's four series are one join
        here instead of four passes through the encoder. The relay queues these bytes when
        they are the whole of what it queues (``FluxRewriter.encoded``).
        """
        blocks = self.blocks
        assert blocks is not None
        encoded = owner.encoded
        if encoded is None or encoded[0] is not values:
            prefixes = rw1.series_prefixes(owner.outputs[0], values)
            if prefixes is None:
                self.blocks = None
                return
            encoded = owner.encoded = (values, (*prefixes, b""))
        stamp = rw1.timestamp_field(ts) if type(ts) is int and ts else b""
        if len(stamp) != rw1.STAMP_FIELD_LEN:
            self.blocks = None
            return
        blocks.append(stamp.join(encoded[1]))
        if ts > self.newest:
            self.newest = ts

    def series(self) -> list[Series]:
        """The synthesized series, built by C iterators: a Series per output is much of the
        rewriter's work in steady state, so no Python bytecode runs per output here."""
        count = len(self.labels)
        fields = zip(
            self.labels,
            self.samples,
            repeat((), count),
            repeat((), count),
            self.metadata,
            repeat(0, count),
            strict=True,
        )
        return list(map(_new, repeat(Series, count), fields))


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


_Event = tuple[int, bool, int, float, _Route]  # timestamp, stale marker, series index, value


def _event_order(event: _Event) -> tuple[int, bool]:
    return event[0], event[1]


_SHARED_PAIRS_MAX: Final = 16_384


# A label set of a Flux metric name that is not a Flux object (cached like a route).
_NOT_FLUX: Final = _Route((), False, (), next(iter(BY_KIND.values())))


class FluxRewriter:
    """Turns each incoming batch into the batch to forward; see the module docstring.

    ``rewrite()`` returns the input object itself when it has nothing to add or remove, so a
    relay whose traffic holds no Flux series pays one name check per series.
    """

    def __init__(self, config: FluxConfig) -> None:
        self.config = config
        self.stats = FluxStats()
        names: set[str] = set()
        if config.mode in ("legacy", "both"):
            names.add(RESOURCE_INFO)
        if config.mode in ("resource_info", "both"):
            names.update((RECONCILE_CONDITION, SUSPEND_STATUS))
        self._names = frozenset(names)
        self._statuses = (*STATUSES, DELETED) if config.emit_deleted else STATUSES
        self._grace_ms = round(config.stale_grace * 1000)
        self._expiry_ms = round(config.idle_expiry * 1000)
        self._info: dict[Labels, _InfoObject] = {}
        self._legacy: dict[Labels, _LegacyObject] = {}
        self._pending: dict[tuple[bool, Labels], _Object] = {}
        self._routes: dict[Labels, _Route] = {}
        # The same routes by the id of the labels tuple they were worked out for: a decoder
        # that caches label sets (wire.picked) hands the same tuple every scrape, found here
        # without hashing its pairs. Each route holds its tuple, so an id here is never reused.
        self._routes_by_id: dict[int, _Route] = {}
        self._route_cache_max = max(4096, 4 * config.max_objects)
        self._clock = _NEVER
        self._expiry_floor = _NEVER  # no object's last_seen is below this
        self._calls = 0  # rewrite() calls that emitted or could have: stamps emissions
        self._values: dict[tuple[str, bool], _Values] = {}  # forward outputs per ready/suspended
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}  # see _shared_pair
        # The last rewrite()'s synthesized series, their encoding and newest timestamp.
        self._encoded: tuple[tuple[Series, ...], bytes, int] | None = None
        if config.emit_deleted:
            deleted = tuple(1.0 if status == DELETED else 0.0 for status in self._statuses)
            self._end_values: _Values = (*deleted, 0.0)
        else:
            self._end_values = (STALE_NAN,) * (len(self._statuses) + 1)

    def encoded(self, series: tuple[Series, ...]) -> tuple[bytes, int] | None:
        """The remote write 1.0 encoding of ``series`` and their newest timestamp, if ``series``
        are exactly the last rewrite()'s synthesized series and it could write them itself.

        ``rw1.encode(Batch(series))`` would give the same bytes (the tests hold them equal): this
        saves the relay encoding series the rewriter has just put together (see
        ``_Emitter.encode``). Each series then has one sample, so ``len(series)`` is its count.
        """
        found = self._encoded
        if found is None or len(series) != len(found[0]):
            return None
        if not all(map(operator.is_, series, found[0])):
            return None
        return found[1], found[2]

    def may_match(self, name: str) -> bool:
        """Whether series named ``name`` can be inputs in this mode (for a decode fast path)."""
        return name in self._names

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
        routes = self._routes
        by_id = self._routes_by_id
        matched: dict[int, _Route] = {}
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
            route = by_id.get(id(labels))
            if route is None or route.labels is not labels:
                if labels and labels[0][0] == "__name__":
                    name = labels[0][1]
                else:
                    name = _metric_name(labels)
                if name not in names:
                    continue
                route = routes.get(labels)
                if route is None:
                    route = self._route(labels, name)
            if route is not _NOT_FLUX:
                matched[index] = route
                for value, ts, _ in series.samples:
                    stale = value != value and float_bits(value) == STALE_NAN_BITS
                    if ts < last_ts or (ts == last_ts and last_stale and not stale):
                        in_order = False
                    last_ts, last_stale = ts, stale
                    append((ts, stale, index, value, route))
        if not matched and not self._pending and now_ms is None:
            return batch
        self._advance_clock(batch, matched, events, now_ms)
        self._calls += 1
        emitter = _Emitter(self._calls)
        untracked: set[int] = set()
        if events:
            if not in_order:
                events.sort(key=_event_order)  # stable: batch order on ties
            self._process(batch, events, emitter, untracked)
        self._commit_due(emitter)
        self._expire()
        self.stats.objects_tracked = len(self._info) + len(self._legacy)
        return self._output(batch, matched, untracked, emitter)

    def steady(self, batch: Batch, now_ms: int, max_outputs: int) -> Steady | None:
        """``rewrite(batch, now_ms)`` for a batch in the steady state, or None (nothing changed).

        The steady state is the scrape after scrape of a cluster where nothing happens: every
        Flux series is a ``gotk_resource_info`` series already routed to its tracked object,
        with one sample, all at one timestamp that is newer than anything seen for the object,
        on distinct objects, and no object's end is pending. Then the rules come down to: each
        object takes the sample's state and writes its outputs at that timestamp, and nothing
        else happens. Written out here, that skips the events, the emitter and the ``Series``
        of every output, which were most of what a Flux-heavy stream cost. The effect on the
        state and what is written are exactly ``rewrite()``'s (``Steady.body`` is what the
        relay would queue for its output; ``tests/unit/test_flux_steady.py`` runs both on
        messy traffic). Anything else (a new object, a stale marker, a resend, a Ready change,
        more than ``max_outputs`` outputs) returns None before changing anything, and the caller
        takes ``rewrite()``. Series whose metric name no rule reads are left alone, as there.
        """
        names = self._names
        if not names or self._pending:
            return None
        by_id = self._routes_by_id
        ts: int | None = None
        picked: list[tuple[_InfoObject, _Route, _Input, tuple[bytes, ...]]] = []
        seen: set[int] = set()
        outputs = 0
        for series in batch.series:
            labels = series.labels
            route = by_id.get(id(labels))
            if route is None or route.labels is not labels:
                name = labels[0][1] if labels and labels[0][0] == "__name__" else None
                if name is None:
                    name = _metric_name(labels)
                if name in names:
                    return None  # unrouted yet, or not a Flux object: rewrite() decides
                continue
            obj = route.obj
            entry = route.input
            samples = series.samples
            if (
                not route.forward
                or not isinstance(obj, _InfoObject)  # forward routes lead to _info's objects
                or obj.gone
                or entry is None
                or entry.dropped
                or len(samples) != 1
                or series.histograms
                or id(obj) in seen
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
            values = route.values
            encoded = obj.encoded
            if encoded is None or encoded[0] is not values:
                prefixes = rw1.series_prefixes(obj.outputs[0], values)
                if prefixes is None:
                    return None
                encoded = obj.encoded = (values, (*prefixes, b""))
            seen.add(id(obj))
            outputs += len(values)
            picked.append((obj, route, entry, encoded[1]))
        stamp = b""
        if ts is None:
            ts = _NEVER  # nothing picked: no object is written
        else:
            stamp = rw1.timestamp_field(ts) if type(ts) is int and ts else b""
            if len(stamp) != rw1.STAMP_FIELD_LEN or outputs > max_outputs:
                return None
        # From here on the state changes, as rewrite() would change it.
        self._encoded = None
        self._clock = clock = max(self._clock, now_ms)
        self._calls += 1
        groups: list[tuple[_Outputs, _Values]] = []
        blocks: list[bytes] = []
        for obj, route, entry, parts in picked:
            obj.last_seen = clock
            entry.value_ts = obj.newest_value_ts = obj.state_ts = obj.out_last = ts
            obj.ready, obj.suspended = route.ready, route.suspended
            obj.values = values = route.values
            obj.open = True  # live: its newest input has no stale marker (deadline stays None)
            groups.append((obj.outputs, values))
            blocks.append(stamp.join(parts))
        self.stats.outputs_emitted += outputs
        self._expire()
        self.stats.objects_tracked = len(self._info) + len(self._legacy)
        newest = ts
        families: tuple[FamilyMetadata, ...] = ()
        if picked:
            present = {m.family for m in batch.metadata}
            families = tuple(f for f in FORWARD_FAMILIES if f.family not in present)
        return Steady(groups, b"".join(blocks), outputs, newest, families)

    # -- classification -------------------------------------------------------------------

    def _route(self, labels: Labels, name: str) -> _Route:
        if name == RESOURCE_INFO:
            route = self._classify_info(labels)
        else:
            route = self._classify_legacy(labels, name)
        if len(self._routes) >= self._route_cache_max:
            self._routes.clear()
            self._routes_by_id.clear()
        self._routes[labels] = route
        if route is not _NOT_FLUX:
            self._routes_by_id[id(labels)] = route
        return route

    def _classify_info(self, labels: Labels) -> _Route:
        given = dict(labels)
        kind = BY_KIND.get(_ksm_value(given, "customresource_kind"))
        if kind is None or _ksm_value(given, "customresource_group") != kind.group:
            return _NOT_FLUX
        if not given.get("name"):
            return _NOT_FLUX
        own = _KSM_OWN[kind.kind]
        # Label name → pair; the input's own pairs are kept (see _shared_pair).
        out: dict[str, tuple[str, str]] = {}
        for pair in labels:
            key = pair[0]
            if key in own:
                if _EXPORTED + key in given:  # the scrape's label; KSM's was renamed
                    out[key] = pair
            elif not (key.startswith(_EXPORTED) and key[len(_EXPORTED) :] in own):
                out[key] = pair
        for key in ("__name__", "type", "status", "exported_namespace"):
            out.pop(key, None)
        namespace = given.get("exported_namespace") or given.get("namespace", "")
        share = self._shared_pair
        if self.config.label_shape == "stored":
            out["exported_namespace"] = share(("exported_namespace", namespace))
            out["namespace"] = share(("namespace", self.config.controller_namespace))
        else:
            out["namespace"] = share(("namespace", namespace))
        if self.config.set_job:
            out["job"] = share(("job", kind.controller))
        out["kind"] = share(("kind", kind.kind))
        ready = _ksm_value(given, "ready")
        ready = ready if ready in STATUSES else "Unknown"
        suspended = _ksm_value(given, "suspended") == "true"
        return _Route(
            labels,
            True,
            labels_from(out.values()),
            kind,
            ready=ready,
            suspended=suspended,
            values=self._forward_values(ready, suspended),
        )

    def _forward_values(self, ready: str, suspended: bool) -> _Values:
        values = self._values.get((ready, suspended))
        if values is None:
            conditions = tuple(1.0 if status == ready else 0.0 for status in self._statuses)
            values = self._values[(ready, suspended)] = (*conditions, 1.0 if suspended else 0.0)
        return values

    def _classify_legacy(self, labels: Labels, name: str) -> _Route:
        given = dict(labels)
        kind = BY_KIND.get(given.get("kind", ""))
        if kind is None or not given.get("name"):
            return _NOT_FLUX
        status = ""
        if name == RECONCILE_CONDITION:
            status = given.get("status", "")
            if given.get("type") != "Ready" or status not in _LEGACY_STATUSES:
                return _NOT_FLUX
        out = {pair[0]: pair for pair in labels if pair[0] not in _LEGACY_OWN}
        share = self._shared_pair
        out["customresource_group"] = share(("customresource_group", kind.group))
        out["customresource_kind"] = share(("customresource_kind", kind.kind))
        out["customresource_version"] = share(
            ("customresource_version", self.config.versions[kind.kind])
        )
        namespace = given.get("exported_namespace") or given.get("namespace", "")
        out["exported_namespace"] = share(("exported_namespace", namespace))
        return _Route(labels, False, labels_from(out.values()), kind, status=status)

    def _shared_pair(self, pair: tuple[str, str]) -> tuple[str, str]:
        """One tuple for each label pair the rules add (a namespace, a kind, a job, a status).

        A Flux object's key and outputs hold these pairs and the input's own ones rather than
        copies: with thousands of objects, the copies were a third of the rewriter's memory.
        Bounded: emptied when full (the pairs stay valid; only the sharing restarts).
        """
        pairs = self._pairs
        found = pairs.get(pair)
        if found is None:
            if len(pairs) >= _SHARED_PAIRS_MAX:
                pairs.clear()
            found = pairs[pair] = pair
        return found

    # -- processing -----------------------------------------------------------------------

    def _advance_clock(
        self, batch: Batch, matched: dict[int, _Route], events: list[_Event], now_ms: int | None
    ) -> None:
        if now_ms is not None:
            clock = now_ms
        elif matched:
            clock = max((event[0] for event in events), default=_NEVER)
        else:
            clock = max((s.timestamp for x in batch.series for s in x.samples), default=_NEVER)
        self._clock = max(self._clock, clock)

    def _process(
        self, batch: Batch, events: list[_Event], emitter: _Emitter, untracked: set[int]
    ) -> None:
        """Apply the batch's Flux samples in timestamp order, one timestamp at a time.

        All of an object's samples at one timestamp (one scrape: the three conditions and the
        suspend gauge, or a new series and the old one's stale marker) are applied before the
        object is evaluated once for that timestamp, so their order inside the batch is moot.
        """
        series = batch.series
        clock = self._clock
        refused: set[tuple[bool, Labels]] = set()
        touched: dict[_Object, bool] = {}  # object → had a value sample, in first-touch order
        current = events[0][0] if events else _NEVER
        for ts, stale, index, value, route in events:
            if ts != current:
                if touched:
                    self._evaluate(touched, current, emitter)
                current = ts
            obj = route.obj
            if obj is None or obj.gone:
                obj = self._find(route, refused)
                if obj is None:
                    untracked.add(index)
                    continue
            obj.last_seen = clock
            entry = route.input
            if entry is None or entry.dropped:
                entry = route.input = obj.input_for(series[index].labels)
            if stale:
                if ts > entry.stale_ts:
                    entry.stale_ts = ts
                if obj not in touched:
                    touched[obj] = False
            else:
                if ts > entry.value_ts:
                    entry.value_ts = ts
                if ts > obj.newest_value_ts:
                    obj.newest_value_ts = ts
                if isinstance(obj, _InfoObject):
                    if ts > obj.state_ts:  # _InfoObject.observe, written out
                        obj.state_ts, obj.ready, obj.suspended = ts, route.ready, route.suspended
                        obj.values = route.values
                else:
                    obj.observe(route, ts, value)
                touched[obj] = True
        if touched:
            self._evaluate(touched, current, emitter)

    def _find(self, route: _Route, refused: set[tuple[bool, Labels]]) -> _Object | None:
        """The route's object, admitted if new; remembered on the route (None: refused)."""
        obj: _Object | None
        if route.forward:
            obj = self._info.get(route.key) or self._admit_info(route, refused)
        else:
            obj = self._legacy.get(route.key) or self._admit_legacy(route, refused)
        route.obj, route.input = obj, None
        return obj

    def _evaluate(self, touched: dict[_Object, bool], ts: int, emitter: _Emitter) -> None:
        """Emit what each touched object says at ``ts``, then start or cancel its end.

        The forward emission and the liveness test are written out here rather than called:
        this runs once per object per scrape, and the calls were a good part of its cost.
        """
        pending = self._pending
        add = emitter.add
        call = emitter.call
        labels, metadata, samples = emitter.labels, emitter.metadata, emitter.samples
        if emitter.shared_ts != ts:
            emitter.shared.clear()
            emitter.shared_ts = ts
        shared = emitter.shared
        emitted = dropped = 0
        for obj, had_value in touched.items():
            if isinstance(obj, _InfoObject):
                forward = True
                if had_value:
                    if ts > obj.out_last:
                        values = obj.values
                        known = shared.get(id(values))
                        if obj.emit_call == call or known is None:
                            add(obj, _FORWARD_FAMILIES, ts, values)
                        else:  # _Emitter.add's usual case, written out
                            obj.emit_call = call
                            obj.emit_at = len(labels)
                            outputs = obj.outputs
                            labels += outputs[0]
                            metadata += outputs[1]
                            samples += known[1]
                            if emitter.blocks is not None:
                                emitter.encode(obj, ts, values)
                        obj.out_last = ts
                        emitted += len(obj.values)
                        obj.open = True
                    elif ts < obj.out_last or not obj.open:
                        dropped += len(obj.values)
            else:
                forward = False
                if had_value and isinstance(obj, _LegacyObject):
                    self._reverse_emit(obj, ts, emitter)
            newest = obj.newest_value_ts
            for entry in obj.inputs.values():
                if entry.value_ts == newest and newest > entry.stale_ts:  # live()
                    if obj.deadline is not None:
                        obj.deadline = None
                        del pending[(forward, obj.key)]
                    break
            else:
                if obj.open and obj.deadline is None:
                    obj.deadline = self._clock + self._grace_ms
                    pending[(forward, obj.key)] = obj
        self.stats.outputs_emitted += emitted
        self.stats.out_of_order_dropped += dropped
        touched.clear()

    def _room(self, route: _Route, refused: set[tuple[bool, Labels]]) -> bool:
        if (route.forward, route.key) in refused:
            return False
        if len(self._info) + len(self._legacy) < self.config.max_objects:
            return True
        refused.add((route.forward, route.key))
        self.stats.objects_rejected += 1
        return False

    def _admit_info(self, route: _Route, refused: set[tuple[bool, Labels]]) -> _InfoObject | None:
        if not self._room(route, refused):
            return None
        base = dict(route.key)
        conditions = [
            {**base, "__name__": RECONCILE_CONDITION, "type": "Ready", "status": status}
            for status in self._statuses
        ]
        # The outputs share their label pairs with the object's key (all but __name__, type and
        # status are the same), and those three with every other object's outputs.
        pairs = {pair: pair for pair in route.key}
        share = self._shared_pair
        names = tuple(
            tuple([pairs.get(pair) or share(pair) for pair in labels_from(labels)])
            for labels in (*conditions, {**base, "__name__": SUSPEND_STATUS})
        )
        outputs = (names, (CONDITION_METADATA,) * len(conditions) + (SUSPEND_METADATA,))
        values = self._forward_values("Unknown", False)
        obj = self._info[route.key] = _InfoObject(
            route.key, route.kind, self._clock, outputs, values
        )
        return obj

    def _admit_legacy(
        self, route: _Route, refused: set[tuple[bool, Labels]]
    ) -> _LegacyObject | None:
        if not self._room(route, refused):
            return None
        obj = self._legacy[route.key] = _LegacyObject(route.key, route.kind, self._clock)
        return obj

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
                table.pop(key).gone = True
                self._pending.pop((forward, key), None)
            self.stats.objects_expired += len(expired)
            for obj in table.values():
                floor = min(floor, obj.last_seen)
        self._expiry_floor = floor

    # -- forward: gotk_resource_info → legacy ---------------------------------------------

    def _end_info_object(self, obj: _InfoObject, emitter: _Emitter) -> None:
        ts = max(obj.end_ts(), obj.out_last + 1)
        if not self.config.emit_deleted:
            self.stats.stale_emitted += len(self._end_values)
        self._emit_all(obj, ts, self._end_values, emitter)
        obj.open = False

    def _emit_all(self, obj: _InfoObject, ts: int, values: _Values, emitter: _Emitter) -> None:
        emitter.add(obj, _FORWARD_FAMILIES, ts, values)
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

    def _close_info(self, obj: _LegacyObject, ts: int, emitter: _Emitter) -> None:
        if obj.current is None:
            return
        self._emit_info(obj, obj.current, ts, _STALE, emitter)
        self.stats.stale_emitted += 1
        obj.current, obj.current_ready, obj.open = None, None, False

    def _emit_info(
        self, obj: _LegacyObject, info: _InfoSeries, ts: int, value: _Values, emitter: _Emitter
    ) -> None:
        emitter.add(info, _INFO_FAMILIES, ts, value)
        info.last = ts
        obj.last_emit = max(obj.last_emit, ts)
        self.stats.outputs_emitted += 1

    # -- output ---------------------------------------------------------------------------

    def _output(
        self, batch: Batch, matched: dict[int, _Route], untracked: set[int], emitter: _Emitter
    ) -> Batch:
        removed: set[int] = set() if self.config.keep_source else matched.keys() - untracked
        if not emitter.labels and not removed:
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
        families = tuple(
            FamilyMetadata(family, metadata.type, metadata.help, metadata.unit)
            for family, metadata in emitter.families.items()
            if family not in present
        )
        return Batch(kept + synthesized, batch.metadata + families)
