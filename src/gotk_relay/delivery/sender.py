"""One queued destination: its sharded queue, one sender task per shard, retries, shutdown.

The protocol-specific part (encode, HTTP, how to read the answer) is a ``Client``; this module
only knows outcomes. A shard's sender holds its batch until the client reports OK or DROP, so a
retried batch is never overtaken by a newer one of the same series.

Two things keep one bad request from stalling a destination silently:

- Poison isolation. A request the destination keeps answering 5xx while it accepts others
  (Prometheus 2.42 answers 500 to a series with a duplicate label name) is split in halves,
  sent in order, until the smallest part it refuses is found: one series. That series is
  dropped (``reason="poison"``, one WARNING naming it), everything else delivered. Later samples
  of a suspected series wait until it is judged, so per-series order holds. When nothing
  is accepted at all, it is an outage: the whole batch is retried in order, as before.
- Supervision. A sender that hits an unexpected error (a spool that cannot be read or written,
  a bug) logs it once, reports it as the destination's problem (``/-/ready``, a metric), waits
  with backoff and carries on with the same batch; nothing in flight is lost or skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..config import TenantConfig
from ..model import Protocol
from .entry import Entry
from .isolate import Labels, describe, separate, series_of, split
from .queue import Shard, ShardedQueue
from .retry import Outcome, next_backoff, retry_delay
from .spool import SpoolError

log = logging.getLogger("gotk_relay.delivery")

# Failed attempts of a whole batch (5xx) before it is split to look for a poison series; it
# doubles after each isolation that found an outage, so a long outage costs few extra sends.
ISOLATE_AFTER = 3
MAX_ISOLATE_AFTER = 48
# Attempts of one part during isolation before it counts as refused.
PART_TRIES = 2
# Last tries of a series refused while others are accepted, before it is dropped as poison: a
# destination that fails at random (a flaky proxy answering 500 to 40% of requests) must not
# pass for one refusing that series. With PART_TRIES, 8 refusals in a row (0.4^8 < 0.1%);
# a real poison series costs about 8 backoffs (a few seconds) once.
POISON_LAST_TRIES = 6
# How much a shard may hold in flight while isolation compares refused series with what
# follows them: beyond both PULL_FACTOR × max_samples_per_send points and PULL_ENTRIES requests,
# a run of refused series with nothing accepted counts as an outage.
PULL_FACTOR = 4
PULL_ENTRIES = 64
# Refused single series with nothing accepted in between, with more of the batch still to try:
# the destination is down, not picky (an outage costs ~log2(series) + this many extra sends).
OUTAGE_SUSPECTS = 8
MAX_OUTAGE_SUSPECTS = 1024
# The drop reason of points given up with receiver.acknowledge: delivered when their request
# was answered 503 (a failure, or acknowledge_timeout): not lost, their sender sends them again.
NOT_ACKNOWLEDGED = "not_acknowledged"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    reason: str  # "ok", "http_400", "connect_error", ... — a metric label value
    retry_after: float | None = None
    detail: str = ""  # the response body or error text (already cut to one short line)
    # A partial outcome, from a client that sends one batch as several requests and answers for
    # each part itself (Datadog). ``refused``: points of the batch the destination refused and
    # the client dropped (``refused_reason``), with OK or DROP. ``accepted``, with DROP: points
    # accepted before the drop; None (the default): none, and the sender may resend the
    # batch's requests one by one to find the refused one (``_dropped``). The rest of the batch
    # counts as the outcome says: forwarded (OK) or dropped with ``reason`` (DROP). With RETRY
    # they say what was taken so far, counted so if the sender gives the batch up.
    refused: int = 0
    refused_reason: str = ""
    accepted: int | None = None


@dataclass(frozen=True, slots=True)
class LastError:
    """A destination's last refused request or sender error: for the status page."""

    at: float  # time.time()
    reason: str  # as SendResult.reason, or "sender_error"
    detail: str


class Client(typing.Protocol):
    """What a destination's sender needs from its protocol-specific client."""

    @property
    def protocol(self) -> Protocol:
        """The message this destination's entries are queued in: a remote write client may fall
        back from 2.0 to 1.0 while it runs; Datadog and OTLP clients take 1.0 entries."""

    @property
    def tenant(self) -> TenantConfig | None:
        """The tenant routing the relay splits this destination's requests by, if any."""

    @property
    def skipped(self) -> Mapping[str, int]:
        """Samples not sent, by reason (points the destination cannot carry); for telemetry."""

    async def send(self, entries: list[Entry]) -> SendResult: ...

    def forget(self, entries: list[Entry]) -> None:
        """The sender will not hand ``entries`` (this very list) again: a client that keeps a
        batch's progress between retries (Datadog, OTLP) lets it go."""

    def tls_files_unusable(self) -> bool:
        """Whether its ``tls_config`` files changed on disk and cannot be used (the previous
        ones stay in use); for telemetry."""

    async def close(self) -> None: ...


class Recorder(typing.Protocol):
    """What the sender reports; implemented by telemetry (kept abstract for tests)."""

    def forwarded(self, destination: str, points: int) -> None: ...

    def dropped(self, destination: str, points: int, reason: str) -> None: ...

    def retried(self, destination: str, reason: str) -> None: ...

    def sent(self, destination: str, reason: str, seconds: float) -> None: ...

    def task_failed(self, destination: str) -> None: ...


async def _linger(until: float) -> None:
    """Wait until ``until`` (``time.monotonic``), if it is still ahead.

    Why: a destination that gets little of each request (a Datadog destination keeping the few
    series one pays for) would otherwise send one tiny request per request received, and a
    request's fixed cost (HTTP, JSON, gzip) is most of its CPU. After a take that was not a
    full request, the next one waits until the linger has passed: at most one request per
    linger per shard while they are small, none of them delayed when traffic is sparse (the
    first take after a quiet spell does not wait), and bounded by batch_send_deadline.
    """
    delay = until - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    min_backoff: float
    max_backoff: float
    sample_age_limit: float = 0.0  # seconds; 0 = keep retrying however old


def _same_or(before: list[Entry], now: list[Entry]) -> list[Entry]:
    """``before`` when it holds the very entries of ``now``, in order; else ``now``."""
    if len(before) == len(now) and all(a is b for a, b in zip(before, now, strict=True)):
        return before
    return now


def isolatable(result: SendResult) -> bool:
    """Whether a refusal may be about the data: a 5xx other than 502/503/504 (Prometheus
    answers 500 to a request holding an invalid series). 502/503/504 say a proxy or the backend
    is unavailable or overloaded, and connection errors, timeouts, 408 and 429 are the
    transport's or the backend's state: splitting cannot help, and a flaky backend must never
    have its series taken for poison."""
    reason = result.reason
    return reason.startswith("http_5") and reason not in ("http_502", "http_503", "http_504")


class QueuedDestination:
    def __init__(
        self,
        name: str,
        client: Client,
        queue: ShardedQueue,
        retry: RetrySettings,
        recorder: Recorder,
        clock: Callable[[], float] = time.time,
        isolate: bool = True,
        linger: float = 0.0,
    ) -> None:
        self.name = name
        # A shard that took less than a full request waits this long after that take before
        # the next one (see _linger); 0: never waits.
        self.linger = linger
        # False for clients that must be retried with the same batch (Datadog's resends only
        # the pieces not yet accepted and keeps counter state per batch).
        self.isolate = isolate
        self.client = client
        self.queue = queue
        self.retry = retry  # read at every decision: a reload may replace it (sample_age_limit)
        self.recorder = recorder
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._logged: set[str] = set()
        self._ok_sends = 0  # requests accepted, all shards: isolation's evidence of progress
        self._failing: dict[int, SendResult] = {}  # shards whose last answer was a retry
        self._failing_since = 0.0
        self._failing_retries = 0
        self._faults: dict[int, str] = {}  # shards whose sender loop hit an error, and why
        self._isolate_after = ISOLATE_AFTER
        self._outage_suspects = OUTAGE_SUSPECTS
        self._isolating: set[int] = set()  # shards looking for a poison series
        self.last_error: LastError | None = None  # read-only for others (the status page)
        if hasattr(client, "upcoming"):  # a client that maps the next batch ahead
            client.upcoming = self._upcoming

    def _upcoming(self, entries: list[Entry]) -> list[Entry]:
        """The entries the shard sending ``entries`` will take next, as things stand."""
        for shard in self.queue.shards:
            if entries and shard.in_flight and shard.in_flight[0] is entries[0]:
                return shard.peek(self.queue.max_points_per_send)
        return []

    def start(self, after: asyncio.Task[None] | None = None) -> None:
        """Start the shard senders (after ``after`` finished: a reloaded destination's
        predecessor drains first, so a series' old and new samples are never sent concurrently)."""
        for index, shard in enumerate(self.queue.shards):
            task = asyncio.create_task(self._run(shard, after), name=f"send:{self.name}:{index}")
            self._tasks.append(task)

    # Health -------------------------------------------------------------------------------
    def problem(self) -> str:
        """Why a sender of this destination cannot work ("" when none): for ``/-/ready``."""
        return next(iter(self._faults.values()), "")

    @property
    def failing(self) -> bool:
        """Whether a shard's last request was refused (retrying: no progress)."""
        return bool(self._failing)

    def oldest_unsent_ms(self) -> int | None:
        """The newest sample timestamp of the oldest entry not yet delivered (None: empty)."""
        oldest: int | None = None
        for shard in self.queue.shards:
            ms = shard.oldest_ms()
            if ms is not None and (oldest is None or ms < oldest):
                oldest = ms
        return oldest

    def _fault(self, index: int, exc: Exception) -> None:
        reason = f"sender of shard {index}: {exc}" if len(self.queue.shards) > 1 else str(exc)
        self.recorder.task_failed(self.name)
        self.last_error = LastError(time.time(), "sender_error", reason)
        if index in self._faults:
            return
        self._faults[index] = reason
        log.error(
            "destination's sender failed; retrying with backoff (logged once until it recovers)",
            extra={"destination": self.name, "shard": index, "err": str(exc)},
            exc_info=not isinstance(exc, SpoolError),  # a bug: its traceback, once
        )

    def _recovered(self, index: int) -> None:
        if self._faults.pop(index, None) is not None:
            log.info(
                "destination's sender recovered", extra={"destination": self.name, "shard": index}
            )

    # Sending ------------------------------------------------------------------------------
    async def _run(self, shard: Shard, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            # The destination this one replaces finishes first (order); whatever its end
            # raised, this one sends on: its entries were accepted.
            try:
                await asyncio.shield(after)
            except Exception as exc:
                log.warning(
                    "the destination this one replaces ended with an error; sending on",
                    extra={"destination": self.name, "shard": shard.index, "err": repr(exc)},
                )
        backoff = 0.0
        while not self.queue.attached:  # a reload's successor: the spool is read now
            try:
                self.queue.attach()
            except Exception as exc:  # supervised: logged once, shown in /-/ready, retried
                self._fault(shard.index, exc)
                backoff = next_backoff(backoff, self.retry.min_backoff, self.retry.max_backoff)
                await asyncio.sleep(backoff)
        self._recovered(shard.index)
        if shard.index:  # after a change of shard count, shard 0 sends the spooled rows first
            await self.queue.gate.wait()
        backoff = 0.0
        entries: list[Entry] | None = None
        delivered = False
        last_take = 0.0  # when this shard last took less than a full request
        # The list last handed to _deliver: after an error it is handed again, the very same
        # object, so that a client that keeps a batch's progress by its identity (Datadog and
        # OTLP: requests already accepted) resumes it rather than sending all of it again.
        live: list[Entry] = []
        while True:
            try:
                if entries is None:
                    if self.linger and shard.points < self.queue.max_points_per_send:
                        await _linger(last_take + self.linger)
                    entries = await shard.take(self.queue.max_points_per_send)
                    full = _points(entries) >= self.queue.max_points_per_send
                    last_take = 0.0 if full else time.monotonic()
                if not delivered:
                    # in_flight, not entries: isolation may have taken more from the queue
                    live = _same_or(live, self._skip_settled(list(shard.in_flight)))
                    if live:
                        await self._deliver(shard, live)
                    delivered = True
                    _answered(shard.in_flight)
                shard.done()  # with a spool: deletes the rows; may fail like any spool call
                if shard.index == 0:
                    self.queue.passed()
                entries, delivered, backoff, live = None, False, 0.0, []
                self._recovered(shard.index)
            except asyncio.CancelledError:
                if self.queue.spool is None and entries is not None and not delivered:
                    # spooled entries are resent after a restart
                    self.recorder.dropped(self.name, _points(shard.in_flight), "shutdown")
                    self._fail(shard.in_flight, "shutdown", None)
                    shard.done()
                raise
            except Exception as exc:  # supervised: logged once, shown in /-/ready, retried
                self._fault(shard.index, exc)
                backoff = next_backoff(backoff, self.retry.min_backoff, self.retry.max_backoff)
                await asyncio.sleep(backoff)

    async def _send(self, shard: Shard, entries: list[Entry]) -> SendResult:
        started = time.perf_counter()
        result = await self.client.send(entries)
        self.recorder.sent(self.name, result.reason, time.perf_counter() - started)
        if result.outcome is not Outcome.OK:
            self.last_error = LastError(time.time(), result.reason, result.detail)
        elif result.refused:
            self.last_error = LastError(time.time(), result.refused_reason, result.detail)
        if shard.index in self._isolating:  # one episode: judged when the isolation ends
            if result.outcome is Outcome.OK:
                self._ok_sends += 1
        elif result.outcome is Outcome.RETRY:
            self._note_failing(shard.index, result)
        else:
            if result.outcome is Outcome.OK:
                self._ok_sends += 1
            self._note_answered(shard.index)
        return result

    async def _deliver(self, shard: Shard, entries: list[Entry]) -> None:
        backoff = 0.0
        failures = 0
        while True:
            result = await self._send(shard, entries)
            if result.outcome is Outcome.OK:
                self._delivered(entries, result)
                return
            if result.outcome is Outcome.DROP:
                await self._dropped(shard, entries, result)
                return
            waited = [e for e in entries if e.ack is not None]
            if waited:
                # receiver.acknowledge: delivered: their requests are answered 503 now and
                # their senders send them again; the relay does not (delivery/ack.py).
                self._fail(waited, result.reason, result.retry_after)
                self.recorder.dropped(self.name, _points(waited), NOT_ACKNOWLEDGED)
                self.client.forget(entries)  # a new list from here: the client starts it anew
                entries = [e for e in entries if e.ack is None]
                if not entries:
                    return
                # What the client reported accepted or refused was of the whole list, not of
                # the entries left (which a give-up below would count).
                result = SendResult(
                    result.outcome, result.reason, result.retry_after, result.detail
                )
            if self._too_old(entries):
                self._given_up(entries, result)
                return
            failures += 1
            if self.isolate and failures >= self._isolate_after and isolatable(result):
                self._isolating.add(shard.index)
                try:
                    rest = await self._isolate(shard, entries)
                finally:
                    self._isolating.discard(shard.index)
                if rest is None:
                    self._note_answered(shard.index)
                    self._isolate_after, self._outage_suspects = ISOLATE_AFTER, OUTAGE_SUSPECTS
                    return
                # An outage, or more refused series in a row than this round looked at: back
                # to retrying everything in order; the next round comes later and looks further.
                entries, failures = rest, 0
                self._isolate_after = min(self._isolate_after * 2, MAX_ISOLATE_AFTER)
                self._outage_suspects = min(self._outage_suspects * 2, MAX_OUTAGE_SUSPECTS)
            self.recorder.retried(self.name, result.reason)
            backoff = next_backoff(backoff, self.retry.min_backoff, self.retry.max_backoff)
            delay = retry_delay(backoff, result.retry_after, self.retry.max_backoff, jitter=0.1)
            log.debug(
                "retrying",
                extra={"destination": self.name, "reason": result.reason, "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)

    def _skip_settled(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` but those of requests already answered 503 (another destination failed,
        or the wait timed out): their senders send them again (delivery/ack.py)."""
        if all(e.ack is None or not e.ack.settled for e in entries):
            return entries
        skipped = [e for e in entries if e.ack is not None and e.ack.settled]
        self.recorder.dropped(self.name, _points(skipped), NOT_ACKNOWLEDGED)
        return [e for e in entries if e.ack is None or not e.ack.settled]

    def _fail(self, entries: Iterable[Entry], reason: str, retry_after: float | None) -> None:
        """The requests waiting for ``entries`` are answered 503 (``receiver.acknowledge``)."""
        for entry in entries:
            if entry.ack is not None:
                entry.ack.failed(self.name, reason, retry_after)

    def _given_up(self, entries: list[Entry], result: SendResult) -> None:
        """Count a batch given up at ``sample_age_limit``: what the client says the destination
        took of it already (a Datadog batch sent as several requests) as such, the rest as
        ``sample_age_limit``."""
        self.client.forget(entries)
        self._count_partial(entries, result, "sample_age_limit")

    def _count_partial(self, entries: list[Entry], result: SendResult, rest: str) -> None:
        """Count a batch that ends unsent in part: what the client reports accepted as
        forwarded, what it reports refused under its reason, the rest under ``rest``."""
        points = _points(entries)
        accepted = min(result.accepted or 0, points)
        refused = min(result.refused, points - accepted)
        if accepted:
            self.recorder.forwarded(self.name, accepted)
        if refused:
            self.recorder.dropped(self.name, refused, result.refused_reason)
        if points - accepted - refused:
            self.recorder.dropped(self.name, points - accepted - refused, rest)

    def _delivered(self, entries: list[Entry], result: SendResult) -> None:
        """Count an OK: forwarded, but the points the client reports refused (and dropped)."""
        points = _points(entries)
        refused = min(result.refused, points)
        if refused:
            self._log_drop(result.refused_reason, result.detail)
            self.recorder.dropped(self.name, refused, result.refused_reason)
        self.recorder.forwarded(self.name, points - refused)

    async def _dropped(self, shard: Shard, entries: list[Entry], result: SendResult) -> None:
        if result.accepted is not None:
            # The client answered for each of its requests (Datadog, OTLP): what was accepted is
            # forwarded, and resending the entries one by one would send it a second time.
            # ``detail`` is the drop's answer, not the refusals': their body is logged when a
            # batch with refusals is OK (the usual case).
            self._log_drop(result.reason, result.detail)
            self._count_partial(entries, result, result.reason)
            return
        if len(entries) > 1 and result.reason in ("http_400", "http_413"):
            # Several requests merged into one (too big for it, or one of them malformed): resend
            # them one by one, so one bad series never takes others with it. A 400 is a
            # verdict on the data (Prometheus and Mimir store the valid series of a request
            # before answering it), so the split stops at the requests that came.
            for entry in entries:
                await self._deliver(shard, [entry])
            return
        self._log_drop(result.reason, result.detail)
        self.recorder.dropped(self.name, _points(entries), result.reason)

    async def _attempts(self, shard: Shard, part: list[Entry], tries: int) -> SendResult:
        """Send ``part`` up to ``tries`` times while it is answered with a retry."""
        backoff = 0.0
        while True:
            result = await self._send(shard, part)
            tries -= 1
            if result.outcome is not Outcome.RETRY or tries <= 0 or not isolatable(result):
                return result
            self.recorder.retried(self.name, result.reason)
            backoff = next_backoff(backoff, self.retry.min_backoff, self.retry.max_backoff)
            await asyncio.sleep(retry_delay(backoff, result.retry_after, self.retry.max_backoff))

    async def _isolate(self, shard: Shard, entries: list[Entry]) -> list[Entry] | None:
        """Deliver ``entries`` part by part, dropping only single series that stay refused
        while others are accepted. None when all is settled; otherwise (an outage: nothing
        accepted) what is left to retry whole, in order."""
        accepted_before = self._ok_sends
        halves = split(entries)
        work: deque[list[Entry]] = deque(halves if halves is not None else [entries])
        suspects: list[tuple[list[Entry], SendResult]] = []
        # Later samples of the suspects' series, held back until the suspects are judged: a
        # suspect delivered at its last try must not land behind them.
        suspected: set[Labels] = set()
        held: list[list[Entry]] = []
        tenant = entries[0].tenant if entries else ""
        cap = PULL_FACTOR * self.queue.max_points_per_send
        while True:
            if suspects and self._ok_sends > accepted_before:
                # Others are accepted: the suspects are poison unless their last try passes.
                for suspect, refusal in suspects:
                    await self._poison(shard, suspect, refusal)
                work.extendleft(reversed(held))
                suspects, held = [], []
                suspected.clear()
            if not work:
                if not suspects:
                    break
                # Only refused series so far: compare with what is queued next (in flight is
                # bounded). A series refused while later ones are accepted is the poison.
                if len(shard.in_flight) >= PULL_ENTRIES and _points(shard.in_flight) >= cap:
                    break
                more = shard.take_more(self.queue.max_points_per_send, tenant)
                if not more:
                    break
                work.append(more)
            part = work.popleft()
            if suspected:
                part, later = separate(part, suspected)
                if later:
                    held.append(later)
                if not part:
                    continue
            if self._too_old(part):
                self.recorder.dropped(self.name, _points(part), "sample_age_limit")
                continue
            result = await self._attempts(shard, part, PART_TRIES)
            if result.outcome is Outcome.OK:
                self._delivered(part, result)
                continue
            if result.outcome is Outcome.DROP:
                await self._dropped(shard, part, result)
                continue
            if not isolatable(result):  # the destination went away meanwhile: an outage
                return _flatten([s for s, _ in suspects], held, [part], work)
            halves = split(part)
            if halves is not None:
                work.extendleft(reversed(halves))
                continue
            if self._ok_sends > accepted_before and not suspects:
                await self._poison(shard, part, result)
                continue
            suspects.append((part, result))
            suspected |= series_of(part)
            if len(suspects) >= self._outage_suspects and work:
                return _flatten([s for s, _ in suspects], held, work)
        if not suspects:
            return None
        return _flatten([s for s, _ in suspects], held)

    async def _poison(self, shard: Shard, part: list[Entry], result: SendResult) -> None:
        """Drop a series refused while others were accepted, after its last tries (with
        backoff): an outage that ended during the isolation, or a destination failing at random,
        must not pass for poison."""
        points = _points(part)
        last = await self._attempts(shard, part, POISON_LAST_TRIES)
        if last.outcome is Outcome.OK:
            self._delivered(part, last)
            return
        if last.outcome is Outcome.DROP:
            await self._dropped(shard, part, last)
            return
        log.warning(
            "destination keeps refusing one series while it accepts others; dropping it",
            extra={
                "destination": self.name,
                "series": describe(part),
                "reason": result.reason,
                "response": result.detail[:200],
                "points": points,
            },
        )
        self.recorder.dropped(self.name, points, "poison")

    def _too_old(self, entries: list[Entry]) -> bool:
        limit = self.retry.sample_age_limit
        if not limit or not entries:
            return False
        newest = max(e.newest_ms for e in entries)
        return newest / 1000.0 < self._clock() - limit

    # Log once ------------------------------------------------------------------------------
    def _note_failing(self, index: int, result: SendResult) -> None:
        if not self._failing:
            self._failing_since = time.monotonic()
            self._failing_retries = 0
            log.warning(
                "destination is failing; retrying with backoff until it recovers "
                "(logged once; the recovery is logged too)",
                extra={
                    "destination": self.name,
                    "reason": result.reason,
                    "response": result.detail[:200],
                    "queued_points": self.queue.points,
                },
            )
        self._failing[index] = result
        self._failing_retries += 1

    def _note_answered(self, index: int) -> None:
        if self._failing.pop(index, None) is not None and not self._failing:
            log.info(
                "destination recovered",
                extra={
                    "destination": self.name,
                    "failing_seconds": round(time.monotonic() - self._failing_since, 3),
                    "failed_requests": self._failing_retries,
                },
            )

    def _log_drop(self, reason: str, detail: str) -> None:
        # Once per reason: a backend rejecting every batch must not flood the log.
        if reason in self._logged:
            return
        self._logged.add(reason)
        log.warning(
            "destination rejected a batch or part of one; it is dropped, not retried "
            "(logged once per reason)",
            extra={"destination": self.name, "reason": reason, "response": detail},
        )

    @property
    def protocol(self) -> Protocol:
        """The message entries are encoded in for this destination (it may fall back to v1)."""
        return self.client.protocol

    @property
    def idle(self) -> bool:
        return self.queue.points == 0

    def halt(self) -> asyncio.Task[None]:
        """Stop sending at once, without draining: for a spooled destination being replaced,
        whose entries stay in the spool for its successor. The task ends once it is closed."""
        for task in self._tasks:
            task.cancel()
        return asyncio.create_task(self._close_after(list(self._tasks)), name=f"halt:{self.name}")

    async def _close_after(self, tasks: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_client()

    async def _close_client(self) -> None:
        """Close the connections; a failure to is logged, not raised: nothing is lost by it,
        and a successor waits on this."""
        try:
            await self.client.close()
        except Exception as exc:
            log.warning(
                "destination's connections could not be closed",
                extra={"destination": self.name, "err": repr(exc)},
            )

    async def stop(self, deadline: float) -> None:
        """Let the senders drain until ``deadline`` (a loop.time()), then cancel them.

        Whatever is still queued then is counted as dropped with reason ``shutdown``.
        """
        loop = asyncio.get_running_loop()
        while not self.idle and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for shard in self.queue.shards:
            left = shard.drain_all()
            if left:
                self.recorder.dropped(self.name, _points(left), "shutdown")
                self._fail(left, "shutdown", None)
        await self._close_client()


def _answered(entries: list[Entry]) -> None:
    """Tell the requests waiting for ``entries`` that their destination answered for them
    (delivered, dropped, or failed: a failed request's answer is decided already)."""
    for entry in entries:
        if entry.ack is not None:
            entry.ack.answered()


def _points(entries: list[Entry]) -> int:
    return sum(e.points for e in entries)


def _flatten(*parts: Iterable[list[Entry]]) -> list[Entry]:
    return [entry for group in parts for part in group for entry in part]
