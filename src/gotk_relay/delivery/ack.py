"""One write request's wait for its destinations, with ``receiver.acknowledge: delivered``.

The request's entries carry its ``Ack`` through the queues (``Entry.ack``); each destination's
sender reports on every entry it took: answered (2xx, or a 4xx refusal dropped and counted as
always) or failed (the first retryable failure: 5xx, a 429 that is retried (remote write with
retry_on_http_429, Datadog and OTLP always), a timeout, a connection error). The request is
answered 2xx when every entry was answered, 503 at the first failure or when
``receiver.acknowledge_timeout`` passes. Once an ``Ack`` is settled its entries not yet sent are
skipped by the senders: the sender was told to send them again.

Why no retry inside the relay in this mode: a relay that retries holds data it acknowledged
(or would have to hold the request open for as long as the retries take); the sender retries
anyway, with its own backoff, and may pick another replica.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a request's delivery ended."""

    delivered: bool
    destination: str = ""  # the one that failed
    reason: str = ""  # "http_500", "connect_error", "timeout", "shutdown", ...
    retry_after: float | None = None  # the failing destination's Retry-After, if it gave one


DELIVERED = Verdict(True)


class Ack:
    """The delivery of one request's entries (see the module docstring)."""

    __slots__ = ("_future", "pending")

    def __init__(self) -> None:
        self._future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.pending = 0  # entries queued (one per destination and entry) not yet answered

    @property
    def settled(self) -> bool:
        """Whether the request's answer is decided: its entries not yet sent need not be."""
        return self._future.done()

    def answered(self) -> None:
        """One of the request's entries was accepted (or refused for good) by its destination."""
        self.pending -= 1
        if self.pending <= 0 and not self._future.done():
            self._future.set_result(DELIVERED)

    def failed(self, destination: str, reason: str, retry_after: float | None = None) -> None:
        """A destination failed with an entry of the request: the request fails (the first
        failure decides; later news changes nothing)."""
        if not self._future.done():
            self._future.set_result(Verdict(False, destination, reason, retry_after))

    async def wait(self, timeout: float) -> Verdict:
        """The verdict, within ``timeout`` seconds (then a failure with reason ``timeout``)."""
        if self.pending <= 0 and not self._future.done():
            self._future.set_result(DELIVERED)  # nothing of the request went anywhere
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            self.failed("", "timeout")
            return self._future.result()
        except asyncio.CancelledError:
            # The handler was cancelled (the sender went away, the server stops): nobody is
            # told 2xx, so what is not sent yet need not be (the sender sends it again).
            self.failed("", "cancelled")
            raise
