"""The durable spool: every destination's queued entries in one SQLite database (WAL mode).

One database for all destinations, so the entries of one incoming batch are committed for every
destination in a single transaction before the sender hears 2xx: after a crash, a batch is
either queued everywhere or nowhere. Rows are keyed by (destination, shard, id); ids only grow,
so reading ``id > cursor`` in id order replays a shard in the order it was admitted.

``synchronous=full`` fsyncs each commit (survives power loss); ``normal`` survives a killed
process but may lose the last commits on power loss, for fewer fsyncs.

All calls are synchronous and made from the event loop: they are short (one small transaction)
and this keeps admission free of awaits, which is what keeps it all-or-nothing. So that no call
waits for long, SQLite's busy wait (5 s by default) is cut to ``BUSY_TIMEOUT_S``: only another
process holding the file (a backup, the sqlite3 shell) can make the relay's own single
connection wait, and then a write is refused (503, the sender retries) and a sender's read or
delete is retried with backoff by its supervisor, instead of the whole loop stalling.

Every method raises ``SpoolError`` only, never ``sqlite3.Error``: callers (admission, the
supervised senders, start-up) handle one exception type.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..model import Protocol
from .entry import Entry, compress

if TYPE_CHECKING:
    import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    shard INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    points INTEGER NOT NULL,
    newest_ms INTEGER NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_queue ON entries (destination, shard, id);
CREATE TABLE IF NOT EXISTS layouts (
    destination TEXT PRIMARY KEY,
    shards INTEGER NOT NULL,
    barrier INTEGER NOT NULL DEFAULT 0
);
"""


BUSY_TIMEOUT_S = 0.02  # see the module docstring
WAL_PAGES = 256

FORMAT = 1  # PRAGMA user_version: 1 = payloads are snappy blocks (see ``Spool._upgrade``)


def _lock(path: Path) -> int:
    """An exclusive lock on ``path/lock`` for the life of this process's spool (released when
    it closes or the process ends, however it ends): two relays on one ``data_dir`` would each
    send the other's rows and miscount their own. The lock file names the holder's PID."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolError(
            f"the spool in {path} is in use by another process (pid {holder}): give each "
            "relay its own spool.data_dir"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class SpoolError(Exception):
    """The spool cannot be opened or written; the request is refused (503), nothing is acked."""


class Backlog(NamedTuple):
    """What a shard holds in the spool at start."""

    entries: int
    points: int
    bytes: int


class Spool:
    def __init__(self, data_dir: str | Path, synchronous: str = "full") -> None:
        import sqlite3  # here: a relay without a spool does not load SQLite (~1 MiB resident)

        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(path)
        except OSError as exc:
            raise SpoolError(f"cannot open the spool in {path}: {exc}") from exc
        try:
            self.db = sqlite3.connect(
                path / "spool.sqlite3", isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            # Fold the WAL into the database every ~1 MiB (not 4) and keep it no bigger after:
            # rows live in the database file then, and on a full disk the few pages a delete
            # writes fit in the WAL already there; a 4 MiB WAL holding every row could not be
            # checkpointed without as much space again.
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
            self.db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self.db.executescript(SCHEMA)
            self._upgrade(path)
            # Every page of the index the queues read at start, so a file whose pages were
            # overwritten is refused here, in one line, rather than on a later read.
            self.db.execute("SELECT COUNT(*), SUM(points) FROM entries").fetchone()
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock)
            raise SpoolError(f"cannot open the spool in {path}: {exc}") from exc
        self.path = path

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        import sqlite3  # loaded by __init__ already

        try:
            yield
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):  # the error being raised says what went wrong
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    # The WAL grows until a checkpoint (every WAL_PAGES pages): on a full disk, fold
                    # it into the database now so that the retry, deletes first, finds room.
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raise SpoolError(f"cannot {doing} the spool in {self.path}: {exc}") from exc
        except BaseException:
            # Not SQLite's error (a bug in an ``also`` writer): the transaction must not stay
            # open, or every later write would fail on it.
            with suppress(sqlite3.Error):
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            raise

    def _upgrade(self, path: Path) -> None:
        """Bring a spool written by an earlier release to ``FORMAT`` (``PRAGMA user_version``).

        Format 0 held uncompressed payloads; from 1 on a payload is the snappy block that is
        sent, so format-0 rows are compressed in place, in one transaction.
        """
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > FORMAT:
            raise SpoolError(
                f"the spool in {path} has format {version}, written by a newer gotk-relay "
                f"(this one reads format {FORMAT}); move it aside or upgrade"
            )
        if version == FORMAT:
            return
        self.db.execute("BEGIN IMMEDIATE")
        rows = self.db.execute("SELECT id, payload FROM entries").fetchall()
        self.db.executemany(
            "UPDATE entries SET payload = ? WHERE id = ?",
            ((compress(bytes(payload)), row_id) for row_id, payload in rows),
        )
        self.db.execute(f"PRAGMA user_version = {FORMAT}")
        self.db.execute("COMMIT")

    def append(
        self,
        rows: Sequence[tuple[str, int, Entry]],
        also: Callable[[sqlite3.Cursor], None] | None = None,
        delete: Sequence[int] = (),
    ) -> list[int]:
        """Commit ``(destination, shard, entry)`` rows in one transaction; their ids, in order.

        ``also`` writes more in the same transaction (the Flux rules' state, rules/flux/persist.py),
        and the rows ``delete`` names (``spool.when_full: drop_oldest``: the oldest rows make room
        for these) are deleted in it: all of it is committed, or none."""
        if not rows and also is None and not delete:
            return []
        with self._guard("write to"):
            cursor = self.db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            if delete:
                cursor.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in delete])
            if also is not None:
                also(cursor)
            ids = []
            for destination, shard, entry in rows:
                cursor.execute(
                    "INSERT INTO entries"
                    " (destination, shard, protocol, points, newest_ms, tenant, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        destination,
                        shard,
                        entry.protocol,
                        entry.points,
                        entry.newest_ms,
                        entry.tenant,
                        entry.payload,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
            cursor.execute("COMMIT")
        return ids

    def delete(self, ids: Iterable[int]) -> None:
        """Forget entries a destination answered for (accepted or permanently rejected)."""
        batch = [(i,) for i in ids if i]
        if batch:
            with self._guard("delete from"):
                # One transaction: in autocommit each row's delete was a commit of its own (a
                # sync of the WAL each with synchronous=full).
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("DELETE FROM entries WHERE id = ?", batch)
                self.db.execute("COMMIT")

    def read(self, destination: str, shard: int, after_id: int, limit: int) -> list[Entry]:
        with self._guard("read"):
            rows = self.db.execute(
                "SELECT id, protocol, points, newest_ms, tenant, payload FROM entries"
                " WHERE destination = ? AND shard = ? AND id > ? ORDER BY id LIMIT ?",
                (destination, shard, after_id, limit),
            ).fetchall()
        return [
            Entry(bytes(payload), Protocol(proto), points, newest, row_id, tenant)
            for row_id, proto, points, newest, tenant, payload in rows
        ]

    def backlog(self, destination: str) -> dict[int, Backlog]:
        """Per shard, what is waiting from a previous run."""
        with self._guard("read"):
            rows = self.db.execute(
                "SELECT shard, COUNT(*), SUM(points), SUM(LENGTH(payload)) FROM entries"
                " WHERE destination = ? GROUP BY shard",
                (destination,),
            ).fetchall()
        return {shard: Backlog(n, pts or 0, size or 0) for shard, n, pts, size in rows}

    def layout(self, destination: str) -> tuple[int | None, int]:
        """The shard count the destination's rows were spooled under (None: not recorded, a
        spool written before it was, or a destination new to it) and the barrier its first
        shard has not passed yet (0: none; ``ShardedQueue.attach``)."""
        with self._guard("read"):
            row = self.db.execute(
                "SELECT shards, barrier FROM layouts WHERE destination = ?", (destination,)
            ).fetchone()
        return (None, 0) if row is None else (int(row[0]), int(row[1]))

    def set_layout(self, destination: str, shards: int, barrier: int = 0) -> None:
        with self._guard("write to"):
            self.db.execute(
                "INSERT INTO layouts (destination, shards, barrier) VALUES (?, ?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET shards = excluded.shards,"
                " barrier = excluded.barrier",
                (destination, shards, barrier),
            )

    def merge_shards(self, destination: str) -> int:
        """Move every row of the destination onto shard 0, where they are read in id order;
        the highest id moved (0: none). Each series was in one shard of the old layout, so
        its rows keep their order on shard 0, whatever the old and new shard counts."""
        with self._guard("write to"):
            self.db.execute("UPDATE entries SET shard = 0 WHERE destination = ?", (destination,))
            row = self.db.execute(
                "SELECT MAX(id) FROM entries WHERE destination = ?", (destination,)
            ).fetchone()
        return int(row[0] or 0)

    def holds_up_to(self, destination: str, last_id: int) -> bool:
        """Whether a row of the destination with an id up to ``last_id`` is still spooled."""
        with self._guard("read"):
            row = self.db.execute(
                "SELECT 1 FROM entries WHERE destination = ? AND id <= ? LIMIT 1",
                (destination, last_id),
            ).fetchone()
        return row is not None

    def oldest_newest_ms(self, destination: str, shard: int) -> int | None:
        """The newest sample timestamp of a shard's oldest entry: how far behind it is."""
        with self._guard("read"):
            row = self.db.execute(
                "SELECT newest_ms FROM entries WHERE destination = ? AND shard = ?"
                " ORDER BY id LIMIT 1",
                (destination, shard),
            ).fetchone()
        return None if row is None else int(row[0])

    def destinations(self) -> list[str]:
        with self._guard("read"):
            return [r[0] for r in self.db.execute("SELECT DISTINCT destination FROM entries")]

    def close(self) -> None:
        try:
            with self._guard("close"):
                self.db.close()
        finally:
            os.close(self._lock)  # the lock goes with it
