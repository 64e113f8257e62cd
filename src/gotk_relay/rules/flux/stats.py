"""The Flux rules' counters, as telemetry reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FluxStats:
    """What telemetry reads: ``objects_tracked`` is a gauge, the rest are counters."""

    objects_tracked: int = 0
    outputs_emitted: int = 0  # synthesized samples, stale markers included
    out_of_order_dropped: int = 0  # output samples not written: not after the last one written
    stale_emitted: int = 0
    objects_expired: int = 0
    objects_rejected: int = 0  # refusals of a new object at max_objects, one per batch
