"""A destination down for over a minute under steady load, with and without the spool.

Both variants run at once (two relays, two receivers, one event loop) in a module-scoped
fixture, so the file costs one outage of wall time, not two.

- With the spool the relay keeps acking through the outage (a minute of 500 samples/s is a few
  MB on disk) and delivers all of it, in per-series order, when the destination returns.
- Without it the relay holds what its memory budget allows and then answers 503; the loader
  retries as Prometheus does, so nothing acked is lost either: the backlog is in the sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.fault_scenarios import OutageResult, outage_scenario

DOWN_S = 62.0  # the issue asks for at least 60 s


@pytest.fixture(scope="module")
def outages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OutageResult]:
    base = tmp_path_factory.mktemp("outage")

    async def both() -> list[OutageResult]:
        return list(
            await asyncio.gather(
                outage_scenario(base / "spool", spool=True, down_s=DOWN_S),
                outage_scenario(base / "memory", spool=False, down_s=DOWN_S),
            )
        )

    spool, memory = asyncio.run(both())
    return {"spool": spool, "memory": memory}


def _detail(result: OutageResult) -> str:
    acc = result.accounting
    return (
        f"{acc.line()} corrupt={acc.corrupt}\nloader: {result.loader}\n"
        f"destination down {result.down_s:.1f}s; receiver answers {result.receiver_answers}; "
        f"still missing after the drain wait={result.missing_after_wait}"
    )


def test_with_spool_a_minute_long_outage_is_absorbed_and_delivered(
    outages: dict[str, OutageResult], report: Callable[[str], None]
) -> None:
    result = outages["spool"]
    acc = result.accounting
    report(f"{acc.line()} [down {result.down_s:.0f}s]")
    detail = _detail(result)
    assert result.down_s >= 60, detail
    assert acc.acked > 0 and result.refused == 0 and result.given_up == 0, detail
    assert set(result.statuses) <= {"200", "204"}, (
        "the spool should have taken everything\n" + detail
    )
    assert acc.lost == 0, detail
    assert acc.out_of_order == 0, detail
    assert acc.corrupt == 0, detail


def test_without_spool_the_relay_pushes_back_and_loses_nothing_acked(
    outages: dict[str, OutageResult], report: Callable[[str], None]
) -> None:
    result = outages["memory"]
    acc = result.accounting
    report(f"{acc.line()} [down {result.down_s:.0f}s, 503s={result.statuses.get('503', 0)}]")
    detail = _detail(result)
    assert result.down_s >= 60, detail
    assert result.statuses.get("503", 0) > 0, "a full memory budget must answer 503\n" + detail
    assert acc.acked > 0, detail
    assert acc.lost == 0, detail
    assert acc.out_of_order == 0, detail
    assert acc.corrupt == 0, detail
