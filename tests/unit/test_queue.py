"""Sharded queue: per-series placement, capacity, chunking and merging."""

from __future__ import annotations

import asyncio

import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import Entry, decode_entry, encode_entry, request_body
from gotk_relay.delivery.queue import (
    MemoryBudget,
    Shard,
    ShardedQueue,
    chunk,
    shard_key,
    split_by_shard,
)
from gotk_relay.model import Batch, FamilyMetadata, MetricType, Protocol, Sample, Series
from gotk_relay.wire import rw1, rw2


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


def test_a_series_bigger_than_max_points_is_cut_in_order() -> None:
    batch = Batch((_series("a", 1), _series("big", 10), _series("b", 1)))
    chunks = chunk(batch, 4)
    assert [c.point_count for c in chunks] == [1, 4, 4, 3]
    big = [s for c in chunks for x in c.series if x.name == "big" for s in x.samples]
    assert big == list(batch.series[1].samples)


def _entry(batch: Batch, protocol: Protocol = Protocol.V1) -> Entry:
    return encode_entry(batch, protocol)


def test_capacity_counts_points_until_done() -> None:
    async def scenario() -> None:
        shard = Shard(capacity=10)
        shard.put(_entry(Batch((_series("a", 6),))))
        assert not shard.room_for(5)
        assert shard.room_for(4)
        taken = await shard.take(100)
        assert [e.points for e in taken] == [6]
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
            plan = queue.plan(Batch((_series(f"s{i}", 2),)))
            queue.put([[_entry(c) for c in chunks] for chunks in plan])
        shard = queue.shards[0]
        first = await shard.take(queue.max_points_per_send)
        assert [decode_entry(e).series[0].name for e in first] == ["s0", "s1"]
        shard.done()
        second = await shard.take(queue.max_points_per_send)
        assert [decode_entry(e).series[0].name for e in second] == ["s2", "s3"]

    asyncio.run(scenario())


def test_metadata_requests_queued_in_an_outage_are_not_all_merged_into_one() -> None:
    """A request of metadata only has no points, but merging every one queued meanwhile made
    a request of any size: each weighs as much as Prometheus' largest metadata request
    (2000), so a 20000-point send takes ten, and the next send the rest, in order."""

    async def scenario() -> None:
        shard = Shard(capacity=1000)
        families = tuple(FamilyMetadata(f"m{i}", MetricType.GAUGE, "", "") for i in range(3))
        for _ in range(25):
            shard.put(_entry(Batch((), families)))
        shard.put(_entry(Batch((_series("after", 1),))))
        peeked = shard.peek(20_000)
        first = await shard.take(20_000)
        assert first == peeked and len(first) == 10
        assert all(e.points == 0 for e in first)
        shard.done()
        assert len(await shard.take(20_000)) == 10
        shard.done()
        last = await shard.take(20_000)
        assert [e.points for e in last] == [0] * 5 + [1]
        assert shard.room_for(1000 - 1) and not shard.room_for(1000)  # the point in flight

    asyncio.run(scenario())


def test_memory_budget_counts_bytes_until_done() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(limit=10_000)
        queue = ShardedQueue(shards=2, capacity=1000, max_points_per_send=100, budget=budget)
        plan = queue.plan(Batch(tuple(_series(f"s{i}") for i in range(10))))
        entries = [[_entry(c) for c in chunks] for chunks in plan]
        queue.put(entries)
        size = sum(e.size for shard in entries for e in shard)
        assert budget.used == size == queue.bytes > 0
        for shard in queue.shards:
            if shard.entries:
                await shard.take(100)
                shard.done()
        assert budget.used == 0

    asyncio.run(scenario())


def test_an_empty_budget_takes_an_entry_larger_than_the_limit() -> None:
    assert MemoryBudget(limit=1).room_for(10**6)
    budget = MemoryBudget(limit=100)
    budget.used = 60
    assert budget.room_for(40) and not budget.room_for(41)


def _plain(body: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(body))


def test_entries_hold_the_compressed_request() -> None:
    batch = Batch((_series("a", 2),), (FamilyMetadata("a"),))
    assert _plain(_entry(batch).payload) == rw1.encode(batch)


def test_v1_entries_merge_without_recompressing_and_equal_a_merged_encode() -> None:
    a = Batch((_series("a", 2),), (FamilyMetadata("a"),))
    b = Batch((_series("b", 1),))
    body = request_body([_entry(a), _entry(b)], Protocol.V1)
    # The merged block is the two blocks' element streams behind one new preamble.
    assert body.endswith(_entry(a).payload[1:] + _entry(b).payload[1:])
    assert _plain(body) == rw1.encode(a) + rw1.encode(b)
    assert rw1.decode(_plain(body)) == Batch(a.series + b.series, a.metadata)


def test_entries_convert_to_the_protocol_asked_for() -> None:
    a, b = Batch((_series("a", 2),)), Batch((_series("b", 1),))
    as_v2 = request_body([_entry(a, Protocol.V1), _entry(b, Protocol.V2)], Protocol.V2)
    assert rw2.decode(_plain(as_v2)).series == a.series + b.series
    as_v1 = request_body([_entry(a, Protocol.V2)], Protocol.V1)
    assert rw1.decode(_plain(as_v1)).series == a.series
    single = _entry(a, Protocol.V2)
    assert request_body([single], Protocol.V2) is single.payload


def test_shard_keys_are_the_same_in_another_process() -> None:
    import subprocess
    import sys

    labels = (("__name__", "up"), ("instance", "a:9100"), ("job", "node"))
    code = f"from gotk_relay.delivery.queue import shard_key; print(shard_key({labels!r}))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "random", "PYTHONPATH": "src"},
    )
    assert int(other.stdout) == shard_key(labels)


def test_histogram_and_summary_parts_share_a_shard() -> None:
    base = (("instance", "a"), ("job", "api"))
    parts = [
        (("__name__", "lat_bucket"), ("le", "0.1"), *base),
        (("__name__", "lat_bucket"), ("le", "+Inf"), *base),
        (("__name__", "lat_sum"), *base),
        (("__name__", "lat_count"), *base),
        (("__name__", "lat"), ("quantile", "0.99"), *base),
    ]
    assert len({shard_key(tuple(sorted(p))) for p in parts}) == 1
    assert shard_key((("__name__", "lat_sum"), ("instance", "b"), ("job", "api"))) != shard_key(
        tuple(sorted(parts[2]))
    )


def _tenant_entry(tenant: str, name: str, points: int = 1) -> Entry:
    return encode_entry(Batch((_series(name, points),)), Protocol.V1, tenant)


def _names(entries: list[Entry]) -> list[str]:
    return [s.name for e in entries for s in decode_entry(e).series]


def test_a_request_takes_its_tenants_entries_past_other_tenants() -> None:
    """Requests routed by tenant queue one entry per tenant each, alternating: a send takes
    every queued entry of the head's tenant (up to max points), and the others keep their
    places, so each tenant's stream is merged as an untenanted one is."""

    async def scenario() -> None:
        shard = Shard(capacity=1000)
        for i in range(4):
            shard.put(_tenant_entry("a", f"a{i}", 2))
            shard.put(_tenant_entry("b", f"b{i}", 2))
        first = await shard.take(6)
        assert _names(first) == ["a0", "a1", "a2"]
        assert {e.tenant for e in first} == {"a"}
        shard.done()
        assert _names(await shard.take(100)) == ["b0", "b1", "b2", "b3"]
        shard.done()
        assert _names(await shard.take(100)) == ["a3"]
        shard.done()
        assert shard.points == 0 and shard.memory_points == 0

    asyncio.run(scenario())


def test_a_request_looks_past_a_bounded_number_of_other_tenants_entries() -> None:
    async def scenario() -> None:
        shard = Shard(capacity=100_000)
        shard.put(_tenant_entry("a", "a0"))
        for i in range(300):  # more than the lookahead
            shard.put(_tenant_entry(f"t{i}", f"x{i}"))
        shard.put(_tenant_entry("a", "a1"))
        assert _names(await shard.take(100)) == ["a0"]  # a1 is beyond the lookahead
        shard.done()
        assert _names(await shard.take(100)) == ["x0"]
        shard.done()
        assert [e.tenant for e in shard.entries][:2] == ["t1", "t2"]
        assert shard.entries[-1].tenant == "a"

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None)
@given(
    queued=st.lists(
        st.tuples(st.sampled_from(["", "a", "b", "c"]), st.integers(1, 5)), max_size=40
    ),
    max_points=st.integers(1, 12),
    more=st.booleans(),
)
def test_tenant_merging_keeps_each_tenants_order(
    queued: list[tuple[str, int]], max_points: int, more: bool
) -> None:
    """Whatever the mix: every request is one tenant's, at most max points unless one entry
    is bigger, each tenant's entries come out in the order they were queued, and none is
    lost or sent twice (``take_more``, as poison isolation calls it, too)."""

    async def scenario() -> None:
        shard = Shard(capacity=10_000)
        for i, (tenant, points) in enumerate(queued):
            shard.put(_tenant_entry(tenant, f"e{i}", points))
        out: dict[str, list[str]] = {}
        seen: list[str] = []
        for _ in range(len(queued) + 1):
            if not shard.entries:
                break
            taken = await shard.take(max_points)
            tenant = taken[0].tenant
            if more:
                shard.take_more(max_points, tenant)
                taken = shard.in_flight
            assert {e.tenant for e in taken} == {tenant}
            if not more:
                assert len(taken) == 1 or sum(e.points for e in taken) <= max_points
            out.setdefault(tenant, []).extend(_names(taken))
            seen.extend(_names(taken))
            shard.done()
        assert not shard.entries and shard.points == 0 and shard.memory_points == 0
        assert sorted(seen) == sorted(f"e{i}" for i in range(len(queued)))
        for tenant, names in out.items():
            assert names == [f"e{i}" for i, (t, _) in enumerate(queued) if t == tenant]

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None)
@given(
    queued=st.lists(
        st.tuples(st.sampled_from(["", "a", "b"]), st.integers(1, 5)), min_size=1, max_size=40
    ),
    max_points=st.integers(1, 12),
)
def test_peek_shows_what_the_next_take_takes_and_takes_nothing(
    queued: list[tuple[str, int]], max_points: int
) -> None:
    """A destination that converts batches maps the next one ahead from ``peek``: it must be
    the very entries the next ``take`` hands out, and leave the queue as it was."""

    async def scenario() -> None:
        shard = Shard(capacity=10_000)
        for i, (tenant, points) in enumerate(queued):
            shard.put(_tenant_entry(tenant, f"e{i}", points))
        while shard.entries:
            before = (list(shard.entries), shard.points, shard.memory_points)
            peeked = shard.peek(max_points)
            assert (list(shard.entries), shard.points, shard.memory_points) == before
            taken = await shard.take(max_points)
            assert len(peeked) == len(taken) and all(
                a is b for a, b in zip(peeked, taken, strict=True)
            )
            shard.done()
        assert shard.peek(max_points) == []

    asyncio.run(scenario())
