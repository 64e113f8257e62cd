"""The relay's HTTP app: the write endpoint, /federate, /metrics, health, readiness and reload.

The write handler (``_write``) calls the stages of ``write/`` in order: the edge checks, the
scan of a remote write 1.0 request on its bytes (or a full decode), admission; and it turns the
outcome into the status the remote-write spec prescribes. Nothing between reading the body and
queuing it awaits, so batches are queued in the order their bodies arrived; the exception is a
large 2.0 body on the decoded path (``V2_DECODE_IN_THREAD``), whose sender's shard waits for
its answer before sending the next, so each series' order still holds.

``GET /federate`` is bounded (``federate.max_selectors``, ``max_concurrent_requests``,
``timeout``) and streamed as the store makes it on the loop, ``STREAM_CHUNK`` (256) series at a time
(``FederateStore.stream``), giving way to writes between pieces. The
connection bounds (header and idle timeouts, the connection cap) are connections.py's.

``GET /flux/controller/metrics`` and ``/flux/kube-state-metrics/metrics`` serve the Flux
families from the same store as their own exporters did (``destinations/controller_view.py``),
for the Datadog Agent's Flux check, under ``/federate``'s bounds.

``GET /`` is the status page (``status_page.py``; its data as JSON at ``/status.json``).

When ``receiver.auth`` is set, the write endpoints, ``/federate``, the Flux pages and the status
page (they serve the written data) and ``/-/reload`` require credentials; ``/metrics``,
``/-/healthy`` and ``/-/ready`` stay open for scrapers and probes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import status_page
from .access import Authenticator, InFlight, limits_of
from .config import Config, ConfigError
from .destinations.controller_view import Page, controller_page, ksm_page
from .destinations.federate import Snapshot
from .model import Protocol
from .relay import Relay
from .selectors import Predicate, SelectorError, parse_selectors
from .status_page import ObjectIndex
from .telemetry import Telemetry
from .wire import rw2, snappy, text
from .wire.errors import DecodeError, TooLargeError
from .wire.labels import LabelLimitError, TooManySeriesError
from .write.admission import (
    acknowledged,
    answer_scanned,
    count_decoded,
    queue_full,
    refused,
    waiter,
)
from .write.edge import (
    SHUTTING_DOWN,
    Rejection,
    answer,
    auth_rejection,
    busy_rejection,
    client_address,
    decode_rejection,
    expect_rejection,
    header_rejection,
    invite,
    plain,
    read_write_body,
    written_headers,
    written_on_refusal,
)
from .write.scan import Unworded, scan_request, scan_v2

log = logging.getLogger("gotk_relay.server")

RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)
TELEMETRY: web.AppKey[Telemetry] = web.AppKey("telemetry", Telemetry)
RELOADER: web.AppKey[Callable[[], Awaitable[None]]] = web.AppKey("reloader")
QUITTER: web.AppKey[Callable[[], None]] = web.AppKey("quitter")
STATE: web.AppKey[dict[str, bool]] = web.AppKey("state", dict)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight", InFlight)
FEDERATING: web.AppKey[InFlight] = web.AppKey("federating", InFlight)
FEDERATE_THREAD: web.AppKey[FederateThread] = web.AppKey("federate_thread")
# Remote write 2.0 decodes into the model (a Python object per label: ≈80 bytes each, a few
# hundred MiB for a request of 30,000 series of 128 labels within the default limits) run one
# at a time; others wait their turn with their bodies (bounded by max_concurrent_requests).
DECODING: web.AppKey[asyncio.Semaphore] = web.AppKey("decoding", asyncio.Semaphore)
# Request key: the route to count a request under when it is not the one it came in on.
ROUTE = "gotk_relay.route"
# A remote write 2.0 body larger than this (≈500 series) is decoded in a thread.
V2_DECODE_IN_THREAD = 64 * 1024


def _unauthenticated(request: web.Request) -> web.Response | None:
    """The 401 to answer when ``receiver.auth`` is set and the request's credentials fail it."""
    rejection = auth_rejection(request.app[AUTHENTICATOR], request.headers.get("Authorization"))
    if rejection is None:
        return None
    return plain(rejection.status, rejection.text, rejection.headers)


async def expect_write(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on the write paths: a request the relay would refuse on its
    headers alone (credentials, Content-Encoding, Content-Type, a Content-Length over
    ``max_request_bytes``) is answered at once, its body never invited (and the connection
    closed, as its body is not read); else aiohttp's answer, ``100 Continue``."""
    limits = request.app[RELAY].config.receiver
    rejection = expect_rejection(request, request.app[AUTHENTICATOR], limits)
    if rejection is not None:
        request.app[TELEMETRY].refuse(rejection.reason, client_address(request), rejection.text)
        response = plain(rejection.status, rejection.text, rejection.headers)
        response.force_close()  # aiohttp reads and drops a body sent anyway, then closes
        return response
    await invite(request)
    return None


async def handle_write(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    telemetry = request.app[TELEMETRY]
    if not request.app[STATE].get("accepting", True):
        telemetry.refuse(SHUTTING_DOWN.reason, client_address(request), SHUTTING_DOWN.text)
        return await answer(request, SHUTTING_DOWN)
    unauthenticated = auth_rejection(
        request.app[AUTHENTICATOR], request.headers.get("Authorization")
    )
    if unauthenticated is not None:
        telemetry.refuse(unauthenticated.reason, client_address(request), unauthenticated.text)
        return await answer(request, unauthenticated)
    in_flight = request.app[IN_FLIGHT]
    limit = relay.config.receiver.max_concurrent_requests
    if not in_flight.enter(limit):
        busy = busy_rejection(limit)
        telemetry.refuse(busy.reason, client_address(request), busy.text)
        return await answer(request, busy)
    try:
        return await _write(request, relay, telemetry)
    finally:
        in_flight.leave()


async def _write(request: web.Request, relay: Relay, telemetry: Telemetry) -> web.StreamResponse:
    """One write request through the stages of ``write/``: the edge checks, then a remote write
    1.0 request is scanned on its bytes (``relay.fast``, under every configuration) and
    admitted; a 2.0 request too once converted to 1.0 (``scan_v2``) when 1.0 carries it as the
    decoded path would, else it is decoded and admitted."""
    limits = relay.config.receiver
    checked = header_rejection(request, limits)
    if isinstance(checked, Rejection):
        telemetry.refuse(checked.reason, client_address(request), checked.text)
        return await answer(request, checked)
    proto = checked
    saturated = relay.room(1, 1)  # the smallest batch: a refusal here is certain
    if not saturated.accepted:
        # Refused before its body is read, decompressed and scanned: under overload the relay
        # spends its CPU on the requests it can take (aiohttp discards the unread body).
        full = queue_full(saturated.busy_destination)
        telemetry.refuse("queue_full", client_address(request), full.text or "")
        return full
    body = await read_write_body(request, limits)
    if isinstance(body, Rejection):
        telemetry.refuse(body.reason, client_address(request), body.text)
        return await answer(request, body)
    now_ms = int(time.time() * 1000)
    try:
        raw = snappy.decompress(body, limits.max_decompressed_bytes)
        if proto == Protocol.V1:
            # Raises DecodeError/TooManySeriesError/LabelLimitError like the decoders.
            try:
                scanned = scan_request(body, raw, limits, relay.fast)
            except Unworded as unworded:
                # A large refused request: its Python wording off the event loop (nothing is
                # queued for it, so no order to keep).
                await asyncio.to_thread(unworded.word)  # raises the worded error
                raise AssertionError("a refused request worded without an error") from None
            return await answer_scanned(
                relay, telemetry, scanned, now_ms, lambda: client_address(request)
            )
        as_v1 = scan_v2(raw, limits, relay.fast)
        if as_v1 is not None:
            # A 2.0 request 1.0 carries as the decoded path would: on the fast path.
            scanned, held = as_v1
            return await answer_scanned(
                relay,
                telemetry,
                scanned,
                now_ms,
                lambda: client_address(request),
                Protocol.V2,
                written_headers(held.samples, held.histograms, held.exemplars),
                (held.samples, held.histograms, held.exemplars),
            )
        bounds = limits_of(limits)
        if len(raw) > V2_DECODE_IN_THREAD:
            # Remote write 2.0 is decoded in Python, ≈20 µs a series: off the event loop,
            # which gets the GIL back every switch interval, so that other requests, probes
            # and /metrics go on meanwhile. Decoding is a pure function of the bytes;
            # admission, which changes state, stays on the loop.
            async with request.app[DECODING]:
                decoded = await asyncio.to_thread(rw2.decode_counted, raw, limits=bounds)
        else:
            decoded = rw2.decode_counted(raw, limits=bounds)
        batch = decoded.batch
    except (TooManySeriesError, LabelLimitError, TooLargeError, DecodeError) as exc:
        rejection = decode_rejection(exc)
        assert rejection is not None
        telemetry.refuse(rejection.reason, client_address(request), rejection.text)
        return await answer(request, rejection)
    ack = waiter(relay)
    refusal = refused(
        telemetry,
        # A 2.0 request's size in the queues is its labels resolved, which may be many times
        # its own (a long symbol referenced by every series).
        lambda: relay.admit(batch, now_ms, max(len(raw), decoded.expanded), ack=ack),
        lambda: client_address(request),
    )
    if refusal is not None:
        return refusal
    count_decoded(telemetry, batch, proto)
    headers = written_headers(batch.sample_count, batch.histogram_count, batch.exemplar_count)
    return await acknowledged(relay, telemetry, ack, web.Response(status=204, headers=headers))


_Answer = TypeVar("_Answer", bound=web.StreamResponse)


def _text_response(request: web.Request, response: _Answer) -> _Answer:
    """``response`` as the text format, gzipped when the request accepts gzip (Prometheus'
    scrapes and the Datadog Agent ask for it, and Prometheus' /federate gives it): a Flux
    fleet's page is tens of MB of repetitive text. aiohttp compresses pieces over 4 KiB in a
    thread, off the event loop."""
    response.headers["Content-Type"] = text.CONTENT_TYPE
    if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        response.enable_compression(web.ContentCoding.gzip)
    return response


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (RFC 9110: listed with a q above 0, else
    ``*`` so)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights.setdefault(coding.strip().lower(), q)
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def lookback_start(lookback_delta: float) -> int:
    """The oldest sample time (ms) a render made now serves: Prometheus' /federate evaluates
    at the request's time with its lookback delta (``federate.lookback_delta``)."""
    return int(time.time() * 1000) - round(lookback_delta * 1000)


async def handle_federate(request: web.Request) -> web.StreamResponse:
    """The federate store's text, streamed as the store makes it on the loop ``STREAM_CHUNK``
    (256) series at a time (``FederateStore.stream``), under ``/federate``'s bounds: writes
    wait about a ms at most behind a piece (``_give_way``), and a render holds one piece at a
    time."""
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    relay = request.app[RELAY]
    store = relay.federate
    if store is None:
        return plain(404, "the federate destination is disabled (federate.enabled: false)")
    limits = relay.config.federate
    matches = request.query.getall("match[]", [])
    if len(matches) > limits.max_selectors:
        return _too_many_selectors(len(matches), limits.max_selectors)
    try:
        query = store.query(matches)
    except SelectorError as exc:
        return plain(400, str(exc))
    gate = request.app[FEDERATING]
    if not gate.enter(limits.max_concurrent_requests):
        return _busy(limits.max_concurrent_requests)
    response: web.StreamResponse | None = None
    pieces = store.stream(query, oldest=lookback_start(limits.lookback_delta))
    try:
        async with asyncio.timeout(limits.timeout):
            mark = time.perf_counter()
            async for piece in pieces:
                if response is None:
                    response = _text_response(request, web.StreamResponse())
                    await response.prepare(request)
                if piece:
                    await response.write(piece)
                mark = await _give_way(mark)
            if response is None:  # an empty store
                response = _text_response(request, web.StreamResponse())
                await response.prepare(request)
            await response.write_eof()
            return response
    except TimeoutError:
        if response is None:
            return _too_slow("/federate", limits.timeout)
        # Part of the text is sent: the connection is cut, so that the scraper sees a failed
        # scrape instead of a page that ends early (the chunked body never ends).
        log.warning(
            "/federate took longer than %gs (federate.timeout); connection closed mid-answer",
            limits.timeout,
        )
        if request.transport is not None:
            request.transport.abort()
        return response
    except ConnectionResetError:
        # The scraper went away mid-answer: nothing to tell it, and no error of the relay's.
        log.debug("/federate: the client closed the connection mid-answer")
        assert response is not None
        return response
    finally:
        await pieces.aclose()
        gate.leave()


# A turn of the loop longer than this means it had other work (writes) beside a render.
BUSY_TURN = 0.0002
# The longest a render waits after one piece while the loop has other work.
MAX_GIVE_WAY = 0.005


async def _give_way(mark: float) -> float:
    """After a piece of a render made since ``mark``: the loop's other work goes first, and
    when there was some, the render waits as long as its piece took (the writes get at least
    half the loop while a render runs; alone, a render goes at full speed). Returns the new
    mark."""
    worked = time.perf_counter() - mark
    before = time.perf_counter()
    await asyncio.sleep(0)
    if time.perf_counter() - before > BUSY_TURN:
        await asyncio.sleep(min(worked, MAX_GIVE_WAY))
    return time.perf_counter()


def _too_many_selectors(count: int, limit: int) -> web.Response:
    return plain(
        400, f"{count} match[] selectors; at most {limit} are allowed (federate.max_selectors)"
    )


def _busy(limit: int) -> web.Response:
    return plain(
        503,
        f"more than {limit} /federate and Flux page requests in progress "
        "(federate.max_concurrent_requests); retry later",
    )


def _too_slow(path: str, timeout: float) -> web.Response:
    return plain(503, f"{path} took longer than {timeout:g}s (federate.timeout); retry later")


_Rendered = TypeVar("_Rendered")

# The Flux pages for the Datadog Agent's Flux check (controller_view.py): its two endpoints.
CONTROLLER_PAGE = "/flux/controller/metrics"
KSM_PAGE = "/flux/kube-state-metrics/metrics"
# Flux pages by path: how each is made from a snapshot, and what it shows.
_FLUX_PAGES: dict[
    str, tuple[Callable[[Snapshot, threading.Event, Predicate | None], Page], str]
] = {
    CONTROLLER_PAGE: (controller_page, "the Flux controllers' gotk_reconcile_condition"),
    KSM_PAGE: (ksm_page, "kube-state-metrics' gotk_resource_info"),
}
# The last number of series each page (with its query) left out, to log its changes only.
FLUX_COLLAPSED: web.AppKey[dict[str, int]] = web.AppKey("flux_collapsed", dict)
FLUX_COLLAPSED_PAGES = 64


async def handle_flux_page(request: web.Request) -> web.StreamResponse:
    """A Flux page (``CONTROLLER_PAGE``, ``KSM_PAGE``) from the federate store, under
    ``/federate``'s credentials and bounds (``_from_store``). ``match[]`` selectors, as
    /federate takes them, choose the stored series it is made from (one cluster's, when several
    write to one relay)."""
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    path = request.match_info.route.resource
    assert path is not None
    make, what = _FLUX_PAGES[path.canonical]
    if request.app[RELAY].federate is None:
        return plain(
            404,
            f"{path.canonical} serves {what} from the federate store, which is disabled "
            "(federate.enabled: false)",
        )
    page = await _from_store(request, path.canonical, functools.partial(_render_page, make))
    if isinstance(page, web.Response):
        return page
    _collapsed(request.app[FLUX_COLLAPSED], request.path_qs, page.collapsed)
    return _text_response(request, web.Response(body=page.text.encode("utf-8")))


async def _from_store(
    request: web.Request,
    path: str,
    render: Callable[[Snapshot, list[str], threading.Event], _Rendered],
) -> _Rendered | web.Response:
    """``render`` of the federate store's snapshot, or the answer that refuses it, under the
    bounds /federate and the Flux pages share: ``federate.max_selectors`` ``match[]`` (400),
    ``max_concurrent_requests`` renders at once (503), ``timeout`` (503).

    Selectors are parsed, matched and the text rendered in a thread, from a snapshot taken on
    the loop a chunk at a time: the write path's loop never waits for a render.
    """
    relay = request.app[RELAY]
    store = relay.federate
    assert store is not None  # the caller answered 404
    limits = relay.config.federate
    matches = request.query.getall("match[]", [])
    if len(matches) > limits.max_selectors:
        return _too_many_selectors(len(matches), limits.max_selectors)
    gate = request.app[FEDERATING]
    if not gate.enter(limits.max_concurrent_requests):
        return _busy(limits.max_concurrent_requests)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    rendering: asyncio.Future[_Rendered] | None = None
    try:
        async with asyncio.timeout(limits.timeout):
            snapshot = await store.snapshot(oldest=lookback_start(limits.lookback_delta))
            rendering = loop.run_in_executor(
                request.app[FEDERATE_THREAD].get(), render, snapshot, matches, stop
            )
            # The slot is free when the thread is, not when this request stops waiting for it.
            rendering.add_done_callback(lambda done: _rendered(gate, done))
            return await asyncio.shield(rendering)
    except TimeoutError:
        stop.set()
        return _too_slow(path, limits.timeout)
    except SelectorError as exc:
        return plain(400, str(exc))
    finally:
        stop.set()  # also when the client went away: the thread stops at its next look
        if rendering is None:
            gate.leave()


def _collapsed(last: dict[str, int], path: str, collapsed: int) -> None:
    """Log when the number of stored series a page (with its query) leaves out as another
    source's copy changes (two replicas or clusters reporting one object): once per change, not
    per scrape."""
    if len(last) >= FLUX_COLLAPSED_PAGES and path not in last:
        last.clear()  # bounded: queries are the scrapers' to choose
    if last.get(path, 0) != collapsed:
        last[path] = collapsed
        if collapsed:
            log.info(
                "%s: %d stored series left out: another source (replica or cluster) reports "
                "the same objects, and each object is served from one (docs/recipes.md)",
                path,
                collapsed,
            )
        else:
            log.info("%s: no stored series left out any more: one source per object", path)


def _render_page(
    make: Callable[[Snapshot, threading.Event, Predicate | None], Page],
    snapshot: Snapshot,
    matches: list[str],
    stop: threading.Event,
) -> Page:
    """A Flux page (in the federate thread), with /federate's switch interval."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, RENDER_SWITCH_INTERVAL))
    try:
        return make(snapshot, stop, parse_selectors(matches) if matches else None)
    finally:
        sys.setswitchinterval(interval)


def _rendered(gate: InFlight, done: asyncio.Future[Any]) -> None:
    gate.leave()
    if not done.cancelled():
        done.exception()  # retrieved: an abandoned render's error is no one's to log


# The GIL switch interval while a render runs: the event loop waits up to this long for the
# GIL each time it wakes (5 ms by default), so 1 ms keeps writes from waiting behind a render
# (measured: three times as many loop wake-ups beside a busy thread).
RENDER_SWITCH_INTERVAL = 0.001


class FederateThread:
    """The one thread the Flux pages and the status page render in (/federate is streamed from
    the loop): one, so that renders take turns with the event loop for the GIL instead of
    crowding it out (``federate.max_concurrent_requests`` bounds how many wait for it)."""

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
    response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    response.enable_compression()  # gzip when asked, as Prometheus' scrapes ask
    return response


async def handle_healthy(request: web.Request) -> web.StreamResponse:
    return plain(200, "gotk-relay is Healthy.")


async def handle_ready(request: web.Request) -> web.StreamResponse:
    if not request.app[STATE].get("accepting", True):
        return plain(503, "gotk-relay is shutting down.")
    # A sender or the spool failing on an error: not ready until it recovers (Relay.problems).
    problems = request.app[RELAY].problems()
    if problems:
        return plain(503, "not ready: " + "; ".join(problems))
    return plain(200, "gotk-relay is Ready.")


def _lifecycle_refusal(request: web.Request) -> web.StreamResponse | None:
    """The answer to a lifecycle call that may not run: unauthenticated, or the API off."""
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    if not request.app[STATE].get("lifecycle", False):
        return plain(403, "Lifecycle API is not enabled (start with --web.enable-lifecycle).")
    return None


async def handle_reload(request: web.Request) -> web.StreamResponse:
    refusal = _lifecycle_refusal(request)
    if refusal is not None:
        return refusal
    try:
        await request.app[RELOADER]()
    except ConfigError as exc:
        return plain(500, f"failed to reload config: {exc}")
    return plain(200, "config reloaded")


async def handle_quit(request: web.Request) -> web.StreamResponse:
    """``/-/quit``, as Prometheus': a graceful shutdown, as on SIGTERM (lifecycle API only)."""
    refusal = _lifecycle_refusal(request)
    if refusal is not None:
        return refusal
    request.app[QUITTER]()
    return plain(200, "Requesting termination... Goodbye!")


class StatusState:
    """What the status page keeps between requests: the tracked objects' sorted index, the
    redacted YAML of the running configuration (made in the render thread, the only one that
    reads or writes it), and the count of pages being made."""

    def __init__(self) -> None:
        self.index = ObjectIndex()
        self.making = InFlight()
        self._config: tuple[Config, str] | None = None

    def config_yaml(self, config: Config) -> str:
        if self._config is None or self._config[0] is not config:
            self._config = (config, status_page.config_yaml(config))
        return self._config[1]


STATUS: web.AppKey[StatusState] = web.AppKey("status", StatusState)
# Status pages made at once (beyond: 503); each waits for the render thread.
STATUS_MAX_CONCURRENT = 4
STATUS_JSON = "/status.json"


def _switching(make: Callable[[], _Rendered]) -> _Rendered:
    """``make()`` in the render thread, with /federate's switch interval."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, RENDER_SWITCH_INTERVAL))
    try:
        return make()
    finally:
        sys.setswitchinterval(interval)


async def handle_index(request: web.Request) -> web.StreamResponse:
    """The status page (``status_page.py``): HTML at ``/`` (plain text for a client that
    accepts only that), JSON at ``/status.json``; under ``/federate``'s credentials. The
    relay's state is read on the loop (cheap); the tracked objects are described, sorted,
    filtered and rendered in the render thread (``status_page.ObjectIndex``)."""
    unauthenticated = _unauthenticated(request)
    if unauthenticated is not None:
        return unauthenticated
    try:
        query = status_page.parse_query(request.query)
        refresh = status_page.parse_refresh(request.query)
    except status_page.QueryError as exc:
        return plain(400, str(exc))
    state = request.app[STATUS]
    if not state.making.enter(STATUS_MAX_CONCURRENT):
        return plain(503, f"more than {STATUS_MAX_CONCURRENT} status pages in progress; retry")
    rendering: asyncio.Future[str] | None = None
    try:
        relay = request.app[RELAY]
        thread = request.app[FEDERATE_THREAD].get()
        loop = asyncio.get_running_loop()

        def run(make: Callable[[], _Rendered]) -> asyncio.Future[_Rendered]:
            return loop.run_in_executor(thread, _switching, make)

        now = time.time()
        view = status_page.relay_view(relay, now)
        refusals = request.app[TELEMETRY].refusals.summary()
        config = relay.config
        rows = await state.index.rows(relay.pipeline.flux, run)
        if request.path == STATUS_JSON:
            render, content_type = status_page.render_json, "application/json"
        elif _wants_text(request.headers.get("Accept", "")):
            render, content_type = status_page.render_text, "text/plain"
        else:
            render, content_type = status_page.render_html, "text/html"

        def make() -> str:
            objects = status_page.select(rows, query)
            shown = state.config_yaml(config)  # cached while the configuration stays
            return render(status_page.StatusPage(now, view, objects, refusals, shown, refresh))

        rendering = run(make)
        # The slot is free when the thread is, not when this request stops waiting for it.
        rendering.add_done_callback(lambda done: _rendered(state.making, done))
        body = await asyncio.shield(rendering)
    finally:
        if rendering is None:
            state.making.leave()
    return web.Response(text=body, content_type=content_type, charset="utf-8")


def _wants_text(accept: str) -> bool:
    """Whether a client asked for plain text and not HTML (``curl -H 'Accept: text/plain'``)."""
    kinds = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return "text/plain" in kinds and not kinds & {"text/html", "*/*", "text/*"}


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
        return plain(500, "internal error; see the relay's log")
    finally:
        # A request an ingest worker handled for a client is counted under the client's route
        # (worker_pool.py sets it); the workers' own calls to the core are not counted.
        name = request.get(ROUTE, name)
        if not name.startswith("/internal/"):
            telemetry.labelled(telemetry.http_requests, name, str(status)).inc()
            telemetry.labelled(telemetry.http_duration, name).observe(time.perf_counter() - started)


def make_app(
    relay: Relay,
    telemetry: Telemetry,
    reloader: Callable[[], Awaitable[None]],
    *,
    enable_lifecycle: bool = True,
    authenticator: Authenticator | None = None,
    quitter: Callable[[], None] | None = None,
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
    app.on_response_prepare.append(written_on_refusal)
    app[RELAY] = relay
    app[TELEMETRY] = telemetry
    app[RELOADER] = reloader
    app[QUITTER] = quitter or (lambda: None)
    app[STATE] = {"accepting": True, "lifecycle": enable_lifecycle}
    app[AUTHENTICATOR] = (
        authenticator if authenticator is not None else Authenticator(relay.config.receiver.auth)
    )
    app[IN_FLIGHT] = InFlight()
    app[FEDERATING] = InFlight()
    app[FEDERATE_THREAD] = FederateThread()
    app[DECODING] = asyncio.Semaphore(1)
    app.on_cleanup.append(app[FEDERATE_THREAD].close)
    app.router.add_post("/api/v1/write", handle_write, expect_handler=expect_write)
    app.router.add_post("/api/v1/push", handle_write, expect_handler=expect_write)
    app.router.add_get("/federate", handle_federate)
    app[FLUX_COLLAPSED] = {}
    for path in _FLUX_PAGES:
        app.router.add_get(path, handle_flux_page)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_put("/-/reload", handle_reload)
    app.router.add_post("/-/quit", handle_quit)
    app.router.add_put("/-/quit", handle_quit)
    app[STATUS] = StatusState()
    app.router.add_get("/", handle_index)
    app.router.add_get(STATUS_JSON, handle_index)
    return app
