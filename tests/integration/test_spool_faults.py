"""The spool failing under a running relay: errors are shown, retried, and nothing acked is lost.

A real full disk (a 2 MiB tmpfs, as root) rather than a simulated error: SQLite fails its
writes *and* its deletes there ("database or disk is full"), which is what used to kill a
destination's sender for good, silently, while writes kept getting 204. A spool locked by another
process (SQLite's own lock, taken by a second connection) refuses writes the same way.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gotk_relay.model import Batch, Sample, Series
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    metric_value,
    receivers,
    relay_client,
    rw_body,
)

FAST = {"min_backoff": "10ms", "max_backoff": "100ms"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _batch(rng: random.Random, index: int) -> Batch:
    # Random label values: the snappy blocks stay about as big as the protobuf (~20 KiB).
    return Batch(
        tuple(
            Series(
                (("__name__", f"m{index}_{k}"), ("noise", f"{rng.getrandbits(96):x}")),
                (Sample(float(k), 1000 + index),),
            )
            for k in range(300)
        )
    )


def _full_disk_rig(
    small_disk: Path, flux_mode: str
) -> tuple[Path, ScriptedReceiver, dict[str, object]]:
    """A ballast taking most of the small disk (remove it and space returns), a destination
    that answers 503 until told otherwise, and a relay config spooling on that disk."""
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(400 * 1024))
    receiver = ScriptedReceiver(default=Reply(503, body="down"))
    config = {
        "flux": {"mode": flux_mode},
        "spool": {"data_dir": str(small_disk / "spool"), "max_bytes": 1 << 30},
        "remote_write": [
            {"name": "d0", "url": receiver.url, "queue_config": {**FAST, "capacity": 1000}}
        ],
    }
    return ballast, receiver, config


async def _post(client: object, batch: Batch) -> tuple[int, str]:
    body, headers = rw_body(batch)
    response = await client.post("/api/v1/write", data=body, headers=headers)  # type: ignore[attr-defined]
    return int(response.status), await response.text()


@pytest.mark.slow
async def test_a_full_disk_is_shown_retried_and_everything_acked_is_delivered_when_space_returns(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ballast, receiver, config = _full_disk_rig(small_disk, "off")
    rng = random.Random(16)
    acked: set[str] = set()
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        async with receivers(receiver), relay_client(config) as (client, relay):
            refused = ""
            for index in range(400):  # bounded: 2 MiB holds ~100 of these
                batch = _batch(rng, index)
                status, text = await _post(client, batch)
                if status != 204:
                    refused = f"{status} {text}"
                    break
                acked.update(s.name for s in batch.series)
            assert refused.startswith("503"), refused
            assert len(acked) >= 300
            # The destination is back; every delete of what it accepted fails on the full disk.
            receiver.default = Reply(204)
            await eventually(lambda: bool(relay.problems()))
            ready = await client.get("/-/ready")
            assert ready.status == 503
            assert (await ready.text()).startswith("not ready: destination d0: cannot delete")
            metrics = await (await client.get("/metrics")).text()
            assert metric_value(metrics, "gotk_relay_sender_up", destination="d0") == 0
            assert metric_value(metrics, "gotk_relay_task_failures_total", destination="d0") >= 1
            # Space returns: no restart, everything acked arrives.
            ballast.unlink()
            delivered: set[str] = set()

            def all_delivered() -> bool:
                delivered.update(s.name for b in receiver.delivered() for s in b.series)
                return acked <= delivered

            await eventually(all_delivered, timeout=30)
            await eventually(lambda: relay.problems() == [], timeout=10)
            assert (await client.get("/-/ready")).status == 200
            assert (await _post(client, _batch(rng, 999)))[0] == 204
    faults = [r for r in caplog.records if "sender failed" in r.getMessage()]
    assert len(faults) == 1  # once, however many retries
    assert any("sender recovered" in r.getMessage() for r in caplog.records)
    spool_lines = [r for r in caplog.records if "spool cannot be written" in r.getMessage()]
    assert 1 <= len(spool_lines) <= 2  # started (and stopped), not one per refused write


@pytest.mark.parametrize("v2", [False, True], ids=["rw1-fast-path", "rw2-decoded-path"])
async def test_series_without_a_tenant_are_counted_once_when_a_refused_write_is_sent_again(
    tmp_path: Path, v2: bool
) -> None:
    """A write refused because the spool cannot take it (503) is sent again by the sender; the
    points it drops for want of a tenant are counted when it is queued, not at each try."""
    receiver = ScriptedReceiver()
    config = {
        "flux": {"mode": "off"},
        "spool": {"data_dir": str(tmp_path / "spool")},
        "remote_write": [
            {
                "name": "d0",
                "url": receiver.url,
                "queue_config": FAST,
                "tenant": {"label": "tenant", "header": "X-Scope-OrgID"},
            }
        ],
    }
    batch = Batch(
        (
            Series((("__name__", "m"), ("tenant", "a")), (Sample(1.0, 1000),)),
            Series((("__name__", "orphan"), ("i", "1")), (Sample(1.0, 1000),)),
            Series((("__name__", "orphan"), ("i", "2")), (Sample(2.0, 1000),)),
        )
    )
    body, headers = rw_body(batch, v2=v2)
    async with receivers(receiver), relay_client(config) as (client, _):
        # Another process holding the spool's write lock (a backup, the sqlite3 shell).
        holder = sqlite3.connect(tmp_path / "spool" / "spool.sqlite3", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            for _ in range(3):
                response = await client.post("/api/v1/write", data=body, headers=headers)
                assert response.status == 503, await response.text()
        finally:
            holder.close()
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status == 204, await response.text()
        await eventually(lambda: sum(b.sample_count for b in receiver.delivered()) == 1)
        metrics = await (await client.get("/metrics")).text()
    dropped = metric_value(
        metrics, "gotk_relay_samples_dropped_total", destination="d0", reason="no_tenant"
    )
    assert dropped == 2


def _flux_round(names: list[str], ts: int) -> Batch:
    """One kube-state-metrics scrape of ``names`` (all Ready), as Prometheus sends it."""
    return Batch(
        tuple(
            Series(
                (
                    ("__name__", "gotk_resource_info"),
                    ("customresource_group", "kustomize.toolkit.fluxcd.io"),
                    ("customresource_kind", "Kustomization"),
                    ("customresource_version", "v1"),
                    ("exported_namespace", "apps"),
                    ("name", name),
                    ("ready", "True"),
                    ("suspended", "false"),
                ),
                (Sample(1.0, ts),),
            )
            for name in names
        )
    )


@pytest.mark.slow
async def test_a_flux_round_refused_on_a_full_disk_writes_its_outputs_when_sent_again(
    small_disk: Path,
) -> None:
    """The rules applied the refused round in memory before its spool write failed; its resend
    must still write the legacy series at its timestamp, for the objects seen before and for
    the new one, or that scrape is missing from every dashboard."""
    ballast, receiver, config = _full_disk_rig(small_disk, "legacy")
    rng = random.Random(17)
    t0 = 1_732_560_000_000
    second = _flux_round(["a", "b", "new"], t0 + 30_000)
    async with receivers(receiver), relay_client(config) as (client, _):
        assert (await _post(client, _flux_round(["a", "b"], t0)))[0] == 204
        for index in range(400):  # fill the disk; bounded: 2 MiB holds ~100 of these
            if (await _post(client, _batch(rng, index)))[0] != 204:
                break
        for _ in range(3):  # Prometheus' retries while the disk is full
            status, text = await _post(client, second)
            assert status == 503 and "spool" in text, text
        ballast.unlink()
        status, text = await _post(client, second)
        assert status == 204, text
        receiver.default = Reply(204)

        def written() -> set[tuple[str, int]]:
            return {
                (dict(s.labels)["name"], sample.timestamp)
                for b in receiver.delivered()
                for s in b.series
                if s.name == "gotk_reconcile_condition" and dict(s.labels).get("status") == "True"
                for sample in s.samples
            }

        wanted = {("a", t0), ("b", t0), ("a", t0 + 30_000), ("b", t0 + 30_000)}
        wanted.add(("new", t0 + 30_000))
        await eventually(lambda: wanted <= written(), timeout=30)
