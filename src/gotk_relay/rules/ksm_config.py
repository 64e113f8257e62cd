"""kube-state-metrics custom-resource-state config for the Flux kinds (``gotk-relay ksm-config``).

Flux 2.2+ leaves object state to kube-state-metrics; this prints the config that makes KSM expose
``gotk_resource_info`` exactly as Flux's published example does (``metricNamePrefix: gotk``, one
``resource_info`` Info metric per kind, ``name``/``exported_namespace``/``ready``/``suspended``
plus per-kind labels), from the same table the rewriter matches on, so the two cannot disagree.

Two shapes:

* ``configmap``: a ConfigMap whose ``config.yaml`` key a standalone KSM reads with
  ``--custom-resource-state-config-file``;
* ``helm-values``: values for kube-prometheus-stack (``kube-state-metrics:`` sub-chart) with
  ``customResourceState`` and the RBAC rules KSM needs to list/watch the Flux API groups.

Output is ``yaml.safe_dump``-equivalent: a ``SafeDumper`` subclass that only chooses styles (a
literal block for the embedded config, ``[a, b]`` for label paths), so it reads like Flux's file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import yaml

from .flux_kinds import (
    BY_KIND,
    KINDS,
    NAME_LABEL,
    NAMESPACE_LABEL,
    READY_LABEL,
    SUSPENDED_LABEL,
    FluxKind,
    suggest,
)

Format = Literal["configmap", "helm-values"]
FORMATS: Final[tuple[str, ...]] = ("configmap", "helm-values")
METRIC_PREFIX: Final = "gotk"
CONFIGMAP_NAME: Final = "flux-kube-state-metrics-config"


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings as ``|`` blocks and label paths as ``[a, b]``."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    flow = all(isinstance(item, str) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def _select(kinds: Sequence[str] | None) -> list[FluxKind]:
    if kinds is None:
        return list(KINDS)
    if isinstance(kinds, str):
        raise TypeError("kinds must be a sequence of kind names, not one string")
    if not kinds:
        raise ValueError("no kinds selected; name at least one, or pass None for all")
    unknown = [k for k in kinds if k not in BY_KIND]
    if unknown:
        raise ValueError(f"unknown Flux kind {unknown[0]!r}; {suggest(unknown[0])}")
    wanted = set(kinds)
    return [k for k in KINDS if k.kind in wanted]  # table order: stable output


def resource(kind: FluxKind, version: str | None = None) -> dict[str, Any]:
    """One ``spec.resources`` entry, as Flux's example writes it."""
    labels = [NAMESPACE_LABEL]
    if kind.has_ready:
        labels.append(READY_LABEL)
    labels.append(SUSPENDED_LABEL)
    labels.extend(kind.extra_labels)
    return {
        "groupVersionKind": {
            "group": kind.group,
            "version": version or kind.version,
            "kind": kind.kind,
        },
        "metricNamePrefix": METRIC_PREFIX,
        "metrics": [
            {
                "name": "resource_info",
                "help": f"The current state of a Flux {kind.kind} resource.",
                "each": {
                    "type": "Info",
                    "info": {"labelsFromPath": {NAME_LABEL.name: list(NAME_LABEL.path)}},
                },
                "labelsFromPath": {label.name: list(label.path) for label in labels},
            }
        ],
    }


def config(
    kinds: Sequence[str] | None = None, versions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The custom-resource-state config as data (``kind: CustomResourceStateMetrics``)."""
    chosen = _select(kinds)
    versions = versions or {}
    return {
        "kind": "CustomResourceStateMetrics",
        "spec": {"resources": [resource(k, versions.get(k.kind)) for k in chosen]},
    }


def rbac_rule(kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """The ClusterRole rule KSM needs: list/watch on the selected kinds."""
    chosen = _select(kinds)
    return {
        "apiGroups": list(dict.fromkeys(k.group for k in chosen)),
        "resources": [k.plural for k in chosen],
        "verbs": ["list", "watch"],
    }


def render(
    kinds: Sequence[str] | None = None,
    fmt: Format = "configmap",
    *,
    versions: Mapping[str, str] | None = None,
    name: str = CONFIGMAP_NAME,
    namespace: str | None = None,
) -> str:
    """YAML text for ``kinds`` (all Flux kinds when None) in the shape ``fmt`` names.

    ``versions`` overrides the per-kind API version (e.g. ``{"HelmRelease": "v2beta2"}`` on a
    cluster that has not upgraded); ``name``/``namespace`` are the ConfigMap's.
    """
    data = config(kinds, versions)
    if fmt == "configmap":
        metadata: dict[str, str] = {"name": name}
        if namespace:
            metadata["namespace"] = namespace
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {"config.yaml": _dump(data)},
        }
        header = (
            "# kube-state-metrics custom-resource-state config for Flux (gotk_resource_info).\n"
            "# Mount it and run KSM with --custom-resource-state-config-file=<mount>/config.yaml;\n"
            "# KSM also needs list/watch RBAC on the Flux API groups.\n"
        )
        return header + _dump(manifest)
    if fmt == "helm-values":
        values = {
            "kube-state-metrics": {
                "rbac": {"extraRules": [rbac_rule(kinds)]},
                "customResourceState": {"enabled": True, "config": data},
            }
        }
        header = (
            "# Values for kube-prometheus-stack: KSM exposes gotk_resource_info for Flux objects.\n"
            "# For the kube-state-metrics chart itself, use what is under kube-state-metrics:\n"
            "# as top-level values. Merge extraRules with any you already have.\n"
        )
        return header + _dump(values)
    raise ValueError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
