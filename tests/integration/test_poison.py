"""A destination that refuses one series (5xx) while it accepts the rest is never stalled by it.

The receiver is a real HTTP server that answers like Prometheus 2.42 does to a series with a
duplicate label name: 500 for the whole request, nothing stored. Here it refuses any request
holding a series labelled ``poison="1"`` (valid to the relay, so it is forwarded).
"""

from __future__ import annotations

import logging
import time

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.relay import Relay
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    metric_value,
    receivers,
    relay_client,
    rw_body,
)

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}


def _config(url: str, **queue: object) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "remote_write": [{"name": "d", "url": url, "queue_config": {**FAST, **queue}}],
    }


def _refuse_poison(batch: Batch) -> Reply:
    if any(dict(s.labels).get("poison") == "1" for s in batch.series):
        return Reply(500, body='label name "a" is not unique: invalid sample')
    return Reply(204)


def _value(relay: Relay, name: str, **labels: str) -> float:
    return relay.telemetry.registry.get_sample_value(name, labels) or 0.0


async def _post(client: object, batch: Batch) -> int:
    body, headers = rw_body(batch)
    response = await client.post("/api/v1/write", data=body, headers=headers)  # type: ignore[attr-defined]
    return int(response.status)


def _stored(receiver: ScriptedReceiver) -> list[str]:
    return [s.name for b in receiver.delivered() for s in b.series]


async def test_one_refused_series_is_dropped_and_both_senders_data_is_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = ScriptedReceiver()
    receiver.chooser = _refuse_poison
    poison = Series(
        (("__name__", "x"), ("a", "1"), ("poison", "1")), (Sample(1.0, 1000), Sample(2.0, 2000))
    )
    sender_a = Batch((*gauge_batch(["a1"], 1000).series, poison, *gauge_batch(["a2"], 1000).series))
    sender_b = gauge_batch(["b1", "b2"], 1000, job="b")
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
            assert await _post(client, sender_a) == 204
            assert await _post(client, sender_b) == 204
            await eventually(
                lambda: _value(relay, "gotk_relay_samples_forwarded_total", destination="d") == 4
            )
            await eventually(lambda: relay.destinations["d"].idle)
            assert sorted(_stored(receiver)) == ["a1", "a2", "b1", "b2"]
            assert _stored(receiver).index("a1") < _stored(receiver).index("a2")
            dropped = _value(
                relay, "gotk_relay_samples_dropped_total", destination="d", reason="poison"
            )
            assert dropped == 2  # the poison series' two samples, nothing else
            ready = await client.get("/-/ready")
            assert ready.status == 200
            metrics = await (await client.get("/metrics")).text()
            assert metric_value(metrics, "gotk_relay_oldest_unsent_seconds", destination="d") == 0
            assert metric_value(metrics, "gotk_relay_destination_failing", destination="d") == 0
    lines = [r for r in caplog.records if "refusing one series" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].series == '{__name__="x",a="1",poison="1"}'  # type: ignore[attr-defined]
    assert lines[0].reason == "http_500"  # type: ignore[attr-defined]
    assert "not unique" in lines[0].response  # type: ignore[attr-defined]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # failing (once), the poison (once); no line per attempt


async def test_an_outage_is_retried_in_order_and_shown_until_it_recovers() -> None:
    # 500, not 503: the status a poison series gets too, so isolation runs and must find that
    # nothing is accepted at all.
    receiver = ScriptedReceiver(default=Reply(500, body="storage is read-only"))
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        started = time.time()
        for i in range(3):
            assert await _post(client, gauge_batch([f"m{i}", f"n{i}"], 1000 + i)) == 204
        await eventually(lambda: len(receiver.requests) >= 12)
        metrics = await (await client.get("/metrics")).text()
        assert metric_value(metrics, "gotk_relay_destination_failing", destination="d") == 1
        # Requests forwarded as received are dated by their arrival: the age is how long the
        # oldest one has waited.
        age = metric_value(metrics, "gotk_relay_oldest_unsent_seconds", destination="d")
        assert 0 < age <= time.time() - started
        # A destination's outage is not the relay's: it keeps taking writes, and says ready.
        assert (await client.get("/-/ready")).status == 200
        receiver.default = Reply(204)
        await eventually(lambda: relay.destinations["d"].idle)
        # Everything, once (the outage may end in the middle of an isolation round, and then
        # the series found refused are tried once more before any is dropped).
        assert sorted(_stored(receiver)) == ["m0", "m1", "m2", "n0", "n1", "n2"]
        assert (
            _value(relay, "gotk_relay_samples_dropped_total", destination="d", reason="poison") == 0
        )


async def test_a_sample_age_limit_set_by_reload_applies_to_what_is_queued() -> None:
    receiver = ScriptedReceiver(default=Reply(503))
    config = _config(receiver.url)
    async with receivers(receiver), relay_client(config) as (client, relay):
        # A request forwarded as received is dated by its arrival (its samples are not read).
        assert await _post(client, gauge_batch(["old"], 1000)) == 204
        await eventually(lambda: len(receiver.requests) >= 3)
        kept = relay.destinations["d"]
        reloaded = _config(receiver.url, sample_age_limit="200ms")
        relay.reload(load_text(yaml.safe_dump(reloaded), "<test>"))
        assert relay.destinations["d"] is kept  # the queue stays; its sender reads the limit
        labels = {"destination": "d", "reason": "sample_age_limit"}
        await eventually(lambda: _value(relay, "gotk_relay_samples_dropped_total", **labels) == 1)
        assert kept.idle


async def test_queue_full_refusals_are_logged_when_they_start_and_stop_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = ScriptedReceiver(default=Reply(hang=True))
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        async with (
            receivers(receiver),
            relay_client(_config(receiver.url, capacity=10)) as (
                client,
                relay,
            ),
        ):
            assert await _post(client, gauge_batch([f"m{i}" for i in range(8)], 1000)) == 204
            await eventually(lambda: len(receiver.requests) == 1)  # in flight, hanging
            for _ in range(5):
                assert await _post(client, gauge_batch([f"n{i}" for i in range(8)], 1000)) == 503
            receiver.default = Reply(204)
            receiver.release()
            await eventually(lambda: relay.destinations["d"].idle)
            assert await _post(client, gauge_batch(["after"], 1001)) == 204
    lines = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"]
    assert lines[0].destination == "d"  # type: ignore[attr-defined]
    assert lines[1].occurrences >= 5  # type: ignore[attr-defined]
