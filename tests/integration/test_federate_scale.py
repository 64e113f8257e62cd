"""/federate at fleet scale, through the app: the store's bound follows ``flux.max_objects``
(``check-config`` warns when a set one is short), a refused series is counted once and costs no
selector on later writes, the stream keeps ``/federate``'s credentials and bounds, and the event
loop answers other requests while a large store is streamed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest
import yaml

from gotk_relay.cli import check_config
from gotk_relay.config import load_text
from gotk_relay.destinations.federate import STREAM_CHUNK, Query
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.server import FEDERATING
from tests.support.harness import (
    RelayClient,
    eventually,
    gauge_batch,
    metric_value,
    relay_client,
    rw_body,
)

# The samples here are dated 1970: no lookback leaves them out (test_federate_lookback.py).
ANY_AGE: Final = "100y"


def _config(**federate: object) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "federate": {"match": ['{__name__=~"gotk_.*"}'], "lookback_delta": ANY_AGE, **federate},
    }


async def _write(client: RelayClient, batch: Batch) -> None:
    body, headers = rw_body(batch)
    response = await client.post("/api/v1/write", data=body, headers=headers)
    assert response.status == 204, await response.text()


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("{}", 5 * 100_000 + 10_000),
        ("flux: {max_objects: 1000}", 5 * 1000 + 10_000),
        ("flux: {max_objects: 1000}\nfederate: {max_series: 42}", 42),
    ],
    ids=["default", "follows-max-objects", "explicit-wins"],
)
async def test_the_store_bound_follows_flux_max_objects(text: str, bound: int) -> None:
    async with relay_client(text) as (_, relay):
        assert relay.federate is not None
        assert relay.federate.max_series == bound


async def test_a_reload_that_changes_max_objects_moves_the_bound_and_keeps_the_store() -> None:
    async with relay_client("flux: {max_objects: 10}") as (client, relay):
        await _write(client, _objects(3, 1000))
        store = relay.federate
        assert store is not None and store.max_series == 5 * 10 + 10_000
        relay.reload(load_text("flux: {max_objects: 20}", "<test>"))
        assert relay.federate is store  # the same store, with what it holds
        assert store.max_series == 5 * 20 + 10_000
        assert len(store) == 3


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        (
            {
                "timeout": "11s",
                "max_selectors": 8,
                "max_concurrent_requests": 2,
                "lookback_delta": "99y",
            },
            True,
        ),
        ({"max_series": 20000}, True),
        ({"match": ['{__name__=~"gotk_o.*"}']}, False),
    ],
    ids=["per-request-keys", "max-series", "match"],
)
async def test_a_reload_keeps_the_store_unless_what_it_keeps_changes(
    change: dict[str, object], kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The store keeps each series' newest sample, which a reload cannot bring back: only a
    change of what it keeps (``match``) starts it empty, and that is logged."""
    async with relay_client(_config()) as (client, relay):
        await _write(client, _objects(3, 1000))
        store = relay.federate
        assert store is not None and len(store) == 3
        new = load_text(yaml.safe_dump(_config(**change)), "<test>")
        with caplog.at_level("WARNING"):
            relay.reload(new)
        assert relay.federate is not None
        assert (relay.federate is store) is kept
        assert len(relay.federate) == (3 if kept else 0)
        assert relay.config.federate == new.federate
        assert any("starts empty" in r.getMessage() for r in caplog.records) is not kept
        served = await client.get("/federate", params={"match[]": '{__name__=~"gotk_o.*"}'})
        lines = (await served.text()).splitlines()
        assert len([line for line in lines if line.startswith("gotk_o")]) == (3 if kept else 0)


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        ("flux: {max_objects: 1000}\nfederate: {max_series: 4999}\n", True),
        ("flux: {max_objects: 1000}\nfederate: {max_series: 5000}\n", False),
        ("flux: {max_objects: 1000}\n", False),
        ("flux: {mode: 'off', max_objects: 1000}\nfederate: {max_series: 10}\n", False),
        ("flux: {max_objects: 1000}\nfederate: {enabled: false, max_series: 10}\n", False),
    ],
    ids=["short", "exact", "unset", "flux-off", "federate-off"],
)
def test_check_config_warns_when_max_series_cannot_hold_max_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, warned: bool
) -> None:
    path = tmp_path / "relay.yml"
    path.write_text(text)
    assert check_config([str(path)]) == 0
    out = capsys.readouterr().out
    assert "SUCCESS" in out
    warning = (
        "  WARNING: federate.max_series: 4999 holds the series of 999 Flux objects, but "
        "flux.max_objects tracks 1000, which need 5000"
    )
    assert (warning in out) is warned, out
    assert ("WARNING" in out) is warned
    warnings = load_text(text, "<test>").warnings()
    assert [f"  WARNING: {w}" for w in warnings] == [
        line for line in out.splitlines() if "WARNING" in line
    ]


def _objects(count: int, ts: int) -> Batch:
    return gauge_batch([f"gotk_o{i}" for i in range(count)], ts, job="j")


async def test_a_refused_series_is_counted_once_and_matched_no_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with relay_client(_config(max_series=5)) as (client, relay):
        store = relay.federate
        assert store is not None
        await _write(client, _objects(20, 1000))
        checks = store.selector_checks
        for ts in range(2000, 7000, 1000):
            await _write(client, _objects(20, ts))
        # The 15 refused series cost no selector on later writes.
        assert store.selector_checks == checks
        metrics = await (await client.get("/metrics")).text()
        dropped = metric_value(
            metrics, "gotk_relay_samples_dropped_total", destination="federate", reason="max_series"
        )
        assert dropped == 15  # distinct series, not samples (6 writes of them)
        text = await (await client.get("/federate")).text()
        assert text.count("gotk_o") == 10  # 5 series, a TYPE line each
        assert " 6000\n" in text  # the stored ones keep updating
    logged = [r for r in caplog.records if "federate store is full" in r.getMessage()]
    assert [(r.levelname, r.__dict__["destination"], r.__dict__["points"]) for r in logged] == [
        ("WARNING", "federate", 15)
    ]


async def test_federate_streams_under_its_credentials(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-f9")
    config = _config()
    config["receiver"] = {"auth": {"bearer_token_file": str(token)}}
    signed = {"Authorization": "Bearer s3cret-f9"}
    async with relay_client(config) as (client, relay):
        body, headers = rw_body(_objects(3, 1000))
        assert (
            await client.post("/api/v1/write", data=body, headers=headers | signed)
        ).status == 204
        anonymous = await client.get("/federate")
        assert anonymous.status == 401
        assert "gotk_o" not in await anonymous.text()
        answer = await client.get("/federate", headers=signed)
        assert answer.status == 200
        # the text format the body is in (prometheus-client's CONTENT_TYPE_LATEST says 1.0.0)
        assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert relay.federate is not None
        assert await answer.text() == relay.federate.render()


# A 5,001-line render within a 300 ms federate.timeout.
@pytest.mark.alone
async def test_federate_timeout_before_and_after_the_first_piece() -> None:
    """Before any byte: 503 naming the key. Once streaming: the connection is cut, so the scraper
    sees a failed scrape, never a page that ends early but parses."""
    async with relay_client(_config(timeout="300ms")) as (client, relay):
        store = relay.federate
        assert store is not None
        many = gauge_batch([f"gotk_a{i:05d}" for i in range(5000)], 1000)
        await _write(client, many)
        assert (await client.get("/federate")).status == 200  # sorted once: no new series
        # A new series waits to be put in order behind the lock a render sorts under.
        await _write(client, gauge_batch(["gotk_b"], 1000))
        async with store._sorting:
            early = await client.get("/federate", params={"match[]": "gotk_b"})
            assert early.status == 503
            assert "/federate took longer than 0.3s (federate.timeout)" in await early.text()
            late = await client.get("/federate")  # 5000 lines of gotk_a* come first
            assert late.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await late.read()
        # The store is whole after the cut. A render is itself under the 300 ms timeout, which a
        # stall of a loaded machine can exceed (seen once in CI, a render taking ~30 ms): a
        # bounded retry, since what is asserted is the page, not how fast it came.
        text = ""
        for attempt in range(3):
            try:
                text = await (await client.get("/federate")).text()
                break
            except aiohttp.ClientPayloadError:
                if attempt == 2:
                    raise
        assert text == store.render()


def _large_store_batches(count: int, per_batch: int) -> list[Batch]:
    return [
        Batch(
            tuple(
                Series(
                    (("__name__", "gotk_reconcile_condition"), ("name", f"o{i:07d}")),
                    (Sample(1.0, 1000),),
                )
                for i in range(start, min(start + per_batch, count))
            )
        )
        for start in range(0, count, per_batch)
    ]


# Times the event loop's answers while a 500k-series store streams.
@pytest.mark.alone
@pytest.mark.slow
async def test_the_loop_answers_while_a_large_store_is_streamed() -> None:
    """500,000 series: a ping answers while /federate streams them (the render, first sort
    included, is made on the loop in pieces), and the loop never stalls for long."""
    count = 500_000
    async with relay_client(_config(max_series=count)) as (client, relay):
        store = relay.federate
        assert store is not None
        for batch in _large_store_batches(count, 50_000):
            store.update(batch)
        assert len(store) == count
        longest = 0.0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal longest
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                longest = max(longest, time.perf_counter() - before)

        watcher = asyncio.create_task(watch())
        query = {"match[]": "gotk_reconcile_condition"}
        streamed = asyncio.create_task(client.get("/federate", params=query))
        try:
            async with asyncio.timeout(60):
                # The first render puts the 500,000 new series in order, on the loop.
                while not store._sorting.locked():
                    await asyncio.sleep(0.001)
                ping = await client.get("/-/healthy")
                assert ping.status == 200
                assert not streamed.done()  # answered while the render goes on
                answer = await streamed
                size = len(await answer.read())
        finally:
            stop.set()
            await watcher
        assert answer.status == 200
        assert size > count * 40
        assert longest < 0.5, longest


async def test_a_scraper_that_disconnects_mid_stream_stops_the_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scraper that closes its connection after the first chunk of a large first render: the
    store's stream is closed a few pieces in (aiohttp cancels the handler), its slot
    (``max_concurrent_requests: 1``) is freed, no lock is left held, and the next render is
    whole and right."""
    count = 60_000
    pad = "x" * 200  # lines of ~250 bytes: 15 MB, more than the sockets' buffers hold
    batch = Batch(
        tuple(
            Series(
                (("__name__", f"gotk_{i % 3}"), ("name", f"o{i:06d}"), ("pad", pad)),
                (Sample(1.0, 1000),),
            )
            for i in range(count)
        )
    )
    config = _config(max_series=count, max_concurrent_requests=1)
    async with relay_client(config) as (client, relay):
        store = relay.federate
        assert store is not None
        store.update(batch)
        # The real stream, its pieces counted as the handler takes them.
        stream = store.stream
        taken: list[int] = []
        closed = asyncio.Event()

        async def counted(
            query: Query, chunk: int = STREAM_CHUNK, oldest: int | None = None
        ) -> AsyncIterator[bytes]:
            try:
                async for piece in stream(query, chunk, oldest):
                    taken.append(len(piece))
                    yield piece
            finally:
                closed.set()

        monkeypatch.setattr(store, "stream", counted)
        assert client.app is not None
        gate = client.app[FEDERATING]
        answer = await client.get("/federate")
        assert answer.status == 200
        assert await answer.content.readany()  # the first chunk
        answer.close()  # the scraper goes away mid-answer
        async with asyncio.timeout(10):
            await closed.wait()
        await eventually(lambda: gate.active == 0)
        assert not store._sorting.locked()
        # A whole render is count / STREAM_CHUNK pieces or more: this one stopped early.
        assert len(taken) < count // STREAM_CHUNK // 4, len(taken)
        monkeypatch.undo()
        again = await client.get("/federate")
        assert again.status == 200  # not 503: the one slot is free
        text = await again.text()
        assert text == store.render()
        assert text.count("\n") == count + 3  # every series, and a TYPE line per metric
