"""A spool that cannot be used at start ends ``serve`` with the usual one-line error, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gotk_relay.delivery.entry import Entry
from gotk_relay.delivery.spool import Spool, SpoolError
from gotk_relay.model import Protocol
from tests.support.rig import free_port


def _spool_with_rows(directory: Path) -> Path:
    spool = Spool(directory)
    rows = [("d0", 0, Entry(os.urandom(6000), Protocol.V1, 1, 1000)) for _ in range(40)]
    spool.append(rows)
    spool.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every row in the database file
    spool.close()
    return directory / "spool.sqlite3"


def _overwrite_pages(path: Path) -> None:
    """Garbage over every page but the first (the header stays: SQLite opens the file)."""
    data = bytearray(path.read_bytes())
    garbage = bytes(range(256)) * (len(data) // 256 + 1)
    data[4096:] = garbage[: len(data) - 4096]
    path.write_bytes(data)


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file" * 400)


@pytest.mark.slow  # starts the relay's process per case
@pytest.mark.parametrize(
    "damage",
    [_overwrite_pages, _not_a_database],
    ids=["pages-overwritten", "not-a-database"],
)
def test_a_corrupt_spool_is_one_start_error_not_a_traceback(tmp_path: Path, damage: object) -> None:
    path = _spool_with_rows(tmp_path / "spool")
    damage(path)  # type: ignore[operator]
    config = tmp_path / "relay.yml"
    config.write_text(
        f"flux: {{mode: 'off'}}\nspool: {{data_dir: {tmp_path / 'spool'}}}\n"
        "remote_write:\n  - {name: d0, url: 'http://127.0.0.1:9/api/v1/write'}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gotk_relay",
            "serve",
            "--config",
            str(config),
            "--listen-address",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot start" in lines[0] and "spool" in lines[0]


def test_every_spool_method_raises_spool_error_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.close()
    calls: list[Callable[[], object]] = [
        lambda: spool.append([("d0", 0, Entry(b"x", Protocol.V1, 1, 1))]),
        lambda: spool.delete([1]),
        lambda: spool.read("d0", 0, 0, 10),
        lambda: spool.backlog("d0"),
        lambda: spool.layout("d0"),
        lambda: spool.set_layout("d0", 2),
        lambda: spool.merge_shards("d0"),
        lambda: spool.holds_up_to("d0", 1),
        lambda: spool.oldest_newest_ms("d0", 0),
        lambda: spool.destinations(),
    ]
    for call in calls:
        with pytest.raises(SpoolError):
            call()
