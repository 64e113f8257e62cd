"""The fault scenarios, shared by the tests (which assert) and ``bench/faults.py`` (which prints).

Each scenario starts its own receivers and relay process(es), drives a known load through
them while injecting one kind of fault, waits (bounded) for the backlog to drain and returns
an :class:`~loadgen.Accounting` per receiver plus the facts a test asserts on. Scenarios
never assert themselves: the same run serves a pass/fail test and a benchmark line.

Timed waits are the faults' own durations (an outage *is* 60 s of nothing) or load pacing;
everything that waits for an effect polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fault_load import (
    Accounting,
    Loader,
    LoadPlan,
    Mode,
    RecordingReceiver,
    RelayProcess,
    account,
    out_of_order_examples,
    relay_config,
    wait_delivered,
)

FAST_RETRY = {"min_backoff": "20ms", "max_backoff": "500ms"}


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 10 ms until true; AssertionError naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        await asyncio.sleep(0.01)


def _acked(loader: Loader, more: int) -> Callable[[], bool]:
    """A check for "``more`` requests acked from now on"."""
    target = loader.acked_requests + more
    return lambda: loader.acked_requests >= target


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------------------------
# Crash: kill -9 under load, restart on the same spool


@dataclass
class CrashResult:
    accounting: Accounting
    kills: int
    modes: list[Mode]  # receiver mode during each life of the relay
    loader: str
    missing_after_wait: int
    elapsed_s: float
    out_of_order_examples: list[str]


async def crash_scenario(
    workdir: Path,
    *,
    seed: int = 20261125,
    kills: int = 6,
    synchronous: str = "full",
    series: int = 20,
    lanes: int = 2,
    interval_s: float = 0.02,
    drain_timeout_s: float = 30.0,
) -> CrashResult:
    """SIGKILL the relay ``kills`` times at seeded-random points of a steady load.

    A kill point is "after N more acked requests" (N random), polled every 10 ms, so it lands
    at an arbitrary moment relative to admission, spool commits, sends and deletes. During each
    life the receiver is in a random mode (ok, error, hang, down), so some kills find a backlog
    in the spool that the next life must resume. The relay restarts on the same port and data
    dir after a random downtime; the loader retries through it as Prometheus would.
    """
    started = time.monotonic()
    rng = random.Random(seed)
    receiver = RecordingReceiver("crash-sink")
    destination = {
        "name": "sink",
        "url": receiver.url,
        "remote_timeout": "2s",
        "queue_config": {**FAST_RETRY, "min_shards": 2, "max_samples_per_send": 500},
    }
    config = relay_config(
        [destination], spool_dir=workdir / "spool", spool={"synchronous": synchronous}
    )
    relay = RelayProcess(workdir, config, name="relay-crash")
    budget_s = 120.0
    plan = LoadPlan(
        series=series, steps=int(budget_s / interval_s), interval_s=interval_s, lanes=lanes
    )
    loader = Loader(relay.write_url, plan, retry_for_s=30.0, max_backoff_s=0.2)
    stop = asyncio.Event()
    modes: list[Mode] = ["ok"]
    load: asyncio.Task[None] | None = None
    await receiver.start("ok")
    try:
        await relay.start()
        load = asyncio.create_task(loader.run(stop=stop, deadline_s=budget_s))
        for _ in range(kills):
            await until(_acked(loader, rng.randint(10, 100)), 30, "loader progress")
            await relay.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.3))  # downtime, part of the fault
            mode: Mode = rng.choice(["ok", "ok", "error", "hang", "down"])
            await receiver.set_mode(mode)
            modes.append(mode)
            await relay.start()
        await receiver.set_mode("ok")
        await until(_acked(loader, 20), 30, "loader progress after the crashes")
        stop.set()
        await load
        missing = await wait_delivered(loader, receiver, drain_timeout_s)
        return CrashResult(
            account("crash", loader, receiver),
            relay.kills,
            modes,
            loader.summary(),
            missing,
            time.monotonic() - started,
            out_of_order_examples(receiver),
        )
    finally:
        stop.set()
        await _cancel(load)
        await relay.stop()
        await receiver.close()


# --------------------------------------------------------------------------------------------
# Outage: the destination is down for a minute under steady load


@dataclass
class OutageResult:
    accounting: Accounting
    spool: bool
    down_s: float
    loader: str
    statuses: dict[str, int]
    refused: int
    given_up: int
    missing_after_wait: int
    receiver_answers: dict[str, int] = field(default_factory=dict)


async def outage_scenario(
    workdir: Path,
    *,
    spool: bool,
    down_s: float = 62.0,
    before_s: float = 2.0,
    after_s: float = 4.0,
    series: int = 50,
    interval_s: float = 0.1,
    drain_timeout_s: float = 30.0,
) -> OutageResult:
    """Steady load (``series`` samples every ``interval_s``); the destination goes down for
    ``down_s`` after ``before_s`` of normal operation, then comes back for ``after_s``.

    With the spool the relay must keep acking and deliver the whole minute afterwards. Without
    it the relay must hold what fits (a 256 KiB memory budget here, capacity set out of the
    way) and answer 503 beyond, and the loader keeps retrying as Prometheus does.
    """
    name = "outage-spool" if spool else "outage-memory"
    receiver = RecordingReceiver(f"{name}-sink")
    queue = {**FAST_RETRY, "max_backoff": "1s"}
    if spool:
        config = relay_config(
            [{"name": "sink", "url": receiver.url, "queue_config": queue}],
            spool_dir=workdir / "spool",
        )
    else:
        config = relay_config(
            [
                {
                    "name": "sink",
                    "url": receiver.url,
                    "queue_config": {**queue, "capacity": 1_000_000},
                }
            ],
            queues={"memory_budget_bytes": 256 * 1024},
        )
    relay = RelayProcess(workdir, config, name=f"relay-{name}")
    steps = int((before_s + down_s + after_s) / interval_s)
    plan = LoadPlan(series=series, steps=steps, interval_s=interval_s)
    loader = Loader(relay.write_url, plan, retry_for_s=down_s + 30.0)
    load: asyncio.Task[None] | None = None
    await receiver.start("ok")
    try:
        await relay.start()
        load = asyncio.create_task(loader.run(deadline_s=before_s + down_s + after_s + 60.0))
        warmup = int(before_s / interval_s)
        await until(lambda: loader.acked_requests >= warmup, 30, f"{name}: warm-up load acked")
        await receiver.set_mode("down")
        went_down = time.monotonic()
        await asyncio.sleep(down_s)  # the outage itself
        await receiver.set_mode("ok")
        down_for = time.monotonic() - went_down
        await load
        missing = await wait_delivered(loader, receiver, drain_timeout_s)
        return OutageResult(
            account(name, loader, receiver),
            spool,
            down_for,
            loader.summary(),
            dict(loader.statuses),
            loader.refused,
            loader.given_up,
            missing,
            dict(receiver.answers),
        )
    finally:
        await _cancel(load)
        await relay.stop()
        await receiver.close()


# --------------------------------------------------------------------------------------------
# Isolation: one destination hangs, one fails then recovers, one is healthy


@dataclass
class IsolationResult:
    healthy: Accounting
    flaky: Accounting
    hanging: Accounting
    spool: bool
    load_s: float
    sent_per_s: float
    healthy_per_s: float
    healthy_missing_at_load_end: int
    healthy_latency_p50_s: float
    healthy_latency_p99_s: float
    healthy_latency_max_s: float
    flaky_missing_after_wait: int
    loader: str
    statuses: dict[str, int]


async def isolation_scenario(
    workdir: Path,
    *,
    spool: bool,
    load_s: float = 10.0,
    flaky_s: float = 5.0,
    series: int = 50,
    interval_s: float = 0.1,
    drain_timeout_s: float = 30.0,
) -> IsolationResult:
    """Three destinations behind one relay: ``hang`` never answers (the relay's client times out
    after 2 s and retries), ``flaky`` answers 500 for ``flaky_s`` then recovers, ``healthy``
    always answers 204. The healthy one must see every sample about when it is acked, as if the
    others did not exist; the flaky one must get everything once it recovers.
    """
    tag = "spool" if spool else "memory"
    hang = RecordingReceiver("hang")
    flaky = RecordingReceiver("flaky")
    healthy = RecordingReceiver("healthy")
    queue = {**FAST_RETRY, "max_backoff": "1s"}
    destinations = [
        {"name": "hang", "url": hang.url, "remote_timeout": "2s", "queue_config": queue},
        {"name": "flaky", "url": flaky.url, "queue_config": queue},
        {"name": "healthy", "url": healthy.url, "queue_config": queue},
    ]
    config = relay_config(destinations, spool_dir=workdir / "spool" if spool else None)
    # The hanging destination's queue never drains: a short shutdown ends the relay at once.
    relay = RelayProcess(workdir, config, name=f"relay-isolation-{tag}", shutdown_timeout_s=0.5)
    plan = LoadPlan(series=series, steps=int(load_s / interval_s), interval_s=interval_s)
    loader = Loader(relay.write_url, plan, retry_for_s=5.0)
    await hang.start("hang")
    await flaky.start("error")
    await healthy.start("ok")
    recover: asyncio.Task[None] | None = None
    try:
        await relay.start()

        async def recover_flaky() -> None:
            await asyncio.sleep(flaky_s)  # the failure's duration
            await flaky.set_mode("ok")

        recover = asyncio.create_task(recover_flaky())
        await loader.run(deadline_s=load_s + 30.0)
        acked = loader.acked_keys()
        missing_at_end = healthy.missing(acked)
        await wait_delivered(loader, healthy, 5.0)
        latencies = sorted(
            at - ack
            for series_no, ts, _, at in healthy.first_arrivals()
            if (ack := loader.ack_time((series_no, ts))) is not None
        )
        await recover
        flaky_missing = await wait_delivered(loader, flaky, drain_timeout_s)
        duration = max(1e-9, loader.finished_at - loader.started_at)
        in_window = sum(
            1
            for series_no, ts, _, at in healthy.first_arrivals()
            if (series_no, ts) in acked and at <= loader.finished_at
        )
        return IsolationResult(
            healthy=account(f"isolation-{tag}/healthy", loader, healthy),
            flaky=account(f"isolation-{tag}/flaky", loader, flaky),
            hanging=account(f"isolation-{tag}/hang", loader, hang),
            spool=spool,
            load_s=duration,
            sent_per_s=len(acked) / duration,
            healthy_per_s=in_window / duration,
            healthy_missing_at_load_end=missing_at_end,
            healthy_latency_p50_s=statistics.median(latencies) if latencies else float("inf"),
            healthy_latency_p99_s=_quantile(latencies, 0.99),
            healthy_latency_max_s=latencies[-1] if latencies else float("inf"),
            flaky_missing_after_wait=flaky_missing,
            loader=loader.summary(),
            statuses=dict(loader.statuses),
        )
    finally:
        await _cancel(recover)
        await relay.stop()
        for receiver in (hang, flaky, healthy):
            await receiver.close()


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("inf")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
