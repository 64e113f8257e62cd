"""Connection bounds of the HTTP edge (connections.py, server.read_write_body).

| bound                          | what a client sees                              | counted as                                       |
|--------------------------------|-------------------------------------------------|--------------------------------------------------|
| `receiver.header_timeout`      | no whole request head in time: closed, no answer | `gotk_relay_connections_closed_total{reason="header_timeout"}` |
| `receiver.idle_timeout`        | idle kept-alive connection closed               |                                                  |
| `receiver.max_connections`     | at the cap: the oldest idle one closed for it, else the new one | `{reason="idle_evicted"}` / `{reason="limit"}` |
| `receiver.min_body_rate`       | 503, connection closed                          | `gotk_relay_rejected_requests_total{reason="slow_body"}` |

In-process relays run behind ``GuardedRunner`` as ``serve`` builds it; the fd-limit cases run
``gotk-relay serve`` under ``prlimit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from gotk_relay.config import ConfigError, ReceiverConfig, load_text
from gotk_relay.connections import GuardedRunner, connection_cap
from gotk_relay.relay import Relay
from gotk_relay.server import IN_FLIGHT, make_app
from gotk_relay.telemetry import Telemetry
from tests.support.harness import gauge_batch, metric_value, relay_client, rw_body
from tests.support.rig import free_port, require_binary

HEAD = b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Edge:
    port: int
    relay: Relay
    app: web.Application
    session: aiohttp.ClientSession

    async def metrics(self) -> str:
        async with self.session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            return await response.text()

    async def closed(self, reason: str) -> float:
        return metric_value(
            await self.metrics(), "gotk_relay_connections_closed_total", reason=reason
        )

    async def write(self) -> int:
        body, headers = rw_body(gauge_batch(["up"], 1))
        async with self.session.post(
            f"http://127.0.0.1:{self.port}/api/v1/write", data=body, headers=headers
        ) as response:
            return response.status

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def edge(receiver: dict[str, object], fds: int = 4096) -> AsyncIterator[Edge]:
    config = load_text(yaml.safe_dump({"flux": {"mode": "off"}, "receiver": receiver}), "<test>")
    telemetry = Telemetry()
    relay = Relay(config, telemetry)

    async def reload() -> None:
        return None

    app = make_app(relay, telemetry, reload)
    runner = GuardedRunner(
        app,
        receiver=lambda: relay.config.receiver,
        registry=telemetry.registry,
        fds=fds,
        access_log=None,
    )
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    relay.start()
    # Every request on a new connection: the test's own connections are the ones it counts.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=10),
    )
    try:
        yield Edge(port, relay, app, session)
    finally:
        await session.close()
        await relay.stop(0.5)
        await runner.cleanup()


async def closed_by_relay(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """What the relay sent before it closed the connection (fails if it stays open)."""
    return await asyncio.wait_for(reader.read(), timeout=within)


# ---------------------------------------------------------------------------------------------
# Header and idle timeouts


async def _head_in_pieces(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    """A slowloris: a byte of a head that never ends every 50ms (each byte resets no timer)."""
    for i in range(100):  # 5s at most, the test's bound
        if reader.at_eof():
            return
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /-/healthy HTTP/1.1\r\nX-Pad: "[i : i + 1] or b"a")
            await writer.drain()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n", None],
    ids=["nothing", "half-a-head", "a-byte-at-a-time"],
)
async def test_a_connection_without_a_whole_head_is_closed_after_header_timeout(
    sent: bytes | None,
) -> None:
    async with edge({"header_timeout": "300ms"}) as relay:
        reader, writer = await relay.connect()
        trickle = None
        if sent is None:
            trickle = asyncio.create_task(_head_in_pieces(writer, reader))
        else:
            writer.write(sent)
        try:
            assert await closed_by_relay(reader, within=3) == b""  # closed, nothing answered
        finally:
            if trickle is not None:
                trickle.cancel()
            writer.close()
        assert await relay.closed("header_timeout") == 1


@pytest.mark.slow  # waits out the header timeout
async def test_header_timeout_counts_from_the_first_byte_of_a_kept_alive_request() -> None:
    async with edge({"header_timeout": "300ms", "idle_timeout": "30s"}) as relay:
        reader, writer = await relay.connect()
        writer.write(HEAD)
        answer = await asyncio.wait_for(reader.readuntil(b"Healthy.\n"), timeout=5)
        assert answer.startswith(b"HTTP/1.1 200")
        # Idle for several header timeouts: an idle kept-alive connection is the idle
        # timeout's (30s), so it is still there and serves the next request.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1 << 16), timeout=1.0)
        writer.write(HEAD)
        assert b"gotk-relay is Healthy." in await asyncio.wait_for(
            reader.readuntil(b"Healthy.\n"), timeout=5
        )
        # Half of the next head, and no more: closed after the header timeout.
        writer.write(HEAD[:10])
        assert await closed_by_relay(reader) == b""
        writer.close()
        assert await relay.closed("header_timeout") == 1


async def test_an_idle_kept_alive_connection_is_closed_after_idle_timeout() -> None:
    async with edge({"header_timeout": "10s", "idle_timeout": "500ms"}) as relay:
        reader, writer = await relay.connect()
        writer.write(HEAD)
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        rest = await closed_by_relay(reader)
        assert rest.endswith(b"gotk-relay is Healthy.\n")  # the answer, then the close
        writer.close()
        assert await relay.closed("header_timeout") == 0


def test_idle_timeout_default_outlasts_prometheus_client_idle_timeout() -> None:
    # prometheus/common's HTTP client closes idle connections after 5m: the client must close
    # first, so it never sends a request on a connection the relay is closing.
    assert ReceiverConfig().idle_timeout > 300


# ---------------------------------------------------------------------------------------------
# The connection cap


async def _open_busy(relay: Edge, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections each in a write request whose body has not come yet."""
    writers = []
    for _ in range(count):
        _, writer = await relay.connect()
        writer.write(
            b"POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n"
            b"Content-Length: 100\r\n\r\nx"
        )
        await writer.drain()
        writers.append(writer)
    in_flight = relay.app[IN_FLIGHT]
    async with asyncio.timeout(5):
        while in_flight.active < count:
            await asyncio.sleep(0.01)
    return writers


async def test_at_the_cap_a_new_connection_is_closed_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gotk_relay.connections")
    receiver = {"max_connections": 3, "min_body_rate": 0, "read_timeout": "30s"}
    async with edge(receiver) as relay:
        busy = await _open_busy(relay, 3)
        for _ in range(3):
            reader, writer = await relay.connect()
            writer.write(HEAD)
            assert await closed_by_relay(reader) == b""  # refused: closed, nothing answered
            writer.close()
        reached = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(reached) == 1
        for writer in busy:
            writer.close()
        async with asyncio.timeout(5):
            while not any("no longer reached" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
        assert await relay.write() == 204
        text = await relay.metrics()
        assert metric_value(text, "gotk_relay_connections_closed_total", reason="limit") == 3
        assert metric_value(text, "gotk_relay_connections_limit") == 3


async def test_at_the_cap_a_new_connection_takes_the_place_of_an_idle_one() -> None:
    async with edge({"max_connections": 4, "header_timeout": "60s"}) as relay:
        idle = [await relay.connect() for _ in range(4)]  # connected, nothing sent
        async with asyncio.timeout(5):
            while metric_value(await relay.metrics(), "gotk_relay_connections") < 4:
                await asyncio.sleep(0.01)
        # Each request below is a new connection at the cap: the oldest idle one makes room.
        assert await relay.write() == 204
        assert await closed_by_relay(idle[0][0]) == b""
        assert await relay.closed("idle_evicted") >= 1
        assert await relay.closed("limit") == 0
        for _, writer in idle:
            writer.close()


@pytest.mark.parametrize(
    ("configured", "fds", "cap"),
    [(0, 1024, 768), (0, 65536, 49152), (0, 200, 16), (100, 1024, 100)],
    ids=["auto-1024", "auto-65536", "auto-floor", "configured"],
)
def test_max_connections_is_sized_from_the_fd_limit(configured: int, fds: int, cap: int) -> None:
    assert connection_cap(ReceiverConfig(max_connections=configured), fds) == cap
    assert cap < fds or configured  # room left for destinations, spool and probes


# ---------------------------------------------------------------------------------------------
# Slow bodies


async def test_a_body_below_min_body_rate_gets_503_after_the_grace() -> None:
    receiver = {"min_body_rate": 1000, "min_body_rate_grace": "500ms", "read_timeout": "30s"}
    async with edge(receiver) as relay:
        reader, writer = await relay.connect()
        writer.write(
            b"POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 200
        )
        answer = await closed_by_relay(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"slower than 1000 bytes/s (receiver.min_body_rate) after 0.5s" in answer
        text = await relay.metrics()
        assert metric_value(text, "gotk_relay_rejected_requests_total", reason="slow_body") == 1


async def _trickle(relay: Edge, stop: asyncio.Event) -> bytes:
    """A write whose body comes at a byte a second; what the relay answered."""
    reader, writer = await relay.connect()
    try:
        writer.write(
            b"POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        for _ in range(60):
            if stop.is_set() or reader.at_eof():
                break
            writer.write(b"x")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(reader.read(), timeout=1.0)
        return b""
    except ConnectionError:
        return b"reset"
    finally:
        writer.close()


@pytest.mark.slow  # uploads slowly on purpose
async def test_slow_uploads_do_not_keep_a_fast_writer_out() -> None:
    # 64 uploads at 1 byte/s hold all 64 write slots; the rate bound cuts them after the grace
    # instead of letting them hold the slots for all of read_timeout (30s).
    receiver = {"min_body_rate": 100, "min_body_rate_grace": "1s", "max_concurrent_requests": 64}
    async with edge(receiver) as relay:
        stop = asyncio.Event()
        slow = [asyncio.create_task(_trickle(relay, stop)) for _ in range(64)]
        try:
            in_flight = relay.app[IN_FLIGHT]
            async with asyncio.timeout(10):
                while in_flight.active < 64:
                    await asyncio.sleep(0.01)
            assert await relay.write() == 503  # every slot is held
            # The bound: the grace (1s) and the rate's first byte (10ms), with room for CI.
            async with asyncio.timeout(10):
                while await relay.write() != 204:
                    await asyncio.sleep(0.05)
            answers = await asyncio.gather(*slow)
        finally:
            stop.set()
            for task in slow:
                task.cancel()
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers[:3]


# ---------------------------------------------------------------------------------------------
# A real process under a low file-descriptor limit


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    config: Mapping[str, object],
    nofile: str | None = None,
    prefix: Sequence[str] = (),
) -> AsyncIterator[Served]:
    """A real ``gotk-relay serve`` on a free port, ready; ``prefix``: the command it runs under."""
    port = free_port()
    config_path = tmp_path / "relay.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "relay.log"
    # prlimit is util-linux's, on every Linux the relay runs on: missing, the test fails.
    if nofile:
        prefix = [require_binary("prlimit"), f"--nofile={nofile}", "--", *prefix]
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "gotk_relay",
        "serve",
        "--config",
        str(config_path),
        "--web.listen-address",
        f"127.0.0.1:{port}",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    running = Served(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    assert proc.poll() is None, running.log()
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.get(running.base + "/-/ready") as response:
                            if response.status == 200:
                                break
                    await asyncio.sleep(0.05)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
async def test_serve_raises_the_soft_fd_limit_and_sizes_the_cap_from_it(tmp_path: Path) -> None:
    async with served(tmp_path, {"flux": {"mode": "off"}}, nofile="512:1024") as relay:
        line = next(x for x in relay.log().splitlines() if "gotk-relay started" in x)
        assert 'fd_limits="(soft=1024, hard=1024)"' in line, line
        assert "max_connections=768" in line, line


@pytest.mark.slow
async def test_1100_idle_connections_do_not_lock_out_writes_or_probes(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip("this test process needs 1300 file descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    config = {"flux": {"mode": "off"}}
    async with served(tmp_path, config, nofile="1024:1024") as relay:
        port = int(relay.base.rsplit(":", 1)[1])
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(1100):  # connected, nothing sent: what exhausted the fds
                with contextlib.suppress(OSError):
                    idle.append((await asyncio.open_connection("127.0.0.1", port))[1])
            # Each answer within 5s, well within the header timeout (10s) that would free the
            # idle connections' places otherwise: the cap made room at once.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=5)
            ) as session:
                async with session.get(relay.base + "/-/ready") as response:
                    assert response.status == 200
                body, headers = rw_body(gauge_batch(["up"], 1))
                async with session.post(
                    relay.base + "/api/v1/write", data=body, headers=headers
                ) as response:
                    assert response.status == 204
                async with session.get(relay.base + "/metrics") as response:
                    text = await response.text()
            assert metric_value(text, "gotk_relay_connections_limit") == 768
            assert metric_value(text, "gotk_relay_connections") <= 768
            closed = metric_value(text, "gotk_relay_connections_closed_total", reason="limit")
            evicted = metric_value(
                text, "gotk_relay_connections_closed_total", reason="idle_evicted"
            )
            assert evicted >= 1100 - 768
            assert closed == 0
        finally:
            for writer in idle:
                writer.close()
        assert "connection limit reached" not in relay.log()  # idle ones made room: no refusal


@pytest.mark.slow
async def test_ingest_workers_close_connections_without_a_head_too(tmp_path: Path) -> None:
    config = {"flux": {"mode": "off"}, "receiver": {"workers": 2, "header_timeout": "300ms"}}
    async with served(tmp_path, config) as relay:
        async with asyncio.timeout(30):
            while "ingest worker listening" not in relay.log():
                await asyncio.sleep(0.05)
        port = int(relay.base.rsplit(":", 1)[1])
        # The kernel spreads these over the core and the worker: every one is closed in time.
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(16)]
        try:
            for reader, _ in conns:
                assert await closed_by_relay(reader) == b""
        finally:
            for _, writer in conns:
                writer.close()


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("receiver: {header_timeout: 0}", "receiver.header_timeout: Input should be greater"),
        ("receiver: {idle_timeout: soon}", "receiver.idle_timeout: not a valid duration"),
        ("receiver: {max_connections: -1}", "receiver.max_connections: Input should be greater"),
        ("receiver: {min_body_rate: -1}", "receiver.min_body_rate: Input should be greater"),
        ("federate: {max_selectors: 0}", "federate.max_selectors: Input should be greater"),
        ("federate: {timeout: 0s}", "federate.timeout: Input should be greater"),
        ("federate: {max_concurrent_requests: 0}", "federate.max_concurrent_requests: Input"),
    ],
    ids=[
        "header-0",
        "idle-word",
        "cap-negative",
        "rate-negative",
        "selectors-0",
        "timeout-0",
        "federate-concurrency-0",
    ],
)
def test_a_bound_that_cannot_work_is_refused_naming_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match="relay.yml:1: " + re.escape(error)):
        load_text(text, "relay.yml")


async def test_a_reload_applies_to_the_connections_made_after_it() -> None:
    async with edge({"header_timeout": "60s"}) as relay:
        config = relay.relay.config
        receiver = config.receiver.model_copy(update={"header_timeout": 0.3})
        relay.relay.reload(config.model_copy(update={"receiver": receiver}))
        reader, writer = await relay.connect()
        assert await closed_by_relay(reader) == b""
        writer.close()
        assert await relay.closed("header_timeout") == 1


async def test_a_reload_shows_the_workers_and_tls_that_run_until_a_restart() -> None:
    """``receiver.workers`` and ``receiver.tls`` change only with a restart (logged at the
    reload): the configuration the relay keeps, and shows, has the running ones, beside the
    keys the reload changed."""
    async with relay_client({"flux": {"mode": "off"}}) as (client, relay):
        new = load_text("flux: {mode: 'off'}\nreceiver: {workers: 2, header_timeout: 3s}\n", "<t>")
        relay.reload(new)
        assert relay.config.receiver.workers == 1
        assert relay.config.receiver.header_timeout == 3.0
        shown = yaml.safe_load((await (await client.get("/status.json")).json())["config"])
        assert shown["receiver"]["workers"] == 1
        assert shown["receiver"]["header_timeout"] in ("3s", 3, 3.0)


@pytest.mark.parametrize(
    ("headers", "receiver", "status"),
    [
        ({"Content-Encoding": "gzip"}, {}, b"415"),
        ({}, {"max_request_bytes": 8}, b"413"),
        ({}, {}, b"100"),
    ],
    ids=["wrong-encoding", "too-large", "accepted"],
)
async def test_expect_100_continue_is_answered_after_the_header_checks(
    headers: dict[str, str], receiver: dict[str, object], status: bytes
) -> None:
    """A sender asking ``Expect: 100-continue`` learns a refusal its headers decide before it
    sends the body; one the relay would take is invited to send it (and is answered 204)."""
    body, _ = rw_body(gauge_batch(["up"], 1000))
    head = {
        "Host": "127.0.0.1",
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "Content-Length": str(len(body)),
        "Expect": "100-continue",
        **headers,
    }
    async with edge(receiver) as relay:
        reader, writer = await relay.connect()
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        writer.write(f"POST /api/v1/write HTTP/1.1\r\n{lines}\r\n".encode())
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.split()[1] == status, first
        if status != b"100":
            assert b"Connection: close" in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(body)  # sent anyway, as curl does when no 100 comes: dropped
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) is not None  # then closed
        else:
            await asyncio.wait_for(reader.readline(), 5)  # the blank line after it
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(reader.readline(), 5)
            assert final.split()[1] == b"204", final
        writer.close()
