"""``datadog[].flux_integration`` against the real thing: Datadog's OpenMetrics V2 check.

Datadog's Flux integration is ``OpenMetricsBaseCheckV2`` with namespace ``fluxcd`` and a metric
map, pointed at each Flux controller's ``/metrics`` (and, with ``kube_state_metrics_endpoint``,
at kube-state-metrics with a second map). Here the real check from ``datadog-checks-base`` is
configured the same way (the maps below are the check's, copied as facts, not taken from the
relay) and scrapes a loopback server serving what a Flux 2.1 controller and kube-state-metrics
expose for the same objects; its ``aggregator`` stub holds what the Agent would submit.

The relay gets those objects as a Prometheus would remote-write them (kube-state-metrics'
``gotk_resource_info`` and the controllers' other families, with the scrape's target labels,
the controller's ``namespace`` moved to ``exported_namespace``) with the Flux rules on, and
sends them to the Datadog intake double through a ``datadog[]`` destination with
``flux_integration: true``. The intake must hold the same metric names, types, values and tag
sets as the stub, one row per object.

What differs by construction, and is accounted for explicitly: the check tags everything with
``endpoint:<scraped URL>``, which the relay cannot know (left out of the stub's tags); the Agent
adds its tagger's tags, of which the relay sends ``kube_namespace``, ``kube_deployment`` and
``kube_container_name`` on the controller families (added to the stub's tags there). Tag values are compared as the intake stores them
(lowercased). The stub holds a ``monotonic_count``'s cumulative values; the Agent sends the
difference between two scrapes, which is what the relay's ``count`` points must equal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from datadog_checks.base import OpenMetricsBaseCheckV2 as _Check
from datadog_checks.base.stubs import aggregator as _aggregator

from gotk_relay.model import Batch, Sample, Series
from tests.support import rig
from tests.support.datadog_intake import DatadogIntake
from tests.support.harness import eventually, relay_client, rw_body

# datadog-checks-base is partly annotated; its check and stub are used as untyped objects.
OpenMetricsBaseCheckV2: Any = _Check
aggregator: Any = _aggregator

# The Flux check's maps (DataDog/integrations-core, fluxcd/datadog_checks/fluxcd/metrics.py).
CHECK_METRIC_MAP = {
    "controller_runtime_active_workers": "controller.runtime.active.workers",
    "controller_runtime_max_concurrent_reconciles": "controller.runtime.max.concurrent.reconciles",
    "controller_runtime_reconcile": "controller.runtime.reconcile",
    "controller_runtime_reconcile_errors": "controller.runtime.reconcile.errors",
    "controller_runtime_reconcile_time_seconds": "controller.runtime.reconcile.time.seconds",
    "gotk_reconcile_condition": "gotk.reconcile.condition",
    "gotk_reconcile_duration_seconds": "gotk.reconcile.duration.seconds",
    "gotk_suspend_status": "gotk.suspend.status",
    "leader_election_master_status": "leader_election_master_status",
    "process_cpu_seconds": "process.cpu_seconds",
    "process_max_fds": "process.max_fds",
    "process_open_fds": "process.open_fds",
    "process_resident_memory_bytes": "process.resident_memory.bytes",
    "process_start_time_seconds": "process.start_time",
    "process_virtual_memory_bytes": "process.virtual_memory.bytes",
    "process_virtual_memory_max_bytes": "process.virtual_memory.max.bytes",
    "workqueue_adds": "workqueue.adds",
    "workqueue_depth": "workqueue.depth",
    "workqueue_longest_running_processor_seconds": "workqueue.longest_running_processor",
    "workqueue_retries": "workqueue.retries",
    "workqueue_unfinished_work_seconds": "workqueue.unfinished_work",
}
CHECK_KSM_MAP = {"gotk_resource_info": "gotk.resource.info"}
GROUPS = {
    "HelmRelease": "helm.toolkit.fluxcd.io",
    "Kustomization": "kustomize.toolkit.fluxcd.io",
    "GitRepository": "source.toolkit.fluxcd.io",
    "OCIRepository": "source.toolkit.fluxcd.io",
}
VERSIONS = {
    "HelmRelease": "v2",
    "Kustomization": "v1",
    "GitRepository": "v1",
    "OCIRepository": "v1",
}
# Intake series types; the stub's: 0 gauge, 3 monotonic_count.
GAUGE, COUNT = 3, 1
STUB_TYPES = {0: GAUGE, 3: COUNT}
# An external label, kept with flux_integration_labels and given to the check as its tags (not
# "cluster": the check's test stub refuses Datadog's generic tags, which the Agent renames).
REGION = "eu-west-1"


@dataclass(frozen=True)
class Obj:
    kind: str
    namespace: str
    name: str
    ready: str | None  # None: no Ready condition (KSM omits the label; legacy: Unknown = 1)
    suspended: bool
    revision: str = ""


OBJECTS = (
    Obj("HelmRelease", "apps", "podinfo", "False", False, "6.5.0"),
    Obj("HelmRelease", "staging", "podinfo", "True", False, "6.5.1"),
    Obj("Kustomization", "flux-system", "flux-system", "True", True, "main/4f7e2a1"),
    Obj("GitRepository", "flux-system", "flux-system", "Unknown", False),
    Obj("OCIRepository", "apps", "podinfo", None, False),
)


def _controller_families(round_: int) -> list[tuple[str, str, dict[str, str], float]]:
    """(family type, series name, the controller's own labels, value) of what a Flux 2.1
    controller exposes besides the object-state gauges, at scrape ``round_`` (1 or 2)."""
    out: list[tuple[str, str, dict[str, str], float]] = []
    for index, obj in enumerate(OBJECTS[:2]):  # a histogram per HelmRelease
        own = {"kind": obj.kind, "name": obj.name, "namespace": obj.namespace}
        hist = "gotk_reconcile_duration_seconds"
        for bucket, le in ((1.0, "0.5"), (2.0, "1"), (3.0, "+Inf")):
            value = bucket * round_ + index
            out.append(("histogram", f"{hist}_bucket", {**own, "le": le}, value))
        out.append(("histogram", f"{hist}_sum", own, 1.25 * round_ + index))
        out.append(("histogram", f"{hist}_count", own, 3.0 * round_ + index))
    runtime = "controller_runtime_reconcile_time_seconds"
    for le, value in (("0.005", 4.0), ("10", 9.0), ("+Inf", 10.0)):
        out.append(
            (
                "histogram",
                f"{runtime}_bucket",
                {"controller": "helmrelease", "le": le},
                value * round_,
            )
        )
    out.append(("histogram", f"{runtime}_sum", {"controller": "helmrelease"}, 2.5 * round_))
    out.append(("histogram", f"{runtime}_count", {"controller": "helmrelease"}, 10.0 * round_))
    for result, value in (("success", 40.0), ("error", 2.0)):
        labels = {"controller": "helmrelease", "result": result}
        out.append(("counter", "controller_runtime_reconcile_total", labels, value * round_))
    out += [
        (
            "counter",
            "controller_runtime_reconcile_errors_total",
            {"controller": "helmrelease"},
            2.0 * round_,
        ),
        ("gauge", "controller_runtime_active_workers", {"controller": "helmrelease"}, 1.0),
        (
            "gauge",
            "controller_runtime_max_concurrent_reconciles",
            {"controller": "helmrelease"},
            4.0,
        ),
        (
            "gauge",
            "leader_election_master_status",
            {"name": "helm-controller-leader-election"},
            1.0,
        ),
        ("counter", "process_cpu_seconds_total", {}, 12.5 * round_),
        ("gauge", "process_resident_memory_bytes", {}, 52428800.0 + round_),
        ("gauge", "process_open_fds", {}, 17.0),
        (
            "counter",
            "workqueue_adds_total",
            {"controller": "helmrelease", "name": "helmrelease"},
            30.0 * round_,
        ),
        ("gauge", "workqueue_depth", {"controller": "helmrelease", "name": "helmrelease"}, 0.0),
        ("gauge", "go_goroutines", {}, 80.0),  # not in the check's map: not sent by it
    ]
    return out


def _family(name: str, mtype: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if mtype != "gauge" and name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _text_labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def controller_text(round_: int) -> str:
    """A Flux 2.1 controller's /metrics for OBJECTS (raw shape: namespace is the object's)."""
    lines = [
        "# HELP gotk_reconcile_condition The current condition status of a GitOps Toolkit "
        "resource reconciliation.",
        "# TYPE gotk_reconcile_condition gauge",
    ]
    for obj in OBJECTS:
        current = obj.ready or "Unknown"
        for status in ("True", "False", "Unknown"):
            labels = {"kind": obj.kind, "name": obj.name, "namespace": obj.namespace}
            labels |= {"type": "Ready", "status": status}
            lines.append(
                f"gotk_reconcile_condition{{{_text_labels(labels)}}} {int(status == current)}"
            )
    lines += [
        "# HELP gotk_suspend_status The current suspend status of a GitOps Toolkit resource.",
        "# TYPE gotk_suspend_status gauge",
    ]
    for obj in OBJECTS:
        labels = {"kind": obj.kind, "name": obj.name, "namespace": obj.namespace}
        lines.append(f"gotk_suspend_status{{{_text_labels(labels)}}} {int(obj.suspended)}")
    typed: set[str] = set()
    for mtype, name, labels, value in _controller_families(round_):
        family = _family(name, mtype)
        if family not in typed:
            typed.add(family)
            lines.append(f"# TYPE {family if mtype != 'counter' else name} {mtype}")
        lines.append(
            f"{name}{{{_text_labels(labels)}}} {value!r}" if labels else f"{name} {value!r}"
        )
    return "\n".join(lines) + "\n"


def _ksm_labels(obj: Obj) -> dict[str, str]:
    """kube-state-metrics' own labels for an object (Flux's custom-resource config)."""
    labels = {
        "customresource_group": GROUPS[obj.kind],
        "customresource_kind": obj.kind,
        "customresource_version": VERSIONS[obj.kind],
        "exported_namespace": obj.namespace,
        "name": obj.name,
        "suspended": "true" if obj.suspended else "false",
    }
    if obj.ready is not None:
        labels["ready"] = obj.ready
    if obj.revision:
        labels["revision"] = obj.revision
    return labels


def ksm_text() -> str:
    lines = [
        "# HELP gotk_resource_info The current state of a Flux resource.",
        "# TYPE gotk_resource_info gauge",
    ]
    lines += [f"gotk_resource_info{{{_text_labels(_ksm_labels(obj))}}} 1" for obj in OBJECTS]
    return "\n".join(lines) + "\n"


KSM_TARGET = {
    "job": "kube-state-metrics",
    "instance": "10.244.0.9:8080",
    "namespace": "monitoring",
    "pod": "kube-state-metrics-7d9f-abcde",
    "container": "kube-state-metrics",
    "endpoint": "http",
    "service": "kube-state-metrics",
}
CONTROLLER_TARGET = {
    "job": "helm-controller",
    "instance": "10.244.1.17:8080",
    "namespace": "flux-system",
    "pod": "helm-controller-5c8b9d7f4-klmno",
    "container": "manager",
    "endpoint": "http-prom",
}


def _stored(own: dict[str, str], target: dict[str, str]) -> dict[str, str]:
    """A scraped series as Prometheus stores it (honor_labels: false): a clashing label of the
    target's own is renamed ``exported_<name>``; the external label ``region`` is added."""
    out = {f"exported_{k}" if k in target else k: v for k, v in own.items()}
    return {**out, **target, "region": REGION}


def relay_batch(round_: int, ts: int) -> Batch:
    """What a Prometheus scraping kube-state-metrics and the controllers remote-writes (the
    controllers' object-state gauges are gone since Flux 2.2-2.5: the relay makes them)."""
    series: list[tuple[str, dict[str, str], float]] = [
        ("gotk_resource_info", _stored(_ksm_labels(obj), KSM_TARGET), 1.0) for obj in OBJECTS
    ]
    series += [
        (name, _stored(labels, CONTROLLER_TARGET), value)
        for _, name, labels, value in _controller_families(round_)
    ]
    # Another Go program's process_* (Prometheus' own): not a Flux controller's, not renamed.
    prometheus = {"job": "prometheus", "namespace": "monitoring", "pod": "prometheus-0"}
    series.append(("process_cpu_seconds_total", {**prometheus, "region": REGION}, 90.0 * round_))
    return Batch(
        tuple(
            Series(tuple(sorted({"__name__": name, **labels}.items())), (Sample(value, ts),))
            for name, labels, value in series
        )
    )


class _Target(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def targets(bodies: dict[str, str]) -> Iterator[str]:
    """A loopback HTTP server on a free port serving ``bodies`` by path; yields its base URL."""
    with rig.serve_http(type("Target", (_Target,), {"bodies": bodies})) as url:
        yield url


Key = tuple[str, int, frozenset[str]]


def run_check() -> dict[Key, float]:
    """The real check, as the Flux check configures it, over two scrapes: what the Agent
    sends, by (metric, intake type, tags): a gauge's last value, a monotonic count's increase."""
    bodies = {"/metrics": controller_text(1), "/ksm": ksm_text()}
    aggregator.reset()
    with targets(bodies) as base:
        common = {"namespace": "fluxcd", "tags": [f"region:{REGION}"]}
        instance = {
            **common,
            "openmetrics_endpoint": f"{base}/metrics",
            "metrics": [CHECK_METRIC_MAP],
        }
        # The check's kube_state_metrics_endpoint: a second scraper with the instance's settings.
        ksm = {**common, "openmetrics_endpoint": f"{base}/ksm", "metrics": [CHECK_KSM_MAP]}
        check = OpenMetricsBaseCheckV2("fluxcd", {}, [instance])
        ksm_check = OpenMetricsBaseCheckV2("fluxcd", {}, [ksm])
        for round_ in (1, 2):
            bodies["/metrics"] = controller_text(round_)
            assert check.run() == ""  # "" is success; else the error as JSON
            assert ksm_check.run() == ""
    got: dict[Key, list[float]] = {}
    for name in aggregator.metric_names:
        for stub in aggregator.metrics(name):
            tags = {t.lower() for t in stub.tags if not t.startswith("endpoint:")}
            if not name.startswith("fluxcd.gotk."):  # the Agent's tagger, for the pod
                tags |= {
                    "kube_namespace:flux-system",
                    "kube_deployment:helm-controller",
                    "kube_container_name:manager",
                }
            got.setdefault((name, STUB_TYPES[stub.type], frozenset(tags)), []).append(stub.value)
    aggregator.reset()
    out: dict[Key, float] = {}
    for key, values in got.items():
        assert len(values) == 2, (key, values)
        out[key] = values[1] if key[1] == GAUGE else values[1] - values[0]
    return out


def intake_rows(series: list[dict[str, Any]], since: int) -> dict[Key, float]:
    """The intake's series by (metric, type, tags): the last point at or after ``since`` (s)."""
    out: dict[Key, float] = {}
    for s in series:
        for point in s["points"]:
            if point["timestamp"] >= since:
                out[(s["metric"], s["type"], frozenset(s.get("tags", [])))] = point["value"]
    return out


def _fluxcd(series: list[dict[str, Any]], since_ms: int) -> dict[Key, float]:
    rows = intake_rows(series, since_ms // 1000)
    return {key: value for key, value in rows.items() if key[0].startswith("fluxcd.")}


@pytest.mark.parametrize("label_shape", ["stored", "raw"], ids=["stored-shape", "raw-shape"])
async def test_the_intake_holds_what_the_datadog_flux_check_submits(label_shape: str) -> None:
    expected = await asyncio.to_thread(run_check)
    names = {key[0] for key in expected}
    assert {
        "fluxcd.gotk.reconcile.condition",
        "fluxcd.gotk.suspend.status",
        "fluxcd.gotk.resource.info",
        "fluxcd.gotk.reconcile.duration.seconds.bucket",
        "fluxcd.controller.runtime.reconcile.count",
        "fluxcd.process.cpu_seconds.count",
    } <= names  # the check ran and mapped what it should: the comparison below is not empty

    now = int(time.time()) * 1000
    first, second = now - 30_000, now - 15_000
    async with DatadogIntake() as intake:
        destination = {
            "name": "dd",
            "url": intake.url,
            "api_key": "test-key",
            "flux_integration": True,
            "flux_integration_labels": ["region"],
            "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"},
        }
        config = {"flux": {"mode": "legacy", "label_shape": label_shape}, "datadog": [destination]}
        async with relay_client(config) as (client, _):
            for round_, ts in ((1, first), (2, second)):
                body, headers = rw_body(relay_batch(round_, ts))
                response = await client.post("/api/v1/write", data=body, headers=headers)
                assert response.status == 204, await response.text()
            await eventually(lambda: len(_fluxcd(intake.series, second)) >= len(expected))
    assert intake.problems == []
    got = intake_rows(intake.series, second // 1000)
    fluxcd = _fluxcd(intake.series, second)
    assert fluxcd == expected
    # Everything else keeps today's mapping: go_goroutines is not in the check's map, and
    # Prometheus' own process_cpu_seconds_total is not a Flux controller's (namespace).
    assert {key[0] for key in got} - names == {"go_goroutines", "process_cpu_seconds_total"}

    # The dashboard's per-object rows (by kind, namespace, name): one per object, and
    # apps/podinfo (False) apart from staging/podinfo (True).
    ready: dict[tuple[str, str, str], str] = {}
    for (metric, _, tags), value in fluxcd.items():
        if metric == "fluxcd.gotk.reconcile.condition" and value == 1.0:
            tag = dict(t.split(":", 1) for t in tags)
            row = (tag["kind"], tag["namespace"], tag["name"])
            assert row not in ready
            ready[row] = tag["status"]
    assert ready == {
        (o.kind.lower(), o.namespace, o.name): (o.ready or "Unknown").lower() for o in OBJECTS
    }
