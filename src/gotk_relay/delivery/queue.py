"""A bounded, sharded queue for one destination.

Each series goes to one shard (by a hash of its labels), each shard is drained by exactly one
sender with one request in flight, so a series' samples reach the backend in the order they
arrived, retries included. Capacity counts points (samples + histograms) per shard, as
Prometheus' ``queue_config.capacity`` does; a batch's points stay counted until the backend has
answered for them, so memory is bounded by what is counted.

Everything here is synchronous and runs on the event loop: the check for room and the put that
follows it happen with no await between, which is what makes admission all-or-nothing across
destinations.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..model import Batch, Series


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
        return [batch]
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


class Shard:
    __slots__ = ("_ready", "capacity", "entries", "in_flight", "points")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: deque[tuple[Batch, int]] = deque()
        self.points = 0  # queued + in flight
        self.in_flight = 0
        self._ready = asyncio.Event()

    def room_for(self, points: int) -> bool:
        # An empty shard always takes a batch, however large: otherwise a batch bigger than the
        # capacity could never be accepted and the sender would retry it forever.
        return self.points == 0 or self.points + points <= self.capacity

    def put(self, batch: Batch) -> None:
        n = batch.point_count
        if not batch.series and not batch.metadata:
            return
        self.entries.append((batch, n))
        self.points += n
        self._ready.set()

    async def take(self, max_points: int) -> list[Batch]:
        """Wait for work, then take queued batches up to ``max_points`` (at least one)."""
        while not self.entries:
            self._ready.clear()
            await self._ready.wait()
        taken: list[Batch] = []
        total = 0
        while self.entries:
            batch, n = self.entries[0]
            if taken and total + n > max_points:
                break
            self.entries.popleft()
            taken.append(batch)
            total += n
        self.in_flight = total
        return taken

    def done(self) -> None:
        """The batches from the last ``take`` were answered for (delivered or dropped)."""
        self.points -= self.in_flight
        self.in_flight = 0

    def drain_all(self) -> list[Batch]:
        """Everything still queued (for shutdown accounting); the shard is empty afterwards."""
        batches = [b for b, _ in self.entries]
        self.entries.clear()
        self.points = self.in_flight
        return batches

    @property
    def queued_points(self) -> int:
        return self.points


class ShardedQueue:
    def __init__(self, shards: int, capacity: int, max_points_per_send: int) -> None:
        self.shards = [Shard(capacity) for _ in range(shards)]
        self.max_points_per_send = max_points_per_send

    def plan(self, batch: Batch) -> list[Batch]:
        return split_by_shard(batch, len(self.shards))

    def room_for(self, points: int) -> bool:
        """Whether every shard could take its share of ``points`` (shares estimated evenly)."""
        share = -(-points // len(self.shards))
        return all(shard.room_for(share) for shard in self.shards)

    def put(self, parts: list[Batch]) -> None:
        for shard, part in zip(self.shards, parts, strict=True):
            for piece in chunk(part, self.max_points_per_send):
                shard.put(piece)

    @property
    def points(self) -> int:
        return sum(s.points for s in self.shards)

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.shards)
