"""Rule order through the running relay: relabel_configs → Flux rules → write_relabel_configs."""

from __future__ import annotations

from gotk_relay.model import (
    Batch,
    FamilyMetadata,
    Metadata,
    MetricType,
    Sample,
    Series,
    labels_from,
)
from gotk_relay.wire import rw2
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    receivers,
    relay_client,
    rw_body,
)

KSM = labels_from(
    {
        "__name__": "gotk_resource_info",
        "customresource_group": "helm.toolkit.fluxcd.io",
        "customresource_kind": "HelmRelease",
        "customresource_version": "v2",
        "exported_namespace": "apps",
        "name": "podinfo",
        "ready": "False",
        "job": "kube-state-metrics",
    }
)


async def test_global_rules_feed_the_flux_rules_and_destination_rules_see_their_output() -> None:
    everything = ScriptedReceiver()
    written = {
        f"X-Prometheus-Remote-Write-{k}-Written": "0"
        for k in ("Samples", "Histograms", "Exemplars")
    }
    legacy_only = ScriptedReceiver(default=Reply(204, written))  # speaks v2
    config = {
        "relabel_configs": [{"target_label": "cluster", "replacement": "prod-eu1"}],
        "remote_write": [
            {"name": "all", "url": everything.url},
            {
                "name": "legacy",
                "url": legacy_only.url,
                "protobuf_message": "io.prometheus.write.v2.Request",
                "write_relabel_configs": [
                    {
                        "source_labels": ["__name__"],
                        "regex": "gotk_reconcile_condition|gotk_suspend_status",
                        "action": "keep",
                    },
                    {"action": "labeldrop", "regex": "job"},
                ],
            },
        ],
    }
    batch = Batch(
        (
            Series(KSM, (Sample(1.0, 1000),)),
            Series(labels_from({"__name__": "up", "job": "x"}), (Sample(1.0, 1000),)),
        )
    )
    async with receivers(everything, legacy_only), relay_client(config) as (client, _):
        body, headers = rw_body(batch)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: bool(everything.delivered()) and bool(legacy_only.delivered()))
    got_all = {s.name for b in everything.delivered() for s in b.series}
    assert got_all == {
        "gotk_resource_info",
        "up",
        "gotk_reconcile_condition",
        "gotk_suspend_status",
    }
    assert all(
        dict(s.labels)["cluster"] == "prod-eu1" for b in everything.delivered() for s in b.series
    )

    legacy = [s for b in legacy_only.delivered() for s in b.series]
    assert {s.name for s in legacy} == {"gotk_reconcile_condition", "gotk_suspend_status"}
    assert {
        dict(s.labels)["status"]: s.samples[0].value
        for s in legacy
        if s.name == "gotk_reconcile_condition"
    } == {
        "True": 0.0,
        "False": 1.0,
        "Unknown": 0.0,
    }
    assert all(
        "job" not in dict(s.labels) and dict(s.labels)["cluster"] == "prod-eu1" for s in legacy
    )
    # A v2 destination gets the legacy TYPE/HELP on each synthesized series.
    assert legacy_only.requests[0].headers["Content-Type"] == rw2.CONTENT_TYPE
    meta = {s.name: s.metadata for s in legacy}
    assert meta["gotk_reconcile_condition"] is not None
    assert meta["gotk_reconcile_condition"].type == MetricType.GAUGE
    assert (
        meta["gotk_reconcile_condition"].help
        == "The current condition status of a GitOps Toolkit resource reconciliation."
    )


async def test_a_2_0_senders_metadata_reaches_1_0_destinations() -> None:
    """Remote write 2.0 carries metadata on each series, 1.0 as family entries: a 1.0
    destination gets each family's entry (a histogram's under the family's name), and the
    Datadog and OTLP conversions, which read 1.0, get the types."""
    receiver = ScriptedReceiver()
    config = {"flux": {"mode": "off"}, "remote_write": [{"name": "v1", "url": receiver.url}]}
    counter = Metadata(MetricType.COUNTER, "Requests served.", "")
    histogram = Metadata(MetricType.HISTOGRAM, "Request latency.", "seconds")
    batch = Batch(
        (
            Series(
                labels_from({"__name__": "http_requests_total", "code": "200"}),
                (Sample(5.0, 1000),),
                metadata=counter,
            ),
            Series(
                labels_from({"__name__": "latency_bucket", "le": "1"}),
                (Sample(2.0, 1000),),
                metadata=histogram,
            ),
            Series(
                labels_from({"__name__": "latency_count"}), (Sample(2.0, 1000),), metadata=histogram
            ),
        )
    )
    async with receivers(receiver), relay_client(config) as (client, _):
        body, headers = rw_body(batch, v2=True)
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1, timeout=5.0)
    (delivered,) = receiver.delivered()
    assert set(delivered.metadata) == {
        FamilyMetadata("http_requests_total", MetricType.COUNTER, "Requests served.", ""),
        FamilyMetadata("latency", MetricType.HISTOGRAM, "Request latency.", "seconds"),
    }
