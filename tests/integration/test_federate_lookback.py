"""``/federate`` and the Flux pages answer as Prometheus' ``/federate`` does at the request's
time: a series whose newest sample is older than ``federate.lookback_delta`` (Prometheus'
``--query.lookback-delta``, 5m) is left out. It stays in the store: a newer sample brings it
back, and a series that lost its source without a stale marker (a sender that crashed, an
object deleted meanwhile) stops being served instead of showing its last value for ever."""

from __future__ import annotations

import time

import pytest

from gotk_relay.model import Batch
from gotk_relay.server import CONTROLLER_PAGE
from tests.support.harness import RelayClient, gauge_batch, relay_client, rw_body

MINUTE = 60_000
CONDITION_LABELS = {"kind": "Kustomization", "namespace": "apps", "type": "Ready", "status": "True"}


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _write(client: RelayClient, batch: Batch) -> None:
    body, headers = rw_body(batch)
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204, await response.text()


async def _served(client: RelayClient, path: str = "/federate") -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.text()


def _config(**federate: object) -> dict[str, object]:
    return {"flux": {"mode": "off"}, "federate": {"match": ['{__name__=~"gotk_.*"}'], **federate}}


async def test_a_series_older_than_the_lookback_is_left_out_and_kept() -> None:
    now = _now_ms()
    async with relay_client(_config()) as (client, relay):
        await _write(client, gauge_batch(["gotk_recent"], now - 4 * MINUTE))
        await _write(client, gauge_batch(["gotk_old"], now - 6 * MINUTE))
        text = await _served(client)
        assert "gotk_recent " in text and "gotk_old" not in text
        assert relay.federate is not None and len(relay.federate) == 2  # kept
        await _write(client, gauge_batch(["gotk_old"], _now_ms(), value=2.0))
        assert "gotk_old 2.0 " in await _served(client)


@pytest.mark.parametrize(("lookback", "served"), [("10m", True), ("5m", False), ("1h", True)])
async def test_lookback_delta_sets_the_window(lookback: str, served: bool) -> None:
    async with relay_client(_config(lookback_delta=lookback)) as (client, _):
        await _write(client, gauge_batch(["gotk_x"], _now_ms() - 6 * MINUTE))
        assert ("gotk_x " in await _served(client)) is served


async def test_a_sample_ahead_of_the_relays_clock_is_served() -> None:
    """The store holds one sample a series, and a sender's clock may be ahead of the relay's:
    Prometheus would serve an older sample of the window, the relay has none but this one."""
    async with relay_client(_config()) as (client, _):
        await _write(client, gauge_batch(["gotk_ahead"], _now_ms() + 2 * MINUTE))
        assert "gotk_ahead " in await _served(client)


async def test_the_flux_pages_leave_out_what_is_out_of_the_window() -> None:
    now = _now_ms()
    condition = "gotk_reconcile_condition"
    labels = {"kind": "Kustomization", "namespace": "apps", "type": "Ready", "status": "True"}
    async with relay_client(_config()) as (client, _):
        await _write(client, gauge_batch([condition], now - MINUTE, 1.0, name="fresh", **labels))
        await _write(
            client, gauge_batch([condition], now - 10 * MINUTE, 1.0, name="gone", **labels)
        )
        page = await _served(client, CONTROLLER_PAGE)
        assert 'name="fresh"' in page and 'name="gone"' not in page


def test_check_config_refuses_a_lookback_that_is_not_positive() -> None:
    from gotk_relay.config import ConfigError, load_text

    with pytest.raises(ConfigError, match="lookback_delta"):
        load_text("federate: {lookback_delta: 0s}", "<test>")
    assert load_text("federate: {lookback_delta: 90s}", "<test>").federate.lookback_delta == 90


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),  # Prometheus' scrapes
        ("gzip, deflate", True),  # Python's requests (the Datadog Agent)
        ("identity", False),
        ("", False),
        ("gzip;q=0, *", False),
        ("*;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8", True),
    ],
)
@pytest.mark.parametrize("path", ["/federate", CONTROLLER_PAGE])
async def test_the_text_is_gzipped_when_asked(accept: str, gzipped: bool, path: str) -> None:
    """As Prometheus' /federate answers a scrape: gzip when Accept-Encoding allows it, the
    same text either way."""
    now = _now_ms()
    condition = "gotk_reconcile_condition"
    names = [f"obj-{i:04d}" for i in range(300)]  # past aiohttp's 4 KiB: compressed in a thread
    async with relay_client(_config()) as (client, _):
        for name in names:
            await _write(
                client,
                gauge_batch([condition], now, 1.0, name=name, **CONDITION_LABELS),
            )
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        want = await plain.text()
        assert "obj-0299" in want
        response = await client.get(path, headers={"Accept-Encoding": accept})
        assert response.status == 200
        assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert await response.text() == want  # the client decompresses
