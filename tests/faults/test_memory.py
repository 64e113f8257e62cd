"""Without a spool, the relay's memory is bounded by ``queues.memory_budget_bytes``.

The destination is down for the whole test and queue capacity is set out of the way, so only
the budget stands between a sender that keeps pushing and the relay's RSS. Four lanes push
1000-series requests (samples of ~136 bytes encoded) as fast as they can for 30 s, retrying
503s; the relay's VmRSS is sampled every 0.5 s.

Bound: ``peak RSS ≤ baseline + budget + OVERHEAD``. The baseline is the RSS once the relay is
ready. OVERHEAD covers what the budget does not count: up to four requests being decoded at
once (~130 KiB bodies, ~1 MiB each as Python objects), the retrying sender's merged,
compressed request, modules and buffers first touched under load, and allocator slack. Measured
on the reference machine: peak - baseline = 33.9 MiB for a 32 MiB budget, i.e. ~2 MiB over;
16 MiB leaves room for other allocators without hiding an unbounded queue (which grows by
~3 MiB/s under this load: measured with the budget out of the way, it crosses the bound
~5 s after the budget would have filled).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fault_load import Loader, LoadPlan, RecordingReceiver, RelayProcess, relay_config

# Asserts RSS under an unpaced load.
pytestmark = pytest.mark.alone

MiB = 1024 * 1024
BUDGET = 32 * MiB
OVERHEAD = 16 * MiB
LOAD_S = 30.0
SAMPLE_EVERY_S = 0.5


@dataclass
class MemoryRun:
    baseline: int
    peak: int
    samples: int  # RSS readings taken
    series: list[tuple[float, int]]  # (seconds into the load, RSS)
    loader: str
    statuses: dict[str, int]
    acked_samples: int
    stopped_early: bool


async def _run(workdir: Path) -> MemoryRun:
    down = RecordingReceiver("never-up")  # never started: every send is connection refused
    queue = {"capacity": 100_000_000, "max_samples_per_send": 2000, "max_backoff": "1s"}
    config = relay_config(
        [{"name": "down", "url": down.url, "queue_config": queue}],
        queues={"memory_budget_bytes": BUDGET},
    )
    # Its queue never drains (the destination never starts): a short shutdown ends it at once.
    relay = RelayProcess(workdir, config, name="relay-memory", shutdown_timeout_s=0.5)
    plan = LoadPlan(series=4000, steps=100_000, interval_s=0.0, lanes=4, pad=64)
    loader = Loader(relay.write_url, plan, retry_for_s=1.0, max_backoff_s=0.2)
    stop = asyncio.Event()
    load: asyncio.Task[None] | None = None
    try:
        await relay.start()
        baseline = relay.rss_bytes()
        bound = baseline + BUDGET + OVERHEAD
        load = asyncio.create_task(loader.run(stop=stop, deadline_s=LOAD_S + 30))
        started = time.monotonic()
        readings: list[tuple[float, int]] = []
        stopped_early = False
        while time.monotonic() - started < LOAD_S:
            await asyncio.sleep(SAMPLE_EVERY_S)
            rss = relay.rss_bytes()
            readings.append((time.monotonic() - started, rss))
            if rss > bound:  # fail fast: an unbounded relay must not eat the machine
                stopped_early = True
                break
        stop.set()
        await load
        return MemoryRun(
            baseline,
            max(rss for _, rss in readings),
            len(readings),
            readings,
            loader.summary(),
            dict(loader.statuses),
            len(loader.acked) * (plan.series // plan.lanes),
            stopped_early,
        )
    finally:
        stop.set()
        if load is not None and not load.done():
            load.cancel()
        await relay.stop()


def test_rss_stays_within_the_memory_budget_while_the_destination_is_down(
    tmp_path: Path, report: Callable[[str], None]
) -> None:
    run = asyncio.run(_run(tmp_path))
    bound = run.baseline + BUDGET + OVERHEAD
    line = (
        f"memory baseline={run.baseline / MiB:.1f}MiB peak={run.peak / MiB:.1f}MiB "
        f"peak-baseline={(run.peak - run.baseline) / MiB:.1f}MiB "
        f"bound={bound / MiB:.1f}MiB (budget {BUDGET // MiB}MiB + overhead {OVERHEAD // MiB}MiB) "
        f"readings={run.samples} acked_samples={run.acked_samples} "
        f"503s={run.statuses.get('503', 0)}"
    )
    report(line)
    trace = " ".join(f"{t:.1f}s:{rss / MiB:.0f}" for t, rss in run.series[::4])
    detail = f"{line}\nloader: {run.loader}\nRSS MiB over time: {trace}"
    assert run.samples >= LOAD_S / SAMPLE_EVERY_S * 0.8 or run.stopped_early, detail
    assert run.peak <= bound, "RSS outgrew the memory budget\n" + detail
    assert run.statuses.get("503", 0) > 0, "the load never filled the budget\n" + detail
