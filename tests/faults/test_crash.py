"""kill -9 under load: every sample the relay acked reaches the destination, in order.

The spool's promise is that a 2xx means "on disk for every destination". The only way to test
a promise about crashes is to crash: SIGKILL (no shutdown hook, no flush) at seeded-random
points of a steady load, restart on the same data dir and port, and compare what the loader
was told (2xx) with what the receiver got. Resends are allowed (a crash between a delivery and
the spool delete repeats it; remote-write receivers are idempotent), so duplicates are counted
and shown, not failed; loss and reordering fail.

Both ``spool.synchronous`` settings must survive a killed process (``normal`` only gives up
power-loss safety, which a SIGKILL does not test). The two run at once, each with its own relay
and receiver, to halve the wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.fault_scenarios import CrashResult, crash_scenario

SEED = 20261125
KILLS = 6
MODES = ["full", "normal"]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrashResult]:
    base = tmp_path_factory.mktemp("crash")

    async def both() -> list[CrashResult]:
        runs = (crash_scenario(base / m, seed=SEED, kills=KILLS, synchronous=m) for m in MODES)
        return list(await asyncio.gather(*runs))

    return dict(zip(MODES, asyncio.run(both()), strict=True))


@pytest.mark.parametrize("synchronous", MODES, ids=[f"sync-{m}" for m in MODES])
def test_kill_9_under_load_loses_no_acked_sample(
    crashes: dict[str, CrashResult], report: Callable[[str], None], synchronous: str
) -> None:
    result = crashes[synchronous]
    acc = result.accounting
    report(f"{acc.line()} [spool.synchronous={synchronous} kills={result.kills}]")
    detail = (
        f"{acc.line()} corrupt={acc.corrupt}\nloader: {result.loader}\n"
        f"kills={result.kills} receiver modes per life={result.modes} "
        f"still missing after the drain wait={result.missing_after_wait} "
        f"elapsed={result.elapsed_s:.1f}s\n"
        f"first reorderings: {result.out_of_order_examples}"
    )
    assert result.kills >= 5, detail
    assert acc.acked > 0, detail
    assert acc.lost == 0, "acked samples never reached the destination\n" + detail
    assert acc.out_of_order == 0, "a series' samples arrived out of order\n" + detail
    assert acc.corrupt == 0, "samples arrived with a wrong value or identity\n" + detail
    assert f"duplicated={acc.duplicated}" in acc.line(), detail  # counted and reported
