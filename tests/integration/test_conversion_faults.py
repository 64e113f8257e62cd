"""A conversion that raises (a bug: no input is known to) costs only the series it raises on.

The Datadog and OTLP destinations convert a batch a step at a time and send it as several
requests. Should converting a step raise, what was accepted is never sent again, and nothing
mapped before the error is lost: the batch is put back as it was. A series that raises when
mapped on its own, or the one a run of series raises at, is left out, counted
(``gotk_relay_samples_skipped_total{reason="conversion_error"}``) and logged once; an error no
series explains is retried by the sender, shown in ``/-/ready`` meanwhile.

The error is injected into each destination's mapping function (the real one runs otherwise),
and the real relay app sends to the intake doubles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from gotk_relay.destinations import datadog, datadog_mapping, otlp
from gotk_relay.destinations.otlp_mapping.mapper import Mapper
from gotk_relay.destinations.rows import Item
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.relay import Relay
from tests.support.datadog_intake import DatadogIntake
from tests.support.harness import RelayClient, eventually, metric_value, relay_client, rw_body
from tests.support.otlp_receiver import OTLPReceiver, otlp_receiver

SERIES = 200
POISON = "g000050"  # in the second request of the batch (40 points a request)
QUEUE = {"min_backoff": "10ms", "max_backoff": "50ms", "max_samples_per_send": 40}


def _names(items: Any) -> list[str]:
    """The ``series`` label of each item of a step (rows hold their labels as bytes)."""
    out = []
    for item in items:
        if isinstance(item, Series):
            out.append(dict(item.labels).get("series", ""))
        else:
            key = bytes(item[0])
            at = key.find(b"g0")
            out.append(key[at : at + 7].decode() if at >= 0 else "")
    return out


PARTNER = "g000051"  # after POISON in one run of series, what a ``together`` fault needs


@dataclass
class Fault:
    """When mapping raises: ``once`` (the first step holding POISON), ``always`` (any series
    of POISON's), ``together`` (a run of series holding PARTNER after POISON: neither alone),
    ``unexplained`` (a request holding POISON once mapped, while ``on``: no series makes the
    mapping raise)."""

    mode: str
    raised: int = 0
    on: bool = True

    def check(self, items: Any) -> None:
        names = _names(items)
        if not self.on or POISON not in names or self.mode == "unexplained":
            return
        if self.mode == "once" and self.raised:
            return
        if self.mode == "together" and PARTNER not in names:
            return
        self.raised += 1
        raise RuntimeError("injected: mapping failed")

    def after(self, data: bytes) -> None:
        if self.on and self.mode == "unexplained" and POISON.encode() in data:
            self.raised += 1
            raise RuntimeError("injected: failed after the mapping")


class Destination:
    """One converting destination behind the relay: its config, and what arrived."""

    name = ""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def arrived(self) -> list[str]:
        raise NotImplementedError

    def inject(self, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
        raise NotImplementedError


class ToDatadog(Destination):
    name = "dd"

    def __init__(self, intake: DatadogIntake) -> None:
        self.intake = intake

    def config(self) -> dict[str, Any]:
        dd = {"name": "dd", "url": self.intake.url, "api_key": "test-key", "queue_config": QUEUE}
        return {"flux": {"mode": "off"}, "datadog": [dd]}

    def arrived(self) -> list[str]:
        return [dict(t.split(":", 1) for t in s["tags"])["series"] for s in self.intake.series]

    def inject(self, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
        real = datadog_mapping.map_items  # what datadog.py calls

        def map_items(items: list[Item], *args: Any, **kwargs: Any) -> Any:
            fault.check(items)
            return real(items, *args, **kwargs)

        monkeypatch.setattr(datadog, "map_items", map_items)
        pieces = datadog.DatadogClient._pieces

        async def _pieces(self: datadog.DatadogClient, *args: Any) -> Any:
            fault.after(bytes(args[1].data))  # the series' JSON
            return await pieces(self, *args)

        monkeypatch.setattr(datadog.DatadogClient, "_pieces", _pieces)


class ToOTLP(Destination):
    name = "o"

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.receiver = receiver

    def config(self) -> dict[str, Any]:
        otlp = {"name": "o", "url": self.receiver.url, "queue_config": QUEUE}
        return {"flux": {"mode": "off"}, "otlp": [otlp]}

    def arrived(self) -> list[str]:
        return [
            kv.value.string_value
            for got in self.receiver.delivered()
            for metric in got.metrics().values()
            for point in metric.gauge.data_points
            for kv in point.attributes
            if kv.key == "series"
        ]

    def inject(self, monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
        real = Mapper.feed

        def feed(self: Mapper, batch: Batch | list[Item]) -> None:
            fault.check(batch.series if isinstance(batch, Batch) else batch)
            real(self, batch)

        monkeypatch.setattr(Mapper, "feed", feed)
        gzip = otlp._gzip

        async def _gzip(body: bytes) -> bytes:
            fault.after(body)
            return await gzip(body)

        monkeypatch.setattr(otlp, "_gzip", _gzip)


@asynccontextmanager
async def _destination(kind: str) -> AsyncIterator[Destination]:
    if kind == "datadog":
        async with DatadogIntake() as intake:
            yield ToDatadog(intake)
    else:
        async with otlp_receiver(OTLPReceiver()) as receiver:
            yield ToOTLP(receiver)


async def _send_batch(
    client: RelayClient, relay: Relay, name: str, step_bytes: int = 2000
) -> list[str]:
    """One request of SERIES gauges, converted in steps of ``step_bytes`` of remote write."""
    relay.destinations[name].client.sub_chunk_bytes = step_bytes  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    series = tuple(
        Series((("__name__", "gauge_x"), ("series", f"g{i:06d}")), (Sample(float(i), now),))
        for i in range(SERIES)
    )
    body, headers = rw_body(Batch(series))
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204
    return [f"g{i:06d}" for i in range(SERIES)]


async def _skipped(client: RelayClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    return metric_value(
        text, "gotk_relay_samples_skipped_total", destination=name, reason="conversion_error"
    )


async def _all_but_one_arrive(
    client: RelayClient, relay: Relay, dest: Destination, sent: list[str], left_out: str
) -> None:
    """Every series but ``left_out`` arrives once; it is counted, and the relay stays ready."""
    await eventually(lambda: len(dest.arrived()) >= SERIES - 1)
    await eventually(lambda: not relay.destinations[dest.name].queue.points)
    assert sorted(dest.arrived()) == [s for s in sent if s != left_out]
    assert await _skipped(client, dest.name) == 1
    assert (await client.get("/-/ready")).status == 200


KINDS = ["datadog", "otlp"]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_once_sends_every_series_once(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault("once")
    async with _destination(kind) as dest:
        dest.inject(monkeypatch, fault)
        async with relay_client(dest.config()) as (client, relay):
            sent = await _send_batch(client, relay, dest.name)
            await eventually(lambda: len(dest.arrived()) >= SERIES)
            assert fault.raised == 1
            assert sorted(dest.arrived()) == sent  # nothing lost, nothing twice
            assert await _skipped(client, dest.name) == 0
            assert (await client.get("/-/ready")).status == 200


@pytest.mark.parametrize("kind", KINDS)
async def test_a_series_that_always_fails_is_left_out_counted_and_logged_once(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fault = Fault("always")
    caplog.set_level(logging.ERROR, logger="gotk_relay.convert")
    async with _destination(kind) as dest:
        dest.inject(monkeypatch, fault)
        async with relay_client(dest.config()) as (client, relay):
            sent = await _send_batch(client, relay, dest.name)
            await _all_but_one_arrive(client, relay, dest, sent, POISON)
    logged = [r for r in caplog.records if r.name == "gotk_relay.convert"]
    assert len(logged) == 1
    assert POISON in logged[0].__dict__["series"]
    assert "injected: mapping failed" in logged[0].__dict__["err"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_series_that_fails_only_after_another_is_left_out(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault("together")
    async with _destination(kind) as dest:
        dest.inject(monkeypatch, fault)
        async with relay_client(dest.config()) as (client, relay):
            # One step a request: POISON and PARTNER are mapped in one call.
            sent = await _send_batch(client, relay, dest.name, 1 << 20)
            await _all_but_one_arrive(client, relay, dest, sent, PARTNER)
            assert fault.raised


@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_no_series_explains_is_retried_and_shown_without_sending_twice(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = Fault("unexplained")
    async with _destination(kind) as dest:
        dest.inject(monkeypatch, fault)
        async with relay_client(dest.config()) as (client, relay):
            sent = await _send_batch(client, relay, dest.name)

            async def not_ready() -> bool:
                return (await client.get("/-/ready")).status == 503

            deadline = time.monotonic() + 10
            while not await not_ready():
                assert time.monotonic() < deadline, "the stuck sender never showed in /-/ready"
                await _sleep()
            retried = fault.raised
            await eventually(lambda: fault.raised >= retried + 3)  # retried, not given up
            before = dest.arrived()  # the first request: once, and not the failing one
            assert before and len(before) == len(set(before)) and POISON not in before
            fault.on = False
            await eventually(lambda: len(dest.arrived()) >= SERIES)
            assert sorted(dest.arrived()) == sent
            assert await _skipped(client, dest.name) == 0
            await _until(lambda: client.get("/-/ready"), lambda r: r.status == 200)


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def _until(call: Callable[[], Any], good: Callable[[Any], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not good(await call()):
        assert time.monotonic() < deadline
        await _sleep()
