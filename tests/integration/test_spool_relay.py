"""The relay with a spool: acked means on disk for every destination; restarts resume."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.delivery.spool import SpoolError
from gotk_relay.relay import Relay
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    receivers,
    relay_client,
    rw_body,
)

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}


def _config(data_dir: Path, *urls: str, **spool: object) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "spool": {"data_dir": str(data_dir), **spool},
        "remote_write": [
            {"name": f"d{i}", "url": url, "queue_config": {**FAST, "capacity": 4}}
            for i, url in enumerate(urls)
        ],
    }


async def _post(client: object, names: list[str], ts: int) -> int:
    body, headers = rw_body(gauge_batch(names, ts))
    response = await client.post("/api/v1/write", data=body, headers=headers)  # type: ignore[attr-defined]
    return int(response.status)


def _stamps(receiver: ScriptedReceiver, name: str) -> list[int]:
    """The timestamps of ``name``'s samples, in the order the receiver got them."""
    return [
        x.timestamp
        for b in receiver.delivered()
        for s in b.series
        if s.name == name
        for x in s.samples
    ]


def _sample(relay: Relay, name: str, labels: dict[str, str]) -> float:
    return relay.telemetry.registry.get_sample_value(name, labels) or 0.0


async def test_acked_batches_survive_a_restart_and_are_delivered_in_order(tmp_path: Path) -> None:
    down = ScriptedReceiver(default=Reply(503))
    up = ScriptedReceiver()
    async with receivers(down, up):
        # First life: both destinations fail, far more is acked than memory holds (capacity 4).
        async with relay_client(
            _config(tmp_path, down.url, up.url.replace(str(up.port), str(down.port)))
        ) as (client, relay):
            for t in range(30):
                assert await _post(client, ["a", "b"], 1000 + t) == 204
            assert _sample(relay, "gotk_relay_spool_bytes", {"destination": "d0"}) > 0
        # Second life on the same spool: the destinations answer now.
        async with relay_client(_config(tmp_path, up.url, up.url)) as (client, relay):
            await eventually(lambda: sum(b.sample_count for b in up.delivered()) == 2 * 60)
            await eventually(
                lambda: _sample(relay, "gotk_relay_spool_bytes", {"destination": "d0"}) == 0
            )
    stamps: dict[str, list[int]] = {}
    for batch in up.delivered():
        for s in batch.series:
            stamps.setdefault(s.name, []).extend(x.timestamp for x in s.samples)
    # Two destinations pointed at one receiver: each series arrives twice, each copy in order.
    for name in ("a", "b"):
        assert sorted(stamps[name]) == sorted([1000 + t for t in range(30)] * 2)


async def test_a_full_spool_pushes_back_with_503(tmp_path: Path) -> None:
    down = ScriptedReceiver(default=Reply(hang=True))
    async with (
        receivers(down),
        relay_client(_config(tmp_path, down.url, max_bytes=2000)) as (client, relay),
    ):
        statuses = [await _post(client, [f"m{i}" for i in range(10)], 1000 + t) for t in range(20)]
        assert statuses[0] == 204
        assert 503 in statuses
        assert _sample(
            relay, "gotk_relay_rejected_requests_total", {"reason": "queue_full"}
        ) == statuses.count(503)
        assert _sample(relay, "gotk_relay_spool_bytes", {"destination": "d0"}) <= 2000 + 1000


async def test_drop_oldest_keeps_accepting_and_counts_what_it_dropped(tmp_path: Path) -> None:
    down = ScriptedReceiver(default=Reply(hang=True))
    # Entries are compressed: 20 ten-series requests are ≈2 kB in all, over 800 bytes.
    config = _config(tmp_path, down.url, max_bytes=800, when_full="drop_oldest")
    async with receivers(down), relay_client(config) as (client, relay):
        statuses = [await _post(client, [f"m{i}" for i in range(10)], 1000 + t) for t in range(20)]
        assert set(statuses) == {204}
        dropped = _sample(
            relay, "gotk_relay_samples_dropped_total", {"destination": "d0", "reason": "spool_full"}
        )
        assert dropped > 0
        assert _sample(relay, "gotk_relay_spool_bytes", {"destination": "d0"}) <= 800


async def test_drop_oldest_drops_nothing_when_the_write_that_needs_the_room_fails(
    tmp_path: Path,
) -> None:
    """The oldest rows are deleted in the transaction that spools the request taking their
    place: a request refused because that write failed leaves the queue as it was."""
    down = ScriptedReceiver(default=Reply(hang=True))
    config = _config(tmp_path, down.url, max_bytes=800, when_full="drop_oldest")
    names = [f"m{i}" for i in range(10)]

    def rows() -> list[int]:
        with sqlite3.connect(tmp_path / "spool.sqlite3") as db:
            return [r[0] for r in db.execute("SELECT id FROM entries ORDER BY id")]

    def dropped(relay: Relay) -> float:
        labels = {"destination": "d0", "reason": "spool_full"}
        return _sample(relay, "gotk_relay_samples_dropped_total", labels)

    async with receivers(down), relay_client(config) as (client, relay):
        for t in range(20):  # full: every later request makes room
            assert await _post(client, names, 1000 + t) == 204
        before, counted = rows(), dropped(relay)
        assert counted > 0
        with sqlite3.connect(tmp_path / "spool.sqlite3") as db:  # the next write fails
            db.execute(
                "CREATE TRIGGER full BEFORE INSERT ON entries"
                " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        assert await _post(client, names, 2000) == 503
        assert rows() == before
        assert dropped(relay) == counted
        with sqlite3.connect(tmp_path / "spool.sqlite3") as db:
            db.execute("DROP TRIGGER full")
        assert await _post(client, names, 2001) == 204
        after = rows()
        assert set(before) - set(after)  # older rows made room (those in flight stay)
        assert after[-1] > before[-1]
        assert dropped(relay) > counted
        assert _sample(relay, "gotk_relay_spool_bytes", {"destination": "d0"}) <= 800


async def test_a_reloaded_destination_resumes_the_spooled_backlog_of_its_predecessor(
    tmp_path: Path,
) -> None:
    from gotk_relay.config import load_text

    old = ScriptedReceiver(default=Reply(503))
    new = ScriptedReceiver()
    async with receivers(old, new), relay_client(_config(tmp_path, old.url)) as (client, relay):
        for t in range(10):
            assert await _post(client, ["a", "b"], 1000 + t) == 204
        await eventually(lambda: len(old.requests) >= 2)  # retrying against the failing URL
        relay.reload(load_text(yaml.safe_dump(_config(tmp_path, new.url))))
        await eventually(lambda: sum(b.sample_count for b in new.delivered()) == 20)
    stamps = [
        x.timestamp for b in new.delivered() for s in b.series if s.name == "a" for x in s.samples
    ]
    assert stamps == [1000 + t for t in range(10)]  # each once, in order


async def test_a_spooled_destination_replaced_by_a_reload_hands_over_once_it_has_stopped(
    tmp_path: Path,
) -> None:
    """With a spool, a changed destination is stopped at once and its successor resumes its
    rows: the successor's first request comes only after the replaced one has let go of its
    connections (the request it had under way, hanging here, is abandoned first)."""
    hanging = ScriptedReceiver(default=Reply(hang=True))
    fresh = ScriptedReceiver(default=Reply(204))
    async with (
        receivers(hanging, fresh),
        relay_client(_config(tmp_path, hanging.url)) as (
            client,
            relay,
        ),
    ):
        assert await _post(client, ["a", "b"], 1000) == 204
        await eventually(lambda: len(hanging.requests) >= 1)  # under way, never answered
        replaced = relay.destinations["d0"]
        closed: list[float] = []
        close = replaced.client.close

        async def recorded_close() -> None:  # slow to let go, as a busy pool may be
            await asyncio.sleep(0.3)
            await close()
            closed.append(asyncio.get_running_loop().time())

        replaced.client.close = recorded_close  # type: ignore[method-assign]
        relay.reload(load_text(yaml.safe_dump(_config(tmp_path, fresh.url)), "<test>"))
        await eventually(lambda: bool(fresh.delivered()))
        assert closed and fresh.requests[0].at >= closed[0]
        assert sorted(s.name for b in fresh.delivered() for s in b.series) == ["a", "b"]


async def test_a_reload_while_the_spool_is_locked_leaves_the_destination_sending_once_free(
    tmp_path: Path,
) -> None:
    """A reload that reshards a spooled destination while another process holds the spool's
    write lock (a backup, the sqlite3 shell): the reload goes through (nothing in it touches
    the spool), the new destination's senders show the spool error in /-/ready and retry it,
    and once the lock is released the backlog and what came meanwhile are delivered."""
    import sqlite3

    down = ScriptedReceiver(default=Reply(503))
    up = ScriptedReceiver()
    async with receivers(down, up), relay_client(_config(tmp_path, down.url)) as (client, relay):
        for t in range(5):
            assert await _post(client, ["a", "b"], 1000 + t) == 204
        await eventually(lambda: len(down.requests) >= 1)
        holder = sqlite3.connect(tmp_path / "spool.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            resharded = _config(tmp_path, up.url)
            resharded["remote_write"][0]["queue_config"]["min_shards"] = 2  # type: ignore[index]
            relay.reload(load_text(yaml.safe_dump(resharded), "<test>"))
            await eventually(lambda: any("spool" in p for p in relay.problems()), timeout=15)
            assert up.requests == []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await _post(client, ["a", "b"], 2000) == 204
        await eventually(lambda: sum(b.sample_count for b in up.delivered()) == 12, timeout=15)
        await eventually(lambda: relay.problems() == [])
    stamps = sorted(
        x.timestamp for b in up.delivered() for s in b.series if s.name == "a" for x in s.samples
    )
    assert stamps == [1000, 1001, 1002, 1003, 1004, 2000]


async def test_a_new_shard_count_sends_the_spooled_rows_first_so_no_series_goes_back(
    tmp_path: Path,
) -> None:
    """Rows spooled under one shard, then a start with four: a series' new samples may hash to
    another shard than its spooled ones. Every spooled row is sent first (from shard 0, in
    order), and only then the other shards, so each series arrives in time order: a receiver
    such as Prometheus or Mimir would refuse an older sample after a newer one."""
    names = [f"s{i}" for i in range(12)]
    down = ScriptedReceiver(default=Reply(503))
    up = ScriptedReceiver()
    async with receivers(down, up):
        async with relay_client(_config(tmp_path, down.url)) as (client, _):
            for t in range(20):
                assert await _post(client, names, 1000 + t) == 204
        four = _config(tmp_path, up.url)
        four["remote_write"][0]["queue_config"]["min_shards"] = 4  # type: ignore[index]
        # One received request a send: the spooled rows take 20 round trips on their shard.
        four["remote_write"][0]["queue_config"]["max_samples_per_send"] = 12  # type: ignore[index]
        async with relay_client(four) as (client, _):
            for t in range(5):
                assert await _post(client, names, 5000 + t) == 204
            await eventually(lambda: sum(b.sample_count for b in up.delivered()) == 12 * 25)
        # A third start with the same count: nothing spooled, nothing held back.
        async with relay_client(four) as (client, _):
            assert await _post(client, names, 9000) == 204
            await eventually(lambda: sum(b.sample_count for b in up.delivered()) == 12 * 26)
    for name in names:
        assert _stamps(up, name) == [*range(1000, 1020), *range(5000, 5005), 9000], name


async def test_rows_spooled_before_tenant_routing_go_to_the_default_tenant(
    tmp_path: Path,
) -> None:
    """Tenant routing turned on while rows are spooled: those rows name no tenant. They go to
    the default tenant (never with an empty tenant header, which names none and would
    override the destination's own headers), then new series to their label's tenant."""
    down = ScriptedReceiver(default=Reply(503))
    up = ScriptedReceiver()
    async with receivers(down, up):
        async with relay_client(_config(tmp_path, down.url)) as (client, _):
            assert await _post(client, ["a"], 1000) == 204
        routed = _config(tmp_path, up.url)
        routed["remote_write"][0]["tenant"] = {"label": "team", "default": "platform"}  # type: ignore[index]
        async with relay_client(routed) as (client, _):
            await eventually(lambda: len(up.delivered()) == 1)
    (request,) = [r for r in up.requests if r.status == 204]
    assert request.headers["X-Scope-OrgID"] == "platform"


async def test_a_restart_while_the_spooled_rows_catch_up_keeps_the_other_shards_waiting(
    tmp_path: Path,
) -> None:
    """The wait of the other shards outlives a restart: stopped while the first shard still
    holds rows spooled under the old shard count (its destination down), the relay started
    again with the same count still sends those first."""
    names = [f"s{i}" for i in range(12)]
    down = ScriptedReceiver(default=Reply(503))
    up = ScriptedReceiver()
    four = _config(tmp_path, down.url)
    four["remote_write"][0]["queue_config"]["min_shards"] = 4  # type: ignore[index]
    four["remote_write"][0]["queue_config"]["max_samples_per_send"] = 12  # type: ignore[index]
    async with receivers(down, up):
        async with relay_client(_config(tmp_path, down.url)) as (client, _):
            for t in range(20):
                assert await _post(client, names, 1000 + t) == 204
        async with relay_client(four) as (client, _):  # still down: the catch-up waits
            for t in range(5):
                assert await _post(client, names, 5000 + t) == 204
        four["remote_write"][0]["url"] = up.url  # type: ignore[index]
        async with relay_client(four) as (client, _):
            await eventually(lambda: sum(b.sample_count for b in up.delivered()) == 12 * 25)
    for name in names:
        assert _stamps(up, name) == [*range(1000, 1020), *range(5000, 5005)], name


async def test_drop_oldest_answers_a_written_request_2xx_whatever_fails_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart with another shard count the queue waits for the rows spooled under the
    old one (its barrier); a drop checks whether they are all answered for, which reads the
    spool after the transaction that spooled the request and deleted the oldest rows has
    committed. That read failing (a busy file) must not refuse a request whose rows are on
    disk: its sender would send it again, the drops would go uncounted and the queue's counts
    would no longer match the spool."""
    names = [f"m{i}" for i in range(10)]

    def sharded(shards: int) -> dict[str, object]:
        queue = {**FAST, "capacity": 4, "min_shards": shards, "max_shards": shards}
        return {
            "flux": {"mode": "off"},
            "spool": {"data_dir": str(tmp_path), "max_bytes": 300, "when_full": "drop_oldest"},
            "remote_write": [
                {"name": "d0", "url": "http://127.0.0.1:9/api/v1/write", "queue_config": queue}
            ],
        }

    async with relay_client(sharded(1)) as (client, relay):
        await relay.destinations["d0"].stop(0.0)  # nothing sent: the rows stay spooled
        for t in range(3):
            assert await _post(client, names, 1000 + t) == 204
    async with relay_client(sharded(2)) as (client, relay):
        queue = relay.destinations["d0"].queue
        assert queue.barrier
        spool = relay.spool
        assert spool is not None

        def busy(*_: object) -> bool:
            raise SpoolError("cannot read the spool: database is locked")

        monkeypatch.setattr(spool, "holds_up_to", busy)
        assert await _post(client, names, 2000) == 204
        monkeypatch.undo()
        dropped = _sample(
            relay, "gotk_relay_samples_dropped_total", {"destination": "d0", "reason": "spool_full"}
        )
        assert dropped > 0
        backlog = spool.backlog("d0")
        assert [(s.points, s.queued_bytes) for s in queue.shards] == [
            (backlog[i].points, backlog[i].bytes) if i in backlog else (0, 0)
            for i in range(len(queue.shards))
        ]
