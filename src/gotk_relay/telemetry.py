"""The relay's own metrics, in a registry of its own (no globals: tests build as many as they like).

Counters move where things happen; gauges that describe live state (queue depth, shards,
protocol in use, Flux state) are read at scrape time by a collector, so they can never drift
from the truth.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import caches
from .rules.flux import FluxStats

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


@dataclass(frozen=True, slots=True)
class Refused:
    """One refused write request, as the status page shows it (never its body)."""

    at: float  # time.time()
    remote: str  # the client's address ("" when unknown)
    text: str  # the answer's reason text, cut to REFUSED_TEXT characters


REFUSED_EXAMPLES = 5  # kept per reason
REFUSED_REASONS = 64  # reasons kept; the code has fewer (the bound is for the workers' notes)
REFUSED_TEXT = 300


class Refusals:
    """Refused write requests by reason: a count and the last ``REFUSED_EXAMPLES`` of each, in
    memory (bounded: ``REFUSED_REASONS`` reasons). Counts restart with the process, as the
    counter ``gotk_relay_rejected_requests_total`` does."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._examples: dict[str, deque[Refused]] = {}

    def add(self, reason: str, remote: str, text: str, at: float | None = None) -> None:
        if reason not in self._counts and len(self._counts) >= REFUSED_REASONS:
            reason = "other"  # a bounded map; the counter still has the real reason
        self._counts[reason] = self._counts.get(reason, 0) + 1
        examples = self._examples.get(reason)
        if examples is None:
            examples = self._examples[reason] = deque(maxlen=REFUSED_EXAMPLES)
        examples.append(
            Refused(time.time() if at is None else at, remote, text.strip()[:REFUSED_TEXT])
        )

    def summary(self) -> list[tuple[str, int, tuple[Refused, ...]]]:
        """(reason, count, examples newest first) for each reason, the most refused first."""
        return sorted(
            (
                (reason, count, tuple(reversed(self._examples[reason])))
                for reason, count in self._counts.items()
            ),
            key=lambda row: (-row[1], row[0]),
        )


class Telemetry:
    def __init__(self) -> None:
        # No <counter>_created series beside each counter and histogram: Prometheus' own
        # metrics have none, and they double the series of every labelled counter.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._labelled: dict[tuple[object, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, …: what
        # every Prometheus exporter reports, for the dashboard's and the sizing's resources
        # (the serve process's own; scan workers, with receiver.workers > 1, are not in it).
        ProcessCollector(registry=r)
        self.http_requests = Counter(
            "gotk_relay_http_requests",
            "HTTP requests answered, by handler and status code.",
            ["handler", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gotk_relay_http_request_duration_seconds",
            "Time to answer an HTTP request (for writes: receive, decode, rewrite, enqueue).",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "gotk_relay_received",
            "Points accepted from senders, by kind (sample, histogram, exemplar) and protocol.",
            ["kind", "protobuf_message"],
            registry=r,
        )
        self.scanned = Counter(
            "gotk_relay_scanned_requests",
            "Remote-write 1.0 requests admitted on the fast path, by the scanner that read them: "
            "c (the compiled one-pass survey) or python (the reference check: no compiled "
            "scanner installed).",
            ["scanner"],
            registry=r,
        )
        for scanner in ("c", "python"):
            self.scanned.labels(scanner)
        self.sorted_series = Counter(
            "gotk_relay_sorted_series",
            "Series received with labels not sorted by name, forwarded sorted.",
            registry=r,
        )
        self.rejected = Counter(
            "gotk_relay_rejected_requests",
            "Write requests refused, by reason (the sender keeps or drops them by status).",
            ["reason"],
            registry=r,
        )
        self.samples_forwarded = Counter(
            "gotk_relay_samples_forwarded",
            "Samples and histograms a destination accepted.",
            ["destination"],
            registry=r,
        )
        self.acknowledged = Counter(
            "gotk_relay_acknowledged_requests",
            "With receiver.acknowledge: delivered, write requests answered after waiting for "
            "their delivery, by outcome: delivered (2xx), failed (a destination failed: 503), "
            "timeout (receiver.acknowledge_timeout passed: 503).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("delivered", "failed", "timeout"):
            self.acknowledged.labels(outcome)
        self.samples_dropped = Counter(
            "gotk_relay_samples_dropped",
            "Samples and histograms given up for a destination, by reason; dropped_series: "
            "those its write_relabel_configs dropped (by design, as Prometheus counts them).",
            ["destination", "reason"],
            registry=r,
        )
        self.relabel_dropped = Counter(
            "gotk_relay_relabel_dropped_samples",
            "Samples and histograms the global relabel_configs dropped, before the Flux rules "
            "and every destination (as vmagent_remotewrite_global_relabel_metrics_dropped_total).",
            registry=r,
        )
        self.retries = Counter(
            "gotk_relay_retries",
            "Requests to a destination that will be retried, by reason.",
            ["destination", "reason"],
            registry=r,
        )
        self.send_duration = Histogram(
            "gotk_relay_destination_request_duration_seconds",
            "Duration of requests to destinations, by outcome reason.",
            ["destination", "reason"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.task_failures = Counter(
            "gotk_relay_task_failures",
            "Errors a destination's sender loop hit (spool read/delete, unexpected), or the "
            'Flux rules\' clock (destination="flux-clock"): each is logged once, retried and '
            "shown in /-/ready until it recovers.",
            ["destination"],
            registry=r,
        )
        self.reload_success = Gauge(
            "gotk_relay_config_last_reload_successful",
            "Whether the last configuration reload succeeded.",
            registry=r,
        )
        self.reload_timestamp = Gauge(
            "gotk_relay_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            registry=r,
        )
        self.refusals = Refusals()
        self.add_state_collector(cache_metrics)

    def refuse(self, reason: str, remote: str | None = None, text: str = "") -> None:
        """Count a refused write request, and keep it as an example (``Refusals``)."""
        self.rejected.labels(reason).inc()
        self.refusals.add(reason, remote or "", text)

    def add_state_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.registry.register(_StateCollector(collect))

    def points_received(
        self, protocol: str, samples: int, histograms: int = 0, exemplars: int = 0
    ) -> None:
        """``gotk_relay_received_total`` for one admitted request, by kind."""
        counts = (("sample", samples), ("histogram", histograms), ("exemplar", exemplars))
        for kind, count in counts:
            child = self.labelled(self.received, kind, protocol)  # shown from the first request
            if count:
                child.inc(count)

    def labelled(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus_client's ``labels`` checks the
        values and takes a lock on every call (≈2 µs), several times per write request. The
        label values on this path (handler, status code, kind, protocol, scanner) are few."""
        key = (metric, values)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(*values)
        return child

    # The delivery.sender.Recorder protocol ----------------------------------------------
    def forwarded(self, destination: str, points: int) -> None:
        self.samples_forwarded.labels(destination).inc(points)

    def dropped(self, destination: str, points: int, reason: str) -> None:
        self.samples_dropped.labels(destination, reason).inc(points)

    def retried(self, destination: str, reason: str) -> None:
        self.retries.labels(destination, reason).inc()

    def sent(self, destination: str, reason: str, seconds: float) -> None:
        self.send_duration.labels(destination, reason).observe(seconds)

    def task_failed(self, destination: str) -> None:
        self.task_failures.labels(destination).inc()


class _StateCollector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return ()


def flux_metrics(stats: FluxStats) -> Iterable[Metric]:
    """The Flux rewriter's state and counters (they restart when a reload replaces the rules)."""
    yield gauge(
        "gotk_relay_flux_objects",
        "Flux objects whose state the rewriter tracks.",
        [],
        [([], stats.objects_tracked)],
    )
    yield gauge(
        "gotk_relay_flux_objects_refused",
        "Flux objects not tracked because flux.max_objects was reached, refused within "
        "flux.idle_expiry (at most flux.max_objects are remembered).",
        [],
        [([], stats.objects_refused)],
    )
    counters = (
        (
            "samples_synthesized",
            "Samples the Flux rules synthesized, stale markers included.",
            stats.outputs_emitted,
        ),
        (
            "stale_markers",
            "Stale markers the Flux rules wrote for ended objects.",
            stats.stale_emitted,
        ),
        (
            "out_of_order_dropped",
            "Synthesized samples not written: not after the last one written for their series.",
            stats.out_of_order_dropped,
        ),
        (
            "objects_expired",
            "Flux objects forgotten after flux.idle_expiry without input.",
            stats.objects_expired,
        ),
        (
            "objects_rejected",
            "Distinct Flux objects not tracked because flux.max_objects was reached: each "
            "counted once, not per batch (again only after idle_expiry unrefused, after being "
            "tracked, or when more than flux.max_objects refused ones are remembered).",
            stats.objects_rejected,
        ),
    )
    for name, documentation, value in counters:
        family = CounterMetricFamily(f"gotk_relay_flux_{name}", documentation)
        family.add_metric([], value)
        yield family


def cache_metrics() -> Iterable[Metric]:
    """Every bounded cache family (``caches.FAMILIES``) of this process: entries and limit."""
    families = sorted(caches.FAMILIES.values(), key=lambda f: f.name)
    yield gauge(
        "gotk_relay_cache_entries",
        "Entries held by a kind of bounded cache, over all its live instances in this process.",
        ["cache"],
        [([f.name], f.entries()) for f in families],
    )
    yield gauge(
        "gotk_relay_cache_limit",
        "Entries a kind of cache may hold before its oldest are dropped, summed over its live "
        "instances.",
        ["cache"],
        [([f.name], f.capacity()) for f in families],
    )


def gauge(
    name: str, documentation: str, labels: list[str], rows: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family
