"""The e2e migration test's result comparison (``tests/support/migrate_compare.py``)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.migrate_compare import (
    Result,
    compare,
    from_prometheus,
    label_value_result,
    neutral_labels,
    same_value,
    substitute_grafana,
)

SCRAPE = {"job": "kube-state-metrics", "instance": "10.0.0.1:8080"}
LEGACY = {
    "__name__": "gotk_reconcile_condition",
    "kind": "HelmRelease",
    "name": "redis",
    "exported_namespace": "apps",
    "namespace": "flux-system",
    "type": "Ready",
    "status": "False",
    **SCRAPE,
}
KSM = {
    "__name__": "gotk_resource_info",
    "customresource_group": "helm.toolkit.fluxcd.io",
    "customresource_kind": "HelmRelease",
    "customresource_version": "v2",
    "name": "redis",
    "exported_namespace": "apps",
    "namespace": "monitoring",
    "ready": "False",
    "suspended": "false",
    "revision": "19.6.4",
    "chart_name": "redis",
    **SCRAPE,
}
OPERATOR = {
    "__name__": "flux_resource_info",
    "kind": "HelmRelease",
    "name": "redis",
    "exported_namespace": "apps",
    "namespace": "flux-system",
    "ready": "False",
    "suspended": "False",
    "uid": "0b6c",
    "reason": "InstallFailed",
    "revision": "19.6.4",
    **SCRAPE,
}
NS = {"monitoring": "flux-system"}


def vector(*items: tuple[dict[str, str], str]) -> Result:
    return from_prometheus(
        {"resultType": "vector", "result": [{"metric": m, "value": [1.5, v]} for m, v in items]}
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [(LEGACY, KSM), (LEGACY, OPERATOR), (KSM, OPERATOR)],
    ids=["legacy-ksm", "legacy-operator", "ksm-operator"],
)
def test_one_objects_series_on_two_shapes_have_one_key(
    one: dict[str, str], other: dict[str, str]
) -> None:
    assert neutral_labels(one, NS) == neutral_labels(other, NS)
    assert not compare(vector((one, "1")), vector((other, "1")), NS)


def test_the_key_keeps_the_object_and_the_scrape_and_drops_shape_only_labels() -> None:
    assert dict(neutral_labels(KSM, NS)) == {
        "kind": "HelmRelease",
        "name": "redis",
        "exported_namespace": "apps",
        "namespace": "flux-system",
        **SCRAPE,
    }


def test_the_state_labels_and_flux_metric_names_are_not_compared() -> None:
    alert = {"__name__": "gotk_resource_info", "customresource_kind": "Alert", "name": "a"}
    legacy = {"__name__": "gotk_reconcile_condition", "kind": "Alert", "name": "a", "type": "Ready"}
    assert not compare(vector(({**legacy, "status": "Unknown"}, "1")), vector((alert, "1")))
    per_object = {"customresource_kind": "Alert", "name": "a", "ready": "True"}
    assert not compare(vector(({**legacy, "status": "True"}, "1")), vector((per_object, "1")))
    # Other metrics keep their names.
    assert dict(neutral_labels({"__name__": "up", "kind": "x"}))["__name__"] == "up"


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        ({}, "monitoring"),
        ({"monitoring": "flux-system"}, "flux-system"),
        ({"monitoring": None}, None),
    ],
    ids=["unmapped", "mapped", "dropped"],
)
def test_namespace_values_follow_the_scenarios_map(
    namespaces: dict[str, str | None], expected: str | None
) -> None:
    assert (
        dict(neutral_labels({"namespace": "monitoring"}, namespaces)).get("namespace") == expected
    )


def test_a_different_value_is_reported_on_both_sides() -> None:
    diff = compare(vector((LEGACY, "1")), vector((KSM, "0")), NS)
    assert len(diff.only_original) == 1 and diff.only_original[0].endswith("= 1.0")
    assert len(diff.only_migrated) == 1 and diff.only_migrated[0].endswith("= 0.0")


def test_a_series_only_one_side_returns_is_reported() -> None:
    other = {**KSM, "name": "other"}
    diff = compare(vector((LEGACY, "1")), vector((KSM, "1"), (other, "1")), NS)
    assert diff.only_original == ()
    assert len(diff.only_migrated) == 1 and 'name="other"' in diff.only_migrated[0]


def test_a_key_produced_twice_must_be_produced_twice_on_the_other_side() -> None:
    # Two KSM series that differ only in a dropped label (a revision change mid-scrape).
    newer = {**KSM, "revision": "19.6.5"}
    diff = compare(vector((LEGACY, "1")), vector((KSM, "1"), (newer, "1")), NS)
    assert len(diff.only_migrated) == 1 and diff.only_original == ()
    # An object False then Unknown within a window: two series on both shapes.
    unknown = {**LEGACY, "status": "Unknown"}
    assert not compare(
        vector((LEGACY, "1"), (unknown, "1")),
        vector((KSM, "1"), ({**KSM, "ready": "Unknown"}, "1")),
        NS,
    )


def test_two_labels_mapping_to_one_name_is_a_failure() -> None:
    both = {"kind": "HelmRelease", "customresource_kind": "HelmRelease"}
    diff = compare(vector((both, "1")), vector((both, "1")))
    assert diff.only_original and diff.only_original[0].startswith("conflict")


def test_result_types_must_match() -> None:
    scalar = from_prometheus({"resultType": "scalar", "result": [1.5, "0"]})
    assert compare(scalar, vector(({}, "0")))
    assert not compare(scalar, from_prometheus({"resultType": "scalar", "result": [1.5, "0"]}))


def test_range_results_compare_step_by_step() -> None:
    def matrix(values: list[list[Any]]) -> Result:
        return from_prometheus(
            {"resultType": "matrix", "result": [{"metric": LEGACY, "values": values}]}
        )

    same = matrix([[1, "1"], [16, "0"]])
    assert not compare(same, matrix([[1, "1"], [16, "0"]]))
    diff = compare(same, matrix([[1, "1"], [31, "0"]]))
    assert any("@16" in line for line in diff.only_original)
    assert any("@31" in line for line in diff.only_migrated)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1.0, 1.0, True),
        (math.nan, -math.nan, True),
        (0.0, -0.0, False),
        (0.1 + 0.2, 0.3, False),
        (math.inf, math.inf, True),
        (math.nan, 1.0, False),
    ],
    ids=["one", "nan", "signed-zero", "last-bit", "inf", "nan-vs-number"],
)
def test_values_compare_bit_for_bit_and_nan_equals_nan(a: float, b: float, equal: bool) -> None:
    assert same_value(a, b) is equal


def test_template_values_compare_as_sets_with_the_namespace_map() -> None:
    legacy = label_value_result(["flux-system"], "namespace")
    ksm = label_value_result(["monitoring", "monitoring"], "namespace")
    assert not compare(legacy, ksm, NS)
    assert compare(legacy, ksm)
    kinds = label_value_result(["Kustomization", "HelmRelease"], "kind")
    assert not compare(
        kinds, label_value_result(["HelmRelease", "Kustomization"], "customresource_kind")
    )
    assert compare(kinds, label_value_result(["HelmRelease"], "customresource_kind"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('x{a=~"$namespace"}', 'x{a=~".*"}'),
        ('x{a=~"${namespace}",b=~"${ns:regex}"}', 'x{a=~".*",b=~".*"}'),
        ('x{a=~"[[namespace]]"}', 'x{a=~".*"}'),
        (
            "rate(x[$__rate_interval]) + rate(x[$__interval]) + x[${__range}]",
            "rate(x[5m]) + rate(x[5m]) + x[5m]",
        ),
        (
            'label_replace(x, "d", "$1 ${1}", "s", "(.*)")',
            'label_replace(x, "d", "$1 ${1}", "s", "(.*)")',
        ),
        ("sum(x)", "sum(x)"),
    ],
    ids=["dollar", "braces", "brackets", "interval-macros", "capture-groups-stay", "none"],
)
def test_grafana_variables_are_substituted(text: str, expected: str) -> None:
    assert substitute_grafana(text) == expected


LABEL_NAMES = st.sampled_from(
    [
        "__name__",
        "kind",
        "customresource_kind",
        "status",
        "ready",
        "name",
        "namespace",
        "job",
        "revision",
    ]
)
LABELS = st.dictionaries(LABEL_NAMES, st.sampled_from(["a", "b", "gotk_resource_info"]), max_size=5)
VALUES = st.floats(allow_nan=True, allow_infinity=True)


@given(st.lists(st.tuples(LABELS, VALUES), max_size=8), st.randoms())
def test_a_result_equals_itself_in_any_order(
    items: list[tuple[dict[str, str], float]], rnd: Any
) -> None:
    original = Result("vector", tuple((labels, None, value) for labels, value in items))
    shuffled = list(original.points)
    rnd.shuffle(shuffled)
    diff = compare(original, Result("vector", tuple(shuffled)))
    # Equal unless the mapping itself finds a problem (duplicates, conflicts): then it is
    # reported on both sides, never hidden.
    marks = ("duplicate", "conflict")
    left = [line for line in diff.only_original if line.startswith(marks)]
    right = [line for line in diff.only_migrated if line.startswith(marks)]
    assert len(left) == len(right)
    if not left:
        assert not diff


@given(LABELS, VALUES, VALUES)
def test_a_changed_value_is_always_seen(labels: dict[str, str], a: float, b: float) -> None:
    one = Result("vector", ((labels, None, a),))
    other = Result("vector", ((labels, None, b),))
    try:
        neutral_labels(labels)
    except ValueError:
        return
    assert bool(compare(one, other)) is not same_value(a, b)
