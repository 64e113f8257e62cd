"""Issue 22's proof: a relay with a spool, restarted between a round of 50,000 Flux objects and
that round's resend, writes no output twice and none out of order.

The relay is the real app (``harness.relay_client``) on a spool directory; the restart stops it
(``Relay.stop``) and starts a new one on the same directory. The receiver is a real HTTP server
that decodes every request with the project's codec and checks every output sample against the
last one received for its series, as Prometheus' TSDB does, but counting identical duplicates
too (Prometheus takes those silently).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Final

import pytest
from aiohttp import web

from gotk_relay.model import Batch, Labels, Sample, Series, labels_from
from gotk_relay.rules.flux import RECONCILE_CONDITION, SUSPEND_STATUS
from gotk_relay.wire import fastpath_pb2, remote_pb2, rw1, snappy
from tests.support import loadgen
from tests.support.harness import (
    ScriptedReceiver,
    eventually,
    metric_value,
    receivers,
    relay_client,
)

OBJECTS: Final = 50_000
PER_REQUEST: Final = 5_000
T: Final = 1_732_560_000_000
SCRAPE_MS: Final = 30_000
HEADERS: Final = {
    "Content-Type": rw1.CONTENT_TYPE,
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
OUTPUT_NAMES: Final = (RECONCILE_CONDITION.encode(), SUSPEND_STATUS.encode())


class OutputSink(ScriptedReceiver):
    """Keeps, per output series (by label hash), the last timestamp received: duplicates and
    out-of-order samples are counted as they arrive, nothing else is held."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[int, int] = {}
        self.samples = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.per_ts: dict[int, int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The relay's own reduced views (proto/fastpath.proto), parsed by upb: a series' labels
        # stay its exact encoded bytes (its identity here) and only its samples are decoded, so
        # 200,000 series take a fraction of a second, not the pure-Python decoder's seconds.
        raw = snappy.decompress(await request.read(), 1 << 30)
        last = self.last
        for encoded in fastpath_pb2.FlatWriteRequest.FromString(raw).timeseries:
            series = fastpath_pb2.FlatTimeSeries.FromString(encoded)
            if not any(name in series.labels[0] for name in OUTPUT_NAMES):  # __name__ first
                continue
            key = hash(tuple(series.labels))
            for encoded_sample in series.samples:
                ts = remote_pb2.Sample.FromString(encoded_sample).timestamp
                before = last.get(key)
                if before is not None and ts == before:
                    self.duplicates += 1
                elif before is not None and ts < before:
                    self.out_of_order += 1
                else:
                    last[key] = ts
                self.samples += 1
                self.per_ts[ts] = self.per_ts.get(ts, 0) + 1
        return web.Response(status=204)


def requests(objects: list[Labels]) -> list[bytes]:
    """The round's requests (uncompressed) at timestamp T, ``PER_REQUEST`` series each."""
    return [
        rw1.encode(
            Batch(
                tuple(Series(labels, (Sample(1.0, T),)) for labels in objects[i : i + PER_REQUEST])
            )
        )
        for i in range(0, len(objects), PER_REQUEST)
    ]


def at(request: bytes, ts: int) -> bytes:
    """The same request with every sample at ``ts``: its series re-encoded by upb around their
    labels' bytes, which is much cheaper than encoding the labels again."""
    flat = fastpath_pb2.FlatWriteRequest.FromString(request)
    sample = remote_pb2.Sample(value=1.0, timestamp=ts).SerializeToString()
    out = fastpath_pb2.FlatWriteRequest()
    for encoded in flat.timeseries:
        series = fastpath_pb2.FlatTimeSeries.FromString(encoded)
        del series.samples[:]
        series.samples.append(sample)
        out.timeseries.append(series.SerializeToString())
    return bytes(out.SerializeToString())


@pytest.mark.slow
async def test_a_restart_between_a_round_and_its_resend_writes_no_output_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(22)
    objects = [labels_from(loadgen.flux_labels(rng, i)) for i in range(OBJECTS)]
    outputs = 4 * OBJECTS  # three conditions and the suspend gauge per object
    first = requests(objects)
    rounds = {ts: [at(r, ts) for r in first] for ts in (T - SCRAPE_MS, T + SCRAPE_MS)}
    rounds[T] = first
    async with receivers(OutputSink()) as (sink,):
        assert isinstance(sink, OutputSink)
        config = {
            "flux": {"mode": "legacy", "keep_source": False},
            "spool": {"data_dir": str(tmp_path / "spool")},
            "federate": {"enabled": False},
            "remote_write": [{"url": sink.url}],
        }

        async def send(client: object, ts: int) -> None:
            for request in rounds[ts]:
                body = snappy.compress(request)
                response = await client.post("/api/v1/write", data=body, headers=HEADERS)  # type: ignore[attr-defined]
                assert response.status == 204, await response.text()

        async with relay_client(config) as (client, _):
            await send(client, T)
            await eventually(lambda: sink.samples >= outputs, timeout=60)
        async with relay_client(config) as (client, relay):
            assert relay.flux_state is not None and relay.flux_state.restored == OBJECTS
            await send(client, T)  # the round again: Prometheus had no ack for it
            await send(client, T - SCRAPE_MS)  # an older one, retried late
            await send(client, T + SCRAPE_MS)  # the next: written, after
            await eventually(lambda: sink.samples >= 2 * outputs, timeout=60)
            await asyncio.sleep(0)
            text = (await client.get("/metrics")).text
            dropped = metric_value(await text(), "gotk_relay_flux_out_of_order_dropped_total")
    assert (sink.duplicates, sink.out_of_order) == (0, 0)
    assert sink.per_ts == {T: outputs, T + SCRAPE_MS: outputs}
    assert len(sink.last) == outputs
    assert dropped == outputs  # the older round's, each counted
