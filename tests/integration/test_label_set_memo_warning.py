"""A ``datadog:`` or ``otlp:`` destination fed more label sets than its memo holds says so in
its log, once each time the memo turns full (README, "Datadog and OTLP conversion"), and
delivers every point all the same. The Datadog intake double and the OTLP receiver are the
real aiohttp servers on 127.0.0.1; the memos' bound is lowered to 40 label sets for the test.
"""

from __future__ import annotations

import logging
import time

import pytest

from gotk_relay.config import DatadogConfig, OTLPConfig
from gotk_relay.delivery.entry import Entry, encode_entry
from gotk_relay.delivery.retry import Outcome
from gotk_relay.destinations import datadog as datadog_module
from gotk_relay.destinations.datadog import DatadogClient
from gotk_relay.destinations.otlp import OTLPClient
from gotk_relay.destinations.otlp_mapping import mapper as mapper_module
from gotk_relay.model import Batch, Protocol, Sample, Series
from tests.support.datadog_intake import DatadogIntake
from tests.support.otlp_receiver import OTLPReceiver, otlp_receiver

LIMIT = 40
LABEL_SETS = 100
ROUNDS = 3


def _round(start_ms: int, round_: int) -> Entry:
    """One scrape of LABEL_SETS gauges (each label set comes once a round, in a cycle)."""
    return encode_entry(
        Batch(
            tuple(
                Series(
                    (("__name__", f"memo_m{i % 5}"), ("i", str(i)), ("job", "j")),
                    (Sample(float(1000 * round_ + i), start_ms + 1000 * round_),),
                )
                for i in range(LABEL_SETS)
            )
        ),
        Protocol.V1,
    )


def _warnings(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"more label sets than the {what}" in r.getMessage()]


async def test_a_datadog_destination_says_once_that_its_label_set_memo_is_full(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datadog_module.MEMOS, "limit", LIMIT)
    caplog.set_level(logging.WARNING)
    start = int(time.time() * 1000) - 60_000  # within the intake's hour
    async with DatadogIntake() as intake:
        client = DatadogClient("dd", DatadogConfig(url=intake.url, api_key="test-key"))
        try:
            for round_ in range(ROUNDS):
                assert (await client.send([_round(start, round_)])).outcome is Outcome.OK
        finally:
            await client.close()
    assert intake.problems == []
    warned = _warnings(caplog, "Datadog destination remembers")
    assert len(warned) == 1
    assert (warned[0].destination, warned[0].limit) == ("dd", LIMIT)  # type: ignore[attr-defined]
    got = sorted(
        (tags, ts, value) for m in range(5) for tags, ts, value, _ in intake.points(f"memo_m{m}")
    )
    want = sorted(
        (
            tuple(sorted((f"i:{i}", "job:j"))),
            (start + 1000 * round_) // 1000,
            float(1000 * round_ + i),
        )
        for round_ in range(ROUNDS)
        for i in range(LABEL_SETS)
    )
    assert [(tuple(sorted(t)), ts, v) for t, ts, v in got] == want


async def test_an_otlp_destination_says_once_that_its_label_set_memo_is_full(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mapper_module.ROW_MEMOS, "limit", LIMIT)
    caplog.set_level(logging.WARNING)
    start = int(time.time() * 1000) - 60_000
    receiver = OTLPReceiver()
    async with otlp_receiver(receiver):
        client = OTLPClient("o", OTLPConfig(url=receiver.url))
        try:
            for round_ in range(ROUNDS):
                assert (await client.send([_round(start, round_)])).outcome is Outcome.OK
        finally:
            await client.close()
    warned = _warnings(caplog, "OTLP destination remembers")
    assert len(warned) == 1
    assert (warned[0].destination, warned[0].limit) == ("o", LIMIT)  # type: ignore[attr-defined]
    got = sorted(
        (
            name,
            tuple((a.key, a.value.string_value) for a in point.attributes),
            point.time_unix_nano // 1_000_000,
            point.as_double,
        )
        for delivered in receiver.delivered()
        for name, metric in delivered.metrics().items()
        for point in metric.gauge.data_points
    )
    want = sorted(
        (f"memo_m{i % 5}", (("i", str(i)),), start + 1000 * round_, float(1000 * round_ + i))
        for round_ in range(ROUNDS)
        for i in range(LABEL_SETS)
    )
    assert got == want
