"""One queued destination: its sharded queue, one sender task per shard, retries, shutdown.

The protocol-specific part (encode, HTTP, how to read the answer) is a ``Client``; this module
only knows outcomes. A shard's sender holds its batch until the client reports OK or DROP, so a
retried batch is never overtaken by a newer one of the same series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .entry import Entry
from .queue import Shard, ShardedQueue
from .retry import Outcome, next_backoff, retry_delay

log = logging.getLogger("gotk_relay.delivery")


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    reason: str  # "ok", "http_400", "connect_error", ... — a metric label value
    retry_after: float | None = None
    detail: str = ""  # the response body or error text (already cut to one short line)


class Client(Protocol):
    async def send(self, entries: list[Entry]) -> SendResult: ...

    async def close(self) -> None: ...


class Recorder(Protocol):
    """What the sender reports; implemented by telemetry (kept abstract for tests)."""

    def forwarded(self, destination: str, points: int) -> None: ...

    def dropped(self, destination: str, points: int, reason: str) -> None: ...

    def retried(self, destination: str, reason: str) -> None: ...

    def sent(self, destination: str, reason: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class RetrySettings:
    min_backoff: float
    max_backoff: float
    sample_age_limit: float = 0.0  # seconds; 0 = keep retrying however old


class QueuedDestination:
    def __init__(
        self,
        name: str,
        client: Client,
        queue: ShardedQueue,
        retry: RetrySettings,
        recorder: Recorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.client = client
        self.queue = queue
        self.retry = retry
        self.recorder = recorder
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._logged: set[str] = set()

    def start(self, after: asyncio.Task[None] | None = None) -> None:
        """Start the shard senders (after ``after`` finished: a reloaded destination's
        predecessor drains first, so a series' old and new samples are never sent concurrently)."""
        for index, shard in enumerate(self.queue.shards):
            task = asyncio.create_task(self._run(shard, after), name=f"send:{self.name}:{index}")
            self._tasks.append(task)

    async def _run(self, shard: Shard, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.shield(after)
        while True:
            entries = await shard.take(self.queue.max_points_per_send)
            try:
                await self._deliver(entries)
            except asyncio.CancelledError:
                if self.queue.spool is None:  # spooled entries are resent after a restart
                    self.recorder.dropped(self.name, _points(entries), "shutdown")
                    shard.done()
                raise
            shard.done()

    async def _deliver(self, entries: list[Entry]) -> None:
        backoff = 0.0
        points = _points(entries)
        while True:
            started = time.perf_counter()
            result = await self.client.send(entries)
            self.recorder.sent(self.name, result.reason, time.perf_counter() - started)
            if result.outcome is Outcome.OK:
                self.recorder.forwarded(self.name, points)
                return
            if result.outcome is Outcome.DROP:
                if len(entries) > 1 and result.reason == "http_400":
                    # Several requests merged into one: find the one the destination refuses,
                    # so a malformed series forwarded unchecked never takes others with it.
                    for entry in entries:
                        await self._deliver([entry])
                    return
                self._log_drop(result)
                self.recorder.dropped(self.name, points, result.reason)
                return
            if self._too_old(entries):
                self.recorder.dropped(self.name, points, "sample_age_limit")
                return
            self.recorder.retried(self.name, result.reason)
            backoff = next_backoff(backoff, self.retry.min_backoff, self.retry.max_backoff)
            delay = retry_delay(backoff, result.retry_after, self.retry.max_backoff, jitter=0.1)
            log.debug(
                "retrying",
                extra={"destination": self.name, "reason": result.reason, "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)

    def _too_old(self, entries: list[Entry]) -> bool:
        if not self.retry.sample_age_limit:
            return False
        newest = max(e.newest_ms for e in entries)
        return newest / 1000.0 < self._clock() - self.retry.sample_age_limit

    def _log_drop(self, result: SendResult) -> None:
        # Once per reason: a backend rejecting every batch must not flood the log.
        if result.reason in self._logged:
            return
        self._logged.add(result.reason)
        log.warning(
            "destination rejected a batch; it is dropped, not retried (logged once per reason)",
            extra={"destination": self.name, "reason": result.reason, "response": result.detail},
        )

    @property
    def protocol(self) -> str:
        """The message entries are encoded in for this destination (it may fall back to v1)."""
        return str(getattr(self.client, "protobuf_message", "prometheus.WriteRequest"))

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
        await self.client.close()

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
        await self.client.close()


def _points(entries: list[Entry]) -> int:
    return sum(e.points for e in entries)
