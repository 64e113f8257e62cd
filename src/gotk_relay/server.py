"""HTTP edge: the write endpoint, /federate, /metrics, health, readiness and reload.

The write handler is a thin shell: check credentials, headers and sizes, read the body within
``receiver.read_timeout``, decode within the ``receiver.*`` limits, hand the batch to
``Relay.admit`` and translate the outcome into the status the remote-write spec prescribes.
Nothing between reading the body and queuing it awaits, so batches are queued in the order
their bodies arrived.

``GET /federate`` is bounded (``federate.max_selectors``, ``max_concurrent_requests``,
``timeout``) and renders in one thread from a snapshot, so writes never wait behind it. The
connection bounds (header and idle timeouts, the connection cap) are connections.py's.

When ``receiver.auth`` is set, the write endpoints, ``/federate`` (it serves the written data)
and ``/-/reload`` require credentials; ``/metrics``, ``/-/healthy`` and ``/-/ready`` stay open
for scrapers and probes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from aiohttp import StreamReader, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import ingest
from .config import ConfigError, ReceiverConfig
from .delivery.spool import SpoolError
from .destinations.federate import Snapshot, render_snapshot
from .fastpath import FastPath
from .ingress import Authenticator, InFlight, limits_of
from .model import Batch, Protocol
from .relay import Admission, Relay
from .selectors import SelectorError, parse_selectors
from .telemetry import Telemetry
from .wire import rw1, rw2, snappy
from .wire.errors import DecodeError, TooLargeError
from .wire.labels import LabelLimitError, TooManySamplesError, TooManySeriesError

log = logging.getLogger("gotk_relay.server")

RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)
TELEMETRY: web.AppKey[Telemetry] = web.AppKey("telemetry", Telemetry)
RELOADER: web.AppKey[Callable[[], Awaitable[None]]] = web.AppKey("reloader")
STATE: web.AppKey[dict[str, bool]] = web.AppKey("state", dict)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight", InFlight)
FEDERATING: web.AppKey[InFlight] = web.AppKey("federating", InFlight)
FEDERATE_THREAD: web.AppKey[FederateThread] = web.AppKey("federate_thread")
# Request key: the route to count a request under when it is not the one it came in on.
ROUTE = "gotk_relay.route"


class UnsupportedMediaType(Exception):
    pass


def protocol_of(content_type: str | None) -> Protocol:
    """Which message a write request carries, from its Content-Type (spec: no proto= means v1)."""
    if not content_type:
        return Protocol.V1
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/x-protobuf":
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; expected application/x-protobuf"
        )
    proto = Protocol.V1.value
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto":
            proto = value.strip().strip('"')
    try:
        return Protocol(proto)
    except ValueError:
        raise UnsupportedMediaType(
            f"unsupported proto {proto!r}; expected {Protocol.V1} or {Protocol.V2}"
        ) from None


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


class Rejection(NamedTuple):
    """A write refused before admission: the counter reason and the answer the sender gets.

    Built in one place so the core and the ingest workers (workers.py) answer alike.
    """

    reason: str  # gotk_relay_requests_rejected_total{reason}
    status: int
    text: str
    headers: dict[str, str] | None = None
    hang_up: bool = False  # close the connection after answering (the body was not read)


async def answer(request: web.Request, rejection: Rejection) -> web.StreamResponse:
    """The response of a rejection (see ``Rejection``)."""
    if rejection.hang_up:
        return await _hang_up(request, rejection.status, rejection.text)
    return _plain(rejection.status, rejection.text, rejection.headers)


SHUTTING_DOWN = Rejection("shutting_down", 503, "gotk-relay is shutting down", {"Retry-After": "5"})


def auth_rejection(authenticator: Authenticator, authorization: str | None) -> Rejection | None:
    """The 401 to answer when ``receiver.auth`` is set and the credentials fail it."""
    refusal = authenticator.refusal(authorization)
    if refusal is None:
        return None
    return Rejection("unauthorized", 401, refusal.reason, {"WWW-Authenticate": refusal.challenge})


# "Retry later" is a 503, not a 429: Prometheus retries every 5xx but drops a 429 unless
# retry_on_http_429 is set (off by default), and data a relay refuses must stay with the sender.
# No Retry-After: the sender's own backoff (min_backoff, doubling to max_backoff) applies.


def busy_rejection(limit: int) -> Rejection:
    return Rejection(
        "too_many_requests",
        503,
        f"more than {limit} write requests in progress "
        "(receiver.max_concurrent_requests); retry later",
    )


def _unauthenticated(request: web.Request) -> web.Response | None:
    """The 401 to answer when ``receiver.auth`` is set and the request's credentials fail it."""
    rejection = auth_rejection(request.app[AUTHENTICATOR], request.headers.get("Authorization"))
    if rejection is None:
        return None
    return _plain(rejection.status, rejection.text, rejection.headers)


async def handle_write(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    telemetry = request.app[TELEMETRY]
    if not request.app[STATE].get("accepting", True):
        telemetry.rejected.labels(SHUTTING_DOWN.reason).inc()
        return await answer(request, SHUTTING_DOWN)
    unauthenticated = auth_rejection(
        request.app[AUTHENTICATOR], request.headers.get("Authorization")
    )
    if unauthenticated is not None:
        telemetry.rejected.labels(unauthenticated.reason).inc()
        return await answer(request, unauthenticated)
    in_flight = request.app[IN_FLIGHT]
    limit = relay.config.receiver.max_concurrent_requests
    if not in_flight.enter(limit):
        busy = busy_rejection(limit)
        telemetry.rejected.labels(busy.reason).inc()
        return await answer(request, busy)
    try:
        return await _write(request, relay, telemetry)
    finally:
        in_flight.leave()


def header_rejection(request: web.Request, limits: ReceiverConfig) -> Rejection | Protocol:
    """Checks of a write request's headers: the rejection, or the protocol of the body."""
    encoding = request.headers.get("Content-Encoding", "snappy").strip().lower()
    if encoding != "snappy":
        return Rejection(
            "unsupported_encoding",
            415,
            f"unsupported Content-Encoding {encoding!r}; remote write requires snappy",
        )
    try:
        proto = protocol_of(request.headers.get("Content-Type"))
    except UnsupportedMediaType as exc:
        return Rejection("unsupported_media_type", 415, str(exc))
    if request.content_length is not None and request.content_length > limits.max_request_bytes:
        return Rejection(
            "too_large",
            413,
            f"request body of {request.content_length} bytes exceeds the limit of "
            f"{limits.max_request_bytes} bytes",
        )
    return proto


async def read_write_body(request: web.Request, limits: ReceiverConfig) -> Rejection | bytes:
    """The body of a write request within ``receiver.read_timeout``, ``min_body_rate`` and
    ``max_request_bytes``."""
    pace = _Pace(limits)
    try:
        async with asyncio.timeout_at(pace.deadline) as timer:
            body = await _read_body(request.content, limits.max_request_bytes, pace, timer)
    except TimeoutError:
        if pace.slow:
            return Rejection(
                "slow_body",
                408,
                f"request body slower than {limits.min_body_rate} bytes/s "
                f"(receiver.min_body_rate) after {limits.min_body_rate_grace:g}s",
                hang_up=True,
            )
        return Rejection(
            "read_timeout",
            408,
            f"request body not received within {limits.read_timeout:g}s (receiver.read_timeout)",
            hang_up=True,
        )
    if body is None:
        return Rejection(
            "too_large",
            413,
            f"request body exceeds the limit of {limits.max_request_bytes} bytes",
            hang_up=True,
        )
    return body


class _Pace:
    """When a body being read is overdue: ``read_timeout`` for all of it, and ``min_body_rate``
    as mod_reqtimeout's MinRate: ``grace`` seconds, plus one second per ``rate`` bytes received.
    """

    __slots__ = ("_rate", "_read_by", "_start", "deadline", "slow")

    def __init__(self, limits: ReceiverConfig) -> None:
        now = asyncio.get_running_loop().time()
        self._read_by = now + limits.read_timeout if limits.read_timeout else None  # 0: none
        self._rate = limits.min_body_rate
        self._start = now + limits.min_body_rate_grace
        self.deadline: float | None = self._read_by
        self.slow = False
        self.received(0)

    def received(self, size: int) -> None:
        """Move the deadline for ``size`` bytes received so far."""
        if not self._rate:
            return
        paced = self._start + size / self._rate
        if self._read_by is None or paced < self._read_by:
            self.deadline, self.slow = paced, True
        else:
            self.deadline, self.slow = self._read_by, False


def decode_rejection(exc: Exception) -> Rejection | None:
    """The 4xx of a request that does not decode (within the limits); None for other errors."""
    if isinstance(exc, TooManySeriesError):
        return Rejection("too_many_series", 413, str(exc))
    if isinstance(exc, TooManySamplesError):
        return Rejection("too_many_samples", 413, str(exc))
    if isinstance(exc, LabelLimitError):
        return Rejection("label_limits", 400, str(exc))
    if isinstance(exc, TooLargeError):
        return Rejection("too_large", 413, str(exc))
    if isinstance(exc, DecodeError):
        return Rejection("malformed", 400, str(exc))
    return None


async def _write(request: web.Request, relay: Relay, telemetry: Telemetry) -> web.StreamResponse:
    limits = relay.config.receiver
    checked = header_rejection(request, limits)
    if isinstance(checked, Rejection):
        telemetry.rejected.labels(checked.reason).inc()
        return await answer(request, checked)
    proto = checked
    saturated = relay.room(1, 1)  # the smallest batch: a refusal here is certain
    if not saturated.accepted:
        # Refused before its body is read, decompressed and scanned: under overload the relay
        # spends its CPU on the requests it can take (aiohttp discards the unread body).
        telemetry.rejected.labels("queue_full").inc()
        return _queue_full(saturated.busy_destination)
    body = await read_write_body(request, limits)
    if isinstance(body, Rejection):
        telemetry.rejected.labels(body.reason).inc()
        return await answer(request, body)
    now_ms = int(time.time() * 1000)
    try:
        raw = snappy.decompress(body, limits.max_decompressed_bytes)
        fast = relay.fast
        if proto == Protocol.V1 and fast is not None:
            return _pass_through(relay, telemetry, body, raw, now_ms, fast)
        codec = rw2 if proto == Protocol.V2 else rw1
        batch = codec.decode(raw, limits=limits_of(limits))
    except (TooManySeriesError, LabelLimitError, TooLargeError, DecodeError) as exc:
        rejection = decode_rejection(exc)
        assert rejection is not None
        telemetry.rejected.labels(rejection.reason).inc()
        return await answer(request, rejection)
    refusal = _admitted(telemetry, lambda: relay.admit(batch, now_ms, len(raw)))
    if refusal is not None:
        return refusal
    _count(telemetry, batch, proto)
    headers = {}
    if proto == Protocol.V2:
        headers = {
            "X-Prometheus-Remote-Write-Samples-Written": str(batch.sample_count),
            "X-Prometheus-Remote-Write-Histograms-Written": str(batch.histogram_count),
            "X-Prometheus-Remote-Write-Exemplars-Written": str(batch.exemplar_count),
        }
    return web.Response(status=204, headers=headers)


def _pass_through(
    relay: Relay, telemetry: Telemetry, body: bytes, raw: bytes, now_ms: int, fast: FastPath
) -> web.Response:
    """A v1 request on the fast path (see fastpath.py): only the series a rule or the federate
    store may want are decoded (and validated); the rest is forwarded as the bytes that came.

    ``body`` is the snappy block as received (already known to decompress to ``raw``). Raises
    DecodeError/TooManySeriesError/LabelLimitError like the full path, for the caller.
    """
    scanned = ingest.scan_request(body, raw, relay.config.receiver, fast)
    return admit_scanned(relay, telemetry, scanned, now_ms)


def admit_scanned(
    relay: Relay, telemetry: Telemetry, scanned: ingest.Scanned, now_ms: int
) -> web.Response:
    """Decode the picked series of a scanned request and admit it: 204, 400, 413 or 503.

    Raises DecodeError/LabelLimitError for the caller, like ``_pass_through``. The stateful half
    of the fast path: it runs in the process that holds the Flux state and the queues, also for
    requests an ingest worker scanned (workers.py).
    """
    picked = ingest.decode_picked(scanned, relay.config.receiver)
    refusal = _admitted(telemetry, lambda: ingest.admit(relay, scanned, picked, now_ms))
    if refusal is not None:
        return refusal
    count_scanned(telemetry, scanned, picked)
    return web.Response(status=204)


def count_scanned(telemetry: Telemetry, scanned: ingest.Scanned, picked: Batch) -> None:
    """Received counters of an admitted fast-path request.

    Samples and histograms of forwarded bytes are not told apart without decoding: they count
    as samples, except in the picked series, which were decoded.
    """
    telemetry.scanned.labels(scanned.scanner).inc()
    if scanned.sorted:
        telemetry.sorted_series.inc(scanned.sorted)
    received = telemetry.received
    # Points as they came, before any rule (the picked series are counted as they came out of
    # the global rules, which rarely change their sample counts).
    histograms = picked.histogram_count
    received.labels("sample", Protocol.V1).inc(max(0, scanned.points - histograms))
    received.labels("histogram", Protocol.V1).inc(histograms)
    received.labels("exemplar", Protocol.V1).inc(picked.exemplar_count)


def _admitted(telemetry: Telemetry, admit: Callable[[], Admission]) -> web.Response | None:
    """Run an admission; the 503 to answer when it did not queue the batch, else None."""
    try:
        admission = admit()
    except SpoolError as exc:
        # Relay.spool_failing logs the episode once when it starts and once when it ends.
        log.debug("spool write failed; the request is refused", extra={"err": str(exc)})
        telemetry.rejected.labels("spool_error").inc()
        return _plain(503, "the spool cannot be written; retry later", {"Retry-After": "5"})
    if not admission.accepted:
        telemetry.rejected.labels("queue_full").inc()
        return _queue_full(admission.busy_destination)
    return None


def _queue_full(destination: str) -> web.Response:
    return _plain(503, f"queue of destination {destination!r} is full; retry later")


async def _read_body(
    content: StreamReader, limit: int, pace: _Pace, timer: asyncio.Timeout
) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes; ``timer`` follows
    ``pace`` as bytes come.

    A loop, because ``StreamReader.read(n)`` returns what has arrived so far, not n bytes: a body
    that comes in several TCP segments would otherwise be cut short.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        pace.received(size)
        timer.reschedule(pace.deadline)
    return b"".join(chunks)


async def _hang_up(request: web.Request, status: int, text: str) -> web.StreamResponse:
    """Answer, then close the connection at once.

    Otherwise aiohttp keeps reading (and discarding) the rest of a slow or oversized body for
    its lingering time, and a slow sender holds the connection that much longer.
    """
    response = _plain(status, text)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport sends what is buffered, then closes
    return response


def _count(telemetry: Telemetry, batch: Batch, proto: Protocol) -> None:
    telemetry.received.labels("sample", proto).inc(batch.sample_count)
    telemetry.received.labels("histogram", proto).inc(batch.histogram_count)
    telemetry.received.labels("exemplar", proto).inc(batch.exemplar_count)


async def handle_federate(request: web.Request) -> web.StreamResponse:
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    relay = request.app[RELAY]
    store = relay.federate
    if store is None:
        return _plain(404, "the federate destination is disabled (federate.enabled: false)")
    limits = relay.config.federate
    matches = request.query.getall("match[]", [])
    if len(matches) > limits.max_selectors:
        return _plain(
            400,
            f"{len(matches)} match[] selectors; at most {limits.max_selectors} are allowed "
            "(federate.max_selectors)",
        )
    gate = request.app[FEDERATING]
    if not gate.enter(limits.max_concurrent_requests):
        return _plain(
            503,
            f"more than {limits.max_concurrent_requests} /federate requests in progress "
            "(federate.max_concurrent_requests); retry later",
        )
    # Selectors are parsed, matched and the text rendered in a thread, from a snapshot taken
    # on the loop a chunk at a time: the write path's loop never waits for a /federate.
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    rendering: asyncio.Future[bytes] | None = None
    try:
        async with asyncio.timeout(limits.timeout):
            snapshot = await store.snapshot()
            rendering = loop.run_in_executor(
                request.app[FEDERATE_THREAD].get(), _render, snapshot, matches, stop
            )
            # The slot is free when the thread is, not when this request stops waiting for it.
            rendering.add_done_callback(lambda done: _rendered(gate, done))
            body = await asyncio.shield(rendering)
    except TimeoutError:
        stop.set()
        return _plain(
            503, f"/federate took longer than {limits.timeout:g}s (federate.timeout); retry later"
        )
    except SelectorError as exc:
        return _plain(400, str(exc))
    finally:
        stop.set()  # also when the client went away: the thread stops at its next look
        if rendering is None:
            gate.leave()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _rendered(gate: InFlight, done: asyncio.Future[bytes]) -> None:
    gate.leave()
    if not done.cancelled():
        done.exception()  # retrieved: an abandoned render's error is no one's to log


# The GIL switch interval while a render runs: the event loop waits up to this long for the
# GIL each time it wakes (5 ms by default), so 1 ms keeps writes from waiting behind a render
# (measured: three times as many loop wake-ups beside a busy thread).
RENDER_SWITCH_INTERVAL = 0.001


def _render(snapshot: Snapshot, matches: list[str], stop: threading.Event) -> bytes:
    """The /federate body (in the federate thread: one render at a time)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, RENDER_SWITCH_INTERVAL))
    try:
        selectors = parse_selectors(matches) if matches else None
        return render_snapshot(snapshot, selectors, stop).encode("utf-8")
    finally:
        sys.setswitchinterval(interval)


class FederateThread:
    """The one thread /federate renders in: one, so that renders take turns with the event
    loop for the GIL instead of crowding it out (``federate.max_concurrent_requests`` bounds how
    many wait for it)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="gotk-relay-federate")
        return self._executor

    async def close(self, _app: web.Application) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[TELEMETRY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def handle_healthy(request: web.Request) -> web.StreamResponse:
    return _plain(200, "gotk-relay is Healthy.")


async def handle_ready(request: web.Request) -> web.StreamResponse:
    if not request.app[STATE].get("accepting", True):
        return _plain(503, "gotk-relay is shutting down.")
    # A sender or the spool failing on an error: not ready until it recovers (Relay.problems).
    problems = request.app[RELAY].problems()
    if problems:
        return _plain(503, "not ready: " + "; ".join(problems))
    return _plain(200, "gotk-relay is Ready.")


async def handle_reload(request: web.Request) -> web.StreamResponse:
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    if not request.app[STATE].get("lifecycle", False):
        return _plain(403, "Lifecycle API is not enabled (start with --web.enable-lifecycle).")
    try:
        await request.app[RELOADER]()
    except ConfigError as exc:
        return _plain(500, f"failed to reload config: {exc}")
    return _plain(200, "config reloaded")


async def handle_index(request: web.Request) -> web.StreamResponse:
    return _plain(
        200,
        "gotk-relay: POST /api/v1/write (remote write 1.0/2.0), GET /federate, /metrics, "
        "/-/healthy, /-/ready, POST /-/reload",
    )


@web.middleware
async def instrument(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    telemetry = request.app[TELEMETRY]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "other"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return _plain(500, "internal error; see the relay's log")
    finally:
        # A request an ingest worker handled for a client is counted under the client's route
        # (workers.py sets it); the workers' own calls to the core are not counted.
        name = request.get(ROUTE, name)
        if not name.startswith("/internal/"):
            telemetry.http_requests.labels(name, str(status)).inc()
            telemetry.http_duration.labels(name).observe(time.perf_counter() - started)


def make_app(
    relay: Relay,
    telemetry: Telemetry,
    reloader: Callable[[], Awaitable[None]],
    *,
    enable_lifecycle: bool = True,
    authenticator: Authenticator | None = None,
) -> web.Application:
    """The relay's HTTP app.

    ``authenticator`` is the one the caller reconfigures on reload; without it one is built from
    ``relay.config.receiver.auth`` (``ConfigError`` when a secret file is unusable).
    """
    # client_max_size guards every handler that reads a body; the write handler reads with
    # its own (configurable) limit. auto_decompress off: aiohttp must not inflate a gzip/zstd
    # body (unbounded) before the handler can answer 415 for an encoding remote write forbids.
    app = web.Application(
        middlewares=[instrument],
        client_max_size=1024 * 1024,
        handler_args={"auto_decompress": False},
    )
    app[RELAY] = relay
    app[TELEMETRY] = telemetry
    app[RELOADER] = reloader
    app[STATE] = {"accepting": True, "lifecycle": enable_lifecycle}
    app[AUTHENTICATOR] = (
        authenticator if authenticator is not None else Authenticator(relay.config.receiver.auth)
    )
    app[IN_FLIGHT] = InFlight()
    app[FEDERATING] = InFlight()
    app[FEDERATE_THREAD] = FederateThread()
    app.on_cleanup.append(app[FEDERATE_THREAD].close)
    app.router.add_post("/api/v1/write", handle_write)
    app.router.add_post("/api/v1/push", handle_write)
    app.router.add_get("/federate", handle_federate)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_put("/-/reload", handle_reload)
    app.router.add_get("/", handle_index)
    return app
