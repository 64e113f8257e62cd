"""In-process harness: the real aiohttp relay app and scripted remote-write receivers on loopback.

Receivers are real HTTP servers (aiohttp on 127.0.0.1), not mocks: the relay's client code,
connection handling and retries all run as in production; only the backend's answers are
scripted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gotk_relay.config import load_text
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.relay import Relay
from gotk_relay.server import make_app
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, rw2, snappy
from gotk_relay.wire.errors import DecodeError
from tests.support.rig import free_port


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    hang: bool = False  # never answer (until the test ends)


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    batch: Batch
    status: int
    raw: bytes = b""  # the decompressed body, byte for byte


class ScriptedReceiver:
    """Answers each request with the next scripted Reply (then ``default``), recording it.

    Bodies are decoded with the project's codecs according to their Content-Type, as a real
    receiver would.
    """

    def __init__(self, script: list[Reply] | None = None, default: Reply | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Reply()
        self.requests: list[Received] = []
        self.server: TestServer | None = None
        self.port = free_port()
        self._release = asyncio.Event()
        self.chooser: Callable[[Batch], Reply] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = snappy.decompress(await request.read(), 1 << 30)
        v2 = "io.prometheus.write.v2.Request" in request.headers.get("Content-Type", "")
        try:
            batch = (rw2 if v2 else rw1).decode(raw)
        except DecodeError as exc:  # as Prometheus does: bad data is the sender's problem
            self.requests.append(
                Received(
                    asyncio.get_running_loop().time(), dict(request.headers), Batch(), 400, raw
                )
            )
            return web.Response(status=400, text=str(exc))
        if self.chooser is not None:
            reply = self.chooser(batch)
        else:
            reply = self.script.pop(0) if self.script else self.default
        loop = asyncio.get_running_loop()
        self.requests.append(Received(loop.time(), dict(request.headers), batch, reply.status, raw))
        if reply.hang:
            await self._release.wait()
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def delivered(self) -> list[Batch]:
        return [r.batch for r in self.requests if 200 <= r.status < 300]

    def release(self) -> None:
        """Answer the requests held by a ``Reply(hang=True)``, and every later one at once."""
        self._release.set()

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/api/v1/write", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def close(self) -> None:
        self.release()
        if self.server is not None:
            await self.server.close()


@asynccontextmanager
async def receivers(*scripts: ScriptedReceiver) -> AsyncIterator[tuple[ScriptedReceiver, ...]]:
    for r in scripts:
        await r.start()
    try:
        yield scripts
    finally:
        for r in scripts:
            await r.close()


RelayClient = TestClient[web.Request, web.Application]
"""A client of the relay's app (``relay_client``)."""


@asynccontextmanager
async def relay_client(
    config: Mapping[str, object] | str,
) -> AsyncIterator[tuple[RelayClient, Relay]]:
    text = config if isinstance(config, str) else yaml.safe_dump(dict(config))
    telemetry = Telemetry()
    relay = Relay(load_text(text, "<test>"), telemetry)

    async def reload() -> None:
        return None

    app = make_app(relay, telemetry, reload, enable_lifecycle=True)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    relay.start()
    try:
        yield client, relay
    finally:
        await relay.stop(0.5)
        await client.close()


def rw_body(batch: Batch, v2: bool = False) -> tuple[bytes, dict[str, str]]:
    if v2:
        return snappy.compress(rw2.encode(batch)), {
            "Content-Type": rw2.CONTENT_TYPE,
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "2.0.0",
        }
    return snappy.compress(rw1.encode(batch)), {
        "Content-Type": rw1.CONTENT_TYPE,
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }


def gauge_batch(names: list[str], ts: int, value: float = 1.0, **labels: str) -> Batch:
    return Batch(
        tuple(
            Series(tuple(sorted({"__name__": n, **labels}.items())), (Sample(value, ts),))
            for n in names
        )
    )


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds (no fixed sleeps in tests)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f}s")
        await asyncio.sleep(0.02)


def metric_value(text: str, name: str, **labels: str) -> float:
    """A sample's value from exposition text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
