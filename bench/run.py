"""Benchmark runner: gotk-relay against vmagent, same workload, same machine, same run.

    .venv/bin/python -m bench.run                  # everything, about 7½ minutes
    .venv/bin/python -m bench.run --smoke          # seconds; correctness only
    .venv/bin/python -m bench.run --duration 20 --workloads flux-heavy --json /tmp/x.json

(from the repository root: ``bench`` is a package importing ``tests.support``; ``python
bench/run.py`` works too, it runs itself again as the module).

For each workload (``cluster``: 0.1 % Flux series; ``flux-heavy``: 5 %) and each system
(``gotk-relay`` with its default config plus one remote_write to the sink; ``vmagent``
pass-through; ``vmagent-relabel``, vmagent with the best 1:1 rename a relabeling can do) a fresh
sink and a fresh system are started, and:

1. warm-up: a short push, drained and checked, so lazy imports, caches and connection set-up
   stay out of the numbers;
2. throughput: the loader pushes as fast as the system answers for ``--duration`` seconds →
   accepted samples/s, and samples per CPU-second of the system's processes (utime+stime from
   ``/proc/<pid>/stat``, from the phase's start until the sink has received everything the phase
   produced, so the forwarding work after the last 2xx is paid for too);
3. latency: a push at 50 % of that system's own max rate → p50/p99 of the request latency the
   loader sees (the sink, on the loader's core, yields it from here on: ``nice 10``);
4. peak RSS (``VmHWM``) of the system over the whole run, and over the latency phase alone
   (the high-water mark is reset before it through ``/proc/<pid>/clear_refs``): issue 6 sets its
   memory goal at 50% of the maximum rate;
5. delivery: after each phase, what the sink counted must equal what the loader had acked, times
   what the system adds (gotk-relay adds four legacy series per ``gotk_resource_info`` sample);
6. the latency floor: the latency phase alternates 2 s slices between the system and a bare
   receiver (a second sink, alone on the system's core) pushed at the same rate, each system
   slice drained before the receiver's: what the loader, the kernel and this machine's stalls
   cost with no system in between, taken in the same seconds, so ``p99 - bare p99`` is what the
   system adds (issue 6's latency goal); the run ends with the goals judged (issue 16's
   throughput ratios, issue 6's others).

Issue 17's configurations (``--variants``, see :mod:`variants`: write relabel drop, a global
rewrite, 4 shards, tenants, remote write 2.0, Datadog and OTLP destinations) then run on each
workload with a warm-up and a throughput phase each, the relay and, where it has the same
feature, vmagent; every delivery is counted per destination and must be exact; the
"configurations" table and issue 17's goals compare them with vmagent and with the relay's own
plain figure.

Then gotk-relay alone takes 50k distinct pass-through series (2 rounds) and 1M (20 clusters ×
the same 50k, 1 round), to show how its memory grows with the number of distinct series; each
run is bounded by ``memory_timeout`` and reports how many series it got through.

The system under test is pinned to core 0, the loader (this process) and the sink to core 1,
before they exec, so Go's runtime sees one CPU as Python's does. Other processes on the machine
are not controlled: the report records the load average before the run.

This file is the command line and the order of the run; the work is in :mod:`settings` (the
knobs), :mod:`processes` (starting, pinning and stopping each system; CPU and RSS from
``/proc``), :mod:`phases` (each measured phase), :mod:`results` (what they found, typed) and
:mod:`report` (the comparisons, the goals, the tables and the JSON's shape).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: bench/ and tests/support are packages of the repository, importable when
    # its root is, so run again as ``-m bench.run`` with the root on PYTHONPATH.
    _path = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    _env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, _path))}
    os.execve(sys.executable, [sys.executable, "-m", "bench.run", *sys.argv[1:]], _env)

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import json
import tempfile
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Final

import aiohttp

from bench import phases, processes, report, variants
from bench.results import MemoryRow, Report
from bench.settings import SMOKE, SYSTEMS, WORKLOADS, Settings
from bench.variants import VARIANTS
from tests.support import loadgen

DEFAULT_JSON: Final = processes.REPO / "bench" / "results" / "latest.json"


def _names(
    parser: argparse.ArgumentParser, value: str, known: Iterable[str], what: str
) -> tuple[str, ...]:
    """A comma-separated selection of ``known``; anything else, or nothing, is refused."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = set(names).difference(known)
    if unknown or not names:
        parser.error(f"unknown {what}(s) {sorted(unknown)}; choose from {list(known)}")
    return names


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path, bool]:
    parser = argparse.ArgumentParser(
        description="Benchmark gotk-relay against vmagent (see bench/README.md)."
    )
    parser.add_argument("--duration", type=float, help="seconds per measured phase (8)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of the warm-up push before each system's phases (1)"
    )
    parser.add_argument(
        "--latency-slice",
        type=float,
        help="seconds per system/bare-receiver alternation in the latency phase (2)",
    )
    parser.add_argument(
        "--workloads", help=f"comma-separated, of {','.join(WORKLOADS)} (default: all)"
    )
    parser.add_argument("--systems", help=f"comma-separated, of {','.join(SYSTEMS)} (all)")
    parser.add_argument(
        "--variants", help=f"comma-separated configurations, of {','.join(VARIANTS)} (all)"
    )
    parser.add_argument("--smoke", action="store_true", help="seconds in total, small counts")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"({DEFAULT_JSON})")
    parser.add_argument("--connections", type=int, help="loader connections (4)")
    parser.add_argument("--series", type=int, help="distinct series per workload (50000)")
    parser.add_argument("--full-verify", action="store_true", help="sink checks every sample")
    parser.add_argument("--skip-memory", action="store_true", help="no memory-scaling runs")
    parser.add_argument(
        "--memory-timeout", type=float, help="seconds per memory-scaling run at most (80)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument(
        "--relay-validation",
        choices=["full", "framing"],
        help="override gotk-relay's receiver.validation (default: its own default, full)",
    )
    parser.add_argument(
        "--relay-workers",
        type=int,
        help="gotk-relay's receiver.workers: processes taking connections (default 1)",
    )
    parser.add_argument(
        "--relay-cores",
        help=(
            "comma-separated cores to pin gotk-relay (all its processes) to "
            f"(default {processes.SUT_CORE})"
        ),
    )
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else Settings()
    changes: dict[str, Any] = {}
    if args.duration is not None:
        changes["duration"] = args.duration
    if args.warmup is not None:
        changes["warmup"] = args.warmup
    if args.latency_slice is not None:
        if not args.latency_slice > 0:
            parser.error("--latency-slice must be positive")
        changes["latency_slice"] = args.latency_slice
    if args.workloads:
        changes["workloads"] = _names(parser, args.workloads, WORKLOADS, "workload")
    if args.systems:
        changes["systems"] = _names(parser, args.systems, SYSTEMS, "system")
    if args.variants:
        names = _names(parser, args.variants, VARIANTS, "variant")
        changes["variants"] = tuple(v for v in VARIANTS if v in names)  # the canonical order
    if args.connections is not None:
        changes["connections"] = args.connections
    if args.series is not None:
        changes["series"] = args.series
    if args.full_verify:
        changes["full_verify"] = True
    if args.memory_timeout is not None:
        changes["memory_timeout"] = args.memory_timeout
    if args.relay_validation:
        changes["relay_validation"] = args.relay_validation
    if args.relay_workers is not None:
        if not 1 <= args.relay_workers <= 64:
            parser.error("--relay-workers must be within 1..64")
        changes["relay_workers"] = args.relay_workers
    if args.relay_cores:
        try:
            cores = tuple(int(c) for c in args.relay_cores.split(",") if c.strip())
        except ValueError:
            parser.error(f"--relay-cores {args.relay_cores!r}: expected e.g. 0,1")
        available = os.sched_getaffinity(0)
        if not cores or not set(cores) <= available:
            parser.error(
                f"--relay-cores {args.relay_cores!r}: cores available: {sorted(available)}"
            )
        changes["relay_cores"] = cores
    if args.no_pin or (os.cpu_count() or 1) < 2:
        changes["pinned"] = False
    settings = dataclasses.replace(base, **changes)
    return settings, args.json, args.skip_memory


async def run(settings: Settings, skip_memory: bool) -> Report:
    """Every system on every workload and configuration, then the memory runs; judged."""
    started = time.monotonic()
    machine = processes.machine_info()
    vmagent = processes.ensure_vmagent()
    systems = [s for s in settings.systems if s == "gotk-relay" or vmagent]
    if len(systems) < len(settings.systems):
        print("vmagent not found: its rows are missing", file=sys.stderr)
    ts_base = int(time.time() * 1000)
    workloads = []
    for name in settings.workloads:
        spec = loadgen.WorkloadSpec(
            name,
            series=settings.series,
            batch_size=settings.batch_size,
            flux_fraction=WORKLOADS[name],
            ts_base_ms=ts_base,
        )
        workload = loadgen.Workload(spec, keep_series=True)
        loadgen.check_encoding(workload)
        workloads.append(workload)
    gc.collect()
    gc.freeze()  # the workloads' objects never change: keep them out of every collection
    results = []
    memory: list[MemoryRow] = []
    with tempfile.TemporaryDirectory(prefix="gotk-bench-") as tmp:
        async with aiohttp.ClientSession() as session:
            for workload in workloads:
                for variant in settings.variants:
                    for name in variants.systems_of(variant, systems):
                        where = f"{workload.spec.name}-{variant}-{name}"
                        workdir = Path(tmp) / where
                        workdir.mkdir()
                        print(
                            f"# {name} ({variant}) on {workload.spec.name} ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        counts = phases.batch_counts(workload, f"{variant}/{name}")
                        results.append(
                            await phases.measure_system(
                                name, workload, settings, session, workdir, variant, counts
                            )
                        )
            if not skip_memory:
                print("# gotk-relay memory scaling ...", file=sys.stderr, flush=True)
                memory = await phases.memory_scaling(settings, session, Path(tmp))
    configurations = report.configuration_rows(results)
    return Report(
        date=dt.datetime.now(dt.UTC),
        machine=machine,
        versions=processes.versions(vmagent),
        settings=settings,
        workloads=[describe(w) for w in workloads],
        results=results,
        ratios=report.ratio_rows(results),
        configurations=configurations,
        variants={
            name: {"summary": v.summary, "vmagent": v.vmagent}
            for name, v in VARIANTS.items()
            if name in settings.variants
        },
        memory_scaling=memory,
        goals=report.goals(results, memory) + report.configuration_goals(configurations),
        elapsed_s=round(time.monotonic() - started, 1),
        load_average_after=os.getloadavg(),
    )


def describe(workload: loadgen.Workload) -> dict[str, object]:
    """A workload's spec and sizes, for the JSON."""
    batches = workload.batches
    return {
        **workload.spec.to_json(),
        "flux_series": workload.flux_per_round,
        "batches": len(batches),
        "mean_request_bytes": round(workload.mean_body_bytes),
        "mean_raw_bytes": round(sum(b.raw_size for b in batches) / len(batches)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path, skip_memory = parse_args(argv)
    if settings.pinned:
        os.sched_setaffinity(0, {processes.LOAD_CORE})
    done = run_loop(run(settings, skip_memory))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(done.to_json(), indent=2) + "\n")
    for line in report.lines(done):
        print(line)
    print()
    print(f"delivered == expected everywhere: {done.ok}; took {done.elapsed_s}s")
    print(f"JSON: {json_path}")
    return 0 if done.ok else 1


def run_loop(coro: Coroutine[Any, Any, Report]) -> Report:
    """uvloop when available (lower per-request overhead for the loader), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
