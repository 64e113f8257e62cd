"""The running relay: pipeline, destinations and the federate store behind one admission rule.

Admission is all-or-nothing: a batch is accepted only if every destination has room for it,
and then it is queued to all of them before the sender hears 2xx. When one is full the sender
is told 429 and keeps the data; nothing accepted is dropped for lack of room.

Room is checked *before* the Flux rules run, since they are stateful: a batch refused after
being rewritten would, on its resend, look like old news to the rewriter and its synthesized
series would be lost. A queue may so go over its capacity by what the rules synthesize from one
batch (at most four series per Flux object in it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric

from .config import Config, RemoteWriteConfig, destination_name
from .delivery.entry import Entry, encode_entry
from .delivery.queue import ShardedQueue
from .delivery.sender import QueuedDestination, RetrySettings
from .destinations.federate import FederateStore
from .destinations.remote_write import RemoteWriteClient
from .model import Batch
from .pipeline import Pipeline
from .rules.flux import FluxRewriter
from .telemetry import Telemetry, flux_metrics, gauge

log = logging.getLogger("gotk_relay.relay")


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: bool
    busy_destination: str = ""


def build_destination(name: str, cfg: RemoteWriteConfig, telemetry: Telemetry) -> QueuedDestination:
    q = cfg.queue_config
    queue = ShardedQueue(q.min_shards, q.capacity, q.max_samples_per_send)
    retry = RetrySettings(q.min_backoff, q.max_backoff, q.sample_age_limit)
    return QueuedDestination(name, RemoteWriteClient(name, cfg), queue, retry, telemetry)


class Relay:
    def __init__(self, config: Config, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.config = config
        self.names = [
            rw.name or destination_name(i, rw.url) for i, rw in enumerate(config.remote_write)
        ]
        self.pipeline = Pipeline(config, self.names)
        self.destinations: dict[str, QueuedDestination] = {
            name: build_destination(name, rw, telemetry)
            for name, rw in zip(self.names, config.remote_write, strict=True)
        }
        self.federate = (
            FederateStore(config.federate.match, config.federate.max_series)
            if config.federate.enabled
            else None
        )
        self._draining: list[asyncio.Task[None]] = []
        telemetry.add_state_collector(self._collect)

    def start(self) -> None:
        for destination in self.destinations.values():
            destination.start()

    def admit(self, batch: Batch, now_ms: int | None = None) -> Admission:
        """Queue ``batch`` for every destination, or for none (see the module docstring)."""
        points = batch.point_count
        for name, destination in self.destinations.items():
            if not destination.queue.room_for(points):
                return Admission(False, name)
        rewritten = self.pipeline.ingest(batch, now_ms)
        # Destinations that see the same batch, sharded alike and speaking the same message,
        # share the encoded entries: one encode per distinct (chunk, protocol).
        encoded: dict[tuple[int, str], Entry] = {}
        keep_alive: list[Batch] = []  # ids in `encoded` stay unique while these live
        for name, destination in self.destinations.items():
            out = self.pipeline.for_destination(name, rewritten)
            protocol = destination.protocol
            entries: list[list[Entry]] = []
            for chunks in destination.queue.plan(out):
                keep_alive.extend(chunks)
                shard_entries = []
                for chunk in chunks:
                    key = (id(chunk), protocol)
                    if key not in encoded:
                        encoded[key] = encode_entry(chunk, protocol)
                    shard_entries.append(encoded[key])
                entries.append(shard_entries)
            destination.queue.put(entries)
        if self.federate is not None:
            refused = self.federate.update(rewritten)
            if refused:
                self.telemetry.samples_dropped.labels("federate", "max_series").inc(refused)
        return Admission(True)

    def reload(self, config: Config) -> None:
        """Swap in a new configuration; unchanged destinations keep their queues.

        A changed or removed destination drains in the background (until the shutdown
        deadline of its own) while its successor, if any, waits for it before sending, so a
        series is never sent by two senders at once.
        """
        names = [rw.name or destination_name(i, rw.url) for i, rw in enumerate(config.remote_write)]
        old = dict(self.destinations)
        old_cfg = {name: rw for name, rw in zip(self.names, self.config.remote_write, strict=True)}
        flux: FluxRewriter | None = self.pipeline.flux if config.flux == self.config.flux else None
        pipeline = Pipeline(config, names, flux)
        destinations: dict[str, QueuedDestination] = {}
        starts: list[tuple[QueuedDestination, asyncio.Task[None] | None]] = []
        for name, rw in zip(names, config.remote_write, strict=True):
            previous = old.pop(name, None)
            if previous is not None and old_cfg[name] == rw:
                destinations[name] = previous
                continue
            fresh = build_destination(name, rw, self.telemetry)
            destinations[name] = fresh
            drain = self._drain(previous) if previous is not None else None
            starts.append((fresh, drain))
        for leftover in old.values():
            self._drain(leftover)
        if config.federate != self.config.federate:
            self.federate = (
                FederateStore(config.federate.match, config.federate.max_series)
                if config.federate.enabled
                else None
            )
        self.config, self.names, self.pipeline, self.destinations = (
            config,
            names,
            pipeline,
            destinations,
        )
        for destination, after in starts:
            destination.start(after)

    def _drain(self, destination: QueuedDestination, seconds: float = 60.0) -> asyncio.Task[None]:
        deadline = asyncio.get_running_loop().time() + seconds
        task = asyncio.create_task(destination.stop(deadline), name=f"drain:{destination.name}")
        self._draining.append(task)
        return task

    async def stop(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        await asyncio.gather(
            *(d.stop(deadline) for d in self.destinations.values()),
            *self._draining,
            return_exceptions=True,
        )

    def _collect(self) -> Iterable[Metric]:
        dests = list(self.destinations.items())
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
            (([n, getattr(d.client, "protobuf_message", "")], 1) for n, d in dests),
        )
        yield from flux_metrics(self.pipeline.flux.stats)
        yield gauge(
            "gotk_relay_federate_series",
            "Series held by the federate store.",
            [],
            [([], len(self.federate))] if self.federate is not None else [],
        )
