"""An OTLP/HTTP metrics destination (``otlp:``): queued batches as ``ExportMetricsServiceRequest``.

The sender decides *when* to send; this maps, posts and says what the answer means
(OTLP/HTTP spec, shared/reference/vendors.md):

- 2xx: delivered. A 200 may carry ``partial_success``: the points it rejected are counted in
  ``rejected_points`` and logged once; they are not resent, since the receiver said it cannot
  take them.
- 429, 502, 503, 504: retried, honouring Retry-After. OTLP defines 429 as retryable, so
  ``queue_config.retry_on_http_429`` (a remote-write option) does not apply here.
- anything else (400, 401, 403, 404, 413, 500, ...): final; dropped with reason ``http_<code>``.
- no answer (connect error, reset, timeout): retried.

A batch is converted in steps and sent as requests of at most ``max_samples_per_send`` points,
in order: each step maps at most 32 KiB of remote write, read as rows (one per series, its label
set decoded once and remembered by its bytes: ``rows``; a single huge series is cut by samples,
see ``chunked``), and then yields to the event loop, and a request is mapped only
once the previous one was accepted. So one entry of a million samples holds one request's worth
of objects at a time (plus its uncompressed protobuf), and never blocks the loop for long. A
request is serialized in parts of ~2048 points that concatenate (protobuf repeated fields), so
it may name the same resource in several ``ResourceMetrics``, which OTLP allows.

Each request is mapped once and the same body is resent on every retry (a retried batch resumes
at the request that was not accepted); the stream state the mapping computed (start times,
delta baselines) is committed only when the destination accepted the request, so a retry never
subtracts twice and a dropped request leaves the baseline where it was (the next delta covers
the lost interval too). A drop ends the batch: its later requests are not sent; the points of
its requests accepted before count as forwarded (``SendResult.accepted``: the sender then does
not resend the batch's entries one by one, which would send those again), the rest as dropped.
A mapping that raises costs only the series it raises on
(``OTLPClient._next_piece``).

Queued entries stay remote-write 1.0 (the client's ``protocol``): Prometheus sends
1.0 metadata in requests of their own, which a 2.0 entry would lose since it carries metadata
only on series. What 1.0 cannot carry (RW 2.0 start timestamps and per-series metadata) the
mapping uses when present.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Final

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from ..config import OTLPConfig
from ..delivery.entry import Entry
from ..delivery.retry import Outcome, parse_retry_after
from ..delivery.sender import SendResult
from ..errors import SendError
from ..model import Batch, Protocol
from . import deflate
from .chunked import split_batch
from .http import HTTPEndpoint, auth_headers
from .otlp_mapping import Mapper, MappingState, StreamKey, StreamState
from .otlp_mapping.mapper import Checkpoint
from .rows import (
    CONVERSION_ERROR,
    ROW_CHUNK_BYTES,
    Item,
    Step,
    Steps,
    Unconvertible,
    split_step,
)

log = logging.getLogger("gotk_relay.otlp")

CONTENT_TYPE: Final = "application/x-protobuf"
RETRYABLE: Final = frozenset({429, 502, 503, 504})
_OFF_LOOP_BYTES: Final = 256 * 1024  # compress bigger bodies in a worker thread
_SERIALIZE_POINTS: Final = 2048  # data points serialized at once (~1 ms)
_LOGGED_MESSAGES: Final = 100  # distinct partial-success messages logged, then no more


@dataclass(slots=True)
class _Piece:
    """One request of a batch, mapped once and resent as is on every retry."""

    body: bytes  # serialized (and compressed) ExportMetricsServiceRequest; b"" when empty
    updates: dict[StreamKey, StreamState]  # stream state to commit after a 2xx
    points: int
    samples: int = 0  # the remote-write samples mapped for it, as the sender counts a batch


@dataclass(slots=True)
class _Run:
    """A batch being converted and sent, request by request, kept across the sender's retries."""

    entries: list[Entry]  # held so that id(entries) cannot be reused while kept
    batches: Steps
    mapper: Mapper
    piece: _Piece | None = None  # the request sent and not yet accepted
    # Steps to map before the batch's next: the part of a step left for the next request, or
    # the steps of a mapping that raised (OTLPClient._rewind).
    redo: deque[Step] = field(default_factory=deque)
    mapped_all: bool = False
    accepted: int = 0  # samples of its requests the destination accepted


class OTLPClient:
    """The ``Client`` of one ``otlp:`` destination (see the module docstring).

    ``rejected_points`` counts data points receivers refused in a ``partial_success``;
    ``unmapped_points`` counts remote-write samples that could form no valid OTLP point (a
    classic histogram part whose ``_count`` and ``+Inf`` bucket were in another request, a
    summary without ``_count``, gauge histograms, a time before 1970 or past what OTLP's
    nanoseconds hold).
    """

    protocol: Final = Protocol.V1  # entries stay remote write 1.0; they are converted on send
    tenant: Final = None

    def __init__(
        self,
        name: str,
        cfg: OTLPConfig,
        *,
        max_series: int = 200_000,
        max_families: int = 50_000,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.state = MappingState(max_streams=max_series, max_families=max_families)
        self.rejected_points = 0
        self.unmapped_points = 0
        self.unconvertible_points = 0  # samples of series left out by _screen
        self.unconvertible = Unconvertible("OTLP", name)
        self.http = HTTPEndpoint(cfg.url, cfg.tls_config, cfg.remote_timeout)
        # Points per request, like remote write's batches (a queued entry may hold far more).
        self.max_points = cfg.queue_config.max_samples_per_send
        self.sub_chunk_bytes = ROW_CHUNK_BYTES
        # One run per shard is in flight; a few more cover batches the sender gave up on
        # (sample_age_limit) without telling us.
        self._runs: OrderedDict[int, _Run] = OrderedDict()
        self._max_runs = cfg.queue_config.min_shards + 8
        self._partial_logged: set[str] = set()  # the messages logged (at most _LOGGED_MESSAGES)

    @property
    def skipped(self) -> dict[str, int]:
        """For the relay's ``gotk_relay_samples_skipped_total`` (see the class docstring)."""
        return {
            "rejected_by_receiver": self.rejected_points,
            "unmapped": self.unmapped_points,
            CONVERSION_ERROR: self.unconvertible_points,
        }

    def _run(self, entries: list[Entry]) -> _Run:
        """The batch's run: the kept one on a retry (the sender resends the very same list, so
        identity finds it), else a new one."""
        run = self._runs.get(id(entries))
        if run is not None and run.entries is entries:
            self._runs.move_to_end(id(entries))
            return run
        mapper = Mapper(self.state, self.cfg.temporality, self.cfg.resource_labels)
        run = _Run(entries, Steps(entries, self.sub_chunk_bytes), mapper)
        self._runs[id(entries)] = run
        while len(self._runs) > self._max_runs:
            self._runs.popitem(last=False)
        return run

    async def _next_piece(self, run: _Run) -> _Piece | None:
        """The batch's next request (None when nothing is left to send), mapped by
        ``_map_piece``.

        All or nothing: should mapping raise (a bug: no input is known to), the run is put
        back as it was (its mapper by ``Mapper.rewind``) and the series of its steps that make
        it raise are looked for on scratch mappers (``_screen``: each on its own, then in
        order). Those are left out, counted as ``conversion_error`` and logged, and the rest
        is mapped again. If none is found, the error goes to the sender, which retries: the
        same steps are mapped again from the same state, and nothing accepted is sent twice.
        """
        before = (list(run.redo), run.mapper.checkpoint(), run.mapped_all, run.batches.taken)
        try:
            return await self._map_piece(run)
        except Exception as exc:
            await self._rewind(run, before)
            if isinstance(exc, MemoryError) or not await self._screen(run):
                raise
        before = (list(run.redo), run.mapper.checkpoint(), run.mapped_all, run.batches.taken)
        try:
            return await self._map_piece(run)
        except Exception:
            await self._rewind(run, before)
            raise

    @staticmethod
    async def _rewind(run: _Run, before: tuple[list[Step], Checkpoint, bool, int]) -> None:
        """Put ``run`` back as it was before a request whose mapping raised: the steps it had
        and those it read to be taken again, its mapper as it was."""
        redo, checkpoint, mapped_all, taken = before
        run.redo = deque([*redo, *await run.batches.since(taken)])
        run.mapper.rewind(checkpoint)
        run.mapped_all = mapped_all

    async def _screen(self, run: _Run) -> bool:
        """Leave out the series of ``run.redo`` that make its mapping raise, found on scratch
        mappers (``rows.Unconvertible``; the state's families known, no stream state
        changed). Whether any was left out."""
        start = run.mapper.checkpoint()

        def convert(items: list[Item], after: Checkpoint | None = None) -> None:
            scratch = Mapper(self.state, self.cfg.temporality, self.cfg.resource_labels)
            if after is not None:  # from where the run stands: what waits, the parts grouped
                scratch.rewind(after)
                scratch.created = dict(run.mapper.created)
            scratch.feed(items)
            scratch.finish()
            scratch.cut()
            scratch.take()

        skipped: Counter[str] = Counter()
        screened = await self.unconvertible.screen(
            list(run.redo),
            lambda item: convert([item]),
            lambda items: convert(items, start),
            skipped,
        )
        if screened is None:
            return False
        self.unconvertible_points += skipped[CONVERSION_ERROR]
        run.redo = deque(screened)
        return True

    async def _map_piece(self, run: _Run) -> _Piece | None:
        """Map the batch on until ``max_points`` samples are mapped or the batch ends.

        A request's points are at most the samples mapped for it (a histogram's parts make one
        point), plus the histogram parts and the step still waiting from before (the mapper
        maps each step one step late), which its budget counts.
        Each step maps at most ``sub_chunk_bytes`` of remote write and then lets the event loop
        run; the request is serialized in parts of ~``_SERIALIZE_POINTS`` points as it grows
        (a whole merged request at once would hold the loop for its whole length) and
        compressed off the loop when large.
        """
        mapper = run.mapper
        parts: list[bytes] = []
        points = fed = 0
        # Samples the mapper holds from before (a step mapped late, histogram parts): mapped
        # into this request, while what it holds at the end goes into the next.
        held = mapper.grouped + mapper.waiting_points
        # What waits is at most a quarter each (a step's samples, and the parts in groups).
        quarter = max(1, self.max_points // 4)
        budget = max(1, self.max_points - mapper.grouped - mapper.waiting_points)
        while not run.mapped_all and budget > 0:
            batch = run.redo.popleft() if run.redo else await run.batches.next()
            if batch is None:
                mapper.finish()
                run.mapped_all = True
                break
            rest: Step | None
            if isinstance(batch, Batch):
                first, rest = split_batch(batch, min(budget, quarter))
                budget -= first.point_count
                fed += first.point_count
                mapper.feed(first)
            else:
                step, rest, taken = split_step(batch, min(budget, quarter))
                budget -= taken
                fed += taken
                mapper.feed(step)
            if rest is not None:
                run.redo.appendleft(rest)
            if mapper.grouped > quarter:
                # Histogram parts waiting for the rest of their point: bounded like a request.
                mapper.flush_groups()
            if mapper.out.points >= _SERIALIZE_POINTS:
                part, count = mapper.cut()
                parts.append(part)
                points += count
            await asyncio.sleep(0)
        if run.mapped_all and not (points or mapper.out.points or mapper.updates):
            self.unmapped_points += mapper.take().unmapped
            return None
        part, count = mapper.cut()  # the rest of the request, as bytes
        if count:
            parts.append(part)
            points += count
        body = b"".join(parts)
        if body and self.cfg.compression == "gzip":
            body = await _gzip(body)
        mapped = mapper.take()  # its stream updates (its request is empty now)
        samples = held + fed - mapper.grouped - mapper.waiting_points
        self.unmapped_points += mapped.unmapped
        for bound in self.state.row_bounds.values():
            if bound.turned_full():
                log.warning(
                    "more label sets than the OTLP destination remembers; those beyond are "
                    "mapped afresh each time (slower) until it is emptied, at most every 10 "
                    "minutes",
                    extra={"destination": self.name, "limit": bound.limit},
                )
        return _Piece(body, mapped.updates, points, samples)

    def forget(self, entries: list[Entry]) -> None:
        """The batch ``entries`` (this very list) is not handed again: its progress goes."""
        self._runs.pop(id(entries), None)

    async def send(self, entries: list[Entry]) -> SendResult:
        """Send the batch as requests of at most ``max_points`` points, in order. A retried
        batch resumes at the request that was not accepted, with the same body."""
        run = self._run(entries)
        while True:
            if run.piece is None:
                run.piece = await self._next_piece(run)
                if run.piece is None:
                    self.forget(entries)
                    return SendResult(Outcome.OK, "ok")
            piece = run.piece
            if piece.body:
                result = await self._post(piece)
                if result is not None:
                    if result.outcome is not Outcome.RETRY:
                        self.forget(entries)
                    if run.accepted:
                        # What was accepted counts as forwarded (a drop, or a retry the sender
                        # gives up at sample_age_limit), and the sender must not resend the
                        # batch's entries one by one after a drop: it would send it again.
                        result = replace(result, accepted=run.accepted)
                    return result
                run.accepted += piece.samples
            # Accepted, or nothing to send (metadata only, or only the first observations of
            # delta streams): the baselines count as delivered.
            self.state.commit(piece.updates)
            run.piece = None

    async def _post(self, piece: _Piece) -> SendResult | None:
        """None when the destination accepted ``piece``, else what the sender should do."""
        headers = {"Content-Type": CONTENT_TYPE}
        if self.cfg.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        try:
            auth = auth_headers(self.cfg.basic_auth, self.cfg.authorization)
            status, response_headers, raw = await self.http.post(
                piece.body, {**self.cfg.headers, **auth, **headers}, read_limit=64 * 1024
            )
        except SendError as exc:
            return SendResult(Outcome.RETRY, exc.reason, detail=exc.detail)
        content_type = response_headers.get("Content-Type", "")
        if 200 <= status < 300:
            self._partial_success(raw, content_type)
            return None
        reason = f"http_{status}"
        detail = error_detail(raw, content_type)
        if status in RETRYABLE:
            retry_after = parse_retry_after(response_headers.get("Retry-After"), time.time())
            return SendResult(Outcome.RETRY, reason, retry_after, detail)
        return SendResult(Outcome.DROP, reason, None, detail)

    def _partial_success(self, raw: bytes, content_type: str) -> None:
        """A 2xx's ``partial_success``: rejected points are counted, not retried; its message
        logged once per distinct message (a receiver rejecting some of every batch would flood
        the log). A message with nothing rejected is a warning the spec lets servers send."""
        rejected, message = partial_success(raw, content_type)
        if rejected > 0:
            self.rejected_points += rejected
        elif not message:
            return
        if message in self._partial_logged or len(self._partial_logged) >= _LOGGED_MESSAGES:
            return
        self._partial_logged.add(message)
        what = (
            "destination rejected some data points (partial success); they are counted, not retried"
            if rejected > 0
            else "destination accepted the request with a warning (partial success)"
        )
        log.warning(
            f"{what} (logged once per message)",
            extra={"destination": self.name, "rejected": rejected, "response": message},
        )

    def tls_files_unusable(self) -> bool:
        return self.http.tls_files_unusable()

    async def close(self) -> None:
        for run in list(self._runs.values()):  # batches left half converted
            await run.batches.aclose()
        self._runs.clear()
        await self.http.close()


def partial_success(raw: bytes, content_type: str) -> tuple[int, str]:
    """``(rejected_data_points, error_message)`` of a 2xx answer, ``(0, "")`` when none.

    OTLP/HTTP answers in the request's encoding (protobuf here), but a JSON answer is read too.
    """
    if not raw:
        return 0, ""
    if "json" in content_type:
        try:
            doc = json.loads(raw)
        except ValueError:
            return 0, ""
        if not isinstance(doc, dict):
            return 0, ""
        partial = doc.get("partialSuccess", doc.get("partial_success")) or {}
        if not isinstance(partial, dict):
            return 0, ""
        count = partial.get("rejectedDataPoints", partial.get("rejected_data_points", 0))
        message = partial.get("errorMessage", partial.get("error_message", ""))
        try:
            return int(count or 0), str(message or "")
        except (TypeError, ValueError):
            return 0, str(message or "")
    try:
        response = ExportMetricsServiceResponse.FromString(raw)
    except DecodeError:
        return 0, ""
    return int(response.partial_success.rejected_data_points), str(
        response.partial_success.error_message
    )


def error_detail(raw: bytes, content_type: str) -> str:
    """A one-line reason from an error answer: a ``google.rpc.Status`` (protobuf or JSON) or
    text, cut short (it goes to a log line, once per reason)."""
    text = ""
    if "protobuf" in content_type:
        text = _status_message(raw) or ""
    elif "json" in content_type:
        try:
            doc = json.loads(raw)
            text = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        except ValueError:
            text = ""
    if not text:
        text = raw.decode("utf-8", "replace")
    return " ".join(text.split())[:512]


def _status_message(raw: bytes) -> str | None:
    """Field 2 (``message``) of a serialized ``google.rpc.Status``, which opentelemetry-proto
    does not ship; read straight off the wire format."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = raw[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    pos = 0
    try:
        while pos < len(raw):
            tag, pos = varint(pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = varint(pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = varint(pos)
                if field == 2:
                    return raw[pos : pos + size].decode("utf-8", "replace")
                pos += size
            else:
                return None
    except IndexError:
        return None
    return None


async def _gzip(body: bytes) -> bytes:
    if len(body) >= _OFF_LOOP_BYTES:  # zlib lets go of the GIL: the loop runs meanwhile
        return await asyncio.to_thread(_gzip_now, body)
    return _gzip_now(body)


def _gzip_now(body: bytes) -> bytes:
    return deflate.gzip(body)  # ISA-L at its fastest level (deflate.py)
