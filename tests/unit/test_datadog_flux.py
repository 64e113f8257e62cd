"""datadog_mapping.flux: the Flux families as Datadog's Flux check names and tags them, as
tables and properties; and the ``flux_integration`` keys of ``datadog[]``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.config import ConfigError, load_text
from gotk_relay.destinations.datadog_mapping import (
    TYPE_COUNT,
    TYPE_GAUGE,
    CounterStore,
    Kind,
    MappingOptions,
    TypeCache,
    flux_applies,
    flux_labels,
    flux_name,
    map_batch,
)
from gotk_relay.destinations.datadog_mapping.flux import SERIES_NAMES, upper_bound
from gotk_relay.model import Batch, Labels, Sample, Series

NOW_MS = 1_750_000_000_000

# (Prometheus series name, Datadog name, kind): the check's map with OpenMetrics V2 naming.
NAMES = [
    ("gotk_reconcile_condition", "fluxcd.gotk.reconcile.condition", Kind.GAUGE),
    ("gotk_suspend_status", "fluxcd.gotk.suspend.status", Kind.GAUGE),
    ("gotk_resource_info", "fluxcd.gotk.resource.info", Kind.GAUGE),
    (
        "gotk_reconcile_duration_seconds_bucket",
        "fluxcd.gotk.reconcile.duration.seconds.bucket",
        Kind.COUNTER,
    ),
    (
        "gotk_reconcile_duration_seconds_sum",
        "fluxcd.gotk.reconcile.duration.seconds.sum",
        Kind.COUNTER,
    ),
    (
        "controller_runtime_reconcile_total",
        "fluxcd.controller.runtime.reconcile.count",
        Kind.COUNTER,
    ),
    ("workqueue_depth", "fluxcd.workqueue.depth", Kind.GAUGE),
    (
        "workqueue_longest_running_processor_seconds",
        "fluxcd.workqueue.longest_running_processor",
        Kind.GAUGE,
    ),
    ("process_cpu_seconds_total", "fluxcd.process.cpu_seconds.count", Kind.COUNTER),
    ("process_start_time_seconds", "fluxcd.process.start_time", Kind.GAUGE),
    ("leader_election_master_status", "fluxcd.leader_election_master_status", Kind.GAUGE),
]


@pytest.mark.parametrize(("name", "metric", "kind"), NAMES, ids=[n for n, _, _ in NAMES])
def test_the_checks_families_get_its_names_and_kinds(name: str, metric: str, kind: Kind) -> None:
    found = flux_name(name)
    assert found is not None and (found.metric, found.kind) == (metric, kind)


@pytest.mark.parametrize(
    "name",
    [
        "gotk_reconcile_duration_seconds",  # a histogram's family name is no series of it
        "controller_runtime_reconcile",  # a counter is exposed as _total
        "workqueue_depth_total",
        "go_goroutines",
        "flux_resource_info",  # the operator's metric: not in the check's maps
        "gotk_reconcile_condition_total",
    ],
)
def test_other_names_are_not_the_integrations(name: str) -> None:
    assert flux_name(name) is None


def _l(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


STORED = _l(
    __name__="gotk_reconcile_condition",
    kind="HelmRelease",
    name="podinfo",
    namespace="flux-system",
    exported_namespace="apps",
    type="Ready",
    status="False",
    job="kube-state-metrics",
    instance="10.0.0.1:8080",
    pod="ksm-0",
    cluster="prod",
)
RAW_WANT = _l(
    __name__="gotk_reconcile_condition",
    kind="HelmRelease",
    name="podinfo",
    namespace="apps",
    type="Ready",
    status="False",
)

CASES = [
    pytest.param("gotk_reconcile_condition", STORED, (), RAW_WANT, id="stored-shape-undone"),
    pytest.param(
        "gotk_reconcile_condition",
        _l(**{**dict(RAW_WANT), "job": "helm-controller"}),
        (),
        RAW_WANT,
        id="raw-shape-kept",
    ),
    pytest.param(
        "gotk_reconcile_condition",
        STORED,
        ("cluster", "absent"),
        _l(**dict(RAW_WANT), cluster="prod"),
        id="keep-labels",
    ),
    pytest.param(
        "gotk_suspend_status",
        _l(__name__="gotk_suspend_status", kind="Bucket", name="b", namespace="ns", pod="p"),
        (),
        _l(__name__="gotk_suspend_status", kind="Bucket", name="b", namespace="ns"),
        id="suspend",
    ),
    pytest.param(
        "gotk_reconcile_duration_seconds_bucket",
        _l(
            __name__="gotk_reconcile_duration_seconds_bucket",
            kind="Kustomization",
            name="apps",
            namespace="flux-system",
            exported_namespace="apps",
            le="1",
            instance="i",
        ),
        (),
        _l(
            __name__="gotk_reconcile_duration_seconds_bucket",
            kind="Kustomization",
            name="apps",
            namespace="apps",
            upper_bound="1.0",
        ),
        id="bucket-upper-bound",
    ),
    pytest.param(
        "gotk_reconcile_duration_seconds_bucket",
        _l(__name__="gotk_reconcile_duration_seconds_bucket", kind="K", name="a", le="+Inf"),
        (),
        None,
        id="inf-bucket-not-sent",
    ),
    pytest.param(
        "gotk_resource_info",
        _l(
            __name__="gotk_resource_info",
            customresource_group="source.toolkit.fluxcd.io",
            customresource_kind="Bucket",
            customresource_version="v1",
            exported_namespace="apps",
            name="b",
            ready="True",
            endpoint="http-metrics",  # the Prometheus Operator's target label...
            exported_endpoint="minio:9000",  # ...took the name of KSM's own Bucket label
            job="kube-state-metrics",
            namespace="monitoring",
        ),
        (),
        _l(
            __name__="gotk_resource_info",
            customresource_group="source.toolkit.fluxcd.io",
            customresource_kind="Bucket",
            customresource_version="v1",
            exported_namespace="apps",
            name="b",
            ready="True",
            endpoint="minio:9000",
        ),
        id="resource-info-ksm-own-labels",
    ),
    pytest.param(
        "workqueue_depth",
        _l(
            __name__="workqueue_depth",
            name="kustomization",
            controller="kustomization",
            job="kustomize-controller",
            instance="i",
            namespace="flux-system",
            pod="p",
            container="manager",
            endpoint="http-prom",
            service="s",
            cluster="prod",
        ),
        (),
        _l(
            __name__="workqueue_depth",
            name="kustomization",
            controller="kustomization",
            kube_namespace="flux-system",
            kube_container_name="manager",
            cluster="prod",
        ),
        id="controller-family-scrape-labels-out",
    ),
    pytest.param(
        "process_resident_memory_bytes",
        _l(
            __name__="process_resident_memory_bytes",
            job="flux-system/source-controller",
            namespace="flux-system",
            pod="source-controller-7c8b9d6f5d-x2b4z",
            container="manager",
        ),
        (),
        _l(
            __name__="process_resident_memory_bytes",
            kube_namespace="flux-system",
            kube_deployment="source-controller",
            kube_container_name="manager",
        ),
        id="controller-pod-tagged-as-the-agent-tags-it",
    ),
    pytest.param(
        "controller_runtime_reconcile_time_seconds_bucket",
        _l(
            __name__="controller_runtime_reconcile_time_seconds_bucket",
            controller="c",
            le="0",
            exported_controller="own",
        ),
        (),
        _l(
            __name__="controller_runtime_reconcile_time_seconds_bucket",
            controller="own",
            upper_bound="0",
        ),
        id="controller-family-exported-restored",
    ),
    pytest.param("up", _l(__name__="up", job="j"), (), _l(__name__="up", job="j"), id="other"),
]


@pytest.mark.parametrize(("name", "labels", "keep", "want"), CASES)
def test_flux_labels(name: str, labels: Labels, keep: tuple[str, ...], want: Labels | None) -> None:
    assert flux_labels(name, labels, keep) == want


@pytest.mark.parametrize(
    ("le", "want"),
    [("0.5", "0.5"), ("1", "1.0"), ("0", "0"), ("-0", "0"), ("1e3", "1000.0"), ("+Inf", None)],
    ids=["half", "one", "zero", "minus-zero", "exponent", "inf"],
)
def test_upper_bound_is_written_as_the_check_writes_it(le: str, want: str | None) -> None:
    assert upper_bound(le) == want


_label_names = st.sampled_from(
    [
        "kind",
        "name",
        "namespace",
        "exported_namespace",
        "type",
        "status",
        "job",
        "instance",
        "pod",
        "le",
        "cluster",
        "controller",
        "exported_controller",
        "customresource_kind",
    ]
)
_values = st.text(alphabet="abcAB-/.:0123456789", min_size=1, max_size=8)


@given(
    st.sampled_from(sorted(SERIES_NAMES)),
    st.dictionaries(_label_names, _values, max_size=10),
    st.lists(_label_names, max_size=2),
)
def test_flux_labels_never_carry_scrape_labels_and_keep_the_objects_identity(
    name: str, given_labels: dict[str, str], keep: list[str]
) -> None:
    labels = _l(__name__=name, **given_labels)
    got = flux_labels(name, labels, keep)
    if got is None:  # only an infinite (or unreadable) bucket bound is not sent
        assert name.endswith("_bucket") and upper_bound(given_labels.get("le", "x")) is None
        return
    out = dict(got)
    assert out["__name__"] == name and list(got) == sorted(got)
    for label in ("job", "instance", "pod"):
        assert label not in out or label in keep
    if name.endswith("_bucket"):  # a bucket's bound is its upper_bound tag, as the check's
        assert "le" not in out or "le" in keep
        if "le" in given_labels:
            assert out["upper_bound"] == upper_bound(given_labels["le"])
    if name in ("gotk_reconcile_condition", "gotk_suspend_status"):
        # The object's namespace: exported_namespace when the scrape moved it, else namespace.
        namespace = given_labels.get("exported_namespace", given_labels.get("namespace"))
        assert out.get("namespace") == namespace
        assert "exported_namespace" not in out or "exported_namespace" in keep
        for label in ("kind", "name"):
            assert out.get(label) == given_labels.get(label)
    for label in keep:
        if label in given_labels and label not in out:
            raise AssertionError(f"kept label {label} lost")


_words = st.text(alphabet="abcdefghij-", min_size=1, max_size=6)


@given(
    st.sampled_from(
        ["gotk_reconcile_condition", "gotk_suspend_status", "gotk_reconcile_duration_seconds_sum"]
    ),
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["HelmRelease", "Kustomization"]), "name": _words},
        optional={"type": st.just("Ready"), "status": st.sampled_from(["True", "False"])},
    ),
    _words,
    st.dictionaries(st.sampled_from(["job", "instance", "pod", "container"]), _words),
    _words,
)
def test_the_stored_shape_maps_as_the_raw_shape_the_controller_exposed(
    name: str, own: dict[str, str], namespace: str, target: dict[str, str], controller_ns: str
) -> None:
    """What a controller exposed (raw) and what Prometheus stored of it (the object's namespace
    in exported_namespace, the target's labels added) are the same Datadog series."""
    raw = _l(__name__=name, **own, namespace=namespace)
    stored = _l(
        __name__=name, **own, exported_namespace=namespace, namespace=controller_ns, **target
    )
    assert flux_labels(name, stored) == flux_labels(name, raw) == raw


def test_map_batch_sends_the_families_renamed_and_everything_else_as_before() -> None:
    ts = NOW_MS - 1000
    batch = Batch(
        (
            Series(STORED, (Sample(1.0, ts),)),
            Series(_l(__name__="up", job="j", namespace="n"), (Sample(1.0, ts),)),
            Series(
                _l(__name__="process_cpu_seconds_total", job="j", namespace="flux-system"),
                (Sample(1.0, ts - 15_000), Sample(3.5, ts)),
            ),
            Series(  # another program's: not from a Flux namespace
                _l(__name__="process_cpu_seconds_total", job="j", namespace="monitoring"),
                (Sample(1.0, ts - 15_000), Sample(2.0, ts)),
            ),
        )
    )
    options = MappingOptions(flux_integration=True, static_tags=("env:x",))
    mapped = map_batch(batch, options, TypeCache(), CounterStore(), NOW_MS)
    got = [(s.metric, s.type, sorted(s.tags), s.points) for s in mapped.series]
    assert got == [
        (
            "fluxcd.gotk.reconcile.condition",
            TYPE_GAUGE,
            [
                "env:x",
                "kind:helmrelease",
                "name:podinfo",
                "namespace:apps",
                "status:false",
                "type:ready",
            ],
            [(ts // 1000, 1.0)],
        ),
        ("up", TYPE_GAUGE, ["env:x", "job:j", "namespace:n"], [(ts // 1000, 1.0)]),
        (
            "fluxcd.process.cpu_seconds.count",
            TYPE_COUNT,
            ["env:x", "kube_namespace:flux-system"],
            [(ts // 1000, 2.5)],
        ),
        (
            "process_cpu_seconds_total",
            TYPE_COUNT,
            ["env:x", "job:j", "namespace:monitoring"],
            [(ts // 1000, 1.0)],
        ),
    ]
    off = map_batch(batch, MappingOptions(), TypeCache(), CounterStore(), NOW_MS)
    assert [s.metric for s in off.series] == [
        "gotk_reconcile_condition",
        "up",
        "process_cpu_seconds_total",
        "process_cpu_seconds_total",
    ]


@pytest.mark.parametrize(
    ("name", "labels", "want"),
    [
        ("gotk_reconcile_condition", _l(namespace="anywhere"), True),
        ("gotk_resource_info", (), True),
        ("workqueue_depth", _l(namespace="flux-system"), True),
        ("workqueue_depth", _l(namespace="flux"), True),
        ("workqueue_depth", _l(namespace="cert-manager"), False),
        ("process_open_fds", (), False),  # no namespace: whose it is cannot be told
        ("go_goroutines", _l(namespace="flux-system"), False),
    ],
    ids=["object", "info", "flux-ns", "second-flux-ns", "other-ns", "no-ns", "unmapped"],
)
def test_controller_families_are_the_integrations_only_from_flux_namespaces(
    name: str, labels: Labels, want: bool
) -> None:
    assert flux_applies(name, labels, {"flux-system", "flux"}) is want


def _datadog(extra: str) -> str:
    return f"datadog:\n  - api_key: k\n{extra}"


def test_flux_integration_is_off_by_default_and_loads_when_set() -> None:
    assert not load_text(_datadog(""), "t").datadog[0].flux_integration
    cfg = load_text(
        _datadog("    flux_integration: true\n    flux_integration_labels: [cluster]\n"), "t"
    ).datadog[0]
    assert cfg.flux_integration and cfg.flux_integration_labels == ["cluster"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    flux_integration_labels: [cluster]\n", "flux_integration_labels"),
        ("    flux_integration_namespaces: [flux]\n", "flux_integration_namespaces"),
        ("    flux_integration: true\n    flux_integration_namespaces: ['']\n", "empty names"),
        ("    flux_integration: true\n    counters: gauge\n", "counters: gauge"),
        ("    flux_integration: yes please\n", "flux_integration"),
    ],
    ids=[
        "labels-without-option",
        "namespaces-without-option",
        "empty-namespace",
        "counters-as-gauges",
        "not-a-bool",
    ],
)
def test_flux_integration_misconfigurations_are_refused_by_name(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(_datadog(extra), "t")


RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def test_check_config_accepts_the_recipe_and_names_the_key_it_refuses(tmp_path: Path) -> None:
    """The documented recipe through the real ``check-config`` command, and the same recipe
    with ``counters: gauge``, refused with both keys named."""
    found = re.search(
        r"```yaml\n# recipe: datadog-flux-integration\n(.*?)```", RECIPES.read_text(), re.DOTALL
    )
    assert found is not None
    good = tmp_path / "good.yml"
    good.write_text(found.group(1))
    assert load_text(found.group(1), "recipe", {"DD_API_KEY": "x"}).datadog[0].flux_integration
    bad = tmp_path / "bad.yml"
    bad.write_text(
        found.group(1).replace(
            "flux_integration: true", "flux_integration: true\n    counters: gauge"
        )
    )
    env = {**os.environ, "DD_API_KEY": "x"}
    for path, code in ((good, 0), (bad, 1)):
        done = subprocess.run(
            [sys.executable, "-m", "gotk_relay", "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == code, done.stdout + done.stderr
    assert "flux_integration" in done.stderr and "counters: gauge" in done.stderr  # FAILED
