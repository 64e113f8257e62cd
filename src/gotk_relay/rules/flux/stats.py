"""The Flux rules' counters, as telemetry reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FluxStats:
    """What telemetry reads: ``objects_tracked`` and ``objects_refused`` are gauges, the rest
    are counters."""

    objects_tracked: int = 0
    objects_refused: int = 0  # objects refused at max_objects and still sending (see rejected)
    outputs_emitted: int = 0  # synthesized samples, stale markers included
    out_of_order_dropped: int = 0  # output samples not written: not after the last one written
    stale_emitted: int = 0
    objects_expired: int = 0
    # Distinct objects refused at max_objects: each once while the rewriter remembers it (at
    # most max_objects of them, each until idle_expiry without a refusal or until tracked).
    objects_rejected: int = 0
