"""``migrate_expr``: what each kind of query becomes on the other shapes, and what is refused.

The proof that each migrated query returns what the original did is end to end, on a real
Prometheus (tests/e2e/test_migrate_e2e.py). These tests pin the rewrite rules themselves: the
form users will read in their dashboards, and the reason they get when there is no exact one.
"""

from __future__ import annotations

import pytest

from gotk_relay.migrate import (
    LabelShape,
    NotMigratable,
    Shape,
    migrate_expr,
    migrate_template_query,
    referenced_metrics,
)

KSM, OP, LEGACY = Shape.RESOURCE_INFO, Shape.FLUX_RESOURCE_INFO, Shape.LEGACY

C = "gotk_reconcile_condition"
S = "gotk_suspend_status"

# The per-object aggregation the info shapes need (docs/migrate.md): the labels that change
# while an object lives, with and without its Ready status.
_KSM_VARYING = (
    "bucket_name, chart_app_version, chart_name, chart_ref_name, chart_source_name, chart_version, "
    "customresource_version, endpoint, image, {}revision, source_name, suspended, url, webhook_path"
)
KSM_DEDUPE = "max without (" + _KSM_VARYING.format("") + ")"
KSM_DEDUPE_READY = "max without (" + _KSM_VARYING.format("ready, ") + ")"
OP_DEDUPE = "max without (path, reason, ref, revision, source_name, suspended, uid, url)"
OP_DEDUPE_READY = (
    "max without (path, ready, reason, ref, revision, source_name, suspended, uid, url)"
)

REWRITES = {
    # Flux before 2.1: the Deleted series, 0 on every live object, only leave deleted objects out.
    "deleted-alert": (
        f'max({C}{{status="False",type="Ready"}}) by (exported_namespace, name, kind) '
        f'+ on(exported_namespace, name, kind) (max({C}{{status="Deleted"}}) '
        "by (exported_namespace, name, kind)) * 2 == 1",
        KSM,
        '(group by (exported_namespace, name, customresource_kind) (gotk_resource_info{ready="False"}) '
        "or group by (exported_namespace, name, customresource_kind) (gotk_resource_info) * 0) "
        "+ on (exported_namespace, name, customresource_kind) "
        "(group by (exported_namespace, name, customresource_kind) (gotk_resource_info) * 0) * 2 "
        "== 1",
    ),
    "deleted-subtracted-from-a-count": (
        f'count({C}{{status="True",kind="HelmRelease"}}) - sum({C}{{status="Deleted",kind="HelmRelease"}})',
        KSM,
        f'count({KSM_DEDUPE_READY} (gotk_resource_info{{customresource_kind="HelmRelease"}})) '
        '- group(gotk_resource_info{customresource_kind="HelmRelease"}) * 0',
    ),
    "deleted-in-a-min": (
        f'min by (name) ({C}{{status=~"True|Deleted"}})',
        KSM,
        "group by (name) (gotk_resource_info) * 0",
    ),
    "deleted-zero-is-every-live-object": (
        f'count({C}{{status="Deleted"}} == 0)',
        KSM,
        f"count({KSM_DEDUPE_READY} (gotk_resource_info))",
    ),
    "deleted-counted-as-a-series-per-object": (
        f'count({C}{{status=~"False|Deleted"}})',
        KSM,
        None,
    ),
    # Legacy -> kube-state-metrics.
    "filter-to-failing": (
        f'{C}{{type="Ready",status="False"}} == 1',
        KSM,
        f'{KSM_DEDUPE} (gotk_resource_info{{ready="False"}})',
    ),
    "filter-greater-than-zero": (
        f'{C}{{status="True"}} > 0',
        KSM,
        f'{KSM_DEDUPE} (gotk_resource_info{{ready="True"}})',
    ),
    "filter-unknown-covers-no-ready-label": (
        f'{C}{{status="Unknown"}} == 1',
        KSM,
        f'{KSM_DEDUPE} (gotk_resource_info{{ready=~"Unknown|"}})',
    ),
    "filter-not-ready": (
        f'{C}{{status!="True"}} == 1',
        KSM,
        f'{KSM_DEDUPE_READY} (gotk_resource_info{{ready!="True"}})',
    ),
    "count-is-every-object": (
        f'count({C}{{status="True",kind=~"Kustomization|HelmRelease"}})',
        KSM,
        f'count({KSM_DEDUPE_READY} (gotk_resource_info{{customresource_kind=~"Kustomization|HelmRelease"}}))',
    ),
    "sum-counts-with-zero-for-groups-without-failures": (
        f'sum by (kind) ({C}{{status="False"}})',
        KSM,
        f'count by (customresource_kind) ({KSM_DEDUPE} (gotk_resource_info{{ready="False"}})) '
        "or group by (customresource_kind) (gotk_resource_info) * 0",
    ),
    "max-per-object-filtered": (
        f'max by (exported_namespace, name, kind) ({C}{{status="False"}}) == 1',
        KSM,
        'group by (exported_namespace, name, customresource_kind) (gotk_resource_info{ready="False"})',
    ),
    "sum-filtered-keeps-the-count": (
        f'sum by (kind) ({C}{{status="False"}}) > 2',
        KSM,
        f'count by (customresource_kind) ({KSM_DEDUPE} (gotk_resource_info{{ready="False"}})) > 2',
    ),
    "suspended-in-the-window": (
        f'max_over_time({S}{{kind="HelmRelease"}}[1h]) == 1',
        OP,
        "max without (path, ready, reason, ref, revision, source_name, suspended, uid, url) "
        '(max_over_time(flux_resource_info{kind="HelmRelease",suspended="True"}[1h]))',
    ),
    "max-per-object": (
        f'max by (exported_namespace, name, kind) ({C}{{status="False"}})',
        KSM,
        'group by (exported_namespace, name, customresource_kind) (gotk_resource_info{ready="False"}) '
        "or group by (exported_namespace, name, customresource_kind) (gotk_resource_info) * 0",
    ),
    "min-all-ready": (
        f'min by (kind) ({C}{{status="True"}})',
        KSM,
        "group by (customresource_kind) (gotk_resource_info) unless on (customresource_kind) "
        'gotk_resource_info{ready!="True"} or group by (customresource_kind) (gotk_resource_info) * 0',
    ),
    "suspended": (f"{S} == 1", KSM, f'{KSM_DEDUPE_READY} (gotk_resource_info{{suspended="true"}})'),
    "not-suspended-counted": (
        f"count({S} == 0)",
        KSM,
        f'count({KSM_DEDUPE_READY} (gotk_resource_info{{suspended!="true"}}))',
    ),
    "failing-and-not-suspended": (
        f'{C}{{status="False"}} == 1 unless on (kind, name, exported_namespace) {S} == 1',
        KSM,
        f'{KSM_DEDUPE} (gotk_resource_info{{ready="False",suspended!="true"}})',
    ),
    "absent-keeps-its-labels": (
        f'absent({C}{{kind="Kustomization",name="flux-system",status="True"}})',
        KSM,
        'absent(gotk_resource_info{customresource_kind="Kustomization",name="flux-system"})',
    ),
    "join-on-object-namespace": (
        f'({C}{{status="False"}} == 1) * on (exported_namespace) group_left (team) team_info',
        KSM,
        f'{KSM_DEDUPE} (gotk_resource_info{{ready="False"}}) * on (exported_namespace) group_left (team) team_info',
    ),
    "or-vector-zero-kept": (
        f'sum({C}{{status="False"}}) or vector(0)',
        KSM,
        f'count({KSM_DEDUPE} (gotk_resource_info{{ready="False"}})) or group(gotk_resource_info) * 0 or vector(0)',
    ),
    "window": (
        f'max_over_time({C}{{status="False"}}[5m]) == 1',
        OP,
        "max without (path, reason, ref, revision, source_name, suspended, uid, url) "
        '(max_over_time(flux_resource_info{ready="False"}[5m]))',
    ),
    "variables-kept": (
        f'count({C}{{namespace=~"$operator_namespace",exported_namespace=~"$namespace",status="True"}})',
        KSM,
        f'count({KSM_DEDUPE_READY} (gotk_resource_info{{namespace=~"$operator_namespace",exported_namespace=~"$namespace"}}))',
    ),
    # Legacy -> Flux Operator.
    "operator-suspend-values": (
        f"count({S} == 0)",
        OP,
        f'count({OP_DEDUPE_READY} (flux_resource_info{{suspended="False"}}))',
    ),
    "operator-unknown": (
        f'{C}{{status="Unknown"}} == 1',
        OP,
        f'{OP_DEDUPE} (flux_resource_info{{ready="Unknown"}})',
    ),
    # Info -> legacy.
    "info-count-failing": (
        'count(gotk_resource_info{exported_namespace=~"$namespace",customresource_kind=~"Kustomization|HelmRelease",ready="False"})',
        LEGACY,
        f'count({C}{{exported_namespace=~"$namespace",kind=~"Kustomization|HelmRelease",status="False"}} == 1)',
    ),
    "info-suspended": (
        'gotk_resource_info{suspended="true"}',
        LEGACY,
        f'{C}{{status=~"True|False|Unknown"}} == 1 and ignoring (status, type) {S} == 1',
    ),
    "operator-not-suspended": (
        'count(flux_resource_info{ready="False",suspended="False"})',
        LEGACY,
        f'count({C}{{status="False"}} == 1 unless ignoring (status, type) {S} == 1)',
    ),
    "info-not-ready-by-kind": (
        'count by (customresource_kind) (gotk_resource_info{ready!="True"})',
        LEGACY,
        f'count by (kind) ({C}{{status=~"False|Unknown"}} == 1)',
    ),
    "absent-object-back-to-legacy": (
        'absent(gotk_resource_info{name="podinfo"})',
        LEGACY,
        f'absent({C}{{name="podinfo"}})',
    ),
    "absent-of-a-state-back-to-legacy": (
        'absent(gotk_resource_info{name="podinfo",ready="False"})',
        LEGACY,
        f'label_replace(absent({C}{{name="podinfo",status="False"}} == 1), "name", "podinfo", "", "")',
    ),
    "states-per-status-back-to-legacy": (
        'count by (ready) (flux_resource_info{kind=~"Kustomization|HelmRelease"})',
        LEGACY,
        f'count by (status) ({C}{{kind=~"Kustomization|HelmRelease",status=~"True|False|Unknown"}} == 1)',
    ),
    "failing-in-the-window-by-kind": (
        f'max by (kind) (max_over_time({C}{{status="False"}}[$__rate_interval]))',
        KSM,
        'group by (customresource_kind) (max_over_time(gotk_resource_info{ready="False"}'
        "[$__rate_interval])) or group by (customresource_kind) "
        "(max_over_time(gotk_resource_info[$__rate_interval])) * 0",
    ),
    # Info -> info.
    "ksm-to-operator": (
        'count(gotk_resource_info{ready="False",suspended!="true"})',
        OP,
        f'count({OP_DEDUPE} (flux_resource_info{{ready="False",suspended="False"}}))',
    ),
}


@pytest.mark.parametrize(("query", "to", "expected"), REWRITES.values(), ids=REWRITES.keys())
def test_the_rewrite_of_each_kind_of_query(query: str, to: Shape, expected: str | None) -> None:
    out = migrate_expr(query, to)
    assert out.changed
    if expected is not None:
        assert out.text == expected
    # What comes out reads the target shape only, and migrates back to itself unchanged.
    assert migrate_expr(out.text, to).changed is False


REFUSALS = {
    "deleted-objects": (f'{C}{{status="Deleted"}} == 1', KSM, "Deleted"),
    "deleted-in-a-window": (
        f'max by (name) (max_over_time({C}{{status="Deleted"}}[5m]))',
        KSM,
        "Deleted",
    ),
    "bare-gauge": (f'{C}{{status="False"}}', KSM, "0/1 values"),
    "arithmetic-on-gauges": (f'{C}{{status="False"}} * 2', KSM, "0/1 values"),
    "sum-of-zeros": (f'sum({C}{{status="True"}} == 0)', KSM, "0 values"),
    "avg": (f'avg({C}{{status="True"}})', KSM, "avg()"),
    "without": (f'sum without (instance) ({C}{{status="True"}})', KSM, "without"),
    "by-status": (f"sum by (status) ({C})", KSM, "`status`"),
    "fixed-controller-namespace": (f'{C}{{namespace="flux-system"}} == 1', KSM, "exposed"),
    "fixed-job": (f'{C}{{job="helm-controller"}} == 1', KSM, "exposed"),
    "rate-of-gauges": (f'rate({C}{{status="False"}}[5m])', KSM, "range"),
    "join-on-kind-with-other-metric": (
        f'({C}{{status="False"}} == 1) * on (kind) group_left () kind_info',
        KSM,
        "`kind`",
    ),
    "ksm-unknown-alone": ('gotk_resource_info{ready="Unknown"} == 1', LEGACY, "Unknown|"),
    "ksm-suspended-false": ('gotk_resource_info{suspended="false"}', LEGACY, 'suspended!="true"'),
    "revision-to-legacy": ('gotk_resource_info{revision="v1"}', LEGACY, "revision"),
    "group-to-legacy": (
        'gotk_resource_info{customresource_group="helm.toolkit.fluxcd.io"}',
        LEGACY,
        "group",
    ),
    "mixed-shapes": (f"{C} == 1 and on (name) gotk_resource_info", KSM, "several shapes"),
    "status-variable": (f'{C}{{status=~"$status"}} == 1', KSM, "template variable"),
    "never-in-a-state-in-the-window": (f"max_over_time({S}[1h]) == 0", KSM, "window"),
    "ksm-by-ready": (
        "count by (ready) (gotk_resource_info)",
        LEGACY,
        "no `ready` for an object without",
    ),
    "revision-between-info-shapes": ('gotk_resource_info{revision="v1"}', OP, "revision"),
    "samples-in-a-window": (
        'count_over_time(gotk_resource_info{ready="False"}[5m])',
        LEGACY,
        "range",
    ),
    "min-in-a-window": (f'min(max_over_time({C}{{status="True"}}[5m]))', KSM, "window"),
    "threshold-variable": (f'sum({C}{{status="False"}} == 1) > 0 or {C} > $t', KSM, "0/1"),
    "name-pattern": ('{__name__=~"gotk_.*"}', KSM, "__name__"),
}


@pytest.mark.parametrize(("query", "to", "reason"), REFUSALS.values(), ids=REFUSALS.keys())
def test_queries_without_an_exact_counterpart_are_refused_with_the_reason(
    query: str, to: Shape, reason: str
) -> None:
    with pytest.raises(NotMigratable) as refused:
        migrate_expr(query, to)
    assert reason in refused.value.reason


def test_a_query_without_flux_metrics_or_already_on_the_target_is_left_as_written() -> None:
    text = "sum by (job) (up)"
    assert migrate_expr(text, KSM).changed is False
    text = 'count (gotk_resource_info{ready="False"})'
    out = migrate_expr(text, KSM)
    assert (out.text, out.changed, out.source) == (text, False, KSM)


def test_a_given_source_that_is_not_the_one_read_is_refused() -> None:
    with pytest.raises(NotMigratable, match="reads legacy metrics"):
        migrate_expr(f"{S} == 1", KSM, source=OP)


def test_the_raw_label_shape_reads_the_object_namespace_from_namespace() -> None:
    out = migrate_expr(
        f'{C}{{namespace="apps",status="False"}} == 1', KSM, label_shape=LabelShape.RAW
    )
    assert (
        out.text == f'{KSM_DEDUPE} (gotk_resource_info{{exported_namespace="apps",ready="False"}})'
    )
    back = migrate_expr(
        'gotk_resource_info{exported_namespace="apps"} == 1', LEGACY, label_shape=LabelShape.RAW
    )
    assert 'namespace="apps"' in back.text and "exported_namespace" not in back.text


def test_grouping_by_the_exposing_namespace_carries_a_note() -> None:
    out = migrate_expr(f'sum by (namespace) ({C}{{status="False"}})', KSM)
    assert any("names what exposed the series" in note for note in out.notes)


TEMPLATES = {
    "operator-namespace": (
        f"label_values({C}, namespace)",
        KSM,
        "label_values(gotk_resource_info, namespace)",
    ),
    "object-names": (
        f'label_values({C}{{exported_namespace=~"$namespace"}}, name)',
        OP,
        'label_values(flux_resource_info{exported_namespace=~"$namespace"}, name)',
    ),
    "kinds-back": (
        "label_values(gotk_resource_info, customresource_kind)",
        LEGACY,
        f'label_values({C}{{status="True"}}, kind)',
    ),
    "query-result": (
        f'query_result(count({C}{{status="False"}} == 1))',
        KSM,
        f'query_result(count({KSM_DEDUPE} (gotk_resource_info{{ready="False"}})))',
    ),
    "label-only": ("label_values(namespace)", KSM, "label_values(namespace)"),
}


@pytest.mark.parametrize(("query", "to", "expected"), TEMPLATES.values(), ids=TEMPLATES.keys())
def test_grafana_variable_queries(query: str, to: Shape, expected: str) -> None:
    assert migrate_template_query(query, to).text == expected


def test_label_values_cannot_filter_on_state_for_the_legacy_shape() -> None:
    with pytest.raises(NotMigratable, match="query_result"):
        migrate_template_query('label_values(gotk_resource_info{ready="False"}, name)', LEGACY)


def test_referenced_metrics_names_the_flux_metrics_read() -> None:
    assert referenced_metrics(
        f'sum({C}{{status="False"}}) + count(up) or max_over_time({S}[$__interval])'
    ) == {C, S}
    assert referenced_metrics('{__name__=~"gotk_resource_info|flux_.*"}') == {
        "gotk_resource_info",
        "flux_resource_info",
    }
