"""The relay's state as metrics: queues, shards, senders, the spool, the memory budget, the
Flux rules and the federate store, read from the running relay at each scrape."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric

from .destinations.remote_write import RemoteWriteClient
from .telemetry import flux_metrics, gauge

if TYPE_CHECKING:
    from .relay import Relay


def state_metrics(relay: Relay) -> Iterable[Metric]:
    """The relay's state as metrics, read at each scrape of ``/metrics``."""
    dests = list(relay.destinations.items())
    yield gauge(
        "gotk_relay_queue_samples",
        "Samples and histograms queued or in flight per destination.",
        ["destination"],
        (([n], d.queue.points) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_queue_capacity_samples",
        "Queue capacity per destination (queue_config.capacity × shards).",
        ["destination"],
        (([n], d.queue.capacity) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_shards",
        "Ordered sender streams per destination.",
        ["destination"],
        (([n], len(d.queue.shards)) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_destination_protocol",
        "The remote-write message a destination is sent (1 for the one in use).",
        ["destination", "protobuf_message"],
        (([n, d.client.protocol], 1) for n, d in dests if isinstance(d.client, RemoteWriteClient)),
    )
    now_ms = time.time() * 1000
    ages = []
    for n, d in dests:
        oldest = d.oldest_unsent_ms()
        ages.append(([n], 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)))
    yield gauge(
        "gotk_relay_oldest_unsent_seconds",
        "Age of the newest sample of the oldest entry a destination has not yet delivered "
        "(0 when empty): grows while it makes no progress.",
        ["destination"],
        ages,
    )
    yield gauge(
        "gotk_relay_destination_failing",
        "1 while a destination answers with errors that are retried (no progress).",
        ["destination"],
        (([n], int(d.failing)) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_destination_tls_files_unusable",
        "1 while a destination's tls_config files changed on disk and cannot be used (a "
        "rotation half done): the previous ones stay in use until the files load.",
        ["destination"],
        (([n], int(d.client.tls_files_unusable())) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_sender_up",
        "0 while a destination's sender loop is failing on an error (e.g. the spool cannot "
        "be read or written; see /-/ready), else 1.",
        ["destination"],
        (([n], int(not d.problem())) for n, d in dests),
    )
    yield gauge(
        "gotk_relay_spool_write_failing",
        "1 while the spool cannot be written (writes are refused with 503).",
        [],
        [([], int(relay.spool_failing.active))] if relay.spool is not None else [],
    )
    yield from flux_metrics(relay.pipeline.flux.stats)
    if relay.flux_state is not None:
        yield gauge(
            "gotk_relay_flux_state_restored_objects",
            "Flux objects whose state was restored from the spool at start or the last reload "
            "that built new rules.",
            [],
            [([], relay.flux_state.restored)],
        )
        discarded = CounterMetricFamily(
            "gotk_relay_flux_state_discarded",
            "Starts and reloads at which the stored Flux state was not restored, by reason "
            "(absent, corrupt, format, rules_changed): the rules started with no object state.",
            labels=["reason"],
        )
        for reason, count in sorted(relay.flux_state.discarded.items()):
            discarded.add_metric([reason], count)
        yield discarded
    skipped = CounterMetricFamily(
        "gotk_relay_samples_skipped",
        "Samples a destination's protocol cannot carry, not sent (e.g. stale markers and "
        "points older than 1h for Datadog), by reason; they count as forwarded too.",
        labels=["destination", "reason"],
    )
    for n, d in dests:
        for reason, count in sorted(d.client.skipped.items()):
            skipped.add_metric([n, reason], count)
    yield skipped
    if relay.spool is not None:
        yield gauge(
            "gotk_relay_spool_bytes",
            "Bytes of entries a destination holds in the spool (queued and in flight).",
            ["destination"],
            (([n], d.queue.bytes) for n, d in dests),
        )
        ages = []
        for n, d in dests:
            heads = [relay.spool_oldest(n, i) for i in range(len(d.queue.shards))]
            known = [o for o in heads if o is not None]
            ages.append(([n], max(0.0, (now_ms - min(known)) / 1000) if known else 0.0))
        yield gauge(
            "gotk_relay_spool_oldest_sample_age_seconds",
            "Age of the newest sample in a destination's oldest spooled entry (0 when empty).",
            ["destination"],
            ages,
        )
    else:
        yield gauge(
            "gotk_relay_memory_queued_bytes",
            "Bytes held by in-memory queues, all destinations together.",
            [],
            [([], relay.budget.used)],
        )
        yield gauge(
            "gotk_relay_memory_budget_bytes",
            "queues.memory_budget_bytes.",
            [],
            [([], relay.budget.limit)],
        )
    yield gauge(
        "gotk_relay_federate_series",
        "Series held by the federate store.",
        [],
        [([], len(relay.federate))] if relay.federate is not None else [],
    )
