"""The kube-state-metrics custom-resource-state config printed for the Flux kinds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gotk_relay.rules.flux_kinds import BY_KIND, KINDS
from gotk_relay.rules.ksm_config import render


def resources_of(text: str, fmt: str) -> list[dict[str, Any]]:
    document = yaml.safe_load(text)
    if fmt == "configmap":
        assert document["apiVersion"] == "v1"
        assert document["kind"] == "ConfigMap"
        config = yaml.safe_load(document["data"]["config.yaml"])
    else:
        ksm = document["kube-state-metrics"]
        assert ksm["customResourceState"]["enabled"] is True
        config = ksm["customResourceState"]["config"]
    assert config["kind"] == "CustomResourceStateMetrics"
    resources: list[dict[str, Any]] = config["spec"]["resources"]
    return resources


@pytest.mark.parametrize("fmt", ["configmap", "helm-values"])
def test_every_kind_with_its_group_version_and_labels(fmt: str) -> None:
    resources = resources_of(render(None, fmt), fmt)  # type: ignore[arg-type]
    assert [r["groupVersionKind"]["kind"] for r in resources] == [k.kind for k in KINDS]
    for resource in resources:
        kind = BY_KIND[resource["groupVersionKind"]["kind"]]
        assert resource["groupVersionKind"] == {
            "group": kind.group,
            "version": kind.version,
            "kind": kind.kind,
        }
        assert resource["metricNamePrefix"] == "gotk"
        (metric,) = resource["metrics"]
        assert metric["name"] == "resource_info"
        assert metric["help"] == f"The current state of a Flux {kind.kind} resource."
        assert metric["each"] == {
            "type": "Info",
            "info": {"labelsFromPath": {"name": ["metadata", "name"]}},
        }
        labels = metric["labelsFromPath"]
        assert labels["exported_namespace"] == ["metadata", "namespace"]
        assert labels["suspended"] == ["spec", "suspend"]
        if kind.has_ready:
            assert labels["ready"] == ["status", "conditions", "[type=Ready]", "status"]
        else:
            assert "ready" not in labels
        assert {
            k: v for k, v in labels.items() if k not in ("exported_namespace", "ready", "suspended")
        } == {label.name: list(label.path) for label in kind.extra_labels}


def test_label_paths_match_fluxs_published_config() -> None:
    """Spot checks against flux2-monitoring-example's kube-state-metrics-config.yaml."""
    resources = {
        r["groupVersionKind"]["kind"]: r
        for r in resources_of(render(None, "configmap"), "configmap")
    }
    helm = resources["HelmRelease"]["metrics"][0]["labelsFromPath"]
    assert helm["revision"] == ["status", "history", "0", "chartVersion"]
    assert helm["chart_source_name"] == ["spec", "chart", "spec", "sourceRef", "name"]
    assert resources["Bucket"]["metrics"][0]["labelsFromPath"]["bucket_name"] == [
        "spec",
        "bucketName",
    ]
    assert resources["ImagePolicy"]["metrics"][0]["labelsFromPath"]["source_name"] == [
        "spec",
        "imageRepositoryRef",
        "name",
    ]
    assert resources["Receiver"]["metrics"][0]["labelsFromPath"]["webhook_path"] == [
        "status",
        "webhookPath",
    ]
    assert resources["Alert"]["groupVersionKind"]["version"] == "v1beta3"


def test_helm_values_grant_list_and_watch_on_the_flux_groups() -> None:
    document = yaml.safe_load(render(None, "helm-values"))
    (rule,) = document["kube-state-metrics"]["rbac"]["extraRules"]
    assert rule["verbs"] == ["list", "watch"]
    assert set(rule["apiGroups"]) == {k.group for k in KINDS}
    assert set(rule["resources"]) == {
        "gitrepositories", "ocirepositories", "helmrepositories", "helmcharts", "buckets",
        "kustomizations", "helmreleases", "alerts", "providers", "receivers",
        "imagerepositories", "imagepolicies", "imageupdateautomations",
    }  # fmt: skip


def test_a_selection_of_kinds_and_versions() -> None:
    text = render(
        ["HelmRelease", "Kustomization"], "helm-values", versions={"HelmRelease": "v2beta2"}
    )
    resources = resources_of(text, "helm-values")
    assert [
        (r["groupVersionKind"]["kind"], r["groupVersionKind"]["version"]) for r in resources
    ] == [
        ("Kustomization", "v1"),
        ("HelmRelease", "v2beta2"),
    ]
    (rule,) = yaml.safe_load(text)["kube-state-metrics"]["rbac"]["extraRules"]
    assert rule["apiGroups"] == ["kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"]
    assert rule["resources"] == ["kustomizations", "helmreleases"]


def test_configmap_metadata() -> None:
    document = yaml.safe_load(
        render(["Bucket"], "configmap", name="ksm-flux", namespace="monitoring")
    )
    assert document["metadata"] == {"name": "ksm-flux", "namespace": "monitoring"}
    assert "config.yaml: |" in render(["Bucket"], "configmap")  # readable literal block


@pytest.mark.parametrize(
    ("kinds", "fmt", "message"),
    [
        pytest.param(["helmrelease"], "configmap", "did you mean 'HelmRelease'", id="case"),
        pytest.param(["Widget"], "configmap", "unknown Flux kind 'Widget'", id="unknown"),
        pytest.param([], "configmap", "no kinds selected", id="empty"),
        pytest.param(None, "kustomize", "unknown format 'kustomize'", id="format"),
    ],
)
def test_errors_say_what_to_fix(kinds: list[str] | None, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(kinds, fmt)  # type: ignore[arg-type]
