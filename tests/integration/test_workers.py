"""receiver.workers: N processes take connections, one of them (the core) holds all the state.

Real processes: `gotk-relay serve` on a random loopback port with `receiver.workers: 2`, the
destination an in-process ScriptedReceiver. Every request goes over a new connection, so the
kernel (SO_REUSEPORT) spreads them over the core and the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from gotk_relay.cli import build_parser
from gotk_relay.config import ConfigError, load_text
from gotk_relay.model import Batch, Sample, Series, labels_from
from gotk_relay.wire import rw1_bytes
from gotk_relay.wire.errors import DecodeError
from gotk_relay.wire.labels import LabelLimitError, TooManySeriesError
from gotk_relay.worker_pool import Generation, worker_argv
from gotk_relay.write.edge import Rejection, decode_rejection
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    metric_value,
    receivers,
    rw_body,
)
from tests.support.rig import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreading")

KSM = {
    "__name__": "gotk_resource_info",
    "customresource_group": "kustomize.toolkit.fluxcd.io",
    "customresource_kind": "Kustomization",
    "customresource_version": "v1",
    "exported_namespace": "flux-system",
    "name": "apps",
}
WRITES = 'gotk_relay_received_total{kind="sample",protobuf_message="prometheus.WriteRequest"}'


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


async def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, polled (the receiver runs in this loop: blocking would stall it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return proc.poll()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    base: str
    config_path: Path
    log_path: Path
    session: aiohttp.ClientSession  # a new connection per request
    clean_exit: bool = True  # the teardown's SIGTERM must end it with 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        return [p for p in _children(self.proc.pid) if _alive(p)]

    async def write(self, batch: Batch) -> tuple[int, str]:
        body, headers = rw_body(batch)
        async with self.session.post(
            self.base + "/api/v1/write", data=body, headers=headers
        ) as response:
            return response.status, await response.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base + path) as response:
            return response.status, await response.text()

    async def wait_workers_listening(self, count: int, timeout: float = 30.0) -> list[int]:
        """The workers' PIDs once ``count`` of them have said they listen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pids = self.workers()
            lines = [line for line in self.log().splitlines() if "ingest worker listening" in line]
            listening = [p for p in pids if any(f" pid={p} " in line for line in lines)]
            if len(pids) == count and len(listening) == count:
                return pids
            assert self.proc.poll() is None, self.log()
            assert loop.time() < deadline, f"workers not listening:\n{self.log()}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def relay(tmp_path: Path, config: dict[str, object], *flags: str) -> AsyncIterator[Running]:
    port = free_port()
    config_path = tmp_path / "relay.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "relay.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gotk_relay",
            "serve",
            "--config",
            str(config_path),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    connector = aiohttp.TCPConnector(force_close=True)  # every request a new connection
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))
    running = Running(proc, f"http://127.0.0.1:{port}", config_path, log_path, session)
    workers: list[int] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                if (await running.get("/-/ready"))[0] == 200:
                    break
            assert proc.poll() is None, running.log()
            assert loop.time() < deadline, f"relay not ready:\n{running.log()}"
            await asyncio.sleep(0.05)
        workers = await running.wait_workers_listening(1)
        yield running
    finally:
        await session.close()
        proc = running.proc
        workers += running.workers()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = await _wait(proc, 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for pid in workers:  # never leave one behind, even when the test failed
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            log.close()
        if running.clean_exit:
            assert code == 0, running.log()


def _config(url: str, **receiver: object) -> dict[str, object]:
    return {
        "receiver": {"workers": 2, **receiver},
        "flux": {"mode": "legacy"},
        "remote_write": [{"name": "d", "url": url, "queue_config": {"min_backoff": "10ms"}}],
    }


def _points(receiver: ScriptedReceiver) -> list[tuple[tuple[tuple[str, str], ...], int, float]]:
    return [
        (s.labels, p.timestamp, p.value)
        for b in receiver.delivered()
        for s in b.series
        for p in s.samples
    ]


def _handoffs(metrics: str, kind: str) -> float:
    return metric_value(metrics, "gotk_relay_worker_handoffs_total", kind=kind)


# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # starts worker processes
async def test_every_sample_arrives_once_and_metrics_are_the_cores_on_any_connection(
    tmp_path: Path,
) -> None:
    receiver = ScriptedReceiver()
    requests, per_request = 120, 10
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> int:
            batch = gauge_batch(
                [f"metric_{i}_{j}" for j in range(per_request)], 1000 + i, float(i), job="w"
            )
            async with gate:
                return (await running.write(batch))[0]

        statuses = await asyncio.gather(*(one(i) for i in range(requests)))
        assert statuses == [204] * requests
        sent = requests * per_request
        await eventually(lambda: len(_points(receiver)) >= sent, timeout=20)
        points = _points(receiver)
        assert len(points) == sent and len(set(points)) == sent  # each exactly once
        for _ in range(20):  # whichever process takes the connection answers for the core
            status, text = await running.get("/metrics")
            assert status == 200
            assert metric_value(text, "gotk_relay_received_total", kind="sample") == sent
            assert (
                metric_value(text, "gotk_relay_http_requests_total", handler="/api/v1/write")
                == requests
            )
        assert _handoffs(text, "scanned") > 0  # the worker took some of the connections
        assert _handoffs(text, "scanned") < requests  # and the core some


@pytest.mark.slow  # starts worker processes
async def test_flux_state_stays_consistent_across_processes(tmp_path: Path) -> None:
    receiver = ScriptedReceiver()
    flips = 24
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        for i in range(flips):
            ready = "True" if i % 2 == 0 else "False"
            series = Series(labels_from({**KSM, "ready": ready}), (Sample(1.0, 10_000 + i * 1000),))
            assert (await running.write(Batch((series,))))[0] == 204
        await eventually(
            lambda: (
                sum(
                    1
                    for labels, _, _ in _points(receiver)
                    if dict(labels)["__name__"] == "gotk_reconcile_condition"
                )
                >= 3 * flips
            ),
            timeout=20,
        )
        _, metrics = await running.get("/metrics")
        assert _handoffs(metrics, "scanned") > 0
    conditions = [
        (dict(labels)["status"], ts, value)
        for labels, ts, value in _points(receiver)
        if dict(labels)["__name__"] == "gotk_reconcile_condition"
    ]
    for status in ("True", "False", "Unknown"):
        seen = [(ts, value) for s, ts, value in conditions if s == status]
        stamps = [ts for ts, _ in seen]
        assert stamps == sorted(set(stamps)), f"{status}: timestamps not strictly increasing"
        assert len(seen) == flips
        for ts, value in seen:
            i = (ts - 10_000) // 1000
            current = "True" if i % 2 == 0 else "False"
            assert value == (1.0 if status == current else 0.0), (status, ts, value)


@pytest.mark.slow  # starts worker processes
async def test_a_reload_reaches_requests_the_workers_handle(tmp_path: Path) -> None:
    receiver = ScriptedReceiver()
    if rw1_bytes.NATIVE:
        # framing (the opt-out): label sets are left to the destination; full, the default,
        # refuses a name twice.
        payload = Batch(
            (Series((("__name__", "up"), ("a", "1"), ("a", "2")), (Sample(1.0, 1000),)),)
        )
        lenient = _config(receiver.url, validation="framing")
        strict, reason = _config(receiver.url), "malformed"
    else:
        # framing needs the compiled scanner (README): a label limit is what the reload changes.
        payload = Batch(
            (Series((("__name__", "up"), ("a", "1"), ("b", "2")), (Sample(1.0, 1000),)),)
        )
        lenient = _config(receiver.url)
        strict, reason = _config(receiver.url, max_labels_per_series=2), "label_limits"
    async with receivers(receiver), relay(tmp_path, lenient) as running:
        for _ in range(6):
            assert (await running.write(payload))[0] == 204
        running.config_path.write_text(yaml.safe_dump(strict))
        running.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "completed loading" in running.log(), timeout=10)
        statuses = [(await running.write(payload))[0] for _ in range(16)]
        assert statuses == [400] * 16
        _, metrics = await running.get("/metrics")
        assert metric_value(metrics, "gotk_relay_rejected_requests_total", reason=reason) == 16
        # Back: forwarded again, scanned by the workers.
        running.config_path.write_text(yaml.safe_dump(lenient))
        running.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: running.log().count("completed loading") == 2, timeout=10)
        scanned = _handoffs((await running.get("/metrics"))[1], "scanned")
        statuses = [(await running.write(payload))[0] for _ in range(16)]
        assert statuses == [204] * 16
        assert _handoffs((await running.get("/metrics"))[1], "scanned") > scanned


@pytest.mark.slow
async def test_a_killed_worker_is_restarted_and_none_outlive_the_core(tmp_path: Path) -> None:
    receiver = ScriptedReceiver()
    batch = gauge_batch(["up"], 1000, job="k")
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        (first,) = running.workers()
        os.kill(first, signal.SIGKILL)
        # Connections still queued at a listener that dies are reset (SO_REUSEPORT), like
        # those of any crashed server: the sender retries them. Wait until it is gone.
        # (Reaped by the core: a zombie's other threads may still hold its socket.)
        await eventually(lambda: not Path(f"/proc/{first}").exists(), timeout=10)
        statuses = [(await running.write(batch))[0] for _ in range(10)]  # the core alone
        assert statuses == [204] * 10
        (second,) = await running.wait_workers_listening(1)
        assert second != first
        assert "ingest worker failed; restarting it" in running.log()
        assert "exited with code -9" in running.log()
        statuses = [(await running.write(batch))[0] for _ in range(20)]
        assert statuses == [204] * 20
        core = running.proc
        core.send_signal(signal.SIGTERM)
        assert await _wait(core, 20) == 0, running.log()
        deadline = time.monotonic() + 10
        while _alive(second) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not _alive(second), "the worker outlived the core"


@pytest.mark.slow  # starts worker processes
async def test_workers_exit_when_the_core_dies_without_stopping_them(tmp_path: Path) -> None:
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        (worker,) = running.workers()
        argv = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        private = Path(argv[argv.index(b"--socket") + 1].decode()).parent
        running.proc.kill()  # no chance to stop them: the pipe tells them
        await _wait(running.proc, 10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not _alive(worker), "the worker outlived the core"
        running.clean_exit = False
        shutil.rmtree(private)  # a killed core cannot remove its socket's directory


# ------------------------------------------------------------------------------------------------
# Pure parts


def test_workers_is_a_bounded_receiver_setting() -> None:
    assert load_text("{}", "<t>").receiver.workers == 1
    assert load_text("receiver: {workers: 4}", "<t>").receiver.workers == 4
    for bad in (0, 65):
        with pytest.raises(ConfigError):
            load_text(f"receiver: {{workers: {bad}}}", "<t>")


def test_the_worker_command_is_hidden_but_parses() -> None:
    parser = build_parser()
    assert " worker" not in parser.format_help()
    args = parser.parse_args(
        ["worker", "--socket", "/tmp/x.sock", "--listen-address", "127.0.0.1:9", "--parent-fd", "3"]
    )
    assert (args.command, args.socket, args.listen, args.parent_fd) == (
        "worker",
        "/tmp/x.sock",
        ("127.0.0.1", 9),
        3,
    )


def test_generation_goes_up() -> None:
    generation = Generation()
    generation.bump()
    generation.bump()
    assert generation.value == 2


def test_decode_errors_map_to_the_statuses_of_the_write_endpoint() -> None:
    cases = {
        TooManySeriesError("x"): ("too_many_series", 413),
        LabelLimitError("x"): ("label_limits", 400),
        DecodeError("x"): ("malformed", 400),
    }
    for exc, (reason, status) in cases.items():
        rejection = decode_rejection(exc)
        assert isinstance(rejection, Rejection)
        assert (rejection.reason, rejection.status) == (reason, status)
    assert decode_rejection(RuntimeError("x")) is None


def test_worker_argv_brackets_ipv6_and_passes_the_pipe() -> None:
    argv = worker_argv("/tmp/s.sock", ("::1", 9201), 7, 0)
    assert argv[argv.index("--listen-address") + 1] == "[::1]:9201"
    assert argv[argv.index("--parent-fd") + 1] == "7"
    assert build_parser().parse_args(argv[3:]).listen == ("::1", 9201)


@pytest.mark.slow  # starts worker processes
async def test_credentials_and_remote_write_2_behave_as_in_one_process(tmp_path: Path) -> None:
    receiver = ScriptedReceiver()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = _config(receiver.url, auth={"bearer_token_file": str(token)})
    batch = gauge_batch(["up"], 1000, job="a")
    async with receivers(receiver), relay(tmp_path, config) as running:
        for _ in range(12):  # refused by whichever process: counted by the core
            status, text = await running.write(batch)
            assert status == 401 and "Bearer" in text
        good = {"Authorization": "Bearer s3cret"}
        for v2 in (False, True):
            body, headers = rw_body(batch, v2=v2)
            for _ in range(8):
                async with running.session.post(
                    running.base + "/api/v1/write", data=body, headers={**headers, **good}
                ) as response:
                    assert response.status == 204
                    if v2:  # passed on to the core, its headers come back
                        assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "1"
        _, metrics = await running.get("/metrics")
        assert (
            metric_value(metrics, "gotk_relay_rejected_requests_total", reason="unauthorized") == 12
        )
        for proto in ("prometheus.WriteRequest", "io.prometheus.write.v2.Request"):
            received = metric_value(
                metrics, "gotk_relay_received_total", kind="sample", protobuf_message=proto
            )
            assert received == 8
        await eventually(lambda: len(_points(receiver)) >= 16, timeout=20)


@pytest.mark.slow  # starts worker processes
async def test_requests_routed_in_a_worker_arrive_as_in_one_process(tmp_path: Path) -> None:
    """Rules, shards, tenants and a 2.0 destination are applied where the request is read:
    what a worker routes reaches each destination as the core would have sent it."""
    sharded, v2 = ScriptedReceiver(), ScriptedReceiver()
    config = {
        "receiver": {"workers": 2},
        "flux": {"mode": "legacy"},
        "relabel_configs": [{"target_label": "cluster", "replacement": "prod"}],
        "remote_write": [
            {
                "name": "sharded",
                "url": sharded.url,
                "queue_config": {"min_shards": 3, "max_shards": 3, "min_backoff": "10ms"},
                "tenant": {"label": "team"},
                "write_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": "drop_.*", "action": "drop"}
                ],
            },
            {
                "name": "v2",
                "url": v2.url,
                "protobuf_message": "io.prometheus.write.v2.Request",
                "queue_config": {"min_backoff": "10ms"},
            },
        ],
    }
    requests = 60
    async with receivers(sharded, v2), relay(tmp_path, config) as running:
        for i in range(requests):
            batch = Batch(
                tuple(
                    Series(
                        labels_from({"__name__": name, "team": f"t{j % 2}", "i": str(j)}),
                        (Sample(float(i), 1000 + i),),
                    )
                    for j, name in enumerate(["keep_a", "drop_b", "keep_c", "keep_d"])
                )
            )
            assert (await running.write(batch))[0] == 204
        await eventually(lambda: len(_points(sharded)) >= requests * 3, timeout=20)
        await eventually(lambda: len(_points(v2)) >= requests * 4, timeout=20)
        status, text = await running.get("/metrics")
        assert status == 200
        assert _handoffs(text, "scanned") > 0  # the worker routed some of the requests
    # What the rules dropped is counted in the core, wherever the request was read.
    dropped = metric_value(
        text, "gotk_relay_samples_dropped_total", destination="sharded", reason="dropped_series"
    )
    assert dropped == requests
    kept = _points(sharded)
    assert len(kept) == requests * 3 and len(set(kept)) == requests * 3
    for request in sharded.requests:
        tenant = request.headers["X-Scope-OrgID"]
        for series in request.batch.series:
            labels = dict(series.labels)
            assert labels["cluster"] == "prod" and "team" not in labels
            assert labels["__name__"] != "drop_b"
            assert tenant == f"t{int(labels['i']) % 2}"
    # Sent as 2.0 (a receiver that answers without 2.0's written-counts headers is sent 1.0
    # afterwards, as Prometheus does): each series arrived once either way.
    assert "io.prometheus.write.v2.Request" in v2.requests[0].headers["Content-Type"]
    assert len(set(_points(v2))) == requests * 4


@pytest.mark.slow  # starts worker processes
async def test_refusals_on_the_status_page_name_the_client_whichever_process_refused(
    tmp_path: Path,
) -> None:
    """A worker passes its client's address on to the core; a client cannot set it."""
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        body, headers = rw_body(gauge_batch(["up"], 1000, job="a"))
        spoofing = {**headers, "Content-Encoding": "gzip", "X-Gotk-Relay-Remote": "203.0.113.9"}
        for _ in range(12):  # refused by whichever process took the connection
            async with running.session.post(
                running.base + "/api/v1/write", data=body, headers=spoofing
            ) as response:
                assert response.status == 415
        for _ in range(4):  # the page itself, passed on by a worker or served by the core
            status, text = await running.get("/status.json")
            assert status == 200, text
            [refused] = json.loads(text)["refused"]
            assert (refused["reason"], refused["count"]) == ("unsupported_encoding", 12)
            assert {x["remote"] for x in refused["examples"]} == {"127.0.0.1"}
        _, metrics = await running.get("/metrics")
        assert _handoffs(metrics, "rejected") > 0  # some were the worker's


async def test_acknowledge_delivered_holds_for_requests_a_worker_scanned(tmp_path: Path) -> None:
    """The core waits for the delivery before it answers the worker (receiver.acknowledge:
    delivered), so a sender whose connection a worker took gets the destination's verdict."""

    def choose(batch: Batch) -> Reply:
        return Reply(500) if any(s.name.startswith("bad") for s in batch.series) else Reply(204)

    receiver = ScriptedReceiver()
    receiver.chooser = choose
    config = {
        "receiver": {"workers": 2, "acknowledge": "delivered"},
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": "d", "url": receiver.url, "queue_config": {"min_backoff": "10ms"}}
        ],
    }
    requests = 40
    async with receivers(receiver), relay(tmp_path, config) as running:
        for i in range(requests):  # one at a time: each request is its own send
            name = f"bad_{i}" if i % 2 else f"good_{i}"
            status, _ = await running.write(gauge_batch([name], 1000 + i))
            assert status == (503 if i % 2 else 204), name
            # a 204 only once the destination has it
            assert i % 2 or any(b.series[0].name == name for b in receiver.delivered())
        _, text = await running.get("/metrics")
        assert _handoffs(text, "scanned") > 0  # some went through the worker
        outcomes = {
            o: metric_value(text, "gotk_relay_acknowledged_requests_total", outcome=o)
            for o in ("delivered", "failed")
        }
        assert outcomes == {"delivered": requests / 2, "failed": requests / 2}
        bad = [r for r in receiver.requests if r.status == 500]
        assert len(bad) == requests / 2  # each sent once: not retried by the relay


@pytest.mark.slow  # starts worker processes
async def test_shutdown_timeout_bounds_the_whole_shutdown_with_workers(tmp_path: Path) -> None:
    """The pod's termination grace is set above preStop + --shutdown-timeout: with workers
    finishing requests they hold (a client that stalls in its body) and a queue that cannot
    drain (the destination answers 503), SIGTERM still ends the relay within the timeout."""
    timeout = 3.0
    stalled: list[asyncio.StreamWriter] = []
    async with (
        receivers(ScriptedReceiver(default=Reply(503))) as (receiver,),
        relay(tmp_path, _config(receiver.url), "--shutdown-timeout", str(timeout)) as running,
    ):
        try:
            workers = running.workers()
            status, _ = await running.write(gauge_batch(["queued"], int(time.time() * 1000)))
            assert status == 204  # queued; the destination never takes it
            await eventually(lambda: len(receiver.requests) >= 1)
            # Connections spread over the core and the worker, each stalled in its body.
            port = int(running.base.rsplit(":", 1)[1])
            for _ in range(8):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"POST /api/v1/write HTTP/1.1\r\nHost: relay\r\n"
                    b"Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n"
                    b"X-Prometheus-Remote-Write-Version: 0.1.0\r\n"
                    b"Content-Length: 1000\r\n\r\n" + b"\0" * 10
                )
                await writer.drain()
                stalled.append(writer)
            await asyncio.sleep(0.5)
            loop = asyncio.get_running_loop()
            started = loop.time()
            running.proc.send_signal(signal.SIGTERM)
            code = await _wait(running.proc, 20)
            took = loop.time() - started
            assert code == 0, running.log()
            assert took < timeout + 1.5, (took, "\n" + running.log())
            assert not any(_alive(p) for p in workers)
        finally:
            for writer in stalled:
                writer.close()


@pytest.mark.slow  # starts worker processes
async def test_a_large_federate_answer_is_the_same_through_either_process(tmp_path: Path) -> None:
    """/federate of 400 Flux objects (≈2000 series, several 64 KiB pieces): a worker passes
    the core's answer on as it streams it, byte for byte, plain and gzipped."""
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay(tmp_path, _config(receiver.url)) as running:
        now = int(time.time() * 1000)  # within /federate's lookback
        objects = [
            Series(labels_from({**KSM, "name": f"app-{i}", "ready": "True"}), (Sample(1.0, now),))
            for i in range(400)
        ]
        assert (await running.write(Batch(tuple(objects))))[0] == 204
        query = "/federate?match[]=" + urllib.parse.quote('{__name__=~"gotk_.+"}')
        bodies = set()
        for _ in range(16):
            status, text = await running.get(query)
            assert status == 200
            bodies.add(text)
        assert len(bodies) == 1
        (body,) = bodies
        assert len(body.encode()) > 4 * 64 * 1024
        assert body.count('name="app-') == 5 * 400  # the input and its four outputs
        zipped = set()
        for _ in range(8):
            async with running.session.get(
                running.base + query, headers={"Accept-Encoding": "gzip"}
            ) as response:
                assert response.status == 200
                assert response.headers.get("Content-Encoding") == "gzip"
                zipped.add(await response.text())
        assert zipped == {body}


async def test_a_worker_logs_an_unreachable_core_once_per_spell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request a worker passes on fails while the core is away: answered 503 each time,
    logged once, and once more when the core answers again."""
    from aiohttp.test_utils import TestClient, TestServer

    from gotk_relay.scan_worker import Worker

    socket_path = tmp_path / "core.sock"
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        worker = Worker(session)
        async with TestClient(TestServer(worker.app())) as client:
            caplog.set_level("INFO", logger="gotk_relay")
            for _ in range(5):
                response = await client.get("/metrics")
                assert response.status == 503 and response.headers["Retry-After"] == "1"
            away = [r for r in caplog.records if "core unavailable" in r.getMessage()]
            assert len(away) == 1

            async def metrics(_: web.Request) -> web.Response:
                return web.Response(text="up 1\n")

            core = web.Application()
            core.router.add_get("/metrics", metrics)
            runner = web.AppRunner(core)
            await runner.setup()
            await web.UnixSite(runner, str(socket_path)).start()
            try:
                for _ in range(3):
                    response = await client.get("/metrics")
                    assert response.status == 200 and await response.text() == "up 1\n"
            finally:
                await runner.cleanup()
            back = [r for r in caplog.records if "core answers again" in r.getMessage()]
            assert len(back) == 1 and back[0].refused == 5  # type: ignore[attr-defined]
