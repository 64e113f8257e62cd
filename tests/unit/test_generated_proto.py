"""The committed *_pb2 modules are exactly what scripts/gen-proto makes from proto/*.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIRE = REPO / "src" / "gotk_relay" / "wire"


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        [str(REPO / "scripts" / "gen-proto"), str(tmp_path)], check=True, env=env, timeout=120
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == ["fastpath_pb2.py", "remote_pb2.py", "write_v2_pb2.py"]
    for name in generated:
        assert (tmp_path / name).read_text() == (WIRE / name).read_text(), (
            f"{name} is stale: run scripts/gen-proto and commit the result"
        )
