"""The relay's fast path per request, in process: what a write costs before HTTP.

Why: ``bench/run.py`` measures the relay end to end, where the loader, the sink, the kernel and
the other core's load all move the figures by ±20%. This replays the benchmark's own requests
(``tests/support/loadgen.py``'s workloads, same seeds) through the code a write takes on the relay's
default config with one ``remote_write`` — decompress, ``scan.scan_request``, decode the
picked series, Flux, queue, federate — and reports CPU time per request, so one change to the
hot path can be judged in seconds. The queues are emptied after each request (no sender runs).

Usage: .venv/bin/python -m bench.inprocess [--workload flux-heavy] [--rounds 6] [--repeats 3]
       .venv/bin/python -m bench.inprocess --spool full   # with a spool (synchronous: full)
       .venv/bin/python -m bench.inprocess --memory    # state memory per Flux object
A profile of the same: py-spy record --format raw -o out.raw -- .venv/bin/python -m bench.inprocess
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from gotk_relay import config as config_module
from gotk_relay.allocator import keep_freed_memory
from gotk_relay.relay import Relay
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import snappy
from gotk_relay.write import admission, scan
from tests.support import loadgen

WORKLOADS = {"cluster": 0.001, "flux-heavy": 0.05}


def make_relay(spool: Path | None = None, synchronous: str = "full") -> Relay:
    """The relay as ``bench/run.py`` runs it: the embedded default config, one remote_write;
    with ``spool``, a spool in that directory."""
    text = config_module.default_config_text().replace(
        "remote_write: []", "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
    )
    if spool is not None:
        text += f"spool: {{data_dir: '{spool}', synchronous: {synchronous}}}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        config = config_module.load_file(path)
    return Relay(config, Telemetry())


def drain(relay: Relay) -> None:
    """Forget what was queued, as a sender that keeps up would (out of the spool too)."""
    for destination in relay.destinations.values():
        for shard in destination.queue.shards:
            if shard.spool is not None and shard.entries:
                shard.spool.delete(e.spool_id for e in shard.entries)
                shard.cursor = shard.entries[-1].spool_id
            shard.entries.clear()
            shard.points = shard.memory_points = shard.queued_bytes = 0
    relay.budget.used = 0


def write(relay: Relay, body: bytes, now_ms: int) -> None:
    """What the write handler does with a v1 request on the fast path, minus HTTP."""
    limits = relay.config.receiver
    fast = relay.fast
    assert fast is not None, "the default config takes the fast path"
    raw = snappy.decompress(body, limits.max_decompressed_bytes)
    scanned = scan.scan_request(body, raw, limits, fast)
    picked = scan.decode_picked(scanned, limits)
    if not admission.queue_scanned(relay, scanned, picked, now_ms).accepted:
        raise RuntimeError("refused: the queues should have been drained")
    admission.count_scanned(relay.telemetry, scanned, picked)
    drain(relay)


def state_memory(workload: loadgen.Workload, rounds: int) -> None:
    """The Python memory the relay holds after ``rounds`` of the workload, per Flux object.

    Why: the relay's memory grows with the Flux objects it tracks (their state, their four
    outputs' encodings, the federate store's entries, the decoder's label cache), not with the
    series it forwards; this is the figure to size it by. Traced by ``tracemalloc`` from before
    the first request, so the interpreter and the modules are left out.
    """
    spec = workload.spec
    tracemalloc.start()
    relay = make_relay()
    before = tracemalloc.get_traced_memory()[0]
    for round_ in range(rounds):
        for index in range(len(workload.batches)):
            write(relay, workload.body(index, round_), spec.timestamp(round_))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    objects = relay.pipeline.flux.stats.objects_tracked
    per_object = f", {held / objects / 1024:.2f} KiB per Flux object" if objects else ""
    print(
        f"{spec.name}: the relay's state holds {held / 2**20:.2f} MiB after {rounds} rounds "
        f"of {len(workload.batches)} requests; {objects} Flux objects{per_object}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="flux-heavy")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of every batch, timed")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--memory", action="store_true", help="report state memory, not time")
    parser.add_argument(
        "--spool",
        choices=("full", "normal"),
        help="with a spool in a temporary directory, at this spool.synchronous",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `gotk-relay serve` does
    spec = loadgen.WorkloadSpec(name=args.workload, flux_fraction=WORKLOADS[args.workload])
    workload = loadgen.Workload(spec)
    if args.memory:
        state_memory(workload, args.rounds)
        return
    count = len(workload.batches)
    spool_dir = tempfile.TemporaryDirectory() if args.spool else None
    relay = make_relay(
        Path(spool_dir.name) if spool_dir is not None else None, args.spool or "full"
    )
    for index in range(count):  # round 0: every label set and Flux object seen once
        write(relay, workload.body(index, 0), spec.timestamp(0))
    best = float("inf")
    round_ = 1
    for _ in range(args.repeats):
        bodies = [
            (workload.body(i, r), spec.timestamp(r))
            for r in range(round_, round_ + args.rounds)
            for i in range(count)
        ]
        round_ += args.rounds
        started = time.process_time()
        for body, ts in bodies:
            write(relay, body, ts)
        best = min(best, (time.process_time() - started) / len(bodies))
    samples = spec.batch_size / best
    print(
        f"{args.workload}: {best * 1000:.3f} ms CPU per {spec.batch_size}-sample request "
        f"(best of {args.repeats} x {args.rounds * count}), {samples / 1000:,.0f}k samples/CPU-s"
    )
    federated = len(relay.federate) if relay.federate is not None else 0
    print(
        f"flux objects {relay.pipeline.flux.stats.objects_tracked} of {spec.flux_series}, "
        f"federate series {federated}"
        + (f", spool synchronous: {args.spool}" if args.spool else "")
    )
    if spool_dir is not None:
        if relay.spool is not None:
            relay.spool.close()
        spool_dir.cleanup()


if __name__ == "__main__":
    main()
