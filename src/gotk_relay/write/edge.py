"""Stage 1 of the write path: the edge checks, before a request's body is trusted.

Credentials (``receiver.auth``), the in-flight cap, the headers (encoding, media type, the
message), the body read within ``receiver.read_timeout``, ``min_body_rate`` and
``max_request_bytes``, and the 4xx of a body that does not decode. Each refusal is a
``Rejection``: the counter reason and the answer, built here so that the core (server.py) and
the scan workers (scan_worker.py) answer alike.
"""

from __future__ import annotations

import asyncio
import socket
from typing import NamedTuple

from aiohttp import StreamReader, hdrs, web
from aiohttp.web_urldispatcher import _default_expect_handler

from ..access import Authenticator
from ..config import ReceiverConfig
from ..model import Protocol
from ..wire.errors import DecodeError, TooLargeError
from ..wire.labels import LabelLimitError, TooManySamplesError, TooManySeriesError


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
        if not param.strip():  # RFC 9110 allows empty parameters ("a/b;;c=d", a trailing ";")
            continue
        key, eq, value = param.partition("=")
        if not eq or not key.strip():
            # As Prometheus' receiver: a parameter must be a key=value pair (RFC 9110).
            raise UnsupportedMediaType(
                f"malformed Content-Type {content_type!r}: parameter {param.strip()!r} is not"
                " a key=value pair (RFC 9110)"
            )
        if key.strip().lower() == "proto":
            proto = value.strip().strip('"')
    try:
        return Protocol(proto)
    except ValueError:
        raise UnsupportedMediaType(
            f"unsupported proto {proto!r}; expected {Protocol.V1} or {Protocol.V2}"
        ) from None


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


# The client's address, as a scan worker passes a request on to the core (worker_pool.py).
REMOTE_HEADER = "X-Gotk-Relay-Remote"


def client_address(request: web.Request) -> str:
    """Who sent a request (for the status page's examples of refusals): its peer, or for one a
    scan worker passed on over the core's Unix socket (only this user can reach it), the
    worker's client as the worker names it."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and getattr(sock, "family", None) == socket.AF_UNIX:
        return request.headers.get(REMOTE_HEADER, "")
    return request.remote or ""


WRITE_PATHS = frozenset({"/api/v1/write", "/api/v1/push"})


def written_headers(samples: int, histograms: int, exemplars: int) -> dict[str, str]:
    """What a remote write 2.0 receiver says it wrote (the 2.0 spec's response headers)."""
    return {
        "X-Prometheus-Remote-Write-Samples-Written": str(samples),
        "X-Prometheus-Remote-Write-Histograms-Written": str(histograms),
        "X-Prometheus-Remote-Write-Exemplars-Written": str(exemplars),
    }


async def written_on_refusal(request: web.Request, response: web.StreamResponse) -> None:
    """The 2.0 spec asks for the written headers on every answer to a 2.0 request, refusals
    too (as Prometheus' receiver sends them); a request the relay refuses wrote nothing: 0.
    An ``on_response_prepare`` hook, so that every refusal of every process has them."""
    if response.status < 300 or request.path not in WRITE_PATHS:
        return
    if "X-Prometheus-Remote-Write-Samples-Written" in response.headers:
        return
    try:
        if protocol_of(request.headers.get("Content-Type")) is not Protocol.V2:
            return
    except UnsupportedMediaType:
        return
    response.headers.update(written_headers(0, 0, 0))


class Rejection(NamedTuple):
    """A write refused before admission: the counter reason and the answer the sender gets.

    Built in one place so the core and the scan workers (scan_worker.py) answer alike.
    """

    reason: str  # gotk_relay_rejected_requests_total{reason}
    status: int
    text: str
    headers: dict[str, str] | None = None
    hang_up: bool = False  # close the connection after answering (the body was not read)
    # Answer with "Connection: close", the rest of the body read and discarded first, for
    # aiohttp's lingering time at most: a sender still writing a body too large gets the 413,
    # where closing at once with its bytes unread resets the connection, and a reset (which
    # Prometheus retries) can reach it before the answer.
    close: bool = False


async def answer(request: web.Request, rejection: Rejection) -> web.StreamResponse:
    """The response of a rejection (see ``Rejection``)."""
    if rejection.hang_up:
        return await _hang_up(request, rejection.status, rejection.text)
    response = plain(rejection.status, rejection.text, rejection.headers)
    if rejection.close:
        response.force_close()
    return response


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


def header_rejection(request: web.Request, limits: ReceiverConfig) -> Rejection | Protocol:
    """Checks of a write request's headers: the rejection, or the protocol of the body."""
    # Absent or empty (Go's Header.Get reads both as ""): snappy, as Prometheus takes it.
    encoding = request.headers.get("Content-Encoding", "").strip().lower() or "snappy"
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
            close=True,
        )
    return proto


def expect_rejection(
    request: web.Request, authenticator: Authenticator, limits: ReceiverConfig
) -> Rejection | None:
    """For a write that asks ``Expect: 100-continue``: the refusal its headers alone decide
    (credentials, Content-Encoding, Content-Type, a Content-Length over ``max_request_bytes``),
    so that its body is never invited; None otherwise (then ``invite`` answers it)."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        return None
    rejection = auth_rejection(authenticator, request.headers.get("Authorization"))
    if rejection is None:
        checked = header_rejection(request, limits)
        rejection = checked if isinstance(checked, Rejection) else None
    return rejection


# aiohttp's own answer to an Expect header: ``100 Continue`` (417 for another expectation).
invite = _default_expect_handler


async def read_write_body(request: web.Request, limits: ReceiverConfig) -> Rejection | bytes:
    """The body of a write request within ``receiver.read_timeout``, ``min_body_rate`` and
    ``max_request_bytes``.

    A body too slow is answered 503 (and the connection closed), not 408: the request may
    well succeed when sent again, and Prometheus (like the remote write spec) takes every 4xx
    but 429 as final and drops the samples, where it retries a 5xx. Prometheus' own receiver
    closes such a connection without an answer, which its sender retries too."""
    pace = _Pace(limits)
    try:
        async with asyncio.timeout_at(pace.deadline) as timer:
            body = await _read_body(request.content, limits.max_request_bytes, pace, timer)
    except TimeoutError:
        if pace.slow:
            return Rejection(
                "slow_body",
                503,
                f"request body slower than {limits.min_body_rate} bytes/s "
                f"(receiver.min_body_rate) after {limits.min_body_rate_grace:g}s",
                hang_up=True,
            )
        return Rejection(
            "read_timeout",
            503,
            f"request body not received within {limits.read_timeout:g}s (receiver.read_timeout)",
            hang_up=True,
        )
    if body is None:
        return Rejection(
            "too_large",
            413,
            f"request body exceeds the limit of {limits.max_request_bytes} bytes",
            close=True,
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
        deadline = pace.deadline
        pace.received(size)
        if pace.deadline != deadline:  # once the body is past its grace, it stays put
            timer.reschedule(pace.deadline)
    return b"".join(chunks)


async def _hang_up(request: web.Request, status: int, text: str) -> web.StreamResponse:
    """Answer, then close the connection at once.

    Otherwise aiohttp keeps reading (and discarding) the rest of a slow or oversized body for
    its lingering time, and a slow sender holds the connection that much longer.
    """
    response = plain(status, text)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport sends what is buffered, then closes
    return response
