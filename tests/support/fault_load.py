"""Fault-suite toolkit: a loader that pushes a known sequence, a recording receiver, the relay as
a killable child process, and the accounting that compares what was acked with what arrived.

Why a known sequence: a fault test must say *which* sample went missing, not just that counts
differ. Every sample is identified by ``(series, timestamp)`` and carries a value computed from
``(series, step)``, so the receiver can tell lost, duplicated, reordered and corrupted samples
apart.

Why real HTTP and a real process everywhere: the faults under test (a relay killed mid-write,
a backend refusing connections, a request that never gets an answer) live in sockets, the
kernel and SQLite, which in-process fakes would not exercise.

Every loop here is bounded in count and in time, so a broken relay fails a test instead of
hanging it. The relay runs under the rig's process helpers (``tests.support.rig``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web

import gotk_relay
from gotk_relay.model import Batch, Sample, Series
from gotk_relay.wire import rw1, rw2, snappy
from gotk_relay.wire.errors import DecodeError
from tests.support import rig

HOST = "127.0.0.1"
METRIC = "fault_load"
SampleKey = tuple[int, int]
"""``(series number, timestamp ms)``: the identity of one generated sample."""


# --------------------------------------------------------------------------------------------
# The known sequence


@dataclass(frozen=True)
class LoadPlan:
    """``series`` series × ``steps`` timestamps, one request per lane per step.

    Series ``i`` belongs to lane ``i % lanes``; a lane sends its steps strictly one after the
    other, as a Prometheus shard does, so per-series order at the receiver is the relay's doing
    alone. ``pad`` adds a label of that many characters, to make samples heavier (memory test).
    """

    series: int = 50
    steps: int = 100
    interval_s: float = 0.1
    lanes: int = 1
    pad: int = 0
    base_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        if not 0 < self.lanes <= self.series:
            raise ValueError("need 1 <= lanes <= series")
        if self.steps >= 1_000_000:
            raise ValueError("steps must stay below 1e6 for values to be unambiguous")

    @property
    def step_ms(self) -> int:
        return max(1, round(self.interval_s * 1000))

    def timestamp(self, step: int) -> int:
        return self.base_ms + step * self.step_ms

    def step_of(self, timestamp: int) -> int | None:
        step, rest = divmod(timestamp - self.base_ms, self.step_ms)
        return step if rest == 0 and 0 <= step < self.steps else None

    @staticmethod
    def value(series: int, step: int) -> float:
        """Exact in a float64 for every series < 2**33: the sample identifies itself."""
        return float(series * 1_000_000 + step)

    def lane_series(self, lane: int) -> range:
        return range(lane, self.series, self.lanes)

    def expected_value(self, key: SampleKey) -> float | None:
        series, ts = key
        step = self.step_of(ts)
        if step is None or not 0 <= series < self.series:
            return None
        return self.value(series, step)


class _Encoder:
    """Request bodies of a plan; labels are built once per series."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        pad = (("pad", "p" * plan.pad),) if plan.pad else ()
        self.labels = [
            (("__name__", METRIC), *pad, ("series", f"{i:06d}")) for i in range(plan.series)
        ]

    def body(self, lane: int, step: int) -> bytes:
        ts = self.plan.timestamp(step)
        batch = Batch(
            tuple(
                Series(self.labels[i], (Sample(self.plan.value(i, step), ts),))
                for i in self.plan.lane_series(lane)
            )
        )
        return snappy.compress(rw1.encode(batch))


WRITE_HEADERS: Mapping[str, str] = {
    "Content-Type": rw1.CONTENT_TYPE,
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": rw1.VERSION,
}


class Loader:
    """Pushes a :class:`LoadPlan` to a write URL and records which requests were acked (2xx).

    A 429, a 5xx, a timeout or a connection error is retried, same body, after a backoff
    (``Retry-After`` honoured up to ``max_backoff_s``), for at most ``retry_for_s`` per request:
    what Prometheus does, bounded. Any other status is a permanent refusal (counted, not
    retried). Steps are paced at ``plan.interval_s``; a lane that fell behind (it was retrying)
    catches up back to back, as Prometheus replays its WAL.
    """

    def __init__(
        self,
        url: str,
        plan: LoadPlan,
        *,
        retry_for_s: float = 30.0,
        min_backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        request_timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.plan = plan
        self.retry_for_s = retry_for_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s
        self.headers = {**WRITE_HEADERS, **(headers or {})}
        self.acked: dict[tuple[int, int], float] = {}  # (lane, step) -> monotonic ack time
        self.statuses: Counter[str] = Counter()  # every answer: "204", "429", "conn_error", ...
        self.refused = 0  # requests permanently refused (a 4xx other than 408/429)
        self.given_up = 0  # requests abandoned after retry_for_s or at stop
        self.attempted = 0  # requests started (retries not counted)
        self.started_at = 0.0
        self.finished_at = 0.0
        self._encoder = _Encoder(plan)

    @property
    def acked_requests(self) -> int:
        return len(self.acked)

    def acked_keys(self) -> set[SampleKey]:
        keys: set[SampleKey] = set()
        for lane, step in self.acked:
            ts = self.plan.timestamp(step)
            keys.update((series, ts) for series in self.plan.lane_series(lane))
        return keys

    def ack_time(self, key: SampleKey) -> float | None:
        series, ts = key
        step = self.plan.step_of(ts)
        if step is None:
            return None
        return self.acked.get((series % self.plan.lanes, step))

    def summary(self) -> str:
        answers = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        return (
            f"requests attempted={self.attempted} acked={self.acked_requests} "
            f"refused={self.refused} given_up={self.given_up} answers[{answers}]"
        )

    async def run(self, *, stop: asyncio.Event | None = None, deadline_s: float = 300.0) -> None:
        """Send every step of every lane, until the plan ends, ``stop`` is set or the deadline."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        deadline = self.started_at + deadline_s
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(
                *(self._lane(session, lane, stop, deadline) for lane in range(self.plan.lanes))
            )
        self.finished_at = loop.time()

    async def _lane(
        self, session: aiohttp.ClientSession, lane: int, stop: asyncio.Event, deadline: float
    ) -> None:
        loop = asyncio.get_running_loop()
        for step in range(self.plan.steps):
            due = self.started_at + step * self.plan.interval_s
            if due > loop.time():
                await _wait(stop, min(due, deadline) - loop.time())
            if stop.is_set() or loop.time() >= deadline:
                return
            await self._send(session, lane, step, stop, deadline)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        lane: int,
        step: int,
        stop: asyncio.Event,
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        body = self._encoder.body(lane, step)
        give_up_at = min(loop.time() + self.retry_for_s, deadline)
        backoff = 0.0
        self.attempted += 1
        while True:
            retry_after: float | None = None
            try:
                async with session.post(self.url, data=body, headers=self.headers) as response:
                    await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.statuses["conn_error"] += 1
            else:
                self.statuses[str(status)] += 1
                if 200 <= status < 300:
                    self.acked[(lane, step)] = time.monotonic()
                    return
                if status not in (408, 429) and status < 500:
                    self.refused += 1
                    return
            backoff = min(self.max_backoff_s, backoff * 2 if backoff else self.min_backoff_s)
            delay = min(self.max_backoff_s, max(backoff, retry_after or 0.0))
            if stop.is_set() or loop.time() + delay > give_up_at:
                self.given_up += 1
                return
            await _wait(stop, delay)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` unless ``event`` is set first (pacing and backoff, interruptible)."""
    if seconds <= 0 or event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


# --------------------------------------------------------------------------------------------
# The recording receiver

Mode = Literal["ok", "down", "hang", "error"]


class RecordingReceiver:
    """A remote-write backend on 127.0.0.1 that records every sample it accepts.

    Modes: ``ok`` answers 204 and records; ``error`` answers 500 and records nothing; ``hang``
    never answers (until the mode changes, then 503, still recording nothing: the sender has
    given up on that request by then); ``down`` closes the listening socket and every open
    connection, so the relay sees connection refused/reset as with a dead backend. Only 2xx
    answers record, since a sender may rightly resend anything else.
    """

    def __init__(self, name: str = "receiver", port: int | None = None) -> None:
        self.name = name
        self.port = port or rig.free_port()
        self.mode: Mode = "down"
        self.samples: list[tuple[int, int, float, float]] = []  # series, ts, value, monotonic
        self.counts: dict[SampleKey, int] = {}
        self.answers: Counter[str] = Counter()  # per mode/status, for diagnostics
        self._runner: web.AppRunner | None = None
        self._wake = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/api/v1/write"

    async def start(self, mode: Mode = "ok") -> None:
        await self.set_mode(mode)

    async def set_mode(self, mode: Mode) -> None:
        self._wake.set()  # release hung requests whatever comes next
        self._wake = asyncio.Event()
        if mode == "down" and self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        elif mode != "down" and self._runner is None:
            app = web.Application(client_max_size=1 << 30)
            app.router.add_post("/api/v1/write", self._handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, HOST, self.port, reuse_address=True).start()
            self._runner = runner
        self.mode = mode

    async def close(self) -> None:
        await self.set_mode("down")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        body = await request.read()
        if mode == "hang":
            self.answers["hang"] += 1
            await self._wake.wait()
            return web.Response(status=503, text="released from hang\n")
        if mode != "ok":  # "error", or "down" for a request that slipped in while closing
            self.answers["500"] += 1
            return web.Response(status=500, text="scripted failure\n")
        try:
            v2 = "io.prometheus.write.v2.Request" in request.headers.get("Content-Type", "")
            batch = (rw2 if v2 else rw1).decode(snappy.decompress(body, 1 << 30))
            at = time.monotonic()
            records = [
                (int(dict(s.labels)["series"]), sample.timestamp, sample.value, at)
                for s in batch.series
                for sample in s.samples
            ]
        except (DecodeError, KeyError, ValueError) as exc:
            self.answers["400"] += 1
            return web.Response(status=400, text=f"undecodable: {exc}\n")
        self.samples.extend(records)
        for series, ts, _, _ in records:
            key = (series, ts)
            self.counts[key] = self.counts.get(key, 0) + 1
        self.answers["204"] += 1
        return web.Response(status=204)

    def missing(self, keys: set[SampleKey]) -> int:
        return sum(1 for k in keys if k not in self.counts)

    def first_arrivals(self) -> Iterator[tuple[int, int, float, float]]:
        """Samples in receive order, each at its first arrival only (resends skipped)."""
        seen: set[SampleKey] = set()
        for record in self.samples:
            key = (record[0], record[1])
            if key not in seen:
                seen.add(key)
                yield record


async def wait_delivered(
    loader: Loader, receiver: RecordingReceiver, timeout_s: float, interval_s: float = 0.1
) -> int:
    """Poll until every acked sample reached ``receiver``; the number still missing at the end."""
    keys = loader.acked_keys()
    deadline = time.monotonic() + timeout_s
    missing = receiver.missing(keys)
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        missing = receiver.missing(keys)
    return missing


# --------------------------------------------------------------------------------------------
# Accounting


@dataclass(frozen=True)
class Accounting:
    """What happened to the acked samples of one scenario at one receiver.

    - ``acked``: samples whose request got a 2xx from the relay;
    - ``delivered``: acked samples the receiver got at least once;
    - ``duplicated``: extra copies received beyond the first (any sample, acked or not);
    - ``lost``: acked samples never received (must be 0: a 2xx is a promise);
    - ``out_of_order``: first arrivals whose timestamp is below one already received for the
      same series (resends after a crash are excluded: they repeat, they do not reorder);
    - ``corrupt``: received samples not in the plan or with the wrong value.
    """

    scenario: str
    acked: int
    delivered: int
    duplicated: int
    lost: int
    out_of_order: int
    corrupt: int = 0

    def line(self) -> str:
        return (
            f"{self.scenario} acked={self.acked} delivered={self.delivered} "
            f"duplicated={self.duplicated} lost={self.lost} out_of_order={self.out_of_order}"
        )


def out_of_order_examples(receiver: RecordingReceiver, limit: int = 3) -> list[str]:
    """The first few reorderings, as ``series N: ts T after T'``, for failure messages."""
    newest: dict[int, int] = {}
    examples: list[str] = []
    for series, ts, _, _ in receiver.first_arrivals():
        if ts < newest.get(series, ts):
            examples.append(f"series {series}: ts {ts} after {newest[series]}")
            if len(examples) >= limit:
                break
        else:
            newest[series] = ts
    return examples


def account(scenario: str, loader: Loader, receiver: RecordingReceiver) -> Accounting:
    acked = loader.acked_keys()
    delivered = sum(1 for k in acked if k in receiver.counts)
    duplicated = sum(c - 1 for c in receiver.counts.values() if c > 1)
    newest: dict[int, int] = {}
    out_of_order = 0
    for series, ts, _, _ in receiver.first_arrivals():
        if ts < newest.get(series, ts):
            out_of_order += 1
        else:
            newest[series] = ts
    corrupt = 0
    for series, ts, value, _ in receiver.samples:
        expected = loader.plan.expected_value((series, ts))
        if expected is None or expected != value:
            corrupt += 1
    return Accounting(
        scenario, len(acked), delivered, duplicated, len(acked) - delivered, out_of_order, corrupt
    )


# --------------------------------------------------------------------------------------------
# The relay as a child process


def relay_config(
    destinations: list[dict[str, Any]],
    *,
    spool_dir: Path | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A relay configuration with only what the fault tests exercise: no Flux rules, no federate
    store (their work would only add noise to timings and memory)."""
    config: dict[str, Any] = {
        "flux": {"mode": "off"},
        "federate": {"enabled": False},
        "remote_write": destinations,
    }
    if spool_dir is not None:
        config["spool"] = {"data_dir": str(spool_dir)}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


class RelayProcess:
    """``python -m gotk_relay serve`` on a fixed port and config, so it can be SIGKILLed and
    restarted in place (same port, same spool) as a crashed pod would be.

    The child is a :class:`rig.Proc`: stopped by PID, never by name, and killed by the kernel
    if the test process dies. Create and start it from the thread running the event loop.
    """

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        name: str = "relay",
        shutdown_timeout_s: float = 2.0,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.port = rig.free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.shutdown_timeout_s = shutdown_timeout_s
        self.proc: rig.Proc | None = None
        self.starts = 0
        self.kills = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.base_url}/api/v1/write"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "relay not started"
        return self.proc.pid

    async def start(self, ready_timeout_s: float = 30.0) -> None:
        argv = [
            sys.executable,
            "-m",
            "gotk_relay",
            "serve",
            "--config",
            str(self.config_path),
            "--listen-address",
            f"{HOST}:{self.port}",
            "--shutdown-timeout",
            str(self.shutdown_timeout_s),
        ]
        # The relay runs the same gotk_relay tree this process imported (the codecs the loader
        # and receiver use), even when PYTHONPATH points at another checkout.
        env = rig.relay_env({"PYTHONPATH": str(Path(gotk_relay.__file__).resolve().parents[1])})
        self.proc = rig.Proc(self.name, argv, self.workdir, env=env, cwd=rig.REPO_ROOT)
        self.starts += 1
        await self._wait_ready(ready_timeout_s)

    async def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self.proc.alive:
                    raise rig.RigError(
                        f"{self.name} exited with {self.proc.returncode} before ready:\n"
                        f"{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(f"{self.base_url}/-/ready") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise rig.RigError(f"{self.name} not ready in {timeout_s}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, whatever was not on disk is gone."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.stop, 5.0)  # reaps it; the SIGTERM it may add is moot
        self.kills += 1

    async def stop(self) -> int | None:
        """SIGTERM and wait (in a thread: the loop must keep serving the receivers the relay
        drains to); SIGKILL after the shutdown timeout plus a margin."""
        if self.proc is None:
            return None
        return await asyncio.to_thread(self.proc.stop, self.shutdown_timeout_s + 10.0)

    def rss_bytes(self) -> int:
        """Resident set size from ``/proc/<pid>/status`` (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise rig.RigError(f"no VmRSS for pid {self.pid}")

    def log_tail(self, lines: int = 30) -> str:
        return self.proc.log_tail(lines) if self.proc is not None else "<not started>"
