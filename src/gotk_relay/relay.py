"""The running relay: pipeline, destinations and the federate store behind one admission rule.

Admission is all-or-nothing: a batch is accepted only if every destination has room for it,
and then it is queued to all of them before the sender hears 2xx. When one is full the sender
is told 503 and keeps the data; nothing accepted is dropped for lack of room.

Room is checked *before* the Flux rules run, since they are stateful: a batch refused after
being rewritten would, on its resend, look like old news to the rewriter and its synthesized
series would be lost. A queue may so go over its capacity by what the rules synthesize from one
batch (at most four series per Flux object in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .config import (
    Config,
    ConfigError,
    DatadogConfig,
    OTLPConfig,
    QueuedDestinationConfig,
    destination_names,
)
from .delivery.ack import Ack
from .delivery.entry import Entry, compress, encode_entry, made_entry, metadata_bytes
from .delivery.queue import Dropping, MemoryBudget, ShardedQueue
from .delivery.sender import Client, QueuedDestination, RetrySettings
from .delivery.spool import Spool, SpoolError
from .destinations.federate import FederateStore
from .destinations.remote_write import RemoteWriteClient
from .model import Batch, FamilyMetadata, Protocol
from .pipeline import Pipeline, split_by_tenant
from .relay_metrics import state_metrics
from .rules.flux import FluxRewriter, FluxState, Rewritten, StateUnreadable, Steady
from .telemetry import Telemetry
from .wire import picked
from .write import views
from .write.routing import Router

log = logging.getLogger("gotk_relay.relay")

FLUX_TICK_S = 1.0
"""How often the Flux rules' pending ends are looked at when no request brings the clock on."""


Planned = tuple[QueuedDestination, list[list[Entry]]]
"""A destination and its entries for one request, per shard, in the order they are queued."""

Route = tuple[list[tuple[int, Entry]], int, int, int]
"""A destination's own share of a fast-path request: (shard, entry) pairs, points, points
dropped for want of a tenant, points its ``write_relabel_configs`` dropped."""

Drop = tuple[str, int, str]
"""Points a destination drops from one request: (destination, points, reason)."""

NO_TENANT = "no_tenant"
# Prometheus' reason for samples its write_relabel_configs dropped
# (prometheus_remote_storage_samples_dropped_total): dropped by design, counted, never logged.
DROPPED_SERIES = "dropped_series"


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: bool
    busy_destination: str = ""


def build_client(name: str, cfg: QueuedDestinationConfig) -> Client:
    """The protocol half of a destination; the queue, shards and retries are shared by all.

    ``ConfigError`` naming the destination and the file when a ``tls_config`` file cannot be
    used, as Prometheus refuses to load such a config (the start fails, a reload is refused).
    """
    tls = cfg.tls_config
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"destination {name!r}: tls_config.{key}: unable to read {path}: {exc.strerror}"
                ) from None
    try:
        return _build_client(name, cfg)
    except ssl.SSLError as exc:
        raise ConfigError(f"destination {name!r}: tls_config: {exc}") from None


def _build_client(name: str, cfg: QueuedDestinationConfig) -> Client:
    if isinstance(cfg, DatadogConfig):
        from .destinations.datadog import DatadogClient

        return DatadogClient(name, cfg)
    if isinstance(cfg, OTLPConfig):
        from .destinations.otlp import OTLPClient

        return OTLPClient(name, cfg)
    return RemoteWriteClient(name, cfg)


def retry_settings(cfg: QueuedDestinationConfig) -> RetrySettings:
    q = cfg.queue_config
    return RetrySettings(q.min_backoff, q.max_backoff, q.sample_age_limit)


# How long a shard waits after a take that was not a full request before the next take
# (delivery/sender.py _linger): up to 20 small requests a second per shard.
LINGER = 0.05

# queue_config keys a running sender reads at each decision: changing them keeps the queue.
_LIVE_KEYS = ("min_backoff", "max_backoff", "sample_age_limit")


def _logged(task: asyncio.Task[None]) -> asyncio.Task[None]:
    """``task``, whose failure is logged when it ends: a replaced destination's drain or halt,
    which only stop() awaits otherwise (its error would be seen by no one)."""

    def ended(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error(
                "a replaced destination's last sends failed",
                extra={"task": done.get_name(), "err": repr(exc)},
                exc_info=exc,
            )

    task.add_done_callback(ended)
    return task


def same_but_retry(old: QueuedDestinationConfig, new: QueuedDestinationConfig) -> bool:
    """Whether two destination configs differ at most in ``_LIVE_KEYS``."""
    live = {key: getattr(old.queue_config, key) for key in _LIVE_KEYS}
    return new.model_copy(update={"queue_config": new.queue_config.model_copy(update=live)}) == old


class Episode:
    """A condition that is logged once when it starts and once when it ends (with a count),
    not once per occurrence: queue-full refusals, spool write errors."""

    def __init__(self, what: str, level: int = logging.WARNING) -> None:
        self.what = what
        self.level = level
        self.since = 0.0
        self.count = 0
        self.reason = ""

    @property
    def active(self) -> bool:
        return self.count > 0

    def happened(self, reason: str, **extra: object) -> None:
        if not self.count:
            self.since = time.monotonic()
            self.reason = reason
            log.log(
                self.level,
                f"{self.what}; logged once until it stops",
                extra={"reason": reason, **extra},
            )
        self.count += 1

    def ended(self) -> None:
        if self.count:
            log.info(
                f"{self.what}: stopped",
                extra={
                    "reason": self.reason,
                    "occurrences": self.count,
                    "seconds": round(time.monotonic() - self.since, 3),
                },
            )
            self.count = 0


def build_destination(
    name: str,
    cfg: QueuedDestinationConfig,
    telemetry: Telemetry,
    budget: MemoryBudget | None = None,
    spool: Spool | None = None,
    client: Client | None = None,
    *,
    attach: bool = True,
) -> QueuedDestination:
    """A destination's client, queue and senders; ``attach=False`` (a reload) leaves reading
    its spooled rows to its senders (``ShardedQueue.attach``)."""
    q = cfg.queue_config
    # Datadog and OTLP make their own requests from the entries' rows; remote write sends them.
    queue = ShardedQueue(
        q.min_shards,
        q.capacity,
        q.max_samples_per_send,
        budget,
        spool,
        name,
        split_entries=not isinstance(cfg, DatadogConfig | OTLPConfig),
        attach=attach,
    )
    if client is None:
        client = build_client(name, cfg)
    # Datadog's client retries a batch piece by piece and keeps counter state per batch: it
    # must see the same batch again (and its intake refuses bad data with 400, not 5xx).
    isolate = not isinstance(cfg, DatadogConfig)
    return QueuedDestination(
        name,
        client,
        queue,
        retry_settings(cfg),
        telemetry,
        isolate=isolate,
        # Not where refused requests are split to find a poisoned series: bigger takes make
        # the isolation's known ordering corner case likelier (docs/recipes.md, issue 16).
        linger=0.0 if isolate else min(q.batch_send_deadline, LINGER),
    )


def _added(inputs: Batch, rewritten: Batch) -> Batch:
    """What the rules added to ``inputs``: they return the inputs first, then their output."""
    if rewritten is inputs:
        return Batch()
    count = len(inputs.series)
    if rewritten.series[:count] != inputs.series:
        raise AssertionError("the rules changed series forwarded as received bytes")
    return Batch(rewritten.series[count:], rewritten.metadata[len(inputs.metadata) :])


def _as_v1(batch: Batch) -> Batch:
    """A batch for a 2.0 destination queued as 1.0 (the fast path): its series' own metadata
    (2.0 carries it per series, the Flux rules set it) as 1.0 family metadata beside them, so
    the conversion of the merged request (``wire.rw2.from_v1``) puts it back on them."""
    families = {
        FamilyMetadata(s.name, s.metadata.type, s.metadata.help, s.metadata.unit)
        for s in batch.series
        if s.metadata is not None
    } - set(batch.metadata)
    if not families:
        return batch
    return Batch(batch.series, (*batch.metadata, *sorted(families)))


def _route_output(
    router: Router, output: bytes, whole: Entry
) -> tuple[list[tuple[int, Entry]], int, int]:
    """The Flux rules' encoded output as one view sees it: (shard, entry) pairs, the points
    left without a tenant and the points its rules dropped. ``whole`` is the output's own entry
    (``made_entry``: the same bytes compressed), which a view that keeps all of it takes as it
    is. The rules write label sets sorted."""
    routed = router.route(output, presorted=True, points=whole.points)
    if routed.groups is None:
        return [(0, whole)], 0, 0
    # The output's metadata go to shard 0 of each tenant's group (``Router.route``): only
    # those entries may hold families (a Datadog or OTLP destination reads an entry that may
    # again, to find them).
    return (
        [
            (
                g.shard,
                Entry(
                    compress(g.body),
                    Protocol.V1,
                    g.points,
                    g.newest_ms,
                    0,
                    g.tenant,
                    families=whole.families and g.shard == 0,
                ),
            )
            for g in routed.groups
        ],
        routed.orphaned,
        routed.dropped,
    )


def _request_entries(
    destination: QueuedDestination, route: Route | None, passthrough: Entry | None
) -> list[list[Entry]]:
    """Per shard, what a destination queues of a fast-path request itself: its own routed
    share, or the request as it came (a destination without a view takes it whole)."""
    entries: list[list[Entry]] = [[] for _ in destination.queue.shards]
    fit = destination.queue.fit  # no request over max_samples_per_send, as Prometheus sends
    if route is not None:
        for shard, entry in route[0]:
            entries[shard].extend(fit(entry))
    elif passthrough is not None:  # one shard, no rules: views.plan guarantees it
        entries[0].extend(fit(passthrough))
    return entries


class Relay:
    def __init__(self, config: Config, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.config = config
        self.names = destination_names(config)
        self.pipeline = Pipeline(config)
        self.fast = views.plan(config)
        picked.bound(*views.label_cache_bound(config))
        # Both are fixed for the life of the process: a reload that changes them is reported
        # and needs a restart (moving a spool under a running queue would lose its order).
        self.budget = MemoryBudget(config.queues.memory_budget_bytes)
        self.spool = (
            Spool(config.spool.data_dir, config.spool.synchronous)
            if config.spool.data_dir
            else None
        )
        # The Flux rules' per-object state is kept in the spool's database, written with each
        # request's entries (rules/flux/persist.py): restored here, and at a reload.
        self.flux_state = FluxState(self.spool.db) if self.spool is not None else None
        if self.flux_state is not None:
            self.flux_state.load(self.pipeline.flux)
        self.destinations: dict[str, QueuedDestination] = {
            name: build_destination(name, cfg, telemetry, self.budget, self.spool)
            for _, name, cfg in config.destinations()
        }
        if self.spool is not None:
            orphans = set(self.spool.destinations()) - set(self.names)
            if orphans:
                log.warning(
                    "the spool holds entries of destinations no longer configured; they stay "
                    "in the spool until a destination of that name is configured again",
                    extra={"destinations": ",".join(sorted(orphans))},
                )
        self.federate = (
            FederateStore(config.federate.match, config.federate_max_series)
            if config.federate.enabled
            else None
        )
        self._draining: list[asyncio.Task[None]] = []
        self.refusing = Episode("a destination's queue is full: writes are refused with 503")
        self.spool_failing = Episode("the spool cannot be written: writes are refused with 503")
        # Drops counted here rather than by a sender: logged once per destination and reason,
        # as a sender logs what a destination refuses (delivery/sender.py).
        self._drops_logged: set[tuple[str, str]] = set()
        self.clock_failing = Episode(
            "the Flux rules' clock failed; retried every second", logging.ERROR
        )
        self._clock: asyncio.Task[None] | None = None
        # What else the process runs and /-/ready reports on (the ingest workers' pool).
        self.problem_sources: list[Callable[[], list[str]]] = []
        telemetry.add_state_collector(lambda: state_metrics(self))

    def start(self) -> None:
        for destination in self.destinations.values():
            destination.start()
        self._clock = asyncio.create_task(self._flux_clock(), name="flux-clock")
        self._clock.add_done_callback(self._clock_ended)

    def _clock_ended(self, task: asyncio.Task[None]) -> None:
        """The clock runs until stop() cancels it: if it ends otherwise, that is logged and
        shown in /-/ready (its ends would no longer be written between requests)."""
        if task.cancelled():
            return
        exc = task.exception()
        self.telemetry.task_failed("flux-clock")
        self.clock_failing.happened(f"the clock task ended: {exc!r}")

    async def _flux_clock(self) -> None:
        """Write the Flux rules' ends that fall due while no request arrives.

        A deleted object's outputs end one of its scrape intervals after its input went stale
        (``flux.stale_grace``); the rules write an end when they are next called, which a
        request does. A lone kube-state-metrics target may send one request per scrape, so an
        end could wait a whole interval more: a batch with no series brings the clock on.
        """
        delay = FLUX_TICK_S
        while True:
            await asyncio.sleep(delay)
            delay = FLUX_TICK_S
            now_ms = int(time.time() * 1000)
            try:  # everything but the sleep: an error here must not end the loop unseen
                if not self.pipeline.flux.due(now_ms):
                    self.clock_failing.ended()
                    continue
                # refused (queues full): tried again next tick
                if self.admit(Batch(), now_ms).accepted and self.pipeline.flux.due(now_ms):
                    delay = 0.0  # more ends due than one call writes: on with them at once
            except SpoolError:
                continue  # shown as the spool's own failure; tried again next tick
            except Exception as exc:  # a bug: shown in /-/ready, logged once, tried again
                self.telemetry.task_failed("flux-clock")
                self.clock_failing.happened(repr(exc))
            else:
                self.clock_failing.ended()

    def problems(self) -> list[str]:
        """Why the relay cannot do its work now, one line each ([] when it can): for /-/ready.

        A destination that answers errors is not a problem of the relay (its data is queued
        and retried, and refusing writes would not help); a sender failing on an error is. A
        refused spool write is not either: it is known to have ended only when a write
        succeeds, and a relay taken out of its Service would get none (it is logged and
        exposed as gotk_relay_spool_write_failing; the senders' spool errors show here).
        """
        problems = [
            f"destination {name}: {problem}"
            for name, destination in self.destinations.items()
            if (problem := destination.problem())
        ]
        if self.clock_failing.active:
            problems.append(f"the Flux rules' clock: {self.clock_failing.reason}")
        for source in self.problem_sources:
            problems += source()
        return problems

    def room(self, points: int, size_hint: int, own: Mapping[str, int] | None = None) -> Admission:
        """Whether every destination can take a batch of this size now (before any rule runs);
        ``own``: the points of destinations that take their own share of it instead."""
        admission = self._room(points, size_hint, own or {})
        if not admission.accepted:
            self.refusing.happened("queue_full", destination=admission.busy_destination)
        return admission

    def _room(self, points: int, size_hint: int, own: Mapping[str, int]) -> Admission:
        spool_cfg = self.config.spool
        for name, destination in self.destinations.items():
            if self.spool is not None:
                full = destination.queue.bytes + size_hint > spool_cfg.max_bytes
                if full and spool_cfg.when_full == "backpressure" and destination.queue.bytes:
                    return Admission(False, name)
            elif not destination.queue.room_for(own.get(name, points)) or not self.budget.room_for(
                size_hint
            ):
                return Admission(False, name)
        return Admission(True)

    def admit(
        self,
        batch: Batch,
        now_ms: int | None = None,
        size_hint: int = 0,
        passthrough: Entry | None = None,
        inputs_forwarded: bool = False,
        routes: Mapping[str, Route] | None = None,
        ack: Ack | None = None,
    ) -> Admission:
        """Queue ``batch`` for every destination, or for none (see the module docstring).

        ``size_hint`` (the decoded request's size) estimates each destination's share of the
        memory budget or the spool before anything is encoded. ``passthrough`` holds the rest
        of the request, series no rule can change, already encoded (see write/views.py): every
        destination queues it as it is, before ``batch``'s own entries. ``inputs_forwarded``:
        ``batch``'s series are inside ``passthrough`` already (the rules keep their inputs), so
        only what the rules add is queued. ``routes``: per destination that does not take
        ``passthrough`` as it is, its own entries of the request (``write.scan.scan_request``
        routed it: its rules, shards, tenants, message) with their shards, points and the points
        it drops for want of a tenant. Fast-path batches (``passthrough`` or ``routes`` given)
        went through the global rules already. ``ack``: the request waits for its delivery
        (``receiver.acknowledge: delivered``): every entry queued carries it. Raises SpoolError
        when the spool cannot be written: then nothing was queued anywhere.
        """
        fast = passthrough is not None or routes is not None
        routes = routes or {}
        added = 0 if inputs_forwarded else batch.point_count
        points = added + (passthrough.points if passthrough is not None else 0)
        own = {name: added + route[1] for name, route in routes.items()}
        admission = self.room(points, size_hint, own)
        if not admission.accepted:
            return admission
        self.refusing.ended()  # a batch is taken again (room() alone may be a pre-check)
        if self.flux_state is not None and self.flux_state.ahead:
            self._rewind_flux()  # the rules run on the state as stored, or not at all
        # The Flux rules' one result: their steady shortcut (outputs as bytes) or a batch. Either
        # way it becomes every destination's entries, committed (spool, queues) on one path.
        max_outputs = self._steady_outputs() if fast and inputs_forwarded else None
        # On the fast path the global rules ran on the bytes (write.scan counts their drops).
        relabeled = batch if fast else self.pipeline.relabeled(batch)
        result = self.pipeline.apply(relabeled, now_ms, max_outputs)
        if result.steady is not None:
            planned, drops = self._plan_steady(result.steady, passthrough, routes)
        else:
            planned, drops = self._plan_rewritten(
                batch, result.batch, fast, passthrough, inputs_forwarded, routes
            )
        for name, route in routes.items():
            drops += ((name, route[2], NO_TENANT), (name, route[3], DROPPED_SERIES))
        self._commit(planned, drops, ack)
        if relabeled is not batch:
            self.telemetry.relabel_dropped.inc(batch.point_count - relabeled.point_count)
        self._remember(result)
        return Admission(True)

    def _commit(self, planned: list[Planned], drops: Iterable[Drop], ack: Ack | None) -> None:
        """Queue every destination's entries (in the spool first, in one transaction), then
        count the points destinations drop (for want of a tenant, by their
        ``write_relabel_configs``): counted once queued, so a request refused for its spool
        write and sent again is not counted twice. With ``ack``
        each destination's entries carry it (an entry shared by destinations is answered by
        each of them: one copy each)."""
        if self.spool is not None:
            planned = self._spool(planned)
        elif ack is not None:
            planned = [
                (destination, [[e._replace(ack=ack) for e in shard] for shard in entries])
                for destination, entries in planned
            ]
            ack.pending += sum(len(shard) for _, entries in planned for shard in entries)
        for destination, entries in planned:
            destination.queue.put(entries)
        for name, points, reason in drops:
            if not points:
                continue
            if reason == NO_TENANT:
                self._drop(name, points, reason, "series without a tenant are dropped")
            else:
                self.telemetry.dropped(name, points, reason)

    def _drop(self, destination: str, points: int, reason: str, what: str) -> None:
        self.telemetry.dropped(destination, points, reason)
        if (destination, reason) not in self._drops_logged:
            self._drops_logged.add((destination, reason))
            log.warning(
                f"{what}; logged once per destination and reason",
                extra={"destination": destination, "reason": reason, "points": points},
            )

    def _remember(self, result: Rewritten) -> None:
        """Keep what /federate serves: the batch as forwarded, and the steady outputs."""
        if self.federate is None:
            return
        refused = self.federate.update(result.batch)
        if result.steady is not None:
            steady = result.steady
            refused += self.federate.update_outputs(steady.groups, steady.newest, steady.families)
        if refused:
            self._drop(
                "federate",
                refused,
                "max_series",
                "the federate store is full (federate.max_series): new series are not served",
            )

    def _plan_rewritten(
        self,
        batch: Batch,
        rewritten: Batch,
        fast: bool,
        passthrough: Entry | None,
        inputs_forwarded: bool,
        routes: Mapping[str, Route],
    ) -> tuple[list[Planned], list[Drop]]:
        """Every destination's entries of what the rules made of ``batch`` as series
        (``rewritten``): its share encoded once per (chunk, message), after its share of the
        request itself; and the points each drops (for want of a tenant, by its rules)."""
        queued = _added(batch, rewritten) if inputs_forwarded else rewritten
        if fast and not inputs_forwarded and batch.metadata:
            # The request's metadata were forwarded with its other series (write.scan.scan_request).
            sent = set(batch.metadata)
            queued = Batch(queued.series, tuple(m for m in queued.metadata if m not in sent))
        # On the fast path what is queued beside the received block is only what the Flux rules
        # made, and they may have encoded it as they went (FluxRewriter.encoded).
        made = self.pipeline.flux.encoded(queued.series) if fast else None
        # Destinations that see the same batch, sharded alike and speaking the same message,
        # share the encoded entries: one encode per distinct (chunk, protocol).
        encoded: dict[tuple[int, Protocol], Entry] = {}
        keep_alive: list[Batch] = []  # ids in `encoded` stay unique while these live
        planned: list[Planned] = []
        drops: list[Drop] = []
        for name, destination in self.destinations.items():
            out = self.pipeline.for_destination(name, queued)
            if out is not queued:
                drops.append((name, queued.point_count - out.point_count, DROPPED_SERIES))
            # On the fast path every entry is 1.0 (2.0 destinations convert merged requests).
            protocol = Protocol.V1 if fast else destination.protocol
            entries = _request_entries(destination, routes.get(name), passthrough)
            groups, orphaned = self._tenants(destination, out)
            drops.append((name, orphaned, NO_TENANT))
            for tenant, part in groups:
                for index, chunks in enumerate(destination.queue.plan(part)):
                    keep_alive.extend(chunks)
                    for chunk in chunks:
                        key = (id(chunk), protocol)
                        if key not in encoded:
                            if made is not None and chunk is queued and protocol == Protocol.V1:
                                encoded[key] = made_entry(
                                    *made, len(chunk.series), chunk.metadata, tenant
                                )
                            else:
                                encoded[key] = encode_entry(
                                    _as_v1(chunk)
                                    if fast and destination.protocol == Protocol.V2
                                    else chunk,
                                    protocol,
                                    tenant,
                                )
                        entries[index].append(encoded[key])
            planned.append((destination, entries))
        return planned, drops

    def _steady_outputs(self) -> int | None:
        """How many outputs the Flux rules' steady shortcut may write for a fast-path request
        (the output of a destination taking requests as they are must fit in one entry), or
        None when it must not be taken."""
        fast = self.fast
        if set(fast.views) != set(self.destinations):
            return None  # scanned under a configuration a reload has since replaced
        return min(
            (
                d.queue.max_points_per_send
                for name, d in self.destinations.items()
                if fast.views[name].as_received
            ),
            default=1 << 62,
        )

    def _plan_steady(
        self, steady: Steady, passthrough: Entry | None, routes: Mapping[str, Route]
    ) -> tuple[list[Planned], list[Drop]]:
        """The Flux rules' steady output (``FluxRewriter.steady``) planned as ``_plan_rewritten``
        plans the same series, without a ``Series`` per output: a destination that takes
        the request as it came takes the output as one encoded entry; one with its own view of
        requests (rules, shards, tenants: ``routes``) gets the output routed on its bytes."""
        fast = self.fast
        made = (
            made_entry(steady.chunks, steady.newest, steady.outputs, steady.families)
            if steady.outputs
            else None
        )
        # The body with its metadata, for views that route it: made only when one does (the
        # output of a request of 1000 Flux objects is ~1.6 MB, copied here for nothing else).
        output: bytes | None = None
        routed: dict[int, tuple[list[tuple[int, Entry]], int, int]] = {}
        planned: list[Planned] = []
        drops: list[Drop] = []
        for name, destination in self.destinations.items():
            view = fast.views[name]
            entries = _request_entries(destination, routes.get(name), passthrough)
            if made is not None and view.as_received:
                entries[0].append(made)
            elif steady.outputs:
                if output is None:
                    output = steady.body + metadata_bytes(steady.families)
                if id(view) not in routed:
                    assert made is not None  # made whenever there are outputs
                    routed[id(view)] = _route_output(view.router, output, made)
                parts, orphaned, dropped = routed[id(view)]
                for shard, entry in parts:
                    entries[shard].append(entry)
                drops += ((name, orphaned, NO_TENANT), (name, dropped, DROPPED_SERIES))
            planned.append((destination, entries))
        return planned, drops

    def _tenants(
        self, destination: QueuedDestination, batch: Batch
    ) -> tuple[list[tuple[str, Batch]], int]:
        """A destination's share per tenant, and the points left without one."""
        tenant = destination.client.tenant
        if tenant is None:
            return [("", batch)], 0
        groups, orphaned = split_by_tenant(batch, tenant)
        return sorted(groups.items()), orphaned

    def _spool(self, planned: list[Planned]) -> list[Planned]:
        """Commit every destination's entries in one transaction; the entries with their ids."""
        assert self.spool is not None
        try:
            appended = self._append(planned, self.spool)
        except BaseException as exc:
            if isinstance(exc, SpoolError):
                self.spool_failing.happened(str(exc))
            if self.flux_state is not None:
                # Refused, so the sender sends it again: the rules must see that resend as
                # new, not as what they have just applied (its outputs would be lost).
                self.flux_state.rolled_back()
                with contextlib.suppress(SpoolError):  # still ahead: the next admit tries again
                    self._rewind_flux()
            raise
        self.spool_failing.ended()
        if self.flux_state is not None:
            self.flux_state.committed()
        ids = iter(appended)
        return [
            (destination, [[e._replace(spool_id=next(ids)) for e in shard] for shard in entries])
            for destination, entries in planned
        ]

    def _rewind_flux(self) -> None:
        """The Flux state as stored again after a rolled back write; SpoolError while the
        spool cannot be read (the request is refused, as its write would be)."""
        assert self.flux_state is not None
        try:
            objects = self.flux_state.rewind()
        except StateUnreadable as exc:
            self.spool_failing.happened(str(exc))
            raise SpoolError(str(exc)) from exc
        log.debug("Flux state put back as stored after a refused write", extra={"objects": objects})

    def _append(self, planned: list[Planned], spool: Spool) -> list[int]:
        cfg = self.config.spool
        # drop_oldest: the oldest entries are chosen now and their rows deleted in the
        # transaction that spools the new ones, so a failed write drops nothing.
        dropping: list[tuple[QueuedDestination, list[Dropping]]] = []
        if cfg.when_full == "drop_oldest":
            for destination, entries in planned:
                size = sum(e.size for shard in entries for e in shard)
                excess = destination.queue.bytes + size - cfg.max_bytes
                if excess > 0:
                    dropping.append((destination, destination.queue.choose_oldest(excess)))
        rows = [
            (destination.name, index, entry)
            for destination, entries in planned
            for index, shard in enumerate(entries)
            for entry in shard
        ]
        state = self.flux_state
        ids = spool.append(
            rows,
            state.write if state is not None and state.pending else None,
            [i for _, chosen in dropping for plan in chosen for i in plan.ids()],
        )
        for destination, chosen in dropping:
            dropped = destination.queue.forget(chosen)
            self.telemetry.dropped(destination.name, dropped, "spool_full")
        return ids

    def reload(self, config: Config) -> None:
        """Swap in a new configuration; unchanged destinations keep their queues.

        A changed or removed destination drains in the background (until the shutdown
        deadline of its own) while its successor, if any, waits for it before sending, so a
        series is never sent by two senders at once.

        What can fail (a new destination's ``tls_config`` file that cannot be read) is made
        before anything running is touched: a reload that raises leaves every sender running.
        """
        if config.receiver.acknowledge == "delivered" and self.config.spool.data_dir:
            # The file alone may pass (it drops spool.data_dir), but the spool changes only with
            # a restart: the pair the configuration refuses would run.
            raise ConfigError(
                "receiver.acknowledge: delivered cannot go with the spool this relay runs "
                "(spool.data_dir changes only with a restart): restart with the new file"
            )
        names = destination_names(config)
        self._draining = [task for task in self._draining if not task.done()]  # bounded
        old = dict(self.destinations)
        old_cfg = {name: cfg for _, name, cfg in self.config.destinations()}
        flux: FluxRewriter | None = self.pipeline.flux if config.flux == self.config.flux else None
        pipeline = Pipeline(config, flux)
        clients = {
            name: build_client(name, cfg)
            for _, name, cfg in config.destinations()
            if name not in old or not same_but_retry(old_cfg[name], cfg)
        }
        if flux is None and self.flux_state is not None:
            # New rules: they take the stored state if it means the same under them (persist.py).
            self.flux_state.load(pipeline.flux)
        elif flux is None and self.pipeline.flux.stats.objects_tracked:
            log.warning(
                "the flux: settings changed: without a spool the new rules start with no "
                "per-object state (each object is tracked again from its next scrape; one "
                "deleted meanwhile gets no stale markers), as after a restart",
                extra={"objects": self.pipeline.flux.stats.objects_tracked},
            )
        destinations: dict[str, QueuedDestination] = {}
        starts: list[tuple[QueuedDestination, asyncio.Task[None] | None]] = []
        if (config.spool, config.queues) != (self.config.spool, self.config.queues):
            log.warning(
                "spool and queues settings change only with a restart; keeping the running ones"
            )
            config = config.model_copy(
                update={"spool": self.config.spool, "queues": self.config.queues}
            )
        running = self.config.receiver
        if (config.receiver.tls, config.receiver.workers) != (running.tls, running.workers):
            # Kept until a restart too (serve logs it): the config shown is the one that runs.
            receiver = config.receiver.model_copy(
                update={"tls": running.tls, "workers": running.workers}
            )
            config = config.model_copy(update={"receiver": receiver})
        for _, name, cfg in config.destinations():
            previous = old.pop(name, None)
            if name not in clients:
                assert previous is not None
                # Backoff and sample_age_limit are read by the running senders at each
                # decision, so a new sample_age_limit applies to what is queued already.
                previous.retry = retry_settings(cfg)
                destinations[name] = previous
                continue
            drain = None
            if previous is not None:
                previous.retry = retry_settings(cfg)  # its last batches obey the new limits too
                if self.spool is not None:
                    # Its entries stay in the spool: stop it now, the successor resumes them
                    # once it has stopped (a request it had under way is abandoned first, not
                    # sent beside the successor's resend of the same rows).
                    drain = _logged(previous.halt())
                    self._draining.append(drain)
                else:
                    drain = self._drain(previous)
            # Its spooled rows are read once its predecessor has stopped (by its senders, which
            # retry a spool error): nothing here touches the spool, so this cannot fail after
            # the predecessor was halted.
            fresh = build_destination(
                name, cfg, self.telemetry, self.budget, self.spool, clients[name], attach=False
            )
            destinations[name] = fresh
            starts.append((fresh, drain))
        for leftover in old.values():
            if self.spool is not None:
                self._draining.append(_logged(leftover.halt()))
                log.warning(
                    "a destination was removed; what it has spooled stays in the spool until a "
                    "destination of that name is configured again",
                    extra={"destination": leftover.name},
                )
            else:
                self._drain(leftover)
        new_federate, old_federate = config.federate, self.config.federate
        if (new_federate.enabled, new_federate.match) != (old_federate.enabled, old_federate.match):
            # What the store keeps changed: it starts empty, and fills with the next writes.
            if new_federate.enabled and self.federate is not None:
                log.warning(
                    "federate.match changed: the federate store starts empty; each series is "
                    "served again from its next write"
                )
            self.federate = (
                FederateStore(new_federate.match, config.federate_max_series)
                if new_federate.enabled
                else None
            )
        elif self.federate is not None:
            # Its bound (set, or following flux.max_objects) changes in place, with what is
            # stored; the other federate keys are read per request from the config.
            self.federate.max_series = config.federate_max_series
        self.fast = views.plan(config)
        picked.bound(*views.label_cache_bound(config))
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
        self._draining.append(_logged(task))
        return task

    async def stop(self, timeout: float) -> None:
        if self._clock is not None:
            self._clock.cancel()
        deadline = asyncio.get_running_loop().time() + timeout
        names = list(self.destinations)
        results = await asyncio.gather(
            *(d.stop(deadline) for d in self.destinations.values()),
            *self._draining,
            return_exceptions=True,
        )
        # The replaced destinations' drains log their own failures (_logged); the current
        # ones' are logged here, or no one would see them.
        for name, result in zip(names, results, strict=False):
            if isinstance(result, Exception):
                log.error(
                    "a destination failed to stop",
                    extra={"destination": name, "err": repr(result)},
                    exc_info=result,
                )
        if self.spool is not None:
            self.spool.close()

    def spool_oldest(self, name: str, shard: int) -> int | None:
        """The newest timestamp of a destination shard's oldest spooled entry, if any."""
        assert self.spool is not None
        try:
            return self.spool.oldest_newest_ms(name, shard)
        except SpoolError:  # a scrape does not fail for it; the senders report the error
            return None
