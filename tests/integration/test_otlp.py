"""The ``otlp:`` destination end to end: the in-process relay against a scripted OTLP/HTTP
receiver on 127.0.0.1 that decodes what it is sent with opentelemetry-proto, as a collector
would."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from gotk_relay.model import Batch, Sample, Series
from tests.support.harness import RelayClient, eventually, metric_value, relay_client, rw_body
from tests.support.otlp_receiver import Answer, OTLPReceiver, otlp_receiver

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}
TARGET = {"job": "api", "instance": "10.0.0.1:8080"}
NS = 1_000_000


def _config(url: str, **destination: object) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "otlp": [{"name": "o", "url": url, "queue_config": dict(FAST), **destination}],
    }


def _series(name: str, value: float, ts: int, **labels: str) -> Series:
    return Series(
        tuple(sorted({"__name__": name, **TARGET, **labels}.items())), (Sample(value, ts),)
    )


async def _post(client: RelayClient, *series: Series) -> None:
    body, headers = rw_body(Batch(tuple(series)))
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204


async def _metric(client: RelayClient, name: str, **labels: str) -> float:
    return metric_value(await (await client.get("/metrics")).text(), name, **labels)


def _attrs(kvs: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}  # type: ignore[attr-defined]


async def test_gauge_counter_and_classic_histogram_arrive_as_otlp_types() -> None:
    async with (
        otlp_receiver(OTLPReceiver()) as receiver,
        relay_client(_config(receiver.url)) as (client, _),
    ):
        await _post(
            client,
            _series("temperature", 21.5, 1000, room="a"),
            _series("http_requests_total", 7, 1000, code="200"),
            _series("latency_bucket", 1, 1000, le="0.1"),
            _series("latency_bucket", 3, 1000, le="1"),
            _series("latency_bucket", 4, 1000, le="+Inf"),
            _series("latency_sum", 2.5, 1000),
            _series("latency_count", 4, 1000),
        )
        await eventually(lambda: len(receiver.delivered()) == 1)
        got = receiver.requests[0]
        assert got.headers["Content-Type"] == "application/x-protobuf"
        assert got.headers["Content-Encoding"] == "gzip"
        assert got.headers["User-Agent"].startswith("gotk-relay/")
        (rm,) = got.request.resource_metrics
        assert _attrs(rm.resource.attributes) == {
            "service.name": "api",
            "service.instance.id": "10.0.0.1:8080",
        }
        found = got.metrics()
        assert sorted(found) == ["http_requests_total", "latency", "temperature"]

        gauge = found["temperature"].gauge.data_points[0]
        assert (gauge.as_double, gauge.time_unix_nano, _attrs(gauge.attributes)) == (
            21.5,
            1000 * NS,
            {"room": "a"},
        )

        counter = found["http_requests_total"].sum
        assert counter.is_monotonic
        assert counter.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        assert (counter.data_points[0].as_double, counter.data_points[0].start_time_unix_nano) == (
            7,
            1000 * NS,
        )

        hist = found["latency"].histogram
        assert hist.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        (point,) = hist.data_points
        assert (list(point.explicit_bounds), list(point.bucket_counts)) == ([0.1, 1.0], [1, 2, 1])
        assert (point.count, point.sum) == (4, 2.5)
        assert await _metric(client, "gotk_relay_samples_forwarded_total", destination="o") == 7


async def test_delta_temporality_sends_differences_from_the_second_observation() -> None:
    receiver = OTLPReceiver()
    config = _config(receiver.url, temporality="delta")
    async with otlp_receiver(receiver), relay_client(config) as (client, _):
        await _post(
            client,
            _series("http_requests_total", 10, 1000),
            _series("latency_bucket", 1, 1000, le="1"),
            _series("latency_bucket", 2, 1000, le="+Inf"),
            _series("latency_count", 2, 1000),
            _series("latency_sum", 1.0, 1000),
            _series("temperature", 20, 1000),
        )
        await eventually(lambda: len(receiver.delivered()) == 1)
        assert sorted(receiver.requests[0].metrics()) == ["temperature"]  # baselines only
        await _post(
            client,
            _series("http_requests_total", 16, 2000),
            _series("latency_bucket", 4, 2000, le="1"),
            _series("latency_bucket", 7, 2000, le="+Inf"),
            _series("latency_count", 7, 2000),
            _series("latency_sum", 4.5, 2000),
        )
        await eventually(lambda: len(receiver.delivered()) == 2)
        found = receiver.requests[1].metrics()
        counter = found["http_requests_total"].sum
        assert counter.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_DELTA
        assert counter.is_monotonic
        (point,) = counter.data_points
        assert (point.start_time_unix_nano, point.time_unix_nano, point.as_double) == (
            1000 * NS,
            2000 * NS,
            6,
        )
        hist = found["latency"].histogram
        assert hist.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_DELTA
        (h,) = hist.data_points
        assert (list(h.bucket_counts), h.count, h.sum) == ([3, 2], 5, 3.5)


async def test_delta_retry_resends_the_same_difference_and_commits_it_once() -> None:
    receiver = OTLPReceiver([Answer(503)])
    async with (
        otlp_receiver(receiver),
        relay_client(_config(receiver.url, temporality="delta")) as (client, _),
    ):
        await _post(client, _series("jobs_total", 10, 1000))  # baseline: nothing to send
        await _post(client, _series("jobs_total", 15, 2000))
        await eventually(lambda: len(receiver.delivered()) == 1)
        await _post(client, _series("jobs_total", 18, 3000))
        await eventually(lambda: len(receiver.delivered()) == 2)
        sent = [
            (r.status, p.start_time_unix_nano // NS, p.as_double)
            for r in receiver.requests
            for p in r.metrics()["jobs_total"].sum.data_points
        ]
        assert sent == [(503, 1000, 5.0), (200, 1000, 5.0), (200, 2000, 3.0)]


RETRIED = {429, 502, 503, 504}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415, 500, 501, 429, 502, 503, 504])
async def test_only_429_502_503_504_are_retried(status: int) -> None:
    receiver = OTLPReceiver([Answer(status, body=b"nope")])
    async with otlp_receiver(receiver), relay_client(_config(receiver.url)) as (client, _):
        await _post(client, _series("first", 1, 1000))
        if status in RETRIED:
            await eventually(lambda: len(receiver.delivered()) == 1)
            assert [r.status for r in receiver.requests] == [status, 200]
            assert "first" in receiver.requests[1].metrics()
            assert (
                await _metric(
                    client, "gotk_relay_retries_total", destination="o", reason=f"http_{status}"
                )
                == 1
            )
        else:
            await eventually(
                lambda: receiver.requests != [] and receiver.requests[0].status == status,
            )
            # Follow with a second batch: had the first been retried, it would come before it.
            await _post(client, _series("second", 1, 2000))
            await eventually(lambda: len(receiver.delivered()) == 1)
            assert [r.status for r in receiver.requests] == [status, 200]
            assert list(receiver.requests[1].metrics()) == ["second"]
        dropped = await _metric(
            client, "gotk_relay_samples_dropped_total", destination="o", reason=f"http_{status}"
        )
        assert dropped == (0 if status in RETRIED else 1)


async def test_a_drop_after_accepted_requests_of_a_batch_counts_those_as_forwarded() -> None:
    """A batch sent as several requests: the ones accepted before a 400 are forwarded (counted
    so, and never sent again), only the rest of the batch is dropped."""
    receiver = OTLPReceiver([Answer(200), Answer(400, body=b"bad")])
    queue = {**FAST, "max_samples_per_send": 2}
    async with (
        otlp_receiver(receiver),
        relay_client(_config(receiver.url, queue_config=queue)) as (client, _),
    ):
        await _post(client, *(_series(f"m{i}", i, 1000) for i in range(5)))
        await eventually(lambda: len(receiver.requests) == 2)
        await _post(client, _series("after", 1, 2000))
        await eventually(lambda: len(receiver.requests) == 3)
        assert [r.status for r in receiver.requests] == [200, 400, 200]
        accepted = len(receiver.requests[0].metrics())  # one point per series
        assert accepted >= 1
        assert list(receiver.requests[2].metrics()) == ["after"]
        forwarded = await _metric(client, "gotk_relay_samples_forwarded_total", destination="o")
        dropped = await _metric(
            client, "gotk_relay_samples_dropped_total", destination="o", reason="http_400"
        )
        assert (forwarded, dropped) == (accepted + 1, 5 - accepted)


async def test_a_batch_given_up_after_accepted_requests_counts_those_as_forwarded() -> None:
    """A batch sent as several requests, the first accepted and the next answered 503 until the
    batch is past ``sample_age_limit`` (1 s: a request forwarded as received is dated by its
    arrival): the accepted request's points count as forwarded, only the rest as given up."""
    now = int(time.time() * 1000)
    receiver = OTLPReceiver([Answer(200)], default=Answer(503))
    queue = {**FAST, "max_samples_per_send": 2, "sample_age_limit": "1s"}
    async with (
        otlp_receiver(receiver),
        relay_client(_config(receiver.url, queue_config=queue)) as (client, _),
    ):
        await _post(client, *(_series(f"m{i}", i, now) for i in range(5)))

        async def given_up() -> float:
            return await _metric(
                client,
                "gotk_relay_samples_dropped_total",
                destination="o",
                reason="sample_age_limit",
            )

        for _ in range(200):  # bounded: 10 s
            if await given_up():
                break
            await asyncio.sleep(0.05)
        forwarded = await _metric(client, "gotk_relay_samples_forwarded_total", destination="o")
        dropped = await given_up()
    accepted = len(receiver.requests[0].metrics())  # one point per series
    assert receiver.requests[0].status == 200 and accepted >= 1
    assert (forwarded, dropped) == (accepted, 5 - accepted)


@pytest.mark.slow  # waits out a 1 s Retry-After
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(status: int) -> None:
    receiver = OTLPReceiver([Answer(status, {"Retry-After": "1"})])
    async with otlp_receiver(receiver), relay_client(_config(receiver.url)) as (client, _):
        await _post(client, _series("up", 1, 1000))
        await eventually(lambda: len(receiver.delivered()) == 1, timeout=10)
        first, second = receiver.requests
        assert second.at - first.at >= 1.0


async def test_partial_success_is_counted_not_retried_and_logged_once_per_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(rejected: int, message: str) -> Answer:
        response = ExportMetricsServiceResponse(
            partial_success=ExportMetricsPartialSuccess(
                rejected_data_points=rejected, error_message=message
            )
        )
        return Answer(200, body=response.SerializeToString())

    receiver = OTLPReceiver(
        [
            answer(2, "out of order"),
            answer(1, "out of order"),
            answer(1, "too old"),
            answer(0, "metric name deprecated"),  # a warning: nothing rejected
        ]
    )
    async with otlp_receiver(receiver), relay_client(_config(receiver.url)) as (client, relay):
        with caplog.at_level(logging.WARNING, logger="gotk_relay.otlp"):
            await _post(client, _series("a", 1, 1000), _series("b", 1, 1000))
            await eventually(lambda: relay.destinations["o"].client.rejected_points == 2)  # type: ignore[attr-defined]
            for name, ts in (("c", 2000), ("d", 3000), ("e", 4000), ("f", 5000)):
                await _post(client, _series(name, 1, ts))
            await eventually(lambda: len(receiver.requests) == 5)
        assert list(receiver.requests[1].metrics()) == ["c"]  # the rejected ones not resent
        assert relay.destinations["o"].client.rejected_points == 4  # type: ignore[attr-defined]
    logged = [r.__dict__["response"] for r in caplog.records if "partial success" in r.getMessage()]
    assert logged == ["out of order", "too old", "metric name deprecated"]


async def test_uncompressed_request_with_configured_headers_and_authorization() -> None:
    receiver = OTLPReceiver()
    config = _config(
        receiver.url,
        compression="none",
        headers={"X-Team": "observability"},
        authorization={"credentials": "s3cret"},
    )
    async with otlp_receiver(receiver), relay_client(config) as (client, _):
        await _post(client, _series("up", 1, 1000))
        await eventually(lambda: len(receiver.delivered()) == 1)
        headers = receiver.requests[0].headers
        assert "Content-Encoding" not in headers
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["X-Team"] == "observability"
        assert "up" in receiver.requests[0].metrics()


async def test_unreachable_receiver_is_retried_until_it_answers() -> None:
    receiver = OTLPReceiver()
    async with relay_client(_config(receiver.url)) as (client, relay):
        await _post(client, _series("up", 1, 1000))
        await eventually(
            lambda: (
                relay.telemetry.registry.get_sample_value(
                    "gotk_relay_retries_total", {"destination": "o", "reason": "connect_error"}
                )
                is not None
            )
        )
        async with otlp_receiver(receiver):
            await eventually(lambda: len(receiver.delivered()) == 1)
        assert (
            await _metric(
                client, "gotk_relay_retries_total", destination="o", reason="connect_error"
            )
            >= 1
        )


async def test_target_info_becomes_the_resource_attributes_of_its_targets_series() -> None:
    """Through the relay (label sets read from the request's bytes): ``target_info`` is not
    sent as a metric; its labels are the resource attributes of its target's series."""
    receiver = OTLPReceiver()
    async with otlp_receiver(receiver), relay_client(_config(receiver.url)) as (client, _):
        await _post(
            client,
            _series("target_info", 1, 1000, k8s_cluster="prod"),
            _series("up", 1, 1000),
        )
        await eventually(lambda: len(receiver.delivered()) == 1)
    (got,) = receiver.delivered()
    assert list(got.metrics()) == ["up"]
    (rm,) = got.request.resource_metrics
    found = {a.key: a.value.string_value for a in rm.resource.attributes}
    assert found == {
        "service.name": TARGET["job"],
        "service.instance.id": TARGET["instance"],
        "k8s_cluster": "prod",
    }
