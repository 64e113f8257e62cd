"""A bounded, sharded queue for one destination.

Each series goes to one shard (by a hash of its labels), each shard is drained by exactly one
sender with one request in flight, so a series' samples reach the backend in the order they
arrived, retries included. Capacity counts points (samples + histograms) per shard, as
Prometheus' ``queue_config.capacity`` does; an entry stays counted until the backend has
answered for it, so memory is bounded by what is counted.

Everything here is synchronous and runs on the event loop: the check for room and the put that
follows it happen with no await between, which is what makes admission all-or-nothing across
destinations.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..model import Batch, Series
from .entry import Entry


def split_by_shard(batch: Batch, shards: int) -> list[Batch]:
    """One batch per shard (empty ones included); metadata travels with shard 0."""
    if shards == 1:
        return [batch]
    buckets: list[list[Series]] = [[] for _ in range(shards)]
    for series in batch.series:
        buckets[hash(series.labels) % shards].append(series)
    out = [Batch(tuple(b), ()) for b in buckets]
    out[0] = Batch(out[0].series, batch.metadata)
    return out


def chunk(batch: Batch, max_points: int) -> list[Batch]:
    """Split a batch so no request carries more than ``max_points`` (a bigger series goes alone)."""
    if batch.point_count <= max_points:
        return [batch] if batch.series or batch.metadata else []
    chunks: list[Batch] = []
    current: list[Series] = []
    points = 0
    metadata = batch.metadata
    for series in batch.series:
        n = len(series.samples) + len(series.histograms)
        if current and points + n > max_points:
            chunks.append(Batch(tuple(current), metadata))
            metadata = ()
            current, points = [], 0
        current.append(series)
        points += n
    if current or metadata:
        chunks.append(Batch(tuple(current), metadata))
    return chunks


class MemoryBudget:
    """Bytes held by all in-memory queues together; admission refuses what would exceed it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def room_for(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit


class Shard:
    __slots__ = ("_ready", "budget", "capacity", "entries", "in_flight", "points")

    def __init__(self, capacity: int, budget: MemoryBudget | None = None) -> None:
        self.capacity = capacity
        self.budget = budget
        self.entries: deque[Entry] = deque()
        self.points = 0  # queued + in flight
        self.in_flight: list[Entry] = []
        self._ready = asyncio.Event()

    def room_for(self, points: int) -> bool:
        # An empty shard always takes a batch, however large: otherwise a batch bigger than the
        # capacity could never be accepted and the sender would retry it forever.
        return self.points == 0 or self.points + points <= self.capacity

    def put(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.points += entry.points
        if self.budget is not None:
            self.budget.used += entry.size
        self._ready.set()

    async def take(self, max_points: int) -> list[Entry]:
        """Wait for work, then take queued entries up to ``max_points`` (at least one)."""
        while not self.entries:
            self._ready.clear()
            await self._ready.wait()
        taken: list[Entry] = []
        total = 0
        while self.entries:
            entry = self.entries[0]
            if taken and total + entry.points > max_points:
                break
            self.entries.popleft()
            taken.append(entry)
            total += entry.points
        self.in_flight = taken
        return taken

    def done(self) -> None:
        """The entries from the last ``take`` were answered for (delivered or dropped)."""
        self._release(self.in_flight)
        self.in_flight = []

    def _release(self, entries: list[Entry]) -> None:
        for entry in entries:
            self.points -= entry.points
            if self.budget is not None:
                self.budget.used -= entry.size

    def drain_all(self) -> list[Entry]:
        """Everything still queued (for shutdown accounting); the shard is empty afterwards."""
        entries = list(self.entries)
        self.entries.clear()
        self._release(entries)
        return entries


class ShardedQueue:
    def __init__(
        self,
        shards: int,
        capacity: int,
        max_points_per_send: int,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.shards = [Shard(capacity, budget) for _ in range(shards)]
        self.max_points_per_send = max_points_per_send
        self.budget = budget

    def plan(self, batch: Batch) -> list[list[Batch]]:
        """Per shard, the request-sized chunks of ``batch`` it must queue."""
        return [
            chunk(part, self.max_points_per_send)
            for part in split_by_shard(batch, len(self.shards))
        ]

    def room_for(self, points: int) -> bool:
        """Whether every shard could take its share of ``points`` (shares estimated evenly)."""
        share = -(-points // len(self.shards))
        return all(shard.room_for(share) for shard in self.shards)

    def put(self, entries: list[list[Entry]]) -> None:
        for shard, shard_entries in zip(self.shards, entries, strict=True):
            for entry in shard_entries:
                shard.put(entry)

    @property
    def points(self) -> int:
        return sum(s.points for s in self.shards)

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(e.size for s in self.shards for e in (*s.entries, *s.in_flight))
