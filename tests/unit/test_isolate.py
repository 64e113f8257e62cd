"""Poison isolation: splitting refused requests, and a sender that drops only what is refused.

The sender runs against an in-process client double that answers like Prometheus 2.42 does to a
series with a duplicate label name (500 for the whole request, nothing stored), so every case
runs in milliseconds; the same behaviour over HTTP and with the real Prometheus is tested in
tests/integration/test_poison.py and tests/e2e/test_poison_e2e.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import Entry, decode_entry, encode_entry
from gotk_relay.delivery.isolate import describe, split
from gotk_relay.delivery.queue import ShardedQueue
from gotk_relay.delivery.retry import Outcome
from gotk_relay.delivery.sender import QueuedDestination, RetrySettings, SendResult
from gotk_relay.model import Batch, FamilyMetadata, Protocol, Sample, Series
from gotk_relay.telemetry import Telemetry
from tests.support.strategies import canonical, v1_batches, v2_batches


def _series(name: str, ts: int = 1000, **labels: str) -> Series:
    return Series((("__name__", name), *sorted(labels.items())), (Sample(1.0, ts),))


def _entry(
    *series: Series, protocol: Protocol = Protocol.V1, tenant: str = "", meta: bool = False
) -> Entry:
    metadata = (FamilyMetadata("m0", help="h"),) if meta else ()
    return encode_entry(Batch(tuple(series), metadata), protocol, tenant)


def _names(entries: list[Entry]) -> list[str]:
    return [s.name for e in entries for s in decode_entry(e).series]


# -- split ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "first", "second"),
    [
        pytest.param([], None, None, id="nothing"),
        pytest.param([_entry(_series("a"))], None, None, id="one-series"),
        pytest.param([_entry(meta=True)], None, None, id="metadata-only"),
        pytest.param([_entry(_series("a")), _entry(_series("b"))], ["a"], ["b"], id="two-entries"),
        pytest.param(
            [_entry(_series("a"), _series("b")), _entry(_series("c"))],
            ["a", "b"],
            ["c"],
            id="entry-boundary-first",
        ),
        pytest.param(
            [_entry(_series("a"), _series("b"), _series("c"))], ["a"], ["b", "c"], id="by-series"
        ),
        pytest.param(
            [_entry(_series("a"), _series("b"), protocol=Protocol.V2)],
            ["a"],
            ["b"],
            id="v2-by-series",
        ),
    ],
)
def test_split_halves_in_order(
    entries: list[Entry], first: list[str] | None, second: list[str] | None
) -> None:
    halves = split(entries)
    if first is None:
        assert halves is None
        return
    assert halves is not None
    assert (_names(halves[0]), _names(halves[1])) == (first, second)


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2], ids=["v1", "v2"])
def test_split_within_an_entry_keeps_protocol_and_tenant(protocol: Protocol) -> None:
    entry = _entry(_series("a"), _series("b"), protocol=protocol, tenant="t1")
    halves = split([entry])
    assert halves is not None
    (first,), (second,) = halves
    assert [(e.protocol, e.tenant) for e in (first, second)] == [(protocol, "t1")] * 2
    assert first.points + second.points == entry.points


def test_split_within_a_v1_entry_keeps_metadata_with_the_first_half() -> None:
    entry = _entry(_series("a"), _series("b"), meta=True)
    halves = split([entry])
    assert halves is not None
    (first,), (second,) = halves
    assert [m.family for m in decode_entry(first).metadata] == ["m0"]
    assert decode_entry(second).metadata == ()
    assert first.points + second.points == entry.points


def _leaves(entries: list[Entry]) -> list[list[Entry]]:
    halves = split(entries)
    if halves is None:
        return [entries]
    return _leaves(halves[0]) + _leaves(halves[1])


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(v1_batches(), v2_batches()), min_size=1, max_size=4))
def test_splitting_to_the_end_keeps_every_series_in_order(batches: list[Batch]) -> None:
    entries = [
        encode_entry(b, Protocol.V2 if i % 2 else Protocol.V1) for i, b in enumerate(batches)
    ]
    leaves = _leaves(entries)
    flat = [e for leaf in leaves for e in leaf]
    assert canonical(Batch(tuple(s for e in flat for s in decode_entry(e).series))) == canonical(
        Batch(tuple(s for e in entries for s in decode_entry(e).series))
    )
    assert sum(e.points for e in flat) == sum(e.points for e in entries)
    assert all(len(decode_entry(leaf[0]).series) <= 1 for leaf in leaves if len(leaf) == 1)


def test_describe_names_the_series_on_one_short_line() -> None:
    text = describe([_entry(Series((("__name__", "x"), ("a", "1"), ("a", "2")), ()))])
    assert text == '{__name__="x",a="1",a="2"}'
    long = describe([_entry(_series("y", v="\n" * 400))])
    assert "\n" not in long and len(long) <= 300


# -- the sender ----------------------------------------------------------------------------


class Destination:
    """Answers a whole request 500 when any series in it is refused, as Prometheus 2.42 does."""

    def __init__(self, refuses: Callable[[Series], bool], down: int = 0) -> None:
        self.refuses = refuses
        self.down = down  # the first `down` requests fail whatever they hold (an outage)
        self.stored: list[Series] = []
        self.requests = 0
        self.sizes: list[int] = []  # series per request
        # What the sender reads of a client: remote write 1.0 entries, no tenants, nothing skipped.
        self.protocol = Protocol.V1
        self.tenant = None
        self.skipped: dict[str, int] = {}

    async def send(self, entries: list[Entry]) -> SendResult:
        self.requests += 1
        series = [s for e in entries for s in decode_entry(e).series]
        self.sizes.append(len(series))
        if self.requests <= self.down:
            return SendResult(Outcome.RETRY, "http_500", detail="down")
        if any(map(self.refuses, series)):
            return SendResult(Outcome.RETRY, "http_500", detail="label name is not unique")
        self.stored.extend(series)
        return SendResult(Outcome.OK, "ok")

    def forget(self, entries: list[Entry]) -> None:
        return None

    def tls_files_unusable(self) -> bool:
        return False

    async def close(self) -> None:
        return None


def _poisoned(series: Series) -> bool:
    return dict(series.labels).get("poison") == "1"


def _deliver(entries: list[Entry], destination: Destination, max_points: int = 10_000) -> Telemetry:
    async def run() -> Telemetry:
        telemetry = Telemetry()
        queue = ShardedQueue(1, 1_000_000, max_points)
        sender = QueuedDestination("d", destination, queue, RetrySettings(0, 0), telemetry)
        queue.put([entries])
        sender.start()
        for _ in range(5_000):  # bounded: a stalled sender fails the test, fast
            if sender.idle:
                break
            await asyncio.sleep(0)
        assert sender.idle, "the sender did not settle"
        await sender.stop(0)
        return telemetry

    return asyncio.run(run())


def _dropped(telemetry: Telemetry, reason: str) -> float:
    labels = {"destination": "d", "reason": reason}
    return telemetry.registry.get_sample_value("gotk_relay_samples_dropped_total", labels) or 0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 12),
)
def test_only_the_refused_series_are_dropped_and_the_rest_keeps_its_order(
    requests: list[list[tuple[int, bool]]], max_points: int
) -> None:
    """Any mix of refused and accepted series, merged into batches of any size, followed by one
    good request (senders keep writing: a refused series is judged against what follows)."""
    requests = [*requests, [(0, False)]]
    entries, expected, poison = [], [], 0
    for r, request in enumerate(requests):
        series = []
        for k, (name, bad) in enumerate(request):
            one = _series(f"m{name}", 1000 + r * 10 + k, **({"poison": "1"} if bad else {}))
            series.append(one)
            if bad:
                poison += 1
            else:
                expected.append(one)
        entries.append(_entry(*series))
    destination = Destination(_poisoned)
    telemetry = _deliver(entries, destination, max_points)
    assert destination.stored == expected
    assert _dropped(telemetry, "poison") == poison


def test_an_outage_drops_nothing_and_delivers_in_order_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = [_entry(_series(f"m{i}", 1000 + i), _series(f"n{i}", 1000 + i)) for i in range(5)]
    destination = Destination(lambda s: False, down=40)
    with caplog.at_level(logging.DEBUG, logger="gotk_relay.delivery"):
        telemetry = _deliver(entries, destination)
    assert [s.name for s in destination.stored] == [n for i in range(5) for n in (f"m{i}", f"n{i}")]
    assert _dropped(telemetry, "poison") == 0
    # Loud once: one warning when it starts failing, one info line when it recovers.
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in loud] == ["WARNING", "INFO"]
    assert loud[0][1].startswith("destination is failing")
    assert loud[1][1] == "destination recovered"
    failing = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert (failing.reason, failing.response) == ("http_500", "down")  # type: ignore[attr-defined]


def test_a_lone_refused_series_is_judged_against_what_is_queued_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = Series((("__name__", "x"), ("a", "1"), ("a", "2"), ("poison", "1")), (Sample(1, 5),))
    entries = [_entry(bad), _entry(_series("after", 6))]
    destination = Destination(_poisoned)
    with caplog.at_level(logging.WARNING, logger="gotk_relay.delivery"):
        telemetry = _deliver(entries, destination, max_points=1)
    assert [s.name for s in destination.stored] == ["after"]
    assert _dropped(telemetry, "poison") == 1
    poison_lines = [r for r in caplog.records if "refusing one series" in r.getMessage()]
    assert len(poison_lines) == 1
    assert poison_lines[0].series == '{__name__="x",a="1",a="2",poison="1"}'  # type: ignore[attr-defined]
    assert poison_lines[0].reason == "http_500"  # type: ignore[attr-defined]


def _refused_at_first(times: dict[tuple[str, int], int]) -> Callable[[Series], bool]:
    """A destination that refuses some samples for their first few sends, then takes them (a
    transient error that looks like poison while isolation runs)."""
    seen: dict[tuple[str, int], int] = {}

    def refuses(series: Series) -> bool:
        key = (series.name, series.samples[0].timestamp)
        seen[key] = seen.get(key, 0) + 1
        return seen[key] <= times.get(key, 0)

    return refuses


def _in_order(stored: list[Series]) -> bool:
    stamps: dict[str, list[int]] = {}
    for series in stored:
        stamps.setdefault(series.name, []).extend(x.timestamp for x in series.samples)
    return all(t == sorted(t) for t in stamps.values())


def test_a_suspect_that_passes_its_last_try_is_not_overtaken_by_its_own_later_samples() -> None:
    # [s@1] and [s@2, t@2] go out merged and are refused three times (s@1 is refused), then
    # halved: [s@1] is refused twice more and becomes a suspect; [s@2, t@2] would be accepted,
    # and s@1 only after it at its last try. s@2 must wait for that last try.
    entries = [_entry(_series("s", 1)), _entry(_series("s", 2), _series("t", 2))]
    destination = Destination(_refused_at_first({("s", 1): 5}))
    telemetry = _deliver(entries, destination)
    assert [(s.name, s.samples[0].timestamp) for s in destination.stored] == [
        ("t", 2),
        ("s", 1),
        ("s", 2),
    ]
    assert _dropped(telemetry, "poison") == 0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8)), min_size=1, max_size=5),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 12),
)
def test_transient_refusals_never_reorder_a_series(
    requests: list[list[tuple[int, int]]], max_points: int
) -> None:
    """Samples refused for their first few sends: each one is delivered or counted as poison,
    and what is delivered keeps every series' order."""
    entries, times = [], {}
    for r, request in enumerate(requests):
        names = {f"m{name}": refusals for name, refusals in request}  # a series once a request
        for name, refusals in names.items():
            times[(name, 1000 + r)] = refusals
        entries.append(_entry(*(_series(name, 1000 + r) for name in names)))
    entries.append(_entry(_series("after", 5000)))  # senders keep writing
    destination = Destination(_refused_at_first(times))
    telemetry = _deliver(entries, destination, max_points)
    assert _in_order(destination.stored)
    assert len(destination.stored) + _dropped(telemetry, "poison") == len(times) + 1


@pytest.mark.parametrize("reason", ["connect_error", "http_503", "http_502", "timeout"])
def test_unavailability_is_never_taken_for_poison(reason: str) -> None:
    class Flaky(Destination):
        async def send(self, entries: list[Entry]) -> SendResult:
            if self.requests < 30:
                self.requests += 1
                self.sizes.append(len(decode_entry(entries[0]).series))
                return SendResult(Outcome.RETRY, reason)
            return await super().send(entries)

    destination = Flaky(lambda s: False)
    telemetry = _deliver([_entry(_series("a"), _series("b"))], destination)
    assert [s.name for s in destination.stored] == ["a", "b"]
    assert destination.sizes == [2] * 31  # retried whole: never split
    assert _dropped(telemetry, "poison") == 0
