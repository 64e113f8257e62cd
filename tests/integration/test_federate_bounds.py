"""GET /federate bounded: selectors per request, requests at once, time, and off the write loop.

| bound                                | beyond it |
|--------------------------------------|-----------|
| `federate.max_selectors` `match[]`   | 400 naming the key |
| `federate.max_concurrent_requests`   | 503 naming the key (a slot is held until its render ends) |
| `federate.timeout`                   | 503 naming the key |

/federate is streamed as the loop makes it (the Flux pages render in one thread from a snapshot
the loop takes a chunk at a time); the answer is the same text ``FederateStore.render`` gives.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations.federate import FederateStore, render_snapshot
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.selectors import parse_selectors
from gotk_relay.server import CONTROLLER_PAGE, FEDERATE_THREAD, FEDERATING
from tests.support.harness import RelayClient, gauge_batch, relay_client, rw_body


def _config(**federate: object) -> dict[str, object]:
    # The samples here are dated 1970: no lookback leaves them out (test_federate_lookback.py).
    return {
        "flux": {"mode": "off"},
        "federate": {"match": ['{__name__=~".+"}'], "lookback_delta": "100y", **federate},
    }


async def _write(client: RelayClient, names: list[str]) -> None:
    body, headers = rw_body(gauge_batch(names, 1000, 2.5, job="j"))
    assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204


@pytest.mark.parametrize(("count", "status"), [(4, 200), (5, 400)], ids=["at-limit", "over"])
async def test_more_match_selectors_than_max_selectors_get_400(count: int, status: int) -> None:
    async with relay_client(_config(max_selectors=4)) as (client, _):
        await _write(client, ["a", "b"])
        query = [("match[]", f'{{__name__="m{i}"}}') for i in range(count - 1)] + [("match[]", "a")]
        response = await client.get("/federate", params=query)
        text = await response.text()
        assert response.status == status, text
        if status == 400:
            assert "5 match[] selectors; at most 4 are allowed (federate.max_selectors)" in text
        else:
            assert 'a{job="j"} 2.5 1000' in text


async def test_concurrency_and_time_bounds_hold_until_the_render_ends() -> None:
    async with relay_client(_config(max_concurrent_requests=1, timeout="300ms")) as (client, _):
        await _write(client, ["a"])
        # Keep the render thread busy, so the first request waits for it, holding its slot.
        release = threading.Event()
        executor = client.app[FEDERATE_THREAD].get()
        blocker = asyncio.get_running_loop().run_in_executor(executor, release.wait, 10)
        try:
            # A Flux page renders in the thread; /federate shares its slots.
            first = asyncio.create_task(client.get(CONTROLLER_PAGE))
            gate = client.app[FEDERATING]
            async with asyncio.timeout(5):
                while gate.active < 1:  # it took the slot
                    await asyncio.sleep(0.01)
            # Writes go on while a /federate waits for (or runs in) its thread.
            await _write(client, ["b"])
            second = await client.get("/federate")
            assert second.status == 503
            assert "federate.max_concurrent_requests" in await second.text()
            answer = await first
            assert answer.status == 503
            assert f"{CONTROLLER_PAGE} took longer than 0.3s (federate.timeout)" in (
                await answer.text()
            )
            # It stopped waiting, but its render has not run yet: the slot is still held.
            third = await client.get("/federate")
            assert "federate.max_concurrent_requests" in await third.text()
        finally:
            release.set()
            await blocker
        async with asyncio.timeout(5):  # the abandoned render ends, and frees the slot
            while (answer := await client.get("/federate")).status != 200:
                await asyncio.sleep(0.01)
        assert 'a{job="j"} 2.5 1000' in await answer.text()


async def test_an_invalid_selector_gets_400_and_frees_the_slot() -> None:
    async with relay_client(_config(max_concurrent_requests=1)) as (client, _):
        response = await client.get("/federate", params={"match[]": "up{"})
        assert response.status == 400
        assert "invalid series selector" in await response.text()
        assert (await client.get("/federate")).status == 200


async def test_the_answer_is_the_stores_render() -> None:
    async with relay_client(_config()) as (client, relay):
        await _write(client, [f"m{i}" for i in range(50)])
        assert relay.federate is not None
        for query, selectors in (({}, None), ({"match[]": "m1"}, parse_selectors(["m1"]))):
            answer = await client.get("/federate", params=query)
            assert await answer.text() == relay.federate.render(selectors)


NAMES = st.sampled_from(["a", "b", "c", "gotk_x"])


@settings(max_examples=50, deadline=None)
@given(
    series=st.lists(
        st.tuples(NAMES, st.sampled_from(["1", "2", "3"]), st.floats(allow_nan=False)),
        max_size=30,
    ),
    chunk=st.integers(1, 7),
    match=st.sampled_from([None, ["a"], ['{__name__=~"a|gotk_.*"}', '{l="2"}']]),
)
def test_a_snapshot_in_chunks_renders_as_the_store_does(
    series: list[tuple[str, str, float]], chunk: int, match: list[str] | None
) -> None:
    store = FederateStore(['{__name__=~".+"}'], 1000)
    store.update(
        Batch(
            tuple(
                Series((("__name__", n), ("l", v)), (Sample(x, 1000 + i),))
                for i, (n, v, x) in enumerate(series)
            )
        )
    )
    selectors = parse_selectors(match) if match else None
    snapshot = asyncio.run(store.snapshot(chunk))
    assert render_snapshot(snapshot, selectors) == store.render(selectors)
