"""The fleet workload against a served relay: its RSS and CPU per sample as a user sees them.

Why: ``bench.inprocess --workload fleet`` measures the write path's share of one process;
issue 22's memory target (RSS ≤ 70 MiB + 4 KiB per Flux object) is about the relay a user runs.
This starts ``gotk-relay serve`` (the embedded default config plus one ``remote_write`` to a
sink that answers 204 at once), pinned to core 0 when the machine has two, sends the fleet's
rounds over HTTP from core 1 (``--connections`` at once, a 503 retried after 50 ms, as a
sender backs off), then reads the relay's ``VmRSS``/``VmHWM`` and its CPU time
(``/proc/<pid>/stat``) over the timed rounds until the sink has been idle for 0.5 s.

    .venv/bin/python -m bench.fleet_served --objects 100000 --flux-share 0.05 [--rounds 2]

Numbers from a shared machine are noisy; RSS much less so than CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from gotk_relay import config as config_module

from .fleet import Fleet

WARM_ROUNDS = 2  # round 0 meets every object, round 1 is the first steady one
HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
MiB = 1024 * 1024


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} is not on /metrics")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sink:
    def __init__(self) -> None:
        self.requests = 0
        self.last = time.monotonic()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        self.last = time.monotonic()
        return web.Response(status=204)


async def _push(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    for _ in range(2000):  # bounded: 100 s of 503s at most
        async with session.post(url, data=body, headers=HEADERS) as response:
            if response.status < 300:
                return
            if response.status != 503:
                raise RuntimeError(f"{response.status}: {(await response.text())[:200]}")
        await asyncio.sleep(0.05)
    raise RuntimeError("the relay kept answering 503")


async def _round(
    session: aiohttp.ClientSession, url: str, fleet: Fleet, r: int, conns: int
) -> None:
    bodies = [fleet.body(i, r) for i in range(len(fleet.requests))]
    queue = iter(bodies)

    async def lane() -> None:
        for body in queue:
            await _push(session, url, body)

    await asyncio.gather(*(lane() for _ in range(conns)))


async def run(objects: int, flux_share: float, rounds: int, conns: int, pin: bool = True) -> str:
    fleet = Fleet(objects, flux_share)
    sink = Sink()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/api/v1/write", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = _port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    relay_port = _port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(
            config_module.default_config_text().replace(
                "remote_write: []",
                f"remote_write:\n  - url: http://127.0.0.1:{sink_port}/api/v1/write\n",
            )
        )
        cmd = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(path)]
        cmd += ["--listen-address", f"127.0.0.1:{relay_port}", "--log.level", "warn"]
        # Its drain on SIGTERM bounded well within the wait below (the default is 30 s).
        cmd += ["--shutdown-timeout", "10"]
        pinned = pin and (os.cpu_count() or 1) >= 2
        if pinned:
            cmd = ["taskset", "-c", "0", *cmd]
            os.sched_setaffinity(0, {1})
        proc = subprocess.Popen(cmd)
        try:
            url = f"http://127.0.0.1:{relay_port}/api/v1/write"
            connector = aiohttp.TCPConnector(limit=conns)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(300):  # 30 s at most to start
                    try:
                        async with session.get(f"http://127.0.0.1:{relay_port}/-/ready") as ready:
                            if ready.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the relay did not become ready")
                idle = _status(proc.pid)["VmRSS"]
                for r in range(WARM_ROUNDS):
                    await _round(session, url, fleet, r, conns)
                cpu0 = _cpu(proc.pid)
                for r in range(WARM_ROUNDS, WARM_ROUNDS + rounds):
                    await _round(session, url, fleet, r, conns)
                for _ in range(600):  # 60 s at most for the queue to drain
                    if time.monotonic() - sink.last >= 0.5:
                        break
                    await asyncio.sleep(0.1)
                cpu = _cpu(proc.pid) - cpu0
                mem = _status(proc.pid)
                async with session.get(f"http://127.0.0.1:{relay_port}/metrics") as metrics:
                    tracked = _gauge(await metrics.text(), "gotk_relay_flux_objects")
        finally:
            proc.terminate()
            # Waited for off the loop: the sink runs on this loop and must answer the sends
            # of the relay's drain (a blocking wait once held a relay with a send left for
            # its whole shutdown timeout, in CI).
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise
            await runner.cleanup()
    samples = fleet.samples * rounds
    target = 70 * MiB + 4096 * objects
    per_object = (mem["VmRSS"] - idle) / objects / 1024
    return (
        f"served fleet objects={objects} flux_share={flux_share}: "
        f"{samples / max(cpu, 0.01) / 1000:,.0f}k samples/CPU-s over {rounds} rounds "
        f"({'relay on core 0' if pinned else 'unpinned'}); tracked {tracked:.0f}; "
        f"RSS idle {idle / MiB:.0f} MiB, "
        f"after {mem['VmRSS'] / MiB:.0f} MiB (peak {mem['VmHWM'] / MiB:.0f} MiB; "
        f"{per_object:.2f} KiB per object over idle); issue 22's target 70 MiB + 4 KiB per "
        f"object = {target / MiB:.0f} MiB: {'met' if mem['VmHWM'] <= target else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--flux-share", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    args = parser.parse_args()
    line = run(args.objects, args.flux_share, args.rounds, args.connections, not args.no_pin)
    print(asyncio.run(line))


if __name__ == "__main__":
    main()
