"""The sped-up FluxRewriter against the implementation it replaced, kept as the oracle
(``tests/support/flux_oracle.py``).

Why an oracle: the rewriter's speed-up (routes that remember their object and input entry,
output sets keyed by identity, forward values precomputed, no sort for in-order batches) changes
how it gets its answers, not the answers. So every batch of long, messy traffic must come out
the same from both, float bits, order and statistics included, and ``rewrite()`` must return the
input object itself exactly when the oracle does. The traffic is kube-state-metrics shaped
(``tests/support/loadgen.py``'s Flux label sets): Ready flips, suspends, revision changes and KSM
restarts (a new series plus the old one's stale marker, delivered in either order, in the same or
a later request), deletions (a stale marker only), resends of old samples, several samples per
series, quiet requests that let pending ends fall due, and clock jumps past ``idle_expiry``; label
sets arrive both as one cached tuple per scrape (as ``wire.picked`` hands them) and as fresh
equal tuples (as ``rw1.decode`` does).
"""

from __future__ import annotations

import random
import struct
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Labels,
    Metadata,
    Sample,
    Series,
    is_stale,
    labels_from,
)
from gotk_relay.rules.flux import (
    CONDITION_METADATA,
    INFO_METADATA,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    STATUSES,
    SUSPEND_METADATA,
    SUSPEND_STATUS,
    FluxConfig,
    FluxRewriter,
)
from gotk_relay.wire import picked, rw1, rw1_bytes, validate
from gotk_relay.wire.labels import NO_LIMITS, Limits
from tests.support import loadgen
from tests.support.flux_oracle import OracleRewriter
from tests.support.flux_traffic import SCRAPE_MS, Traffic, deliver, scrape_times

# == comparing the two ========================================================================

_DOUBLE_BITS = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")


def _bits(value: float) -> int:
    return int(_DOUBLE_BITS.unpack(_DOUBLE.pack(value))[0])


def fingerprint(batch: Batch) -> object:
    """The batch with sample values as their bits: NaNs compare by payload, -0.0 differs from 0."""
    return (
        tuple(
            (
                s.labels,
                tuple((_bits(x.value), x.timestamp, x.start_timestamp) for x in s.samples),
                s.histograms,
                s.exemplars,
                s.metadata,
                s.created_timestamp,
            )
            for s in batch.series
        ),
        batch.metadata,
    )


class Twins:
    """The oracle and the rewriter under test, fed the same batches and compared after each."""

    def __init__(self, config: FluxConfig, route_cache_max: int | None = None) -> None:
        self.oracle = OracleRewriter(config, route_cache_max)
        self.fast = FluxRewriter(config, rw1)
        # Without an encoder the rewriter writes the same series and offers no bytes of them.
        self.bare = FluxRewriter(config)
        if route_cache_max is not None:  # exercise clearing the route cache
            self.fast.classifier.cache_max = route_cache_max
            self.bare.classifier.cache_max = route_cache_max
        self.calls = 0
        self.encoded_calls = 0  # calls whose outputs the rewriter encoded itself

    def feed(self, batch: Batch, now_ms: int | None) -> Batch:
        want = self.oracle.rewrite(batch, now_ms)
        got = self.fast.rewrite(batch, now_ms)
        bare = self.bare.rewrite(batch, now_ms)
        self.calls += 1
        assert (got is batch) == (want is batch), f"call {self.calls}: returned-as-is differs"
        assert fingerprint(got) == fingerprint(want), f"call {self.calls}: outputs differ"
        assert self.fast.stats == self.oracle.stats, f"call {self.calls}: stats differ"
        assert (bare is batch) == (want is batch), f"call {self.calls}: without an encoder"
        assert fingerprint(bare) == fingerprint(want), f"call {self.calls}: without an encoder"
        assert self.bare.encoded(bare.series) is None, f"call {self.calls}: bytes unasked for"
        self._check_encoded(batch, got)
        return want

    def _check_encoded(self, batch: Batch, got: Batch) -> None:
        """The bytes the rewriter offers for its outputs (``encoded``, asked as the relay asks
        on the fast path: for what follows the inputs it returned first, or for the whole
        batch when it keeps no input) are what rw1 writes for them."""
        if got is batch:
            return
        count = len(batch.series)
        kept = got.series[:count] == batch.series
        synthesized = got.series[count:] if kept else got.series
        found = self.fast.encoded(synthesized)
        if found is None:
            return
        assert found[0] == rw1.encode(Batch(synthesized)), f"call {self.calls}: bytes"
        assert found[1] == max(s.samples[-1].timestamp for s in synthesized)
        assert all(len(s.samples) == 1 and not s.histograms for s in synthesized)
        assert self.fast.encoded(synthesized[1:]) is None
        assert self.fast.encoded(tuple(s._replace() for s in synthesized)) is None
        self.encoded_calls += 1


def run(twins: Twins, rng: random.Random, rounds: int, objects: int, churn: float) -> None:
    reverse = twins.oracle.config.mode != "legacy" or rng.random() < 0.2
    traffic = Traffic(rng, objects, churn)
    late: list[Series] = []
    for ts in scrape_times(rng, rounds, away=0.04):
        samples = traffic.scrape(ts, fresh=0.3)
        if reverse:
            samples += traffic.legacy_scrape(ts, fresh=0.3)
        for batch in deliver(rng, samples, ts, late):
            roll = rng.random()
            now: int | None = None if roll < 0.2 else ts + rng.randrange(0, 5000)
            twins.feed(batch, now)
        if rng.random() < 0.3:  # a quiet request: pending ends fall due on the clock alone
            twins.feed(Batch(), ts + rng.randrange(0, 120_000))


CONFIGS: Final[dict[str, dict[str, Any]]] = {
    "defaults": {},
    "keep-source-off": {"keep_source": False},
    "emit-deleted": {"emit_deleted": True},
    "raw-shape-job": {"label_shape": "raw", "set_job": True},
    "grace-0": {"stale_grace": 0},
    "few-objects": {"max_objects": 12},
    "short-expiry": {"idle_expiry": 90, "stale_grace": 40},
    "both": {"mode": "both", "emit_deleted": True},
    "reverse": {"mode": "resource_info"},
    "reverse-keep-source-off": {"mode": "resource_info", "keep_source": False},
}


@pytest.mark.slow  # long traffic, ~2 s
@pytest.mark.parametrize("name", list(CONFIGS))
def test_long_messy_traffic_gives_the_oracles_batches(name: str) -> None:
    twins = Twins(FluxConfig(**CONFIGS[name]))
    run(twins, random.Random(name), rounds=60, objects=40, churn=0.15)
    stats = twins.oracle.stats
    assert stats.outputs_emitted > 0
    assert twins.encoded_calls > 0
    assert stats.stale_emitted > 0 or twins.oracle.config.emit_deleted
    assert stats.out_of_order_dropped > 0 and stats.objects_expired > 0


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(CONFIGS)),
    st.integers(0, 2**32),
    st.integers(1, 25),
    st.floats(0.0, 0.6),
    st.sampled_from([None, 4, 16]),
)
def test_random_traffic_gives_the_oracles_batches(
    name: str, seed: int, objects: int, churn: float, route_cache_max: int | None
) -> None:
    twins = Twins(FluxConfig(**CONFIGS[name]), route_cache_max)
    run(twins, random.Random(seed), rounds=25, objects=objects, churn=churn)


def test_an_object_with_many_input_series_evicts_like_the_oracle() -> None:
    """More than eight revisions of one object: inputs are evicted, cached entries retired."""
    twins = Twins(FluxConfig())
    base = loadgen.flux_labels(random.Random(3), 0)
    ts = 1_000_000
    previous: Labels | None = None
    for revision in range(30):
        labels = labels_from({**base, "revision": f"{revision % 11}.0"})
        items = [Series(labels, (Sample(1.0, ts),))]
        if previous is not None and revision % 3:
            items.append(Series(previous, (Sample(STALE_NAN, ts),)))
        twins.feed(Batch(tuple(items)), ts)
        twins.feed(Batch((Series(labels, (Sample(1.0, ts + 1),)),)), ts + 1)
        previous = labels
        ts += SCRAPE_MS


def test_refused_objects_and_route_cache_clears_match_the_oracle() -> None:
    twins = Twins(FluxConfig(max_objects=3), route_cache_max=2)
    rng = random.Random(7)
    objects = [loadgen.flux_labels(rng, i) for i in range(6)]
    ts = 5_000_000
    for round_ in range(12):
        items = tuple(
            Series(labels_from(o), (Sample(1.0, ts),))
            for o in objects[round_ % 2 :: 1 + round_ % 3]
        )
        twins.feed(Batch(items), ts)
        ts += SCRAPE_MS


@pytest.mark.slow
def test_loadgen_flux_heavy_requests_decoded_both_ways() -> None:
    """The benchmark's own requests, as the fast path decodes them (picked) and as rw1 does."""
    spec = loadgen.WorkloadSpec("flux-heavy", series=4000, flux_fraction=0.05)
    workload = loadgen.Workload(spec, precompress=False)
    names = frozenset({RESOURCE_INFO.encode()})
    limits = Limits(200_000, 128, 1024, 4096)
    for config in (FluxConfig(), FluxConfig(keep_source=False, emit_deleted=True)):
        by_picked, by_rw1 = Twins(config), Twins(config)
        for round_ in range(6):
            now = spec.timestamp(round_) + 1000
            for index in range(len(workload.batches)):
                parts_raw = workload.raw(index, round_)
                parts = rw1_bytes.split(parts_raw)
                chosen = validate.survey(parts_raw, names, frozenset(), NO_LIMITS).picked
                by_picked.feed(picked.decode(chosen, parts.metadata, limits), now)
                by_rw1.feed(rw1.decode(workload.raw(index, round_), limits=limits), now)
        assert by_picked.oracle.stats.objects_tracked == spec.flux_series
        assert by_picked.oracle.stats.outputs_emitted == 6 * spec.flux_series * (
            len(STATUSES) + 1 + config.emit_deleted
        )


def test_synthesized_series_family_metadata_and_order_are_the_oracles() -> None:
    """One request with objects of both directions, several timestamps, and an end."""
    twins = Twins(FluxConfig(mode="both", stale_grace=0))
    rng = random.Random(11)
    info = [labels_from(loadgen.flux_labels(rng, i)) for i in range(3)]
    items = [Series(labels, (Sample(1.0, 10), Sample(1.0, 20))) for labels in info]
    items.append(Series(info[0], (Sample(STALE_NAN, 30),)))
    out = twins.feed(Batch(tuple(items), (FamilyMetadata(SUSPEND_STATUS),)), 40)
    assert [m.family for m in out.metadata] == [SUSPEND_STATUS, RECONCILE_CONDITION]
    stale = [s for s in out.series if s.metadata and any(is_stale(x.value) for x in s.samples)]
    assert len(stale) == len(STATUSES) + 1
    assert {s.metadata for s in out.series if s.metadata} == {CONDITION_METADATA, SUSPEND_METADATA}
    assert INFO_METADATA not in {s.metadata for s in out.series}
    assert isinstance(out.series[0].metadata, Metadata | None)
