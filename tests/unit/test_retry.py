"""The retry policy table: what happens to a batch for each answer a backend can give."""

from __future__ import annotations

import email.utils

import pytest

from gotk_relay.delivery.retry import (
    Outcome,
    classify,
    next_backoff,
    parse_retry_after,
    retry_delay,
)


@pytest.mark.parametrize(
    ("status", "retry_429", "expected"),
    [
        (200, False, Outcome.OK),
        (202, False, Outcome.OK),  # Mimir HA dedup
        (204, False, Outcome.OK),
        (400, True, Outcome.DROP),  # bad data: resending the same bytes cannot help
        (401, True, Outcome.DROP),
        (403, True, Outcome.DROP),
        (404, True, Outcome.DROP),
        (409, True, Outcome.DROP),  # Thanos conflict
        (413, True, Outcome.DROP),
        (408, False, Outcome.DROP),  # a 4xx: the 2.0 spec forbids its retry; Prometheus drops it
        (429, False, Outcome.DROP),  # Prometheus' default retry_on_http_429: false
        (429, True, Outcome.RETRY),
        (500, False, Outcome.RETRY),
        (502, False, Outcome.RETRY),
        (503, False, Outcome.RETRY),
        (529, False, Outcome.RETRY),  # Mimir overload
    ],
    ids=lambda v: str(v),
)
def test_classify(status: int, retry_429: bool, expected: Outcome) -> None:
    assert classify(status, retry_on_http_429=retry_429) is expected


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
    ids=["seconds", "padded", "http-date", "past-date", "garbage", "empty", "absent", "negative"],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    got = parse_retry_after(header, NOW)
    assert got == (pytest.approx(expected, abs=1) if expected is not None else None)


def test_backoff_doubles_from_min_to_max() -> None:
    delays, backoff = [], 0.0
    for _ in range(10):
        backoff = next_backoff(backoff, 0.03, 1.0)
        delays.append(backoff)
    assert delays[:4] == [0.03, 0.06, 0.12, 0.24]
    assert delays[-1] == 1.0


@pytest.mark.parametrize(
    ("backoff", "retry_after", "expected"),
    [(0.5, None, 0.5), (0.5, 2.0, 2.0), (0.5, 0.1, 0.5), (1.0, 30.0, 30.0)],
    ids=["backoff", "retry-after-longer", "retry-after-shorter", "retry-after-beyond-max"],
)
def test_retry_delay_honours_longer_retry_after(
    backoff: float, retry_after: float | None, expected: float
) -> None:
    assert retry_delay(backoff, retry_after, max_backoff=5.0) == expected


def test_jitter_stays_within_bounds() -> None:
    for _ in range(200):
        assert 1.0 <= retry_delay(1.0, None, max_backoff=5.0, jitter=0.1) <= 1.1
