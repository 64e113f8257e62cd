"""Micro-benchmark of the write path's byte-level steps (survey, route, re-frame) on one core.

Why: the relay's throughput is bounded by CPU per batch. This measures each building block of
"forward the bytes that came, touch only what a rule changes" on realistic 2000-series batches
(node-exporter and kube-state-metrics shapes, ~11 labels, one sample each), beside today's full
decode + re-encode, so a change to either shows up as ms per batch and samples per CPU-second.

Timing is ``time.process_time`` (CPU, not wall) over ``--iterations`` runs, best of
``--repeats``: the minimum is the least disturbed by whatever else the machine is running.

Usage: .venv/bin/python -m bench.micro_fastpath [--iterations 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Final

from gotk_relay.model import Batch, Sample, Series, labels_from
from gotk_relay.rules.relabel import RelabelConfig
from gotk_relay.wire import rw1, rw1_bytes, snappy, validate
from gotk_relay.wire import snappy_concat as sc
from gotk_relay.wire.labels import NO_LIMITS
from gotk_relay.write.routing import Router

SERIES_PER_BATCH: Final = 2000
TS: Final = 1_764_000_000_000
FLUX_NAMES: Final = frozenset({b"gotk_resource_info"})
LEGACY_NAMES: Final = frozenset(
    {b"gotk_reconcile_condition", b"gotk_suspend_status", b"gotk_resource_info"}
)
_CPU_MODES: Final = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
_KSM: Final = {
    "container": "kube-state-metrics",
    "endpoint": "http",
    "instance": "10.42.3.17:8080",
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
}
_FLUX_KINDS: Final = (
    ("kustomize.toolkit.fluxcd.io", "Kustomization", "v1"),
    ("helm.toolkit.fluxcd.io", "HelmRelease", "v2"),
    ("source.toolkit.fluxcd.io", "GitRepository", "v1"),
    ("source.toolkit.fluxcd.io", "HelmRepository", "v1"),
)


def _node(rng: random.Random, i: int) -> dict[str, str]:
    family = rng.choice(
        ("node_cpu_seconds_total",) * 6
        + ("node_filesystem_avail_bytes", "node_network_receive_bytes_total", "node_load1")
    )
    labels = {
        "__name__": family,
        "container": "node-exporter",
        "endpoint": "http-metrics",
        "instance": f"10.0.{i // 250 % 256}.{i % 250}:9100",
        "job": "node-exporter",
        "namespace": "monitoring",
        "pod": f"node-exporter-{rng.getrandbits(20):05x}",
        "service": "kube-prometheus-stack-prometheus-node-exporter",
    }
    if family == "node_cpu_seconds_total":
        labels |= {"cpu": str(i % 16), "mode": _CPU_MODES[i % 8]}
    elif family != "node_load1":
        labels["device"] = f"nvme{i % 4}n1"
    return labels


def _pod(rng: random.Random, i: int) -> dict[str, str]:
    family = rng.choice(("kube_pod_info", "kube_pod_status_phase", "kube_pod_owner"))
    name = f"app-{i // 7:05d}-{rng.getrandbits(36):09x}-{rng.getrandbits(20):05x}"
    return {
        "__name__": family,
        **_KSM,
        "namespace": f"team-{i % 40:02d}",
        "pod": name,
        "uid": f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}",
    }


def _flux(rng: random.Random, i: int) -> dict[str, str]:
    """``gotk_resource_info`` as Prometheus stores it after scraping kube-state-metrics."""
    group, kind, version = _FLUX_KINDS[i % len(_FLUX_KINDS)]
    return {
        "__name__": "gotk_resource_info",
        **_KSM,
        "namespace": "monitoring",
        "pod": "kube-prometheus-stack-kube-state-metrics-5c8d7b9f6-x2q4z",
        "customresource_group": group,
        "customresource_kind": kind,
        "customresource_version": version,
        "exported_namespace": f"team-{i % 40:02d}",
        "name": f"{kind.lower()}-{i:06d}",
        "ready": rng.choice(("True",) * 9 + ("False",)),
        "suspended": "false",
    }


def make_batch(seed: int, flux_fraction: float, n: int = SERIES_PER_BATCH) -> Batch:
    rng = random.Random(seed)
    flux_every = round(1 / flux_fraction) if flux_fraction else 0
    items = []
    for i in range(n):
        if flux_every and i % flux_every == flux_every // 2:
            labels = _flux(rng, seed * n + i)
        else:
            labels = (_node if i % 3 else _pod)(rng, seed * n + i)
        value = rng.uniform(0, 1e10)
        items.append(Series(labels_from(labels), (Sample(value, TS + seed),)))
    return Batch(tuple(items))


def measure(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    """Best CPU seconds per call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(iterations):
            fn()
        best = min(best, (time.process_time() - start) / iterations)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    plain = [make_batch(seed, 0.0) for seed in range(10)]
    raws = [rw1.encode(b) for b in plain]
    bodies = [snappy.compress(r) for r in raws]
    raw, body = raws[0], bodies[0]
    sparse = rw1.encode(make_batch(11, 0.001))  # 2 Flux series
    dense = rw1.encode(make_batch(12, 0.05))  # 100 Flux series
    dense_body = snappy.compress(dense)
    parts = rw1_bytes.split(raw)

    def pick(data: bytes, names: frozenset[bytes], strict: bool = True) -> list[bytes]:
        found = rw1_bytes.survey(data, names, frozenset(), NO_LIMITS, strict=strict)
        if not isinstance(found, rw1_bytes.Survey):  # not built: the reference does it all
            found = validate.survey(data, names, frozenset(), NO_LIMITS)
        return list(found.picked)

    dense_hits = pick(dense, FLUX_NAMES)
    assert pick(raw, LEGACY_NAMES) == []
    assert len(pick(sparse, FLUX_NAMES)) == 2 and len(dense_hits) == 100
    assert rw1_bytes.count_points(raw) == SERIES_PER_BATCH
    # What a Flux rule would add per gotk_resource_info series: 3 conditions + suspend status.
    synthesized = rw1.encode(
        Batch(
            tuple(
                Series(
                    labels_from({**_flux(random.Random(i), i), "type": "Ready"}), (Sample(1, TS),)
                )
                for i in range(4 * len(dense_hits))
            )
        )
    )
    # A batch's share of an outgoing request merged from 10 received bodies.
    merged_share = 1 / len(bodies)
    it, rep = args.iterations, args.repeats
    drop = Router([RelabelConfig(source_labels=["__name__"], regex="go_gc_.*", action="drop")])

    def full_no_match() -> bytes:
        for b in bodies:
            if pick(snappy.decompress(b, 1 << 26), LEGACY_NAMES):
                raise AssertionError
        return sc.concat(bodies)

    def full_dense() -> bytes:
        hits = pick(snappy.decompress(dense_body, 1 << 26), FLUX_NAMES)
        rw1.decode(rw1_bytes.rebuild(hits))  # what the Flux rule reads
        return sc.append_literal(dense_body, synthesized)  # the source series are kept

    def full_dense_compressed() -> bytes:
        hits = pick(snappy.decompress(dense_body, 1 << 26), FLUX_NAMES)
        rw1.decode(rw1_bytes.rebuild(hits))
        return sc.concat([dense_body, snappy.compress(synthesized)])  # smaller on the wire

    rows: list[tuple[str, float, float]] = [
        ("decompress (snappy)", measure(lambda: snappy.decompress(body, 1 << 26), it, rep), 1),
        ("survey, strict, no Flux", measure(lambda: pick(raw, LEGACY_NAMES), it, rep), 1),
        (
            "survey, framing, no Flux",
            measure(lambda: pick(raw, LEGACY_NAMES, strict=False), it, rep),
            1,
        ),
        ("survey, strict, 5% Flux", measure(lambda: pick(dense, FLUX_NAMES), it, rep), 1),
        ("split", measure(lambda: rw1_bytes.split(raw), it, rep), 1),
        ("count_points(raw body)", measure(lambda: rw1_bytes.count_points(raw), it, rep), 1),
        ("rebuild (all 2000 series)", measure(lambda: rw1_bytes.rebuild(*parts), it, rep), 1),
        ("route: drop by name", measure(lambda: drop.route(raw), it, rep), 1),
        (
            "concat 10 compressed (per batch)",
            measure(lambda: sc.concat(bodies), it, rep),
            merged_share,
        ),
        (
            f"append_literal ({len(synthesized) // 1024} KiB)",
            measure(lambda: sc.append_literal(body, synthesized), it, rep),
            1,
        ),
        (
            "path: decompress→survey→concat",
            measure(full_no_match, max(1, it // 10), rep),
            merged_share,
        ),
        (
            "path: 5% Flux →decode hits→append",
            measure(full_dense, it, rep),
            1,
        ),
        (
            "path: 5% Flux →decode hits→concat(comp)",
            measure(full_dense_compressed, it, rep),
            1,
        ),
        (
            "baseline: rw1.decode",
            measure(lambda: rw1.decode(raw), max(1, it // 20), rep),
            1,
        ),
        (
            "baseline: rw1.encode",
            measure(lambda: rw1.encode(plain[0]), max(1, it // 20), rep),
            1,
        ),
        ("baseline: snappy compress", measure(lambda: snappy.compress(raw), it, rep), 1),
    ]
    print(
        f"{SERIES_PER_BATCH} series/batch, {len(raw) / 1024:.0f} KiB raw, "
        f"{len(body) / 1024:.0f} KiB snappy; best of {rep} × {it} (CPU time, one core)"
    )
    print(
        f"5% Flux: {len(dense_body) / 1024:.0f} KiB snappy + {len(synthesized) / 1024:.0f} KiB "
        f"synthesized: appended as a literal {len(full_dense()) / 1024:.0f} KiB, "
        f"compressed and concatenated {len(full_dense_compressed()) / 1024:.0f} KiB"
    )
    print(f"{'step':40s} {'ms/batch':>9s} {'samples/CPU-s':>15s}")
    for label, seconds, share in rows:
        per_batch = seconds * share
        print(f"{label:40s} {per_batch * 1e3:9.3f} {SERIES_PER_BATCH / per_batch:15,.0f}")


if __name__ == "__main__":
    main()
