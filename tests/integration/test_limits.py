"""Receiver limits: each breach gets its documented 4xx with a one-line reason naming the limit,
is counted by reason, and leaves the relay serving.

| breach                                   | status | `gotk_relay_rejected_requests_total{reason}` |
|------------------------------------------|--------|----------------------------------------------|
| more series than `max_series_per_request` | 413    | `too_many_series`                             |
| a series over a per-series label limit   | 400    | `label_limits`                               |
| body not in within `read_timeout`        | 503    | `read_timeout`                               |
| over `max_concurrent_requests` at once   | 503    | `too_many_requests` (retried by Prometheus)   |
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gotk_relay.model import Batch, Sample, Series, labels_from
from gotk_relay.server import IN_FLIGHT
from gotk_relay.wire import rw1_bytes
from gotk_relay.wire.labels import describe
from tests.support.harness import (
    RelayClient,
    eventually,
    gauge_batch,
    metric_value,
    relay_client,
    rw_body,
)


def _config(**receiver: object) -> dict[str, object]:
    return {"flux": {"mode": "off"}, "receiver": receiver}


def _full(**receiver: object) -> dict[str, object]:
    """Every series decoded and checked (the default, framing, checks only what rules read)."""
    return _config(validation="full", **receiver)


def _series(**labels: str) -> Series:
    return Series(tuple(sorted({"__name__": "flux_up", **labels}.items())), (Sample(1, 1),))


async def _rejected(client: RelayClient, reason: str) -> float:
    text = await (await client.get("/metrics")).text()
    return metric_value(text, "gotk_relay_rejected_requests_total", reason=reason)


async def _still_serving(client: RelayClient) -> None:
    assert (await client.get("/-/healthy")).status == 200
    body, headers = rw_body(gauge_batch(["up"], 1))
    assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204


BREACHES = [
    (
        "too-many-series",
        {"max_series_per_request": 2},
        Batch((_series(a="1"), _series(a="2"), _series(a="3"))),
        413,
        "3 series, over receiver.max_series_per_request (2)",
        "too_many_series",
    ),
    (
        "too-many-labels",
        {"max_labels_per_series": 3},
        Batch((_series(a="1", b="2", c="3"),)),
        400,
        "4 labels, over receiver.max_labels_per_series (3)",
        "label_limits",
    ),
    (
        "label-name-too-long",
        {"max_label_name_length": 16},
        Batch((_series(**{"n" * 17: "1"}),)),
        400,
        "17 bytes, over receiver.max_label_name_length (16)",
        "label_limits",
    ),
    (
        "label-value-too-long",
        {"max_label_value_length": 16},
        Batch((_series(job="v" * 17),)),
        400,
        "value of label 'job' of 17 bytes, over receiver.max_label_value_length (16)",
        "label_limits",
    ),
    (
        # 9 characters, 18 bytes: lengths are UTF-8 bytes, as Mimir counts them.
        "label-value-too-long-in-bytes",
        {"max_label_value_length": 16},
        Batch((_series(job="é" * 9),)),
        400,
        "18 bytes, over receiver.max_label_value_length (16)",
        "label_limits",
    ),
]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("receiver", "batch", "status", "reason_text", "reason"),
    [b[1:] for b in BREACHES],
    ids=[b[0] for b in BREACHES],
)
async def test_a_breached_limit_gets_its_status_and_the_relay_keeps_serving(
    receiver: dict[str, object],
    batch: Batch,
    status: int,
    reason_text: str,
    reason: str,
    v2: bool,
) -> None:
    async with relay_client(_full(**receiver)) as (client, _):
        body, headers = rw_body(batch, v2=v2)
        response = await client.post("/api/v1/write", data=body, headers=headers)
        text = await response.text()
        assert response.status == status, text
        assert reason_text in text
        if status == 400:  # a label limit names the series
            assert f"in series {describe(batch.series[0].labels)}" in text
        assert text.count("\n") == 1
        assert await _rejected(client, reason) == 1
        await _still_serving(client)


async def test_a_request_exactly_at_every_limit_is_accepted() -> None:
    config = _full(
        max_series_per_request=2,
        max_labels_per_series=3,
        max_label_name_length=8,
        max_label_value_length=8,
    )
    batch = Batch((_series(a="12345678"), _series(abcdefgh="1", b="é" * 4)))
    async with relay_client(config) as (client, _):
        for v2 in (False, True):
            body, headers = rw_body(batch, v2=v2)
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204, await response.text()


@pytest.mark.parametrize(
    ("validation", "other_status"),
    [("full", 400), ("framing", 204)],
    ids=["default-every-series", "framing-the-series-the-rules-read"],
)
async def test_label_limits_apply_to_every_series_unless_framing(
    validation: str, other_status: int
) -> None:
    config = {
        "flux": {"mode": "legacy"},
        "receiver": {"max_label_value_length": 16, "validation": validation},
    }
    flux = Batch((Series(labels_from({"__name__": "gotk_resource_info", "name": "v" * 17}), ()),))
    other = Batch((_series(job="v" * 17),))
    async with relay_client(config) as (client, _):
        body, headers = rw_body(flux)
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status == 400
        assert "over receiver.max_label_value_length (16)" in await response.text()
        # framing (the opt-out) forwards the others as they came: the destinations judge them.
        # It needs the compiled scanner; without it the check is the strict one (README).
        body, headers = rw_body(other)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == (
            other_status if rw1_bytes.NATIVE else 400
        )


async def test_a_chunked_body_over_max_request_bytes_is_refused_while_reading() -> None:
    # Without Content-Length the size is only known while reading: the relay stops at the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"\x00" * 1024

    async with relay_client(_config(max_request_bytes=4096)) as (client, _):
        response = await client.post(
            "/api/v1/write",
            data=chunks(),
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
        )
        assert response.status == 413
        assert "exceeds the limit of 4096 bytes" in await response.text()
        assert await _rejected(client, "too_large") == 1
        await _still_serving(client)


@asynccontextmanager
async def _raw_write(
    client: RelayClient, body_length: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A write request on a socket of its own: headers now, the body whenever the test sends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/v1/write HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Content-Type: application/x-protobuf\r\n"
        b"Content-Encoding: snappy\r\n"
        b"Content-Length: " + str(body_length).encode() + b"\r\n\r\n"
    )
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()


async def _trickle(writer: asyncio.StreamWriter, body: bytes, interval: float) -> None:
    """Send ``body`` a byte per ``interval`` seconds, as a slow (or malicious) sender would."""
    try:
        for i in range(len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        pass  # the relay hung up on us: what the test expects


@pytest.mark.slow  # waits out the read timeout
async def test_a_slow_sender_gets_503_within_the_read_timeout() -> None:
    body, _ = rw_body(gauge_batch(["up", "down", "left", "right"], 1))
    async with relay_client(_config(read_timeout="1s")) as (client, _):
        async with _raw_write(client, len(body)) as (reader, writer):
            loop = asyncio.get_running_loop()
            started = loop.time()
            # A byte every 0.45 s: never idle for the 1 s allowed, and the body would take far
            # longer. No byte is due at the 1 s mark itself: one that arrives after the relay's
            # last read and before it closes makes the kernel reset the connection (unread data
            # at close), and the reset would discard the 503 the test reads.
            trickle = asyncio.create_task(_trickle(writer, body, 0.45))
            try:
                status_line = await asyncio.wait_for(reader.readline(), timeout=5)
                rest = await asyncio.wait_for(reader.read(), timeout=5)  # then the relay hangs up
            finally:
                trickle.cancel()
            assert status_line.startswith(b"HTTP/1.1 503"), status_line
            assert b"not received within 1s (receiver.read_timeout)" in rest
            assert loop.time() - started < 3
        assert await _rejected(client, "read_timeout") == 1
        await _still_serving(client)


async def test_writes_beyond_max_concurrent_requests_get_503() -> None:
    body, headers = rw_body(gauge_batch(["up"], 1))
    async with relay_client(_config(max_concurrent_requests=1)) as (client, _):
        in_flight = client.app[IN_FLIGHT]
        async with _raw_write(client, len(body)) as (reader, writer):
            # The first write holds the only slot while its body is still coming.
            writer.write(body[:5])
            await writer.drain()
            await eventually(lambda: in_flight.active == 1)

            second = await client.post("/api/v1/write", data=body, headers=headers)
            text = await second.text()
            assert second.status == 503, text
            assert "receiver.max_concurrent_requests" in text

            # The rest of the first body arrives: that request completes (read whole, although
            # it came in two parts) and frees its slot.
            writer.write(body[5:])
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=5)
            assert status_line.startswith(b"HTTP/1.1 204"), status_line
        assert in_flight.active == 0
        assert await _rejected(client, "too_many_requests") == 1
        await _still_serving(client)
