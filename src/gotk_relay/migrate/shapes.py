"""The three shapes of Flux object state, as queries see them, and how their labels correspond.

Facts (``docs/flux.md``, ``docs/migrate.md``): the legacy shape is two 0/1 gauges per object
(``gotk_reconcile_condition`` once per Ready status, ``gotk_suspend_status``); kube-state-metrics
and the Flux Operator write one info series per object, value 1, with the state in labels. The
tables here are the single place the rewrite and the tests take those correspondences from.
"""

from __future__ import annotations

from enum import StrEnum

CONDITION = "gotk_reconcile_condition"
SUSPEND = "gotk_suspend_status"
KSM_INFO = "gotk_resource_info"
OPERATOR_INFO = "flux_resource_info"
FLUX_METRICS = frozenset({CONDITION, SUSPEND, KSM_INFO, OPERATOR_INFO})

# The Ready statuses a legacy object has one series each for (Deleted: before Flux 2.1 only).
STATUSES = ("True", "False", "Unknown")
DELETED = "Deleted"


class Shape(StrEnum):
    LEGACY = "legacy"
    RESOURCE_INFO = "resource_info"
    FLUX_RESOURCE_INFO = "flux_resource_info"


class LabelShape(StrEnum):
    """Which legacy labels a query reads: as Prometheus stored them after scraping the
    controllers (``exported_namespace`` = the object's namespace, ``namespace`` = the
    controller's), or raw as the controllers exposed them (``namespace`` = the object's)."""

    STORED = "stored"
    RAW = "raw"


def shape_of_metric(name: str) -> Shape | None:
    if name in (CONDITION, SUSPEND):
        return Shape.LEGACY
    if name == KSM_INFO:
        return Shape.RESOURCE_INFO
    if name == OPERATOR_INFO:
        return Shape.FLUX_RESOURCE_INFO
    return None


def info_metric(shape: Shape) -> str:
    return KSM_INFO if shape is Shape.RESOURCE_INFO else OPERATOR_INFO


def kind_label(shape: Shape) -> str:
    return "customresource_kind" if shape is Shape.RESOURCE_INFO else "kind"


def object_namespace_label(shape: Shape, label_shape: LabelShape) -> str:
    if shape is Shape.LEGACY and label_shape is LabelShape.RAW:
        return "namespace"
    return "exported_namespace"


def suspended_values(shape: Shape) -> tuple[str, str]:
    """(suspended, not suspended) as the info shape spells them."""
    return ("true", "false") if shape is Shape.RESOURCE_INFO else ("True", "False")


# Labels only an info shape has: its state (``ready``, ``suspended``) and what the source adds
# per kind. None has a legacy counterpart, so a query that keeps or filters on them cannot be
# written on the legacy shape (``ready``/``suspended`` excepted: they become the gauges).
KSM_ONLY_LABELS = frozenset(
    {
        "customresource_group",
        "customresource_version",
        "revision",
        "source_name",
        "chart_name",
        "chart_version",
        "chart_app_version",
        "chart_ref_name",
        "chart_source_name",
        "url",
        "endpoint",
        "bucket_name",
        "webhook_path",
        "image",
    }
)
OPERATOR_ONLY_LABELS = frozenset({"uid", "reason", "revision", "url", "ref", "source_name", "path"})


def info_only_labels(shape: Shape) -> frozenset[str]:
    return KSM_ONLY_LABELS if shape is Shape.RESOURCE_INFO else OPERATOR_ONLY_LABELS
