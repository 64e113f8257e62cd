"""The relay's steady-state shortcut (``FluxRewriter.steady``) against its general path.

In a cluster where nothing happens, every scrape brings each Flux object's one
``gotk_resource_info`` series with a newer timestamp, and the rules only write each object's
outputs again. The relay then skips the general machinery (events, emitter, a ``Series`` per
output). That must change how the answer is reached, never the answer: two relays with the same
configuration take the same requests on the fast path, one with the shortcut and one without,
and after every request they must have queued the same entries for every destination (payload
bytes, points, newest timestamp), hold the same federate store (entries, float bits, metadata,
refusals, what ``/federate`` renders) and the same Flux statistics, and at the end write the
same outputs for one more quiet scrape and for every end and expiry still to come. The traffic mixes
quiet scrapes (where the shortcut applies) with Ready flips, suspends, revision changes, KSM
restarts, deletions, resends, held-back samples, several samples per series and clock jumps
(where it must decline), and the shortcut has to have been taken, or the test proves nothing.
"""

from __future__ import annotations

import asyncio
import random
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay import config as config_module
from gotk_relay.delivery.entry import Entry
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    MetricType,
    Sample,
    Series,
    labels_from,
)
from gotk_relay.relay import Relay
from gotk_relay.rules.flux import FluxConfig, FluxRewriter, Steady
from gotk_relay.rules.flux import rewriter as rewriter_module
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, snappy
from gotk_relay.write import admission, scan
from tests.support import loadgen
from tests.support.flux_traffic import SCRAPE_MS, Traffic, deliver, scrape_times

CONFIGS: Final[dict[str, str]] = {
    "defaults": "flux: {mode: legacy, keep_source: true}\n",
    "emit-deleted": "flux: {mode: legacy, emit_deleted: true}\n",
    "grace-0": "flux: {mode: legacy, stale_grace: 0s}\n",
    "both": "flux: {mode: both, emit_deleted: true}\n",
    "few-objects": "flux: {mode: legacy, max_objects: 5}\nfederate: {max_series: 14}\n",
    "federate-off": "flux: {mode: legacy}\nfederate: {enabled: false}\n",
    "spool": "flux: {mode: legacy}\nspool: {data_dir: '{spool}', synchronous: normal}\n",
    # Destinations with views of their own: the outputs routed on their bytes, per shard and
    # tenant (the entries compared exactly, their families flag too).
    "views": (
        "flux: {mode: legacy}\n"
        "remote_write:\n"
        "  - url: http://127.0.0.1:9/api/v1/write\n"
        "    queue_config: {min_shards: 4, max_shards: 4}\n"
        "  - url: http://127.0.0.1:9/b/api/v1/write\n"
        "    tenant: {label: exported_namespace, default: other}\n"
    ),
}
DESTINATIONS: Final = (
    "remote_write:\n"
    "  - url: http://127.0.0.1:9/api/v1/write\n"
    "  - url: http://127.0.0.1:9/b/api/v1/write\n"
    "    queue_config: {max_samples_per_send: 40}\n"
)


def _relay(flux: str, spool: Path) -> Relay:
    """A relay on the fast path with two remote_write destinations; ``{spool}`` in ``flux`` is
    replaced by ``spool``, a directory of its own."""
    text = "receiver: {validation: framing}\n" + flux.replace("{spool}", str(spool))
    if "remote_write:" not in text:
        text += DESTINATIONS
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        return Relay(config_module.load_file(path), Telemetry())


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def _taken(relay: Relay) -> list[tuple[str, list[Entry]]]:
    """Every destination's queued entries, taken out as a sender that keeps up would."""
    out = []
    for name, destination in relay.destinations.items():
        entries = []
        for shard in destination.queue.shards:
            assert not shard.disk_entries  # small requests: every entry is held in memory too
            taken = list(shard.entries)
            if shard.spool is not None and taken:  # delivered: gone from the spool as well
                shard.spool.delete(e.spool_id for e in taken)
                shard.cursor = taken[-1].spool_id
            entries += taken
            shard.entries.clear()
            shard.points = shard.memory_points = shard.queued_bytes = 0
        out.append((name, entries))
    relay.budget.used = 0
    return out


def _federate(relay: Relay) -> object:
    """What /federate serves (the stored points with their float bits, the families, the text)
    and what the store refused."""
    store = relay.federate
    if store is None:
        return None
    snapshot = asyncio.run(store.snapshot())
    points = sorted((labels, _bits(value), ts) for labels, value, ts in snapshot.points)
    return points, sorted(snapshot.metadata.items()), len(store), store.refused, store.render()


_OTHER: Final = (("__name__", "up"), ("job", "other"))  # a series no Flux rule reads

# Every test here runs with each way of the shortcut's two loops: the Python reference
# (FluxRewriter._steady_pick, _steady_apply) and, when built, the compiled one (_steady.c).
LOOPS: Final = ["python"] + (["compiled"] if rewriter_module._STEADY is not None else [])


@pytest.fixture(autouse=True, scope="module", params=LOOPS)
def loops(request: pytest.FixtureRequest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "python":
            patch.setattr(rewriter_module, "_STEADY", None)
        yield request.param


class Pair:
    """The relay with the shortcut and the one without, fed the same requests."""

    def __init__(self, flux: str) -> None:
        self._dirs = tempfile.TemporaryDirectory()  # the spools, removed with the pair
        root = Path(self._dirs.name)
        self.shortcut = _relay(flux, root / "shortcut")
        self.general = _relay(flux, root / "general")
        # Its rules encode nothing as they go, so they never offer the shortcut: the general way.
        self.general.pipeline.flux = FluxRewriter(self.general.config.flux)
        self.requests = 0
        self.steady = 0  # requests the shortcut took
        rewriter = self.shortcut.pipeline.flux
        original = rewriter.steady

        def counted(batch: Batch, now_ms: int, max_outputs: int) -> Steady | None:
            found = original(batch, now_ms, max_outputs)
            self.steady += found is not None
            return found

        rewriter.steady = counted  # type: ignore[method-assign]

    def feed(
        self, series: list[Series], now_ms: int, metadata: tuple[FamilyMetadata, ...] = ()
    ) -> None:
        raw = rw1.encode(Batch(tuple(series), metadata))
        body = snappy.compress(raw)
        answers = []
        for relay in (self.shortcut, self.general):
            fast = relay.fast
            assert fast is not None
            limits = relay.config.receiver
            scanned = scan.scan_request(body, raw, limits, fast)
            picked = scan.decode_picked(scanned, limits)
            answers.append(admission.queue_scanned(relay, scanned, picked, now_ms).accepted)
        self.requests += 1
        where = f"request {self.requests}"
        assert answers[0] == answers[1], where
        assert _taken(self.shortcut) == _taken(self.general), f"{where}: queued entries differ"
        assert _federate(self.shortcut) == _federate(self.general), f"{where}: federate differs"
        got, want = self.shortcut.pipeline.flux.stats, self.general.pipeline.flux.stats
        assert got == want, f"{where}: Flux statistics differ"

    def settle(self, traffic: Traffic, ts: int) -> None:
        """Show what state the two rule sets were left in, through what they write next: one
        more quiet scrape of every object (its outputs, and whether they may be written after
        the last ones), then requests with no Flux series: one just before the scraped objects
        would expire (``flux.idle_expiry``: only objects seen earlier do, and their ends), one
        long after, where every pending end falls due and every object expires."""
        now = ts + SCRAPE_MS
        self.feed([Series(labels, (sample,)) for labels, sample in traffic.scrape(now, 0.0)], now)
        expiry = int(self.shortcut.config.flux.idle_expiry * 1000)
        for later in (now + expiry - 1, now + 2 * expiry + 2 * SCRAPE_MS):
            self.feed([Series(_OTHER, (Sample(1.0, later),))], later)


def run(pair: Pair, rng: random.Random, rounds: int, objects: int, churn: float) -> None:
    """Rounds of scrapes: a quiet one (every object's current series, new timestamp, cut into
    requests as remote write shards them) or a messy one (``flux_traffic.deliver``)."""
    traffic = Traffic(rng, objects, churn)
    late: list[Series] = []
    for ts in scrape_times(rng, rounds, away=0.03):
        quiet = rng.random() < 0.6
        traffic.churn = 0.0 if quiet else churn
        samples = traffic.scrape(ts, fresh=0.0)
        if quiet:
            series = [Series(labels, (sample,)) for labels, sample in samples]
            rng.shuffle(series)
            if rng.random() < 0.3:  # a controller's own gotk_ series, kept by federate only
                labels = (("__name__", "gotk_reconcile_duration_seconds_count"), ("kind", "A"))
                series.insert(rng.randrange(len(series) + 1), Series(labels, (Sample(2.5, ts),)))
            cut = rng.randrange(len(series) + 1)
            requests = [series[:cut], series[cut:]]
        else:
            requests = [list(batch.series) for batch in deliver(rng, samples, ts, late)]
        if rng.random() < 0.2:  # metadata in a request of its own, as Prometheus sends it
            requests.insert(rng.randrange(len(requests) + 1), [])
        for request in requests:
            # The families' metadata, beside the series or alone (the store serves them).
            metadata = FAMILIES if not request or rng.random() < 0.2 else ()
            pair.feed(request, ts + rng.randrange(0, 5000), metadata)
    pair.settle(traffic, ts)


FAMILIES: Final = (
    FamilyMetadata("gotk_resource_info", MetricType.GAUGE, "The current state of a resource.", ""),
    FamilyMetadata(
        "gotk_reconcile_duration_seconds", MetricType.HISTOGRAM, "Reconcile duration.", "seconds"
    ),
)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_quiet_and_messy_traffic_leave_the_same_queues_store_and_state(name: str) -> None:
    pair = Pair(CONFIGS[name])
    run(pair, random.Random(name), rounds=40, objects=12, churn=0.2)
    assert pair.steady > pair.requests // 10, "the shortcut was hardly taken"
    assert pair.shortcut.pipeline.flux.stats.outputs_emitted > 0


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(list(CONFIGS)),
    st.integers(0, 2**32),
    st.integers(1, 12),
    st.floats(0.0, 0.6),
)
def test_random_traffic_leaves_the_same_queues_store_and_state(
    name: str, seed: int, objects: int, churn: float
) -> None:
    pair = Pair(CONFIGS[name])
    run(pair, random.Random(seed), rounds=12, objects=objects, churn=churn)


def test_a_steady_scrape_takes_the_shortcut_and_a_changed_one_does_not() -> None:
    pair = Pair(CONFIGS["defaults"])
    traffic = Traffic(random.Random(7), 6, 0.0)
    ts = loadgen.WorkloadSpec("flux").ts_base_ms

    def scrape(skip: int | None = None, stale: int | None = None) -> None:
        series = []
        for index, obj in enumerate(traffic.objects):
            labels = traffic.labels(obj.labels, False)
            if index == stale:
                series.append(Series(labels, (Sample(STALE_NAN, ts),)))
            elif index != skip:
                series.append(Series(labels, (Sample(1.0, ts),)))
        pair.feed(series, ts)

    for round_ in range(3):
        ts += SCRAPE_MS
        scrape()
        assert pair.steady == round_  # the first scrape admits the objects: general path
    ts += SCRAPE_MS
    pair.feed([Series(labels, (s,)) for labels, s in traffic.scrape(ts, 0.0)] * 2, ts)
    assert pair.steady == 2  # one object twice in a request: declined
    ts += SCRAPE_MS
    two = [
        Series(labels, (s._replace(timestamp=ts + i),))
        for i, (labels, s) in enumerate(traffic.scrape(ts, 0.0))
    ]
    pair.feed(two, ts)
    assert pair.steady == 2  # samples of several scrapes in one request: declined
    traffic.objects[0].labels["ready"] = "False"  # a Ready change: a new input series
    ts += SCRAPE_MS
    scrape()
    assert pair.steady == 2
    ts += SCRAPE_MS
    scrape()
    assert pair.steady == 3  # the new series is routed now
    ts += SCRAPE_MS
    scrape(stale=1)  # object 1 deleted: its series ends
    assert pair.steady == 3
    ts += SCRAPE_MS
    scrape(skip=1)
    assert pair.steady == 4  # its end is pending (flux.stale_grace), not due: the others go on
    ts += SCRAPE_MS
    scrape()  # object 1 back before its end: the general path cancels the end
    assert pair.steady == 4
    ts += SCRAPE_MS
    scrape()
    assert pair.steady == 5
    ts += SCRAPE_MS
    scrape(stale=1)  # deleted again
    ts += SCRAPE_MS
    scrape(skip=1)
    assert pair.steady == 6
    ts += 3 * SCRAPE_MS
    scrape(skip=1)  # the end falls due and is written here: declined
    assert pair.steady == 6
    ts += SCRAPE_MS
    scrape(skip=1)
    assert pair.steady == 7


def test_a_value_older_than_its_series_stale_marker_is_left_to_the_general_path() -> None:
    """A KSM restart's old series may end (stale marker) before its last value arrives: that
    value then makes the object look gone, which only the general path works out."""
    pair = Pair(CONFIGS["defaults"])
    obj = Traffic(random.Random(3), 1, 0.0).objects[0]
    obj.labels["ready"] = "True"
    current = labels_from(obj.labels)
    old = labels_from({**obj.labels, "ready": "False"})  # another input of the same object
    ts = loadgen.WorkloadSpec("flux").ts_base_ms
    for step in range(2):
        pair.feed([Series(current, (Sample(1.0, ts + step * SCRAPE_MS),))], ts + step * SCRAPE_MS)
    assert pair.steady == 1
    pair.feed([Series(old, (Sample(STALE_NAN, ts + 5 * SCRAPE_MS),))], ts + 5 * SCRAPE_MS)
    pair.feed([Series(old, (Sample(1.0, ts + 4 * SCRAPE_MS),))], ts + 5 * SCRAPE_MS)
    assert pair.steady == 1  # `old` is routed to the object by then, and still declined
    # The general path started the object's end: it is written once flux.stale_grace has passed.
    stats = pair.shortcut.pipeline.flux.stats
    assert stats.stale_emitted == 0
    later = ts + 5 * SCRAPE_MS + int(pair.shortcut.config.flux.grace_cap * 1000) + SCRAPE_MS
    pair.feed([Series(_OTHER, (Sample(1.0, later),))], later)
    assert stats.stale_emitted > 0


@pytest.mark.parametrize("encoder", [rw1, None], ids=["rw1", "no-encoder"])
def test_the_shortcut_needs_the_encoder_the_rewriter_was_given(encoder: Any) -> None:
    """The shortcut's result is the outputs' bytes: a rewriter built without an encoder declines
    a steady scrape (rewrite() then does the work); one built with rw1 takes it, and its bytes
    are rw1's encoding of what rewrite() synthesizes for the same scrape."""
    traffic = Traffic(random.Random(5), 3, 0.0)
    first_ts = loadgen.WorkloadSpec("flux").ts_base_ms
    ts = first_ts + SCRAPE_MS
    first, second = (
        Batch(tuple(Series(x, (s,)) for x, s in traffic.scrape(t, 0.0))) for t in (first_ts, ts)
    )
    rewriter, general = FluxRewriter(FluxConfig(), encoder), FluxRewriter(FluxConfig())
    for each in (rewriter, general):
        each.rewrite(first, first_ts)
    found = rewriter.steady(second, ts, max_outputs=1000)
    if encoder is None:
        assert found is None
        return
    assert found is not None
    out = general.rewrite(second, ts)
    synthesized = out.series[len(second.series) :]
    assert found.outputs == len(synthesized) == 3 * 4
    assert found.body == rw1.encode(Batch(synthesized))
