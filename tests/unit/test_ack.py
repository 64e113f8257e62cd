"""delivery.ack: one request's wait for its destinations (receiver.acknowledge: delivered)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.delivery.ack import DELIVERED, Ack, Verdict


@given(st.lists(st.sampled_from(["answered", "failed"]), min_size=1, max_size=12))
def test_delivered_only_when_every_entry_was_answered_and_none_failed(events: list[str]) -> None:
    async def run() -> Verdict:
        ack = Ack()
        ack.pending = len(events)
        for index, event in enumerate(events):
            if event == "answered":
                ack.answered()
            else:
                ack.failed(f"d{index}", "http_500", float(index))
        return await ack.wait(1.0)

    verdict = asyncio.run(run())
    if "failed" in events:
        first = events.index("failed")
        assert verdict == Verdict(False, f"d{first}", "http_500", float(first))  # the first wins
    else:
        assert verdict == DELIVERED


@pytest.mark.parametrize("answered", [0, 1, 2], ids=["none", "one-of-three", "two-of-three"])
async def test_the_wait_ends_with_timeout_while_entries_are_unanswered(answered: int) -> None:
    ack = Ack()
    ack.pending = 3
    for _ in range(answered):
        ack.answered()
    assert not ack.settled
    assert await ack.wait(0.01) == Verdict(False, "", "timeout")
    assert ack.settled  # its entries not yet sent are skipped
    ack.answered()  # late news changes nothing
    assert await ack.wait(0.01) == Verdict(False, "", "timeout")


async def test_a_request_that_queued_nothing_is_delivered_at_once() -> None:
    assert await Ack().wait(0.01) == DELIVERED


async def test_a_cancelled_wait_settles_the_request() -> None:
    ack = Ack()
    ack.pending = 1
    waiting = asyncio.create_task(ack.wait(10.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ack.settled
