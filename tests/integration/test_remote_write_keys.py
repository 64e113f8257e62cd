"""remote_write keys pasted from prometheus.yml do what Prometheus documents, through the relay."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gotk_relay.config import load_text
from gotk_relay.destinations.remote_write import RemoteWriteClient
from gotk_relay.model import (
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Metadata,
    MetricType,
    Protocol,
    Sample,
    Series,
)
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
V2_ANSWER = Reply(
    204,
    headers={
        "X-Prometheus-Remote-Write-Samples-Written": "1",
        "X-Prometheus-Remote-Write-Histograms-Written": "0",
        "X-Prometheus-Remote-Write-Exemplars-Written": "0",
    },
)


def _request(v2: bool) -> Batch:
    """A sample with an exemplar, a native histogram and metadata, as Prometheus sends them."""
    meta = Metadata(MetricType.COUNTER, "requests", "") if v2 else None
    return Batch(
        (
            Series(
                (("__name__", "http_requests_total"), ("job", "api")),
                (Sample(0.1 + 0.2, 1000),),
                exemplars=(Exemplar((("trace_id", "abc"),), 1.0, 1000),),
                metadata=meta,
            ),
            Series(
                (("__name__", "latency_seconds"), ("job", "api")),
                histograms=(
                    Histogram(
                        1000,
                        3,
                        1,
                        sum=1.5,
                        schema=0,
                        positive_spans=(BucketSpan(0, 1),),
                        positive_deltas=(2,),
                    ),
                ),
            ),
        ),
        () if v2 else (FamilyMetadata("http_requests_total", MetricType.COUNTER, "requests"),),
    )


@pytest.mark.parametrize(
    ("sent", "destination"),
    [
        (False, Protocol.V1.value),
        (False, Protocol.V2.value),
        (True, Protocol.V1.value),
        (True, Protocol.V2.value),
    ],
    ids=["rw1-to-rw1", "rw1-to-rw2", "rw2-to-rw1", "rw2-to-rw2"],
)
async def test_false_flags_leave_out_exemplars_histograms_metadata(
    sent: bool, destination: str
) -> None:
    full = ScriptedReceiver(default=V2_ANSWER)
    lean = ScriptedReceiver(default=V2_ANSWER)
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": "full", "url": full.url, "protobuf_message": destination},
            {
                "name": "lean",
                "url": lean.url,
                "protobuf_message": destination,
                "send_exemplars": False,
                "send_native_histograms": False,
                "metadata_config": {"send": False},
                "queue_config": FAST,
            },
        ],
    }
    async with receivers(full, lean), relay_client(config) as (client, _):
        body, headers = rw_body(_request(sent), sent)
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status == 204, await response.text()
        await eventually(lambda: bool(full.delivered()) and bool(lean.delivered()))
        everything = [s for b in full.delivered() for s in b.series]
        assert any(s.exemplars for s in everything)
        assert any(s.histograms for s in everything)
        if not (
            sent and destination == Protocol.V1
        ):  # v2's per-series metadata has no v1 form here
            assert any(b.metadata for b in full.delivered()) or any(s.metadata for s in everything)

        got = [s for b in lean.delivered() for s in b.series]
        assert [s.labels for s in got] == [(("__name__", "http_requests_total"), ("job", "api"))]
        assert got[0].samples == (Sample(0.1 + 0.2, 1000),)
        assert not got[0].exemplars
        if destination == Protocol.V2:
            # As Prometheus: 2.0 carries each series' metadata whatever metadata_config.send
            # says (check-config and the log at load warn that it is ignored).
            same = next(s for s in everything if s.labels == got[0].labels and s.samples)
            assert got[0].metadata == same.metadata is not None
        else:
            assert got[0].metadata is None
            assert not any(b.metadata for b in lean.delivered())
        metrics = await (await client.get("/metrics")).text()
        skipped = metric_value(
            metrics,
            "gotk_relay_samples_skipped_total",
            destination="lean",
            reason="send_native_histograms_false",
        )
        assert skipped == 1
        # Left out on purpose is still delivered as configured: counted as forwarded.
        assert metric_value(metrics, "gotk_relay_samples_forwarded_total", destination="lean") == 2


async def test_a_lone_sample_is_sent_within_batch_send_deadline() -> None:
    # Prometheus flushes a partial batch after batch_send_deadline; the relay never holds one
    # back to fill it, so a single sample far below max_samples_per_send arrives before it.
    receiver = ScriptedReceiver()
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {
                "url": receiver.url,
                "queue_config": {
                    **FAST,
                    "max_samples_per_send": 20000,
                    "batch_send_deadline": "5s",
                },
            }
        ],
    }
    async with receivers(receiver), relay_client(config) as (client, _):
        body, headers = rw_body(gauge_batch(["up"], 1000))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1, timeout=5.0)


async def test_shards_run_are_min_shards_within_max_shards() -> None:
    receiver = ScriptedReceiver()
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": "d", "url": receiver.url, "queue_config": {"min_shards": 3, "max_shards": 3}}
        ],
    }
    async with receivers(receiver), relay_client(config) as (client, _):
        metrics = await (await client.get("/metrics")).text()
        assert metric_value(metrics, "gotk_relay_shards", destination="d") == 3


def test_enable_http2_true_is_logged_as_not_negotiated(caplog: pytest.LogCaptureFixture) -> None:
    config = load_text("remote_write: [{url: 'http://a:9/', enable_http2: true}]")
    with caplog.at_level(logging.INFO, logger="gotk_relay.remote_write"):
        RemoteWriteClient("a", config.remote_write[0])
        RemoteWriteClient("b", config.remote_write[0].model_copy(update={"enable_http2": False}))
    lines = [r for r in caplog.records if "HTTP/1.1" in r.getMessage()]
    assert [getattr(r, "destination", None) for r in lines] == ["a"]


def _many(series: int, samples: int, name: str = "many") -> Batch:
    """``series`` series of ``samples`` samples each, in one request."""
    return Batch(
        tuple(
            Series(
                (("__name__", name), ("i", f"{i:05d}")),
                tuple(Sample(float(t), 1000 + t) for t in range(samples)),
            )
            for i in range(series)
        )
    )


@pytest.mark.parametrize(
    "destination",
    [
        {},
        {"write_relabel_configs": [{"source_labels": ["i"], "regex": "00001", "action": "drop"}]},
        {"queue_config": {"min_shards": 2, "max_shards": 2}},
        {"protobuf_message": Protocol.V2.value},
    ],
    ids=["as-received", "routed", "two-shards", "rw2"],
)
async def test_no_request_carries_more_than_max_samples_per_send(
    destination: dict[str, object],
) -> None:
    """As Prometheus sends: a request taken as it came (or its routed share) that holds more
    points than ``max_samples_per_send`` goes out cut into requests that hold at most that
    many, each series' samples in order; a series bigger than that is cut too, its samples in
    order over as many requests as it takes."""
    receiver = ScriptedReceiver(default=V2_ANSWER)
    queue = {**FAST, "max_samples_per_send": 500, **destination.pop("queue_config", {})}  # type: ignore[dict-item]
    config = {
        "flux": {"mode": "off"},
        "remote_write": [{"url": receiver.url, "queue_config": queue, **destination}],
    }
    sent = _many(100, 50)  # 5000 samples
    dropped = 50 if "write_relabel_configs" in destination else 0
    big = _many(1, 700, "big")  # one series of 700
    async with receivers(receiver), relay_client(config) as (client, _):
        for batch in (sent, big):
            body, headers = rw_body(batch)
            answer = await client.post("/api/v1/write", data=body, headers=headers)
            assert answer.status == 204, await answer.text()
        want = sent.point_count - dropped + big.point_count
        await eventually(lambda: sum(b.point_count for b in receiver.delivered()) >= want)
        delivered = receiver.delivered()
    assert sum(b.point_count for b in delivered) == want
    assert max(b.point_count for b in delivered) <= 500
    big_labels = big.series[0].labels
    big_times = [s.timestamp for s in big.series[0].samples]
    assert [
        s.timestamp
        for b in delivered
        for x in b.series
        if x.labels == big_labels
        for s in x.samples
    ] == big_times
    per_series: dict[object, list[int]] = {}
    for batch in delivered:
        for series in batch.series:
            per_series.setdefault(series.labels, []).extend(s.timestamp for s in series.samples)
    assert all(times == sorted(times) for times in per_series.values())


async def test_a_request_left_with_nothing_is_not_sent() -> None:
    """An empty write, or metadata alone to a destination with ``metadata_config.send:
    false``, leaves nothing to send: as Prometheus, no request goes out (before, an empty
    write went to every destination)."""
    receiver = ScriptedReceiver()
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {
                "name": "lean",
                "url": receiver.url,
                "metadata_config": {"send": False},
                "queue_config": FAST,
            }
        ],
    }
    async with receivers(receiver), relay_client(config) as (client, _):
        empty, headers = rw_body(Batch(()))
        only_metadata, _ = rw_body(
            Batch((), (FamilyMetadata("up", MetricType.GAUGE, "Whether it is up.", ""),))
        )
        for body in (empty, only_metadata):
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        body, headers = rw_body(gauge_batch(["up"], 1000))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.requests) >= 1)
        await asyncio.sleep(0.2)  # the sender's queue is in order: nothing comes after
    assert len(receiver.requests) == 1
    assert [s.labels for b in receiver.delivered() for s in b.series] == [(("__name__", "up"),)]
