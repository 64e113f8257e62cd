"""Run the relay's fault scenarios and print one accounting line per scenario.

    .venv/bin/python -m bench.faults [--only crash,outage,isolation] [--outage-seconds 62]
                                     [--kills 6] [--seed N] [-v]

Scenarios (the same code ``tests/faults`` asserts on, see ``tests/support/fault_scenarios.py``):

- ``crash``: kill -9 the relay at seeded-random points under load, restart on the same spool;
- ``outage-spool`` / ``outage-memory``: the destination is down for a minute under steady load,
  with the spool and with only the memory budget (run concurrently);
- ``isolation-*/healthy`` and ``isolation-*/flaky``: one destination hangs, one fails then
  recovers, one is healthy; with in-memory queues and with the spool.

Each line reads ``scenario acked=… delivered=… duplicated=… lost=… out_of_order=…`` (see
``fault_load.Accounting``). ``-v`` adds the loader's answers and timings on stderr. The exit
status is 1 when any scenario lost, reordered or corrupted an acked sample, so the script can
gate a CI job; it takes about 2 minutes with the default one-minute outage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.support import fault_scenarios as scenarios
from tests.support.fault_load import Accounting

SCENARIOS = ("crash", "outage", "isolation")


def _print(acc: Accounting, extra: str, verbose: bool) -> None:
    print(acc.line(), flush=True)
    if verbose:
        print(f"  {extra}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, workdir: Path) -> list[Accounting]:
    done: list[Accounting] = []
    if "crash" in args.only:
        crash = await scenarios.crash_scenario(workdir / "crash", seed=args.seed, kills=args.kills)
        extra = f"kills={crash.kills} modes={crash.modes} {crash.loader} {crash.elapsed_s:.1f}s"
        _print(crash.accounting, extra, args.verbose)
        done.append(crash.accounting)
    if "outage" in args.only:
        outages = await asyncio.gather(
            scenarios.outage_scenario(workdir / "o-spool", spool=True, down_s=args.outage_seconds),
            scenarios.outage_scenario(workdir / "o-mem", spool=False, down_s=args.outage_seconds),
        )
        for outage in outages:
            _print(outage.accounting, f"down {outage.down_s:.1f}s {outage.loader}", args.verbose)
            done.append(outage.accounting)
    if "isolation" in args.only:
        for spool in (False, True):
            iso = await scenarios.isolation_scenario(workdir / f"iso-{spool}", spool=spool)
            extra = (
                f"sent {iso.sent_per_s:.0f}/s healthy {iso.healthy_per_s:.0f}/s "
                f"p99 {iso.healthy_latency_p99_s * 1000:.1f}ms {iso.loader}"
            )
            _print(iso.healthy, extra, args.verbose)
            _print(iso.flaky, f"missing after wait={iso.flaky_missing_after_wait}", args.verbose)
            done.append(iso.healthy)
            done.append(iso.flaky)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--outage-seconds", type=float, default=62.0)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gotk-faults-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    if args.verbose:
        print(f"total {time.monotonic() - started:.1f}s", file=sys.stderr)
    bad = [a for a in results if a.lost or a.out_of_order or a.corrupt]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
