"""/federate at scale (issue 22): how long the store takes to stream N series, a 1% selector,
and the write latency while /federate is scraped back to back.

    .venv/bin/python -m bench.federate_scale store [--series 500000]
    .venv/bin/python -m bench.federate_scale writes [--series 500000] [--seconds 8]

``store`` runs in-process (``FederateStore.stream`` on a loop, a task that asks for a turn
every ms beside it): the first render (its sort of every new series included), one after every
sample changed (each line made again), one with nothing changed, 1% of the series by a name
selector and by a label equality (first and again), and one series by a label whose index its
first query builds (a value per series: the worst case). ``writes`` starts ``gotk-relay serve``
(flux off, a federate store of N series written through remote write), then measures write latency
(one small request at a time, each series' sample updated) alone and while a client requests
/federate back to back. Each run is under a minute; numbers from a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from gotk_relay.destinations.federate import FederateStore
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.wire import rw1, snappy

NAMES = ("gotk_reconcile_condition", "gotk_suspend_status", "gotk_resource_info", "gotk_other")


def _labels(i: int) -> tuple[tuple[str, str], ...]:
    # One series in 100 is a gotk_other (the 1% name selector), one in 100 in namespace ns-0.
    name = NAMES[3] if i % 100 == 0 else NAMES[i % 3]
    return (
        ("__name__", name),
        ("exported_namespace", f"ns-{(i // 7) % 100}"),
        ("instance", "10.0.0.1:8080"),
        ("job", "kube-state-metrics"),
        ("kind", "Kustomization"),
        ("name", f"app-{i:07d}"),
    )


def _batches(count: int, ts: int, per: int = 20_000) -> list[Batch]:
    return [
        Batch(
            tuple(
                Series(_labels(i), (Sample(float(i % 2), ts),))
                for i in range(start, min(start + per, count))
            )
        )
        for start in range(0, count, per)
    ]


LONGEST: list[float] = [0.0]  # the longest the loop waited for a render's piece, this render


async def _timed(store: FederateStore, matches: list[str]) -> tuple[float, int]:
    """How long a render takes and its size; ``LONGEST`` keeps the longest wait of a task
    that asks for a turn of the loop every ms meanwhile (what a write would have waited)."""
    done = asyncio.Event()
    LONGEST[0] = 0.0

    async def watch() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            LONGEST[0] = max(LONGEST[0], time.perf_counter() - before - 0.001)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    started = time.perf_counter()
    size = 0
    async for piece in store.stream(store.query(matches)):
        size += len(piece)
        await asyncio.sleep(0)  # the server gives the loop a turn after each piece too
    took = time.perf_counter() - started
    done.set()
    await watcher
    return took, size


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _store(count: int) -> None:
    store = FederateStore(['{__name__=~"gotk_.*"}'], count)
    for batch in _batches(count, 1000):
        store.update(batch)
    print(f"RSS with the store filled: {_rss_mib():.0f} MiB")
    rows: list[tuple[str, list[str]]] = [("first render (sorts every new series)", [])]
    rows.append(("again, nothing changed", []))
    for label, matches in rows:
        took, size = await _timed(store, matches)
        print(f"{label:48s} {took * 1000:8.1f} ms {size / 1e6:7.1f} MB {_waited()}")
    print(f"RSS with every line kept: {_rss_mib():.0f} MiB")
    for batch in _batches(count, 2000):
        store.update(batch)
    took, size = await _timed(store, [])
    print(f"{'every sample changed (every line made again)':48s} {took * 1000:8.1f} ms {_waited()}")
    for label, matches in (
        ("1% by name (gotk_other)", ["gotk_other"]),
        ('1% by label (exported_namespace="ns-0"), first', ['{exported_namespace="ns-0"}']),
        ("1% by label, again", ['{exported_namespace="ns-0"}']),
        ('1 series by label, its index built (name="app-0000100")', ['{name="app-0000100"}']),
        ("1 series by label, index kept", ['{name="app-0000100"}']),
        (
            '1 series (name + label: gotk_other{name="app-0000100"})',
            ['gotk_other{name="app-0000100"}'],
        ),
    ):
        took, size = await _timed(store, matches)
        print(f"{label:48s} {took * 1000:8.1f} ms {size / 1e3:9.1f} kB {_waited()}")


def _waited() -> str:
    return f"(the loop's other work waited {LONGEST[0] * 1000:.1f} ms at most)"


async def _writes(count: int, seconds: float) -> None:
    from tests.support.rig import start_relay

    config = (
        "flux: {mode: 'off'}\n"
        f"federate: {{match: ['{{__name__=~\"gotk_.*\"}}'], max_series: {count}}}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        relay = start_relay(Path(tmp), config)
        try:
            async with aiohttp.ClientSession() as session:
                url = relay.write_url
                headers = {
                    "Content-Type": rw1.CONTENT_TYPE,
                    "Content-Encoding": "snappy",
                    "X-Prometheus-Remote-Write-Version": "0.1.0",
                }
                for batch in _batches(count, 1000, 10_000):
                    async with session.post(
                        url, data=snappy.compress(rw1.encode(batch)), headers=headers
                    ) as answer:
                        assert answer.status == 204, await answer.text()

                # One body, sent again and again: the relay's work per write, not the bench's.
                body = snappy.compress(rw1.encode(_batches(2000, 5000, 2000)[0]))
                scrape = ["curl", "-sf", "-o", "/dev/null", f"{relay.base_url}/federate"]
                started = time.perf_counter()
                first = await asyncio.create_subprocess_exec(*scrape)
                assert await first.wait() == 0
                print(
                    f"first /federate (sorts every series): {time.perf_counter() - started:.2f} s"
                )

                async def write_loop(until: float) -> list[float]:
                    took: list[float] = []
                    while time.perf_counter() < until:
                        started = time.perf_counter()
                        async with session.post(url, data=body, headers=headers) as answer:
                            await answer.read()
                        took.append(time.perf_counter() - started)
                    return took

                async def scrape_loop(until: float) -> int:
                    # curl in a process of its own: reading 70 MB is not this process' work.
                    scrapes = 0
                    while time.perf_counter() < until:
                        done = await asyncio.create_subprocess_exec(*scrape)
                        assert await done.wait() == 0
                        scrapes += 1
                    return scrapes

                alone = await write_loop(time.perf_counter() + seconds)
                until = time.perf_counter() + seconds
                scraped, scrapes = await asyncio.gather(write_loop(until), scrape_loop(until))
                for label, took in (("writes alone", alone), ("writes beside /federate", scraped)):
                    q = statistics.quantiles(took, n=100)
                    print(
                        f"{label:26s} n={len(took):5d} p50={q[49] * 1000:7.2f} ms "
                        f"p99={q[98] * 1000:7.2f} ms"
                    )
                print(f"/federate renders of {count} series during that: {scrapes}")
        finally:
            relay.proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["store", "writes"])
    parser.add_argument("--series", type=int, default=500_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if args.what == "store":
        asyncio.run(_store(args.series))
    else:
        asyncio.run(_writes(args.series, args.seconds))


if __name__ == "__main__":
    main()
