"""The SQLite spool and spooled shards: order, resume after a restart, bounds."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from gotk_relay.delivery.entry import decode_entry, encode_entry
from gotk_relay.delivery.queue import ShardedQueue
from gotk_relay.delivery.spool import FORMAT, SCHEMA, Spool, SpoolError
from gotk_relay.model import Batch, Protocol, Sample, Series
from gotk_relay.wire import rw1


def _batch(name: str, ts: int, points: int = 1) -> Batch:
    return Batch(
        (Series((("__name__", name),), tuple(Sample(float(i), ts + i) for i in range(points))),)
    )


def _spooled(spool: Spool, queue: ShardedQueue, batch: Batch) -> None:
    """What the relay does: encode, commit to the spool, then queue with the row ids."""
    plan = queue.plan(batch)
    entries = [[encode_entry(c, Protocol.V1) for c in chunks] for chunks in plan]
    ids = iter(spool.append([(queue.name, i, e) for i, shard in enumerate(entries) for e in shard]))
    queue.put([[e._replace(spool_id=next(ids)) for e in shard] for shard in entries])


def _filled(path: Path, count: int) -> tuple[Spool, ShardedQueue]:
    """A spool and a one-shard queue holding 2 points in memory, ``count`` one-sample entries
    ("s0", "s1", ...) queued: the rest of them on disk only."""
    spool = Spool(path)
    queue = ShardedQueue(1, capacity=2, max_points_per_send=100, spool=spool, name="d")
    for i in range(count):
        _spooled(spool, queue, _batch(f"s{i}", i))
    return spool, queue


async def _drain(queue: ShardedQueue) -> list[str]:
    """Take and acknowledge everything queued; the series names in the order they came out."""
    names: list[str] = []
    shard = queue.shards[0]
    while shard.points:
        for entry in await shard.take(queue.max_points_per_send):
            names.extend(s.name for s in decode_entry(entry).series)
        shard.done()
    return names


def test_entries_replay_in_order_after_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path)
        queue = ShardedQueue(1, capacity=3, max_points_per_send=2, spool=spool, name="d")
        for i in range(10):
            _spooled(spool, queue, _batch(f"s{i}", i))
        assert queue.shards[0].memory_points == 3  # the rest waits on disk only
        first = await queue.shards[0].take(2)
        assert [decode_entry(e).series[0].name for e in first] == ["s0", "s1"]
        queue.shards[0].done()  # delivered: deleted from the spool
        await queue.shards[0].take(2)  # s2, s3 in flight when the process dies
        spool.close()

        spool = Spool(tmp_path)
        resumed = ShardedQueue(1, capacity=3, max_points_per_send=2, spool=spool, name="d")
        assert resumed.points == 8
        assert await _drain(resumed) == [f"s{i}" for i in range(2, 10)]
        assert spool.backlog("d") == {}

    asyncio.run(scenario())


def test_new_entries_wait_behind_the_disk_backlog(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path)
        queue = ShardedQueue(1, capacity=2, max_points_per_send=100, spool=spool, name="d")
        for i in range(6):
            _spooled(spool, queue, _batch(f"a{i}", i))
        taken = await queue.shards[0].take(100)  # memory part
        queue.shards[0].done()
        for i in range(3):  # arrive while older entries are still on disk only
            _spooled(spool, queue, _batch(f"b{i}", 100 + i))
        rest = await _drain(queue)
        assert [decode_entry(e).series[0].name for e in taken] + rest == [
            *(f"a{i}" for i in range(6)),
            *(f"b{i}" for i in range(3)),
        ]

    asyncio.run(scenario())


def test_drop_oldest_frees_space_from_the_head(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, queue = _filled(tmp_path, 5)
        size = queue.shards[0].entries[0].size
        assert queue.drop_oldest(size * 2) == 2
        assert await _drain(queue) == ["s2", "s3", "s4"]
        assert spool.backlog("d") == {}

    asyncio.run(scenario())


def test_drop_oldest_reaches_past_memory_into_rows_only_on_disk(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, queue = _filled(tmp_path, 6)
        assert queue.shards[0].disk_entries == 4
        size = queue.shards[0].entries[0].size
        assert queue.drop_oldest(size * 4) == 4  # two in memory, two read from disk
        assert queue.points == 2
        assert await _drain(queue) == ["s4", "s5"]
        assert spool.backlog("d") == {}

    asyncio.run(scenario())


def test_chosen_entries_stay_until_forgotten(tmp_path: Path) -> None:
    """Choosing drops nothing: a write that fails after the choice leaves the queue whole."""

    async def scenario() -> None:
        spool, queue = _filled(tmp_path, 4)
        size = queue.shards[0].entries[0].size
        chosen = queue.choose_oldest(size * 3)
        assert [i for plan in chosen for i in plan.ids()] == [1, 2, 3]
        assert queue.points == 4 and spool.backlog("d")[0].entries == 4
        assert await _drain(queue) == ["s0", "s1", "s2", "s3"]

    asyncio.run(scenario())


def test_resharding_keeps_every_row(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    queue = ShardedQueue(4, capacity=100, max_points_per_send=100, spool=spool, name="d")
    _spooled(spool, queue, Batch(tuple(_batch(f"s{i}", 1).series[0] for i in range(40))))
    before = sum(b.entries for b in spool.backlog("d").values())
    spool.close()
    spool = Spool(tmp_path)
    smaller = ShardedQueue(2, capacity=100, max_points_per_send=100, spool=spool, name="d")
    assert set(spool.backlog("d")) <= {0, 1}
    assert sum(b.entries for b in spool.backlog("d").values()) == before
    assert smaller.points == 40


def test_destinations_are_kept_apart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a = ShardedQueue(1, capacity=10, max_points_per_send=10, spool=spool, name="a")
    ShardedQueue(1, capacity=10, max_points_per_send=10, spool=spool, name="b")
    _spooled(spool, a, _batch("x", 1, points=3))
    assert spool.backlog("a")[0].points == 3
    assert spool.backlog("b") == {}
    assert spool.destinations() == ["a"]


def test_a_spool_of_uncompressed_entries_is_upgraded_in_place(tmp_path: Path) -> None:
    batch = Batch((Series((("__name__", "old"),), (Sample(1.0, 1000),)),))
    plain = rw1.encode(batch)
    db = sqlite3.connect(tmp_path / "spool.sqlite3")
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO entries (destination, shard, protocol, points, newest_ms, tenant, payload)"
        " VALUES ('d', 0, ?, 1, 1000, '', ?)",
        (Protocol.V1, plain),
    )
    db.commit()
    db.close()
    spool = Spool(tmp_path)
    try:
        (entry,) = spool.read("d", 0, 0, 10)
        assert decode_entry(entry) == batch
        assert spool.db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
    finally:
        spool.close()
    reopened = Spool(tmp_path)  # already upgraded: left as it is
    try:
        assert decode_entry(reopened.read("d", 0, 0, 10)[0]) == batch
    finally:
        reopened.close()


def test_a_spool_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "spool.sqlite3")
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.close()
    with pytest.raises(SpoolError, match="newer gotk-relay"):
        Spool(tmp_path)


def test_tenants_taken_past_each_other_replay_in_order_after_a_restart(tmp_path: Path) -> None:
    """A request takes its tenant's entries past other tenants' (Shard._pop), with some rows on
    disk only: the spool's cursor stays right, and after a restart every row not delivered
    comes back, each tenant's in order."""

    async def scenario() -> None:
        spool = Spool(tmp_path)
        queue = ShardedQueue(1, capacity=4, max_points_per_send=3, spool=spool, name="d")
        order = [("a" if i % 2 == 0 else "b", f"s{i}") for i in range(12)]
        for i, (tenant, name) in enumerate(order):
            entry = encode_entry(_batch(name, i), Protocol.V1, tenant)
            (row,) = spool.append([("d", 0, entry)])
            queue.put([[entry._replace(spool_id=row)]])
        shard = queue.shards[0]
        first = await shard.take(3)
        assert [decode_entry(e).series[0].name for e in first] == ["s0", "s2"]
        shard.done()
        second = await shard.take(3)  # in flight when the process dies
        assert [decode_entry(e).series[0].name for e in second] == ["s1", "s3"]
        spool.close()

        spool = Spool(tmp_path)
        resumed = ShardedQueue(1, capacity=4, max_points_per_send=3, spool=spool, name="d")
        shard = resumed.shards[0]
        got: dict[str, list[str]] = {}
        for _ in range(20):
            if not shard.points:
                break
            for entry in await shard.take(3):
                got.setdefault(entry.tenant, []).append(decode_entry(entry).series[0].name)
            shard.done()
        assert got == {
            "a": [n for t, n in order[4:] if t == "a"],
            "b": [n for t, n in order if t == "b"],
        }
        assert spool.backlog("d") == {}

    asyncio.run(scenario())


def test_a_spool_in_use_by_another_relay_is_refused_until_it_is_closed(tmp_path: Path) -> None:
    """Two relays on one data_dir would each send the other's rows: the second is refused,
    naming the holder, and can open the spool once the first has closed it (or died)."""
    first = Spool(tmp_path)
    try:
        with pytest.raises(SpoolError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            Spool(tmp_path)
    finally:
        first.close()
    Spool(tmp_path).close()


def test_a_backlog_is_read_back_no_more_than_capacity_at_a_time(tmp_path: Path) -> None:
    """Replaying a backlog keeps the memory bound (``capacity`` points a shard, or one entry
    when a single entry holds more): rows are read back a capacity's worth at a time, every
    one of them in order."""

    async def scenario() -> None:
        spool = Spool(tmp_path)
        try:
            for i in range(10):
                entry = encode_entry(_batch(f"s{i}", i), Protocol.V1)
                spool.append([("d", 0, entry)])
            queue = ShardedQueue(1, capacity=3, max_points_per_send=1, spool=spool, name="d")
            shard = queue.shards[0]
            seen = []
            for _ in range(10):
                taken = await shard.take(1)
                assert shard.memory_points + sum(e.points for e in shard.in_flight) <= 3
                seen += [decode_entry(e).series[0].name for e in taken]
                shard.done()
            assert seen == [f"s{i}" for i in range(10)]
        finally:
            spool.close()

    asyncio.run(scenario())
