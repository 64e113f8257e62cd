"""A running relay shows its bounded caches on /metrics: what each kind holds and may hold."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import (
    ScriptedReceiver,
    eventually,
    gauge_batch,
    metric_value,
    receivers,
    relay_client,
    rw_body,
)

CACHES = (
    "rw1_labels",
    "rw1_label_fields",
    "picked_labels",
    "picked_label_bytes",
    "relabel",
    "selectors",
)
GAUGES = ("gotk_relay_cache_entries", "gotk_relay_cache_limit")


async def test_metrics_show_every_cache_family_and_the_memos_a_write_filled() -> None:
    receiver = ScriptedReceiver()
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {
                "name": "d",
                "url": receiver.url,
                "write_relabel_configs": [
                    # Not literals (those are compared in _route.c, no memo asked)
                    {"source_labels": ["job"], "regex": "drop.+", "action": "drop"}
                ],
            }
        ],
    }
    async with receivers(receiver), relay_client(config) as (client, _):
        body, headers = rw_body(gauge_batch(["up", "down"], 1000, job="kept"))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        await eventually(lambda: len(receiver.delivered()) == 1, timeout=5.0)
        metrics = await (await client.get("/metrics")).text()
    shown = {
        (sample.name, sample.labels["cache"])
        for family in text_string_to_metric_families(metrics)
        if family.name.startswith("gotk_relay_cache_")
        for sample in family.samples
    }
    assert shown >= {(metric, name) for metric in GAUGES for name in CACHES}
    for name in CACHES:
        entries = metric_value(metrics, "gotk_relay_cache_entries", cache=name)
        assert 0 <= entries <= metric_value(metrics, "gotk_relay_cache_limit", cache=name), name
    # The destination's rule asked its memo about job="kept": at least that answer is held.
    assert metric_value(metrics, "gotk_relay_cache_entries", cache="relabel") >= 1
    assert metric_value(metrics, "gotk_relay_cache_limit", cache="relabel") >= 4096
