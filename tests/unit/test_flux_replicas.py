"""``flux.replica_labels``: two kube-state-metrics (or Flux Operator) replicas, one output set.

Scraped as two targets, two replicas report every object twice, told apart only by the scrape's
labels (``instance``, ``pod``), and the legacy dashboards' counts double. With the labels that
tell replicas apart listed, the rules write one output set per object, without those labels,
following one replica at a time (the first live one, in label order): the other's samples only
keep the object alive. So two replicas that see a Ready change a few seconds apart do not make
the outputs flip back and forth, and when the followed replica goes away the other takes over
with no end written and no gap.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gotk_relay.model import STALE_NAN, Batch, Labels, Sample, Series, is_stale, labels_from
from gotk_relay.rules.flux import RESOURCE_INFO, FluxConfig, FluxRewriter

REPLICAS: Final = ("10.0.0.1:8080", "10.0.0.2:8080")
CONFIG: Final = FluxConfig(replica_labels=["instance", "pod"])
STEP: Final = 15_000


def info(replica: int, ready: str) -> Labels:
    return labels_from(
        {
            "__name__": RESOURCE_INFO,
            "customresource_group": "helm.toolkit.fluxcd.io",
            "customresource_kind": "HelmRelease",
            "customresource_version": "v2",
            "exported_namespace": "apps",
            "name": "podinfo",
            "ready": ready,
            "suspended": "false",
            "job": "kube-state-metrics",
            "instance": REPLICAS[replica],
            "pod": f"kube-state-metrics-{replica}",
        }
    )


class Run:
    """One rewriter fed requests; what it wrote, per output series, in order."""

    def __init__(self, config: FluxConfig = CONFIG) -> None:
        self.rewriter = FluxRewriter(config)
        self.written: dict[Labels, list[tuple[int, float]]] = {}

    def feed(self, now: int, *series: tuple[Labels, float, int]) -> None:
        batch = Batch(tuple(Series(labels, (Sample(value, ts),)) for labels, value, ts in series))
        out = self.rewriter.rewrite(batch, now)
        for s in out.series[len(batch.series) :]:
            self.written.setdefault(s.labels, []).extend((x.timestamp, x.value) for x in s.samples)

    def history(self, status: str) -> list[float | str]:
        """The values the condition series ``status`` took, repeats collapsed."""
        (labels,) = [k for k in self.written if dict(k).get("status") == status]
        values: list[float | str] = []
        for _, value in self.written[labels]:
            shown: float | str = "stale" if is_stale(value) else value
            if not values or values[-1] != shown:
                values.append(shown)
        return values


def test_two_replicas_give_one_output_set_without_their_labels() -> None:
    run = Run()
    for n in range(3):
        t = n * STEP
        run.feed(t + 500, (info(0, "True"), 1.0, t), (info(1, "True"), 1.0, t + 7000))
    assert len(run.written) == 4  # three conditions and suspend, once
    for labels in run.written:
        assert "instance" not in dict(labels) and "pod" not in dict(labels)
    assert run.history("True") == [1.0]


def test_without_the_option_each_replica_writes_its_own_set() -> None:
    run = Run(FluxConfig())
    run.feed(500, (info(0, "True"), 1.0, 0), (info(1, "True"), 1.0, 7000))
    assert len(run.written) == 8


def test_replicas_seeing_a_ready_change_apart_do_not_flip_the_outputs_back() -> None:
    run = Run()
    run.feed(500, (info(0, "True"), 1.0, 0), (info(1, "True"), 1.0, 7000))
    # Replica 0 (followed) sees the failure at 15 s; replica 1 still says True at 22 s.
    run.feed(15_500, (info(0, "False"), 1.0, STEP), (info(0, "True"), STALE_NAN, STEP))
    run.feed(22_500, (info(1, "True"), 1.0, 22_000))
    run.feed(30_500, (info(0, "False"), 1.0, 2 * STEP))
    run.feed(37_500, (info(1, "False"), 1.0, 37_000), (info(1, "True"), STALE_NAN, 37_000))
    assert run.history("True") == [1.0, 0.0]
    assert run.history("False") == [0.0, 1.0]
    assert run.rewriter.stats.stale_emitted == 0


def test_when_the_followed_replica_goes_away_the_other_takes_over_without_a_gap() -> None:
    run = Run()
    run.feed(500, (info(0, "True"), 1.0, 0), (info(1, "True"), 1.0, 7000))
    run.feed(15_500, (info(0, "True"), STALE_NAN, STEP))  # replica 0 is gone
    for n in range(1, 4):
        t = n * STEP + 7000
        run.feed(t + 500, (info(1, "False" if n == 3 else "True"), 1.0, t))
    run.feed(10 * STEP, (info(1, "False"), 1.0, 10 * STEP))
    assert run.rewriter.stats.stale_emitted == 0
    assert run.history("True") == [1.0, 0.0]  # the change replica 1 saw
    stamps = [ts for ts, _ in next(iter(run.written.values()))]
    assert stamps == sorted(set(stamps))  # never back in time


def test_an_object_both_replicas_lost_is_ended() -> None:
    run = Run()
    run.feed(500, (info(0, "True"), 1.0, 0), (info(1, "True"), 1.0, 7000))
    run.feed(15_500, (info(0, "True"), 1.0, STEP), (info(1, "True"), 1.0, 22_000))
    run.feed(30_500, (info(0, "True"), STALE_NAN, 2 * STEP))
    run.feed(37_500, (info(1, "True"), STALE_NAN, 37_000))
    run.feed(120_000)
    assert run.rewriter.stats.stale_emitted == 4


def test_a_replica_lost_after_its_newest_sample_does_not_end_the_object() -> None:
    """Replica 1 wrote the object's newest sample, then went away: replica 0 is still live,
    so even with no grace at all nothing ends."""
    run = Run(FluxConfig(replica_labels=["instance", "pod"], stale_grace=0))
    run.feed(500, (info(0, "True"), 1.0, 0), (info(1, "True"), 1.0, 7000))
    run.feed(15_500, (info(0, "True"), 1.0, STEP), (info(1, "True"), 1.0, 22_000))
    run.feed(37_500, (info(1, "True"), STALE_NAN, 37_000))
    assert run.rewriter.stats.stale_emitted == 0
    run.feed(45_500, (info(0, "True"), 1.0, 3 * STEP))
    assert run.history("True") == [1.0]


@given(
    lag=st.integers(1, STEP - 1),
    states=st.lists(st.sampled_from(["True", "False", "Unknown"]), min_size=1, max_size=8),
    behind=st.lists(st.booleans(), min_size=8, max_size=8),
    order=st.booleans(),
)
def test_the_outputs_follow_one_replica_whatever_the_other_says(
    lag: int, states: list[str], behind: list[bool], order: bool
) -> None:
    """Replica 1 scrapes ``lag`` ms after replica 0 (which stays) and its informer sometimes
    still shows the previous state: the outputs take exactly replica 0's states, never an
    end, never a flip back."""
    run = Run()
    previous: list[str | None] = [None, None]
    for n, current in enumerate(states):
        for replica, ts in ((0, n * STEP), (1, n * STEP + lag)):
            state = states[n - 1] if replica == 1 and n and behind[n] else current
            series = [(info(replica, state), 1.0, ts)]
            old = previous[replica]
            if old is not None and old != state:
                series.append((info(replica, old), STALE_NAN, ts))
            previous[replica] = state
            if order:
                series.reverse()
            run.feed(ts + 200, *series)
    want: list[float | str] = []
    for state in states:
        value = 1.0 if state == "True" else 0.0
        if not want or want[-1] != value:
            want.append(value)
    assert run.history("True") == want
    assert run.rewriter.stats.stale_emitted == 0


@pytest.mark.parametrize("label", ["name", "exported_namespace", "customresource_kind"])
def test_a_label_of_the_object_is_refused_as_a_replica_label(label: str) -> None:
    with pytest.raises(ValidationError, match="names the object"):
        FluxConfig(replica_labels=[label])


def test_two_sources_of_one_object_are_replicas_too_when_their_scrape_labels_are_listed() -> None:
    """kube-state-metrics and the Flux Operator report the same object: with the labels their
    scrapes differ in listed (job too), one output set, following the first live source."""
    run = Run(FluxConfig(replica_labels=["instance", "job", "pod"]))
    operator = labels_from(
        {
            "__name__": "flux_resource_info",
            "kind": "HelmRelease",
            "exported_namespace": "apps",
            "name": "podinfo",
            "ready": "True",
            "suspended": "False",
            "uid": "3c1d",
            "job": "flux-operator",
            "instance": "10.0.0.9:8080",
            "pod": "flux-operator-0",
        }
    )
    run.feed(500, (info(0, "True"), 1.0, 0), (operator, 1.0, 4000))
    run.feed(15_500, (info(0, "True"), STALE_NAN, STEP))  # KSM is gone: the operator goes on
    run.feed(19_500, (operator, 1.0, 19_000))
    assert len(run.written) == 4
    assert run.rewriter.stats.stale_emitted == 0
    assert run.history("True") == [1.0]
