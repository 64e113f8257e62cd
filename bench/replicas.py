"""Gateway replicas behind a real HAProxy: how throughput grows with replicas (docs/scaling.md).

    .venv/bin/python -m bench.replicas                       # 1, 2, 3 replicas, 10 s each
    .venv/bin/python -m bench.replicas --replicas 1,2 --duration 5 --json /tmp/r.json

For each replica count N a fresh sink (``bench.sink``), N gateway relays (the shape of
config/examples/gateway.yml: ``receiver.acknowledge: delivered``, ``flux.mode: off``, the Flux
inputs to a second destination, everything else to the first; both destinations are the sink
here) and HAProxy (round robin, ``/-/ready`` checks: tests/support/balancer.py) are started,
nothing pinned. The benchmark's loader (tests/support/loadgen.py, the ``cluster`` workload: 2000
samples per request, 0.1 % Flux series) pushes as fast as the acknowledgements come over
``--connections`` keep-alive connections to HAProxy, after a 1 s warm-up. Reported per N:

* accepted samples/s (acknowledged: with ``delivered`` that is also in the sink);
* each replica's CPU seconds over the phase (utime + stime from ``/proc``) and HAProxy's;
* samples per CPU-second of one replica (accepted / the replicas' CPU seconds together);
* p50 / p99 of the write latency the loader saw (send to answer), at full load;
* delivered: the sink holds at least every acknowledged sample (more when a write answered
  503 after part of it was delivered, and sent again).

``--flux-tier`` measures the other tier instead: ONE relay as config/examples/flux-tier.yml runs it
(``flux.mode: legacy``, a spool) taking only Flux inputs (a workload of ``gotk_resource_info``
series alone, ``--series`` objects), loaded directly; delivered when the sink holds the
acknowledged inputs and the four legacy series the rules add per input sample.

The relays, HAProxy, the sink and the loader share the machine's cores: on a 2-core machine
the replicas' throughput cannot grow past what two cores give. The per-replica samples per
CPU-second is the figure that carries to a larger machine (docs/scaling.md's model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.phases import sink_stats
from bench.processes import HOST, Proc, cpu_seconds, free_port, start_sink, wait_ready
from tests.support import loadgen
from tests.support.balancer import haproxy_config, haproxy_path

FLUX_INPUTS = "gotk_resource_info|flux_resource_info|gotk_reconcile_condition|gotk_suspend_status"


def gateway_config(sink_url: str) -> dict[str, Any]:
    """config/examples/gateway.yml with both destinations at the sink."""
    return {
        "receiver": {"acknowledge": "delivered"},
        "flux": {"mode": "off"},
        "federate": {"enabled": False},
        "remote_write": [
            {
                "name": "backend",
                "url": sink_url,
                "write_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": FLUX_INPUTS, "action": "drop"}
                ],
            },
            {
                "name": "flux-tier",
                "url": sink_url,
                "write_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": FLUX_INPUTS, "action": "keep"}
                ],
            },
        ],
    }


@dataclass
class Row:
    replicas: int
    accepted_per_s: float
    replica_cpu_s: list[float]
    haproxy_cpu_s: float
    samples_per_cpu_s_per_replica: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    acked: int
    in_sink: int

    @property
    def delivered(self) -> bool:
        return self.in_sink >= self.acked


async def measure(
    replicas: int, workload: loadgen.Workload, duration: float, connections: int, root: Path
) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix=f"replicas-{replicas}-", dir=root))
    haproxy = haproxy_path()
    if haproxy is None:
        raise SystemExit("haproxy not found: apt-get install haproxy")
    procs: list[Proc] = []
    try:
        sink, sink_port = start_sink(workdir, False, None)
        procs.append(sink)
        config = workdir / "gateway.yml"
        config.write_text(yaml.safe_dump(gateway_config(f"http://{HOST}:{sink_port}/api/v1/write")))
        ports = [free_port() for _ in range(replicas)]
        gateways = []
        for index, port in enumerate(ports):
            argv = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(config)]
            argv += ["--listen-address", f"{HOST}:{port}", "--log.level", "warn"]
            gateways.append(Proc(f"gateway-{index}", argv, None, workdir))
        procs += gateways
        balancer_port = free_port()
        balancer_config = workdir / "haproxy.cfg"
        balancer_config.write_text(haproxy_config(balancer_port, ports))
        balancer = Proc("haproxy", [haproxy, "-db", "-f", str(balancer_config)], None, workdir)
        procs.append(balancer)
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, sink, f"http://{HOST}:{sink_port}/stats")
            for gateway, port in zip(gateways, ports, strict=True):
                await wait_ready(session, gateway, f"http://{HOST}:{port}/-/ready")
            await wait_ready(session, balancer, f"http://{HOST}:{balancer_port}/-/ready")
            loader = loadgen.Loader(workload, HOST, balancer_port, connections)
            try:
                warm = await loader.run(1.0)
                before = [cpu_seconds(g.pid) for g in gateways]
                haproxy_before = cpu_seconds(balancer.pid)
                result = await loader.run(duration)
                used = [cpu_seconds(g.pid) - b for g, b in zip(gateways, before, strict=True)]
                haproxy_used = cpu_seconds(balancer.pid) - haproxy_before
            finally:
                await loader.close()
            stats = await sink_stats(session, sink_port)
    finally:
        for proc in reversed(procs):
            proc.stop()
    accepted = result.accepted_samples
    return Row(
        replicas=replicas,
        accepted_per_s=round(result.accepted_per_second),
        replica_cpu_s=[round(u, 2) for u in used],
        haproxy_cpu_s=round(haproxy_used, 2),
        samples_per_cpu_s_per_replica=round(accepted / sum(used)) if sum(used) else 0,
        p50_ms=round(result.percentile(0.5) * 1000, 2),
        p99_ms=round(result.percentile(0.99) * 1000, 2),
        statuses={str(k): v for k, v in sorted(result.statuses.items())},
        acked=warm.accepted_samples + accepted,
        in_sink=int(stats["samples"]),
    )


async def measure_flux_tier(
    workload: loadgen.Workload, duration: float, connections: int, root: Path
) -> Row:
    """One Flux tier relay (config/examples/flux-tier.yml) under a Flux-only workload."""
    workdir = Path(tempfile.mkdtemp(prefix="flux-tier-", dir=root))
    procs: list[Proc] = []
    try:
        sink, sink_port = start_sink(workdir, False, None)
        procs.append(sink)
        config = workdir / "flux-tier.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "flux": {"mode": "legacy", "keep_source": True},
                    "spool": {"data_dir": str(workdir / "spool")},
                    "remote_write": [
                        {"name": "backend", "url": f"http://{HOST}:{sink_port}/api/v1/write"}
                    ],
                }
            )
        )
        port = free_port()
        argv = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(config)]
        argv += ["--listen-address", f"{HOST}:{port}", "--log.level", "warn"]
        relay = Proc("flux-tier", argv, None, workdir)
        procs.append(relay)
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, sink, f"http://{HOST}:{sink_port}/stats")
            await wait_ready(session, relay, f"http://{HOST}:{port}/-/ready")
            loader = loadgen.Loader(workload, HOST, port, connections)
            try:
                warm = await loader.run(1.0)
                before = cpu_seconds(relay.pid)
                result = await loader.run(duration)
            finally:
                await loader.close()
            # Acknowledged once spooled: the CPU counts until the sink has all of it.
            want = (warm.accepted_samples + result.accepted_samples) * 5  # input + 4 legacy
            deadline = time.monotonic() + 60
            in_sink = 0
            while time.monotonic() < deadline:
                in_sink = int((await sink_stats(session, sink_port))["samples"])
                if in_sink >= want:
                    break
                await asyncio.sleep(0.05)
            used = cpu_seconds(relay.pid) - before
    finally:
        for proc in reversed(procs):
            proc.stop()
    accepted = result.accepted_samples
    return Row(
        replicas=1,
        accepted_per_s=round(result.accepted_per_second),
        replica_cpu_s=[round(used, 2)],
        haproxy_cpu_s=0.0,
        samples_per_cpu_s_per_replica=round(accepted / used) if used else 0,
        p50_ms=round(result.percentile(0.5) * 1000, 2),
        p99_ms=round(result.percentile(0.99) * 1000, 2),
        statuses={str(k): v for k, v in sorted(result.statuses.items())},
        acked=want,
        in_sink=in_sink,
    )


def table(rows: list[Row]) -> str:
    lines = [
        f"{'replicas':>8} {'accepted/s':>11} {'replica CPU-s':>20} {'haproxy CPU-s':>13} "
        f"{'samples/CPU-s/replica':>21} {'p50 ms':>7} {'p99 ms':>7}  delivered  statuses"
    ]
    for r in rows:
        cpu = " ".join(f"{c:.1f}" for c in r.replica_cpu_s)
        lines.append(
            f"{r.replicas:>8} {r.accepted_per_s:>11,.0f} {cpu:>20} {r.haproxy_cpu_s:>13.1f} "
            f"{r.samples_per_cpu_s_per_replica:>21,} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f}  "
            f"{'ok' if r.delivered else 'MISSING':>9}  {r.statuses}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    fraction = 1.0 if args.flux_tier else 0.001
    spec = loadgen.WorkloadSpec("cluster", series=args.series, flux_fraction=fraction)
    workload = loadgen.Workload(spec)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as root:
        if args.flux_tier:
            rows.append(
                await measure_flux_tier(workload, args.duration, args.connections, Path(root))
            )
        for replicas in [] if args.flux_tier else args.replicas:
            started = time.monotonic()
            rows.append(
                await measure(replicas, workload, args.duration, args.connections, Path(root))
            )
            print(f"{replicas} replica(s): {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps([asdict(r) | {"delivered": r.delivered} for r in rows], indent=2)
        )
    return 0 if all(r.delivered for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per replica count")
    parser.add_argument("--connections", type=int, default=12, help="the loader's, to HAProxy")
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--json", default="bench/results/replicas.json")
    parser.add_argument(
        "--flux-tier", action="store_true", help="one Flux tier relay on Flux inputs alone"
    )
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
