"""The Datadog destination: series as JSON to ``POST https://api.<site>/api/v2/series``.

What goes on the wire is decided in :mod:`.datadog_mapping` (names, tags, types, counter
deltas); this module sizes requests, sends them and reads the answers.

One queued batch, many requests
    A batch is converted in steps of at most 32 KiB of remote write, read as rows (one per
    series, its label set decoded once and remembered by its bytes: ``rows``; a single huge
    series is cut by samples, see ``chunked``), yielding to the event loop after each, until
    ``max_samples_per_send`` points are mapped; those are sized into pieces and sent before the
    batch is mapped on. So one entry of a million samples holds about one request's worth of
    objects at a time (plus its uncompressed protobuf) and never blocks the loop for long.
    Once a batch is mapped to its end, the batch its shard will take next (``Shard.peek``) is
    mapped while the batch's requests wait on the intake (``_prepare``): requests still go one
    at a time, in order, but the relay does not idle through each round trip. Its deltas go on
    from the state the batch before leaves, so it is used only for the very entries taken next
    and only if that batch was accepted whole; otherwise it is mapped again (``_adopt``).
    The intake takes at most 512000 bytes compressed and 5242880 bytes uncompressed per
    request, so mapped points become as many *pieces* as needed: series grouped up to the raw
    size that compresses within the limit at the ratio the last large bodies had (and within the
    uncompressed limit), then halved, should one still compress too big, until each fits. They
    are sent in order. A 413 for a piece splits that piece (by series, or by points for a lone
    series) and the halves are sent in its place.

Retries never send a point twice, nor compute a delta twice
    Counters are sent as deltas from per-series state, so mapping the same entries again on a
    retry would compute different deltas (or none). A batch's pieces are therefore computed once,
    kept (keyed by the identity of the entries list: the sender resends the very same list until
    it hears OK or DROP), and only the pieces not yet accepted are sent again, before the batch is
    mapped on. A piece's counter state is committed when Datadog answers 202 for it, and only
    then; within a batch it is carried from sample to sample and step to step (``Plan.pending``,
    the committed state once the pieces before are accepted), and a batch mapped ahead starts
    from the state the batch before it leaves, so deltas stay exact.

Answers
    2xx: accepted. 408, 429, 5xx and transport errors: retried by the sender, honouring
    Retry-After (429 always: Datadog documents it as "retry", unlike remote write where
    ``retry_on_http_429`` opts in). 400: the piece is refused. A piece of several series is
    halved by series, as for a 413, and the halves sent in its place, until the series
    Datadog keeps refusing are alone: each is dropped alone (its points counted as dropped,
    reason ``http_400``; the sender logs the first body once) and the batch goes on with its
    next pieces. Bounded: at ``MAX_REFUSALS`` 400 answers in a row, with no request of the
    batch accepted between them, the refusal is taken for systematic and what is left of the
    batch is dropped as ``http_400`` (a warning at most once a minute). Each refused series
    isolated among accepted ones starts the count again, so a few bad series in a batch of
    thousands cost only their own points. 403: the API key was refused, dropped with reason
    ``auth_failed`` and an error log (the key itself is never logged). 413 for a piece that
    cannot be split further, and other 4xx: dropped as ``http_<status>``. These end the
    batch: pieces not yet sent are
    not tried (a 403 would refuse them alike). The client reports what its pieces made of the
    batch (``SendResult.accepted``, ``refused``): points accepted count as forwarded, the
    rest as dropped, and the sender never resends what Datadog accepted (it resends a
    remote-write batch refused 400 entry by entry, not this one). The counter state of a
    dropped piece is not committed, so the next delta of those series in a later batch
    includes the dropped increase: sums over time stay right, the increase just lands later
    (not so for a later point of such a series in the same batch: mapped from the state the
    batch's mapping left, its delta leaves the dropped increase out).
    A batch with a piece dropped leaves state Datadog does not have: the batch mapped ahead
    of it is mapped again (``_adopt``).

Samples the intake cannot store (stale markers, NaN, more than an hour old or ten minutes
ahead, native histograms, counters' first observations...), and with ``flux_integration`` the
``le="+Inf"`` buckets Datadog's Flux check does not send, are not sent and are counted in
``DatadogClient.skipped`` (reason → samples), which the relay exposes as
``gotk_relay_samples_skipped_total``.

A conversion that raises
    costs only the series it raises on: see ``DatadogClient._refill``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import zlib
from bisect import bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from typing import Any, Final

from multidict import CIMultiDict

from .. import caches
from ..config import ConfigError, DatadogConfig, sanitize_url
from ..delivery.entry import Entry
from ..delivery.retry import Outcome, parse_retry_after
from ..delivery.sender import SendResult
from ..errors import SendError
from ..model import Batch, Protocol
from . import deflate
from .chunked import split_batch
from .datadog_mapping import (
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    CounterMark,
    CounterStore,
    Emit,
    MappedSeries,
    MappingOptions,
    NameCache,
    Row,
    SeriesMemo,
    TypeCache,
    map_items,
    normalize_tag,
)
from .http import HTTPEndpoint, one_line
from .rows import (
    LOOPS,
    ROW_CHUNK_BYTES,
    Item,
    Loops,
    Step,
    Steps,
    Unconvertible,
    split_step,
)

_scalar: Callable[[Any], bytes]

try:  # orjson is several times faster on large batches; json is always there
    import orjson

    def _dumps(obj: Any) -> bytes:
        # A copy of the exact size: orjson's bytes keep its 64 KiB buffer (3.13, measured), so
        # a request's worth of series JSON held 10× its size.
        return bytes(memoryview(orjson.dumps(obj)))

    _scalar = orjson.dumps  # one number or string: small, joined at once

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    _scalar = _dumps


log = logging.getLogger("gotk_relay.datadog")

MAX_COMPRESSED_BYTES: Final = 512_000
MAX_UNCOMPRESSED_BYTES: Final = 5_242_880
_INT64: Final = struct.Struct("=q")  # Rendered.ends, as datadog_render writes them
_PREFIX: Final = b'{"series":['
_SUFFIX: Final = b"]}"
_OVERHEAD: Final = len(_PREFIX) + len(_SUFFIX)
_OFF_THREAD_BYTES: Final = 256 * 1024  # compress bigger bodies off the event loop
_AUTH_LOG_INTERVAL: Final = 60.0  # at most one "key refused" error a minute
# 400 answers in a row (no request of the batch accepted between them) while its refused
# series are isolated (pieces halved, by series): one refused series costs 1 + log2(series in
# its piece), ≤ 16 for a piece of the default 20000 samples, before the half beside it is
# accepted; beyond, the refusal is taken for systematic (a payload shape Datadog refuses whole)
# and what is left of the batch is dropped, not bisected in 2 × series requests.
MAX_REFUSALS: Final = 24
_EXPIRE_INTERVAL: Final = 60.0
_MAX_INFOS: Final = 65_536  # label sets whose tags a client remembers (~1 KiB each)
# Label sets per client (caches.Saturating: full, it stops learning, and is emptied at most
# every 10 minutes); gotk_relay_cache_entries{cache="datadog_label_sets"}.
MEMOS: Final = caches.family("datadog_label_sets", _MAX_INFOS)
# Pieces are grouped to this share of the raw bytes the learnt compression ratio says fit in
# the compressed limit: a piece found too big once compressed is halved and each half
# compressed again, which cost a 20000-sample send a second compression of all its JSON.
_FILL: Final = 0.9
# Only bodies of at least this share of the compressed limit teach the ratio: small ones
# compress less well and are far from the limit anyway.
_LEARN_SHARE: Final = 8


def compress(body: bytes, encoding: str) -> bytes:
    """``gzip`` or HTTP ``deflate`` (the zlib format, as the Datadog Agent sends it), by ISA-L
    at its fastest level (``deflate.py``)."""
    if encoding == "deflate":
        return deflate.zlib(body)
    return deflate.gzip(body)


class Rendered:
    """Series' JSON written one after another, each followed by a comma (``data``), and where
    each next one starts (``ends``: native int64s): what ``render_all`` writes for a batch, its
    pieces cut from it without an object per series or a join (``Piece.source``)."""

    __slots__ = ("data", "ends")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = bytearray()

    def add(self, part: bytes) -> None:
        self.data += part
        self.data += b","
        self.ends += _INT64.pack(len(self.data))

    def starts(self) -> list[int]:
        """Where each part starts, then where one more would: ``len(self) + 1`` offsets."""
        return [0, *memoryview(self.ends).cast("q")]

    def __len__(self) -> int:
        return len(self.ends) // _INT64.size


# A batch's kept rows and its pieces' rows and offsets: lists of rows (which point only at what
# outlives them), None and ints, tens of thousands of items a batch, never part of a cycle.
# Tracked, every young and middle collection while a batch waits on Datadog walked them item
# by item (``_rows.c``'s untrack; nothing without it).
_untrack: Callable[[object], None] = (
    LOOPS.compiled.untrack if LOOPS.compiled is not None else lambda obj: None
)


@dataclass
class Piece:
    """One request's worth of series: their JSON, the compressed body once built, and beside
    each series its ``Row`` (``MappedSeries``' fields) where it is still needed once rendered:
    a counter's (its state is committed when the piece is accepted) and a series of several
    points (a 413 may split it by points); None for the others (``render_all``).

    The JSON is ``parts`` (a piece made by a split), or the range of its batch's ``Rendered``
    (``source``) that ``cuts`` bound: where each series starts in it, then where one more
    would. Once the body is built (``settle``) it goes, the cuts kept: a 413, the only reader
    left, cuts the series again from the body decompressed. Until Datadog answers, a piece so
    holds its compressed body, not its JSON a second time (docs/performance.md, "Rows let go
    once rendered")."""

    rows: list[Row | None]
    parts: list[bytes] | None = None
    updates: dict[bytes, CounterMark] = field(default_factory=dict)  # committed with it
    body: bytes | None = None
    source: bytearray | None = None
    cuts: list[int] | None = None
    encoding: str = "gzip"

    def settle(self, body: bytes, encoding: str) -> None:
        """Keep ``body`` (this piece's JSON compressed by ``encoding``), let the JSON go."""
        if self.cuts is None:
            assert self.parts is not None
            self.cuts = starts_of(self.parts)
        self.body, self.encoding = body, encoding
        self.parts = self.source = None

    def json_parts(self) -> list[bytes]:
        """The series' JSON (cut again from the body once settled)."""
        if self.parts is not None:
            return self.parts
        assert self.cuts is not None
        data: bytes | bytearray
        if self.source is not None:
            data, base = self.source, 0
        else:
            assert self.body is not None
            data = zlib.decompress(self.body, 31 if self.encoding == "gzip" else 15)
            base = len(_PREFIX) - self.cuts[0]
        cuts = self.cuts
        return [bytes(data[base + a : base + b - 1]) for a, b in pairwise(cuts)]

    @property
    def raw_size(self) -> int:
        if self.parts is None and self.cuts is not None:
            return _OVERHEAD + self.cuts[-1] - self.cuts[0] - 1
        parts = self.json_parts()
        return _OVERHEAD + sum(map(len, parts)) + max(0, len(parts) - 1)

    def raw(self) -> bytes:
        if self.source is not None and self.cuts is not None:
            # One copy: the range of the batch's JSON, its last comma left out.
            span = memoryview(self.source)[self.cuts[0] : self.cuts[-1] - 1]
            return b"".join((_PREFIX, span, _SUFFIX))
        parts = self.json_parts()
        if len(parts) < 2:
            return _PREFIX + b"".join(parts) + _SUFFIX
        # One copy of a body of up to 5 MiB: the brackets glued to the first and last parts.
        joined = list(parts)
        joined[0] = _PREFIX + parts[0]
        joined[-1] = parts[-1] + _SUFFIX
        return b",".join(joined)

    def split(self) -> list[Piece] | None:
        """Halves of this piece (by series, or a lone series by points); None if it is one
        point. Counter state not tied to a point goes with the first half, sent first."""
        if len(self.rows) > 1:
            mid = len(self.rows) // 2
            if self.source is not None and self.cuts is not None:
                cuts = self.cuts
                return [
                    Piece(
                        self.rows[:mid],
                        None,
                        self.updates,
                        source=self.source,
                        cuts=cuts[: mid + 1],
                    ),
                    Piece(self.rows[mid:], None, source=self.source, cuts=cuts[mid:]),
                ]
            parts = self.json_parts()
            return [
                Piece(self.rows[:mid], parts[:mid], self.updates),
                Piece(self.rows[mid:], parts[mid:]),
            ]
        row = self.rows[0] if len(self.rows) == 1 else None
        if row is not None and len(row[5]) > 1:
            first, second = MappedSeries(*row[:9]).split()
            return [
                Piece([first.row()], [_dumps(first.to_dict())], self.updates),
                Piece([second.row()], [_dumps(second.to_dict())]),
            ]
        return None

    def points(self) -> int:
        return sum(1 if row is None else len(row[5]) for row in self.rows)

    def metric(self) -> str:
        """The first series' metric name (for a log line)."""
        row = self.rows[0]
        name: str = json.loads(self.json_parts()[0])["metric"] if row is None else row[1]
        return name


_HOST_HEAD: Final = b',"resources":[{"name":'
_HOST_TAIL: Final = b',"type":"host"}]'


def render(row: Row, heads: dict[tuple[str, int], bytes]) -> bytes:
    """``_dumps(MappedSeries(*row[:9]).to_dict())``, byte for byte, from memoized parts: the
    head per (metric, type) in ``heads``, the tags and host once per label set (kept in its
    ``SeriesInfo``, ``row[9]``), and the points, which are all that changes between scrapes."""
    metric, kind, points, interval, info = row[1], row[2], row[5], row[8], row[9]
    head = heads.get((metric, kind))
    if head is None:
        head = heads[(metric, kind)] = b'{"metric":%s,"type":%d,"points":[' % (
            _scalar(metric),
            kind,
        )
    tail = info[4] if info is not None else None
    if tail is None:
        tags, host = row[3], row[4]
        tail = b"]"
        if tags:
            tail += b',"tags":' + _scalar(tags)
        if host:
            tail += _HOST_HEAD + _scalar(host) + _HOST_TAIL
        if info is not None:
            info[4] = tail
    if len(points) == 1:  # one scrape per request: the common case
        ts, value = points[0]
        body = b'{"timestamp":%d,"value":%s}' % (ts, _scalar(value))
    else:
        body = b",".join([b'{"timestamp":%d,"value":%s}' % (t, _scalar(v)) for t, v in points])
    if interval:
        return b'%s%s%s,"interval":%d}' % (head, body, tail, interval)
    return b"%s%s%s}" % (head, body, tail)


def render_all(
    rows: list[Row],
    heads: dict[tuple[str, int], bytes],
    out: list[bytes] | Rendered,
    loops: Loops = LOOPS,
    kept: list[Row | None] | None = None,
) -> None:
    """``out.extend(render(row, heads) for row in rows)`` (``Rendered.add`` each), compiled
    (``datadog_render`` in ``_rows.c``) for the rows whose head and tags' JSON are made
    (``render`` makes them for the others, once). ``kept``: each row appended again, or None
    for a series of one point that is not a counter, whose JSON is all a piece needs of it
    (``Piece``): let go now, while the objects it holds are in cache, not once its request is
    answered (docs/performance.md, "Rows let go once rendered")."""
    index, size = 0, len(rows)
    native = loops.compiled
    while index < size:
        if native is not None:
            if isinstance(out, Rendered):
                index = native.datadog_render(rows, index, heads, _scalar, out.data, kept, out.ends)
            elif kept is None:
                index = native.datadog_render(rows, index, heads, _scalar, out)
            else:
                index = native.datadog_render(rows, index, heads, _scalar, out, kept)
            if index >= size:
                break
        row = rows[index]
        if isinstance(out, Rendered):
            out.add(render(row, heads))
        else:
            out.append(render(row, heads))
        if kept is not None:
            kept.append(row if row[7] is not None or len(row[5]) != 1 else None)
        index += 1


@dataclass
class Plan:
    """A batch being converted and sent, kept across the sender's retries of it: its pieces
    mapped and not yet accepted, and where its conversion is."""

    entries: list[Entry]
    batches: Steps
    pieces: deque[Piece] = field(default_factory=deque)
    # Steps to map before the batch's next: the part of a step left for the next pieces, or
    # the steps of a refill that raised (DatadogClient._rewind).
    redo: deque[Step] = field(default_factory=deque)
    mapped_all: bool = False
    # Counter state as the batch's mapping leaves it, committed or not (each step goes on from
    # it), and the state of counters observed without a point, committed with the next piece
    # or when the batch ends.
    pending: dict[bytes, CounterMark] = field(default_factory=dict)
    updates: dict[bytes, CounterMark] = field(default_factory=dict)
    accepted: bool = False  # every piece accepted: the state it leaves is Datadog's
    # The samples mapped into its pieces so far, and the points of those it refused (400) and
    # were dropped alone; its 400 answers, those since a request was last accepted (bounded:
    # DatadogClient.max_refusals), and the first one's body. What Datadog accepted is worked
    # out from them when the batch is dropped (``_drop``): counting each accepted piece's
    # points cost ~4 % of a conversion.
    samples_mapped: int = 0
    points_refused: int = 0
    refusals: int = 0
    refusals_in_a_row: int = 0
    refusal: str = ""
    looked_ahead: bool = False  # the batch after it was given to _prepare (or there was none)
    # Mapped ahead (see DatadogClient._prepare): samples skipped, counted once it is adopted.
    skipped: Counter[str] | None = None
    posted: bool = False  # a piece of it was sent: a send of it now is a retry


@dataclass
class _Ahead:
    """The next batch of a shard, mapped while the batch before it (``after``) is in flight."""

    after: Plan
    plan: Plan
    task: asyncio.Task[None]

    async def discard(self) -> None:
        """Stop mapping it and let its entries go (its error, if any, is the sender's to meet
        when it maps the batch itself)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.plan.batches.aclose()


def group(parts: list[bytes], limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of ``parts`` whose joined JSON fits in ``limit`` bytes (a part too big
    on its own gets a range of its own)."""
    return group_starts(starts_of(parts), limit)


def starts_of(parts: list[bytes]) -> list[int]:
    """Where each of ``parts`` would start written as ``Rendered`` writes them (each followed
    by a comma), then where one more would: what ``Rendered.starts`` gives for its own."""
    return list(accumulate((len(part) + 1 for part in parts), initial=0))


def group_starts(starts: list[int], limit: int) -> list[tuple[int, int]]:
    """``group`` of the parts that start at ``starts`` (each followed by a comma; the last
    offset where one more would start: ``Rendered.starts``)."""
    # A range [s, e) takes _OVERHEAD + starts[e] - starts[s] - 1 bytes: its end is found by
    # bisection (a piece holds thousands of parts, a request's worth of series).
    ranges: list[tuple[int, int]] = []
    start, count = 0, len(starts) - 1
    while start < count:
        room = limit - _OVERHEAD + 1 + starts[start]
        end = max(start + 1, bisect_right(starts, room, lo=start + 1) - 1)
        ranges.append((start, end))
        start = end
    return ranges


class DatadogClient:
    """The ``Client`` of a ``datadog:`` destination (see the module docstring)."""

    protocol: Final = Protocol.V1  # entries stay remote write 1.0; they are converted on send
    tenant: Final = None

    def __init__(
        self, name: str, cfg: DatadogConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.cfg = cfg
        self._clock = clock
        self.options = MappingOptions(
            host_label=cfg.host_label,
            counters_as_count=cfg.counters == "count",
            static_tags=tuple(t for t in (normalize_tag(t) for t in cfg.tags) if t),
            flux_integration=cfg.flux_integration,
            flux_keep=tuple(cfg.flux_integration_labels),
            flux_namespaces=frozenset(cfg.flux_integration_namespaces),
        )
        self.types = TypeCache()
        self.counters = CounterStore()
        self.skipped: Counter[str] = Counter()  # reason → samples not sent (telemetry pending)
        self.max_compressed = MAX_COMPRESSED_BYTES
        self.max_uncompressed = MAX_UNCOMPRESSED_BYTES
        self._ratio: float | None = None  # raw / compressed bytes of the last big body
        # Points mapped at once, like remote write's batches (a queued entry may hold far more).
        self.max_points = cfg.queue_config.max_samples_per_send
        self.sub_chunk_bytes = ROW_CHUNK_BYTES
        # Label sets seen (by their encoded bytes) → their SeriesInfo, bounded by _memo_bound.
        self._memo_bound = MEMOS.saturating()
        self._infos = SeriesMemo(self._memo_bound.learns)
        self._memo_bound.watch(self._infos.__len__)
        self._heads: dict[tuple[str, int], bytes] = {}  # (metric, type) → its JSON head
        # One plan per shard is in flight; a few more cover batches the sender gave up on
        # (sample_age_limit) without telling us.
        self._plans: OrderedDict[int, Plan] = OrderedDict()
        self._max_plans = cfg.queue_config.min_shards + 8
        # The sender's view of what it takes next on a shard (set by QueuedDestination): the
        # batch after one in flight is mapped while its request waits on the intake.
        self.upcoming: Callable[[list[Entry]], list[Entry]] | None = None
        self._ahead: OrderedDict[int, _Ahead] = OrderedDict()  # by id of its first entry
        self.adopted = 0  # batches whose mapping was done ahead (read by the tests)
        self._discarding: set[asyncio.Task[None]] = set()
        self.http = HTTPEndpoint(cfg.endpoint, cfg.tls_config, cfg.remote_timeout)
        self.unconvertible = Unconvertible("Datadog", name)
        self._auth_logged_at = -_AUTH_LOG_INTERVAL
        self._refusals_logged_at = -_AUTH_LOG_INTERVAL
        self.max_refusals = MAX_REFUSALS
        self._expired_at = 0.0

    async def send(self, entries: list[Entry]) -> SendResult:
        plan = await self._plan(entries)
        if plan.posted and self._past_the_window(entries):
            # Retried past the intake's window: Datadog would answer 202 and keep none of it
            # (the age is judged when a batch is mapped, so only a retry can get here).
            self.forget(entries)
            return self._drop(
                plan,
                "too_old",
                "retried until every point was over an hour old, which Datadog discards",
            )
        api_key: str | None = None
        while True:
            if not plan.pieces:
                while not plan.pieces and not plan.mapped_all:  # a step may map nothing to send
                    await self._refill(plan)
                if not plan.pieces:  # everything was skipped, or accepted before
                    if plan.updates:
                        self.counters.commit_keys(plan.updates.items(), self._clock())
                        plan.updates = {}
                    # A batch with a piece dropped leaves state Datadog does not have: the
                    # batch mapped ahead from it is not used (_adopt).
                    plan.accepted = not plan.points_refused
                    self.forget(entries)
                    if plan.points_refused:
                        return SendResult(
                            Outcome.OK,
                            "ok",
                            detail=plan.refusal,
                            refused=plan.points_refused,
                            refused_reason="http_400",
                        )
                    return SendResult(Outcome.OK, "ok")
            if plan.mapped_all and not plan.looked_ahead:
                plan.looked_ahead = True
                self._prepare(plan)
            if api_key is None:
                try:  # per attempt: a rotated key file is picked up
                    api_key = self.cfg.resolve_api_key()
                except ConfigError as exc:
                    self._log_auth("the Datadog API key file cannot be read", str(exc))
                    return self._retry(plan, "api_key_file", None, str(exc))
            piece = plan.pieces[0]
            body = piece.body
            if body is None:
                body = await self._compress(piece.raw())
                piece.settle(body, self.cfg.compression)
            plan.posted = True
            try:
                status, headers, text = await self._post(body, api_key)
            except SendError as exc:
                return self._retry(plan, exc.reason, None, exc.detail)
            if 200 <= status < 300:
                plan.pieces.popleft()
                plan.refusals_in_a_row = 0  # progress: the refusals before were isolated
                self._commit(piece)
                continue
            if status == 400:
                plan.refusals += 1
                plan.refusals_in_a_row += 1
                plan.refusal = plan.refusal or text
                if plan.refusals_in_a_row < self.max_refusals:
                    self._refused(plan, piece)
                    continue
                self.forget(entries)
                self._log_refusals(plan)
                return self._drop(plan, "http_400", text)
            if status == 413:
                halves = piece.split()
                if halves is not None:
                    log.debug(
                        "Datadog answered 413; splitting the request",
                        extra={"destination": self.name, "series": len(piece.rows)},
                    )
                    plan.pieces.popleft()
                    plan.pieces.extendleft(reversed(halves))
                    continue
            if status in (408, 429) or status >= 500:
                retry_after = parse_retry_after(headers.get("Retry-After"), self._clock())
                return self._retry(plan, f"http_{status}", retry_after, text)
            self.forget(entries)
            if status == 403:
                self._log_auth(
                    "Datadog refused the API key (403); batches are dropped until the key "
                    "(api_key / api_key_file) or the site is fixed",
                    text,
                )
                return self._drop(plan, "auth_failed", text)
            return self._drop(plan, f"http_{status}", text)

    def _refused(self, plan: Plan, piece: Piece) -> None:
        """A 400 for ``plan``'s first piece, ``piece``: halved by series and the halves sent in
        its place, as for a 413, until the series Datadog refuses are alone; a lone series is
        dropped (not halved by points: Datadog refuses a series for its name, tags or type) and
        the batch goes on. Its counter state is not committed, so the next delta of its series
        in a later batch includes the increase dropped; the state of counters sent without a
        point (``Piece.updates``) goes with the next piece."""
        plan.pieces.popleft()
        if len(piece.rows) > 1:
            halves = piece.split()
            assert halves is not None  # several series: halved by series
            plan.pieces.extendleft(reversed(halves))
            return
        plan.points_refused += piece.points()
        if piece.updates:
            if plan.pieces:
                plan.pieces[0].updates = piece.updates | plan.pieces[0].updates
            else:
                plan.updates = piece.updates | plan.updates
        log.debug(
            "Datadog refused a series (400); it is dropped",
            extra={"destination": self.name, "metric": piece.metric()},
        )

    def _drop(self, plan: Plan, reason: str, detail: str) -> SendResult:
        """The batch ends (no piece sent any more): what its pieces made of it counts as
        such (accepted as forwarded, refused 400s as ``http_400``), the rest as ``reason``."""
        return SendResult(
            Outcome.DROP,
            reason,
            detail=detail,
            refused=plan.points_refused,
            refused_reason="http_400",
            accepted=self._accepted(plan),
        )

    def _retry(self, plan: Plan, reason: str, retry_after: float | None, detail: str) -> SendResult:
        """A retry, saying what of the batch Datadog has taken so far: should the sender give
        the batch up (``sample_age_limit``), that part counts as forwarded, not dropped."""
        if not plan.samples_mapped:
            return SendResult(Outcome.RETRY, reason, retry_after, detail)
        return SendResult(
            Outcome.RETRY,
            reason,
            retry_after,
            detail,
            refused=plan.points_refused,
            refused_reason="http_400",
            accepted=self._accepted(plan) or None,
        )

    @staticmethod
    def _accepted(plan: Plan) -> int:
        """What Datadog accepted of the batch: what was mapped, less what was not sent or was
        refused (the samples its pieces skipped count with them, as they do in a batch accepted
        whole). Worked out when needed: counting each accepted piece's points cost ~4 % of a
        conversion."""
        waiting = sum(piece.points() for piece in plan.pieces)
        return max(0, plan.samples_mapped - waiting - plan.points_refused)

    def _log_refusals(self, plan: Plan) -> None:
        now = self._clock()
        if now - self._refusals_logged_at < _AUTH_LOG_INTERVAL:
            return
        self._refusals_logged_at = now
        log.warning(
            "Datadog refused too many requests of one batch (400); the rest of the batch is "
            "dropped (logged at most once a minute)",
            extra={
                "destination": self.name,
                "refusals": plan.refusals,
                "response": plan.refusal,
            },
        )

    def _past_the_window(self, entries: list[Entry]) -> bool:
        """Whether every point of ``entries`` is older than the intake keeps (a point can be
        ahead of its entry's newest timestamp by at most what the intake takes ahead)."""
        oldest = int(self._clock() * 1000) - MAX_AGE_MS - MAX_AHEAD_MS
        return all(0 < entry.newest_ms < oldest for entry in entries)

    async def _plan(self, entries: list[Entry]) -> Plan:
        """The batch's plan: the kept one on a retry, the one mapped ahead when it holds these
        very entries and the batch before it was accepted, else a new one (nothing mapped)."""
        plan = self._plans.get(id(entries))
        if plan is not None and plan.entries is entries:
            self._plans.move_to_end(id(entries))
            return plan
        now = self._clock()
        if now - self._expired_at >= _EXPIRE_INTERVAL:  # also when every batch is mapped ahead
            self._expired_at = now
            self.counters.expire(now)
        plan = await self._adopt(entries)
        if plan is None:
            plan = Plan(entries, Steps(entries, self.sub_chunk_bytes))
        self._plans[id(entries)] = plan  # holding `entries` keeps its id from being reused
        while len(self._plans) > self._max_plans:
            self._plans.popitem(last=False)
        return plan

    def _prepare(self, after: Plan) -> None:
        """Map the shard's next batch while ``after``'s requests wait on the intake (its
        mapping is done): a shard's requests still go one at a time, in order, but the relay
        no longer idles through each round trip. Its counter deltas go on from the state
        ``after`` leaves, so it is used only if ``after`` is accepted whole (``_adopt``)."""
        upcoming = self.upcoming(after.entries) if self.upcoming is not None else []
        if not upcoming or id(upcoming[0]) in self._ahead:
            return
        plan = Plan(
            list(upcoming),
            Steps(upcoming, self.sub_chunk_bytes),
            pending=dict(after.pending),
            skipped=Counter(),
        )
        task = asyncio.create_task(self._refill(plan), name=f"datadog-ahead:{self.name}")
        self._ahead[id(upcoming[0])] = _Ahead(after, plan, task)
        while len(self._ahead) > self._max_plans:  # batches that were never taken after all
            stale = self._ahead.popitem(last=False)[1]
            self._discarding.add(cleanup := asyncio.create_task(stale.discard()))
            cleanup.add_done_callback(self._discarded)

    def _discarded(self, task: asyncio.Task[None]) -> None:
        """A stale plan let go: its error, if any, is logged (no one else awaits the task)."""
        self._discarding.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning(
                "a batch mapped ahead could not be let go",
                extra={"destination": self.name, "err": repr(exc)},
            )

    async def _adopt(self, entries: list[Entry]) -> Plan | None:
        """The plan mapped ahead for ``entries``, if it can stand: the same entries in the same
        order, the batch before it accepted (else its deltas start from a state Datadog never
        got), its mapping finished without an error."""
        ahead = self._ahead.pop(id(entries[0]), None) if entries else None
        if ahead is None:
            return None
        plan = ahead.plan
        same = len(plan.entries) == len(entries) and all(
            a is b for a, b in zip(plan.entries, entries, strict=True)
        )
        if not (same and ahead.after.accepted):
            await ahead.discard()
            return None
        try:
            await ahead.task
        except Exception:  # mapped again by the sender's call, which reports the error
            await plan.batches.aclose()
            return None
        plan.entries = entries
        if plan.skipped:
            self.skipped.update(plan.skipped)
        plan.skipped = None
        self.adopted += 1
        return plan

    async def _refill(self, plan: Plan) -> None:
        """Map the batch on (every piece before was accepted, or, mapped ahead, the batch
        before is in flight) until ``max_points`` samples are mapped or it ends, and size them
        into pieces.

        All or nothing: should mapping raise (a bug: no input is known to), the plan is put
        back as it was and the series of the refill's steps that make it raise are looked for
        on scratch state (``_screen``: each on its own, then in order). Those are left out,
        counted as ``conversion_error`` and logged, and the rest is mapped again. If none is
        found, the error goes to the sender, which retries: the same steps are mapped again
        from the same state, and nothing accepted is sent twice.
        """
        before = (list(plan.redo), dict(plan.pending), plan.mapped_all, plan.batches.taken)
        try:
            await self._map_on(plan)
            return
        except Exception as exc:
            await self._rewind(plan, before)
            if isinstance(exc, MemoryError) or not await self._screen(plan):
                raise
        before = (list(plan.redo), dict(plan.pending), plan.mapped_all, plan.batches.taken)
        try:
            await self._map_on(plan)
        except Exception:
            await self._rewind(plan, before)
            raise

    async def _rewind(
        self, plan: Plan, before: tuple[list[Step], dict[bytes, CounterMark], bool, int]
    ) -> None:
        """Put ``plan`` back as it was before a refill that raised: the steps it had and those
        it read to be taken again, its counter state as it was. The label sets learnt
        meanwhile are forgotten too: nothing is kept half-learnt."""
        redo, pending, mapped_all, taken = before
        plan.redo = deque([*redo, *await plan.batches.since(taken)])
        plan.pending, plan.mapped_all = dict(pending), mapped_all
        self._infos.clear()
        self._heads.clear()

    async def _screen(self, plan: Plan) -> bool:
        """Leave out the series of ``plan.redo`` that make its mapping raise, found on scratch
        state (``rows.Unconvertible``). Whether any was left out."""
        now_ms = int(self._clock() * 1000)

        def run(items: list[Item], pending: dict[bytes, CounterMark] | None = None) -> None:
            rows = map_items(items, self.options, self.types, self.counters, now_ms, pending, None)
            render_all(rows.rows, {}, Rendered())

        skipped = self.skipped if plan.skipped is None else plan.skipped
        screened = await self.unconvertible.screen(
            list(plan.redo),
            lambda item: run([item]),
            lambda items: run(items, dict(plan.pending)),
            skipped,
        )
        if screened is None:
            return False
        plan.redo = deque(screened)
        return True

    async def _map_on(self, plan: Plan) -> None:
        """The refill itself (see ``_refill``).

        Each step maps at most ``sub_chunk_bytes`` of remote write, then lets the loop run.
        Counter state is carried from step to step in ``pending``, from where the batch's
        mapping left it.
        """
        series: list[Row | None] = []  # what pieces keep of the rows (render_all's kept)
        _untrack(series)
        rendered = Rendered()  # their JSON, encoded step by step too
        updates: dict[bytes, CounterMark] = {}
        pending = plan.pending
        skipped: Counter[str] = Counter()  # counted once the whole refill is done
        names = NameCache()
        now_ms = int(self._clock() * 1000)
        budget = self.max_points  # samples: a piece's points are at most those
        if self._memo_bound.empties(len(self._infos), self._clock()):
            self._infos.clear()
        if self._memo_bound.turned_full():
            log.warning(
                "more label sets than the Datadog destination remembers; those beyond are "
                "mapped afresh each time (slower) until it is emptied, at most every 10 minutes",
                extra={"destination": self.name, "limit": self._memo_bound.limit},
            )
        if len(self._heads) > _MAX_INFOS:
            self._heads.clear()
        heads = self._heads
        # Steps the compiled loop can render as it maps them are rendered there (map_items).
        emit = Emit(
            heads,
            _scalar,
            rendered.data,
            rendered.ends,
            series,
            lambda row: render_all([row], heads, rendered, kept=series),
        )
        while not plan.mapped_all and budget > 0:
            step = plan.redo.popleft() if plan.redo else await plan.batches.next()
            if step is None:
                plan.mapped_all = True
                break
            if isinstance(step, Batch):
                batch, rest = split_batch(step, budget)
                if rest is not None:
                    plan.redo.appendleft(rest)
                budget -= batch.point_count
                self.types.observe(batch.metadata)
                items: list[Item] = list(batch.series)
            else:
                items, rest_items, points = split_step(step, budget)
                if rest_items is not None:
                    plan.redo.appendleft(rest_items)
                budget -= points
            mapped = map_items(
                items,
                self.options,
                self.types,
                self.counters,
                now_ms,
                pending,
                names,
                self._infos,
                emit=emit,
            )
            if mapped.skipped:
                skipped.update(mapped.skipped)
            render_all(mapped.rows, heads, rendered, kept=series)
            updates.update(mapped.updates)
            del mapped  # the rows not kept go now, not after the next step
            await asyncio.sleep(0)
        if not plan.mapped_all and not plan.redo:
            # The budget spent exactly: whether the batch goes on is read now (its next step,
            # mapped next anyway), so that a batch that ends here is known to, and the one
            # after it is mapped while these requests are in flight (_prepare).
            following = await plan.batches.next()
            if following is None:
                plan.mapped_all = True
            else:
                plan.redo.append(following)
        pieces = await self._pieces(series, rendered)
        plan.samples_mapped += self.max_points - budget
        (self.skipped if plan.skipped is None else plan.skipped).update(skipped)
        plan.updates.update(updates)
        if pieces:  # committed with the first piece (else with the next, or at the end)
            pieces[0].updates = plan.updates
            plan.updates = {}
        plan.pieces.extend(pieces)

    async def _pieces(self, series: list[Row | None], rendered: Rendered) -> list[Piece]:
        """Requests within both limits (``rendered``: the series' JSON): group by the raw size
        that should compress within the limit at the ratio the last bodies had (capped by the
        uncompressed limit), then halve what does not compress small enough: rare once the
        ratio is known (similar series compress alike), and it teaches the ratio anew."""
        limit = self.max_uncompressed
        if self._ratio is not None:
            limit = min(limit, max(1, int(self.max_compressed * self._ratio * _FILL)))
        todo: deque[Piece] = deque()
        starts = rendered.starts()
        _untrack(starts)
        for start, end in group_starts(starts, limit):
            rows, cuts = series[start:end], starts[start : end + 1]
            _untrack(rows)
            _untrack(cuts)
            todo.append(Piece(rows, source=rendered.data, cuts=cuts))
        pieces: list[Piece] = []
        while todo:
            piece = todo.popleft()
            if piece.raw_size <= self.max_uncompressed:
                raw = piece.raw()
                body = await self._compress(raw)
                if len(body) * _LEARN_SHARE >= self.max_compressed:
                    self._ratio = len(raw) / len(body)
                if len(body) <= self.max_compressed:
                    piece.settle(body, self.cfg.compression)
                    pieces.append(piece)
                    continue
            halves = piece.split()
            if halves is None:  # one point over the limits: cannot happen with ≤200-char tags
                self.skipped["too_large"] += piece.points()
                log.warning(
                    "a single Datadog point exceeds the request size limits; skipped",
                    extra={"destination": self.name, "metric": piece.metric()},
                )
                continue
            todo.extendleft(reversed(halves))
        return pieces

    async def _compress(self, raw: bytes) -> bytes:
        if len(raw) >= _OFF_THREAD_BYTES:
            return await asyncio.to_thread(compress, raw, self.cfg.compression)
        return compress(raw, self.cfg.compression)

    def _commit(self, piece: Piece) -> None:
        now = self._clock()
        self.counters.commit_keys(piece.updates.items(), now)
        # Each counter's state after its last sample in the piece.
        self.counters.commit_rows(piece.rows, now)

    def forget(self, entries: list[Entry]) -> None:
        """The batch ``entries`` (this very list) is not handed again: its progress goes."""
        self._plans.pop(id(entries), None)

    def _log_auth(self, message: str, detail: str) -> None:
        now = self._clock()
        if now - self._auth_logged_at < _AUTH_LOG_INTERVAL:
            return
        self._auth_logged_at = now
        log.error(
            message,
            extra={
                "destination": self.name,
                "endpoint": sanitize_url(self.cfg.endpoint),
                "response": detail,
            },
        )

    async def _post(self, body: bytes, api_key: str) -> tuple[int, CIMultiDict[str], str]:
        headers = {
            "DD-API-KEY": api_key,
            "Content-Type": "application/json",
            "Content-Encoding": self.cfg.compression,
        }
        status, answer_headers, answer = await self.http.post(body, headers)
        return status, answer_headers, one_line(answer) if status >= 300 else ""

    def tls_files_unusable(self) -> bool:
        return self.http.tls_files_unusable()

    async def close(self) -> None:
        aheads = list(self._ahead.values())
        self._ahead.clear()
        for ahead in aheads:
            await ahead.discard()
        await asyncio.gather(*self._discarding, return_exceptions=True)
        for plan in list(self._plans.values()):  # batches left half converted
            await plan.batches.aclose()
        self._plans.clear()
        await self.http.close()
