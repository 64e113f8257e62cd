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
import contextlib
from collections import deque

from ..model import Batch, Protocol, Series
from ..write.routing import shard_key, split_by_shard
from .entry import Entry, cut_entry, decode_entry, encode_entry, split_series
from .spool import Spool, SpoolError

__all__ = ["MemoryBudget", "Shard", "ShardedQueue", "chunk", "shard_key", "split_by_shard"]


def chunk(batch: Batch, max_points: int) -> list[Batch]:
    """Split a batch so no request carries more than ``max_points`` (a bigger series is cut into
    series of at most that many, ``entry.split_series``)."""
    if batch.point_count <= max_points:
        return [batch] if batch.series or batch.metadata else []
    chunks: list[Batch] = []
    current: list[Series] = []
    points = 0
    metadata = batch.metadata
    for series in (piece for whole in batch.series for piece in split_series(whole, max_points)):
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


# How many spool rows a shard reads at once when it replays a backlog from disk.
_READ_ROWS = 64
# How many entries of other tenants a shard passes over to fill a request with one tenant's
# (Shard._pop): bounds the work per send when thousands of tenants share a shard.
_LOOKAHEAD = 256
# What an entry without points (a metadata request) weighs when entries are merged into a
# request of max_samples_per_send: as many as the most metadata one request of Prometheus
# holds (metadata_config.max_samples_per_send). Counted as 0, every metadata request queued
# during an outage went out in one send.
_NO_POINTS_WEIGHT = 2000


def _weight(entry: Entry) -> int:
    return entry.points or _NO_POINTS_WEIGHT


class Shard:
    """One ordered stream of entries; with a spool, entries beyond what memory holds wait on disk.

    Without a spool every entry is in ``entries``. With one, every entry is first committed to
    the spool (it has a ``spool_id``), and memory keeps only up to ``capacity`` points of them:
    once an entry had to stay on disk, all later ones do too until the disk backlog is read
    back, so memory always holds a prefix and the disk the rest, and ``id > cursor`` in id order
    is exactly the disk part.
    """

    __slots__ = (
        "_ready",
        "attached",
        "budget",
        "capacity",
        "cursor",
        "disk_entries",
        "entries",
        "in_flight",
        "index",
        "memory_points",
        "name",
        "points",
        "queued_bytes",
        "spool",
    )

    def __init__(
        self,
        capacity: int,
        budget: MemoryBudget | None = None,
        spool: Spool | None = None,
        name: str = "",
        index: int = 0,
    ) -> None:
        self.capacity = capacity
        self.budget = budget
        self.spool = spool
        self.name = name  # the destination, as the spool keys its rows
        self.index = index
        self.entries: deque[Entry] = deque()
        self.memory_points = 0  # what ``entries`` holds
        self.points = 0  # queued (memory and disk) + in flight
        self.queued_bytes = 0  # likewise, in payload bytes
        self.disk_entries = 0  # entries only in the spool, not in memory
        self.cursor = 0  # highest spool id taken so far
        self.in_flight: list[Entry] = []
        self._ready = asyncio.Event()
        # With a spool: whether the rows on disk are counted (``adopt``); until then every
        # entry put stays on disk, and the backlog read at ``adopt`` counts it.
        self.attached = spool is None

    def adopt(self, entries: int, points: int, size: int) -> None:
        """Take what the spool holds for this shard as its queue: a previous run's backlog and
        what was put since this shard was made (the spool is read after those were committed)."""
        self.disk_entries = entries
        self.points = points
        self.queued_bytes = size
        self.attached = True
        if entries:
            self._ready.set()

    def room_for(self, points: int) -> bool:
        # An empty shard always takes a batch, however large: otherwise a batch bigger than the
        # capacity could never be accepted and the sender would retry it forever.
        return self.points == 0 or self.points + points <= self.capacity

    def put(self, entry: Entry) -> None:
        self.points += entry.points
        self.queued_bytes += entry.size
        if self.spool is not None and (
            not self.attached
            or self.disk_entries
            or self.memory_points + entry.points > self.capacity
        ):
            self.disk_entries += 1  # committed already; read back when its turn comes
        else:
            self.entries.append(entry)
            self.memory_points += entry.points
            if self.budget is not None and self.spool is None:
                self.budget.used += entry.size
        self._ready.set()

    async def take(self, max_points: int) -> list[Entry]:
        """Wait for work, then take queued entries up to ``max_points`` (at least one)."""
        while not self.entries and not self.disk_entries:
            self._ready.clear()
            await self._ready.wait()
        if not self.entries:
            self._load()
        self.in_flight = self._pop(max_points, self.entries[0].tenant if self.entries else "")
        return self.in_flight

    def take_more(self, max_points: int, tenant: str) -> list[Entry]:
        """Take the next queued entries of ``tenant`` (up to ``max_points``, at least one) into
        what is in flight: poison isolation compares a refused series with what follows it."""
        if not self.entries and self.disk_entries:
            self._load()
        taken = self._pop(max_points, tenant)
        if taken:
            self.in_flight = self.in_flight + taken  # a new list: the sender holds the old one
        return taken

    def peek(self, max_points: int) -> list[Entry]:
        """What the next ``take(max_points)`` would take of the entries in memory, left queued
        (a destination that converts batches maps the next one while a request is in flight)."""
        entries = self.entries
        if not entries:
            return []
        tenant = entries[0].tenant
        taken: list[Entry] = []
        total = passed = 0
        for entry in entries:
            if passed >= _LOOKAHEAD:
                break
            if entry.tenant != tenant:
                passed += 1
                continue
            if taken and total + _weight(entry) > max_points:
                break
            taken.append(entry)
            total += _weight(entry)
        return taken

    def _pop(self, max_points: int, tenant: str) -> list[Entry]:
        """Queued entries of ``tenant`` in queue order, up to ``max_points`` (at least one):
        one request carries one tenant.

        Entries of other tenants are passed over (within ``_LOOKAHEAD`` entries) and keep
        their places: each tenant is its own ordered stream, so only the order within a tenant
        matters. Taking only the entries up to the first of another tenant sent one received
        request's share per request when tenants alternate (every request routed by tenant
        queues one entry per tenant): the stream then ran at one share per round trip.
        """
        taken: list[Entry] = []
        passed: list[Entry] = []
        total = weight = 0
        entries = self.entries
        while entries and len(passed) < _LOOKAHEAD:
            entry = entries[0]
            if entry.tenant != tenant:
                passed.append(entries.popleft())
                continue
            if taken and weight + _weight(entry) > max_points:
                break
            entries.popleft()
            taken.append(entry)
            total += entry.points
            weight += _weight(entry)
        if passed:
            entries.extendleft(reversed(passed))
        self.memory_points -= total
        if taken:
            self.cursor = max(self.cursor, taken[-1].spool_id)
        return taken

    def oldest_ms(self) -> int | None:
        """The newest sample timestamp of the oldest entry not delivered (None when empty)."""
        heads = [e.newest_ms for e in self.in_flight if e.newest_ms]
        if heads:
            return min(heads)
        if self.entries:
            return self.entries[0].newest_ms or None
        if self.disk_entries and self.spool is not None:
            try:
                return self.spool.oldest_newest_ms(self.name, self.index)
            except SpoolError:
                return None
        return None

    def _load(self) -> None:
        assert self.spool is not None
        rows = self.spool.read(self.name, self.index, self.cursor, _READ_ROWS)
        if not rows:  # the count was off (rows deleted elsewhere): trust the disk
            self.disk_entries = 0
            return
        # No more than capacity in memory (at least one row): the rest is read again later.
        room, kept = self.capacity - self.memory_points, 0
        for row in rows:
            if kept and row.points > room:
                break
            room -= row.points
            kept += 1
        rows = rows[:kept]
        self.entries.extend(rows)
        self.memory_points += sum(e.points for e in rows)
        self.disk_entries = max(0, self.disk_entries - len(rows))
        # Rows read back now sit in memory; the cursor moves as they are taken.

    def done(self) -> None:
        """The entries from the last ``take`` were answered for (delivered or dropped)."""
        if self.spool is not None:
            self.spool.delete(e.spool_id for e in self.in_flight)
        self._release(self.in_flight)
        self.in_flight = []

    def _release(self, entries: list[Entry]) -> None:
        for entry in entries:
            self.points -= entry.points
            self.queued_bytes -= entry.size
            if self.budget is not None and self.spool is None:
                self.budget.used -= entry.size

    def forget_oldest(self, dropping: Dropping) -> None:
        """Take out what ``dropping`` chose of this shard (its rows deleted from the spool, if
        any, in the transaction that chose them): its memory head, then rows only on disk."""
        for _ in range(dropping.memory):
            entry = self.entries.popleft()
            self.memory_points -= entry.points
            self.cursor = max(self.cursor, entry.spool_id)
        for entry in dropping.disk:
            self.disk_entries = max(0, self.disk_entries - 1)
            self.cursor = max(self.cursor, entry.spool_id)
        self._release(dropping.chosen)

    def drain_all(self) -> list[Entry]:
        """Everything queued in memory only, for shutdown accounting (spooled entries stay)."""
        if self.spool is not None:
            return []
        entries = list(self.entries)
        self.entries.clear()
        self.memory_points = 0
        self._release(entries)
        return entries


class Dropping:
    """Entries of one shard chosen to be dropped (``ShardedQueue.choose_oldest``), oldest
    first: the first ``memory`` entries it holds in memory, then ``disk``, rows only in the
    spool, read past them (memory holds a prefix of the shard, the disk the rest)."""

    __slots__ = ("_read", "chosen", "disk", "memory", "shard")

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.memory = 0
        self.disk: list[Entry] = []
        self.chosen: list[Entry] = []
        self._read: deque[Entry] = deque()

    def next(self) -> Entry | None:
        """Choose the shard's next oldest queued entry; None when none is left."""
        shard = self.shard
        if self.memory < len(shard.entries):
            entry = shard.entries[self.memory]
            self.memory += 1
        else:
            if not self._read and shard.spool is not None and shard.disk_entries > len(self.disk):
                after = max(
                    shard.cursor,
                    shard.entries[-1].spool_id if shard.entries else 0,
                    self.disk[-1].spool_id if self.disk else 0,
                )
                self._read.extend(shard.spool.read(shard.name, shard.index, after, _READ_ROWS))
            if not self._read:
                return None
            entry = self._read.popleft()
            self.disk.append(entry)
        self.chosen.append(entry)
        return entry

    def ids(self) -> list[int]:
        """The spool rows to delete (none without a spool)."""
        return [e.spool_id for e in self.chosen if e.spool_id]


class ShardedQueue:
    def __init__(
        self,
        shards: int,
        capacity: int,
        max_points_per_send: int,
        budget: MemoryBudget | None = None,
        spool: Spool | None = None,
        name: str = "",
        *,
        split_entries: bool = False,
        attach: bool = True,
    ) -> None:
        self.shards = [Shard(capacity, budget, spool, name, i) for i in range(shards)]
        self.max_points_per_send = max_points_per_send
        # A destination that sends its queued entries as they are (remote write): an entry of
        # a request taken as it came may hold more than one request may (fit).
        self.split_entries = split_entries
        self.budget = budget
        self.spool = spool
        self.name = name
        # After a change of the shard count with rows spooled: the highest id of those, all
        # on shard 0, which the other shards wait for (``gate``) before they send anything.
        self.barrier = 0
        self.gate = asyncio.Event()
        self.gate.set()
        if attach:
            self.attach()

    @property
    def attached(self) -> bool:
        return all(shard.attached for shard in self.shards)

    def attach(self) -> None:
        """With a spool, take the rows it holds for this destination and count them (SpoolError
        when the spool cannot be read). Rows spooled under another shard count all go to shard
        0, which sends them before the other shards send anything (``gate``, ``passed``).
        A queue made at start attaches at once; one made by a reload attaches when its senders
        start, after the destination it replaces has stopped, so that nothing in a reload
        touches the spool and a spool error is the senders' to retry."""
        if self.spool is None or self.attached:
            return
        shards = len(self.shards)
        found = self.spool.backlog(self.name)
        recorded, stored = self.spool.layout(self.name)
        barrier = stored
        if found and recorded != shards:
            # Spooled under another shard count (or one not recorded): a series' rows may be
            # on another shard than its new ones go to. All of them are sent first, in order,
            # from shard 0; the other shards send nothing until that is done, so no series'
            # newer samples overtake its older ones.
            barrier = self.spool.merge_shards(self.name)
            found = self.spool.backlog(self.name)
        if shards == 1 or (barrier and not self.spool.holds_up_to(self.name, barrier)):
            barrier = 0  # one shard keeps the order by itself; or the rows were all sent
        if (recorded, stored) != (shards, barrier):
            # Kept in the spool until passed: a restart or reload during the first shard's
            # catch-up keeps the others waiting. Written only on a change (a full disk
            # still starts).
            self.spool.set_layout(self.name, shards, barrier)
        if barrier:
            self.barrier = barrier
            self.gate.clear()
        for index, shard in enumerate(self.shards):
            shard.adopt(*found.get(index, (0, 0, 0)))

    def passed(self) -> None:
        """Open the gate once every row up to the barrier was answered for (delivered or
        dropped: deleted from the spool). Called after shard 0's sends and after drops."""
        spool = self.spool
        if self.barrier and spool is not None and not spool.holds_up_to(self.name, self.barrier):
            spool.set_layout(self.name, len(self.shards), 0)
            self.barrier = 0
            self.gate.set()

    def fit(self, entry: Entry) -> list[Entry]:
        """``entry`` as request-sized entries, in order: itself when it holds at most
        ``max_points_per_send`` points (or this queue's destination makes its own requests),
        else cut on its bytes as ``chunk`` cuts a batch (``entry.cut_entry``: a bigger series
        cut too), dated as the entry was (a request taken as it came is dated by its arrival)."""
        if not self.split_entries or entry.points <= self.max_points_per_send:
            return [entry]
        if entry.protocol == Protocol.V1:
            return cut_entry(entry, self.max_points_per_send)
        parts = chunk(decode_entry(entry), self.max_points_per_send)  # the fast path is 1.0
        return [
            encode_entry(part, entry.protocol, entry.tenant)._replace(newest_ms=entry.newest_ms)
            for part in parts
        ]

    def plan(self, batch: Batch) -> list[list[Batch]]:
        """Per shard, the request-sized chunks of ``batch`` it must queue."""
        return [
            chunk(part, self.max_points_per_send)
            for part in split_by_shard(batch, len(self.shards))
        ]

    def room_for(self, points: int) -> bool:
        """Whether every shard could take its share of ``points`` (shares estimated evenly).

        With a spool, capacity bounds only what is kept in memory; the spool's own size bound
        is checked by the relay.
        """
        if self.spool is not None:
            return True
        share = -(-points // len(self.shards))
        return all(shard.room_for(share) for shard in self.shards)

    def put(self, entries: list[list[Entry]]) -> None:
        for shard, shard_entries in zip(self.shards, entries, strict=True):
            for entry in shard_entries:
                shard.put(entry)

    def choose_oldest(self, size: int) -> list[Dropping]:
        """Which queued entries to drop, oldest of each shard in turn, to free ``size`` bytes
        (or everything queued, not in flight, if that is less); nothing is dropped yet. The
        caller deletes their spool rows (``Dropping.ids``) in the transaction that spools what
        takes their place, then calls ``forget``: a failed write drops nothing."""
        plans = [Dropping(shard) for shard in self.shards]
        freed = 0
        while freed < size:
            progress = False
            for plan in plans:
                entry = plan.next()
                if entry is not None:
                    freed += entry.size
                    progress = True
                    if freed >= size:
                        break
            if not progress:
                break
        return [plan for plan in plans if plan.chosen]

    def forget(self, chosen: list[Dropping]) -> int:
        """Take out the entries ``choose_oldest`` chose, once their rows are deleted; their
        points. Never raises: it runs after the transaction that deleted them committed, and
        a request whose rows are committed must not be refused for what follows."""
        for plan in chosen:
            plan.shard.forget_oldest(plan)
        with contextlib.suppress(SpoolError):  # shard 0's next send opens the gate then
            self.passed()
        return sum(e.points for plan in chosen for e in plan.chosen)

    def drop_oldest(self, size: int) -> int:
        """``choose_oldest`` and ``forget`` with the rows deleted in one transaction of their
        own; the points dropped."""
        chosen = self.choose_oldest(size)
        if self.spool is not None:
            self.spool.delete(i for plan in chosen for i in plan.ids())
        return self.forget(chosen)

    @property
    def points(self) -> int:
        return sum(s.points for s in self.shards)

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.queued_bytes for s in self.shards)
