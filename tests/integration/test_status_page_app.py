"""The status page through the real app: ``GET /`` and ``GET /status.json``.

A real relay app (aiohttp test server) with a real destination (a scripted receiver on
loopback) and real write requests: what the page shows is what the relay did. Protected by
``receiver.auth`` exactly as ``/federate`` is.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gotk_relay.model import Batch, Sample, Series, labels_from
from gotk_relay.server import STATUS
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    receivers,
    relay_client,
    rw_body,
)
from tests.support.status_page import ksm, parse

TOKEN = "status-token-8e41c2"


def _bearer(tmp_path: Path) -> dict[str, object]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return {
        "flux": {"mode": "legacy"},
        "receiver": {"auth": {"bearer_token_file": str(token_file)}},
    }


PATHS = ["/", "/status.json", "/federate"]


@pytest.mark.parametrize("path", PATHS, ids=["status-page", "status-json", "federate"])
async def test_credentials_as_federate_when_auth_is_on(tmp_path: Path, path: str) -> None:
    async with relay_client(_bearer(tmp_path)) as (client, _):
        anonymous = await client.get(path)
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.get(path, headers={"Authorization": "Bearer guess-1234"})
        assert wrong.status == 401
        signed = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert signed.status == 200, await signed.text()
        assert TOKEN not in await signed.text()


@pytest.mark.parametrize("path", PATHS, ids=["status-page", "status-json", "federate"])
async def test_open_when_auth_is_off(path: str) -> None:
    async with relay_client({"flux": {"mode": "legacy"}}) as (client, _):
        assert (await client.get(path)).status == 200


async def test_page_shows_what_the_relay_did() -> None:
    """A failing destination, the objects written, a refused request, the config."""
    now = int(time.time() * 1000)
    failing = ScriptedReceiver(default=Reply(500, body="store unavailable"))
    async with receivers(failing):
        config = {
            "flux": {"mode": "legacy"},
            "remote_write": [
                {
                    "name": "store",
                    "url": failing.url,
                    "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"},
                }
            ],
        }
        async with relay_client(config) as (client, relay):
            apps = ksm("apps", "team-a", ready="False")
            infra = ksm("<b>infra</b>", "team-b")
            body, headers = rw_body(
                Batch(tuple(Series(s.labels, (Sample(1.0, now),)) for s in (apps, infra)))
            )
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
            gzip = headers | {"Content-Encoding": "gzip"}
            assert (await client.post("/api/v1/write", data=body, headers=gzip)).status == 415
            await eventually(lambda: relay.destinations["store"].failing)

            page = await client.get("/")
            assert page.status == 200
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            text = await page.text()
            parsed = parse(text)
            assert parsed.cells[1].startswith("failing")
            assert "http_500: store unavailable" in parsed.cells[5]
            assert parsed.object_rows == 2
            objects = [parsed.cells[i : i + 6] for i in range(len(parsed.cells))]
            assert ["Kustomization", "team-a", "apps", "False", "false", "ksm"] in objects
            assert ["Kustomization", "team-b", "<b>infra</b>", "True", "false", "ksm"] in objects
            assert "<b>infra</b>" not in text  # printed as text, not markup
            refused = [c for c in parsed.cells if "unsupported Content-Encoding" in c]
            assert refused and "127.0.0.1" in refused[0]
            assert "name: store" in text  # the running configuration

            filtered = parse(await (await client.get("/?ready=False")).text())
            assert filtered.object_rows == 1

            data = json.loads(await (await client.get("/status.json?q=infra")).text())
            assert data["destinations"][0]["state"] == "failing"
            assert data["destinations"][0]["last_error"]["reason"] == "http_500"
            assert [r["name"] for r in data["flux_objects"]["rows"]] == ["<b>infra</b>"]
            assert data["refused"][0]["reason"] == "unsupported_encoding"

            plain = await client.get("/", headers={"Accept": "text/plain"})
            assert plain.headers["Content-Type"].startswith("text/plain")
            assert "destination store: failing" in await plain.text()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("per_page=5000", "per_page=5000: must be from 1 to 1000"),
        ("ready=maybe", "ready='maybe': must be one of True, False, Unknown"),
        ("refresh=-1", "refresh=-1: must be from 0 to 3600"),
    ],
    ids=["per-page", "ready", "refresh"],
)
async def test_bad_query_is_a_400_naming_it(query: str, message: str) -> None:
    async with relay_client({"flux": {"mode": "legacy"}}) as (client, _):
        answer = await client.get(f"/?{query}")
        assert answer.status == 400
        assert (await answer.text()).startswith(message)


def _object(i: int, now: int) -> Series:
    labels = {
        "__name__": "gotk_resource_info",
        "customresource_group": "kustomize.toolkit.fluxcd.io",
        "customresource_kind": "Kustomization",
        "customresource_version": "v1",
        "exported_namespace": f"team-{i % 100:03}",
        "name": f"app-{i:06}",
        "ready": "False" if i % 10 == 0 else "True",
        "suspended": "false",
    }
    return Series(labels_from(labels), (Sample(1.0, now),))


class LoopWatch:
    """The longest the event loop went without running this task's next step (1 ms sleeps)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, loop.time() - before - 0.001)

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.slow
async def test_100k_objects_page_renders_only_per_page_rows_from_one_index() -> None:
    now = int(time.time() * 1000)
    config = {"flux": {"mode": "legacy", "max_objects": 100_000}, "federate": {"enabled": False}}
    async with relay_client(config) as (client, relay):
        batch = Batch(tuple(_object(i, now) for i in range(100_000)))
        relay.pipeline.flux.rewrite(batch, now)
        assert len(relay.pipeline.flux.tracked()) == 100_000
        timings = []
        for query, rows in [
            ("per_page=1000", 1000),  # the first request builds the index
            ("page=500", 100),
            ("ready=False&per_page=1000&page=10", 1000),
            ("q=app-09999", 10),
        ]:
            with LoopWatch() as watch:
                started = time.perf_counter()
                answer = await client.get(f"/?{query}")
                took = time.perf_counter() - started
                text = await answer.text()
            assert answer.status == 200
            parsed = parse(text)
            assert parsed.object_rows == rows, query
            timings.append((query, took, watch.longest))
        assert "app-099999" in parse(text).cells
        assert client.app[STATUS].index.builds == 1  # reused by the next requests
        for query, took, longest in timings:
            print(
                f"100k objects, GET /?{query}: {took * 1000:.1f} ms, "
                f"longest event-loop stall {longest * 1000:.1f} ms"
            )


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
async def test_a_full_queue_is_blocked_and_its_refusals_name_the_client(
    tmp_path: Path, spooled: bool
) -> None:
    """A destination that never answers: its first request fills the queue (memory: capacity
    1 point; spool: 64 bytes), the next write is refused and the page says why."""
    now = int(time.time() * 1000)
    hanging = ScriptedReceiver(default=Reply(hang=True))
    async with receivers(hanging):
        config: dict[str, object] = {
            "flux": {"mode": "legacy"},
            "remote_write": [
                {"name": "stuck", "url": hanging.url, "queue_config": {"capacity": 1}}
            ],
        }
        if spooled:
            config["spool"] = {"data_dir": str(tmp_path / "spool"), "max_bytes": 64}
        async with relay_client(config) as (client, _):
            batch = Batch(tuple(ksm(f"app-{i}", "ns", ts=now) for i in range(20)))
            body, headers = rw_body(batch)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
            await eventually(lambda: len(hanging.requests) == 1)
            refused = await client.post("/api/v1/write", data=body, headers=headers)
            assert refused.status == 503
            data = json.loads(await (await client.get("/status.json")).text())
            [stuck] = data["destinations"]
            assert stuck["state"] == "blocked"
            assert stuck["why"].startswith("queue full")
            assert stuck["queue_fill"] > 1  # an empty queue takes any one batch
            if spooled:
                assert stuck["spool_max_bytes"] == 64 and stuck["spool_fill"] >= 1
            else:
                assert stuck["spool_bytes"] is None and stuck["spool_fill"] is None
            assert stuck["oldest_unsent_s"] is not None
            [queue_full] = data["refused"]
            assert queue_full["reason"] == "queue_full" and queue_full["count"] == 1
            assert queue_full["examples"][0]["remote"] == "127.0.0.1"
            assert "'stuck' is full" in queue_full["examples"][0]["text"]
            text = await (await client.get("/")).text()
            assert 'class="blocked"' in text
