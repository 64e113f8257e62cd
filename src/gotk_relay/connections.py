"""Connection bounds of the HTTP edge: header and idle timeouts, a connection cap, fd limits.

aiohttp closes an idle kept-alive connection (``keepalive_timeout``) but has no header timeout
and no cap on connections, so a client that connects and sends nothing, or half a request head,
holds a socket and a file descriptor for as long as it likes; enough of them exhaust the fd
limit and lock out Prometheus and the probes. ``GuardedRunner`` runs an app with:

* ``receiver.header_timeout``: a new connection, and a kept-alive one from the first byte of
  its next request, must send a whole request head within it, else it is closed (Go's
  ``http.Server.ReadHeaderTimeout``).
* ``receiver.idle_timeout``: an idle kept-alive connection is closed (aiohttp's
  ``keepalive_timeout``).
* ``receiver.max_connections``: at the cap a new connection takes the place of the oldest idle
  one (waiting for a request, none in progress); when none is idle it is closed at once. One
  warning when the cap is first hit and one when it clears.

Settings are read from the current configuration for every connection, so a reload applies to
the connections made after it. Body bounds (``read_timeout``, ``min_body_rate``) are the write
handler's (server.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Counter, Gauge

from .config import ReceiverConfig

log = logging.getLogger("gotk_relay.connections")

# File descriptors left to the rest of the process when max_connections is sized from the fd
# limit: destinations' connections, the spool, the listening sockets, the probes' headroom.
FD_HEADROOM: Final = 256
# The warning about the cap clears once open connections fall to this share of it.
CLEAR_SHARE: Final = 0.9


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do at start).

    Returns ``(soft, hard)`` after the change; the limits as they were when it is refused.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one on Linux (nr_open bounds it).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file-descriptor limit", extra={"err": str(exc)})
    return soft, hard


def fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(receiver: ReceiverConfig, fds: int) -> int:
    """``receiver.max_connections``, or when 0 the cap the fd limit leaves room for."""
    if receiver.max_connections:
        return receiver.max_connections
    return max(16, fds - max(FD_HEADROOM, fds // 4))


class ConnectionMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.open = Gauge(
            "gotk_relay_connections",
            "Client connections open on the HTTP edge (this process).",
            registry=registry,
        )
        self.limit = Gauge(
            "gotk_relay_connections_limit",
            "Most client connections open at once (receiver.max_connections, or sized from the "
            "file-descriptor limit).",
            registry=registry,
        )
        self.closed = Counter(
            "gotk_relay_connections_closed",
            "Client connections the relay closed to bound them, by reason: header_timeout (no "
            "whole request head within receiver.header_timeout), limit (refused at "
            "receiver.max_connections), idle_evicted (idle, closed to make room at the cap).",
            ["reason"],
            registry=registry,
        )
        for reason in ("header_timeout", "limit", "idle_evicted"):
            self.closed.labels(reason)


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a header timeout (see the module docstring)."""

    __slots__ = ("_answered", "_guard", "_head_timer", "_heads", "tracked")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads = 0  # request heads parsed on this connection
        self._answered = 0  # requests answered on it
        self.tracked = False  # bounded: a client's connection, not refused at the cap

    @property
    def idle(self) -> bool:
        """Whether no request is in progress on this connection, nor parsed and waiting."""
        return self._heads == self._answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.tracked:
            self._arm()

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(
            self._guard.receiver().header_timeout, self._head_timeout
        )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self._heads == self._answered and data:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        heads = self._request_count
        if heads != self._heads:
            self._heads = heads
            self._disarm()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._force_close or self._request_count != self._heads:
            return
        self._guard.metrics.closed.labels("header_timeout").inc()
        log.debug("no request head within receiver.header_timeout; closing the connection")
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        super().connection_lost(exc)


class GuardedServer(web.Server):
    """aiohttp's protocol factory with the connection cap (see the module docstring)."""

    def __init__(
        self,
        handler: Any,
        *,
        receiver: Callable[[], ReceiverConfig],
        metrics: ConnectionMetrics,
        fds: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.receiver = receiver
        self.metrics = metrics
        self.fds = fds
        self._open: dict[GuardedHandler, None] = {}  # in the order they came: oldest first
        self._at_cap = False
        self._refused = 0  # while at the cap, for the line when it clears
        metrics.limit.set(connection_cap(receiver(), fds))

    def __call__(self) -> RequestHandler:
        receiver = self.receiver()
        kwargs = {**self._kwargs, "keepalive_timeout": receiver.idle_timeout}
        return GuardedHandler(self, loop=self._loop, **kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, GuardedHandler)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            return  # the ingest workers' private socket to the core (worker_pool.py): not bounded
        cap = connection_cap(self.receiver(), self.fds)
        self.metrics.limit.set(cap)
        if len(self._open) >= cap and not self._make_room():
            self._refused += 1
            self.metrics.closed.labels("limit").inc()
            if not self._at_cap:
                self._at_cap = True
                log.warning(
                    "connection limit reached; closing new connections until some close "
                    "(receiver.max_connections)",
                    extra={"max_connections": cap, "fd_limit": self.fds},
                )
            handler.force_close()
            return
        self._open[handler] = None
        handler.tracked = True
        self.metrics.open.set(len(self._open))

    def _make_room(self) -> bool:
        """Close the oldest idle connection, if one is; whether one was."""
        for other in self._open:
            if other.idle:
                self.metrics.closed.labels("idle_evicted").inc()
                other.force_close()  # its connection_lost comes later: forget it now
                self.forget(other)
                return True
        return False

    def forget(self, handler: GuardedHandler) -> None:
        if self._open.pop(handler, 0) is None:
            self.metrics.open.set(len(self._open))
            cap = connection_cap(self.receiver(), self.fds)
            if self._at_cap and len(self._open) <= cap * CLEAR_SHARE:
                self._at_cap = False
                log.warning(
                    "connection limit no longer reached",
                    extra={"max_connections": cap, "refused": self._refused},
                )
                self._refused = 0


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are bounded (see the module docstring)."""

    def __init__(
        self,
        app: web.Application,
        *,
        receiver: Callable[[], ReceiverConfig],
        registry: CollectorRegistry | None = None,
        fds: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._receiver = receiver
        self._fds = fd_limit() if fds is None else fds
        self.metrics = ConnectionMetrics(registry)

    @property
    def max_connections(self) -> int:
        return connection_cap(self._receiver(), self._fds)

    async def cleanup_within(self, seconds: float) -> None:
        """``cleanup``, waiting at most ``seconds`` for the handlers still running (a client
        stalled in its body), then cancelling them: what is left of ``--shutdown-timeout``,
        not aiohttp's 60 s. At least 50 ms: aiohttp reads a timeout of 0 or less as none."""
        self._shutdown_timeout = max(0.05, seconds)
        await self.cleanup()

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The same handler, request factory and settings as the app's own server; only the
        # protocol factory and the connection bookkeeping differ.
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            receiver=self._receiver,
            metrics=self.metrics,
            fds=self._fds,
            **plain._kwargs,
        )


async def start_tcp_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    ssl_context: Any = None,
    reuse_port: bool | None = None,
) -> web.TCPSite:
    """The TCP listener, started. ``0.0.0.0`` (and an empty host) is every address, IPv6 too,
    as Go's net.Listen takes it for Prometheus: one socket per address family. Where the host
    has no IPv6 (a container with it turned off), IPv4 alone."""
    wildcard = host in ("", "0.0.0.0") and port != 0  # port 0: one port, so one family

    def site(bind: str | None) -> web.TCPSite:
        return web.TCPSite(
            runner, bind, port, backlog=1024, ssl_context=ssl_context, reuse_port=reuse_port
        )

    listener = site(None if wildcard else host)
    try:
        await listener.start()
    except OSError as exc:
        if not wildcard or exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise
        listener = site("0.0.0.0")
        await listener.start()
    return listener
