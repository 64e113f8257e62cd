"""Micro-benchmark of remote write 1.0 -> 2.0 conversion (``wire.rw2.from_v1``) on one core.

Why: a ``protobuf_message: io.prometheus.write.v2.Request`` destination converts every request
it gets, so the conversion's CPU per request bounds that destination's throughput (goal: at
least 0.7x the plain configuration's samples per CPU-second, so the conversion may add at most
~40% to the plain path's CPU per request; figures: docs/performance.md). This times the
compiled walk (``_v2.c``) beside the reference (decode into the model, encode) on the
benchmark's own ``cluster`` requests (tests/support/loadgen.py: 50k series sent as 2000-series
requests of one sample each, 0.1 % Flux), checking first that both give the same bytes.

The allocator is set up as the relay sets it (``allocator.keep_freed_memory``). Timing is
``time.process_time`` (CPU, not wall) over ``--iterations`` runs, best of
``--repeats``: the minimum is the least disturbed by whatever else the machine is running.

Usage: .venv/bin/python -m bench.v2conv [--iterations 200] [--repeats 5] [--requests 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from gotk_relay import allocator
from gotk_relay.wire import rw2
from tests.support import loadgen


def measure(
    fn: Callable[[bytes], object], requests: Sequence[bytes], iterations: int, repeats: int
) -> float:
    """Best CPU seconds per request over ``repeats`` runs of ``iterations`` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for i in range(iterations):
            fn(requests[i % len(requests)])
        best = min(best, (time.process_time() - start) / iterations)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5, help="distinct requests cycled")
    args = parser.parse_args(argv)
    allocator.keep_freed_memory()  # as the relay runs: no page faults for every request
    # bench/run.py's workload: 50k distinct series in 2000-series requests
    spec = loadgen.WorkloadSpec("cluster", series=50_000, flux_fraction=0.001)
    workload = loadgen.Workload(spec, precompress=False)
    requests = [workload.raw(i, 0) for i in range(min(args.requests, len(workload.batches)))]
    samples = sum(b.samples for b in workload.batches) / len(workload.batches)
    for raw in requests:
        if rw2.from_v1(raw) != rw2.from_v1_reference(raw):
            print("from_v1 and the reference differ", file=sys.stderr)
            return 1
    rows = []
    if rw2.NATIVE:
        rows.append(
            ("C (_v2.from_v1)", measure(rw2.from_v1, requests, args.iterations, args.repeats))
        )
    else:
        print("_v2 is not built (or GOTK_RELAY_NO_EXTENSIONS is set): reference only")
    reference_iterations = max(1, args.iterations // 50)
    rows.append(
        (
            "reference (rw1.decode + rw2.encode)",
            measure(rw2.from_v1_reference, requests, reference_iterations, args.repeats),
        )
    )
    size = sum(map(len, requests)) / len(requests)
    print(
        f"cluster: {samples:.0f} series/request, {size / 1024:.0f} KiB raw v1, "
        f"{len(rw2.from_v1(requests[0])) / 1024:.0f} KiB v2; best of {args.repeats} (CPU time)"
    )
    print(f"{'conversion':38s} {'µs/request':>11s} {'samples/CPU-s':>15s}")
    for label, seconds in rows:
        print(f"{label:38s} {seconds * 1e6:11.1f} {samples / seconds:15,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
