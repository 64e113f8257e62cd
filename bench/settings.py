"""What a benchmark run measures and with which knobs: the workloads, the systems, the settings.

Every other module of the runner reads these; the CLI (``run.py``) builds a :class:`Settings`
from its flags, and the report records it so a number can be traced to how it was got.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from bench.variants import VARIANTS

#: Share of each workload's series that are Flux ``gotk_resource_info`` series.
WORKLOADS: Final = {"cluster": 0.001, "flux-heavy": 0.05}
SYSTEMS: Final = ("gotk-relay", "vmagent", "vmagent-relabel")
SINK_NICE_DURING_LATENCY: Final = 10  # the sink yields its core to the loader (phases.py says why)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a run; recorded in the JSON so a number can be traced to how it was got."""

    duration: float = 8.0
    warmup: float = 1.0  # 0: no warm-up phase
    max_rounds: int | None = None  # cap on rounds per phase (smoke: keeps the sink's work small)
    connections: int = 4
    series: int = 50_000
    batch_size: int = 2000
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    systems: tuple[str, ...] = SYSTEMS
    variants: tuple[str, ...] = tuple(VARIANTS)  # issue 17's configurations (variants.py)
    full_verify: bool = False
    memory_series: tuple[int, int] = (50_000, 1_000_000)  # small, big (big = 20 replicas)
    memory_rounds: tuple[int, int] = (2, 1)  # every series sent this many times
    memory_timeout: float = 80.0  # per run; a relay too slow for it reports what it got
    drain_timeout: float = 30.0
    pinned: bool = True
    smoke: bool = False
    relay_validation: str = ""  # receiver.validation of gotk-relay; "" = its default (full)
    relay_workers: int = 1  # receiver.workers of gotk-relay (processes taking connections)
    relay_cores: tuple[int, ...] = ()  # cores gotk-relay (all its processes) runs on; () = SUT_CORE
    latency_slice: float = 2.0  # seconds per system/floor alternation in the latency phase

    def to_json(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SMOKE: Final = Settings(
    duration=0.5,
    warmup=0.0,
    max_rounds=3,
    connections=2,
    series=2000,
    batch_size=250,
    full_verify=True,
    memory_series=(2000, 20_000),
    memory_rounds=(2, 1),
    memory_timeout=20.0,
    drain_timeout=10.0,
    smoke=True,
)
