"""A scan worker (``receiver.workers`` > 1): the stateless stages of the write path.

It takes connections on the listen address beside the core (SO_REUSEPORT) and, for a remote
write 1.0 request on the fast path, checks it (credentials, headers, sizes, read timeout) with the
same code and limits as the core (write/edge.py), reads, decompresses and scans it
(write/scan.py), then
hands the result to the core, which admits it; the sender gets the core's answer, so a 2xx still
means queued for every destination. Everything else — remote write 2.0, a request the worker
cannot decompress or scan, every other route — is passed on to the core as it
came, so the core answers it and counts it. Refusals the worker answers itself (before it has a
body to pass on) are reported to the core for its counters. See worker_pool.py and docs/scaling.md.

The worker holds the configuration of one generation. When the core answers that it is stale
(409), the worker fetches the current one and does the request again from its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import time
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from .access import Authenticator, InFlight, ServerTLS
from .config import Config, ConfigError, ReceiverConfig
from .connections import GuardedRunner, raise_fd_limit, start_tcp_site
from .model import Protocol
from .wire import snappy
from .worker_pool import GENERATION_HEADER, ROUTE_HEADER, STALE
from .write import views
from .write.edge import (
    REMOTE_HEADER,
    Rejection,
    answer,
    auth_rejection,
    busy_rejection,
    expect_rejection,
    header_rejection,
    invite,
    plain,
    read_write_body,
    written_on_refusal,
)
from .write.scan import Scanned, scan_request
from .write.views import FastPath

log = logging.getLogger("gotk_relay.scan_worker")

CORE: Final = "http://gotk-relay-core"
TRIES: Final = 3  # attempts of one request across configuration changes
_PROXY_PIECE: Final = 64 * 1024
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        GENERATION_HEADER.lower(),
    }
)


class CoreUnavailable(Exception):
    pass


def _unavailable() -> web.Response:
    return web.Response(
        status=503, text="gotk-relay core unavailable; retry later\n", headers={"Retry-After": "1"}
    )


def _forwardable(headers: MultiMapping[str], remote: str | None = None) -> CIMultiDict[str]:
    """The headers of a message passed on, without the ones of its own connection; a request's
    with its client's address (``remote``) in REMOTE_HEADER, never one the client sent."""
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in HOP_BY_HOP and key.lower() != REMOTE_HEADER.lower():
            out.add(key, value)
    if remote is not None:
        out[REMOTE_HEADER] = remote
    return out


class Worker:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.generation = -1
        self.config = Config()
        self.fast: FastPath | None = None
        self.authenticator = Authenticator()
        self.in_flight = InFlight()
        self._refreshing: asyncio.Lock = asyncio.Lock()
        self._core_failures = 0  # requests answered 503 since the core last answered

    def _core_failed(self, exc: Exception) -> None:
        """Logged once per spell (a core that is away fails every request of every worker;
        the core's own log and /-/ready say why), then once when it answers again."""
        if not self._core_failures:
            log.warning(
                "core unavailable; requests are answered 503 until it answers again (logged "
                "once until then)",
                extra={"err": str(exc)},
            )
        self._core_failures += 1

    def _core_answered(self) -> None:
        if self._core_failures:
            log.info("core answers again", extra={"refused": self._core_failures})
            self._core_failures = 0

    async def refresh(self, seen: int | None = None) -> None:
        """Fetch the core's configuration (once for concurrent callers that saw ``seen``)."""
        async with self._refreshing:
            if seen is not None and self.generation != seen:
                return  # another request fetched it meanwhile
            try:
                async with self.session.get(f"{CORE}/internal/config") as response:
                    if response.status != 200:
                        raise CoreUnavailable(f"config: HTTP {response.status}")
                    payload = await response.read()
            except aiohttp.ClientError as exc:
                raise CoreUnavailable(str(exc)) from exc
            # Trusted: the core's socket is in a 0700 directory of this user (worker_pool.py).
            generation, config = pickle.loads(payload)
            assert isinstance(generation, int) and isinstance(config, Config)
            try:
                self.authenticator.configure(config.receiver.auth)
            except ConfigError as exc:  # the core read it a moment ago: a file being rewritten
                log.error("cannot read the receiver.auth secret", extra={"err": str(exc)})
            self.generation, self.config, self.fast = generation, config, views.plan(config)
            log.debug("configuration fetched", extra={"generation": generation})

    # ---------------------------------------------------------------------------------------
    # Write requests

    async def expect_write(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refused on its headers alone at once, as the core does
        (``server.expect_write``), and counted by the core; else ``100 Continue``."""
        generation = self.generation
        rejection = expect_rejection(request, self.authenticator, self.config.receiver)
        if rejection is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else request.path
            if not await self._rejected(generation, route, rejection, request.remote):
                response = plain(rejection.status, rejection.text, rejection.headers)
                response.force_close()
                return response
        await invite(request)
        return None

    async def handle_write(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        entered = False
        body: bytes | None = None
        last: Rejection | None = None
        try:
            for _ in range(TRIES):
                # One generation's settings for the whole attempt (a refresh may come meanwhile).
                generation, limits, fast = self.generation, self.config.receiver, self.fast
                rejection = auth_rejection(self.authenticator, request.headers.get("Authorization"))
                if rejection is None and not entered:
                    entered = self.in_flight.enter(limits.max_concurrent_requests)
                    if not entered:
                        rejection = busy_rejection(limits.max_concurrent_requests)
                checked = header_rejection(request, limits) if rejection is None else rejection
                if isinstance(checked, Rejection):
                    last = checked
                    if await self._rejected(generation, route, checked, request.remote):
                        continue  # the configuration changed: judge the request again
                    return await answer(request, checked)
                proto = checked
                if body is None:
                    read = await read_write_body(request, limits)
                    if isinstance(read, Rejection):
                        # the body is gone
                        await self._rejected(generation, route, read, request.remote)
                        return await answer(request, read)
                    body = read
                now_ms = int(time.time() * 1000)
                scanned = self._scan(body, proto, limits, fast)
                if scanned is None:
                    return await self.proxy(request, body)
                response = await self._hand_over(generation, route, scanned, now_ms, request.remote)
                if response is None:
                    await self.refresh(generation)
                    continue
                self._core_answered()
                return response
            # The configuration kept changing under this request: the core decides.
            if body is None:
                assert last is not None
                return await answer(request, last)
            return await self.proxy(request, body)
        except CoreUnavailable as exc:
            self._core_failed(exc)
            return _unavailable()
        finally:
            if entered:
                self.in_flight.leave()

    @staticmethod
    def _scan(
        body: bytes, proto: Protocol, limits: ReceiverConfig, fast: FastPath | None
    ) -> Scanned | None:
        """The scanned request, or None when the core must handle it (v2, no fast path, or any
        error: the core redoes it, answers and counts it)."""
        if proto != Protocol.V1 or fast is None:
            return None
        try:
            raw = snappy.decompress(body, limits.max_decompressed_bytes)
            return scan_request(body, raw, limits, fast)
        except Exception:
            return None

    async def _hand_over(
        self, generation: int, route: str, scanned: Scanned, now_ms: int, remote: str | None
    ) -> web.Response | None:
        """The core's answer to a scanned request; None when the configuration is stale."""
        payload = pickle.dumps((generation, scanned, now_ms), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            async with self.session.post(
                f"{CORE}/internal/scanned",
                data=payload,
                headers={
                    ROUTE_HEADER: route,
                    REMOTE_HEADER: remote or "",
                    "Content-Type": "application/octet-stream",
                },
            ) as response:
                if response.status == STALE:
                    return None
                return web.Response(
                    status=response.status,
                    body=await response.read(),
                    headers=_forwardable(response.headers),
                )
        except aiohttp.ClientError as exc:
            raise CoreUnavailable(str(exc)) from exc

    async def _rejected(
        self, generation: int, route: str, rejection: Rejection, remote: str | None
    ) -> bool:
        """Report a refusal to the core's counters; True if the configuration was stale (then
        it has been fetched again)."""
        note = {
            "generation": generation,
            "route": route,
            "reason": rejection.reason,
            "status": rejection.status,
            "remote": remote or "",
            "text": rejection.text,
        }
        try:
            async with self.session.post(
                f"{CORE}/internal/rejected",
                data=json.dumps(note).encode(),
                headers={GENERATION_HEADER: str(generation), "Content-Type": "application/json"},
            ) as response:
                stale = response.status == STALE
        except aiohttp.ClientError as exc:
            raise CoreUnavailable(str(exc)) from exc
        if stale:
            await self.refresh(generation)
        return stale

    # ---------------------------------------------------------------------------------------
    # Everything else: passed on to the core as it came

    async def proxy(self, request: web.Request, body: bytes | None = None) -> web.StreamResponse:
        """The core's answer, passed on as it comes (64 KiB at a time): a /federate or Flux
        page of many MB is streamed by the core, and is not held whole here either."""
        if body is None:
            body = await request.read()
        url = URL(CORE + request.raw_path, encoded=True)
        answered: web.StreamResponse | None = None
        try:
            async with self.session.request(
                request.method,
                url,
                data=body or None,
                headers=_forwardable(request.headers, request.remote),
                allow_redirects=False,
            ) as response:
                told = response.headers.get(GENERATION_HEADER)
                answered = web.StreamResponse(
                    status=response.status, headers=_forwardable(response.headers)
                )
                await answered.prepare(request)
                async for piece in response.content.iter_chunked(_PROXY_PIECE):
                    await answered.write(piece)
                await answered.write_eof()
        except (aiohttp.ClientError, CoreUnavailable) as exc:
            self._core_failed(exc)
            if answered is not None and answered.prepared:
                raise  # part of the answer is sent: the client's connection is cut
            return _unavailable()
        self._core_answered()
        if told is not None and told != str(self.generation):
            # A reload: the next request uses it (and tries again if the core is away now).
            with contextlib.suppress(CoreUnavailable):
                await self.refresh(self.generation)
        return answered

    def app(self) -> web.Application:
        # The same body limits as the core's app (server.make_app): the write handler reads
        # with its own limit; auto_decompress off so a body is passed on as it came.
        app = web.Application(client_max_size=1024 * 1024, handler_args={"auto_decompress": False})
        app.on_response_prepare.append(written_on_refusal)
        app.router.add_post("/api/v1/write", self.handle_write, expect_handler=self.expect_write)
        app.router.add_post("/api/v1/push", self.handle_write, expect_handler=self.expect_write)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app


async def run(socket_path: str, listen: tuple[str, int], parent_fd: int | None, index: int) -> int:
    connector = aiohttp.UnixConnector(path=socket_path, limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=timeout
    ) as session:
        worker = Worker(session)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            try:
                await worker.refresh()
                break
            except CoreUnavailable as exc:
                if loop.time() > deadline:
                    log.error("cannot reach the core", extra={"err": str(exc)})
                    return 1
                await asyncio.sleep(0.1)
        tls = worker.config.receiver.tls
        try:
            ssl_context = ServerTLS(tls).context if tls is not None else None
        except ConfigError as exc:
            log.error("cannot start", extra={"err": str(exc)})
            return 1
        fd_soft, _ = raise_fd_limit()
        # The same connection bounds as the core's (connections.py), per process; their
        # metrics stay here (the core's /metrics shows its own connections).
        runner = GuardedRunner(
            worker.app(),
            receiver=lambda: worker.config.receiver,
            fds=fd_soft,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=10.0,
        )
        await runner.setup()
        host, port = listen
        try:
            await start_tcp_site(runner, host, port, ssl_context=ssl_context, reuse_port=True)
        except OSError as exc:
            log.error("failed to listen", extra={"address": f"{host}:{port}", "err": exc.strerror})
            await runner.cleanup()
            return 1
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # The core decides when to stop (a Ctrl-C reaches the whole process group; the core
        # stops the workers first) and handles reloads (workers learn of them as they go).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if parent_fd is not None:

            def core_gone() -> None:
                try:
                    data = os.read(parent_fd, 1)
                except OSError:
                    data = b""
                if not data:
                    log.warning("the core went away; stopping", extra={"worker": index})
                    loop.remove_reader(parent_fd)
                    stop.set()

            loop.add_reader(parent_fd, core_gone)
        log.info(
            "ingest worker listening",
            extra={"worker": index, "pid": os.getpid(), "generation": worker.generation},
        )
        await stop.wait()
        await runner.cleanup()  # stops listening, lets requests in progress finish
    return 0
