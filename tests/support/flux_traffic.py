"""Flux traffic as kube-state-metrics and Prometheus send it, for tests that compare two ways of
handling it (``test_flux_speed_equivalence``, ``test_flux_steady``): Ready flips, suspends,
revision changes, KSM restarts, deletions, resends, held-back and repeated samples, filler series.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from gotk_relay.model import STALE_NAN, Batch, Labels, Sample, Series, labels_from
from gotk_relay.rules.flux import (
    DELETED,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    STATUSES,
    SUSPEND_STATUS,
)
from tests.support import loadgen

SCRAPE_MS: Final = 30_000
AWAY_MS: Final = 2 * 3600 * 1000  # longer than any idle_expiry the tests configure


def scrape_times(rng: random.Random, rounds: int, away: float) -> Iterator[int]:
    """Each round's scrape timestamp, ``SCRAPE_MS`` apart; with probability ``away`` a round
    comes ``AWAY_MS`` late instead (the relay was away: every object expires)."""
    ts = loadgen.WorkloadSpec("flux").ts_base_ms
    for _ in range(rounds):
        ts += SCRAPE_MS
        if rng.random() < away:
            ts += AWAY_MS
        yield ts


@dataclass
class FluxObject:
    labels: dict[str, str]
    alive: bool = True
    legacy_open: bool = False  # its legacy series were last sent with values


class Traffic:
    """Flux objects as KSM + Prometheus send them, with state changes and deletions, and the
    same objects as the Flux ≤ 2.1 controllers exposed them (the reverse direction's input)."""

    def __init__(self, rng: random.Random, count: int, churn: float) -> None:
        self.rng = rng
        self.churn = churn
        self.objects = [FluxObject(loadgen.flux_labels(rng, i)) for i in range(count)]
        self.interned: dict[Labels, Labels] = {}

    def labels(self, mapping: dict[str, str], fresh: bool) -> Labels:
        """One tuple per label set (as wire.picked hands them) or a fresh equal one (rw1)."""
        labels = tuple(sorted((k, v) for k, v in mapping.items() if v))
        if fresh:
            return tuple((k, v) for k, v in labels)
        return self.interned.setdefault(labels, labels)

    def scrape(self, ts: int, fresh: float) -> list[tuple[Labels, Sample]]:
        """One scrape's samples: a value per live object, stale markers for ended series."""
        rng = self.rng
        out: list[tuple[Labels, Sample]] = []
        for obj in self.objects:
            if not obj.alive:
                if rng.random() < self.churn / 4:  # recreated
                    obj.alive = True
                else:
                    continue
            elif rng.random() < self.churn / 4:  # deleted: its series ends
                obj.alive = False
                out.append((self.labels(obj.labels, rng.random() < fresh), Sample(STALE_NAN, ts)))
                continue
            if rng.random() < self.churn:
                old = dict(obj.labels)
                self._change(obj.labels)
                if old != obj.labels:
                    stale = Sample(STALE_NAN, ts)
                    out.append((self.labels(old, rng.random() < fresh), stale))
            value = 1.0 if rng.random() > 0.02 else rng.choice([0.0, 2.0, float("nan")])
            out.append((self.labels(obj.labels, rng.random() < fresh), Sample(value, ts)))
        return out

    def legacy_scrape(self, ts: int, fresh: float) -> list[tuple[Labels, Sample]]:
        """The legacy gauges of the same objects: 1 for the Ready status, 0 for the others, the
        suspend gauge; on deletion the Deleted snapshot or stale markers."""
        rng = self.rng
        out: list[tuple[Labels, Sample]] = []
        for obj in self.objects:
            if not obj.alive and not obj.legacy_open:
                continue
            base = {
                "kind": obj.labels["customresource_kind"],
                "name": obj.labels["name"],
                "namespace": obj.labels["exported_namespace"],
                "job": "kustomize-controller",
                "instance": "10.0.0.9:8080",
            }
            ready = obj.labels.get("ready", "Unknown")
            snapshot = not obj.alive and rng.random() < 0.5
            for status in (*STATUSES, DELETED):
                if status == DELETED and not snapshot and rng.random() < 0.5:
                    continue
                if not obj.alive and not snapshot:
                    value = STALE_NAN
                elif snapshot:
                    value = 1.0 if status == DELETED else 0.0
                else:
                    value = 1.0 if status == ready else 0.0
                labels = {**base, "__name__": RECONCILE_CONDITION, "type": "Ready"}
                labels["status"] = status
                out.append((self.labels(labels, rng.random() < fresh), Sample(value, ts)))
            suspended = 1.0 if obj.labels.get("suspended") == "true" else 0.0
            value = STALE_NAN if not obj.alive and not snapshot else suspended
            suspend = self.labels({**base, "__name__": SUSPEND_STATUS}, rng.random() < fresh)
            out.append((suspend, Sample(value, ts)))
            obj.legacy_open = obj.alive
        return out

    def _change(self, labels: dict[str, str]) -> None:
        rng = self.rng
        what = rng.choice(["ready", "ready", "suspended", "revision", "pod"])
        if what == "ready" and "ready" in labels:
            labels["ready"] = rng.choice(["True", "False", "Unknown", "Bogus"])
        elif what == "suspended":
            choice = rng.choice(["true", "false", ""])
            if choice:
                labels["suspended"] = choice
            else:
                labels.pop("suspended", None)
        elif what == "revision":
            labels["revision"] = f"{rng.randrange(40)}.0.0"
        elif what == "pod":  # KSM restarted: a kept label changes, so a new object
            labels["pod"] = f"kube-state-metrics-{rng.randrange(3)}"


def filler(rng: random.Random, ts: int) -> list[Series]:
    """Series the rewriter must leave alone, some with Flux metric names."""
    out = [
        Series(labels_from({"__name__": "up", "job": f"j{i}"}), (Sample(1.0, ts),))
        for i in range(rng.randrange(4))
    ]
    if rng.random() < 0.3:  # a KSM custom resource that is not a Flux kind
        labels = {"__name__": RESOURCE_INFO, "customresource_kind": "Deployment", "name": "x"}
        out.append(Series(labels_from(labels), (Sample(1.0, ts),)))
    if rng.random() < 0.3:  # a legacy name without the labels that make it a Flux object
        labels = {"__name__": RECONCILE_CONDITION, "kind": "Kustomization", "name": "y"}
        out.append(Series(labels_from(labels), (Sample(1.0, ts),)))
    return out


def deliver(
    rng: random.Random, samples: list[tuple[Labels, Sample]], ts: int, late: list[Series]
) -> Iterator[Batch]:
    """Remote write's view: shuffled, cut into requests, some samples held back a round, some
    series carrying two samples, some samples sent again."""
    series: list[Series] = []
    held: list[Series] = []
    for labels, sample in samples:
        item = Series(labels, (sample,))
        roll = rng.random()
        if roll < 0.05:
            held.append(item)  # arrives with the next round
        elif roll < 0.08:  # a resend of an older sample first
            series.append(Series(labels, (Sample(sample.value, sample.timestamp - 7), sample)))
        else:
            series.append(item)
        if rng.random() < 0.03:
            late.append(item)  # sent again later
    series += late[: rng.randrange(len(late) + 1)]
    del late[: len(late) // 2]
    series += filler(rng, ts)
    rng.shuffle(series)
    if rng.random() < 0.7:  # mostly in batch order by timestamp, as one scrape is
        series.sort(key=lambda s: s.samples[0].timestamp)
    cuts = sorted(rng.sample(range(len(series) + 1), k=min(len(series) + 1, rng.randrange(1, 4))))
    start = 0
    for cut in [*cuts, len(series)]:
        yield Batch(tuple(series[start:cut]))
        start = cut
    late.extend(held)
