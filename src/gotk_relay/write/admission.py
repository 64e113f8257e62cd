"""Stage 3 of the write path: admission, where a checked request becomes queued entries.

A scanned request (``scan.Scanned``: its forwarded bytes, per-destination parts and the series
the Flux rules read) becomes entries that ``Relay.admit`` queues for every destination or for
none (503 when one is full or the spool cannot be written). This runs where the state lives
(the Flux objects, the queues): in the core process, also for requests a scan worker read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

from aiohttp import web

from ..delivery.ack import Ack
from ..delivery.entry import Entry
from ..delivery.spool import SpoolError
from ..model import Batch, Protocol
from ..relay import Admission, Relay
from ..telemetry import Telemetry
from .edge import plain
from .scan import AS_RECEIVED, Scanned, decode_picked

log = logging.getLogger("gotk_relay.write")


def queue_scanned(
    relay: Relay, scanned: Scanned, picked: Batch, now_ms: int, ack: Ack | None = None
) -> Admission:
    """Queue a scanned request everywhere or nowhere (``Relay.admit``); raises SpoolError."""
    forward = (
        Entry(
            scanned.forward,
            Protocol.V1,
            scanned.forward_points,
            now_ms,
            families=scanned.families,
        )
        if scanned.forward
        else None
    )
    routes = {
        name: (
            [
                (
                    p.shard,
                    Entry(
                        p.payload,
                        p.protocol,
                        p.points,
                        now_ms if p.newest_ms == AS_RECEIVED else p.newest_ms,
                        0,
                        p.tenant,
                        families=scanned.families,
                    ),
                )
                for p in routing.parts
            ],
            routing.points,
            routing.orphaned,
            routing.dropped,
        )
        for name, routing in scanned.routes.items()
    }
    admitted = relay.admit(
        picked,
        now_ms,
        scanned.size,
        forward,
        inputs_forwarded=scanned.inputs_forwarded,
        routes=routes,
        ack=ack,
    )
    if admitted.accepted and scanned.relabel_dropped:  # the decoded path: Relay.admit
        relay.telemetry.relabel_dropped.inc(scanned.relabel_dropped)
    return admitted


async def answer_scanned(
    relay: Relay,
    telemetry: Telemetry,
    scanned: Scanned,
    now_ms: int,
    remote: Callable[[], str] = str,
    proto: Protocol = Protocol.V1,
    headers: Mapping[str, str] | None = None,
    held: tuple[int, int, int] | None = None,
) -> web.Response:
    """Decode the picked series of a scanned request and admit it: 204, 400, 413 or 503 (with
    ``receiver.acknowledge: delivered``, once it is delivered: ``acknowledged``).

    Raises DecodeError/LabelLimitError for the caller. The stateful half of the write path: it
    runs in the process that holds the Flux state and the queues, also for requests a scan
    worker scanned (worker_pool.py); so a worker's sender waits for the delivery too. ``proto``:
    what the request came in (a 2.0 one scanned as 1.0, ``scan.scan_v2``), for the counters;
    ``headers``: the 204's (2.0's written counts); ``held``: the request's samples, histograms
    and exemplars when known (a 2.0 one's, counted as it was converted), for the counters.
    """
    picked = decode_picked(scanned, relay.config.receiver)
    ack = waiter(relay)
    answer = refused(telemetry, lambda: queue_scanned(relay, scanned, picked, now_ms, ack), remote)
    if answer is not None:
        return answer
    count_scanned(telemetry, scanned, picked, proto, held)
    return await acknowledged(relay, telemetry, ack, web.Response(status=204, headers=headers))


def waiter(relay: Relay) -> Ack | None:
    """The request's ``Ack`` when it is answered once delivered (``receiver.acknowledge``)."""
    return Ack() if relay.config.receiver.acknowledge == "delivered" else None


async def acknowledged(
    relay: Relay, telemetry: Telemetry, ack: Ack | None, ok: web.Response
) -> web.Response:
    """``ok`` once a queued request is delivered everywhere it went (at once without ``ack``),
    or the 503 that tells its sender to send it again (delivery/ack.py)."""
    if ack is None:
        return ok
    verdict = await ack.wait(relay.config.receiver.acknowledge_timeout)
    if verdict.delivered:
        telemetry.acknowledged.labels("delivered").inc()
        return ok
    if verdict.reason == "timeout":
        telemetry.acknowledged.labels("timeout").inc()
        return plain(
            503,
            "not delivered within "
            f"{relay.config.receiver.acknowledge_timeout:g}s (receiver.acknowledge_timeout); "
            "retry",
        )
    telemetry.acknowledged.labels("failed").inc()
    headers = None
    if verdict.retry_after is not None:
        headers = {"Retry-After": str(math.ceil(verdict.retry_after))}
    return plain(
        503,
        f"destination {verdict.destination!r} did not accept the request ({verdict.reason}); "
        "the relay keeps none of it: retry",
        headers,
    )


def count_scanned(
    telemetry: Telemetry,
    scanned: Scanned,
    picked: Batch,
    proto: Protocol = Protocol.V1,
    held: tuple[int, int, int] | None = None,
) -> None:
    """Received counters of an admitted fast-path request.

    ``held``: its samples, histograms and exemplars, when known. Else samples and histograms
    of forwarded bytes are not told apart without decoding: they count as samples, except in
    the picked series, which were decoded.
    """
    telemetry.labelled(telemetry.scanned, scanned.scanner).inc()
    if scanned.sorted:
        telemetry.sorted_series.inc(scanned.sorted)
    if held is not None:
        telemetry.points_received(proto, *held)
        return
    # Points as they came, before any rule (the picked series are counted as they came out of
    # the global rules, which rarely change their sample counts).
    histograms = picked.histogram_count
    telemetry.points_received(
        proto, max(0, scanned.points - histograms), histograms, picked.exemplar_count
    )


def refused(
    telemetry: Telemetry, queue: Callable[[], Admission], remote: Callable[[], str] = str
) -> web.Response | None:
    """Queue a request (``queue`` calls ``Relay.admit``); the 503 to answer when it was not
    queued, else None (``remote()``: the client, for the status page's examples; asked only
    when the request is refused)."""
    try:
        admission = queue()
    except SpoolError as exc:
        # Relay.spool_failing logs the episode once when it starts and once when it ends.
        log.debug("spool write failed; the request is refused", extra={"err": str(exc)})
        text = "the spool cannot be written; retry later"
        telemetry.refuse("spool_error", remote(), text)
        return plain(503, text, {"Retry-After": "5"})
    if not admission.accepted:
        answer = queue_full(admission.busy_destination)
        telemetry.refuse("queue_full", remote(), answer.text or "")
        return answer
    return None


def queue_full(destination: str) -> web.Response:
    return plain(503, f"queue of destination {destination!r} is full; retry later")


def count_decoded(telemetry: Telemetry, batch: Batch, proto: Protocol) -> None:
    telemetry.points_received(
        proto, batch.sample_count, batch.histogram_count, batch.exemplar_count
    )
