"""Nothing fails silently: a background task's error is logged with its reason, retried, and
shown in ``/-/ready`` and a metric until it recovers; an error in one never stops the work
another must do (a destination replaced by a reload whose last sends fail still hands its
place to its successor)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import yaml

from gotk_relay import relay as relay_module
from gotk_relay.config import load_text
from gotk_relay.rules.flux import FluxRewriter
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    receivers,
    relay_client,
    rw_body,
)

# A 20 ms Flux tick: the 503 is seen in a window of a few ticks.
pytestmark = pytest.mark.alone

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}


async def test_an_error_in_the_flux_clock_is_shown_until_it_recovers_and_the_clock_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(relay_module, "FLUX_TICK_S", 0.02)
    failures = {"left": 3, "calls": 0}
    due = FluxRewriter.due

    def failing(self: FluxRewriter, now_ms: int) -> bool:
        failures["calls"] += 1
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("the clock's check failed")
        return due(self, now_ms)

    monkeypatch.setattr(FluxRewriter, "due", failing)
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        async with relay_client({"flux": {"mode": "legacy"}}) as (client, relay):
            seen: list[tuple[int, str]] = []

            async def shown() -> bool:
                response = await client.get("/-/ready")
                seen.append((response.status, await response.text()))
                return response.status == 503

            for _ in range(2000):  # until it is shown, or the failures are over
                if not failures["left"] or await shown():
                    break
                await asyncio.sleep(0.005)
            await eventually(lambda: failures["calls"] > 6)  # it went on, and recovered
            assert relay._clock is not None and not relay._clock.done()
            ready = await client.get("/-/ready")
            assert ready.status == 200, await ready.text()
            failed = relay.telemetry.registry.get_sample_value(
                "gotk_relay_task_failures_total", {"destination": "flux-clock"}
            )
            assert failed == 3
    assert any(status == 503 and "the clock's check failed" in text for status, text in seen), seen
    messages = [r.getMessage() for r in caplog.records if r.name == "gotk_relay.relay"]
    assert sum("clock failed" in m and "stopped" not in m for m in messages) == 1  # once
    assert sum("clock failed" in m and "stopped" in m for m in messages) == 1


async def test_a_replaced_destination_whose_end_fails_still_hands_over_to_its_successor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = ScriptedReceiver(default=Reply(204)), ScriptedReceiver(default=Reply(204))

    def config(url: str) -> dict[str, object]:
        return {
            "flux": {"mode": "off"},
            "remote_write": [{"name": "d", "url": url, "queue_config": FAST}],
        }

    with caplog.at_level(logging.WARNING, logger="gotk_relay"):
        async with receivers(first, second), relay_client(config(first.url)) as (client, relay):
            replaced = relay.destinations["d"]

            async def broken_close() -> None:
                raise RuntimeError("close failed")

            replaced.client.close = broken_close  # type: ignore[method-assign]
            relay.reload(load_text(yaml.safe_dump(config(second.url)), "<test>"))
            body, headers = rw_body(gauge_batch(["after_reload"], int(time.time() * 1000)))
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204
            await eventually(lambda: bool(second.delivered()))
            assert [s.name for b in second.delivered() for s in b.series] == ["after_reload"]
            successor = relay.destinations["d"]
            assert successor is not replaced and not successor.problem()
    assert any("could not be closed" in r.getMessage() for r in caplog.records)
