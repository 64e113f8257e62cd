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
       .venv/bin/python -m bench.inprocess --workload fleet --objects 100000 --flux-share 0.5
           # N Flux objects refreshed per 30 s round (bench/fleet.py): samples/CPU-s and RSS
       .venv/bin/python -m bench.inprocess --workload fleet --objects 10000 --memory --rounds 3
           # what the relay holds per Flux object, by the line that allocated it
A profile of the same: py-spy record --format raw -o out.raw -- .venv/bin/python -m bench.inprocess
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
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

from .fleet import Fleet

WORKLOADS = {"cluster": 0.001, "flux-heavy": 0.05}
FLEET = "fleet"
WARM_ROUNDS = 2  # fleet: rounds not timed (see fleet())


def make_relay(
    spool: Path | None = None, synchronous: str = "full", federate_max_series: int | None = None
) -> Relay:
    """The relay as ``bench/run.py`` runs it: the embedded default config, one remote_write;
    with ``spool``, a spool in that directory; ``federate.max_series`` if given."""
    text = config_module.default_config_text().replace(
        "remote_write: []", "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
    )
    if spool is not None:
        text += f"spool: {{data_dir: '{spool}', synchronous: {synchronous}}}\n"
    if federate_max_series is not None:
        text = text.replace("\nfederate:\n", f"\nfederate:\n  max_series: {federate_max_series}\n")
        if text.count("max_series:") > 1:  # the default's own line: drop it
            lines = text.splitlines(keepends=True)
            default = [i for i, line in enumerate(lines) if line.strip().startswith("max_series:")]
            del lines[default[1]]
            text = "".join(lines)
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


def fleet_memory(objects: int, flux_share: float, rounds: int, lines: int = 25) -> None:
    """What the relay holds per Flux object on the fleet workload, by the line that allocated it.

    Why: the per-object breakdown in docs/performance.md ("Memory") is this. ``tracemalloc``
    from just before the relay is made (the workload's bytes are left out), ``rounds`` rounds
    (the first two meet every object and take the steady shortcut once), then the lines that
    hold the most, in bytes and blocks per object.
    """
    workload = Fleet(objects, flux_share)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    relay = make_relay()
    for round_ in range(rounds):
        for index in range(len(workload.requests)):
            write(relay, workload.body(index, round_), workload.timestamp(round_))
    gc.collect()
    stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in stats)
    print(
        f"fleet objects={objects} flux_share={flux_share}: the relay holds "
        f"{held / 2**20:.1f} MiB after {rounds} rounds, {held / objects:,.0f} bytes per object"
    )
    root = str(Path(__file__).resolve().parent.parent)
    for stat in stats[:lines]:
        frame = stat.traceback[0]
        print(
            f"{stat.size_diff / objects:8,.0f} B {stat.count_diff / objects:6.2f} blocks  "
            f"{frame.filename.removeprefix(root + '/')}:{frame.lineno}"
        )
    del relay


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _give_back_freed_memory() -> None:
    """Collect, then ask glibc to return its free pages (``malloc_trim``), where it can."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def fleet(
    objects: int, flux_share: float, rounds: int, federate_max_series: int | None = None
) -> None:
    """The fleet workload (``bench/fleet.py``): CPU per sample and memory at ``objects``.

    Round 0 meets every object and label set (its CPU per object is printed apart), round 1 is
    the first the Flux rules' steady shortcut takes (the federate store then remembers each
    object's output entries); neither counts in the rate. Then ``rounds`` rounds are timed,
    the CPU time of the writes alone (making each body is not counted). RSS is the process's:
    the relay's share is what it grew by from just before the relay was made (the workload's
    own bytes were held already, what building it freed given back first); peak is ``VmHWM``
    over the whole run, workload generation included.
    """
    made = time.monotonic()
    workload = Fleet(objects, flux_share)
    built = time.monotonic() - made
    _give_back_freed_memory()  # what building the workload freed is not the relay's to reuse
    before = _status_kib("VmRSS")
    relay = make_relay(federate_max_series=federate_max_series)
    count = len(workload.requests)
    first: list[float] = []  # round 0's writes: every Flux object and label set new
    for round_ in range(WARM_ROUNDS):
        for index in range(count):
            body = workload.body(index, round_)
            started = time.process_time()
            write(relay, body, workload.timestamp(round_))
            if round_ == 0:
                first.append(time.process_time() - started)
    cpu = 0.0
    for round_ in range(WARM_ROUNDS, WARM_ROUNDS + rounds):
        now = workload.timestamp(round_)
        for index in range(count):
            body = workload.body(index, round_)
            started = time.process_time()
            write(relay, body, now)
            cpu += time.process_time() - started
    rss, peak = _status_kib("VmRSS"), _status_kib("VmHWM")
    stats = relay.pipeline.flux.stats
    federated = len(relay.federate) if relay.federate is not None else 0
    print(
        f"fleet objects={objects} flux_share={flux_share}: "
        f"{workload.samples * rounds / cpu / 1000:,.0f}k samples/CPU-s over {rounds} rounds of "
        f"{count} requests ({workload.samples} samples per round); "
        f"RSS {rss / 1024:.0f} MiB, relay's share {(rss - before) / 1024:.0f} MiB "
        f"({(rss - before) / objects:.2f} KiB per object), peak {peak / 1024:.0f} MiB; "
        f"tracked {stats.objects_tracked}, refused {stats.objects_refused}, "
        f"federate series {federated}; workload built in {built:.1f} s"
    )
    # Round 0 holds the event loop longest: each object met costs its classification, its
    # outputs' encodings and its federate entries once (docs/performance.md, "Fleet scale").
    print(
        f"  round 0 (every object new): {sum(first) * 1e6 / objects:.0f} us of CPU per object, "
        f"{sum(first) / len(first) * 1e3:.1f} ms a request on average, "
        f"the longest {max(first) * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=[*sorted(WORKLOADS), FLEET], default="flux-heavy")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of every batch, timed")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--memory", action="store_true", help="report state memory, not time")
    parser.add_argument(
        "--spool",
        choices=("full", "normal"),
        help="with a spool in a temporary directory, at this spool.synchronous",
    )
    parser.add_argument("--objects", type=int, default=1000, help="fleet: Flux objects")
    parser.add_argument(
        "--flux-share", type=float, default=0.05, help="fleet: Flux samples' share of a round"
    )
    parser.add_argument(
        "--federate-max-series", type=int, help="fleet: this federate.max_series, not the default"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `gotk-relay serve` does
    if args.workload == FLEET:
        if args.memory:
            fleet_memory(args.objects, args.flux_share, args.rounds)
            return
        fleet(args.objects, args.flux_share, args.rounds, args.federate_max_series)
        return
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
