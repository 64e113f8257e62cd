"""The Datadog destination end to end: the real relay app in-process, posting to the intake double.

Every payload the relay sends is validated by the double against ``datadog-api-client``'s models
(``intake.problems`` must stay empty) and checked against the intake's size limits.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gotk_relay import relay as relay_module
from gotk_relay.delivery.ack import Ack
from gotk_relay.delivery.entry import encode_entry
from gotk_relay.destinations import datadog
from gotk_relay.destinations.datadog import DatadogClient
from gotk_relay.model import Batch, FamilyMetadata, MetricType, Protocol, Sample, Series
from gotk_relay.relay import Relay
from gotk_relay.wire import text
from tests.support.datadog_intake import MAX_COMPRESSED, MAX_UNCOMPRESSED, DatadogIntake
from tests.support.harness import eventually, relay_client, rw_body

FAST = {"min_backoff": "10ms", "max_backoff": "50ms"}
FIXTURES = Path(__file__).parents[1] / "fixtures" / "flux"


def _config(intake: DatadogIntake, flux: str = "off", **extra: Any) -> dict[str, Any]:
    queue = {**FAST, **extra.pop("queue_config", {})}
    destination = {"name": "dd", "url": intake.url, "queue_config": queue, **extra}
    if "api_key_file" not in destination:
        destination.setdefault("api_key", "test-key")
    return {"flux": {"mode": flux}, "datadog": [destination]}


def _client(relay: Relay) -> DatadogClient:
    client = relay.destinations["dd"].client
    assert isinstance(client, DatadogClient)
    return client


def _dropped(relay: Relay, reason: str) -> float:
    labels = {"destination": "dd", "reason": reason}
    return (
        relay.telemetry.registry.get_sample_value("gotk_relay_samples_dropped_total", labels) or 0
    )


def _forwarded(relay: Relay) -> float:
    labels = {"destination": "dd"}
    return (
        relay.telemetry.registry.get_sample_value("gotk_relay_samples_forwarded_total", labels) or 0
    )


async def _post(client: Any, batch: Batch) -> None:
    body, headers = rw_body(batch)
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204, await response.text()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _gauges(count: int, ts: int, entropy: int = 1, prefix: str = "g") -> Batch:
    """``count`` gauge series whose labels carry ``entropy`` random hex values each: random
    text is what keeps JSON from compressing, so these reach the compressed limit."""
    return Batch(
        tuple(
            Series(
                tuple(
                    sorted(
                        {
                            "__name__": "load_test_gauge",
                            "series": f"{prefix}{i:06d}",
                            **{f"r{k}": secrets.token_hex(16) for k in range(entropy)},
                        }.items()
                    )
                ),
                (Sample(float(i), ts),),
            )
            for i in range(count)
        )
    )


def _tags(series: dict[str, Any]) -> dict[str, str]:
    return dict(t.split(":", 1) for t in series.get("tags", []))


async def test_flux_legacy_series_arrive_as_gauges_with_lowercased_tags() -> None:
    # KSM's gotk_resource_info, re-stamped to now (the intake refuses points over an hour old).
    now = _now_ms()
    parsed = text.parse((FIXTURES / "ksm_input.prom").read_text(), now)
    batch = Batch(
        tuple(s._replace(samples=(Sample(s.samples[0].value, now),)) for s in parsed.series),
        parsed.metadata,
    )
    async with DatadogIntake() as intake:
        config = _config(intake, flux="legacy", tags=["env:Test"])
        async with relay_client(config) as (client, _):
            await _post(client, batch)
            await eventually(
                lambda: any(s["metric"] == "gotk_suspend_status" for s in intake.series)
            )
    assert intake.problems == []
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for s in intake.series:
        by_metric.setdefault(s["metric"], []).append(s)
    assert {"gotk_reconcile_condition", "gotk_suspend_status"} <= set(by_metric)
    for s in by_metric["gotk_reconcile_condition"] + by_metric["gotk_suspend_status"]:
        assert s["type"] == 3  # gauges
        assert [p["timestamp"] for p in s["points"]] == [now // 1000]
        assert "env:test" in s["tags"]  # static tags, lowercased like every tag
    # Tag values are lowercased by Datadog's rules: kind="HelmRelease" is kind:helmrelease,
    # status="True" is status:true.
    helmrelease = {
        _tags(s)["status"]: s["points"][0]["value"]
        for s in by_metric["gotk_reconcile_condition"]
        if _tags(s).get("name") == "nextcloud-redis"
    }
    assert helmrelease == {"true": 1.0, "false": 0.0, "unknown": 0.0}
    sample = next(
        s for s in by_metric["gotk_reconcile_condition"] if _tags(s).get("name") == "podinfo"
    )
    tags = _tags(sample)
    assert tags["kind"] == "ocirepository" and tags["type"] == "ready"
    assert tags["exported_namespace"] == "apps" and tags["cluster"] == "prod-eu1"
    assert tags["instance"] == "10.244.1.17:8080"  # colons after the key stay
    suspended = {
        (_tags(s)["kind"], _tags(s)["name"]): s["points"][0]["value"]
        for s in by_metric["gotk_suspend_status"]
    }
    assert suspended[("kustomization", "flux-system")] == 1.0
    assert suspended[("gitrepository", "flux-system")] == 0.0


async def test_a_counter_arrives_as_count_deltas_across_requests_and_a_reset() -> None:
    start = _now_ms() - 120_000
    values = [10.0, 15.0, 22.0, 4.0, 9.0]  # a reset after 22
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, relay):
        for i, value in enumerate(values):
            series = Series(
                (("__name__", "http_requests_total"), ("code", "200"), ("job", "API")),
                (Sample(value, start + i * 15_000),),
            )
            await _post(client, Batch((series,)))
        await eventually(lambda: len(intake.points("http_requests_total")) == 4)
        skipped = dict(_client(relay).skipped)
    assert intake.problems == []
    points = intake.points("http_requests_total")
    assert [(p[1], p[2], p[3]) for p in points] == [
        ((start + 15_000) // 1000, 5.0, 1),
        ((start + 30_000) // 1000, 7.0, 1),
        ((start + 45_000) // 1000, 4.0, 1),  # the reset: the new value is the increase
        ((start + 60_000) // 1000, 5.0, 1),
    ]
    assert {p[0] for p in points} == {("code:200", "job:api")}
    assert all(s.get("interval") == 15 for s in intake.series)
    assert skipped == {"counter_first": 1}


async def test_v1_metadata_types_a_counter_without_a_counter_suffix() -> None:
    now = _now_ms()
    meta = (FamilyMetadata("restarts", MetricType.COUNTER, "restarts", ""),)
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, _):
        await _post(client, Batch((), meta))  # as Prometheus sends it: metadata on its own
        for i, value in enumerate([1.0, 3.0]):
            await _post(
                client,
                Batch(
                    (Series((("__name__", "restarts"),), (Sample(value, now - 2000 + i * 1000),)),)
                ),
            )
        await eventually(lambda: len(intake.points("restarts")) == 1)
    assert intake.points("restarts") == [((), (now - 1000) // 1000, 2.0, 1)]
    assert intake.problems == []


@pytest.mark.slow
async def test_an_oversize_batch_is_split_into_requests_within_both_limits() -> None:
    count = 30_000
    queue = {"max_samples_per_send": 50_000, "capacity": 100_000}
    intake = DatadogIntake()
    async with intake, relay_client(_config(intake, queue_config=queue)) as (client, _):
        await _post(client, _gauges(count, _now_ms(), entropy=3))
        await eventually(lambda: len(intake.series) >= count, timeout=60)
    assert intake.problems == []
    requests = intake.requests
    assert all(r.status == 202 for r in requests)  # split before sending: no 413 needed
    assert len(requests) >= 2
    assert all(r.compressed_bytes <= MAX_COMPRESSED for r in requests)
    assert all(r.uncompressed_bytes <= MAX_UNCOMPRESSED for r in requests)
    # The compressed limit is the binding one here: more requests than the raw size needs.
    raw_total = sum(r.uncompressed_bytes for r in requests)
    assert len(requests) > raw_total // MAX_UNCOMPRESSED + 1
    names = [_tags(s)["series"] for s in intake.series]
    assert len(names) == len(set(names)) == count  # nothing lost, nothing twice


async def test_once_the_ratio_is_known_each_request_is_compressed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Halving a piece that compressed over the limit compresses its JSON again; pieces sized by
    # the ratio the last bodies had are compressed once, and stay within both limits.
    compressed: list[int] = []
    real = datadog.compress

    def counting(body: bytes, encoding: str) -> bytes:
        compressed.append(len(body))
        return real(body, encoding)

    monkeypatch.setattr(datadog, "compress", counting)
    queue = {"max_samples_per_send": 4000, "capacity": 20_000}
    now = _now_ms()
    config = _config(intake := DatadogIntake(), queue_config=queue)
    async with intake, relay_client(config) as (client, relay):
        _client(relay).max_compressed = 40_000
        await _post(client, _gauges(3000, now - 1000, entropy=2))  # learns the ratio
        await eventually(lambda: len(intake.series) == 3000, timeout=20)
        first = len(intake.requests)
        compressed.clear()
        await _post(client, _gauges(3000, now, entropy=2, prefix="h"))
        await eventually(lambda: len(intake.series) == 6000, timeout=20)
    second = intake.requests[first:]
    assert intake.problems == []
    assert len(second) >= 3  # the compressed limit binds: several requests
    assert len(compressed) == len(second)  # each body compressed once, none halved
    assert all(r.status == 202 and r.compressed_bytes <= 40_000 for r in second)
    names = [_tags(s)["series"] for s in intake.series]
    assert len(names) == len(set(names)) == 6000


@pytest.mark.slow  # waits out Retry-After
async def test_retries_after_429_and_503_resend_only_what_was_not_accepted() -> None:
    t0 = _now_ms() - 60_000
    counter = ("__name__", "jobs_total")
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, relay):
        _client(relay).max_compressed = 40_000  # several requests per batch, quickly
        await _post(client, Batch((Series((counter,), (Sample(100.0, t0),)),)))  # baseline
        intake.answer_next(202)
        intake.answer_next(429, headers={"Retry-After": "1"})
        intake.answer_next(503, times=2)
        batch = _gauges(3000, t0 + 15_000, entropy=2)
        batch = Batch((*batch.series, Series((counter,), (Sample(130.0, t0 + 15_000),))))
        await _post(client, batch)
        await eventually(lambda: len(intake.series) >= 3001, timeout=20)
        await _post(client, Batch((Series((counter,), (Sample(135.0, t0 + 30_000),)),)))
        await eventually(lambda: len(intake.points("jobs_total")) == 2)
        retries = relay.telemetry.registry.get_sample_value(
            "gotk_relay_retries_total", {"destination": "dd", "reason": "http_429"}
        )
    assert intake.problems == []
    statuses = [r.status for r in intake.requests]
    assert statuses[:4] == [202, 429, 503, 503]
    assert all(s == 202 for s in statuses[4:]) and len(statuses) >= 6
    gap = intake.requests[2].at - intake.requests[1].at
    assert gap >= 1.0  # Retry-After honoured
    names = [_tags(s)["series"] for s in intake.series if s["metric"] == "load_test_gauge"]
    assert len(names) == len(set(names)) == 3000  # nothing acked was resent, nothing lost
    # The counter's delta was computed once and sent once, and the state moved on after it.
    assert [p[2] for p in intake.points("jobs_total")] == [30.0, 5.0]
    assert retries == 1


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_a_413_splits_the_request_and_resends_the_halves(compression: str) -> None:
    """The halves are cut from the body that was sent (a piece keeps its body, not its
    series' JSON, until Datadog answers), whichever way it was compressed."""
    now = _now_ms()
    config = _config(intake := DatadogIntake(), compression=compression)
    async with intake, relay_client(config) as (client, _):
        intake.answer_next(413, body='{"errors":["Payload too large"]}')
        batch = _gauges(4, now)
        await _post(client, batch)
        await eventually(lambda: len(intake.series) == 4)
    assert [r.status for r in intake.requests] == [413, 202, 202]
    assert [r.series for r in intake.requests] == [4, 2, 2]
    assert [r.encoding for r in intake.requests] == [compression] * 3
    assert sorted(_tags(s)["series"] for s in intake.series) == [f"g{i:06d}" for i in range(4)]
    assert intake.problems == []


async def test_a_413_for_one_series_of_several_points_splits_it_by_points() -> None:
    """A series whose points are all a request is kept whole after its JSON is made, so that a
    413 can still halve it by points: the first time its label set is met and after (its JSON
    then made by the compiled render)."""
    now = _now_ms()

    def lone(first: int) -> Batch:
        samples = tuple(
            Sample(float(first + k), now - 20_000 + (first + k) * 1_000) for k in range(4)
        )
        return Batch((Series((("__name__", "lone_gauge"), ("job", "x")), samples),))

    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, _):
        for first in (0, 4):
            intake.answer_next(413, body='{"errors":["Payload too large"]}')
            await _post(client, lone(first))

            def arrived(want: int = first + 4) -> bool:
                return len(intake.points("lone_gauge")) == want

            await eventually(arrived)
    assert [(r.status, r.series, r.points) for r in intake.requests] == [
        (413, 1, 4),
        (202, 1, 2),
        (202, 1, 2),
    ] * 2
    assert [p[2] for p in intake.points("lone_gauge")] == [float(k) for k in range(8)]
    assert intake.problems == []


async def test_counters_among_one_point_gauges_commit_their_state_after_a_413() -> None:
    """In requests of one-point gauges (of which only the JSON is kept once it is made) and
    counters, halved by a 413, each half commits its own counters' state: every delta is
    exact, the first time the label sets are met and after."""
    t0 = _now_ms() - 60_000
    names = [f"jobs_{k}_total" for k in range(3)]

    def scrape(round_: int) -> Batch:
        ts = t0 + round_ * 15_000
        gauges = [
            Series((("__name__", "up"), ("pod", f"p{k}")), (Sample(1.0, ts),)) for k in range(4)
        ]
        counters = [
            Series((("__name__", n),), (Sample(100.0 + 10 * round_ + k, ts),))
            for k, n in enumerate(names)
        ]
        return Batch((*gauges[:2], *counters, *gauges[2:]))

    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, _):
        await _post(client, scrape(0))  # the counters' baselines
        await eventually(lambda: len(intake.series) == 4)
        for round_ in (1, 2, 3):
            intake.answer_next(413, body='{"errors":["Payload too large"]}')
            await _post(client, scrape(round_))

            def sent(want: int = round_) -> bool:
                return all(len(intake.points(n)) == want for n in names)

            await eventually(sent)
    assert [(r.status, r.series) for r in intake.requests] == [(202, 4)] + [
        (413, 7),
        (202, 3),
        (202, 4),
    ] * 3
    assert [[p[2] for p in intake.points(n)] for n in names] == [[10.0, 10.0, 10.0]] * 3
    assert intake.problems == []


async def test_400_is_dropped_counted_and_not_retried() -> None:
    """A 400 for a request of several series halves it, as a 413 does; the series still
    refused alone is dropped and counted, not retried, and the others are sent."""
    now = _now_ms()
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, relay):
        intake.answer_next(400, body='{"errors":["Invalid payload"]}')  # the three series
        intake.answer_next(400, body='{"errors":["Invalid payload"]}')  # the first, alone
        await _post(client, _gauges(3, now))
        await eventually(lambda: _dropped(relay, "http_400") == 1)
        await eventually(lambda: len(intake.series) == 2)
        await _post(client, _gauges(2, now, prefix="h"))
        await eventually(lambda: len(intake.series) == 4)
        forwarded = _forwarded(relay)
    assert [(r.status, r.series) for r in intake.requests] == [
        (400, 3),
        (400, 1),
        (202, 2),
        (202, 2),
    ]
    assert sorted(_tags(s)["series"] for s in intake.series) == [
        "g000001",
        "g000002",
        "h000000",
        "h000001",
    ]
    assert forwarded == 4
    assert intake.problems == []


async def test_403_is_dropped_as_auth_failed_and_logged_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = _now_ms()
    async with DatadogIntake() as intake:
        config = _config(intake, api_key="s3cr3t-wrong-key")
        async with relay_client(config) as (client, relay):
            with caplog.at_level(logging.ERROR, logger="gotk_relay.datadog"):
                await _post(client, _gauges(2, now))
                await eventually(lambda: _dropped(relay, "auth_failed") == 2)
    assert [r.status for r in intake.requests] == [403]
    errors = [r for r in caplog.records if r.name == "gotk_relay.datadog"]
    assert errors and "refused the API key" in errors[0].getMessage()
    assert all("s3cr3t" not in str(r.__dict__) for r in caplog.records)


def _skipped(relay: Relay, reason: str) -> float:
    labels = {"destination": "dd", "reason": reason}
    return (
        relay.telemetry.registry.get_sample_value("gotk_relay_samples_skipped_total", labels) or 0
    )


def _watch_batches(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of entries of each batch the sender hands the Datadog client (the real
    ``send`` does the work)."""
    dd = _client(relay)
    send = dd.send
    sizes: list[int] = []

    async def counting(entries: list[Any]) -> Any:
        sizes.append(len(entries))
        return await send(entries)

    monkeypatch.setattr(dd, "send", counting)
    return sizes


async def _hold_then_post(
    intake: DatadogIntake, client: Any, relay: Relay, batches: list[Batch]
) -> None:
    """Post ``batches`` while the sender waits on the intake for a lone request before them,
    so that the sender takes them as one batch of several entries."""
    intake.latency = 0.5
    await _post(client, Batch((Series((("__name__", "hold"),), (Sample(1.0, _now_ms()),)),)))
    await eventually(lambda: _client(relay)._plans != {})  # in flight, its answer held
    for batch in batches:
        await _post(client, batch)
    intake.latency = 0.0  # the held answer still waits; those after it do not


def _write(k: int, value: float, ts: int) -> Batch:
    """Entry ``k`` of a scrape round: three gauges and a counter; entry 2 also a gauge and a
    counter the intake may refuse."""
    entry = ("entry", str(k))
    series = [
        Series((("__name__", "up"), entry, ("pod", f"p{i}")), (Sample(1.0, ts),)) for i in range(3)
    ]
    series.append(Series((("__name__", "jobs_total"), entry), (Sample(value, ts),)))
    if k == 2:
        series.append(Series((("__name__", "refused_gauge"), entry), (Sample(1.0, ts),)))
        series.append(Series((("__name__", "refused_total"), entry), (Sample(value, ts),)))
    return Batch(tuple(series))


async def test_a_series_refused_with_400_is_dropped_alone_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a batch of several entries sent as several requests, Datadog refuses (400) the
    requests holding two series: each request refused is halved until those series are alone,
    they are dropped and counted, and every other series arrives exactly once. Their counter
    state is not committed: the next delta of the refused counter includes the increase
    dropped, and the other counters' deltas stay exact."""
    t0 = _now_ms() - 120_000
    config = _config(intake := DatadogIntake(), queue_config={"max_samples_per_send": 100})
    async with intake, relay_client(config) as (client, relay):
        _client(relay).max_uncompressed = 400  # about four series a request
        sizes = _watch_batches(relay, monkeypatch)
        for k in range(4):  # the counters' baselines
            await _post(client, _write(k, 100.0, t0))
        await eventually(lambda: len(intake.points("up")) == 12)
        first = len(intake.requests)
        intake.refuse = lambda s: s["metric"].startswith("refused_")
        await _hold_then_post(
            intake, client, relay, [_write(k, 110.0, t0 + 15_000) for k in range(4)]
        )
        await eventually(lambda: len(intake.points("up")) == 24)
        await eventually(lambda: _dropped(relay, "http_400") == 2)
        await eventually(lambda: _forwarded(relay) == 4 * 4 + 2 + 1 + 4 * 4)
        round_one = intake.requests[first + 1 :]  # after the lone one that held the sender
        intake.refuse = None
        for k in range(4):
            await _post(client, _write(k, 115.0, t0 + 30_000))
        await eventually(lambda: len(intake.points("jobs_total")) == 8)
        await eventually(lambda: _forwarded(relay) == 3 * 18 + 1 - 2)
        dropped = {r: _dropped(relay, r) for r in ("http_400", "auth_failed", "http_413")}
        skipped = _skipped(relay, "counter_first")
    assert intake.problems == []
    assert 4 in sizes  # the refused series were in a batch of the four entries
    statuses = [r.status for r in round_one]
    assert statuses.count(202) >= 4  # several requests, the batch went on after the drops
    assert 2 <= statuses.count(400) <= 8
    assert [r.series for r in round_one if r.status == 400].count(1) == 2  # each alone
    # Nothing accepted was sent twice, and nothing but the refused series is missing.
    sent = [
        (s["metric"], tuple(sorted(s.get("tags", []))), p["timestamp"])
        for s in intake.series
        for p in s["points"]
    ]
    assert len(sent) == len(set(sent))
    assert len(intake.points("up")) == 36
    assert [p[1] for p in intake.points("refused_gauge")] == [t0 // 1000, (t0 + 30_000) // 1000]
    by_entry: dict[tuple[str, ...], list[float]] = {}
    for tags, _, value, _ in intake.points("jobs_total"):
        by_entry.setdefault(tags, []).append(value)
    assert by_entry == {(f"entry:{k}",): [10.0, 5.0] for k in range(4)}
    # The refused point's increase lands in the next delta.
    assert [p[2] for p in intake.points("refused_total")] == [15.0]
    assert dropped == {"http_400": 2, "auth_failed": 0, "http_413": 0}
    assert skipped == 5  # the first observations only: nothing re-mapped and skipped


async def test_a_batch_whose_every_request_is_refused_costs_a_bounded_number_of_requests(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal of everything (a payload shape Datadog refuses whole) is not bisected down to
    each series: at the client's cap of 400 answers the rest of the batch is dropped, counted
    http_400, and the sender does not resend its entries one by one."""
    now = _now_ms()
    config = _config(intake := DatadogIntake(), queue_config={"max_samples_per_send": 1000})
    async with intake, relay_client(config) as (client, relay):
        cap = _client(relay).max_refusals
        sizes = _watch_batches(relay, monkeypatch)
        intake.refuse = lambda s: s["metric"] != "hold"
        with caplog.at_level(logging.WARNING):
            await _hold_then_post(
                intake, client, relay, [_gauges(50, now, prefix=p) for p in ("a", "b", "c")]
            )
            await eventually(lambda: _dropped(relay, "http_400") == 150)
        intake.refuse = None
        await _post(client, _gauges(2, now, prefix="d"))
        await eventually(lambda: len(intake.points("load_test_gauge")) == 2)
        forwarded = _forwarded(relay)
    assert 3 in sizes
    assert [r.status for r in intake.requests] == [202] + [400] * cap + [202]
    assert cap <= 32
    assert forwarded == 3  # the request that held the sender, and the last two series
    assert sorted(_tags(s)["series"] for s in intake.series if "series" in _tags(s)) == [
        "d000000",
        "d000001",
    ]
    assert any("refused too many requests" in r.getMessage() for r in caplog.records)
    assert intake.problems == []


async def test_a_few_refused_series_in_a_large_batch_cost_only_their_own_points() -> None:
    """Isolating each refused series takes about log2(series) answers of 400; the bound on them
    counts those in a row, so three refused series spread over a batch of 4096 (≈ 3 × 13
    answers of 400, more than the bound of 24) are dropped alone and every other series is
    delivered."""
    now = _now_ms()
    bad = {"g000017", "g002048", "g004090"}
    config = _config(intake := DatadogIntake(), queue_config={"max_samples_per_send": 5000})
    async with intake, relay_client(config) as (client, relay):
        cap = _client(relay).max_refusals
        intake.refuse = lambda s: _tags(s).get("series") in bad
        await _post(client, _gauges(4096, now))
        await eventually(lambda: _dropped(relay, "http_400") == 3, timeout=30)
        await eventually(lambda: len(intake.points("load_test_gauge")) == 4093, timeout=30)
    refused = [r for r in intake.requests if r.status == 400]
    assert len(refused) > cap  # more than the bound in all, never that many in a row
    got = {_tags(s)["series"] for s in intake.series if "series" in _tags(s)}
    assert got == {f"g{i:06d}" for i in range(4096)} - bad
    assert intake.problems == []


async def test_a_narrowed_batch_given_up_counts_nothing_datadog_did_not_get() -> None:
    """Under ``receiver.acknowledge: delivered`` a batch may hold entries whose requests wait
    (an ack) beside entries that do not (scraped). On a retryable failure the waiting ones are
    failed (their senders send them again) and the batch goes on without them; what Datadog
    accepted before was of the whole batch, so when the rest is given up at
    ``sample_age_limit`` none of it counts as forwarded: Datadog holds none of its series."""
    old = _now_ms() - 10 * 60 * 1000  # ten minutes: Datadog keeps it, sample_age_limit not
    config = _config(intake := DatadogIntake(), queue_config={"sample_age_limit": "60s"})
    async with intake, relay_client(config) as (_, relay):
        _client(relay).max_uncompressed = 600  # a request of a few series
        intake.answer_next(202)
        intake.answer_next(503, times=1000)
        ack = Ack()
        ack.pending += 1
        waiting = encode_entry(_gauges(6, old, prefix="a"), Protocol.V1)._replace(ack=ack)
        scraped = encode_entry(_gauges(6, old, prefix="b"), Protocol.V1)
        relay.destinations["dd"].queue.put([[waiting, scraped]])
        await eventually(lambda: _dropped(relay, "sample_age_limit") > 0)
        forwarded = _forwarded(relay)
        given_up = _dropped(relay, "sample_age_limit")
        not_acknowledged = _dropped(relay, "not_acknowledged")
    held = [_tags(s)["series"] for s in intake.series]
    assert held and all(name.startswith("a") for name in held)  # the first request: a's only
    assert (forwarded, given_up, not_acknowledged) == (0, 6, 6)
    assert intake.problems == []


async def test_a_403_after_some_requests_of_a_batch_counts_those_as_forwarded() -> None:
    """A 403 ends the batch (the key would be refused for the rest alike), but what Datadog
    accepted of it before is forwarded, not dropped, and is not sent again."""
    now = _now_ms()
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, relay):
        _client(relay).max_uncompressed = 600  # several requests for the batch
        intake.answer_next(202, times=2)
        intake.answer_next(403, body='{"errors":["Forbidden"]}')
        await _post(client, _gauges(12, now))
        await eventually(lambda: _dropped(relay, "auth_failed") > 0)
        forwarded, auth_failed = _forwarded(relay), _dropped(relay, "auth_failed")
        await _post(client, _gauges(2, now, prefix="h"))
        await eventually(lambda: _forwarded(relay) == forwarded + 2)
    statuses = [r.status for r in intake.requests]
    assert statuses[:3] == [202, 202, 403] and statuses[3:] == [202] * (len(statuses) - 3)
    accepted = intake.requests[0].points + intake.requests[1].points
    assert 0 < accepted < 12
    assert forwarded == accepted
    assert auth_failed == 12 - accepted
    assert _dropped(relay, "http_403") == 0
    names = [_tags(s)["series"] for s in intake.series]
    assert len(names) == len(set(names)) == accepted + 2
    assert intake.problems == []


async def test_a_batch_given_up_at_sample_age_limit_counts_what_datadog_took_as_forwarded() -> None:
    """Retried past ``sample_age_limit`` after some of its requests were accepted: those
    count as forwarded, only the rest as dropped for its age."""
    now = _now_ms()
    async with DatadogIntake() as intake:
        config = _config(intake, queue_config={"sample_age_limit": "1s"})
        async with relay_client(config) as (client, relay):
            _client(relay).max_uncompressed = 600  # several requests for the batch
            intake.answer_next(202, times=2)
            intake.answer_next(503, times=1000)
            await _post(client, _gauges(12, now))
            await eventually(lambda: _dropped(relay, "sample_age_limit") > 0)
            forwarded, too_old = _forwarded(relay), _dropped(relay, "sample_age_limit")
    statuses = [r.status for r in intake.requests]
    # Retried until the batch, dated by its arrival, is older than the limit.
    assert statuses[:3] == [202, 202, 503] and set(statuses[3:]) <= {503}
    accepted = intake.requests[0].points + intake.requests[1].points
    assert 0 < accepted < 12
    assert (forwarded, too_old) == (accepted, 12 - accepted)


async def test_a_rotated_api_key_file_is_picked_up_without_a_reload(tmp_path: Path) -> None:
    key_file = tmp_path / "dd-api-key"
    key_file.write_text("old-key\n")
    now = _now_ms()
    async with DatadogIntake() as intake:
        config = _config(intake, api_key_file=str(key_file))
        async with relay_client(config) as (client, relay):
            await _post(client, _gauges(1, now))
            await eventually(lambda: _dropped(relay, "auth_failed") == 1)
            key_file.write_text("test-key\n")
            await _post(client, _gauges(1, now, prefix="h"))
            await eventually(lambda: len(intake.series) == 1)
    assert [r.status for r in intake.requests] == [403, 202]


async def test_an_api_key_from_an_environment_variable_ending_in_a_newline_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``api_key: ${DD_API_KEY}`` filled from a Secret made of a file keeps its newline, which
    no HTTP header may hold: stripped, as a key file is."""
    monkeypatch.setenv("DD_API_KEY", "test-key\n")
    now = _now_ms()
    async with DatadogIntake() as intake:
        config = _config(intake, api_key="${DD_API_KEY}")
        async with relay_client(yaml.safe_dump(config)) as (client, relay):
            await _post(client, _gauges(1, now))
            await eventually(lambda: len(intake.series) == 1)
            assert relay.problems() == []
    assert [r.status for r in intake.requests] == [202]


async def test_points_older_than_an_hour_are_skipped_and_counted() -> None:
    now = _now_ms()
    batch = Batch(
        (
            Series((("__name__", "old_gauge"),), (Sample(1.0, now - 2 * 3600 * 1000),)),
            Series((("__name__", "new_gauge"),), (Sample(2.0, now),)),
            Series((("__name__", "future_gauge"),), (Sample(3.0, now + 3600 * 1000),)),
        )
    )
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, relay):
        await _post(client, batch)
        await eventually(lambda: len(intake.series) == 1)
        skipped = dict(_client(relay).skipped)
    assert [s["metric"] for s in intake.series] == ["new_gauge"]
    assert skipped == {"too_old": 1, "too_new": 1}
    assert intake.out_of_window == []
    assert intake.problems == []


async def test_deflate_bodies_are_accepted() -> None:
    now = _now_ms()
    intake = DatadogIntake()
    async with intake, relay_client(_config(intake, compression="deflate")) as (client, _):
        await _post(client, _gauges(5, now))
        await eventually(lambda: len(intake.series) == 5)
    assert [r.encoding for r in intake.requests] == ["deflate"]
    assert intake.problems == []


async def test_the_intake_double_refuses_what_datadog_would() -> None:
    """The double's verdicts are what the other tests rely on: prove it is not lenient."""
    now = int(time.time())
    good = {"metric": "a.b", "type": 3, "points": [{"timestamp": now, "value": 1.0}]}
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        ("good", {}, gzip.compress(json.dumps({"series": [good]}).encode()), 202),
        ("wrong key", {"DD-API-KEY": "nope"}, gzip.compress(b'{"series":[]}'), 403),
        (
            "unknown key",  # the models accept it silently: the attribute_map check does not
            {},
            gzip.compress(json.dumps({"series": [{**good, "hostname": "x"}]}).encode()),
            400,
        ),
        (
            "null value",  # the models accept it silently too
            {},
            gzip.compress(
                json.dumps(
                    {"series": [{**good, "points": [{"timestamp": now, "value": None}]}]}
                ).encode()
            ),
            400,
        ),
        (
            "bad type",  # the models flag it _unparsed, without raising
            {},
            gzip.compress(json.dumps({"series": [{**good, "type": 7}]}).encode()),
            400,
        ),
        ("compressed too big", {}, secrets.token_bytes(MAX_COMPRESSED + 1), 413),
        ("uncompressed too big", {}, gzip.compress(b" " * (MAX_UNCOMPRESSED + 1)), 413),
    ]
    async with DatadogIntake() as intake, aiohttp.ClientSession() as session:
        for name, extra, body, expected in cases:
            headers = {
                "DD-API-KEY": "test-key",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                **extra,
            }
            async with session.post(intake.url, data=body, headers=headers) as response:
                assert response.status == expected, name
    assert len(intake.series) == 1
    assert len(intake.problems) >= 5


async def test_skipped_samples_are_exported_in_the_relay_metrics() -> None:
    """What Datadog cannot store is counted per reason in /metrics, not silently lost."""
    from tests.support.harness import metric_value

    intake = DatadogIntake()
    await intake.start()
    try:
        config = {
            "flux": {"mode": "off"},
            "datadog": [{"name": "dd", "url": intake.url, "api_key": "test-key"}],
        }
        old = int(time.time() * 1000) - 2 * 3600 * 1000
        batch = Batch((Series((("__name__", "g"),), (Sample(1.0, old),)),))
        async with relay_client(config) as (client, _):
            body, headers = rw_body(batch)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204

            async def skipped() -> float:
                text = await (await client.get("/metrics")).text()
                return metric_value(
                    text, "gotk_relay_samples_skipped_total", destination="dd", reason="too_old"
                )

            deadline = time.monotonic() + 10
            while await skipped() != 1.0:
                assert time.monotonic() < deadline, "too_old never counted"
                await asyncio.sleep(0.05)
    finally:
        await intake.close()


async def test_small_requests_in_quick_succession_are_sent_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A destination that gets a few series of each request (the usual Datadog fan-out) does
    not send one request per request received: after a take that is not a full request, the
    next waits out the linger, so what arrived meanwhile goes in one request. The first request
    after a quiet spell is not delayed. The linger is 1 s here (50 ms in a relay) so that "at
    once" and "after the linger" are told apart on any machine."""
    monkeypatch.setattr(relay_module, "LINGER", 1.0)
    now = _now_ms()
    async with DatadogIntake() as intake, relay_client(_config(intake)) as (client, _):
        writes = 40
        for i in range(writes):
            series = Series((("__name__", f"small_{i}"), ("job", "x")), (Sample(1.0, now),))
            await _post(client, Batch((series,)))
        await eventually(lambda: len(intake.series) >= writes)
        assert sorted(s["metric"] for s in intake.series) == sorted(
            f"small_{i}" for i in range(writes)
        )
        assert len(intake.requests) < writes / 2
        # After a quiet spell longer than the linger, a lone write goes out at once.
        await asyncio.sleep(1.2)
        sent = time.monotonic()
        await _post(
            client, Batch((Series((("__name__", "lone"), ("job", "x")), (Sample(1.0, now),)),))
        )
        await eventually(lambda: any(s["metric"] == "lone" for s in intake.series))
        assert intake.requests[-1].at - sent < 0.5
    assert intake.problems == []


def _jobs(value: float, ts: int) -> Batch:
    """A counter's sample and a gauge's: a request to the intake even for a first count."""
    return Batch(
        (
            Series((("__name__", "jobs_total"), ("job", "x")), (Sample(value, ts),)),
            Series((("__name__", "jobs_running"), ("job", "x")), (Sample(1.0, ts),)),
        )
    )


# Maps the next batch within the intake's 0.3 s answer.
@pytest.mark.alone
async def test_the_next_batch_is_mapped_while_a_request_waits_on_the_intake() -> None:
    """With the intake's round trip in the way, a shard's next batch is converted while its
    request is in flight (requests still go one at a time, in order): deltas go on from the
    state the batch before leaves, each computed once."""
    t0 = _now_ms() - 120_000
    config = _config(intake := DatadogIntake(), queue_config={"max_samples_per_send": 2})
    async with intake, relay_client(config) as (client, relay):
        intake.latency = 0.3
        await _post(client, _jobs(100.0, t0))  # the baseline holds the sender 0.3 s...
        await eventually(lambda: _client(relay)._plans != {})
        for i, value in enumerate([130.0, 135.0, 150.0], start=1):  # ...while these queue
            await _post(client, _jobs(value, t0 + i * 15_000))
        await eventually(lambda: len(intake.points("jobs_total")) == 3, timeout=10)
        adopted = _client(relay).adopted
    assert intake.problems == []
    assert [p[2] for p in intake.points("jobs_total")] == [30.0, 5.0, 15.0]
    assert adopted == 2  # the second and third, each while the one before was in flight


async def test_a_batch_mapped_ahead_is_mapped_again_when_the_one_before_is_dropped() -> None:
    """The batch after one of which Datadog refused a series (400) is mapped anew, although
    the rest of that batch was accepted: its delta then starts from the state Datadog has, so
    the dropped increase lands in it rather than being lost."""
    t0 = _now_ms() - 120_000
    config = _config(intake := DatadogIntake(), queue_config={"max_samples_per_send": 2})
    async with intake, relay_client(config) as (client, relay):
        intake.latency = 0.3
        # The second batch's counter point is refused (its request, then itself alone).
        intake.refuse = lambda s: s["metric"] == "jobs_total" and s["points"][0]["value"] == 30
        await _post(client, _jobs(100.0, t0))
        await eventually(lambda: _client(relay)._plans != {})
        await _post(client, _jobs(130.0, t0 + 15_000))
        await _post(client, _jobs(135.0, t0 + 30_000))
        await eventually(lambda: len(intake.points("jobs_total")) == 1, timeout=10)
        await eventually(lambda: len(intake.points("jobs_running")) == 3)
        adopted = _client(relay).adopted
        dropped = _dropped(relay, "http_400")
    assert [(r.status, r.series) for r in intake.requests] == [
        (202, 1),  # the baseline: the counter's first observation is not sent
        (400, 2),
        (400, 1),  # jobs_total alone: dropped
        (202, 1),  # jobs_running
        (202, 2),
    ]
    assert [p[2] for p in intake.points("jobs_total")] == [35.0]
    assert dropped == 1
    assert adopted == 0


async def test_counter_state_expires_while_every_batch_is_mapped_ahead() -> None:
    """Counter state not committed for an hour is forgotten at the next batch, also when each
    batch is the one mapped while the batch before it was in flight."""
    from gotk_relay.config import DatadogConfig
    from gotk_relay.delivery.entry import encode_entry
    from gotk_relay.delivery.retry import Outcome

    now = [time.time()]
    t0 = int(now[0] * 1000) - 60_000

    def entry(name: str, value: float, ts: int) -> Any:
        series = Series((("__name__", name), ("job", "x")), (Sample(value, ts),))
        gauge = Series((("__name__", "up"), ("job", "x")), (Sample(1.0, ts),))
        return encode_entry(Batch((series, gauge)), Protocol.V1)

    batches = [
        [entry("old_total", 1.0, t0)],
        [entry("a_total", 1.0, t0 + 1000)],
        [entry("b_total", 1.0, t0 + 2000)],
    ]
    async with DatadogIntake() as intake:
        client = DatadogClient(
            "dd", DatadogConfig(url=intake.url, api_key="test-key"), clock=lambda: now[0]
        )
        following = {id(b[0]): batches[i + 1] for i, b in enumerate(batches[:-1])}
        client.upcoming = lambda entries: following.get(id(entries[0]), [])
        try:
            assert (await client.send(batches[0])).outcome is Outcome.OK
            assert len(client.counters) == 1
            now[0] += 2 * 3600  # the first counter is now stale
            for batch in batches[1:]:
                assert (await client.send(batch)).outcome is Outcome.OK
        finally:
            await client.close()
    assert client.adopted == 2  # the second and third, each during the request before it
    assert len(client.counters) == 2  # old_total forgotten, a_total and b_total kept


async def test_a_batch_retried_past_the_intakes_window_is_dropped_as_too_old() -> None:
    """The age of points is judged when a batch is mapped; a batch retried for over an hour
    (an outage) would be answered 202 by Datadog and kept nowhere: it is dropped, counted
    as too_old, and not sent again."""
    from gotk_relay.config import DatadogConfig
    from gotk_relay.delivery.entry import encode_entry
    from gotk_relay.delivery.retry import Outcome

    now = [time.time()]
    ts = int(now[0] * 1000) - 30 * 60 * 1000
    entries = [encode_entry(_gauges(3, ts), Protocol.V1)]
    async with DatadogIntake() as intake:
        intake.answer_next(503)
        client = DatadogClient(
            "dd", DatadogConfig(url=intake.url, api_key="test-key"), clock=lambda: now[0]
        )
        try:
            first = await client.send(entries)
            assert (first.outcome, first.reason) == (Outcome.RETRY, "http_503")
            now[0] += 20 * 60  # points 50 minutes old: still within the window
            intake.answer_next(503)
            assert (await client.send(entries)).outcome is Outcome.RETRY
            now[0] += 45 * 60  # and now every point is over an hour old
            late = await client.send(entries)
            assert (late.outcome, late.reason) == (Outcome.DROP, "too_old")
        finally:
            await client.close()
    assert [r.status for r in intake.requests] == [503, 503]
    assert intake.series == []
