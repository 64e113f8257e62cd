"""The measured phases: one system on one workload (warm-up, throughput, latency with its
floor), and gotk-relay's memory with few and many distinct series.

A phase pushes with the loader, then waits until the sink holds everything the acked batches
must deliver (per destination, :class:`Tally`), and measures what the system spent from the
phase's start until then. The results are :mod:`results`' records; nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import variants
from bench.processes import (
    HOST,
    LOAD_CORE,
    SUT_CORE,
    Proc,
    System,
    core_busy_seconds,
    cpu_seconds,
    own_cpu_seconds,
    peak_rss_kib,
    reset_peak_rss,
    start_sink,
    start_system,
    status_kib,
    steal_seconds,
    system_cores,
    wait_ready,
)
from bench.results import FloorFigures, MemoryRow, Phase, SystemResult
from bench.settings import SINK_NICE_DURING_LATENCY, Settings
from bench.variants import VARIANTS
from tests.support import loadgen

BatchCounts = list[tuple[Counter[str], Counter[str]]]


def batch_counts(workload: loadgen.Workload, key: str) -> BatchCounts:
    """Per batch: what its first accepted round and its later ones deliver, per destination,
    under the expectation ``key`` (``<variant>/<system>``, see :mod:`variants`)."""
    assert workload.series is not None, "the workload must keep its series"
    expectation = variants.expectation(key)
    return [expectation.batch_counts(batch) for batch in workload.series]


def pass_through_counts(workload: loadgen.Workload) -> BatchCounts:
    """Every sample to the one remote_write, unchanged (the memory runs: no Flux series)."""
    out = []
    for batch in workload.batches:
        counts = Counter({variants.REMOTE_WRITE: batch.samples})
        out.append((counts, counts))
    return out


@dataclass
class Tally:
    """What the loader had acked so far, and so what the sink must end up with (per
    destination, from each acked batch's counts)."""

    expectation: str
    counts: BatchCounts
    accepted: int = 0
    accepted_flux: int = 0
    acked: list[tuple[int, int]] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    _seen: set[int] = field(default_factory=set)

    def add(self, result: loadgen.PhaseResult) -> None:
        self.accepted += result.accepted_samples
        self.accepted_flux += result.accepted_flux
        self.acked += result.acked
        # Rounds of a batch are sent in order over one connection, one at a time: the first
        # acked is the first the system took (a Datadog count sends no point for it).
        for index, _ in result.acked:
            first, later = self.counts[index]
            self.expected.update(later if index in self._seen else first)
            self._seen.add(index)


async def sink_stats(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """The sink's ``/stats``: its counts per destination (``by_destination``) and more."""
    async with session.get(f"http://{HOST}:{port}/stats") as response:
        return dict(await response.json())


async def drain(
    session: aiohttp.ClientSession, port: int, expected: Counter[str], timeout: float
) -> tuple[Counter[str], float]:
    """Wait until the sink holds ``expected`` samples per destination (or more somewhere,
    stable for 1 s, or timeout).

    Returns (samples counted per destination, monotonic time when a count last changed).
    """
    deadline = time.monotonic() + timeout
    want = +expected  # without zero counts, as the sink reports them
    last: Counter[str] | None = None
    changed = time.monotonic()
    while True:
        got = Counter((await sink_stats(session, port))["by_destination"])
        now = time.monotonic()
        if got != last:
            last, changed = got, now
        over = any(n > want[dest] for dest, n in got.items())
        if +got == want or (over and now - changed > 1.0) or now >= deadline:
            return +got, changed
        await asyncio.sleep(0.02)


@dataclass
class Floor:
    """A bare receiver alone on the system's core, and the loader that pushes to it.

    Why: on a shared virtual machine a p99 holds the machine's own stalls (steal time, the
    loader's scheduling), which move from 3 to 23 ms here from one quarter of an hour to the
    next. The latency phase alternates between the system and this receiver, slice by slice at
    the same rate, so both tails are taken in the same seconds and their difference is what
    the system adds.
    """

    sink: Proc
    loader: loadgen.Loader
    result: loadgen.PhaseResult = field(default_factory=loadgen.PhaseResult)
    steal: float = 0.0
    slices: int = 0

    def figures(self, rate: float) -> FloorFigures:
        result = self.result
        return FloorFigures(
            requests=result.requests,
            accepted_requests=result.accepted_requests,
            late_sends=result.late_sends,
            p50_ms=round(result.percentile(0.5) * 1000, 3),
            p99_ms=round(result.percentile(0.99) * 1000, 3),
            max_ms=round(max(result.latencies, default=0.0) * 1000, 3),
            steal_ms=round(self.steal * 1000),
            target_rate_per_s=round(rate, 1),
            slices=self.slices,
        )


async def start_floor(
    workload: loadgen.Workload,
    settings: Settings,
    session: aiohttp.ClientSession,
    workdir: Path,
) -> Floor:
    """A fresh sink (it decompresses and counts, then answers; nothing else) on the system's
    core."""
    core = SUT_CORE if settings.pinned else None
    sink, port = start_sink(workdir, False, core, name="floor-sink", count_first=True)
    try:
        await wait_ready(session, sink, f"http://{HOST}:{port}/stats")
    except BaseException:
        sink.stop()
        raise
    return Floor(sink, loadgen.Loader(workload, HOST, port, settings.connections))


def latency_slices(duration: float, settings: Settings) -> int:
    """How many system/floor alternations a latency phase of ``duration`` is cut into (≥ 2,
    so the smoke run takes the same path as a full one)."""
    return max(2, round(duration / settings.latency_slice))


async def run_phase(
    loader: loadgen.Loader,
    session: aiohttp.ClientSession,
    system: System,
    sink: Proc,
    sink_port: int,
    tally: Tally,
    duration: float,
    settings: Settings,
    rate: float | None = None,
    rounds: int | None = None,
    floor: Floor | None = None,
) -> Phase:
    """Push to the system for ``duration`` seconds, wait until the sink has it all, measure.

    With ``floor``, the push is cut into slices, each followed by the same push to the bare
    receiver: after each system slice the sink must hold everything the system took (so the
    system's forwarding is over before the receiver takes its core), then the receiver gets a
    slice of the same length at the same rate. The phase's figures (wall, CPU, steal, latency)
    are the system slices' sums; the receiver's are kept in ``floor``.
    """
    slices = 1 if floor is None else latency_slices(duration, settings)
    span = duration / slices
    if rounds is not None:
        rounds = -(-rounds // slices)
    result = loadgen.PhaseResult()
    wall = sut_cpu = loader_cpu = core_busy = steal = 0.0
    start, cpu_start = time.monotonic(), cpu_seconds(system.proc.pid)
    for _ in range(slices):
        cpu0, own0, sink0 = cpu_seconds(system.proc.pid), own_cpu_seconds(), cpu_seconds(sink.pid)
        busy0, steal0 = sum(core_busy_seconds(c) for c in system.cores), steal_seconds()
        t0 = time.monotonic()
        part = await loader.run(span, rate, rounds)
        t1 = time.monotonic()
        cpu1, own1, sink1 = cpu_seconds(system.proc.pid), own_cpu_seconds(), cpu_seconds(sink.pid)
        busy1, steal1 = sum(core_busy_seconds(c) for c in system.cores), steal_seconds()
        wall += t1 - t0
        sut_cpu += cpu1 - cpu0
        loader_cpu += (own1 - own0) + (sink1 - sink0)
        core_busy += busy1 - busy0
        steal += steal1 - steal0
        result.absorb(part)
        tally.add(part)
        if floor is not None:
            await drain(session, sink_port, tally.expected, settings.drain_timeout)
            steal0 = steal_seconds()
            floor.result.absorb(await floor.loader.run(span, rate, rounds))
            floor.steal += steal_seconds() - steal0
            floor.slices += 1
    delivered, changed = await drain(session, sink_port, tally.expected, settings.drain_timeout)
    drained_at = min(changed, time.monotonic())
    cpu_end = cpu_seconds(system.proc.pid)
    return Phase(
        result=result,
        wall=wall,
        sut_cpu=sut_cpu,
        sut_cpu_drained=cpu_end - cpu_start,
        drain_wall=drained_at - start,
        loader_cpu=loader_cpu,
        core_busy=core_busy,
        steal=steal,
        delivered=delivered,
        expected=Counter(tally.expected),
    )


async def relay_self_report(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The relay's own counters, as a cross-check of the sink's (informational)."""
    out: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with session.get(f"http://{HOST}:{port}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            m = re.match(r"(gotk_relay_samples_(?:forwarded|dropped)_total)\{[^}]*\} (\S+)", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


async def measure_system(
    name: str,
    workload: loadgen.Workload,
    settings: Settings,
    session: aiohttp.ClientSession,
    workdir: Path,
    variant: str = "plain",
    counts: BatchCounts | None = None,
) -> SystemResult:
    """Fresh sink and system; warm-up, throughput, latency; RSS, delivery and verification.

    A variant other than ``plain`` gets the warm-up and the throughput phase only (issue 17
    judges samples per CPU-second; the latency and floor phases would triple the run).
    """
    key = f"{variant}/{name}"
    if counts is None:
        counts = batch_counts(workload, key)
    with_latency = variant == "plain"
    sut_core = system_cores(name, settings)
    load_core = LOAD_CORE if settings.pinned else None
    sink, sink_port = start_sink(workdir, settings.full_verify, load_core)
    system: System | None = None
    loader: loadgen.Loader | None = None
    floor: Floor | None = None
    try:
        await wait_ready(session, sink, f"http://{HOST}:{sink_port}/stats")
        system = start_system(
            name,
            sink_port,
            workdir,
            sut_core,
            settings.relay_validation,
            settings.relay_workers if name == "gotk-relay" else 1,
            variant,
        )
        await wait_ready(session, system.proc, f"http://{HOST}:{system.port}{system.ready_path}")
        loader = loadgen.Loader(workload, HOST, system.port, settings.connections)
        loader.record_acked = True  # the tally counts what each acked batch delivers
        tally = Tally(key, counts)
        args = (loader, session, system, sink, sink_port, tally)
        cap = settings.max_rounds
        phases = []
        if settings.warmup > 0:
            phases.append(await run_phase(*args, settings.warmup, settings, rounds=cap))
        peak = await run_phase(*args, settings.duration, settings, rounds=cap)
        rate = 0.5 * peak.result.accepted_per_second
        phases.append(peak)
        steady: Phase | None = None
        latency_hwm: int | None = None
        reset = False
        before = peak_rss_kib(system.proc.pid)
        if with_latency:
            # The sink shares the loader's core, and answering a 1.3 MB merged request takes
            # it a few ms: at equal priority the loader could wait that long to read a
            # response it already has, and the system would be charged for it. Each system
            # gets a fresh sink, so it stays at the lower priority until it is stopped.
            os.setpriority(os.PRIO_PROCESS, sink.pid, SINK_NICE_DURING_LATENCY)
            floor = await start_floor(workload, settings, session, workdir)
            reset = reset_peak_rss(system.proc.pid)
            steady = await run_phase(
                *args, settings.duration, settings, rate=rate, rounds=cap, floor=floor
            )
            phases.append(steady)
        during = peak_rss_kib(system.proc.pid)
        hwm = sum(max(kib, before.get(p, 0)) for p, kib in during.items())
        if steady is not None and reset:
            latency_hwm = sum(during.values())
        rss = status_kib(system.proc.pid, "VmRSS")
        self_report = {}
        if name == "gotk-relay":
            self_report = await relay_self_report(session, system.port)
        verification = None
        if settings.full_verify:
            payload = {
                "spec": workload.spec.to_json(),
                "expect": tally.expectation,
                "acked": tally.acked,
            }
            url = f"http://{HOST}:{sink_port}/verify"
            async with session.post(url, json=payload) as response:
                verification = await response.json()
        sink_final = await sink_stats(session, sink_port)
        exited = system.proc.popen.poll()  # a crash must not pass as a slow system
        # The remote_write destination got the protocol it was configured for (a 2.0 one falls
        # back to 1.0 when the receiver does not answer as 2.0 should: that is not a pass).
        protocols = set(sink_final["remote_write_requests"])
        wanted = VARIANTS[variant].rw_protocol
        protocol_ok = protocols <= {wanted} if wanted else not protocols
        delivered_ok = exited is None and protocol_ok and all(p.ok for p in phases)
        if verification is not None:
            delivered_ok = delivered_ok and bool(verification["ok"])

        def added(q: float) -> float | None:
            if steady is None or floor is None:
                return None
            return round((steady.result.percentile(q) - floor.result.percentile(q)) * 1000, 3)

        return SystemResult(
            system=name,
            variant=variant,
            workload=workload.spec.name,
            expectation=tally.expectation,
            warmup=phases[0] if settings.warmup > 0 else None,
            throughput=peak,
            latency=steady,
            latency_rate=rate,
            latency_floor=floor.figures(rate) if floor is not None else None,
            latency_added_p50_ms=added(0.5),
            latency_added_p99_ms=added(0.99),
            peak_rss_bytes=hwm * 1024,
            latency_peak_rss_bytes=latency_hwm * 1024 if latency_hwm is not None else None,
            rss_end_bytes=rss * 1024,
            delivered_by_destination=dict(sink_final["by_destination"]),
            expected_by_destination=dict(+tally.expected),
            remote_write_protocol_ok=protocol_ok,
            accepted_samples=tally.accepted,
            accepted_flux_samples=tally.accepted_flux,
            delivered_ok=delivered_ok,
            exit_code_during_run=exited,
            sink=sink_final,
            verification=verification,
            relay_self_report=self_report,
        )
    finally:
        if loader is not None:
            await loader.close()
        if floor is not None:
            await floor.loader.close()
            floor.sink.stop()
        if system is not None:
            system.proc.stop()
        sink.stop()


async def memory_scaling(
    settings: Settings, session: aiohttp.ClientSession, workdir: Path
) -> list[MemoryRow]:
    """gotk-relay's memory with few vs many distinct pass-through series.

    The big run is copies of the small one's series under different ``cluster`` labels, so only
    the number of distinct series differs. Each run is bounded by ``memory_timeout``: a relay
    too slow to take every series in time reports how many it took.
    """
    rows: list[MemoryRow] = []
    small, big = settings.memory_series
    plan = (
        (small, 1, settings.memory_rounds[0]),
        (big, max(1, big // small), settings.memory_rounds[1]),
    )
    for series, replicas, rounds in plan:
        spec = loadgen.WorkloadSpec(
            f"passthrough-{series}",
            series=series,
            batch_size=settings.batch_size,
            flux_fraction=0.0,
            ts_base_ms=int(time.time() * 1000),
            replicas=replicas,
        )
        workload = loadgen.Workload(spec, precompress=False)
        gc.collect()
        sut_core = system_cores("gotk-relay", settings)
        load_core = LOAD_CORE if settings.pinned else None
        run_dir = workdir / f"mem-{series}"
        run_dir.mkdir()
        sink, sink_port = start_sink(run_dir, False, load_core)
        system: System | None = None
        loader: loadgen.Loader | None = None
        try:
            await wait_ready(session, sink, f"http://{HOST}:{sink_port}/stats")
            system = start_system(
                "gotk-relay",
                sink_port,
                run_dir,
                sut_core,
                settings.relay_validation,
                settings.relay_workers,
            )
            ready = f"http://{HOST}:{system.port}{system.ready_path}"
            await wait_ready(session, system.proc, ready)
            idle = status_kib(system.proc.pid, "VmRSS")
            loader = loadgen.Loader(workload, HOST, system.port, settings.connections)
            loader.record_acked = True
            tally = Tally("plain/identity", pass_through_counts(workload))
            phase = await run_phase(
                loader,
                session,
                system,
                sink,
                sink_port,
                tally,
                settings.memory_timeout,
                settings,
                rounds=rounds,
            )
            rows.append(
                MemoryRow(
                    series=workload.samples_per_round,
                    replicas=replicas,
                    rounds=rounds,
                    rss_idle_bytes=idle * 1024,
                    peak_rss_bytes=status_kib(system.proc.pid, "VmHWM") * 1024,
                    rss_end_bytes=status_kib(system.proc.pid, "VmRSS") * 1024,
                    phase=phase,
                )
            )
        finally:
            if loader is not None:
                await loader.close()
            if system is not None:
                system.proc.stop()
            sink.stop()
        del workload
    return rows
