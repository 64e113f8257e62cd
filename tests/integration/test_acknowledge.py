"""receiver.acknowledge: delivered — a write is answered once its destinations accepted it.

The relay's real app in process, the destinations real aiohttp servers on loopback
(ScriptedReceiver) whose answers the tests choose. Remote write 1.0 (the fast path: scanned on
its bytes) and 2.0 (decoded) take different paths to admission; both are covered.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gotk_relay.config import ConfigError, load_file, load_text
from gotk_relay.model import Batch
from gotk_relay.pipeline import Pipeline
from gotk_relay.relay import Relay
from tests.support.harness import (
    RelayClient,
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    receivers,
    relay_client,
    rw_body,
)

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}
PROTOCOLS = pytest.mark.parametrize("v2", [False, True], ids=["rw1-fast-path", "rw2-decoded"])


def _config(*urls: str, timeout: str = "10s", **queue: object) -> dict[str, object]:
    return {
        "receiver": {"acknowledge": "delivered", "acknowledge_timeout": timeout},
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": f"d{i}", "url": url, "queue_config": {**FAST, **queue}}
            for i, url in enumerate(urls)
        ],
    }


def _value(relay: Relay, name: str, **labels: str) -> float:
    return relay.telemetry.registry.get_sample_value(name, labels) or 0.0


def _acknowledged(relay: Relay, outcome: str) -> float:
    return _value(relay, "gotk_relay_acknowledged_requests_total", outcome=outcome)


async def _post(client: RelayClient, batch: Batch, v2: bool) -> tuple[int, dict[str, str], str]:
    body, headers = rw_body(batch, v2)
    response = await client.post("/api/v1/write", data=body, headers=headers)
    return response.status, dict(response.headers), await response.text()


def _names(receiver: ScriptedReceiver) -> list[list[str]]:
    return [sorted(s.name for s in r.batch.series) for r in receiver.requests]


@PROTOCOLS
async def test_the_answer_waits_until_every_destination_accepted(v2: bool) -> None:
    quick = ScriptedReceiver()
    slow = ScriptedReceiver(default=Reply(hang=True))
    async with (
        receivers(quick, slow),
        relay_client(_config(quick.url, slow.url)) as (client, relay),
    ):
        write = asyncio.create_task(_post(client, gauge_batch(["up"], 1000), v2))
        await eventually(lambda: len(quick.delivered()) == 1 and len(slow.requests) == 1)
        # One destination has it; the other holds it unanswered: no answer yet.
        await asyncio.sleep(0)
        assert not write.done()
        slow.release()
        status, _, _ = await asyncio.wait_for(write, 10)
        assert status == 204
        assert _names(slow) == [["up"]]
        assert _acknowledged(relay, "delivered") == 1


@PROTOCOLS
async def test_a_500_is_answered_503_and_the_relay_does_not_send_it_again(v2: bool) -> None:
    receiver = ScriptedReceiver([Reply(500, body="boom")])
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        status, headers, text = await _post(client, gauge_batch(["first"], 1000), v2)
        assert status == 503
        assert "'d0'" in text and "http_500" in text
        assert "Retry-After" not in headers  # the destination gave none: the sender's backoff
        # The next write is delivered alone: had the relay retried the first, it would have
        # been sent before (or with) it.
        status, _, _ = await _post(client, gauge_batch(["second"], 1001), v2)
        assert status == 204
        assert _names(receiver) == [["first"], ["second"]]
        assert [r.status for r in receiver.requests] == [500, 204]
        assert _acknowledged(relay, "failed") == 1
        assert _acknowledged(relay, "delivered") == 1
        assert _value(relay, "gotk_relay_retries_total", destination="d0", reason="http_500") == 0
        dropped = {"destination": "d0", "reason": "not_acknowledged"}
        assert _value(relay, "gotk_relay_samples_dropped_total", **dropped) == 1


@pytest.mark.parametrize(
    ("reply", "retry_on_http_429", "retry_after"),
    [
        (Reply(503, {"Retry-After": "7"}), False, "7"),
        (Reply(429, {"Retry-After": "3"}), True, "3"),
    ],
    ids=["503-with-retry-after", "429-retried-per-config"],
)
async def test_the_destinations_retry_after_is_passed_on(
    reply: Reply, retry_on_http_429: bool, retry_after: str
) -> None:
    receiver = ScriptedReceiver([reply])
    config = _config(receiver.url, retry_on_http_429=retry_on_http_429)
    async with receivers(receiver), relay_client(config) as (client, _):
        status, headers, _ = await _post(client, gauge_batch(["up"], 1000), False)
        assert status == 503
        assert headers["Retry-After"] == retry_after
        assert len(receiver.requests) == 1


async def test_a_connection_error_is_answered_503() -> None:
    gone = ScriptedReceiver()  # never started: nothing listens on its port
    async with relay_client(_config(gone.url)) as (client, relay):
        status, _, text = await _post(client, gauge_batch(["up"], 1000), False)
        assert status == 503
        assert "'d0'" in text
        assert _acknowledged(relay, "failed") == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(400, body="err-mimir-sample-out-of-order"), "http_400"),
        (Reply(429), "http_429"),  # retry_on_http_429 off: a refusal like any 4xx
    ],
    ids=["400", "429-not-retried"],
)
async def test_a_4xx_refusal_is_dropped_counted_and_answered_2xx(reply: Reply, reason: str) -> None:
    receiver = ScriptedReceiver([reply])
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        status, _, _ = await _post(client, gauge_batch(["a", "b"], 1000), False)
        assert status == 204
        dropped = {"destination": "d0", "reason": reason}
        assert _value(relay, "gotk_relay_samples_dropped_total", **dropped) == 2
        assert len(receiver.requests) == 1
        assert _acknowledged(relay, "delivered") == 1


async def test_a_failure_of_one_destination_fails_the_request_and_the_other_is_not_held() -> None:
    good = ScriptedReceiver()
    bad = ScriptedReceiver(default=Reply(500))
    async with (
        receivers(good, bad),
        relay_client(_config(good.url, bad.url)) as (client, _),
    ):
        status, _, text = await _post(client, gauge_batch(["up"], 1000), False)
        assert status == 503 and "'d1'" in text
        assert len(bad.requests) == 1  # not retried
        await eventually(lambda: len(good.delivered()) == 1)


async def test_a_timeout_is_answered_503_and_what_was_not_sent_yet_is_skipped() -> None:
    receiver = ScriptedReceiver([Reply(hang=True)])
    config = _config(receiver.url, timeout="200ms")
    async with receivers(receiver), relay_client(config) as (client, relay):
        first = asyncio.create_task(_post(client, gauge_batch(["held"], 1000), False))
        await eventually(lambda: len(receiver.requests) == 1)  # in flight, unanswered
        # Queued behind it, on the one shard: not sent before the wait ends.
        status, _, text = await _post(client, gauge_batch(["queued"], 1001), False)
        assert status == 503 and "receiver.acknowledge_timeout" in text
        status, _, _ = await asyncio.wait_for(first, 10)
        assert status == 503
        assert _acknowledged(relay, "timeout") == 2
        receiver.release()
        # The queued request's sender was told to send it again: the relay does not.
        dropped = {"destination": "d0", "reason": "not_acknowledged"}
        await eventually(lambda: _value(relay, "gotk_relay_samples_dropped_total", **dropped) == 1)
        status, _, _ = await _post(client, gauge_batch(["next"], 1002), False)
        assert status == 204
        assert _names(receiver) == [["held"], ["next"]]


async def test_a_request_no_destination_takes_is_answered_at_once() -> None:
    receiver = ScriptedReceiver()
    config = _config(receiver.url)
    config["remote_write"][0]["write_relabel_configs"] = [  # type: ignore[index]
        {"source_labels": ["__name__"], "regex": "keep_.*", "action": "keep"}
    ]
    async with receivers(receiver), relay_client(config) as (client, relay):
        status, _, _ = await _post(client, gauge_batch(["other"], 1000), False)
        assert status == 204
        status, _, _ = await _post(client, gauge_batch(["keep_me"], 1000), False)
        assert status == 204
        assert _names(receiver) == [["keep_me"]]
        assert _acknowledged(relay, "delivered") == 2


async def test_queued_is_the_default_and_answers_before_delivery() -> None:
    receiver = ScriptedReceiver(default=Reply(hang=True))
    config = {
        "flux": {"mode": "off"},
        "remote_write": [{"name": "d0", "url": receiver.url, "queue_config": FAST}],
    }
    async with receivers(receiver), relay_client(config) as (client, relay):
        assert relay.config.receiver.acknowledge == "queued"
        status, _, _ = await _post(client, gauge_batch(["up"], 1000), False)
        assert status == 204
        assert _acknowledged(relay, "delivered") == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("flux: {mode: 'off'}\nspool: {data_dir: /var/lib/gotk-relay}\n", "spool.data_dir"),
        ("flux: {mode: legacy}\n", "flux.mode: off"),
        ("", "flux.mode: off"),  # legacy is the default
    ],
    ids=["with-a-spool", "with-flux-rules", "with-default-flux-rules"],
)
def test_delivered_is_refused_with_what_it_cannot_go_with(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"receiver\.acknowledge: delivered") as raised:
        load_text("receiver: {acknowledge: delivered}\n" + extra, "<test>")
    assert message in str(raised.value)


async def test_a_reload_cannot_pair_delivered_with_the_spool_the_relay_keeps(
    tmp_path: Path,
) -> None:
    """The spool changes only with a restart, so a reload to a file that drops it and asks for
    ``delivered`` would run the pair the configuration refuses: every write answered as
    delivered once spooled. The reload is refused, and the running config stays."""
    spooled = {"flux": {"mode": "off"}, "spool": {"data_dir": str(tmp_path / "spool")}}
    new = load_text(
        "flux: {mode: 'off'}\nreceiver: {acknowledge: delivered}\n"
        "remote_write: [{url: 'http://127.0.0.1:9/'}]\n",
        "<test>",
    )
    async with relay_client(spooled) as (_, relay):
        before = relay.config
        with pytest.raises(ConfigError, match=r"acknowledge: delivered cannot go with the spool"):
            relay.reload(new)
        assert relay.config is before and relay.config.receiver.acknowledge == "queued"
        assert relay.names == []


@pytest.mark.parametrize(
    ("receiver", "key"),
    [
        ("{acknowledge: sent}", "receiver.acknowledge"),
        ("{acknowledge_timeout: 0s}", "receiver.acknowledge_timeout"),
    ],
    ids=["unknown-mode", "zero-timeout"],
)
def test_bad_acknowledge_settings_name_the_key(receiver: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_text(f"receiver: {receiver}\nflux: {{mode: 'off'}}\n", "<test>")


EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
FLUX_INPUTS = [
    "gotk_resource_info",
    "flux_resource_info",
    "gotk_reconcile_condition",
    "gotk_suspend_status",
]


@pytest.mark.parametrize("name", ["gateway.yml", "flux-tier.yml"], ids=["gateway", "flux-tier"])
def test_the_scale_out_examples_pass_check_config(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gotk_relay", "check-config", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_gateway_example_sends_each_series_to_exactly_one_of_backend_and_flux_tier() -> None:
    """One owner per Flux object: the Flux inputs go to the Flux tier only, all else to the
    backend only (the Flux tier writes the Flux series to the backend itself)."""
    config = load_file(EXAMPLES / "gateway.yml", environ={})
    assert config.receiver.acknowledge == "delivered"
    pipeline = Pipeline(config)
    others = ["up", "gotk_reconcile_duration_seconds_bucket", "flux_resource_info_total"]
    batch = gauge_batch([*FLUX_INPUTS, *others], 1000)
    backend = pipeline.for_destination("backend", batch)
    flux = pipeline.for_destination("flux-tier", batch)
    assert sorted(s.name for s in flux.series) == sorted(FLUX_INPUTS)
    assert sorted(s.name for s in backend.series) == sorted(others)
