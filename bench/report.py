"""The report: the comparisons a run draws from its rows (relay over vmagent, each configuration
beside its peers), the goals of issues 16, 6 and 17 judged on them, and the tables printed.

Everything here reads :mod:`results`' records and computes or prints; nothing measures.
``bench/README.md`` explains each column and goal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Final

from bench.results import ConfigurationRow, MemoryRow, Ratio, Report, SystemResult, Verdict
from bench.settings import WORKLOADS
from bench.variants import VARIANTS

TABLE_COLUMNS: Final = (
    ("system", 21),
    ("workload", 11),
    ("accepted/s", 11),
    ("samples/CPU-s", 14),
    ("SUT CPU", 8),
    ("others", 7),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("peak RSS MiB", 13),
    ("@50% MiB", 9),
    ("delivered", 10),
)
#: issue 16's throughput goals: the relay's samples/CPU-s over vmagent's pass-through, strict.
THROUGHPUT_TARGETS: Final = (("cluster", 2.5), ("flux-heavy", 1.5))
ADDED_P99_TARGET_MS: Final = 10.0  # issue 6: p99 added latency per 2000-sample batch at 50%
RSS_AT_HALF_TARGET: Final = 0.5  # issue 6: the relay's peak RSS at 50% over vmagent's
RSS_GROWTH_TARGET: Final = 1.2  # issue 6: peak RSS with 1M distinct series over 50k


def plain(results: Sequence[SystemResult]) -> list[SystemResult]:
    """The rows of the plain configuration (the only ones with the latency phases)."""
    return [r for r in results if r.variant == "plain"]


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# --------------------------------------------------------------------------------------------
# Comparisons and goals


def ratio_rows(results: Sequence[SystemResult]) -> list[Ratio]:
    """gotk-relay divided by each vmagent variant, per workload (above 1: relay is more)."""
    results = plain(results)
    by = {(r.system, r.workload): r for r in results}
    out = []
    for workload in dict.fromkeys(r.workload for r in results):
        relay = by.get(("gotk-relay", workload))
        for other in ("vmagent", "vmagent-relabel"):
            base = by.get((other, workload))
            if relay is None or base is None:
                continue
            a, b = relay.throughput, base.throughput
            out.append(
                Ratio(
                    name=f"relay/{other}",
                    workload=workload,
                    accepted_per_s=_over(a.accepted_per_s, b.accepted_per_s),
                    samples_per_cpu_s=_over(a.samples_per_cpu_s, b.samples_per_cpu_s),
                    latency_p50_ms=_over(relay.latency_p50_ms, base.latency_p50_ms),
                    latency_p99_ms=_over(relay.latency_p99_ms, base.latency_p99_ms),
                    peak_rss_bytes=_over(relay.peak_rss_bytes, base.peak_rss_bytes),
                    latency_peak_rss_bytes=_over(
                        relay.latency_peak_rss_bytes, base.latency_peak_rss_bytes
                    ),
                )
            )
    return out


def configuration_rows(results: Sequence[SystemResult]) -> list[ConfigurationRow]:
    """Per variant and workload: the relay's samples/CPU-s beside vmagent's with the same
    feature (where it has it) and the relay's own plain figure."""
    by = {(r.variant, r.system, r.workload): r for r in results}
    out = []
    for r in results:
        if r.system != "gotk-relay":
            continue
        peer = by.get((r.variant, "vmagent", r.workload)) if VARIANTS[r.variant].vmagent else None
        base = by.get(("plain", "gotk-relay", r.workload))
        relay_rate = r.throughput.samples_per_cpu_s
        peer_rate = peer.throughput.samples_per_cpu_s if peer is not None else None
        base_rate = base.throughput.samples_per_cpu_s if base is not None else None
        out.append(
            ConfigurationRow(
                variant=r.variant,
                workload=r.workload,
                relay_samples_per_cpu_s=relay_rate,
                vmagent_samples_per_cpu_s=peer_rate,
                ratio=_over(relay_rate, peer_rate),
                ratio_to_plain=_over(relay_rate, base_rate),
                relay_peak_rss_bytes=r.peak_rss_bytes,
                vmagent_peak_rss_bytes=peer.peak_rss_bytes if peer is not None else None,
                relay_verified=r.delivered_ok,
                vmagent_verified=peer.delivered_ok if peer is not None else None,
                plain_verified=base.delivered_ok if base is not None else None,
            )
        )
    return out


def goals(results: Sequence[SystemResult], memory: Sequence[MemoryRow]) -> list[Verdict]:
    """The acceptance points as this run measured them (those its systems allow): issue 16's
    throughput ratios with the strict default (2.5x and 1.5x vmagent; issue 6 asked 2x and 1x
    with framing), and issue 6's latency, memory and memory-scaling goals."""
    by = {(r.system, r.workload): r for r in plain(results)}
    out: list[Verdict] = []
    for workload, target in THROUGHPUT_TARGETS:
        relay, peer = by.get(("gotk-relay", workload)), by.get(("vmagent", workload))
        if relay is None or peer is None:
            continue
        ratio = _over(relay.throughput.samples_per_cpu_s, peer.throughput.samples_per_cpu_s)
        ok = relay.delivered_ok and peer.delivered_ok
        out.append(
            Verdict.judge(f"{workload}: samples/CPU-s vs vmagent (x)", ratio, target, True, ok)
        )
    for workload in WORKLOADS:
        relay, peer = by.get(("gotk-relay", workload)), by.get(("vmagent", workload))
        if relay is None:
            continue
        out.append(
            Verdict.judge(
                f"{workload}: added p99 at 50% (ms)",
                relay.latency_added_p99_ms,
                ADDED_P99_TARGET_MS,
                False,
                True,
            )
        )
        if peer is not None and relay.latency_peak_rss_bytes and peer.latency_peak_rss_bytes:
            ratio = relay.latency_peak_rss_bytes / peer.latency_peak_rss_bytes
            goal = f"{workload}: peak RSS at 50% vs vmagent (x)"
            out.append(Verdict.judge(goal, ratio, RSS_AT_HALF_TARGET, False, True))
    if len(memory) == 2 and memory[0].peak_rss_bytes:
        ratio = memory[1].peak_rss_bytes / memory[0].peak_rss_bytes
        ok = all(m.complete and m.delivered_ok for m in memory)
        small, big = memory[0].series, memory[1].series
        goal = f"peak RSS, {big:,} vs {small:,} distinct series (x)"
        out.append(Verdict.judge(goal, ratio, RSS_GROWTH_TARGET, False, ok))
    return out


def configuration_goals(rows: Sequence[ConfigurationRow]) -> list[Verdict]:
    """Issue 17's goals: per variant and workload, the relay against vmagent with the same
    feature, against its own plain figure, or an absolute samples/CPU-s; a figure counts only
    with every delivery of the rows it comes from verified."""
    out = []
    for r in rows:
        goal = VARIANTS[r.variant].goal
        if goal is None:
            continue
        where = f"{r.workload}: {r.variant}"
        if goal.kind == "vmagent":
            if r.vmagent_verified is None:
                continue  # vmagent did not run (--systems)
            name = f"{where} vs vmagent, same feature (x)"
            figure, ok = r.ratio, r.relay_verified and r.vmagent_verified
        elif goal.kind == "plain":
            if r.plain_verified is None:
                continue  # the plain configuration did not run (--variants)
            name = f"{where} vs the relay's plain (x)"
            figure, ok = r.ratio_to_plain, r.relay_verified and r.plain_verified
        else:
            name = f"{where}: samples/CPU-s"
            figure, ok = r.relay_samples_per_cpu_s, r.relay_verified
        out.append(Verdict.judge(name, figure, goal.target, True, ok))
    return out


def goals_in_full() -> int:
    """How many goals a run of every system, workload and configuration judges."""
    issue17 = sum(v.goal is not None for v in VARIANTS.values()) * len(WORKLOADS)
    # per workload: throughput, p99, RSS; memory; issue 17's per variant and workload
    return 3 * len(WORKLOADS) + 1 + issue17


# --------------------------------------------------------------------------------------------
# Tables


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 10_000:
        return f"{value / 1000:,.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def _row(cells: Sequence[str]) -> str:
    return "  ".join(
        cell.ljust(width) if i < 2 else cell.rjust(width)
        for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS, strict=True))
    )


def warnings(results: Sequence[SystemResult]) -> Iterator[str]:
    """Rows whose figures may not be the system's own: refusals, a busy loader core, other
    processes on its core, the hypervisor stalling the cores during the latency phase."""
    for r in results:
        variant = "" if r.variant == "plain" else f" ({r.variant})"
        where = f"{r.system}{variant} on {r.workload}"
        peak = r.throughput
        refused = peak.result.requests - peak.result.accepted_requests
        if refused:
            statuses = ", ".join(
                f"{n}x {code}"
                for code, n in sorted(peak.result.statuses.items())
                if code // 100 != 2
            )
            yield (
                f"! {where}: {refused} of {peak.result.requests} requests at max load were refused "
                f"({statuses}); the loader retried them after Retry-After or a backoff"
            )
        if (peak.loader_core_utilisation or 0) > 0.85:
            yield f"! {where}: the loader+sink core was {_pct(peak.loader_core_utilisation)} busy"
        if r.latency_steal_ms:
            yield (
                f"! {where}: the hypervisor took {r.latency_steal_ms} ms from the cores "
                "(steal) during the latency phase; its p99 includes such stalls"
            )
        if (peak.sut_core_foreign_utilisation or 0) > 0.10:
            yield (
                f"! {where}: other processes took {_pct(peak.sut_core_foreign_utilisation)} "
                "of the system's core"
            )


def table(results: Sequence[SystemResult], ratios: Sequence[Ratio]) -> Iterator[str]:
    yield _row([name for name, _ in TABLE_COLUMNS])
    yield _row(["-" * width for _, width in TABLE_COLUMNS])
    for r in plain(results):
        at_half = r.latency_peak_rss_bytes / 2**20 if r.latency_peak_rss_bytes else None
        yield _row(
            [
                r.system,
                r.workload,
                _num(r.throughput.accepted_per_s),
                _num(r.throughput.samples_per_cpu_s),
                _pct(r.throughput.sut_core_utilisation),
                _pct(r.throughput.sut_core_foreign_utilisation),
                _num(r.latency_p50_ms),
                _num(r.latency_p99_ms),
                _num(r.peak_rss_bytes / 2**20),
                _num(at_half),
                "ok" if r.delivered_ok else "MISMATCH",
            ]
        )
    for q in ratios:
        yield _row(
            [
                q.name,
                q.workload,
                _times(q.accepted_per_s),
                _times(q.samples_per_cpu_s),
                "",
                "",
                _times(q.latency_p50_ms),
                _times(q.latency_p99_ms),
                _times(q.peak_rss_bytes),
                _times(q.latency_peak_rss_bytes),
                "",
            ]
        )


def floor_table(results: Sequence[SystemResult]) -> Iterator[str]:
    """Each system's latency at 50% beside the bare receiver's, taken in alternate slices."""
    yield (
        "latency at 50%: the system, and a bare receiver on its core at the same rate in "
        "alternate slices; added = system - bare"
    )
    yield (
        f"{'system':<21}  {'workload':<11}  {'p50 ms':>7}  {'p99 ms':>7}  {'bare p50':>8}  "
        f"{'bare p99':>8}  {'added p50':>9}  {'added p99':>9}  {'steal ms':>13}"
    )
    for r in plain(results):
        floor = r.latency_floor
        if floor is None:  # a plain row always has its latency phase; kept for the types
            continue
        steal = f"{r.latency_steal_ms} / {floor.steal_ms}"
        yield (
            f"{r.system:<21}  {r.workload:<11}  {_num(r.latency_p50_ms):>7}  "
            f"{_num(r.latency_p99_ms):>7}  {_num(floor.p50_ms):>8}  "
            f"{_num(floor.p99_ms):>8}  {_num(r.latency_added_p50_ms):>9}  "
            f"{_num(r.latency_added_p99_ms):>9}  {steal:>13}"
        )


def configuration_table(rows: Sequence[ConfigurationRow]) -> Iterator[str]:
    yield (
        "configurations (issue 17): samples/CPU-s, throughput phase; vmagent with the same "
        "feature where it has one"
    )
    yield (
        f"{'variant':<23}  {'workload':<11}  {'relay':>8}  {'vmagent':>8}  {'ratio':>6}  "
        f"{'to plain':>8}  {'RSS MiB':>8}  verified"
    )
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        to_plain = "-" if r.ratio_to_plain is None else f"{r.ratio_to_plain:.2f}x"
        checks = [r.relay_verified, r.vmagent_verified]
        verified = "ok" if all(c is not False for c in checks) else "MISMATCH"
        yield (
            f"{r.variant:<23}  {r.workload:<11}  {_num(r.relay_samples_per_cpu_s):>8}  "
            f"{_num(r.vmagent_samples_per_cpu_s):>8}  {ratio:>6}  {to_plain:>8}  "
            f"{_num(r.relay_peak_rss_bytes / 2**20):>8}  {verified}"
        )


def memory_table(rows: Sequence[MemoryRow]) -> Iterator[str]:
    yield "gotk-relay memory vs distinct pass-through series"
    yield (
        f"{'series':>10}  {'pushed':>10}  {'samples':>10}  {'accepted/s':>10}  {'idle MiB':>8}  "
        f"{'peak RSS MiB':>12}  {'end RSS MiB':>11}  delivered"
    )
    for r in rows:
        pushed = f"{r.distinct_series_pushed:,}" + ("" if r.complete else "*")
        yield (
            f"{r.series:>10,}  {pushed:>10}  {r.samples_pushed:>10,}  "
            f"{_num(r.accepted_per_s):>10}  {r.rss_idle_bytes / 2**20:>8.0f}  "
            f"{r.peak_rss_bytes / 2**20:>12.0f}  {r.rss_end_bytes / 2**20:>11.0f}  "
            f"{'ok' if r.delivered_ok else 'MISMATCH'}"
        )
    if not all(r.complete for r in rows):
        yield "* not all rounds were pushed within memory_timeout: the relay was too slow"


def goals_table(rows: Sequence[Verdict]) -> Iterator[str]:
    yield "the goals in this run (issue 16: strict by default; issue 6; issue 17: configurations)"
    for row in rows:
        sign = ">=" if row.at_least else "<="
        figure = "-" if row.figure is None else _num(row.figure)
        target = _num(row.target)
        verdict = "met" if row.met else "MISSED"
        yield f"  {row.goal:<64} {figure:>7}  {sign} {target:<6} {verdict}"
    in_full = goals_in_full()
    if len(rows) < in_full:
        yield f"  all at once: not judged (this run measured {len(rows)} of {in_full} goals)"
    else:
        yield f"  all at once: {'yes' if all(r.met for r in rows) else 'no'}"


def lines(report: Report) -> Iterator[str]:
    """Every table of the report, in the order printed, each after a blank line."""
    results = report.results
    if plain(results):
        yield ""
        yield from table(results, report.ratios)
    yield ""
    yield from warnings(results)
    if plain(results):
        yield ""
        yield from floor_table(results)
    if report.configurations:
        yield ""
        yield from configuration_table(report.configurations)
    if report.memory_scaling:
        yield ""
        yield from memory_table(report.memory_scaling)
    if report.goals:
        yield ""
        yield from goals_table(report.goals)
