"""What the Flux rules read and write: the metric names, their metadata and the statuses."""

from __future__ import annotations

from typing import Final

from ...model import Metadata, MetricType

RESOURCE_INFO: Final = "gotk_resource_info"
# The Flux Operator's report of the same object state (flux-sources-and-consumers.md).
OPERATOR_INFO: Final = "flux_resource_info"
RECONCILE_CONDITION: Final = "gotk_reconcile_condition"
SUSPEND_STATUS: Final = "gotk_suspend_status"

CONDITION_HELP: Final = "The current condition status of a GitOps Toolkit resource reconciliation."
SUSPEND_HELP: Final = "The current suspend status of a GitOps Toolkit resource."
INFO_HELP: Final = "The current state of a Flux resource."
CONDITION_METADATA: Final = Metadata(MetricType.GAUGE, CONDITION_HELP)
SUSPEND_METADATA: Final = Metadata(MetricType.GAUGE, SUSPEND_HELP)
INFO_METADATA: Final = Metadata(MetricType.GAUGE, INFO_HELP)

STATUSES: Final = ("True", "False", "Unknown")
DELETED: Final = "Deleted"
