"""What a benchmark run found, as typed records: each phase, each system's row, the memory runs,
the comparisons and the goals' verdicts.

:mod:`phases` makes them (:mod:`processes` the machine's), :mod:`report` reads them; each
record's ``to_json`` gives its part of the JSON report (the tests and docs read that shape: keys
and their order are kept as they are).
Figures are rounded where the JSON has them rounded, so the tables print what the JSON says.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from bench.settings import SINK_NICE_DURING_LATENCY, Settings
from tests.support import loadgen

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def _flat(record: DataclassInstance) -> dict[str, object]:
    """A record of plain values as JSON: its fields in their order (the JSON's order)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole else None


@dataclass(frozen=True, slots=True)
class Machine:
    """The machine a run measured on, and how busy it was when the run began."""

    cpu_model: str
    cores: int | None
    memory_bytes: int
    kernel: str
    python: str
    load_average_before: tuple[float, float, float]
    sut_core: int
    loader_core: int

    def to_json(self) -> dict[str, object]:
        return _flat(self)


@dataclass(slots=True)
class Phase:
    """One measured phase of one system: the loader's counts, the CPU and wall time it took,
    and what the sink had once it was drained."""

    result: loadgen.PhaseResult
    wall: float  # phase start to last answer
    sut_cpu: float  # phase start to last answer
    sut_cpu_drained: float  # phase start to drained
    drain_wall: float  # phase start to drained
    loader_cpu: float  # this process + the sink, phase start to last answer
    core_busy: float  # the system's core, busy with anything, phase start to last answer
    steal: float  # every core, taken by the hypervisor, phase start to last answer
    delivered: Counter[str]  # per destination
    expected: Counter[str]

    @property
    def ok(self) -> bool:
        return +self.delivered == +self.expected

    @property
    def accepted_per_s(self) -> float:
        return round(self.result.accepted_per_second, 1)

    @property
    def samples_per_cpu_s(self) -> float | None:
        """Accepted samples per CPU-second of the system, its forwarding until drained included."""
        if self.sut_cpu_drained <= 0:
            return None
        return round(self.result.accepted_samples / self.sut_cpu_drained, 1)

    @property
    def sut_core_utilisation(self) -> float | None:
        return _share(self.sut_cpu, self.wall)

    @property
    def loader_core_utilisation(self) -> float | None:
        return _share(self.loader_cpu, self.wall)

    @property
    def sut_core_foreign_utilisation(self) -> float | None:
        """The share of the system's core that other processes took."""
        return _share(max(0.0, self.core_busy - self.sut_cpu), self.wall)

    @property
    def steal_ms(self) -> int:
        return round(self.steal * 1000)

    def percentile_ms(self, q: float) -> float:
        return round(self.result.percentile(q) * 1000, 3)

    def to_json(self) -> dict[str, object]:
        return {
            **self.result.summary(),
            "sut_cpu_s": round(self.sut_cpu, 3),
            "sut_cpu_s_until_drained": round(self.sut_cpu_drained, 3),
            "sut_core_utilisation": self.sut_core_utilisation,
            "loader_core_utilisation": self.loader_core_utilisation,
            "sut_core_foreign_utilisation": self.sut_core_foreign_utilisation,
            "steal_ms": self.steal_ms,
            "drained_after_s": round(self.drain_wall, 3),
            "delivered_samples": sum(self.delivered.values()),
            "expected_samples": sum(self.expected.values()),
            "delivered_by_destination": dict(self.delivered),
            "expected_by_destination": dict(+self.expected),
            "delivered_ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class FloorFigures:
    """The bare receiver's latency in the latency phase's alternate slices (see
    :class:`phases.Floor`)."""

    requests: int
    accepted_requests: int
    late_sends: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    steal_ms: int
    target_rate_per_s: float
    slices: int

    def to_json(self) -> dict[str, object]:
        return _flat(self)


@dataclass(frozen=True, slots=True)
class SystemResult:
    """One system in one configuration on one workload: a row of the tables.

    The rates and CPU shares are the throughput phase's (``throughput.samples_per_cpu_s``...),
    the latencies the latency phase's; what the phases do not hold (memory, the sink's counts,
    the floor's difference) is kept as measured.
    """

    system: str
    variant: str
    workload: str
    expectation: str  # the key of variants.expectation: "<variant>/<system>"
    warmup: Phase | None
    throughput: Phase
    latency: Phase | None  # the plain configuration only
    latency_rate: float  # the latency phase's target: half the throughput phase's rate
    latency_floor: FloorFigures | None
    latency_added_p50_ms: float | None  # system minus bare receiver, same slices
    latency_added_p99_ms: float | None
    peak_rss_bytes: int  # VmHWM over every phase
    latency_peak_rss_bytes: int | None  # VmHWM over the latency phase alone, if reset
    rss_end_bytes: int
    delivered_by_destination: dict[str, int]  # the sink's counts at the end
    expected_by_destination: dict[str, int]
    remote_write_protocol_ok: bool
    accepted_samples: int
    accepted_flux_samples: int
    delivered_ok: bool  # every phase exact, the right protocol, no crash, verified
    exit_code_during_run: int | None
    sink: dict[str, Any]  # the sink's /stats, as it answered
    verification: dict[str, Any] | None  # the sink's /verify (--full-verify, --smoke)
    relay_self_report: dict[str, float]

    @property
    def latency_p50_ms(self) -> float | None:
        return self.latency.percentile_ms(0.5) if self.latency is not None else None

    @property
    def latency_p99_ms(self) -> float | None:
        return self.latency.percentile_ms(0.99) if self.latency is not None else None

    @property
    def latency_steal_ms(self) -> int | None:
        return self.latency.steal_ms if self.latency is not None else None

    @property
    def delivered_samples(self) -> int:
        return sum(self.delivered_by_destination.values())

    @property
    def expected_samples(self) -> int:
        return sum(self.expected_by_destination.values())

    def to_json(self) -> dict[str, object]:
        latency = None
        if self.latency is not None:
            latency = {**self.latency.to_json(), "target_rate_per_s": round(self.latency_rate, 1)}
        return {
            "system": self.system,
            "variant": self.variant,
            "workload": self.workload,
            "expectation": self.expectation,
            "warmup": self.warmup.to_json() if self.warmup is not None else None,
            "throughput": self.throughput.to_json(),
            "latency": latency,
            "accepted_per_s": self.throughput.accepted_per_s,
            "samples_per_cpu_s": self.throughput.samples_per_cpu_s,
            "sut_core_utilisation": self.throughput.sut_core_utilisation,
            "sut_core_foreign_utilisation": self.throughput.sut_core_foreign_utilisation,
            "loader_core_utilisation": self.throughput.loader_core_utilisation,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_steal_ms": self.latency_steal_ms,
            "latency_floor": self.latency_floor.to_json() if self.latency_floor else None,
            "latency_added_p50_ms": self.latency_added_p50_ms,
            "latency_added_p99_ms": self.latency_added_p99_ms,
            "peak_rss_bytes": self.peak_rss_bytes,
            "latency_peak_rss_bytes": self.latency_peak_rss_bytes,
            "rss_end_bytes": self.rss_end_bytes,
            "delivered_samples": self.delivered_samples,
            "expected_samples": self.expected_samples,
            "delivered_by_destination": self.delivered_by_destination,
            "expected_by_destination": self.expected_by_destination,
            "remote_write_protocol_ok": self.remote_write_protocol_ok,
            "accepted_samples": self.accepted_samples,
            "accepted_flux_samples": self.accepted_flux_samples,
            "delivered_ok": self.delivered_ok,
            "exit_code_during_run": self.exit_code_during_run,
            "sink": self.sink,
            "verification": self.verification,
            "relay_self_report": self.relay_self_report,
        }


@dataclass(frozen=True, slots=True)
class MemoryRow:
    """gotk-relay's memory after taking ``series`` distinct pass-through series ``rounds``
    times (or as many as it took within the run's time bound)."""

    series: int
    replicas: int
    rounds: int
    rss_idle_bytes: int  # ready, before the first request
    peak_rss_bytes: int
    rss_end_bytes: int
    phase: Phase

    @property
    def samples_pushed(self) -> int:
        return self.phase.result.accepted_samples

    @property
    def distinct_series_pushed(self) -> int:
        return min(self.samples_pushed, self.series)

    @property
    def complete(self) -> bool:
        return self.samples_pushed == self.rounds * self.series

    @property
    def accepted_per_s(self) -> float:
        return self.phase.accepted_per_s

    @property
    def delivered_ok(self) -> bool:
        return self.phase.ok

    def to_json(self) -> dict[str, object]:
        return {
            "series": self.series,
            "replicas": self.replicas,
            "rounds": self.rounds,
            "samples_pushed": self.samples_pushed,
            "distinct_series_pushed": self.distinct_series_pushed,
            "complete": self.complete,
            "accepted_per_s": self.accepted_per_s,
            "rss_idle_bytes": self.rss_idle_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_end_bytes": self.rss_end_bytes,
            "delivered_ok": self.delivered_ok,
            "phase": self.phase.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Ratio:
    """gotk-relay's plain figures over one vmagent system's, on one workload (above 1: the
    relay has more of it); None where either figure is missing or zero."""

    name: str  # "relay/vmagent" or "relay/vmagent-relabel"
    workload: str
    accepted_per_s: float | None
    samples_per_cpu_s: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    peak_rss_bytes: float | None
    latency_peak_rss_bytes: float | None

    def to_json(self) -> dict[str, object]:
        return _flat(self)


@dataclass(frozen=True, slots=True)
class ConfigurationRow:
    """One of issue 17's configurations on one workload: the relay beside vmagent with the same
    feature (None where vmagent has none or did not run) and beside its own plain figure."""

    variant: str
    workload: str
    relay_samples_per_cpu_s: float | None
    vmagent_samples_per_cpu_s: float | None
    ratio: float | None
    ratio_to_plain: float | None
    relay_peak_rss_bytes: int
    vmagent_peak_rss_bytes: int | None
    relay_verified: bool
    vmagent_verified: bool | None
    plain_verified: bool | None

    def to_json(self) -> dict[str, object]:
        return _flat(self)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One goal, this run's figure for it and whether it was met (a figure whose rows were not
    delivered exactly meets nothing)."""

    goal: str
    figure: float | None
    target: float
    at_least: bool  # the figure must be >= target (else <=)
    met: bool

    @classmethod
    def judge(
        cls, goal: str, figure: float | None, target: float, at_least: bool, ok: bool
    ) -> Verdict:
        beyond = figure is not None and (figure >= target if at_least else figure <= target)
        return cls(goal, figure, target, at_least, ok and beyond)

    def to_json(self) -> dict[str, object]:
        return _flat(self)


@dataclass(frozen=True, slots=True)
class Report:
    """A whole run: where and how it was measured, every row, and the judgements on them."""

    date: dt.datetime
    machine: Machine
    versions: dict[str, str]
    settings: Settings
    workloads: list[dict[str, object]]  # each workload's spec and sizes
    results: list[SystemResult]
    ratios: list[Ratio]
    configurations: list[ConfigurationRow]
    variants: dict[str, dict[str, object]]  # each configuration run: its summary, vmagent's
    memory_scaling: list[MemoryRow]
    goals: list[Verdict]
    elapsed_s: float
    load_average_after: tuple[float, float, float]

    @property
    def ok(self) -> bool:
        """Every row and every memory run delivered exactly what it should."""
        rows = [r.delivered_ok for r in self.results] + [
            m.delivered_ok for m in self.memory_scaling
        ]
        return all(rows)

    def to_json(self) -> dict[str, object]:
        settings = {**self.settings.to_json(), "sink_nice_during_latency": SINK_NICE_DURING_LATENCY}
        return {
            "date": self.date.isoformat(timespec="seconds"),
            "machine": self.machine.to_json(),
            "versions": self.versions,
            "settings": settings,
            "workloads": self.workloads,
            "results": [r.to_json() for r in self.results],
            "ratios": [r.to_json() for r in self.ratios],
            "configurations": [c.to_json() for c in self.configurations],
            "variants": self.variants,
            "memory_scaling": [m.to_json() for m in self.memory_scaling],
            "goals": [g.to_json() for g in self.goals],
            "ok": self.ok,
            "elapsed_s": self.elapsed_s,
            "load_average_after": self.load_average_after,
        }
