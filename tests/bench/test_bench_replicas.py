"""``bench/replicas.py`` still runs end to end: one replica behind HAProxy, one second.

Correctness only, never speed (the machine is shared): the table and the JSON have a row per
replica count, and every sample the loader had acknowledged is in the sink.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_replicas_bench_runs_and_delivers_every_acknowledged_sample(tmp_path: Path) -> None:
    out = tmp_path / "replicas.json"
    argv = [sys.executable, "-m", "bench.replicas", "--replicas", "1", "--duration", "1"]
    argv += ["--series", "4000", "--connections", "2", "--json", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "samples/CPU-s/replica" in done.stdout
    (row,) = json.loads(out.read_text())
    assert row["replicas"] == 1 and row["delivered"] is True
    assert row["acked"] > 0 and row["in_sink"] >= row["acked"]
    assert len(row["replica_cpu_s"]) == 1
