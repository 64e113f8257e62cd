"""The Flux Operator's ``flux_resource_info`` in kube-state-metrics' shape (``gotk_resource_info``).

For dashboards and alerts built on KSM's metric (the flux2-monitoring-example ones) when the
object state comes from the Flux Operator. The two describe a state change alike (a new series,
the old one's stale marker), so the mapping is per series and stateless: every sample, stale
markers included, keeps its value bits and timestamp, and each series keeps its order. The
operator's ``kind`` becomes ``customresource_kind`` (with KSM's ``customresource_group`` and
``customresource_version``), ``suspended`` is lower-cased as KSM writes it, and every other label
stays, ``uid`` and ``reason`` included: dropping them could give two operator series one KSM label
set (a re-created object's old and new series at one timestamp), which no receiver accepts.
"""

from __future__ import annotations

from typing import Final

from ...caches import Bounded, family
from ...model import Labels, labels_from
from ..flux_kinds import BY_KIND
from .config import FluxConfig
from .names import RESOURCE_INFO

_EXPORTED: Final = "exported_"
LABELS: Final = family("flux_operator_labels", 16_384)


class OperatorMapping:
    """``flux_resource_info`` label sets as ``gotk_resource_info`` ones, cached per label set."""

    def __init__(self, config: FluxConfig) -> None:
        self.versions = config.versions
        # One entry per object the rules may track, so a full fleet never misses on a round.
        self.cache: Bounded[Labels, Labels | None] = LABELS.new(
            max(LABELS.limit, config.max_objects)
        )

    def labels(self, labels: Labels) -> Labels | None:
        """The KSM-shaped label set, or None for a kind that is not a Flux object's."""
        entries = self.cache.entries
        if labels in entries:
            return entries[labels]
        mapped = self._map(labels)
        if len(entries) >= self.cache.limit:
            self.cache.make_room()
        entries[labels] = mapped
        return mapped

    def _map(self, labels: Labels) -> Labels | None:
        given = dict(labels)
        kind_label = _EXPORTED + "kind" if _EXPORTED + "kind" in given else "kind"
        kind = BY_KIND.get(given.get(kind_label, ""))
        if kind is None or not given.get("name"):
            return None  # one of the operator's own kinds (FluxInstance, ResourceSet, ...)
        out = {k: v for k, v in given.items() if k != kind_label}
        out["__name__"] = RESOURCE_INFO
        for key in ("suspended", _EXPORTED + "suspended"):
            if key in out:
                out[key] = out[key].lower()
        out["customresource_group"] = kind.group
        out["customresource_kind"] = kind.kind
        out["customresource_version"] = self.versions[kind.kind]
        return labels_from(out)
