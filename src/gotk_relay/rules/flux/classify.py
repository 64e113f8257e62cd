"""What an input series is to the Flux rules: its route, worked out once per label set."""

from __future__ import annotations

from typing import Final

from ...caches import SLICE, evict_oldest
from ...identity import IdentityMap
from ...model import Labels, labels_from
from ..flux_kinds import BY_KIND, FluxKind
from .config import FluxConfig
from .names import (
    CONDITION_METADATA,
    DELETED,
    OPERATOR_INFO,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    STATUSES,
    SUSPEND_METADATA,
    SUSPEND_STATUS,
)
from .state import Outputs, Route, Values

_LEGACY_STATUSES: Final = frozenset((*STATUSES, DELETED))
# Labels KSM's Flux config writes on every kind besides name/exported_namespace.
_KSM_COMMON: Final = frozenset(
    ("customresource_group", "customresource_kind", "customresource_version", "ready", "suspended")
)
_KSM_OWN: Final = {k.kind: _KSM_COMMON | k.extra_label_names for k in BY_KIND.values()}
# Labels the Flux Operator writes on flux_resource_info besides name/exported_namespace: none of
# them is part of an object's identity (uid changes when an object is re-created).
_OPERATOR_OWN: Final = frozenset(
    ("kind", "ready", "suspended", "reason", "revision", "uid", "url", "ref", "source_name", "path")
)
# Condition statuses as sources spell them (KSM's config and the operator differ in case).
_STATUS: Final = {status.lower(): status for status in STATUSES}
# Labels of a legacy series that the info shape expresses otherwise (or not at all).
_LEGACY_OWN: Final = frozenset(
    ("__name__", "kind", "type", "status", "namespace", "exported_namespace", "ready", "suspended")
)
_EXPORTED: Final = "exported_"
_SHARED_PAIRS_MAX: Final = 16_384

# A label set of a Flux metric name that is not a Flux object (cached like a route).
NOT_FLUX: Final = Route((), False, (), next(iter(BY_KIND.values())))


def _status(value: str) -> str:
    """A Ready status however a source spells it; absent, empty or anything else is Unknown."""
    return _STATUS.get(value.lower(), "Unknown")


def _ksm_value(labels: dict[str, str], name: str) -> str:
    """A KSM label's value; ``exported_<name>`` if a scrape target label took the plain name."""
    return labels.get(_EXPORTED + name, labels.get(name, ""))


class Classifier:
    """Routes input label sets (cached); builds the output label sets and values objects share."""

    def __init__(self, config: FluxConfig) -> None:
        self.config = config
        # The condition statuses forward objects write, in output order.
        self.statuses = (*STATUSES, DELETED) if config.emit_deleted else STATUSES
        # The forward outputs' metadata, in output order: one tuple for every object.
        self._metadata = (CONDITION_METADATA,) * len(self.statuses) + (SUSPEND_METADATA,)
        self.routes: dict[Labels, Route] = {}
        # The same routes by the identity of the labels tuple they were worked out for: a
        # decoder that caches label sets (wire.picked) hands the same tuple every scrape, found
        # here without hashing its pairs. Each route holds its tuple, keeping it alive.
        self.by_id: IdentityMap[Route] = IdentityMap()
        self.cache_max = max(4096, 4 * config.max_objects)
        self._values: dict[tuple[str, bool], Values] = {}  # forward outputs per ready/suspended
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}  # see share

    def route(self, labels: Labels, name: str) -> Route:
        """The route of ``labels``, whose metric name ``name`` is one the rules read."""
        route = self.routes.get(labels)
        if route is not None:
            return route
        if name == RESOURCE_INFO:
            route = self._classify_info(labels)
        elif name == OPERATOR_INFO:
            route = self._classify_operator(labels)
        else:
            route = self._classify_legacy(labels, name)
        if len(self.routes) >= self.cache_max:
            # The oldest slice, never all: a full cache would route every object again at once.
            by_id = self.by_id
            for dropped in evict_oldest(self.routes, max(1, self.cache_max // SLICE)):
                by_id.pop(dropped, None)
        self.routes[labels] = route
        if route is not NOT_FLUX:
            self.by_id[labels] = route
        return route

    def _classify_info(self, labels: Labels) -> Route:
        given = dict(labels)
        kind = BY_KIND.get(_ksm_value(given, "customresource_kind"))
        if kind is None or _ksm_value(given, "customresource_group") != kind.group:
            return NOT_FLUX
        if not given.get("name"):
            return NOT_FLUX
        own = _KSM_OWN[kind.kind]
        ready = _status(_ksm_value(given, "ready"))
        suspended = _ksm_value(given, "suspended").lower() == "true"
        return self._forward(labels, given, own, kind, ready, suspended)

    def _classify_operator(self, labels: Labels) -> Route:
        """``flux_resource_info`` of the Flux Operator: ``kind`` names the kind, ``ready`` and
        ``suspended`` are capitalised and always present (a kind without a Ready condition
        reports ``Unknown``; Alert, Provider and OCI HelmRepository always ``True``)."""
        given = dict(labels)
        kind = BY_KIND.get(_ksm_value(given, "kind"))
        if kind is None or not given.get("name"):
            return NOT_FLUX  # one of the operator's own kinds (FluxInstance, ResourceSet, ...)
        ready = _status(_ksm_value(given, "ready"))
        suspended = _ksm_value(given, "suspended").lower() == "true"
        return self._forward(labels, given, _OPERATOR_OWN, kind, ready, suspended)

    def _forward(
        self,
        labels: Labels,
        given: dict[str, str],
        own: frozenset[str],
        kind: FluxKind,
        ready: str,
        suspended: bool,
    ) -> Route:
        """The route of an object-state series (``own``: the labels its source writes besides
        name and namespace): its object's identity is the rest, the scrape's labels included."""
        # Label name → pair; the input's own pairs are kept (see share).
        out: dict[str, tuple[str, str]] = {}
        for pair in labels:
            key = pair[0]
            if key in own:
                if _EXPORTED + key in given:  # the scrape's label; the source's was renamed
                    out[key] = pair
            elif not (key.startswith(_EXPORTED) and key[len(_EXPORTED) :] in own):
                out[key] = pair
        for key in ("__name__", "type", "status", "exported_namespace"):
            out.pop(key, None)
        # Replicas of one source report the same object: their labels are no part of it.
        replica = tuple(given.get(name, "") for name in self.config.replica_labels)
        for key in self.config.replica_labels:
            out.pop(key, None)
        namespace = given.get("exported_namespace") or given.get("namespace", "")
        share = self.share
        if self.config.label_shape == "stored":
            out["exported_namespace"] = share(("exported_namespace", namespace))
            out["namespace"] = share(("namespace", self.config.controller_namespace))
        else:
            out["namespace"] = share(("namespace", namespace))
        if self.config.set_job:
            out["job"] = share(("job", kind.controller))
        out["kind"] = share(("kind", kind.kind))
        return Route(
            labels,
            True,
            labels_from(out.values()),
            kind,
            ready=ready,
            suspended=suspended,
            values=self.forward_values(ready, suspended),
            replica=replica,
        )

    def forward_outputs(self, key: Labels) -> Outputs:
        """The legacy series a forward object with identity ``key`` writes, and their metadata."""
        base = dict(key)
        conditions = [
            {**base, "__name__": RECONCILE_CONDITION, "type": "Ready", "status": status}
            for status in self.statuses
        ]
        # The outputs share their label pairs with the object's key (all but __name__, type and
        # status are the same), and those three with every other object's outputs.
        pairs = {pair: pair for pair in key}
        share = self.share
        names = tuple(
            tuple([pairs.get(pair) or share(pair) for pair in labels_from(labels)])
            for labels in (*conditions, {**base, "__name__": SUSPEND_STATUS})
        )
        return names, self._metadata

    def forward_values(self, ready: str, suspended: bool) -> Values:
        values = self._values.get((ready, suspended))
        if values is None:
            conditions = tuple(1.0 if status == ready else 0.0 for status in self.statuses)
            values = self._values[(ready, suspended)] = (*conditions, 1.0 if suspended else 0.0)
        return values

    def _classify_legacy(self, labels: Labels, name: str) -> Route:
        given = dict(labels)
        kind = BY_KIND.get(given.get("kind", ""))
        if kind is None or not given.get("name"):
            return NOT_FLUX
        status = ""
        if name == RECONCILE_CONDITION:
            status = given.get("status", "")
            if given.get("type") != "Ready" or status not in _LEGACY_STATUSES:
                return NOT_FLUX
        out = {pair[0]: pair for pair in labels if pair[0] not in _LEGACY_OWN}
        share = self.share
        out["customresource_group"] = share(("customresource_group", kind.group))
        out["customresource_kind"] = share(("customresource_kind", kind.kind))
        out["customresource_version"] = share(
            ("customresource_version", self.config.versions[kind.kind])
        )
        exported = given.get("exported_namespace", "")
        namespace = exported or given.get("namespace", "")
        out["exported_namespace"] = share(("exported_namespace", namespace))
        if exported and given.get("namespace"):
            # The stored shape: `namespace` is the controller's, which exposed the series, as
            # job/instance/pod are; KSM's series keep their exposer's namespace the same way.
            out["namespace"] = share(("namespace", given["namespace"]))
        return Route(labels, False, labels_from(out.values()), kind, status=status)

    def share(self, pair: tuple[str, str]) -> tuple[str, str]:
        """One tuple for each label pair the rules add (a namespace, a kind, a job, a status).

        A Flux object's key and outputs hold these pairs and the input's own ones rather than
        copies: with thousands of objects, the copies were a third of the rewriter's memory.
        Bounded: emptied when full (the pairs stay valid; only the sharing restarts).
        """
        pairs = self._pairs
        found = pairs.get(pair)
        if found is None:
            if len(pairs) >= _SHARED_PAIRS_MAX:
                pairs.clear()
            found = pairs[pair] = pair
        return found
