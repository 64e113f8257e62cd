"""Micro-benchmark of the Datadog and OTLP destinations' conversion, on one core.

Why: a ``datadog:`` or ``otlp:`` destination converts every queued sample (remote write 1.0 →
Datadog series JSON / OTLP ExportMetricsServiceRequest) and compresses the request; issue 17
asks for ≥ 300k samples per CPU-second end to end. This times that work alone: the client's own
``send`` on queued entries as the relay makes them (each a received 2000-sample request, the
snappy block that came), with the HTTP post replaced by an immediate 2xx, so conversion,
request sizing, compression and the commit of stream state all run as in production.

The entries come from ``tests/support/loadgen.py``'s workloads (``cluster``, ``flux-heavy``). Every
round sends every series once with a timestamp one second later, so counters have deltas from
the second round on; round 0 is a warm-up (first observations, memos filled) and not timed.
The clients' clocks are set to the workload's time so Datadog's one-hour age limit keeps every
point. A send takes ``max_samples_per_send`` (20000) samples' worth of entries, as the sender
merges them.

Timing is ``time.process_time`` (CPU, not wall) over ``--rounds`` rounds, best of ``--repeats``
(each repeat on fresh rounds, so counters keep moving forward).

``--instructions`` counts instead of timing: instructions per sample, by valgrind's callgrind
(``apt-get install valgrind``), which gives the same count for the same build and input
whatever else the machine runs (this two-core VM's timings move ±20 % within an hour). Each
destination and workload runs twice under callgrind, with 1 and with 4 steady rounds after the
warm-up (every round's entries made before the first send), and the difference is divided by
the samples of those 3 rounds: setup, warm-up and exit cancel out. ``--series`` defaults to
10000 there (callgrind runs ~50x slower); about two minutes per destination and workload.

Usage: .venv/bin/python -m bench.convert [--series 50000] [--rounds 2] [--repeats 3]
       [--workloads cluster,flux-heavy] [--destinations datadog,otlp] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from gotk_relay.config import DatadogConfig, OTLPConfig
from gotk_relay.delivery.entry import Entry
from gotk_relay.delivery.retry import Outcome
from gotk_relay.destinations.datadog import DatadogClient
from gotk_relay.destinations.otlp import OTLPClient
from gotk_relay.model import Protocol
from tests.support.loadgen import Workload, WorkloadSpec

FLUX_FRACTIONS = {"cluster": 0.001, "flux-heavy": 0.05}
STEP_MS = 1000  # one scrape a second: counters move, timestamps stay within Datadog's hour


class _Clock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms / 1000

    def __call__(self) -> float:
        return self.now


def _entries(workload: Workload, round_: int) -> list[Entry]:
    spec = workload.spec
    ts = spec.ts_base_ms + round_ * STEP_MS
    out = []
    for index, batch in enumerate(workload.batches):
        shifted = (ts - spec.ts_base_ms) // spec.ts_step_ms
        out.append(Entry(workload.body(index, shifted), Protocol.V1, batch.samples, ts))
    return out


def _sends(entries: list[Entry], per_send: int) -> list[list[Entry]]:
    out: list[list[Entry]] = []
    current: list[Entry] = []
    points = 0
    for entry in entries:
        if current and points + entry.points > per_send:
            out.append(current)
            current, points = [], 0
        current.append(entry)
        points += entry.points
    if current:
        out.append(current)
    return out


def _client(destination: str, clock: _Clock) -> Any:
    if destination == "datadog":
        dd = DatadogClient(
            "bench", DatadogConfig(api_key="x", url="http://127.0.0.1:9/api/v2/series"), clock
        )

        async def accepted(body: bytes, api_key: str) -> tuple[int, Any, str]:
            return 202, {}, ""

        dd._post = accepted  # type: ignore[method-assign]
        return dd
    otlp = OTLPClient("bench", OTLPConfig(url="http://127.0.0.1:9/v1/metrics"))

    async def ok(piece: Any) -> None:
        return None

    otlp._post = ok  # type: ignore[method-assign]
    return otlp


async def _round(client: Any, workload: Workload, round_: int, clock: _Clock) -> tuple[float, int]:
    entries = _entries(workload, round_)
    clock.now = entries[0].newest_ms / 1000 + 1
    start = time.process_time()
    for send in _sends(entries, client.max_points):
        result = await client.send(send)
        if result.outcome is not Outcome.OK:
            raise RuntimeError(f"send failed: {result}")
    return time.process_time() - start, sum(e.points for e in entries)


async def _measure(
    destination: str, workload: Workload, rounds: int, repeats: int
) -> tuple[float, float]:
    clock = _Clock(workload.spec.ts_base_ms)
    client = _client(destination, clock)
    try:
        await _round(client, workload, 0, clock)  # warm-up: first observations, memos
        best = float("inf")
        samples = 0
        round_ = 1
        for _ in range(repeats):
            spent = 0.0
            samples = 0
            for _ in range(rounds):
                cpu, count = await _round(client, workload, round_, clock)
                spent += cpu
                samples += count
                round_ += 1
            best = min(best, spent)
        return samples / best, best * 1000 / (samples / 2000)
    finally:
        await client.close()


_STEADY = (1, 4)  # steady rounds of the two counted runs


async def _steady(destination: str, workload: Workload, rounds: int) -> None:
    """The warm-up round and ``rounds`` more (what ``--instructions`` counts twice), the
    entries of every round either count sends made first, so that making them cancels out."""
    made = [_entries(workload, round_) for round_ in range(max(_STEADY) + 1)][: rounds + 1]
    clock = _Clock(workload.spec.ts_base_ms)
    client = _client(destination, clock)
    try:
        for entries in made:
            clock.now = entries[0].newest_ms / 1000 + 1
            for send in _sends(entries, client.max_points):
                result = await client.send(send)
                if result.outcome is not Outcome.OK:
                    raise RuntimeError(f"send failed: {result}")
    finally:
        await client.close()


def _instructions(destination: str, name: str, series: int) -> int:
    """Instructions callgrind counts for the whole process (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        counts = []
        for rounds in _STEADY:
            out = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={tmp}/out",
                    sys.executable,
                    "-m",
                    "bench.convert",
                    "--steady",
                    str(rounds),
                    "--series",
                    str(series),
                    "--workloads",
                    name,
                    "--destinations",
                    destination,
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            found = re.search(r"Collected : (\d+)", out.stderr)
            if found is None:
                raise RuntimeError(f"no count from callgrind:\n{out.stderr[-2000:]}")
            counts.append(int(found.group(1)))
    return counts[1] - counts[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="cluster,flux-heavy")
    parser.add_argument("--destinations", default="datadog,otlp")
    parser.add_argument("--instructions", action="store_true", help="count, by callgrind")
    parser.add_argument("--steady", type=int, help=argparse.SUPPRESS)  # one counted run
    args = parser.parse_args(argv)
    if args.series is None:
        args.series = 10_000 if args.instructions or args.steady is not None else 50_000
    for name in args.workloads.split(","):
        if args.instructions:
            for destination in args.destinations.split(","):
                spec = WorkloadSpec(name, series=args.series, flux_fraction=FLUX_FRACTIONS[name])
                samples = (_STEADY[1] - _STEADY[0]) * spec.series  # a sample per series a round
                count = _instructions(destination, name, args.series)
                print(
                    f"{destination:8} {name:11} {count / samples:8.0f} instructions per sample",
                    flush=True,
                )
            continue
        spec = WorkloadSpec(name, series=args.series, flux_fraction=FLUX_FRACTIONS[name])
        workload = Workload(spec)
        if args.steady is not None:
            for destination in args.destinations.split(","):
                asyncio.run(_steady(destination, workload, args.steady))
            continue
        for destination in args.destinations.split(","):
            rate, ms = asyncio.run(_measure(destination, workload, args.rounds, args.repeats))
            print(
                f"{destination:8} {name:11} {rate / 1000:8.1f}k samples/CPU-s "
                f"{ms:7.2f} ms CPU per 2000 samples",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
