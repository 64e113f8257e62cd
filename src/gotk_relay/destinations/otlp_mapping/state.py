"""What an OTLP client remembers between requests: family metadata, shapes guessed from names,
and each stream's start time and last value.

Time
    ``time_unix_nano = ts_ms * 1_000_000``. Cumulative points start at the RW 2.0 start/created
    timestamp or ``_created`` when known; otherwise at the first time the relay saw the stream
    (the spec's "unknown start time": the first point has start == time), and just after the
    previous point when the stream went down (a reset). Delta points start at the previous
    point; the first observation of a stream only sets the baseline; a decrease is a reset whose
    delta is the new value. Summaries have no temporality in OTLP and stay cumulative; so do
    non-monotonic sums. Stale markers become points flagged ``NO_RECORDED_VALUE`` (the OTel
    equivalent) and leave the stream's state alone.

State
    ``to_otlp`` does not change per-stream state: it returns ``updates`` that the client commits
    only after the destination accepted the request, so a retried request (which reuses the same
    body) never subtracts twice, and a dropped one leaves the baseline where it was, so the next
    delta still covers the interval. The states are immutable values, so an uncommitted update
    can never leak into the state.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from ... import caches
from ...caches import Saturating
from ...model import FamilyMetadata, Labels, MetricType
from .labelsets import RowInfo
from .naming import StreamKey


class CounterState(NamedTuple):
    start_ms: int
    last_ms: int
    value: float


class ClassicState(NamedTuple):
    start_ms: int
    last_ms: int
    total: float  # count (``count`` would shadow tuple.count)
    sum: float | None
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), finite les, sorted


class SummaryState(NamedTuple):
    start_ms: int
    last_ms: int
    total: float  # count (``count`` would shadow tuple.count)


class NativeState(NamedTuple):
    start_ms: int
    last_ms: int
    schema: int
    zero_threshold: float
    custom_values: tuple[float, ...]
    total: float  # count (``count`` would shadow tuple.count)
    zero_count: float
    sum: float
    positive: tuple[tuple[int, float], ...]  # (Prometheus bucket index, absolute count)
    negative: tuple[tuple[int, float], ...]


StreamState = CounterState | ClassicState | SummaryState | NativeState


def counter_state(start_ms: int, last_ms: int, value: float) -> CounterState:
    # ``CounterState(...)`` without its generated ``__new__``, which costs a Python call.
    return tuple.__new__(CounterState, (start_ms, last_ms, value))


_K = TypeVar("_K")
_V = TypeVar("_V")


# Every OTLP destination's streams: gotk_relay_cache_entries{cache="otlp_streams"}.
STREAMS: Final = caches.family("otlp_streams", 200_000)


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class MappingState:
    """What an OTLP client remembers between batches, bounded so a churning source cannot grow
    it without end (the least recently updated entries are forgotten first).

    ``families``: RW 1.0 metadata (types, help, units), learned at once since it is knowledge,
    not data. ``inferred``: family shapes guessed from names (a ``_bucket{le}`` makes its family a
    histogram) so a ``_count`` in a later request is still recognised. ``streams``: per-stream
    start times and last values, changed only by ``commit``.
    """

    def __init__(
        self,
        max_streams: int = 200_000,
        max_families: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_streams = max_streams
        self.max_families = max_families
        self.families: OrderedDict[str, FamilyMetadata] = OrderedDict()
        self.inferred: OrderedDict[str, MetricType] = OrderedDict()
        self.streams: OrderedDict[StreamKey, StreamState] = OrderedDict()
        # ``_created`` start times by (family, labels), from every batch: a ``_created`` series
        # may come in another request (or shard) than its counter's or histogram's samples.
        # Knowledge, like ``families``; emptied when it holds more than ``max_streams``.
        self.created: dict[tuple[str, Labels], int] = {}
        # The labels of each resource's ``target_info`` (by its resource labels' values), its
        # resource attributes in every request after it, as the compatibility spec asks;
        # knowledge too, bounded by ``max_families`` (the least recently set go first).
        self.target_info: OrderedDict[tuple[str, ...], Labels] = OrderedDict()
        self._shown = STREAMS.watched(max_streams, self.streams.__len__)
        # Label sets by their encoded bytes, per resource_labels (see ``RowInfo``).
        self.rows: dict[tuple[str, ...], dict[bytes, RowInfo]] = {}
        self.row_bounds: dict[tuple[str, ...], Saturating] = {}  # each one's bound
        # The keys each one's infos share (``RowInfo``'s ``shared``), emptied with it.
        self.row_keys: dict[tuple[str, ...], dict[object, Any]] = {}
        # Each one's index in C (_rows.key_index), when the compiled loops run: what it holds.
        self.row_indexes: dict[tuple[str, ...], object] = {}
        self.clock = clock  # when a full one was last emptied (Saturating.empties)
        self.version = 0  # changes whenever families or inferred do: what a type depends on

    def learn(self, metadata: Iterable[FamilyMetadata]) -> None:
        for meta in metadata:
            _remember(self.families, meta.family, meta, self.max_families)
            self.version += 1

    def infer(self, family: str, mtype: MetricType) -> None:
        if self.inferred.get(family) is not mtype:
            _remember(self.inferred, family, mtype, self.max_families)
            self.version += 1

    def learn_target(self, resource: tuple[str, ...], attributes: Labels | None) -> None:
        """A ``target_info`` sample of ``resource``: its labels (None: a stale marker, the
        target gone) as that resource's attributes."""
        if attributes is None:
            self.target_info.pop(resource, None)
        else:
            _remember(self.target_info, resource, attributes, self.max_families)

    def commit(self, updates: Mapping[StreamKey, StreamState]) -> None:
        """Make a delivered request's stream updates the new baseline."""
        streams, limit = self.streams, self.max_streams
        for key, value in updates.items():  # _remember, in one loop
            streams[key] = value
            streams.move_to_end(key)
        while len(streams) > limit:
            streams.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Mapped:
    request: ExportMetricsServiceRequest
    points: int  # OTLP data points in ``request``
    updates: dict[StreamKey, StreamState]  # commit after the destination accepted ``request``
    unmapped: int  # remote-write samples/histograms that could form no valid OTLP point


def cumulative_start(prev: StreamState | None, ts: int, explicit: int, reset: bool) -> int:
    if explicit and explicit <= ts:
        return explicit
    if prev is None:
        return ts  # unknown start time: a zero-duration first point
    if reset:
        # The reset happened after the previous point; a start on it would collide with that
        # point's sample in a backend that writes a zero at the start time.
        return min(prev.last_ms + 1, ts)
    return min(prev.start_ms, ts)
