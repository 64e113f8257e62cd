"""The Flux rules' state across restarts (``rules/flux/persist.py``), with a spool.

A relay restarted between any two requests must write exactly what one that ran on writes: the
same outputs at the same timestamps, so a round Prometheus sends again after the restart (it was
not acked, or was and is resent) writes no duplicate timestamp and an older round no sample out
of order. Relays here are built in-process on a spool directory; a restart is a new ``Relay`` on
the same directory, after what the old one queued was taken (delivered).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from prometheus_client.core import Metric

from gotk_relay import config as config_module
from gotk_relay.delivery.entry import Entry
from gotk_relay.delivery.spool import SpoolError
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    Labels,
    Sample,
    Series,
    float_bits,
    is_stale,
    labels_from,
)
from gotk_relay.relay import Relay
from gotk_relay.relay_metrics import state_metrics
from gotk_relay.rules.flux import RECONCILE_CONDITION, RESOURCE_INFO, SUSPEND_STATUS
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, snappy
from gotk_relay.write import admission, scan
from tests.support.flux_traffic import SCRAPE_MS, Traffic, deliver, scrape_times

T: Final = 1_732_560_000_000
DESTINATION: Final = "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
OUTPUT_NAMES: Final = {
    "legacy": frozenset((RECONCILE_CONDITION, SUSPEND_STATUS)),
    "resource_info": frozenset((RESOURCE_INFO,)),
}


def make_relay(spool: Path, flux: str = "{mode: legacy}", extra: str = "") -> Relay:
    text = (
        "receiver: {validation: framing}\n"
        f"flux: {flux}\n"
        f"spool: {{data_dir: '{spool}', synchronous: normal}}\n"
        "federate: {enabled: false}\n" + extra + DESTINATION
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        return Relay(config_module.load_file(path), Telemetry())


def restart(relay: Relay) -> Relay:
    """The relay stopped (what it queued was delivered) and started again on its spool."""
    taken(relay)
    assert relay.spool is not None
    relay.spool.close()
    return Relay(relay.config, Telemetry())


def feed(relay: Relay, series: list[Series], now_ms: int) -> None:
    """One request, as the server's fast path takes it."""
    raw = rw1.encode(Batch(tuple(series)))
    fast = relay.fast
    assert fast is not None
    limits = relay.config.receiver
    scanned = scan.scan_request(snappy.compress(raw), raw, limits, fast)
    picked = scan.decode_picked(scanned, limits)
    assert admission.queue_scanned(relay, scanned, picked, now_ms).accepted


def taken(relay: Relay) -> list[Entry]:
    """Every queued entry, taken out (and out of the spool) as a sender that keeps up would."""
    out: list[Entry] = []
    for destination in relay.destinations.values():
        for shard in destination.queue.shards:
            entries = list(shard.entries)
            if shard.spool is not None and entries:
                shard.spool.delete(e.spool_id for e in entries)
                shard.cursor = entries[-1].spool_id
            out += entries
            shard.entries.clear()
            shard.points = shard.memory_points = shard.queued_bytes = 0
    relay.budget.used = 0
    return out


Received = tuple[int, int, tuple[tuple[Labels, tuple[tuple[int, int], ...]], ...]]


def queued(relay: Relay) -> list[Received]:
    """What ``taken`` takes, as a destination receives it: per request its points, newest
    timestamp and series with their samples' float bits, in label order. The order of series
    inside a request is left out: a restored relay may end the objects that fall due together
    in another order (per series, the order of samples is what receivers check)."""
    out = []
    for entry in taken(relay):
        batch = rw1.decode(snappy.decompress(entry.payload, 1 << 30))
        series = sorted(
            (s.labels, tuple((x.timestamp, float_bits(x.value)) for x in s.samples))
            for s in batch.series
        )
        out.append((entry.points, entry.newest_ms, tuple(series)))
    return out


def written(entries: list[Entry], names: frozenset[str]) -> list[tuple[Labels, int, float]]:
    """The samples of series named ``names`` in ``entries``, in the order they were queued."""
    out = []
    for entry in entries:
        batch = rw1.decode(snappy.decompress(entry.payload, 1 << 30))
        for series in batch.series:
            if dict(series.labels)["__name__"] in names:
                out += [(series.labels, s.timestamp, s.value) for s in series.samples]
    return out


def info(name: str, ready: str = "True", **extra: str) -> Labels:
    return labels_from(
        {
            "__name__": RESOURCE_INFO,
            "customresource_group": "kustomize.toolkit.fluxcd.io",
            "customresource_kind": "Kustomization",
            "customresource_version": "v1",
            "exported_namespace": "apps",
            "name": name,
            "ready": ready,
            "suspended": "false",
            **extra,
        }
    )


def legacy(name: str, ready: str = "True") -> list[Labels]:
    base = {"kind": "Kustomization", "name": name, "namespace": "apps"}
    out = [
        labels_from({**base, "__name__": RECONCILE_CONDITION, "type": "Ready", "status": status})
        for status in ("True", "False", "Unknown")
    ]
    return [*out, labels_from({**base, "__name__": SUSPEND_STATUS})]


def round_of(mode: str, names: list[str], ts: int) -> list[Series]:
    """One scrape of ``names`` (all Ready) as the mode's input."""
    if mode == "legacy":
        return [Series(info(n), (Sample(1.0, ts),)) for n in names]
    out = []
    for n in names:
        for labels in legacy(n):
            status = dict(labels).get("status")
            value = 1.0 if status == "True" else 0.0
            out.append(Series(labels, (Sample(value, ts),)))
    return out


def rows(spool: Path) -> int:
    with sqlite3.connect(spool / "spool.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM flux_objects").fetchone()[0])


def metric(relay: Relay, name: str) -> dict[tuple[str, ...], float]:
    found: list[Metric] = [m for m in state_metrics(relay) if m.name == name]
    return {tuple(s.labels.values()): s.value for m in found for s in m.samples}


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "spool"


@pytest.mark.parametrize("mode", ["legacy", "resource_info"])
def test_a_resent_and_an_older_round_after_a_restart_write_nothing(spool: Path, mode: str) -> None:
    names = [f"app-{i}" for i in range(5)]
    outputs = OUTPUT_NAMES[mode]
    relay = make_relay(spool, f"{{mode: {mode}}}")
    feed(relay, round_of(mode, names, T), T + 100)
    first = written(taken(relay), outputs)
    assert first and {ts for _, ts, _ in first} == {T}
    relay = restart(relay)
    assert metric(relay, "gotk_relay_flux_state_restored_objects") == {(): len(names)}
    feed(relay, round_of(mode, names, T), T + 30_000)  # the same round, sent again
    feed(relay, round_of(mode, names, T - SCRAPE_MS), T + 30_001)  # an older one
    assert written(taken(relay), outputs) == []
    assert relay.pipeline.flux.stats.out_of_order_dropped > 0
    # The objects are live still: the next round is written, after what was.
    feed(relay, round_of(mode, names, T + SCRAPE_MS), T + 31_000)
    after = written(taken(relay), outputs)
    assert sorted(after) == sorted((labels, T + SCRAPE_MS, v) for labels, _, v in first)


def test_an_object_ended_before_the_restart_stays_ended(spool: Path) -> None:
    relay = make_relay(spool, "{mode: legacy, stale_grace: 0s}")
    feed(relay, [Series(info("gone"), (Sample(1.0, T),))], T)
    feed(relay, [Series(info("gone"), (Sample(STALE_NAN, T + 1000),))], T + 1000)
    ended = written(taken(relay), OUTPUT_NAMES["legacy"])
    assert {ts for _, ts, v in ended if is_stale(v)} == {T + 1000}
    relay = restart(relay)
    # Its last round and its stale marker sent again: neither a value nor a second end.
    feed(relay, [Series(info("gone"), (Sample(1.0, T),))], T + 5000)
    feed(relay, [Series(info("gone"), (Sample(STALE_NAN, T + 1000),))], T + 5001)
    assert written(taken(relay), OUTPUT_NAMES["legacy"]) == []


def test_an_end_pending_at_the_restart_is_written_after_it(spool: Path) -> None:
    relay = make_relay(spool, "{mode: legacy, stale_grace: 20s}")
    feed(relay, [Series(info("gone"), (Sample(1.0, T),))], T)
    feed(relay, [Series(info("gone"), (Sample(STALE_NAN, T + 1000),))], T + 1000)
    assert not any(is_stale(v) for *_, v in written(taken(relay), OUTPUT_NAMES["legacy"]))
    relay = restart(relay)
    assert relay.pipeline.flux.due(T + 21_000)
    relay.admit(Batch(), T + 21_000)  # the relay's Flux clock
    ends = written(taken(relay), OUTPUT_NAMES["legacy"])
    assert len(ends) == 4 and all(is_stale(v) and ts == T + 1000 for _, ts, v in ends)


def test_expired_objects_leave_no_rows(spool: Path) -> None:
    relay = make_relay(spool, "{mode: legacy, idle_expiry: 60s}")
    feed(relay, round_of("legacy", ["old-1", "old-2", "kept"], T), T)
    assert rows(spool) == 3
    feed(relay, round_of("legacy", ["kept"], T + 50_000), T + 50_000)
    feed(relay, round_of("legacy", ["kept"], T + 80_000), T + 80_000)
    assert relay.pipeline.flux.stats.objects_expired == 2
    assert rows(spool) == 1
    relay = restart(relay)
    assert relay.pipeline.flux.stats.objects_tracked == 1


def test_a_restart_with_fewer_max_objects_keeps_the_newest(spool: Path) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a", "b"], T), T)
    feed(relay, round_of("legacy", ["c"], T + 1000), T + 1000)
    taken(relay)
    assert relay.spool is not None
    relay.spool.close()
    relay = make_relay(spool, "{mode: legacy, max_objects: 1}")
    assert relay.pipeline.flux.stats.objects_tracked == 1
    assert rows(spool) == 1
    feed(relay, round_of("legacy", ["c"], T + 1000), T + 2000)  # restored: a resend
    assert written(taken(relay), OUTPUT_NAMES["legacy"]) == []


def test_a_reload_to_compatible_rules_keeps_the_state(spool: Path) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a"], T), T)
    taken(relay)
    changed = relay.config.model_copy(
        update={"flux": relay.config.flux.model_copy(update={"keep_source": False})}
    )
    old = relay.pipeline.flux
    relay.reload(changed)
    assert relay.pipeline.flux is not old
    feed(relay, round_of("legacy", ["a"], T), T + 1000)
    assert written(taken(relay), OUTPUT_NAMES["legacy"]) == []


class Holder:
    """Another process holding the spool's write lock: the relay's writes are refused."""

    def __init__(self, spool: Path) -> None:
        self.db = sqlite3.connect(spool / "spool.sqlite3", isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def names_at(entries: list[Entry]) -> set[tuple[str, int]]:
    """(object name, timestamp) of every legacy output sample in ``entries``."""
    out = written(entries, OUTPUT_NAMES["legacy"])
    return {(dict(labels)["name"], ts) for labels, ts, _ in out}


def test_a_request_refused_for_its_spool_write_writes_its_outputs_when_sent_again(
    spool: Path,
) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a"], T), T)
    taken(relay)
    holder = Holder(spool)
    with pytest.raises(SpoolError):
        feed(relay, round_of("legacy", ["a", "b"], T + SCRAPE_MS), T + SCRAPE_MS)
    holder.release()
    assert taken(relay) == [] and rows(spool) == 1
    # Prometheus sends the refused request again: "a" moves on, "b" is new, both written.
    feed(relay, round_of("legacy", ["a", "b"], T + SCRAPE_MS), T + SCRAPE_MS + 100)
    assert names_at(taken(relay)) == {("a", T + SCRAPE_MS), ("b", T + SCRAPE_MS)}
    assert rows(spool) == 2
    relay = restart(relay)
    assert relay.pipeline.flux.stats.objects_tracked == 2


def test_a_state_that_cannot_be_read_back_refuses_requests_until_it_can(spool: Path) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a"], T), T)
    taken(relay)
    with sqlite3.connect(spool / "spool.sqlite3", isolation_level=None) as db:
        db.execute("ALTER TABLE flux_numbers RENAME TO parked")
    holder = Holder(spool)
    with pytest.raises(SpoolError):
        feed(relay, round_of("legacy", ["a"], T + SCRAPE_MS), T + SCRAPE_MS)
    holder.release()
    # The write could go through now, but the rules' state cannot be put back as stored: a
    # request let through would take the resend for old news. Refused, and shown as failing.
    with pytest.raises(SpoolError, match="cannot read the Flux state back"):
        feed(relay, round_of("legacy", ["a"], T + SCRAPE_MS), T + SCRAPE_MS + 100)
    assert relay.spool_failing.active
    assert taken(relay) == []
    with sqlite3.connect(spool / "spool.sqlite3", isolation_level=None) as db:
        db.execute("ALTER TABLE parked RENAME TO flux_numbers")
    feed(relay, round_of("legacy", ["a"], T + SCRAPE_MS), T + SCRAPE_MS + 200)
    assert names_at(taken(relay)) == {("a", T + SCRAPE_MS)}
    assert not relay.spool_failing.active


DAMAGE: Final = {
    "absent": "DROP TABLE flux_meta",
    "numbers": "UPDATE flux_numbers SET numbers = x'0102'",
    "shape": "UPDATE flux_objects SET shape = '{'",
    "kind": "UPDATE flux_objects SET kind = 'Nonsense'",
    "format": "UPDATE flux_meta SET value = '99' WHERE name = 'format'",
    "schema": "DROP TABLE flux_numbers; CREATE TABLE flux_numbers (x TEXT)",
}
REASON: Final = {"absent": "absent", "format": "format"}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_state_that_cannot_be_read_starts_empty_logged_and_counted(
    spool: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a"], T), T)
    taken(relay)
    assert relay.spool is not None
    relay.spool.close()
    with sqlite3.connect(spool / "spool.sqlite3") as db:
        db.executescript(DAMAGE[damage])
    caplog.clear()
    with caplog.at_level(logging.INFO, "gotk_relay.flux"):
        relay = make_relay(spool)
    reason = REASON.get(damage, "corrupt")
    lines = [r for r in caplog.records if r.name == "gotk_relay.flux"]
    assert [getattr(r, "reason", None) for r in lines] == [reason]
    assert metric(relay, "gotk_relay_flux_state_discarded") == {(reason,): 1.0}
    assert relay.pipeline.flux.stats.objects_tracked == 0
    # It works on, and stores again from here.
    feed(relay, round_of("legacy", ["a"], T + SCRAPE_MS), T + SCRAPE_MS)
    assert rows(spool) == 1
    relay = restart(relay)
    assert metric(relay, "gotk_relay_flux_state_restored_objects") == {(): 1.0}


def test_other_rules_discard_the_state(spool: Path) -> None:
    relay = make_relay(spool)
    feed(relay, round_of("legacy", ["a"], T), T)
    taken(relay)
    assert relay.spool is not None
    relay.spool.close()
    relay = make_relay(spool, "{mode: legacy, label_shape: raw}")
    assert metric(relay, "gotk_relay_flux_state_discarded") == {("rules_changed",): 1.0}
    assert rows(spool) == 0


# -- a restart anywhere changes nothing written ------------------------------------------------

CONFIGS: Final = {
    "defaults": "{mode: legacy}",
    "emit-deleted": "{mode: legacy, emit_deleted: true, stale_grace: 10s}",
    "both": "{mode: both, idle_expiry: 10m}",
    "replicas": "{mode: legacy, replica_labels: [pod]}",
}


def messy_requests(rng: random.Random, name: str) -> Iterator[tuple[list[Series], int]]:
    """Messy traffic (Ready flips, deletions, resends, held-back samples, KSM restarts, the
    legacy gauges too with ``both``): each request's series and the relay clock it comes at."""
    traffic = Traffic(rng, 10, 0.25)
    late: list[Series] = []
    late_legacy: list[Series] = []
    for ts in scrape_times(rng, 30, away=0.05):
        batches = [*deliver(rng, traffic.scrape(ts, 0.5), ts, late)]
        if "both" in name:
            batches += deliver(rng, traffic.legacy_scrape(ts, 0.5), ts, late_legacy)
        for batch in batches:
            yield list(batch.series), ts + rng.randrange(0, 40_000)


QUIET_MS: Final = 3 * 3600 * 1000  # after the traffic: every end due, every object expired


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_relay_restarted_between_requests_writes_what_one_that_ran_on_writes(
    tmp_path: Path, name: str
) -> None:
    """Messy traffic into two relays; one is restarted at random points."""
    rng = random.Random(name)
    on = make_relay(tmp_path / "on", CONFIGS[name])
    again = make_relay(tmp_path / "again", CONFIGS[name])
    restarts = now = 0
    for request, (series, now) in enumerate(messy_requests(rng, name), start=1):
        feed(on, series, now)
        feed(again, series, now)
        assert queued(on) == queued(again), f"{name}: request {request} differs"
        if rng.random() < 0.3:
            again = restart(again)
            restarts += 1
    assert restarts > 10
    quiet = now + QUIET_MS
    on.admit(Batch(), quiet)
    again.admit(Batch(), quiet)
    assert queued(on) == queued(again)
    assert on.pipeline.flux.stats.outputs_emitted > 0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_relay_whose_spool_writes_fail_writes_what_one_that_never_failed_writes(
    tmp_path: Path, name: str
) -> None:
    """The same messy traffic into two relays; for one, spool writes are refused at random
    (once or twice in a row, the Flux clock's too), and each refused request is sent again, as
    Prometheus sends it again: each accepted request queues the same series and samples."""
    rng = random.Random(f"refused {name}")
    on = make_relay(tmp_path / "on", CONFIGS[name])
    again = make_relay(tmp_path / "again", CONFIGS[name])
    refused = now = 0
    for request, (series, now) in enumerate(messy_requests(rng, name), start=1):
        for _ in range(rng.choice((0, 0, 1, 2))):
            holder = Holder(tmp_path / "again")
            with pytest.raises(SpoolError):
                feed(again, series, now)
            holder.release()
            refused += 1
            now += rng.randrange(1, 5_000)  # the resend arrives later
        feed(on, series, now)
        feed(again, series, now)
        assert queued(on) == queued(again), f"{name}: request {request} differs"
    assert refused > 20
    quiet = now + QUIET_MS
    holder = Holder(tmp_path / "again")
    with pytest.raises(SpoolError):
        again.admit(Batch(), quiet)
    holder.release()
    on.admit(Batch(), quiet)
    again.admit(Batch(), quiet)
    assert queued(on) == queued(again)
    assert on.pipeline.flux.stats.outputs_emitted > 0
    relay = restart(again)
    assert relay.pipeline.flux.stats.objects_tracked == 0
