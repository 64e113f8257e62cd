"""The pass-through path: bytes in, the same bytes out (unsorted label sets sorted), every
request checked strictly by default, framing only with ``receiver.validation: framing``."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.model import STALE_NAN, Batch, Sample, Series, is_stale, labels_from
from gotk_relay.relay import Relay
from gotk_relay.wire import remote_pb2, rw1, rw1_bytes, snappy
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    receivers,
    relay_client,
    rw_body,
)

KSM = labels_from(
    {
        "__name__": "gotk_resource_info",
        "customresource_group": "kustomize.toolkit.fluxcd.io",
        "customresource_kind": "Kustomization",
        "customresource_version": "v1",
        "exported_namespace": "flux-system",
        "name": "apps",
        "ready": "True",
    }
)


def _config(url: str, validation: str = "full", **flux: object) -> dict[str, object]:
    return {
        "receiver": {"validation": validation},
        "flux": {"mode": "legacy", **flux},
        "remote_write": [{"name": "d", "url": url, "queue_config": {"min_backoff": "10ms"}}],
    }


def _forwarded(relay: Relay) -> float:
    return (
        relay.telemetry.registry.get_sample_value(
            "gotk_relay_samples_forwarded_total", {"destination": "d"}
        )
        or 0.0
    )


async def test_a_request_no_rule_can_change_arrives_byte_for_byte() -> None:
    receiver = ScriptedReceiver()
    batch = gauge_batch([f"node_metric_{i}" for i in range(50)], 1000, job="node")
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        body, headers = rw_body(batch)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        await eventually(lambda: _forwarded(relay) == 50)
    assert receiver.requests[0].raw == rw1.encode(batch)


async def test_with_keep_source_the_request_arrives_as_sent_then_the_synthesized_series() -> None:
    receiver = ScriptedReceiver()
    others = gauge_batch([f"node_metric_{i}" for i in range(20)], 1000, job="node")
    batch = Batch((*others.series[:10], Series(KSM, (Sample(1.0, 1000),)), *others.series[10:]))
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        body, headers = rw_body(batch)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 21 + 4)
        await eventually(lambda: _forwarded(relay) == 25)
    # The request went out as the bytes that came (the KSM series too), then the new series.
    sent = b"".join(r.raw for r in receiver.requests)
    assert sent.startswith(rw1.encode(batch))
    assert rw1.decode(sent[len(rw1.encode(batch)) :]).series[0].name == "gotk_reconcile_condition"
    names = [s.name for b in receiver.delivered() for s in b.series]
    assert names.count("gotk_reconcile_condition") == 3 and names.count("gotk_suspend_status") == 1


async def test_without_keep_source_the_other_series_arrive_as_sent_and_the_source_is_gone() -> None:
    receiver = ScriptedReceiver()
    others = gauge_batch([f"node_metric_{i}" for i in range(20)], 1000, job="node")
    batch = Batch((*others.series[:10], Series(KSM, (Sample(1.0, 1000),)), *others.series[10:]))
    config = _config(receiver.url, keep_source=False)
    async with receivers(receiver), relay_client(config) as (client, relay):
        body, headers = rw_body(batch)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 20 + 4)
        await eventually(lambda: _forwarded(relay) == 24)
    # The untouched series went out as the bytes that came, in their order.
    assert rw1.encode(others) in b"".join(r.raw for r in receiver.requests)
    names = [s.name for b in receiver.delivered() for s in b.series]
    assert "gotk_resource_info" not in names
    assert names.count("gotk_reconcile_condition") == 3 and names.count("gotk_suspend_status") == 1


async def test_a_request_holding_only_flux_series_is_fully_decoded() -> None:
    receiver = ScriptedReceiver()
    batch = Batch(
        (
            Series(KSM, (Sample(1.0, 1000),)),
            *gauge_batch(["gotk_reconcile_duration_seconds_count"], 1000).series,
        )
    )
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        body, headers = rw_body(batch)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 2 + 4)
        # Both are gotk_* series the federate store keeps, so both were decoded.
        assert relay.federate is not None and len(relay.federate) == 2 + 4
    names = {s.name for b in receiver.delivered() for s in b.series}
    assert names == {
        "gotk_resource_info",
        "gotk_reconcile_duration_seconds_count",
        "gotk_reconcile_condition",
        "gotk_suspend_status",
    }


async def test_a_request_the_destination_refuses_is_dropped_and_counted() -> None:
    """Framing is checked at the edge (400); a request the destination still refuses with 400
    is dropped and counted instead of retried. (Label sets: see test_strict_corpus.)"""
    receiver = ScriptedReceiver(script=[Reply(400, body="bad data")])
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
        broken = snappy.compress(b"\x0a\x05\x0a\x03")
        assert (await client.post("/api/v1/write", data=broken, headers=headers)).status == 400
        body, _ = rw_body(gauge_batch(["up"], 1))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        labels = {"destination": "d", "reason": "http_400"}
        await eventually(
            lambda: (
                relay.telemetry.registry.get_sample_value(
                    "gotk_relay_samples_dropped_total", labels
                )
                == 1
            )
        )
        assert [r.status for r in receiver.requests] == [400]


def _unsorted_request() -> bytes:
    request = remote_pb2.WriteRequest()
    ts = request.timeseries.add()
    ts.labels.add(name="job", value="a")
    ts.labels.add(name="__name__", value="up")
    ts.samples.add(value=1, timestamp=1)
    return bytes(request.SerializeToString())


HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


async def test_label_sets_are_not_judged_with_validation_framing() -> None:
    """The documented opt-out: framing is checked, label order is left to the destination.
    It needs the compiled scanner; without it the check is the strict one (README)."""
    receiver = ScriptedReceiver()
    config = _config(receiver.url, validation="framing")
    async with receivers(receiver), relay_client(config) as (client, relay):
        broken = snappy.compress(b"\x0a\x05\x0a\x03")
        assert (await client.post("/api/v1/write", data=broken, headers=HEADERS)).status == 400
        body = snappy.compress(_unsorted_request())
        assert (await client.post("/api/v1/write", data=body, headers=HEADERS)).status == 204
        await eventually(lambda: len(receiver.requests) == 1)
    sorted_series = relay.telemetry.registry.get_sample_value("gotk_relay_sorted_series_total")
    if rw1_bytes.NATIVE:
        # Forwarded as the bytes that came: the destination, not the relay, judges the order.
        assert receiver.requests[0].raw == _unsorted_request()
        assert sorted_series == 0
    else:
        (series,) = receiver.delivered()[0].series
        assert [name for name, _ in series.labels] == ["__name__", "job"]
        assert sorted_series == 1


async def test_by_default_unsorted_label_sets_are_forwarded_sorted_and_counted() -> None:
    """Issue 16 item 3: not refused, sorted on the way, so the destination takes them."""
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        body = snappy.compress(_unsorted_request())
        assert (await client.post("/api/v1/write", data=body, headers=HEADERS)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        value = relay.telemetry.registry.get_sample_value("gotk_relay_sorted_series_total")
        assert value == 1
    assert [r.status for r in receiver.requests] == [204]
    (series,) = receiver.delivered()[0].series
    assert [name for name, _ in series.labels] == ["__name__", "job"]


async def test_by_default_an_invalid_series_refuses_its_request_and_nothing_is_queued() -> None:
    """Issue 16 items 1 and 2: ``{__name__="x",a="1",a="2"}`` is a 400 naming the problem; the
    valid series of the same request are not forwarded either, later requests are."""
    request = remote_pb2.WriteRequest()
    good = request.timeseries.add()
    good.labels.add(name="__name__", value="up")
    good.samples.add(value=1, timestamp=1)
    bad = request.timeseries.add()
    bad.labels.add(name="__name__", value="x")
    bad.labels.add(name="a", value="1")
    bad.labels.add(name="a", value="2")
    bad.samples.add(value=1, timestamp=1)
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        body = snappy.compress(request.SerializeToString())
        response = await client.post("/api/v1/write", data=body, headers=HEADERS)
        assert response.status == 400
        assert "duplicate" in (await response.text()).lower()
        plain, headers = rw_body(gauge_batch(["after"], 1000))
        assert (await client.post("/api/v1/write", data=plain, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1)
        assert _forwarded(relay) == 1
    assert [s.name for b in receiver.delivered() for s in b.series] == ["after"]


@pytest.mark.slow  # waits for the Flux end's delay
async def test_a_pending_flux_end_is_written_while_only_other_series_flow() -> None:
    receiver = ScriptedReceiver()
    async with (
        receivers(receiver),
        relay_client(_config(receiver.url, stale_grace="1s")) as (client, _),
    ):
        for batch in (
            Batch((Series(KSM, (Sample(1.0, 1000),)),)),
            Batch((Series(KSM, (Sample(STALE_NAN, 2000),)),)),
        ):
            body, headers = rw_body(batch)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await asyncio.sleep(1.1)  # the grace is measured on the relay's wall clock
        body, headers = rw_body(gauge_batch(["up"], 3000))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204

        def ended() -> bool:
            legacy = [
                s for b in receiver.delivered() for s in b.series if s.name == "gotk_suspend_status"
            ]
            return any(is_stale(x.value) for s in legacy for x in s.samples)

        await eventually(ended)


@pytest.mark.slow  # waits for the Flux end's delay
async def test_a_pending_flux_end_is_written_when_no_request_comes() -> None:
    """The last request before a quiet spell brought a deletion: the end falls due on the
    relay's clock alone (a lone kube-state-metrics target sends nothing between scrapes)."""
    receiver = ScriptedReceiver()
    async with (
        receivers(receiver),
        relay_client(_config(receiver.url, stale_grace="1s")) as (client, relay),
    ):
        for batch in (
            Batch((Series(KSM, (Sample(1.0, 1000),)),)),
            Batch((Series(KSM, (Sample(STALE_NAN, 2000),)),)),
        ):
            body, headers = rw_body(batch)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204

        def ended() -> list[str]:
            return [
                s.name
                for b in receiver.delivered()
                for s in b.series
                if s.name != "gotk_resource_info" and any(is_stale(x.value) for x in s.samples)
            ]

        await eventually(lambda: len(ended()) == 4, timeout=5)
        assert sorted(ended()) == ["gotk_reconcile_condition"] * 3 + ["gotk_suspend_status"]
        assert relay.problems() == []


async def test_each_request_is_counted_by_the_scanner_that_read_it() -> None:
    """``gotk_relay_scanned_requests_total{scanner}``: what Prometheus writes and a label with
    its value before its name (valid protobuf, but not what Prometheus writes) are both read by
    the compiled survey (by the Python reference without it) and forwarded alike."""
    odd = remote_pb2.WriteRequest()
    series = odd.timeseries.add()
    series.samples.add(value=1, timestamp=1)
    body_odd = bytes(odd.SerializeToString())
    # a Label written value first: 0a 0e | 12 02 "up" 0a 08 "__name__"
    label = b"\x12\x02up\x0a\x08__name__"
    body_odd = bytes(body_odd[:1]) + bytes([body_odd[1] + 2 + len(label)])
    body_odd += b"\x0a" + bytes([len(label)]) + label + odd.timeseries[0].SerializeToString()
    assert remote_pb2.WriteRequest.FromString(body_odd).timeseries[0].labels[0].name == "__name__"
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, relay):
        plain, headers = rw_body(gauge_batch(["up"], 1000, job="node"))
        assert (await client.post("/api/v1/write", data=plain, headers=headers)).status == 204
        odd_body = snappy.compress(body_odd)
        assert (await client.post("/api/v1/write", data=odd_body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 2)

        def scanned(scanner: str) -> float | None:
            return relay.telemetry.registry.get_sample_value(
                "gotk_relay_scanned_requests_total", {"scanner": scanner}
            )

        if rw1_bytes.NATIVE:
            assert (scanned("c"), scanned("python")) == (2, 0)
        else:
            assert (scanned("c"), scanned("python")) == (0, 2)


@pytest.mark.parametrize("v2", [False, True], ids=["rw1-fast-path", "rw2-decoded-path"])
async def test_the_flux_operators_report_is_a_source_of_the_legacy_series(v2: bool) -> None:
    receiver = ScriptedReceiver()
    operator = labels_from(
        {
            "__name__": "flux_resource_info",
            "kind": "Kustomization",
            "exported_namespace": "apps",
            "name": "podinfo",
            "ready": "False",
            "suspended": "True",
            "reason": "BuildFailed",
            "uid": "6f0e",
        }
    )
    batch = Batch((Series(operator, (Sample(1.0, 1000),)),))
    async with receivers(receiver), relay_client(_config(receiver.url)) as (client, _):
        body, headers = rw_body(batch, v2=v2)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 1 + 4)
    got = {
        (s.name, dict(s.labels).get("status", "")): s.samples[-1].value
        for b in receiver.delivered()
        for s in b.series
        if s.name != "flux_resource_info"
    }
    assert got == {
        ("gotk_reconcile_condition", "True"): 0.0,
        ("gotk_reconcile_condition", "False"): 1.0,
        ("gotk_reconcile_condition", "Unknown"): 0.0,
        ("gotk_suspend_status", ""): 1.0,
    }
    outputs = [s for b in receiver.delivered() for s in b.series if s.name != "flux_resource_info"]
    assert {dict(s.labels)["exported_namespace"] for s in outputs} == {"apps"}
    assert not any("reason" in dict(s.labels) or "uid" in dict(s.labels) for s in outputs)


async def test_a_reload_that_changes_the_flux_rules_without_a_spool_says_their_state_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """New rules start with no per-object state when there is no spool to restore it from: as
    after a restart, an object deleted before its next scrape gets no stale markers. The
    reload says so; one that leaves ``flux:`` as it is keeps the rules and says nothing."""
    async with receivers(ScriptedReceiver()) as (receiver,):
        config = _config(receiver.url)
        async with relay_client(config) as (client, relay):
            body, headers = rw_body(Batch((Series(KSM, (Sample(1.0, 1_000),)),)))
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
            rules = relay.pipeline.flux
            assert rules.stats.objects_tracked == 1
            with caplog.at_level("WARNING"):
                relay.reload(relay.config.model_copy())
                assert relay.pipeline.flux is rules
                assert not [r for r in caplog.records if "flux" in r.getMessage()]
                changed = _config(receiver.url, idle_expiry="2h")
                relay.reload(load_text(yaml.safe_dump(changed), "<test>"))
            assert relay.pipeline.flux is not rules
            assert relay.pipeline.flux.stats.objects_tracked == 0
            said = [r for r in caplog.records if "start with no per-object state" in r.getMessage()]
            assert len(said) == 1 and said[0].objects == 1  # type: ignore[attr-defined]
