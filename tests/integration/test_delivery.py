"""Delivery to remote-write destinations: retries, drops, backpressure, isolation, fallback, order."""

from __future__ import annotations

import asyncio
import copy
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from gotk_relay.config import ConfigError, load_text
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
from tests.support.rig import free_port

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}


def _sample(relay: Relay, name: str, labels: dict[str, str]) -> float:
    return relay.telemetry.registry.get_sample_value(name, labels) or 0.0


def _config(*urls: str, **queue: object) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": f"d{i}", "url": url, "queue_config": {**FAST, **queue}}
            for i, url in enumerate(urls)
        ],
    }


async def _post(client: object, batch: Batch, v2: bool = False) -> int:
    body, headers = rw_body(batch, v2)
    response = await client.post("/api/v1/write", data=body, headers=headers)  # type: ignore[attr-defined]
    return int(response.status)


async def test_500_then_204_is_delivered_once_after_a_retry() -> None:
    receiver = ScriptedReceiver([Reply(500, body="boom")])
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, _):
        assert await _post(client, gauge_batch(["up"], 1000)) == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        assert [r.status for r in receiver.requests] == [500, 204]
        assert receiver.delivered()[0].series[0].samples == (Sample(1.0, 1000),)
        metrics = await (await client.get("/metrics")).text()
        assert (
            metric_value(metrics, "gotk_relay_retries_total", destination="d0", reason="http_500")
            == 1
        )
        assert metric_value(metrics, "gotk_relay_samples_forwarded_total", destination="d0") == 1


async def test_400_is_not_retried_and_is_counted_as_dropped() -> None:
    receiver = ScriptedReceiver(default=Reply(400, body="err-mimir-sample-out-of-order"))
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        assert await _post(client, gauge_batch(["a", "b", "c"], 1000)) == 204
        labels = {"destination": "d0", "reason": "http_400"}
        await eventually(lambda: _sample(relay, "gotk_relay_samples_dropped_total", labels) == 3)
        # Follow it with a good batch: had the 400 been retried, it would come first.
        receiver.default = Reply(204)
        assert await _post(client, gauge_batch(["d"], 1001)) == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        assert [r.status for r in receiver.requests] == [400, 204]


async def test_a_400_for_merged_requests_drops_only_the_request_it_is_about() -> None:
    """Queued requests are merged into one send; a 400 for it must not lose the good ones."""

    def choose(batch: Batch) -> Reply:
        names = {s.name for s in batch.series}
        if "hold" in names:
            return Reply(hang=True)
        return Reply(400, body="invalid label set") if "bad" in names else Reply(204)

    receiver = ScriptedReceiver()
    receiver.chooser = choose
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        assert await _post(client, gauge_batch(["hold"], 1000)) == 204
        await eventually(lambda: len(receiver.requests) == 1)  # in flight: the rest queues up
        for name in ("a", "bad", "c"):
            assert await _post(client, gauge_batch([name, f"{name}2"], 1000)) == 204
        receiver.release()
        await eventually(lambda: len(receiver.requests) == 5)
        sent = [sorted(s.name for s in r.batch.series) for r in receiver.requests[1:]]
        merged = ["a", "a2", "bad", "bad2", "c", "c2"]
        assert sent == [merged, ["a", "a2"], ["bad", "bad2"], ["c", "c2"]]
        assert [r.status for r in receiver.requests[1:]] == [400, 204, 400, 204]
        dropped = {"destination": "d0", "reason": "http_400"}
        await eventually(lambda: _sample(relay, "gotk_relay_samples_dropped_total", dropped) == 2)
        assert _sample(relay, "gotk_relay_samples_forwarded_total", {"destination": "d0"}) == 5


@pytest.mark.slow
async def test_429_with_retry_after_is_retried_after_the_delay_when_enabled() -> None:
    receiver = ScriptedReceiver([Reply(429, {"Retry-After": "2"})])
    config = _config(receiver.url, retry_on_http_429=True)
    async with receivers(receiver), relay_client(config) as (client, _):
        assert await _post(client, gauge_batch(["up"], 1000)) == 204
        await eventually(lambda: len(receiver.delivered()) == 1, timeout=10)
        first, second = receiver.requests
        assert second.at - first.at >= 2.0


async def test_429_is_dropped_when_retry_on_http_429_is_off() -> None:
    receiver = ScriptedReceiver([Reply(429, {"Retry-After": "1"})])
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        assert await _post(client, gauge_batch(["up"], 1000)) == 204
        labels = {"destination": "d0", "reason": "http_429"}
        await eventually(lambda: _sample(relay, "gotk_relay_samples_dropped_total", labels) == 1)
        assert len(receiver.requests) == 1


async def test_a_full_queue_answers_503_so_the_sender_keeps_the_data() -> None:
    receiver = ScriptedReceiver(default=Reply(hang=True))
    config = _config(receiver.url, capacity=10)
    async with receivers(receiver), relay_client(config) as (client, _):
        assert await _post(client, gauge_batch([f"m{i}" for i in range(8)], 1000)) == 204
        await eventually(lambda: len(receiver.requests) == 1)  # in flight, hanging
        body, headers = rw_body(gauge_batch([f"n{i}" for i in range(8)], 1000))
        response = await client.post("/api/v1/write", data=body, headers=headers)
        # 503, not 429: Prometheus retries 5xx, but drops a 429 unless retry_on_http_429 is on.
        assert response.status == 503
        assert "Retry-After" not in response.headers  # the sender's own backoff applies
        metrics = await (await client.get("/metrics")).text()
        assert metric_value(metrics, "gotk_relay_rejected_requests_total", reason="queue_full") == 1


async def test_one_hanging_destination_does_not_stall_the_other() -> None:
    stuck = ScriptedReceiver(default=Reply(hang=True))
    healthy = ScriptedReceiver()
    async with (
        receivers(stuck, healthy),
        relay_client(_config(stuck.url, healthy.url)) as (client, _),
    ):
        for t in range(20):
            assert await _post(client, gauge_batch(["a", "b"], 1000 + t)) == 204
        await eventually(lambda: sum(b.sample_count for b in healthy.delivered()) == 40)
        assert len(stuck.requests) == 1


async def test_v2_destination_falls_back_to_v1_on_415() -> None:
    receiver = ScriptedReceiver([Reply(415, body="unsupported")])
    config = _config(receiver.url)
    config["remote_write"][0]["protobuf_message"] = "io.prometheus.write.v2.Request"  # type: ignore[index]
    async with receivers(receiver), relay_client(config) as (client, _):
        assert await _post(client, gauge_batch(["up"], 1000)) == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        types = [r.headers["Content-Type"] for r in receiver.requests]
        assert types == [
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "application/x-protobuf",
        ]
        metrics = await (await client.get("/metrics")).text()
        assert (
            metric_value(
                metrics,
                "gotk_relay_destination_protocol",
                destination="d0",
                protobuf_message="prometheus.WriteRequest",
            )
            == 1
        )


async def test_v2_destination_falls_back_when_2xx_lacks_written_headers() -> None:
    written = {
        "X-Prometheus-Remote-Write-Samples-Written": "1",
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0",
    }
    v2_ok = ScriptedReceiver(default=Reply(204, written))
    v1_only = ScriptedReceiver(default=Reply(204))
    config = _config(v2_ok.url, v1_only.url)
    for rw in config["remote_write"]:  # type: ignore[attr-defined]
        rw["protobuf_message"] = "io.prometheus.write.v2.Request"
    async with receivers(v2_ok, v1_only), relay_client(config) as (client, _):
        assert await _post(client, gauge_batch(["up"], 1000)) == 204
        await eventually(lambda: len(v1_only.requests) == 2 and len(v2_ok.requests) == 1)
        assert "proto=io.prometheus.write.v2.Request" in v2_ok.requests[0].headers["Content-Type"]
        assert v1_only.requests[1].headers["Content-Type"] == "application/x-protobuf"
        assert v1_only.requests[1].batch.series[0].samples == (Sample(1.0, 1000),)


# Seeds 27 and 28 dropped a series as poison when three refusals in a row were the verdict.
@pytest.mark.parametrize("seed", [7, *range(20, 32)])
async def test_per_series_order_holds_and_nothing_is_poison_across_random_failures(
    seed: int,
) -> None:
    """40% of requests answered 500 at random, three shards: every sample arrives, each series'
    in order and once, and isolation takes no series for poison (a series must be refused
    eight times in a row while others pass to be dropped)."""
    rng = random.Random(seed)
    receiver = ScriptedReceiver()
    receiver.chooser = lambda _batch: Reply(500) if rng.random() < 0.4 else Reply(204)
    config = _config(receiver.url, min_shards=3, max_shards=3, max_samples_per_send=7)
    names = [f"s{i}" for i in range(12)]
    async with receivers(receiver), relay_client(config) as (client, relay):
        for t in range(30):
            batch = Batch(
                tuple(
                    Series((("__name__", n),), (Sample(float(t), 1000 + t),))
                    for n in rng.sample(names, 6)
                )
            )
            assert await _post(client, batch) == 204

        def poison() -> float:
            return _sample(
                relay, "gotk_relay_samples_dropped_total", {"destination": "d0", "reason": "poison"}
            )

        await eventually(
            lambda: sum(b.sample_count for b in receiver.delivered()) + poison() >= 30 * 6,
            timeout=30,
        )
        assert poison() == 0
    seen: dict[str, list[int]] = {}
    for delivered in receiver.delivered():
        for s in delivered.series:
            seen.setdefault(s.name, []).extend(x.timestamp for x in s.samples)
    for name, stamps in seen.items():
        assert stamps == sorted(stamps) and len(stamps) == len(set(stamps)), name


async def test_exemplars_histograms_and_metadata_reach_the_destination() -> None:
    from gotk_relay.model import BucketSpan, Exemplar, FamilyMetadata, Histogram, MetricType

    batch = Batch(
        (
            Series(
                (("__name__", "req_total"),),
                (Sample(3, 1000),),
                exemplars=(Exemplar((("trace_id", "abc"),), 1.0, 999),),
            ),
            Series(
                (("__name__", "lat"),),
                histograms=(
                    Histogram(
                        1000,
                        count_value=4,
                        sum=2.5,
                        schema=1,
                        positive_spans=(BucketSpan(0, 2),),
                        positive_deltas=(1, 2),
                    ),
                ),
            ),
        ),
        (FamilyMetadata("req", MetricType.COUNTER, "Requests.", ""),),
    )
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, _):
        assert await _post(client, batch) == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
    assert receiver.delivered()[0] == batch


@pytest.mark.slow
async def test_shutdown_drains_what_can_be_delivered_and_counts_the_rest() -> None:
    slow = ScriptedReceiver([Reply(503), Reply(503)])
    dead = ScriptedReceiver(default=Reply(hang=True))
    async with receivers(slow, dead), relay_client(_config(slow.url, dead.url)) as (client, relay):
        assert await _post(client, gauge_batch(["a", "b"], 1000)) == 204
        await eventually(lambda: len(dead.requests) == 1)
        await relay.stop(timeout=3.0)
        assert [r.status for r in slow.requests] == [503, 503, 204]
        assert _sample(relay, "gotk_relay_samples_forwarded_total", {"destination": "d0"}) == 2
        assert (
            _sample(
                relay,
                "gotk_relay_samples_dropped_total",
                {"destination": "d1", "reason": "shutdown"},
            )
            == 2
        )


async def test_tenants_are_split_into_requests_with_their_header() -> None:
    receiver = ScriptedReceiver()
    config = _config(receiver.url, max_samples_per_send=1000)
    config["remote_write"][0]["tenant"] = {"label": "tenant", "default": "shared"}  # type: ignore[index]
    batch = Batch(
        tuple(
            Series(
                tuple(sorted({"__name__": f"m{i}", **({"tenant": t} if t else {})}.items())),
                (Sample(1.0, 1000),),
            )
            for i, t in enumerate(["a", "b", "a", "", "b"])
        )
    )
    async with receivers(receiver), relay_client(config) as (client, _):
        assert await _post(client, batch) == 204
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 5)
    by_tenant = {
        r.headers["X-Scope-OrgID"]: [s.name for s in r.batch.series] for r in receiver.requests
    }
    assert by_tenant == {"a": ["m0", "m2"], "b": ["m1", "m4"], "shared": ["m3"]}
    assert all("tenant" not in dict(s.labels) for r in receiver.requests for s in r.batch.series)


async def test_series_without_a_tenant_are_dropped_and_counted_when_there_is_no_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = ScriptedReceiver()
    config = _config(receiver.url)
    destinations = config["remote_write"]
    assert isinstance(destinations, list)
    destinations[0]["tenant"] = {"label": "tenant", "header": "THANOS-TENANT", "keep_label": True}
    batch = Batch(
        (
            Series((("__name__", "m"), ("tenant", "a")), (Sample(1.0, 1000),)),
            Series((("__name__", "orphan"),), (Sample(1.0, 1000),)),
        )
    )
    async with receivers(receiver), relay_client(config) as (client, relay):
        assert await _post(client, batch) == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        assert (
            _sample(
                relay,
                "gotk_relay_samples_dropped_total",
                {"destination": "d0", "reason": "no_tenant"},
            )
            == 1
        )
        assert await _post(client, batch) == 204
        await eventually(lambda: len(receiver.delivered()) == 2)
    # Logged, once per destination and reason: not once per request.
    logged = [r for r in caplog.records if "without a tenant" in r.getMessage()]
    assert [(r.levelname, r.__dict__["destination"], r.__dict__["reason"]) for r in logged] == [
        ("WARNING", "d0", "no_tenant")
    ]
    assert receiver.requests[0].headers["THANOS-TENANT"] == "a"
    assert receiver.requests[0].batch.series[0].labels == (("__name__", "m"), ("tenant", "a"))


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
async def test_a_reload_refused_for_a_tls_file_leaves_every_destination_sending(
    tmp_path: Path, spooled: bool
) -> None:
    """A reload that changes one destination and names a CA file that does not exist for
    another is refused (ConfigError naming the file) before anything running is touched:
    both destinations go on sending, the changed one's new URL gets nothing."""
    a, b, moved = ScriptedReceiver(), ScriptedReceiver(), ScriptedReceiver()
    async with receivers(a, b, moved):
        config: dict[str, Any] = _config(a.url, b.url)
        if spooled:
            config["spool"] = {"data_dir": str(tmp_path / "spool")}
        async with relay_client(config) as (client, relay):
            assert await _post(client, gauge_batch(["x"], 1000)) == 204
            await eventually(lambda: len(a.delivered()) == 1 and len(b.delivered()) == 1)
            bad = copy.deepcopy(config)
            bad["remote_write"][0]["url"] = moved.url
            missing = tmp_path / "no-such-ca.pem"
            bad["remote_write"][1]["tls_config"] = {"ca_file": str(missing)}
            with pytest.raises(ConfigError, match=f"'d1': tls_config.ca_file: .*{missing}"):
                relay.reload(load_text(yaml.safe_dump(bad), "<test>"))
            assert relay.problems() == []
            assert await _post(client, gauge_batch(["x"], 2000)) == 204
            await eventually(lambda: len(a.delivered()) == 2 and len(b.delivered()) == 2)
            assert moved.requests == []


async def test_a_credentials_file_missing_for_a_while_is_retried_not_a_relay_fault(
    tmp_path: Path,
) -> None:
    """A Secret being rotated: while the destination's credentials_file is gone, its sends
    are retried with backoff and it shows as failing (``credentials_file``), the relay stays
    ready; once the file is back, what was queued is delivered with the new token."""
    token = tmp_path / "token"
    receiver = ScriptedReceiver()
    async with receivers(receiver):
        config = _config(receiver.url)
        config["remote_write"][0]["authorization"] = {"credentials_file": str(token)}  # type: ignore[index]
        async with relay_client(config) as (client, relay):
            assert await _post(client, gauge_batch(["x"], 1000)) == 204
            failing = {"destination": "d0", "reason": "credentials_file"}
            await eventually(lambda: _sample(relay, "gotk_relay_retries_total", failing) >= 2)
            assert relay.problems() == []
            assert receiver.requests == []
            token.write_text("rotated\n")
            await eventually(lambda: len(receiver.delivered()) == 1)
            assert receiver.requests[0].headers["Authorization"] == "Bearer rotated"


async def test_a_destination_that_fails_to_stop_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(receiver.url)) as (_, relay):
        destination = relay.destinations["d0"]
        stop = destination.stop

        async def failing(deadline: float) -> None:
            await stop(deadline)
            raise RuntimeError("closing failed")

        destination.stop = failing  # type: ignore[method-assign]
        with caplog.at_level("ERROR", logger="gotk_relay"):
            await relay.stop(0.1)
        (record,) = [r for r in caplog.records if "failed to stop" in r.getMessage()]
        assert record.destination == "d0"  # type: ignore[attr-defined]
        assert "closing failed" in record.err  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "counted"), [(200, "forwarded"), (400, "http_400")])
async def test_the_status_decides_when_the_answers_body_stalls(status: int, counted: str) -> None:
    """A receiver that sends its status and headers, then no body: as in Prometheus, the
    status decides (a 2xx is delivered, a 400 dropped), not the read of a body that never
    comes; before, it was a timeout, retried forever, and a 2xx was sent again each time."""
    requests: list[float] = []

    async def stall(request: web.Request) -> web.StreamResponse:
        await request.read()
        requests.append(time.monotonic())
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await asyncio.sleep(30)  # the body never comes (the relay hangs up first)
        return response

    app = web.Application()
    app.router.add_post("/api/v1/write", stall)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = _config(f"http://127.0.0.1:{port}/api/v1/write")
    config["remote_write"][0]["remote_timeout"] = "500ms"  # type: ignore[index]
    try:
        async with relay_client(config) as (client, relay):
            assert await _post(client, gauge_batch(["up", "other"], 1000)) == 204
            if counted == "forwarded":
                labels = {"destination": "d0"}
                name = "gotk_relay_samples_forwarded_total"
            else:
                labels = {"destination": "d0", "reason": counted}
                name = "gotk_relay_samples_dropped_total"
            await eventually(lambda: _sample(relay, name, labels) == 2, timeout=10)
            await asyncio.sleep(1.0)  # a retry would come within this (backoff 10–50 ms)
            assert len(requests) == 1
    finally:
        await runner.cleanup()
