"""Retry policy as pure functions, so every status code's fate is a table row in a test.

Why each class (remote write spec 1.0/2.0 and what the backends in shared/reference do):
- 2xx: delivered. Mimir's 202 (HA dedup) included.
- 5xx: the receiver failed and may have written part of the batch; the spec says senders MUST
  retry, and receivers must be idempotent to the resend.
- 429: rate limited (Mimir ingestion limits). The spec makes retrying optional; like Prometheus
  we retry only with ``retry_on_http_429``, otherwise the batch is dropped and counted.
- other 4xx (400 bad data, 401/403 auth, 404, 408, 409 Thanos conflicts, 413): dropped,
  logged once, counted with the status as reason. Retrying the same bytes cannot succeed, and
  the 2.0 spec says a sender MUST NOT retry a 4xx other than 429: Prometheus drops a 408 too.
  (The relay's own receiver answers 503, not 408, for a body too slow: every sender retries it.)
- 415 from a v2 destination: handled by the sender (switch to v1 and resend), not here.
"""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from enum import Enum


class Outcome(Enum):
    OK = "ok"
    RETRY = "retry"
    DROP = "drop"


def classify(status: int, *, retry_on_http_429: bool) -> Outcome:
    if 200 <= status < 300:
        return Outcome.OK
    if status >= 500:
        return Outcome.RETRY
    if status == 429:
        return Outcome.RETRY if retry_on_http_429 else Outcome.DROP
    return Outcome.DROP


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def next_backoff(previous: float, min_backoff: float, max_backoff: float) -> float:
    """Exponential backoff as Prometheus does it: start at min, double, cap at max."""
    if previous <= 0:
        return min_backoff
    return min(previous * 2, max_backoff)


def retry_delay(
    backoff: float, retry_after: float | None, max_backoff: float, jitter: float = 0.0
) -> float:
    """How long to wait before the next attempt.

    A server's Retry-After wins over our backoff when longer (the server knows its overload)
    and is honoured even beyond ``max_backoff``, as Prometheus does; ``jitter`` (0..1) spreads
    destinations that failed together so they do not all return at once.
    """
    delay = backoff
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    elif jitter:
        delay = min(max_backoff, delay * (1 + random.uniform(0, jitter)))
    return delay
