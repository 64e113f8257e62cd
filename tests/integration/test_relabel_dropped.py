"""Samples relabel rules drop are counted. A destination's ``write_relabel_configs``, as
Prometheus counts them (``prometheus_remote_storage_samples_dropped_total{reason="dropped_series"}``):
in ``gotk_relay_samples_dropped_total{destination,reason="dropped_series"}``, whichever way the
request went (its bytes routed, the Flux rules' output routed or planned as series, a request
decoded whole) and never for a destination that keeps everything. The global
``relabel_configs``, as vmagent counts its global rules' drops: in
``gotk_relay_relabel_dropped_samples_total``.
"""

from __future__ import annotations

import time

import pytest

from gotk_relay.model import Batch, Sample, Series, labels_from
from tests.support.datadog_intake import DatadogIntake
from tests.support.harness import (
    ScriptedReceiver,
    eventually,
    metric_value,
    receivers,
    relay_client,
    rw_body,
)
from tests.support.status_page import ksm

UP = labels_from({"__name__": "up", "job": "node", "instance": "a:9100"})
DROP = [
    {
        "source_labels": ["__name__"],
        "regex": "up|gotk_suspend_status",
        "action": "drop",
    }
]


def _dropped(metrics: str, destination: str) -> float:
    """What ``destination``'s write_relabel_configs dropped, as /metrics says."""
    return metric_value(
        metrics,
        "gotk_relay_samples_dropped_total",
        destination=destination,
        reason="dropped_series",
    )


def _request(round_: int, created: int, start: int = 1_700_000_000_000) -> Batch:
    """One scrape: the Flux object's info series and ``up`` with two samples."""
    ts = start + 15_000 * round_
    return Batch(
        (
            ksm("podinfo", "apps", ts=ts)._replace(created_timestamp=created),
            Series(UP, (Sample(1.0, ts - 1000), Sample(1.0, ts)), created_timestamp=created),
        )
    )


@pytest.mark.parametrize(
    ("v2", "created"),
    [(False, 0), (True, 0), (True, 1_600_000_000_000)],
    ids=["1.0", "2.0", "2.0-decoded-whole"],  # created timestamps: 1.0 cannot carry them
)
async def test_samples_the_destination_rules_drop_are_counted(v2: bool, created: int) -> None:
    plain, dropping, sharded = ScriptedReceiver(), ScriptedReceiver(), ScriptedReceiver()
    config = {
        "remote_write": [
            {"name": "plain", "url": plain.url},
            {"name": "drop", "url": dropping.url, "write_relabel_configs": DROP},
            {
                "name": "sharded",
                "url": sharded.url,
                "write_relabel_configs": DROP,
                "queue_config": {"min_shards": 2, "max_shards": 2},
            },
        ]
    }
    rounds = 3
    async with receivers(plain, dropping, sharded), relay_client(config) as (client, _):
        # Round 0 meets the object (the Flux rules' output planned as series), the later ones
        # are steady scrapes (their output routed on its bytes).
        for round_ in range(rounds):
            body, headers = rw_body(_request(round_, created), v2=v2)
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204, await response.text()

        def delivered(receiver: ScriptedReceiver) -> set[str]:
            return {s.name for b in receiver.delivered() for s in b.series}

        await eventually(
            lambda: all(
                sum(b.sample_count for b in r.delivered()) == want
                # each round: info 1, up 2, the four Flux outputs
                for r, want in ((plain, 7 * rounds), (dropping, 4 * rounds), (sharded, 4 * rounds))
            )
        )
        metrics = await (await client.get("/metrics")).text()
    assert "up" in delivered(plain) and "gotk_suspend_status" in delivered(plain)
    for receiver in (dropping, sharded):
        assert not {"up", "gotk_suspend_status"} & delivered(receiver)

    # Per round: the two samples of ``up`` and the object's gotk_suspend_status.
    assert [_dropped(metrics, d) for d in ("plain", "drop", "sharded")] == [
        0,
        3 * rounds,
        3 * rounds,
    ]


@pytest.mark.parametrize(
    ("v2", "created"),
    [(False, 0), (True, 1_600_000_000_000)],
    ids=["1.0", "2.0-decoded-whole"],
)
async def test_samples_the_global_rules_drop_are_counted(v2: bool, created: int) -> None:
    receiver = ScriptedReceiver()
    config = {
        "relabel_configs": [{"source_labels": ["__name__"], "regex": "up", "action": "drop"}],
        "remote_write": [{"name": "only", "url": receiver.url}],
    }
    rounds = 3
    async with receivers(receiver), relay_client(config) as (client, _):
        for round_ in range(rounds):
            body, headers = rw_body(_request(round_, created), v2=v2)
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204, await response.text()
        # each round: the info series and the four Flux outputs
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 5 * rounds)
        metrics = await (await client.get("/metrics")).text()
    assert "up" not in {s.name for b in receiver.delivered() for s in b.series}
    assert metric_value(metrics, "gotk_relay_relabel_dropped_samples_total") == 2 * rounds
    assert metric_value(metrics, "gotk_relay_samples_dropped_total", reason="dropped_series") == 0


async def test_a_datadog_destination_keeping_the_flux_series_counts_the_rest() -> None:
    """The usual fan-out: every series to ``remote_write``, only ``gotk_.*`` to Datadog; what
    the Datadog destination's rules leave out is counted for it, nothing for the other."""
    receiver = ScriptedReceiver()
    keep = [{"source_labels": ["__name__"], "regex": "gotk_.*", "action": "keep"}]
    rounds = 3
    start = int(time.time() * 1000) - 60_000  # Datadog takes points of the last hour only
    async with DatadogIntake() as intake, receivers(receiver):
        config = {
            "remote_write": [{"name": "all", "url": receiver.url}],
            "datadog": [
                {
                    "name": "dd",
                    "url": intake.url,
                    "api_key": "test-key",
                    "write_relabel_configs": keep,
                    "queue_config": {"min_backoff": "10ms"},
                }
            ],
        }
        async with relay_client(config) as (client, _):
            for round_ in range(rounds):
                body, headers = rw_body(_request(round_, 0, start))
                response = await client.post("/api/v1/write", data=body, headers=headers)
                assert response.status == 204, await response.text()
            await eventually(
                lambda: (
                    len(intake.points("gotk_resource_info")) == rounds
                    and sum(b.sample_count for b in receiver.delivered()) == 7 * rounds
                )
            )
            metrics = await (await client.get("/metrics")).text()
    assert intake.problems == []
    assert not intake.points("up")

    assert [_dropped(metrics, d) for d in ("all", "dd")] == [0, 2 * rounds]  # ``up``'s two
