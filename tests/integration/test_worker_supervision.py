"""The ingest workers' supervisor (``WorkerPool``), with real child processes standing in for
workers: a worker that keeps dying is restarted with a growing backoff and logged once per
episode, a restart that cannot even start a process is tried again rather than ending the
supervision, and a worker not running shows in ``/-/ready``'s problems and in the metrics
until it runs again."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from gotk_relay import worker_pool
from gotk_relay.telemetry import _StateCollector
from gotk_relay.worker_pool import WorkerPool
from tests.support.harness import eventually

EXITS = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]


def _pool(argv: list[str]) -> WorkerPool:
    pool = WorkerPool(1, "/nonexistent/core.sock", ("127.0.0.1", 1))
    pool._argv = lambda index: argv  # type: ignore[method-assign]
    return pool


def _value(pool: WorkerPool, name: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(_StateCollector(pool.metrics))
    return registry.get_sample_value(name)


async def test_a_worker_that_keeps_dying_is_restarted_with_backoff_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_pool, "RESTART_BACKOFF", 0.1)
    pool = _pool(EXITS)
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        pool.start()
        try:
            await asyncio.sleep(2.0)
            # Between two restarts (a slow machine may catch one just started and not yet
            # exited): shown as down, in /-/ready and the metric alike.
            down = ["ingest worker 0: exited with code 3; restarting it"]
            await eventually(
                lambda: pool.problems() == down and _value(pool, "gotk_relay_workers_up") == 0,
                timeout=3.0,
            )
            # 0.1 s, then twice as long each time: restarts at about 0.1, 0.3, 0.7, 1.5 and
            # 3.1 s (every 0.1 s, as before, made about 20; and logged each one).
            restarts = _value(pool, "gotk_relay_worker_restarts_total")
            assert restarts is not None and 2 <= restarts <= 6, restarts
        finally:
            await pool.stop(1.0)
    failed = [r for r in caplog.records if "ingest worker failed" in r.getMessage()]
    assert len(failed) == 1
    assert pool.problems() == []  # stopped on purpose


async def test_a_restart_that_cannot_start_a_process_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_pool, "RESTART_BACKOFF", 0.05)
    pool = _pool(SLEEPS)
    real = subprocess.Popen

    def out_of_fds(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        raise OSError(24, "Too many open files")

    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        pool.start()
        try:
            (slot,) = pool.slots
            assert slot.proc is not None
            await eventually(lambda: _value(pool, "gotk_relay_workers_up") == 1)
            monkeypatch.setattr(subprocess, "Popen", out_of_fds)
            slot.proc.kill()
            await eventually(lambda: (_value(pool, "gotk_relay_worker_restarts_total") or 0) >= 3)
            # Restarts that start nothing: the supervision goes on, the worker shows as down.
            assert pool._supervisor is not None and not pool._supervisor.done()
            assert pool.problems() == ["ingest worker 0: exited with code -9; restarting it"]
            monkeypatch.setattr(subprocess, "Popen", real)
            await eventually(lambda: pool.problems() == [])
            assert _value(pool, "gotk_relay_workers_up") == 1
        finally:
            await pool.stop(1.0)  # raises nothing: the supervisor never died
    failed = [r for r in caplog.records if "ingest worker failed" in r.getMessage()]
    assert len(failed) == 1 and "exited with code" in failed[0].__dict__["reason"]


async def test_a_check_that_raises_skips_no_other_worker_and_shows_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_pool, "RESTART_BACKOFF", 0.05)
    pool = WorkerPool(2, "/nonexistent/core.sock", ("127.0.0.1", 1))
    pool._argv = lambda index: SLEEPS  # type: ignore[method-assign]
    real = pool._check
    broken = True

    def check(slot: worker_pool._Slot, now: float) -> None:
        if broken and slot.index == 0:
            raise RuntimeError("a bug in the check")
        real(slot, now)

    pool._check = check  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="gotk_relay"):
        pool.start()
        try:
            await eventually(lambda: _value(pool, "gotk_relay_workers_up") == 2)
            failing = "supervising the ingest workers fails: RuntimeError('a bug in the check')"
            await eventually(lambda: failing in pool.problems())
            assert _value(pool, "gotk_relay_worker_supervision_failing") == 1
            second = pool.slots[1]
            assert second.proc is not None
            second.proc.kill()  # the slot after the failing one is still looked after
            await eventually(lambda: (_value(pool, "gotk_relay_worker_restarts_total") or 0) >= 1)
            await eventually(lambda: _value(pool, "gotk_relay_workers_up") == 2)
            broken = False
            await eventually(lambda: pool.problems() == [], timeout=10.0)
            assert _value(pool, "gotk_relay_worker_supervision_failing") == 0
        finally:
            await pool.stop(1.0)
    raised = [
        r for r in caplog.records if "supervising the ingest workers failed" in r.getMessage()
    ]
    assert len(raised) == 1
    assert any("succeeds again" in r.getMessage() for r in caplog.records)
