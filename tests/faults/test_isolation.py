"""One bad destination must not slow the others: per-destination queues and senders.

Three destinations behind one relay under ~10 s of steady load (50 series every 100 ms): one
never answers, one answers 500 for 5 s then recovers, one is healthy. The healthy one must
receive every sample at the rate it is sent and within a fraction of a second of its ack; the
flaky one must receive everything once it recovers. Run with in-memory queues and with the
spool, whose shared database must not couple the destinations either; the two variants run at
once (separate relays and receivers) to halve the wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.fault_scenarios import IsolationResult, isolation_scenario

# Asserts the healthy destination's throughput and p99 latency.
pytestmark = pytest.mark.alone

MAX_LATENCY_S = 1.0  # healthy: p99 of ack → arrival; normal operation shows ~10 ms
MIN_RATE_RATIO = 0.9  # healthy arrivals per second during the load ÷ acked per second
VARIANTS = {"memory-queue": False, "spool": True}


@pytest.fixture(scope="module")
def isolation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, IsolationResult]:
    base = tmp_path_factory.mktemp("isolation")

    async def both() -> list[IsolationResult]:
        runs = (isolation_scenario(base / k, spool=v) for k, v in VARIANTS.items())
        return list(await asyncio.gather(*runs))

    return dict(zip(VARIANTS, asyncio.run(both()), strict=True))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_hanging_and_a_failing_destination_do_not_slow_the_healthy_one(
    isolation: dict[str, IsolationResult], report: Callable[[str], None], variant: str
) -> None:
    result = isolation[variant]
    for acc in (result.healthy, result.flaky):
        report(acc.line())
    detail = (
        f"{result.healthy.line()}\n{result.flaky.line()}\n{result.hanging.line()}\n"
        f"loader: {result.loader}\n"
        f"sent {result.sent_per_s:.0f}/s, healthy received {result.healthy_per_s:.0f}/s over "
        f"{result.load_s:.1f}s; healthy missing at load end={result.healthy_missing_at_load_end}; "
        f"healthy latency p50={result.healthy_latency_p50_s * 1000:.1f}ms "
        f"p99={result.healthy_latency_p99_s * 1000:.1f}ms "
        f"max={result.healthy_latency_max_s * 1000:.1f}ms; "
        f"flaky missing after wait={result.flaky_missing_after_wait}"
    )
    print(detail)
    assert set(result.statuses) <= {"200", "204"}, (
        "the relay pushed back while only some destinations were slow\n" + detail
    )
    healthy = result.healthy
    assert healthy.acked > 0 and healthy.lost == 0 and healthy.out_of_order == 0, detail
    assert result.healthy_per_s >= MIN_RATE_RATIO * result.sent_per_s, detail
    assert result.healthy_latency_p99_s <= MAX_LATENCY_S, detail
    flaky = result.flaky
    assert flaky.lost == 0 and flaky.out_of_order == 0, detail
    assert healthy.corrupt == 0 and flaky.corrupt == 0, detail
