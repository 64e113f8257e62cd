"""Sharded queue: per-series placement, capacity, chunking and merging."""

from __future__ import annotations

import asyncio

from gotk_relay.delivery.queue import Shard, ShardedQueue, chunk, split_by_shard
from gotk_relay.model import Batch, FamilyMetadata, Sample, Series


def _series(name: str, points: int = 1, start: int = 0) -> Series:
    return Series((("__name__", name),), tuple(Sample(float(i), start + i) for i in range(points)))


def test_a_series_always_lands_on_the_same_shard() -> None:
    batches = [Batch(tuple(_series(f"s{i}", start=t) for i in range(50))) for t in range(3)]
    placement: dict[object, set[int]] = {}
    for batch in batches:
        for index, part in enumerate(split_by_shard(batch, 4)):
            for s in part.series:
                placement.setdefault(s.labels, set()).add(index)
    assert all(len(shards) == 1 for shards in placement.values())
    assert len({i for v in placement.values() for i in v}) > 1  # and they do spread


def test_split_keeps_metadata_once_and_series_order() -> None:
    batch = Batch(tuple(_series(f"s{i}") for i in range(20)), (FamilyMetadata("s1"),))
    parts = split_by_shard(batch, 3)
    assert sum(len(p.metadata) for p in parts) == 1
    for part in parts:
        positions = [batch.series.index(s) for s in part.series]
        assert positions == sorted(positions)


def test_chunk_respects_max_points_and_keeps_order() -> None:
    batch = Batch(tuple(_series(f"s{i}", points=3) for i in range(10)), (FamilyMetadata("s0"),))
    chunks = chunk(batch, 7)
    assert [c.point_count for c in chunks] == [6, 6, 6, 6, 6]
    assert [s for c in chunks for s in c.series] == list(batch.series)
    assert chunks[0].metadata and not any(c.metadata for c in chunks[1:])


def test_a_series_bigger_than_max_points_goes_alone() -> None:
    batch = Batch((_series("a", 1), _series("big", 10), _series("b", 1)))
    assert [c.point_count for c in chunk(batch, 4)] == [1, 10, 1]


def test_capacity_counts_points_until_done() -> None:
    async def scenario() -> None:
        shard = Shard(capacity=10)
        shard.put(Batch((_series("a", 6),)))
        assert not shard.room_for(5)
        assert shard.room_for(4)
        taken = await shard.take(100)
        assert [b.point_count for b in taken] == [6]
        assert not shard.room_for(5)  # in flight still counts: memory is still held
        shard.done()
        assert shard.room_for(10)

    asyncio.run(scenario())


def test_an_empty_shard_takes_a_batch_larger_than_its_capacity() -> None:
    shard = Shard(capacity=10)
    assert shard.room_for(1000)


def test_take_merges_queued_batches_up_to_max_points() -> None:
    async def scenario() -> None:
        queue = ShardedQueue(shards=1, capacity=1000, max_points_per_send=5)
        for i in range(4):
            queue.put(queue.plan(Batch((_series(f"s{i}", 2),))))
        shard = queue.shards[0]
        first = await shard.take(queue.max_points_per_send)
        assert [b.series[0].name for b in first] == ["s0", "s1"]
        shard.done()
        second = await shard.take(queue.max_points_per_send)
        assert [b.series[0].name for b in second] == ["s2", "s3"]

    asyncio.run(scenario())
