"""The Flux families as their own exporters served them, from the federate store's snapshot.

Datadog's Flux check (an OpenMetrics V2 check, namespace ``fluxcd``) expects to scrape each Flux
≤ 2.1 controller's own ``/metrics`` (``openmetrics_endpoint``) and kube-state-metrics' own page
(``kube_state_metrics_endpoint``), and tags what it reads with every label it finds. What the
federate store holds went through a Prometheus scrape and the Flux rules: target labels
(``instance``, ``job``, ``pod``, external labels), the controller's ``namespace`` with the
object's moved to ``exported_namespace`` (``flux.label_shape: stored``). These pages undo that,
with the same pure functions the Datadog API destination's ``flux_integration`` uses
(``datadog_mapping.flux_labels``):

``controller_page``
    ``gotk_reconcile_condition{kind,name,namespace,type,status}`` and
    ``gotk_suspend_status{kind,name,namespace}``, ``namespace`` the object's (either label
    shape), no other label, values as stored, no timestamps, the controllers' HELP and
    ``TYPE gauge``. ``status="Deleted"`` series appear when the rules write them
    (``flux.emit_deleted``).
``ksm_page``
    ``gotk_resource_info`` with kube-state-metrics' own labels for the kind (``customresource_*``,
    ``name``, ``exported_namespace`` — a literal label of Flux's KSM config, so the object's
    namespace —, ``ready``, ``suspended``, the kind's extra labels), the scrape's renames undone.

One object, several sources: two KSM replicas (or two clusters through one relay) give the same
object twice, told apart only by labels these pages remove. Per object (kind, namespace, name;
for KSM also the group) the page shows the series of one source only: the one whose removed
labels sort first (e.g. the smallest ``instance``), so all of an object's lines come from the
same replica, the choice is the same for every render of the same data, and when that replica's
series end (a stale marker removes them from the store) the next one takes over on the next
scrape. Any line still equal to one already kept is dropped. ``Page.collapsed`` counts the
series left out.

kube-state-metrics serves one series per object; during a Ready change the store holds the old
one (``ready="True"``) beside the new one until the old one's stale marker comes. The KSM page
shows the newest of an object's series from its source only (``Page.superseded`` counts the
others), as KSM itself did at that scrape.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Final, NamedTuple, TypeVar

from ..model import FamilyMetadata, Labels, MetricType
from ..rules.flux import (
    CONDITION_HELP,
    INFO_HELP,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    SUSPEND_HELP,
    SUSPEND_STATUS,
)
from ..selectors import Predicate
from ..wire import text
from .datadog_mapping import flux_labels
from .federate import CHECK_EVERY, SORT_RUN, Abandoned, Snapshot

_T = TypeVar("_T")

_CONTROLLER_NEEDS: Final = {
    RECONCILE_CONDITION: ("kind", "name", "namespace", "type", "status"),
    SUSPEND_STATUS: ("kind", "name", "namespace"),
}
_CONTROLLER_METADATA: Final = {
    RECONCILE_CONDITION: FamilyMetadata(RECONCILE_CONDITION, MetricType.GAUGE, CONDITION_HELP),
    SUSPEND_STATUS: FamilyMetadata(SUSPEND_STATUS, MetricType.GAUGE, SUSPEND_HELP),
}
_KSM_NEEDS: Final = ("customresource_group", "customresource_kind", "name")


class Page(NamedTuple):
    """A page's text; how many stored series it left out as another source's copy
    (``collapsed``), and as an older series of an object its source reports anew
    (``superseded``: KSM's series of a Ready change, until the stale marker of the old one)."""

    text: str
    collapsed: int
    superseded: int = 0


# A stored series: its object, its source (the labels the page removes), its page labels, its
# stored labels (the last tie-break), its value and its timestamp.
_Row = tuple[tuple[str, ...], Labels, Labels, Labels, float, int]


def _source(labels: Labels, shown: Collection[str]) -> Labels:
    """The labels of ``labels`` the page does not show, the scrape's renames of shown ones
    aside: what tells two sources apart (the controller's ``namespace`` of the stored shape is
    the same for every source, so the order of sources is the same in either shape)."""
    return tuple(
        (key, value)
        for key, value in labels
        if key != "__name__"
        and key not in shown
        and not (key.startswith("exported_") and key[len("exported_") :] in shown)
    )


def _rows(
    snapshot: Snapshot,
    needs: dict[str, tuple[str, ...]],
    object_keys: tuple[str, ...],
    stop: threading.Event | None,
    selectors: Predicate | None,
) -> Iterable[_Row]:
    for i, (labels, value, ts) in enumerate(snapshot.points):
        if stop is not None and i % CHECK_EVERY == 0 and stop.is_set():
            raise Abandoned
        name = labels[0][1] if labels and labels[0][0] == "__name__" else ""
        required = needs.get(name)
        if required is None or (selectors is not None and not selectors(labels)):
            continue
        shown = flux_labels(name, labels)
        if shown is None:
            continue
        own = dict(shown)
        if any(not own.get(key) for key in required):
            continue  # not an object series a controller or KSM could have written
        # An object's condition and suspend series share its key: one source for both.
        obj = tuple(own.get(key, "") for key in object_keys)
        yield obj, _source(labels, own), shown, labels, value, -1 if ts is None else ts


def _ordered(items: list[_T], key: Callable[[_T], Any]) -> Iterator[_T]:
    """``items`` sorted by ``key``, in short runs merged: one sorted() over a large store would
    hold the GIL for its whole length, stalling the event loop (as render_snapshot does)."""
    runs = [sorted(items[i : i + SORT_RUN], key=key) for i in range(0, len(items), SORT_RUN)]
    return iter(runs[0]) if len(runs) == 1 else heapq.merge(*runs, key=key)


def _page(rows: Iterable[_Row], metadata: dict[str, FamilyMetadata], newest: bool) -> Page:
    """The rows of each object's first source (by its removed labels), one line per label set,
    sorted by labels as /federate and Prometheus' exporters write them; with ``newest``, only
    the newest series of an object from that source (the rest are ``superseded``)."""
    # Per object: the first source, and its newest timestamp (negated, to take the minimum).
    chosen: dict[tuple[str, ...], tuple[Labels, int]] = {}
    listed = list(rows)
    for obj, source, _, _, _, ts in listed:
        best = chosen.get(obj)
        if best is None or (source, -ts) < best:
            chosen[obj] = (source, -ts)
    lines: dict[Labels, float] = {}
    collapsed = superseded = 0
    for obj, source, shown, _, value, ts in _ordered(listed, lambda row: row[1:4]):
        best_source, newest_ts = chosen[obj]
        if source != best_source:
            collapsed += 1
        elif newest and ts < -newest_ts:
            superseded += 1
        elif shown in lines:
            collapsed += 1  # two stored series that differ only in labels of no source
        else:
            lines[shown] = value
    ordered = _ordered(list(lines.items()), lambda line: line[0])
    points = [(shown, value, None) for shown, value in ordered]
    return Page(text.render(points, metadata), collapsed, superseded)


def controller_page(
    snapshot: Snapshot, stop: threading.Event | None = None, selectors: Predicate | None = None
) -> Page:
    """``gotk_reconcile_condition`` and ``gotk_suspend_status`` as a Flux ≤ 2.1 controller's
    ``/metrics`` served them (see the module docstring), from the stored series that match
    ``selectors`` (on their stored labels: e.g. one cluster's) when given. Raises ``Abandoned``
    once ``stop`` is set."""
    keys = ("kind", "namespace", "name")
    rows = _rows(snapshot, dict(_CONTROLLER_NEEDS), keys, stop, selectors)
    # A controller's object writes a fixed set of series: all of them are current.
    return _page(rows, dict(_CONTROLLER_METADATA), newest=False)


def ksm_page(
    snapshot: Snapshot, stop: threading.Event | None = None, selectors: Predicate | None = None
) -> Page:
    """``gotk_resource_info`` as kube-state-metrics with Flux's custom-resource config serves
    it (see the module docstring), from the stored series that match ``selectors`` when given.
    Its HELP is the one the store holds for it (what Prometheus sent), else Flux's config's;
    its type is gauge (an Info metric, as KSM writes it)."""
    keys = ("customresource_group", "customresource_kind", "exported_namespace", "name")
    rows = _rows(snapshot, {RESOURCE_INFO: _KSM_NEEDS}, keys, stop, selectors)
    stored = snapshot.metadata.get(RESOURCE_INFO)
    help_text = stored.help if stored is not None and stored.help else INFO_HELP
    # KSM serves one series per object: during a Ready change the store holds the old one too
    # until its stale marker comes, but it is older than the new one.
    metadata = {RESOURCE_INFO: FamilyMetadata(RESOURCE_INFO, MetricType.GAUGE, help_text)}
    return _page(rows, metadata, newest=True)
