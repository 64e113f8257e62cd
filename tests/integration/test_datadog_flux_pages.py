"""The relay's Flux pages against the real thing: Datadog's OpenMetrics V2 check, as the Flux check.

The Datadog Agent's Flux check scrapes ``openmetrics_endpoint`` (a Flux ≤ 2.1 controller's own
``/metrics``) with its metric map, and ``kube_state_metrics_endpoint`` with a second scraper that
copies the instance's settings and maps ``gotk_resource_info``; its scrapers are kept by URL.
``FluxCheck`` below is ``OpenMetricsBaseCheckV2`` from ``datadog-checks-base`` configured that
way (namespace ``fluxcd``, the check's maps from test_datadog_flux_check.py).

The same check runs against a loopback server serving what a Flux 2.1 controller and
kube-state-metrics expose for the same objects, and against a relay that got those objects as a
Prometheus remote-writes them (kube-state-metrics' ``gotk_resource_info`` from two replicas, with
the scrape's target labels) and serves them at ``/flux/controller/metrics`` and
``/flux/kube-state-metrics/metrics``: the aggregator stubs must hold the same object rows
(names, values, tag sets; the ``endpoint`` tag, the scraped URL, aside), one per object.

Also here: why the check needs two URLs, the pages' ``match[]`` for two clusters through one
relay, and that the pages take ``/federate``'s store, credentials and bounds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from datadog_checks.base import OpenMetricsBaseCheckV2 as _Check
from datadog_checks.base.stubs import aggregator as _aggregator

from gotk_relay.model import Batch, Sample, Series
from gotk_relay.server import FEDERATE_THREAD, FEDERATING
from tests.integration.test_datadog_flux_check import (
    CHECK_KSM_MAP,
    CHECK_METRIC_MAP,
    KSM_TARGET,
    OBJECTS,
    REGION,
    _ksm_labels,
    _stored,
    controller_text,
    ksm_text,
    relay_batch,
    targets,
)
from tests.support.harness import relay_client, rw_body

# datadog-checks-base is partly annotated; its check and stub are used as untyped objects.
OpenMetricsBaseCheckV2: Any = _Check
aggregator: Any = _aggregator
OBJECT_METRICS = (
    "fluxcd.gotk.reconcile.condition",
    "fluxcd.gotk.suspend.status",
    "fluxcd.gotk.resource.info",
)
CONTROLLER_PATH = "/flux/controller/metrics"
KSM_PATH = "/flux/kube-state-metrics/metrics"


class FluxCheck(OpenMetricsBaseCheckV2):  # type: ignore[misc]
    """The Flux check's scrapers: ``openmetrics_endpoint`` with the instance's metric map and,
    with ``kube_state_metrics_endpoint``, a second scraper with the instance's other settings
    and the KSM map, both kept by URL (the same URL twice keeps the second only)."""

    def configure_scrapers(self) -> None:
        super().configure_scrapers()
        ksm = self.instance.get("kube_state_metrics_endpoint")
        if ksm:
            config = {**self.instance, "openmetrics_endpoint": ksm, "metrics": [CHECK_KSM_MAP]}
            self.scrapers[ksm] = self.create_scraper(config)


Row = tuple[str, frozenset[str]]


def run_flux_check(controller_url: str, ksm_url: str) -> dict[Row, float]:
    """One run of the check as the Flux check is configured: (metric, tags) → value of the
    object metrics it submitted; a row submitted twice fails (one row per object)."""
    aggregator.reset()
    instance = {
        "namespace": "fluxcd",
        "openmetrics_endpoint": controller_url,
        "kube_state_metrics_endpoint": ksm_url,
        "metrics": [CHECK_METRIC_MAP],
        "tags": [f"region:{REGION}"],
    }
    check = FluxCheck("fluxcd", {}, [instance])
    assert check.run() == ""  # "" is success; else the error as JSON
    rows: dict[Row, float] = {}
    for name in OBJECT_METRICS:
        for stub in aggregator.metrics(name):
            tags = frozenset(t for t in stub.tags if not t.startswith("endpoint:"))
            assert (name, tags) not in rows, (name, sorted(tags))
            rows[(name, tags)] = stub.value
    aggregator.reset()
    return rows


def second_replica(ts: int) -> Batch:
    """The same objects from a second kube-state-metrics replica (another instance and pod)."""
    target = {**KSM_TARGET, "instance": "10.244.0.10:8080", "pod": "kube-state-metrics-7d9f-fghij"}
    return Batch(
        tuple(
            Series(
                tuple(
                    sorted({"__name__": "gotk_resource_info", **_stored(labels, target)}.items())
                ),
                (Sample(1.0, ts),),
            )
            for labels in map(_ksm_labels, OBJECTS)
        )
    )


@pytest.mark.parametrize("label_shape", ["stored", "raw"], ids=["stored-shape", "raw-shape"])
async def test_the_flux_check_reads_the_relays_pages_as_a_controllers_and_ksms(
    label_shape: str,
) -> None:
    with targets({"/metrics": controller_text(1), "/ksm": ksm_text()}) as base:
        expected = await asyncio.to_thread(run_flux_check, f"{base}/metrics", f"{base}/ksm")
    assert {name for name, _ in expected} == set(OBJECT_METRICS)  # the check read them all
    assert len([r for r in expected if r[0] == "fluxcd.gotk.suspend.status"]) == len(OBJECTS)

    config = {"flux": {"mode": "legacy", "label_shape": label_shape}}
    async with relay_client(config) as (client, _):
        ts = int(time.time() * 1000)
        for batch in (relay_batch(1, ts), second_replica(ts)):
            body, headers = rw_body(batch)
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204, await response.text()
        controller_url = str(client.make_url(CONTROLLER_PATH))
        ksm_url = str(client.make_url(KSM_PATH))
        got = await asyncio.to_thread(run_flux_check, controller_url, ksm_url)
        pages = [await (await client.get(path)).text() for path in (CONTROLLER_PATH, KSM_PATH)]
    assert got == expected
    # The check's parser drops a repeated line silently; Prometheus and promtool refuse a page
    # with one. Two replicas, yet each object's lines once: 3 conditions + suspend, 1 info.
    for page, per_object in zip(pages, (4, 1), strict=True):
        lines = [line for line in page.splitlines() if not line.startswith("#")]
        assert len(lines) == len(set(lines)) == per_object * len(OBJECTS), page
    # The dashboard's rows (by kind, namespace, name): apps/podinfo (False) apart from
    # staging/podinfo (True), and the $namespace filter matches the object's namespace.
    ready = {
        tuple(sorted(t for t in tags if t.split(":")[0] in ("kind", "namespace", "name")))
        for (name, tags), value in got.items()
        if name == "fluxcd.gotk.reconcile.condition" and value == 1.0
    }
    assert ("kind:HelmRelease", "name:podinfo", "namespace:apps") in ready
    assert ("kind:HelmRelease", "name:podinfo", "namespace:staging") in ready
    assert len(ready) == len(OBJECTS)


async def test_one_url_for_both_endpoints_loses_the_controller_families() -> None:
    """Why the docs give two URLs: the check keeps its scrapers by URL, so the KSM scraper
    replaces the controller one and fluxcd.gotk.reconcile.condition is never submitted."""
    async with relay_client({"flux": {"mode": "legacy"}}) as (client, _):
        body, headers = rw_body(relay_batch(1, int(time.time() * 1000)))
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        url = str(client.make_url(CONTROLLER_PATH))
        got = await asyncio.to_thread(run_flux_check, url, url)
    assert not any(name == "fluxcd.gotk.reconcile.condition" for name, _ in got)


@pytest.mark.parametrize("path", [CONTROLLER_PATH, KSM_PATH], ids=["controller", "ksm"])
async def test_the_pages_need_the_federate_store(path: str) -> None:
    async with relay_client({"federate": {"enabled": False}}) as (client, _):
        response = await client.get(path)
        assert response.status == 404
        assert "federate.enabled" in await response.text()


@pytest.mark.parametrize("path", [CONTROLLER_PATH, KSM_PATH], ids=["controller", "ksm"])
async def test_the_pages_take_federates_credentials(path: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = {"receiver": {"auth": {"bearer_token_file": str(token)}}}
    async with relay_client(config) as (client, _):
        assert (await client.get(path)).status == 401
        response = await client.get(path, headers={"Authorization": "Bearer s3cret"})
        assert response.status == 200, await response.text()


@pytest.mark.parametrize("path", [CONTROLLER_PATH, KSM_PATH], ids=["controller", "ksm"])
async def test_the_pages_share_federates_concurrency_and_time_bounds(path: str) -> None:
    config = {"federate": {"max_concurrent_requests": 1, "timeout": "300ms"}}
    async with relay_client(config) as (client, _):
        # Keep the render thread busy, so the first request waits for it, holding its slot.
        release = threading.Event()
        executor = client.app[FEDERATE_THREAD].get()
        blocker = asyncio.get_running_loop().run_in_executor(executor, release.wait, 10)
        try:
            first = asyncio.create_task(client.get(path))
            gate = client.app[FEDERATING]
            async with asyncio.timeout(5):
                while gate.active < 1:  # it took the slot
                    await asyncio.sleep(0.01)
            for other in ("/federate", CONTROLLER_PATH, KSM_PATH):  # one count for all of them
                second = await client.get(other)
                assert second.status == 503
                assert "federate.max_concurrent_requests" in await second.text()
            answer = await first
            assert answer.status == 503
            assert f"{path} took longer than 0.3s (federate.timeout)" in await answer.text()
        finally:
            release.set()
            await blocker
        async with asyncio.timeout(5):  # the abandoned render ends, and frees the slot
            while (answer := await client.get(path)).status != 200:
                await asyncio.sleep(0.01)


def cluster_batch(cluster: str, ready: str, ts: int) -> Batch:
    """kube-state-metrics' gotk_resource_info for apps/podinfo, from one cluster's Prometheus
    (its external label ``cluster``)."""
    labels = _ksm_labels(OBJECTS[0]) | {"ready": ready}
    stored = _stored(labels, KSM_TARGET) | {"cluster": cluster}
    return Batch(
        (
            Series(
                tuple(sorted({"__name__": "gotk_resource_info", **stored}.items())),
                (Sample(1.0, ts),),
            ),
        )
    )


async def test_two_clusters_through_one_relay_are_told_apart_with_match() -> None:
    """Without a selector the page serves one cluster's object (the first by its removed
    labels: cluster a); with ``match[]`` each cluster's check reads its own."""
    async with relay_client({"flux": {"mode": "legacy"}}) as (client, _):
        ts = int(time.time() * 1000)
        for cluster, ready in (("b", "True"), ("a", "False")):
            body, headers = rw_body(cluster_batch(cluster, ready, ts))
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        pages = {}
        for query in ({}, {"match[]": '{cluster="a"}'}, {"match[]": '{cluster="b"}'}):
            response = await client.get(CONTROLLER_PATH, params=query)
            assert response.status == 200
            pages[query.get("match[]", "")] = await response.text()
        ksm = await (await client.get(KSM_PATH, params={"match[]": '{cluster="b"}'})).text()
    current = (
        'gotk_reconcile_condition{kind="HelmRelease",name="podinfo",namespace="apps",'
        'status="%s",type="Ready"} 1.0'
    )
    assert current % "False" in pages[""]
    assert current % "False" in pages['{cluster="a"}']
    assert current % "True" in pages['{cluster="b"}']
    assert pages[""].count("gotk_suspend_status{") == 1
    assert 'ready="True"' in ksm
    assert "cluster" not in ksm


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("match[]", "up")] * 65, "65 match[] selectors; at most 64 are allowed"),
        ([("match[]", "up{")], "invalid series selector"),
    ],
    ids=["too-many-selectors", "invalid-selector"],
)
async def test_a_bad_match_gets_400_and_frees_the_slot(
    query: list[tuple[str, str]], message: str
) -> None:
    async with relay_client({"federate": {"max_concurrent_requests": 1}}) as (client, _):
        for path in (CONTROLLER_PATH, KSM_PATH):
            response = await client.get(path, params=query)
            assert response.status == 400
            assert message in await response.text()
            assert (await client.get(path)).status == 200


async def test_a_collapse_is_logged_when_its_count_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with relay_client({"flux": {"mode": "legacy"}}) as (client, _):
        ts = int(time.time() * 1000)
        for batch in (relay_batch(1, ts), second_replica(ts)):
            body, headers = rw_body(batch)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
        with caplog.at_level("INFO", logger="gotk_relay.server"):
            for _ in range(2):  # the second scrape leaves out as many: no second line
                assert (await client.get(KSM_PATH)).status == 200
    logged = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert logged == [
        f"{KSM_PATH}: {len(OBJECTS)} stored series left out: another source (replica or "
        "cluster) reports the same objects, and each object is served from one (docs/recipes.md)"
    ]
