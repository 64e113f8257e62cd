"""``bench/fleet.py``'s workload is what it says (every object once per round, the share of
Flux samples asked for), and ``bench.inprocess --workload fleet`` runs it. Never speed."""

from __future__ import annotations

import asyncio
from collections import Counter

import cramjam
import pytest

from bench import fleet_served, inprocess
from bench.fleet import BATCH, STEP_MS, Fleet
from gotk_relay.model import label_value
from gotk_relay.wire import rw1


@pytest.mark.parametrize(
    ("objects", "share", "requests"),
    [(250, 0.05, 3), (250, 0.5, 1), (7, 1.0, 1)],
    ids=["5pct", "50pct", "all-flux"],
)
def test_a_round_sends_every_object_once_at_the_asked_share(
    objects: int, share: float, requests: int
) -> None:
    fleet = Fleet(objects, share)
    assert len(fleet.requests) == requests
    names: Counter[str] = Counter()
    flux = total = 0
    for round_ in (0, 1):
        for index in range(requests):
            raw = bytes(cramjam.snappy.decompress_raw(fleet.body(index, round_)))
            batch = rw1.decode(raw)
            assert len(batch.series) <= BATCH
            stamps = {s.timestamp for series in batch.series for s in series.samples}
            assert stamps == {fleet.timestamp(round_)}
            for series in batch.series:
                total += 1
                if label_value(series.labels, "__name__") == "gotk_resource_info":
                    flux += 1
                    names[label_value(series.labels, "name")] += 1
    assert len(names) == objects and set(names.values()) == {2}  # once per round
    assert flux / total == pytest.approx(share, abs=0.01)
    assert fleet.timestamp(1) - fleet.timestamp(0) == STEP_MS


def test_the_inprocess_fleet_run_tracks_every_object(capsys: pytest.CaptureFixture[str]) -> None:
    inprocess.fleet(objects=300, flux_share=0.5, rounds=1)
    out = capsys.readouterr().out
    assert "samples/CPU-s" in out and "tracked 300, refused 0" in out


def test_the_inprocess_fleet_memory_run_names_the_lines_that_hold_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--workload fleet --memory``: bytes per object in all, then the lines holding them (the
    breakdown in docs/performance.md), the Flux rules' among them."""
    inprocess.fleet_memory(objects=300, flux_share=0.5, rounds=2, lines=40)
    first, *lines = capsys.readouterr().out.splitlines()
    assert "bytes per object" in first
    assert int(first.split("MiB after 2 rounds, ")[1].split()[0].replace(",", "")) > 0
    assert any("src/gotk_relay/rules/flux/" in line for line in lines)


def test_the_served_fleet_run_tracks_every_object_and_reads_the_relays_memory() -> None:
    """``bench.fleet_served``: a real ``gotk-relay serve`` fed the fleet over HTTP; it tracks
    every object, and the line gives its CPU figure and its RSS against issue 22's target."""
    line = asyncio.run(fleet_served.run(objects=300, flux_share=0.5, rounds=1, conns=2, pin=False))
    assert "tracked 300;" in line and "samples/CPU-s" in line, line
    idle = float(line.split("RSS idle ")[1].split()[0])
    after = float(line.split(", after ")[1].split()[0])
    assert 0 < idle <= after, line
