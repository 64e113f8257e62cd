"""Flux object-state rules: ``gotk_resource_info`` (kube-state-metrics) and ``flux_resource_info``
(the Flux Operator) ⇄ the legacy gauges.

Flux ≤ 2.1 controllers exposed, per object, ``gotk_reconcile_condition{type="Ready",status=...}``
(1 for the current status, 0 for the two others) and ``gotk_suspend_status``; Flux 2.2–2.5
expose one kube-state-metrics series ``gotk_resource_info{ready=...,suspended=...} 1`` instead.
The rules synthesize one shape from the other (``docs/flux.md`` says why they keep state, and
how):

* ``mode: legacy``        gotk_resource_info or flux_resource_info → gotk_reconcile_condition ×3
  (+ Deleted with ``emit_deleted``) and gotk_suspend_status;
* ``mode: resource_info`` the legacy pair → gotk_resource_info, and flux_resource_info written
  in gotk_resource_info's shape, series for series;
* ``mode: both``          both, each from its own inputs only (outputs are never read back);
* ``mode: off``           nothing is read; batches pass as they are.

An object is its output label set without ``status`` (legacy outputs) or ``ready``/``suspended``
(info output). A batch's Flux samples are applied in timestamp order, all of an object's samples
at one timestamp before the object is evaluated once for it:

1. A value sample newer than every value seen sets what the outputs say, and they are written
   at its timestamp if that is after the last one written. Anything older is dropped and
   counted; the same timestamp again is skipped.
2. The object is live while the input holding its newest value has no stale marker at or
   after it (with ``replica_labels``: while one replica's newest input has none; the object
   follows the first live replica's values only). When an object with open outputs stops being
   live, its outputs end after the grace (``stale_grace``; by default one of its scrape
   intervals and 5 s) of relay clock (stale markers, or the ``emit_deleted`` snapshot), unless a
   live input comes first; ``status="Deleted"`` 1 ends a reverse object's info series at once.
3. At most ``max_objects`` objects are tracked (the inputs of others pass untouched); an object
   not seen for ``idle_expiry`` is forgotten without writing anything.

The relay clock is ``now_ms`` when given, else the newest Flux sample timestamp; it never goes
back. Modules, in the order they build on each other: ``names``, ``config``, ``stats``,
``state`` (routes and per-object records), ``classify`` (what an input series is), ``emitter``
(the synthesized series and their bytes), ``operator`` (the operator's report in KSM's shape),
``tracked`` (the tracked objects, read-only, for the status page), ``rewriter``
(``FluxRewriter``), ``persist`` (its state across restarts, in the spool's database).
"""

from __future__ import annotations

from .config import FluxConfig
from .emitter import SeriesEncoder
from .names import (
    CONDITION_HELP,
    CONDITION_METADATA,
    DELETED,
    INFO_HELP,
    INFO_METADATA,
    OPERATOR_INFO,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    STATUSES,
    SUSPEND_HELP,
    SUSPEND_METADATA,
    SUSPEND_STATUS,
)
from .persist import FluxState, StateUnreadable
from .rewriter import FluxRewriter, Rewritten, Steady
from .stats import FluxStats
from .tracked import Row, Tracked, TrackedObjects

__all__ = [
    "CONDITION_HELP",
    "CONDITION_METADATA",
    "DELETED",
    "INFO_HELP",
    "INFO_METADATA",
    "OPERATOR_INFO",
    "RECONCILE_CONDITION",
    "RESOURCE_INFO",
    "STATUSES",
    "SUSPEND_HELP",
    "SUSPEND_METADATA",
    "SUSPEND_STATUS",
    "FluxConfig",
    "FluxRewriter",
    "FluxState",
    "FluxStats",
    "Rewritten",
    "Row",
    "SeriesEncoder",
    "StateUnreadable",
    "Steady",
    "Tracked",
    "TrackedObjects",
]
