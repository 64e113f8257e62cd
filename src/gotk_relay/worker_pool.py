"""The core's side of ``receiver.workers``: the internal endpoints and the worker processes.

With ``receiver.workers: N`` (N > 1) the ``serve`` process, the *core*, keeps everything that
holds state (the Flux rules, the queues and senders, the spool, the federate store, telemetry,
reload) and starts N-1 ingest workers (scan_worker.py). All N processes accept connections on the
listen address (SO_REUSEPORT: the kernel spreads connections over them). A worker does the
stateless, CPU-heavy half of a remote write 1.0 request (read, decompress, scan: see write/scan.py)
and hands the result to the core over a Unix socket in a private directory; the core admits it
(rules and queues) and the worker answers the sender with the core's answer. So a 2xx still
means "queued for every destination", batches are admitted in the order their senders got
answers, and the Flux state lives in one place. See docs/scaling.md.

Endpoints the core serves on the Unix socket only (refused on any other transport):

* ``GET /internal/config``: pickle of ``(generation, Config)``; the generation goes up on every
  successful reload.
* ``POST /internal/scanned``: pickle of ``(generation, Scanned, now_ms)``; answered like
  the write endpoint (204, 400, 413, 503), or ``409`` when the generation is not the
  current one: the worker then fetches the configuration again and redoes the request.
* ``POST /internal/rejected``: JSON ``{"generation", "route", "reason", "status", "remote",
  "text"}``: a request the worker refused before it could pass it on (401, 408, 413, 415, 503),
  counted here so the core's telemetry (and the status page's examples) cover every process;
  ``409`` when stale, as above.

Pickle is safe here only because the socket is in a 0700 directory of the user running the
relay: whoever can connect to it can run code as that user anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from .server import RELAY, ROUTE, STATE, TELEMETRY
from .telemetry import gauge
from .write.admission import answer_scanned
from .write.edge import SHUTTING_DOWN, answer, client_address, decode_rejection
from .write.scan import Scanned

log = logging.getLogger("gotk_relay.worker_pool")

STALE: Final = 409  # the internal status of a request made with an old configuration
ROUTE_HEADER: Final = "X-Gotk-Relay-Route"
GENERATION_HEADER: Final = "X-Gotk-Relay-Generation"
# Bodies on the socket hold at most a request's forwarded bytes and its picked series.
INTERNAL_MAX_BYTES: Final = 1 << 31
RESTART_BACKOFF: Final = 1.0  # seconds between a worker's death and its restart, at first
# A worker that dies again soon waits twice as long each time, up to this; one that has stayed
# up STAYED_UP seconds ends the episode (logged, and the next death waits RESTART_BACKOFF).
MAX_RESTART_BACKOFF: Final = 30.0
STAYED_UP: Final = 60.0


class Generation:
    """The configuration's generation: bumped on every successful reload."""

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


GENERATION: web.AppKey[Generation] = web.AppKey("generation", Generation)


def _private(request: web.Request) -> bool:
    """Whether the request came over the core's Unix socket (the only way to the internals)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and getattr(sock, "family", None) == socket.AF_UNIX


async def _body(request: web.Request) -> bytes:
    chunks = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > INTERNAL_MAX_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=INTERNAL_MAX_BYTES, actual_size=size, text="internal body too large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def handle_config(request: web.Request) -> web.StreamResponse:
    if not _private(request):
        raise web.HTTPNotFound()
    payload = pickle.dumps((request.app[GENERATION].value, request.app[RELAY].config))
    return web.Response(body=payload, content_type="application/octet-stream")


async def handle_scanned(request: web.Request) -> web.StreamResponse:
    """Admit a request a worker scanned, as ``server._write`` admits one read here."""
    if not _private(request):
        raise web.HTTPNotFound()
    request[ROUTE] = request.headers.get(ROUTE_HEADER, "/api/v1/write")
    # Trusted: the socket is private to this user (module docstring).
    generation, scanned, now_ms = pickle.loads(await _body(request))
    if generation != request.app[GENERATION].value:
        request.app[HANDOFFS].labels("stale").inc()
        return web.Response(status=STALE, text="configuration changed; fetch it again\n")
    request.app[HANDOFFS].labels("scanned").inc()
    telemetry = request.app[TELEMETRY]
    if not request.app[STATE].get("accepting", True):
        telemetry.refuse(SHUTTING_DOWN.reason, client_address(request), SHUTTING_DOWN.text)
        return await answer(request, SHUTTING_DOWN)
    assert isinstance(scanned, Scanned) and isinstance(now_ms, int)
    relay = request.app[RELAY]
    try:
        return await answer_scanned(
            relay, telemetry, scanned, now_ms, lambda: client_address(request)
        )
    except Exception as exc:
        rejection = decode_rejection(exc)
        if rejection is None:
            raise
        telemetry.refuse(rejection.reason, client_address(request), rejection.text)
        return await answer(request, rejection)


async def handle_rejected(request: web.Request) -> web.StreamResponse:
    """Count a refusal a worker answered itself; reply with its status (for the HTTP metrics)."""
    if not _private(request):
        raise web.HTTPNotFound()
    note = json.loads(await _body(request))
    request[ROUTE] = str(note["route"])
    if note["generation"] != request.app[GENERATION].value:
        request.app[HANDOFFS].labels("stale").inc()
        return web.Response(status=STALE)
    request.app[HANDOFFS].labels("rejected").inc()
    request.app[TELEMETRY].refuse(
        str(note["reason"]), str(note.get("remote", "")), str(note.get("text", ""))
    )
    return web.Response(status=int(note["status"]))


HANDOFFS: web.AppKey[Counter] = web.AppKey("handoffs", Counter)


async def _tell_generation(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer on the socket carries the generation, so a worker that only passes
    requests on (the fast path off) still learns of a reload at its next request."""
    if _private(request):
        response.headers[GENERATION_HEADER] = str(request.app[GENERATION].value)


def add_internal_routes(app: web.Application, generation: Generation) -> None:
    """The workers' endpoints (see the module docstring), on the core's app."""
    app[GENERATION] = generation
    app.on_response_prepare.append(_tell_generation)
    app[HANDOFFS] = Counter(
        "gotk_relay_worker_handoffs",
        "Requests ingest workers handed to the core, by what they handed: scanned (to admit), "
        "rejected (refused by the worker, counted here), stale (made with an old configuration, "
        "redone). Passed-on requests count under their own route.",
        ["kind"],
        registry=app[TELEMETRY].registry,
    )
    app.router.add_get("/internal/config", handle_config)
    app.router.add_post("/internal/scanned", handle_scanned)
    app.router.add_post("/internal/rejected", handle_rejected)


def worker_argv(
    socket_path: str,
    listen: tuple[str, int],
    parent_fd: int,
    index: int,
    log_level: str = "info",
    log_format: str = "logfmt",
) -> list[str]:
    """The command line of one scan worker (``gotk-relay worker``, an internal subcommand)."""
    host, port = listen
    return [
        sys.executable,
        "-m",
        "gotk_relay",
        "worker",
        "--socket",
        socket_path,
        "--listen-address",
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "--parent-fd",
        str(parent_fd),
        "--index",
        str(index),
        "--log.level",
        log_level,
        "--log.format",
        log_format,
    ]


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    died_at: float | None = None  # when it was found dead or failed to start; None: running
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF  # before its next restart
    restarts: int = 0  # for gotk_relay_worker_restarts_total
    failing: str = ""  # why this episode began; "" when the worker runs and has stayed up

    @property
    def running(self) -> bool:
        return self.proc is not None and self.died_at is None and self.proc.poll() is None


@dataclass
class WorkerPool:
    """N-1 worker processes, restarted when one dies and stopped before the core drains.

    Each worker holds the read end of a pipe whose write end only the core holds: when the core
    goes away, however it goes, the pipe reaches EOF and the workers exit (no orphans).
    """

    count: int  # worker processes (receiver.workers - 1)
    socket_path: str
    listen: tuple[str, int]
    log_level: str = "info"
    log_format: str = "logfmt"
    slots: list[_Slot] = field(default_factory=list)
    _pipe: tuple[int, int] | None = None
    _supervisor: asyncio.Task[None] | None = None
    _stopping: bool = False
    _supervision_failing: str = ""  # the error of the last check of the workers, if it failed

    def start(self) -> None:
        self._pipe = os.pipe()
        self.slots = [_Slot(i, backoff=RESTART_BACKOFF) for i in range(self.count)]
        for slot in self.slots:
            self._spawn(slot, time.monotonic())
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="workers")

    def problems(self) -> list[str]:
        """Workers not running now (for /-/ready): exited or failing to start, until restarted."""
        if self._stopping:
            return []  # stopped on purpose (the relay is shutting down)
        problems = [
            f"ingest worker {slot.index}: {slot.failing or 'not running'}; restarting it"
            for slot in self.slots
            if not slot.running
        ]
        if self._supervision_failing:
            problems.append(f"supervising the ingest workers fails: {self._supervision_failing}")
        return problems

    def metrics(self) -> Iterable[Metric]:
        yield gauge(
            "gotk_relay_workers_up",
            "Ingest worker processes running (receiver.workers - 1 when all are).",
            [],
            [([], sum(slot.running for slot in self.slots))],
        )
        restarts = CounterMetricFamily(
            "gotk_relay_worker_restarts",
            "Ingest worker processes restarted after they exited or failed to start.",
            labels=[],
        )
        restarts.add_metric([], sum(slot.restarts for slot in self.slots))
        yield restarts
        yield gauge(
            "gotk_relay_worker_supervision_failing",
            "1 while checking the ingest workers fails (an error, logged once; see /-/ready).",
            [],
            [([], 1.0 if self._supervision_failing else 0.0)],
        )

    def _argv(self, index: int) -> list[str]:
        assert self._pipe is not None
        return worker_argv(
            self.socket_path, self.listen, self._pipe[0], index, self.log_level, self.log_format
        )

    def _spawn(self, slot: _Slot, now: float) -> None:
        assert self._pipe is not None
        try:
            slot.proc = subprocess.Popen(
                self._argv(slot.index), stdin=subprocess.DEVNULL, pass_fds=(self._pipe[0],)
            )
        except OSError as exc:  # out of fds or memory: tried again after the backoff
            slot.proc = None
            self._died(slot, now, f"could not start: {exc}")
            return
        slot.died_at = None
        slot.started_at = now
        log.info("started ingest worker", extra={"worker": slot.index, "pid": slot.proc.pid})

    def _died(self, slot: _Slot, now: float, reason: str) -> None:
        slot.died_at = now
        if slot.failing:  # again before it stayed up: waits twice as long; logged already
            slot.backoff = min(slot.backoff * 2, MAX_RESTART_BACKOFF)
            return
        slot.failing = reason
        log.error(
            "ingest worker failed; restarting it with backoff (logged once until it stays up)",
            extra={"worker": slot.index, "reason": reason},
        )

    def _check(self, slot: _Slot, now: float) -> None:
        if slot.died_at is None:
            assert slot.proc is not None
            code = slot.proc.poll()
            if code is None:
                if slot.failing and now - slot.started_at >= STAYED_UP:
                    log.info(
                        "ingest worker running again",
                        extra={"worker": slot.index, "since": slot.failing},
                    )
                    slot.failing = ""
                    slot.backoff = RESTART_BACKOFF
                return
            self._died(slot, now, f"exited with code {code}")
        elif now - slot.died_at >= slot.backoff:
            slot.restarts += 1
            self._spawn(slot, now)

    async def _supervise(self) -> None:
        delay = 0.1
        while not self._stopping:
            now = time.monotonic()
            failure = ""
            for slot in self.slots:  # each slot on its own: one that fails skips no other
                if self._stopping:
                    break
                try:
                    self._check(slot, now)
                except Exception as exc:  # a bug here must not end the supervision
                    if not failure and not self._supervision_failing:
                        log.exception(
                            "supervising the ingest workers failed; trying again with backoff "
                            "(logged once until it succeeds)",
                            extra={"worker": slot.index},
                        )
                    failure = failure or repr(exc)
            if failure:  # backoff, short: the other slots are checked on the same round
                delay = min(delay * 2, 2.0)
            elif self._supervision_failing:
                log.info("supervising the ingest workers succeeds again")
                delay = 0.1
            self._supervision_failing = failure
            await asyncio.sleep(delay)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker (they stop accepting and finish what they hold), then SIGKILL
        those still there after ``timeout`` seconds."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor  # it raises nothing else (see _supervise)
        procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(p.poll() is None for p in procs) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                log.warning(
                    "ingest worker did not stop in time; killing it", extra={"pid": proc.pid}
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if self._pipe is not None:
            for fd in self._pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipe = None
