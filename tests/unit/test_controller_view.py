"""controller_view: the Flux pages the Datadog Agent's Flux check scrapes, from a federate snapshot.

What a Flux ≤ 2.1 controller's ``/metrics`` held for an object is its three (four with
``Deleted``) ``gotk_reconcile_condition`` series and its ``gotk_suspend_status``, labelled with
``kind``, ``name``, the object's ``namespace`` and nothing else; kube-state-metrics' page holds
one ``gotk_resource_info`` per object with its own labels. The store holds them after a
Prometheus scrape and the Flux rules, in either label shape, possibly from several sources
(replicas, clusters): the page must be the same whatever the shape, one object set per object,
whatever order the store lists its series in.
"""

from __future__ import annotations

import random
import subprocess
import threading
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gotk_relay.destinations.controller_view import controller_page, ksm_page
from gotk_relay.destinations.federate import Abandoned, Snapshot
from gotk_relay.model import FamilyMetadata, Labels, MetricType
from tests.support.rig import require_binary

GROUPS = {
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1"),
    "GitRepository": ("source.toolkit.fluxcd.io", "v1"),
    "Alert": ("notification.toolkit.fluxcd.io", "v1beta3"),
}
STATUSES = ("True", "False", "Unknown")
CONTROLLER_LABELS = {
    "gotk_reconcile_condition": {"kind", "name", "namespace", "type", "status"},
    "gotk_suspend_status": {"kind", "name", "namespace"},
}


@dataclass(frozen=True)
class Obj:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Report:
    """One source's view of one object: its Ready status (None: no condition) and suspension."""

    instance: str
    ready: str | None
    suspended: bool


def _labels(metric: str, **labels: str) -> Labels:
    return tuple(sorted({"__name__": metric, **labels}.items()))


def _target(instance: str) -> dict[str, str]:
    return {"instance": instance, "job": "kube-state-metrics", "pod": f"ksm-{instance}"}


def stored_points(
    world: dict[Obj, list[Report]], shape: str, deleted: bool
) -> list[tuple[Labels, float, int | None]]:
    """What the federate store holds for ``world`` after the Flux rules, in ``shape``, with
    KSM's input kept: the rules' outputs carry the KSM scrape's target labels."""
    points: list[tuple[Labels, float, int | None]] = []
    for obj, reports in world.items():
        for report in reports:
            target = {**_target(report.instance), "region": "eu"}
            where = (
                {"exported_namespace": obj.namespace, "namespace": "flux-system"}
                if shape == "stored"
                else {"namespace": obj.namespace}
            )
            own = {"kind": obj.kind, "name": obj.name, **where, **target}
            current = report.ready or "Unknown"
            for status in (*STATUSES, *(("Deleted",) if deleted else ())):
                labels = _labels("gotk_reconcile_condition", type="Ready", status=status, **own)
                points.append((labels, float(status == current), 1000))
            points.append((_labels("gotk_suspend_status", **own), float(report.suspended), 1000))
            group, version = GROUPS[obj.kind]
            ksm = {
                "customresource_group": group,
                "customresource_kind": obj.kind,
                "customresource_version": version,
                "exported_namespace": obj.namespace,
                "name": obj.name,
                "namespace": "monitoring",
                **target,
            }
            if obj.kind != "Alert":
                ksm["ready"] = current
                ksm["suspended"] = "true" if report.suspended else "false"
            points.append((_labels("gotk_resource_info", **ksm), 1.0, 1000))
    points.append((_labels("gotk_other", instance="x"), 5.0, 1000))  # not on either page
    return points


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", text
        out[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return out


objects = st.builds(
    Obj,
    st.sampled_from(sorted(GROUPS)),
    st.sampled_from(["apps", "staging", "flux-system"]),
    st.sampled_from(["podinfo", "flux-system"]),
)
reports = st.lists(
    st.builds(
        Report,
        st.sampled_from(["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]),
        st.sampled_from([None, *STATUSES]),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda r: r.instance,
)
worlds = st.dictionaries(objects, reports, min_size=1, max_size=6)


def chosen(reports: list[Report]) -> Report:
    """The source a page shows an object from: the one whose removed labels sort first (here
    they differ in instance only)."""
    return min(reports, key=lambda r: r.instance)


@given(world=worlds, deleted=st.booleans())
def test_the_controller_page_holds_every_object_once_with_the_controllers_labels_only(
    world: dict[Obj, list[Report]], deleted: bool
) -> None:
    points = stored_points(world, "stored", deleted)
    page = controller_page(Snapshot(points, {}))
    families = parsed(page.text)
    assert set(families) == set(CONTROLLER_LABELS)
    statuses = (*STATUSES, *(("Deleted",) if deleted else ()))
    expected_condition = []
    for obj, obj_reports in world.items():
        report = chosen(obj_reports)
        for status in statuses:
            labels = {"kind": obj.kind, "name": obj.name, "namespace": obj.namespace}
            labels |= {"type": "Ready", "status": status}
            expected_condition.append((labels, float(status == (report.ready or "Unknown"))))
    key = lambda row: sorted(row[0].items())  # noqa: E731
    assert sorted(families["gotk_reconcile_condition"], key=key) == sorted(
        expected_condition, key=key
    )
    expected_suspend = [
        ({"kind": o.kind, "name": o.name, "namespace": o.namespace}, float(chosen(r).suspended))
        for o, r in world.items()
    ]
    assert sorted(families["gotk_suspend_status"], key=key) == sorted(expected_suspend, key=key)
    # Every other source's series are left out, and counted.
    others = sum(len(r) - 1 for r in world.values())
    assert page.collapsed == others * (len(statuses) + 1)
    # No timestamps: a controller's page has none.
    assert all(len(line.split(" ")) == 2 for line in page.text.splitlines() if line[0] != "#")


@given(world=worlds, deleted=st.booleans(), seed=st.integers(0, 2**32))
def test_stored_and_raw_shapes_and_any_store_order_give_the_same_pages(
    world: dict[Obj, list[Report]], deleted: bool, seed: int
) -> None:
    stored = stored_points(world, "stored", deleted)
    raw = stored_points(world, "raw", deleted)
    shuffled = list(stored)
    random.Random(seed).shuffle(shuffled)
    pages = {controller_page(Snapshot(points, {})) for points in (stored, raw, shuffled)}
    assert len(pages) == 1
    ksm = {ksm_page(Snapshot(points, {})) for points in (stored, shuffled)}
    assert len(ksm) == 1


@given(world=worlds, seed=st.integers(0, 2**32))
def test_the_ksm_page_holds_every_object_once_with_ksms_own_labels(
    world: dict[Obj, list[Report]], seed: int
) -> None:
    points = stored_points(world, "stored", False)
    random.Random(seed).shuffle(points)
    page = ksm_page(Snapshot(points, {}))
    families = parsed(page.text)
    assert set(families) == {"gotk_resource_info"}
    rows = families["gotk_resource_info"]
    expected = []
    for obj, obj_reports in world.items():
        report = chosen(obj_reports)
        group, version = GROUPS[obj.kind]
        labels = {
            "customresource_group": group,
            "customresource_kind": obj.kind,
            "customresource_version": version,
            "exported_namespace": obj.namespace,
            "name": obj.name,
        }
        if obj.kind != "Alert":
            labels["ready"] = report.ready or "Unknown"
            labels["suspended"] = "true" if report.suspended else "false"
        expected.append((labels, 1.0))
    key = lambda row: sorted(row[0].items())  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected, key=key)
    assert page.collapsed == sum(len(r) - 1 for r in world.values())


def test_the_pages_carry_the_exporters_help_and_type_gauge() -> None:
    world = {Obj("HelmRelease", "apps", "podinfo"): [Report("a", "True", False)]}
    points = stored_points(world, "stored", False)
    # What Prometheus sent for KSM's family is kept as its HELP (the type is KSM's: gauge).
    sent = {"gotk_resource_info": FamilyMetadata("gotk_resource_info", MetricType.INFO, "KSM.")}
    controller = controller_page(Snapshot(points, sent)).text
    assert controller.startswith(
        "# HELP gotk_reconcile_condition The current condition status of a GitOps Toolkit "
        "resource reconciliation.\n# TYPE gotk_reconcile_condition gauge\n"
    )
    assert (
        "# HELP gotk_suspend_status The current suspend status of a GitOps Toolkit resource.\n"
        "# TYPE gotk_suspend_status gauge\n"
    ) in controller
    assert ksm_page(Snapshot(points, sent)).text.startswith(
        "# HELP gotk_resource_info KSM.\n# TYPE gotk_resource_info gauge\n"
    )
    assert ksm_page(Snapshot(points, {})).text.startswith(
        "# HELP gotk_resource_info The current state of a Flux resource.\n"
    )


@pytest.mark.parametrize(
    ("missing", "family"),
    [
        ("kind", "gotk_reconcile_condition"),
        ("name", "gotk_suspend_status"),
        ("status", "gotk_reconcile_condition"),
    ],
    ids=["condition-without-kind", "suspend-without-name", "condition-without-status"],
)
def test_a_series_no_controller_could_have_written_is_left_out(missing: str, family: str) -> None:
    own = {"kind": "HelmRelease", "name": "podinfo", "namespace": "apps"}
    if family == "gotk_reconcile_condition":
        own |= {"type": "Ready", "status": "True"}
    del own[missing]
    page = controller_page(Snapshot([(_labels(family, **own), 1.0, 1)], {}))
    assert "{" not in page.text


def test_a_render_stops_when_its_request_gave_up() -> None:
    world = {Obj("HelmRelease", "apps", "podinfo"): [Report("a", "True", False)]}
    stop = threading.Event()
    stop.set()
    snapshot = Snapshot(stored_points(world, "stored", False), {})
    for page in (controller_page, ksm_page):
        with pytest.raises(Abandoned):
            page(snapshot, stop)


@pytest.mark.parametrize("page", [controller_page, ksm_page], ids=["controller", "ksm"])
def test_promtool_check_metrics_passes_on_the_pages(page: object) -> None:
    world = {
        Obj("HelmRelease", "apps", "podinfo"): [
            Report("a", "False", False),
            Report("b", "True", True),
        ],
        Obj("HelmRelease", "staging", "podinfo"): [Report("a", "True", False)],
        Obj("Alert", "flux-system", "slack"): [Report("a", None, False)],
    }
    assert callable(page)
    text = page(Snapshot(stored_points(world, "stored", True), {})).text
    assert text.count("\n") > 2
    done = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + text


@given(world=worlds, seed=st.integers(0, 2**32))
def test_the_ksm_page_shows_an_objects_newest_series_only_during_a_ready_change(
    world: dict[Obj, list[Report]], seed: int
) -> None:
    """A Ready change in KSM's shape: the new series arrives, the old one stays in the store
    until its stale marker does; KSM itself served only the new one."""
    now = stored_points(world, "stored", False)
    before = {
        obj: [Report(r.instance, "False" if r.ready == "True" else "True", r.suspended) for r in rs]
        for obj, rs in world.items()
    }
    old = [
        (labels, value, 500)
        for labels, value, _ in stored_points(before, "stored", False)
        if labels[0][1] == "gotk_resource_info" and "ready" in dict(labels)
    ]
    points = now + old
    random.Random(seed).shuffle(points)
    page = ksm_page(Snapshot(points, {}))
    assert page.text == ksm_page(Snapshot(now, {})).text
    # The chosen source's old series are superseded; the other sources' are copies.
    chosen_old = sum(1 for obj in world if obj.kind != "Alert")
    assert page.superseded == chosen_old
    assert page.collapsed == sum(
        (len(rs) - 1) * (2 if obj.kind != "Alert" else 1) for obj, rs in world.items()
    )


def test_a_large_store_gives_every_object_once_in_label_order() -> None:
    """More series than one sort run (federate.SORT_RUN): the runs are merged in order."""
    world = {
        Obj("HelmRelease", f"ns{i % 7}", f"app{i:04d}"): [
            Report("10.0.0.2:8080", "True", False),
            Report("10.0.0.1:8080", "False", True),
        ]
        for i in range(700)
    }
    points = stored_points(world, "stored", False)
    random.Random(7).shuffle(points)
    page = controller_page(Snapshot(points, {}))
    families = parsed(page.text)
    for name, per_object in (("gotk_reconcile_condition", 3), ("gotk_suspend_status", 1)):
        keys = [sorted(labels.items()) for labels, _ in families[name]]
        assert keys == sorted(keys)
        assert len(keys) == len(set(map(tuple, keys))) == per_object * len(world)
    assert all(value == 1.0 for _, value in families["gotk_suspend_status"])  # 10.0.0.1's
    ksm = parsed(ksm_page(Snapshot(points, {})).text)["gotk_resource_info"]
    assert len(ksm) == len(world)
    assert [sorted(labels.items()) for labels, _ in ksm] == sorted(
        sorted(labels.items()) for labels, _ in ksm
    )
