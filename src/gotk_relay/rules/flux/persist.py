"""The Flux rules' per-object state kept across restarts, in the spool's SQLite database.

With ``spool.data_dir`` set, the relay writes the state of every object a request changed (and
deletes the rows of objects it forgot) inside the transaction that commits the request's spool
entries (``FluxState.write``, handed to ``Spool.append``): the outputs a request made and the
state saying they were written are durable together, before the sender hears 2xx, and neither
without the other. At start, and at a reload that builds new rules, ``FluxState.load`` puts the
state back into the rewriter, so a resent or older round writes nothing at or before what was
written (docs/flux.md, "Across restarts").

Two tables, so that the common write (a scrape in which nothing changed) is small: an object's
``shape`` (identity, kind, its input label sets; written when they change) and its ``numbers``
(timestamps and state, packed; written at each change). Rows exist only for tracked objects
(at most ``flux.max_objects``); an expired object's rows go in the same transaction as its
expiry's request. A state the rules cannot read (damaged, another format, written under other
rules) is discarded with one log line and counted (``discarded``); the relay starts empty then.

SQLite is imported only where it is used: a relay without a spool does not load it.
"""

from __future__ import annotations

import json
import logging
import struct
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final

from ..flux_kinds import BY_KIND
from .config import FluxConfig
from .rewriter import FluxRewriter
from .state import NEVER, FluxObject, InfoObject, Input, LegacyObject

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("gotk_relay.flux")

FORMAT: Final = "1"
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS flux_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flux_objects (
    id INTEGER PRIMARY KEY, forward INTEGER NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flux_numbers (id INTEGER PRIMARY KEY, numbers BLOB NOT NULL);
"""
# Keys of flux: that decide what an object is and what its outputs are: state written under
# others means other series, so it is discarded. The rest (keep_source, max_objects, the
# durations) leave it meaningful.
RULE_KEYS: Final = frozenset(
    (
        "mode",
        "label_shape",
        "controller_namespace",
        "set_job",
        "emit_deleted",
        "versions",
        "replica_labels",
    )
)

# newest_value_ts, interval, last_seen, deadline (NEVER: none), open, number of inputs
_HEAD: Final = struct.Struct("<qqqqBB")
_INPUT: Final = struct.Struct("<qq")  # value_ts, stale_ts, per input in shape order
_INFO: Final = struct.Struct("<qqB")  # state_ts, out_last, suspended; then ready, UTF-8

# Rows read by one statement when a rewind reads objects back (SQLite's bound parameters).
_ROWS_PER_READ: Final = 500
# What a damaged row raises while it is read back.
_UNREADABLE: Final = (ValueError, KeyError, TypeError, IndexError, struct.error)


def rules_of(config: FluxConfig) -> str:
    """The rules the state was written under, as stored (``RULE_KEYS``)."""
    return json.dumps(config.model_dump(include=set(RULE_KEYS)), sort_keys=True)


def _labels(raw: Any) -> tuple[tuple[str, str], ...]:
    """A label set as JSON holds it (pairs of strings) as the rules hold it."""
    labels: tuple[tuple[str, str], ...] = tuple(map(tuple, raw))
    if not all(len(pair) == 2 for pair in labels):
        raise ValueError(f"not a label set: {raw!r}")
    return labels


# _HEAD, one _INPUT and _INFO in one: the common object (one input series), packed in one call.
_ONE_INPUT_INFO: Final = struct.Struct("<qqqqBBqqqqB")


def _numbers(obj: FluxObject) -> bytes:
    deadline = NEVER if obj.deadline is None else obj.deadline
    inputs = obj.inputs
    if len(inputs) == 1 and isinstance(obj, InfoObject):
        (entry,) = inputs
        head = _ONE_INPUT_INFO.pack(
            obj.newest_value_ts,
            obj.interval,
            obj.last_seen,
            deadline,
            obj.open,
            1,
            entry.value_ts,
            entry.stale_ts,
            obj.state_ts,
            obj.out_last,
            obj.suspended,
        )
        return head + obj.ready.encode()
    parts = [
        _HEAD.pack(
            obj.newest_value_ts, obj.interval, obj.last_seen, deadline, obj.open, len(inputs)
        )
    ]
    parts.extend(_INPUT.pack(i.value_ts, i.stale_ts) for i in inputs)
    if isinstance(obj, InfoObject):
        parts.append(_INFO.pack(obj.state_ts, obj.out_last, obj.suspended))
        parts.append(obj.ready.encode())
    elif isinstance(obj, LegacyObject):
        legacy = {
            "cond": obj.cond,
            "suspend": obj.suspend,
            "current": None
            if obj.current is None
            else next(k for k, v in obj.infos.items() if v is obj.current),
            "current_ready": obj.current_ready,
            "infos": [[r, s, info.last] for (r, s), info in obj.infos.items()],
            "last_emit": obj.last_emit,
        }
        parts.append(json.dumps(legacy).encode())
    return b"".join(parts)


def _shape(obj: FluxObject) -> str:
    inputs = [[entry.labels, list(entry.replica)] for entry in obj.inputs]
    return json.dumps({"key": obj.key, "inputs": inputs})


class StateUnreadable(Exception):
    """The stored state cannot be read back to undo a rolled back write (``FluxState.rewind``)."""


class FluxState:
    """The state store of one relay: its spool's database, and the rewriter it keeps."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.rewriter: FluxRewriter | None = None
        self.restored = 0  # objects the last load put back
        self.discarded: dict[str, int] = {}  # loads that started empty, by reason
        self._next_row = 1
        self._clock = NEVER  # the relay clock as stored
        self._shaped: list[tuple[FluxObject, tuple[Input, ...]]] = []
        # The rewriter holds changes whose write was rolled back (``rolled_back``): the rules
        # must not run again until ``rewind`` has put the stored state back.
        self.ahead = False

    # -- start, reload ----------------------------------------------------------------------

    def load(self, rewriter: FluxRewriter) -> int:
        """Put the stored state back into ``rewriter`` and keep it from now on; objects restored.

        Never raises for what it reads: a state it cannot use is discarded (logged once,
        counted in ``discarded``) and the rewriter starts empty.
        """
        import sqlite3

        self.rewriter = rewriter
        self.ahead = False  # whatever the old rewriter held, the new one starts as stored
        rewriter.changed = {}  # from now on each call's changes are kept for ``write``
        rewriter.forgotten = []
        rules = rules_of(rewriter.config)
        try:
            self.db.executescript(SCHEMA)
            meta = dict(self.db.execute("SELECT name, value FROM flux_meta").fetchall())
            if not meta:
                self._discard("absent", "no Flux state stored yet", rules)
                return 0
            if meta.get("format") != FORMAT:
                self._discard(
                    "format",
                    f"stored in format {meta.get('format')!r}, this relay reads {FORMAT}",
                    rules,
                )
                return 0
            if meta.get("rules") != rules:
                self._discard("rules_changed", "written under other flux: rules", rules)
                return 0
            rows = self.db.execute(
                "SELECT o.id, o.forward, o.kind, o.shape, n.numbers FROM flux_objects o"
                " LEFT JOIN flux_numbers n ON n.id = o.id"
            ).fetchall()
            objects = [self._object(rewriter, *row) for row in rows]
        except sqlite3.Error as exc:
            self._discard("corrupt", f"cannot be read: {exc}", rules)
            return 0
        except _UNREADABLE as exc:
            self._discard("corrupt", f"a row cannot be read: {exc!r}", rules)
            return 0
        objects.sort(key=lambda o: o.last_seen, reverse=True)
        kept, extra = objects[: rewriter.config.max_objects], objects[rewriter.config.max_objects :]
        try:
            self._begin()
            self._delete([o.row for o in extra])
            # Numbers whose object row is gone (no write leaves them; a hand's edit might).
            self.db.execute(
                "DELETE FROM flux_numbers WHERE id NOT IN (SELECT id FROM flux_objects)"
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._discard("corrupt", f"cannot be written: {exc}", rules)
            return 0
        clock = max((o.last_seen for o in kept), default=NEVER)
        with suppress(ValueError):  # a clock that cannot be read: the objects' times stand in
            clock = max(clock, int(meta.get("clock", NEVER)))
        rewriter.restore(kept, clock)
        self._clock = rewriter.clock
        self._next_row = max((o.row for o in objects), default=0) + 1
        self.restored = len(kept)
        log.info(
            "Flux state restored from the spool",
            extra={"objects": len(kept), "over_max_objects": len(extra)},
        )
        return len(kept)

    def _object(
        self, rewriter: FluxRewriter, row: int, forward: int, kind: str, shape: str, numbers: Any
    ) -> FluxObject:
        if not isinstance(numbers, bytes):
            raise ValueError(f"object {row} has no numbers")
        parsed = json.loads(shape)
        key = _labels(parsed["key"])
        flux_kind = BY_KIND[kind]
        newest, interval, last_seen, deadline, is_open, count = _HEAD.unpack_from(numbers)
        obj: FluxObject
        if forward:
            classify = rewriter.classifier
            info = InfoObject(
                key,
                flux_kind,
                last_seen,
                classify.forward_outputs(key),
                classify.forward_values("Unknown", False),
            )
            at = _HEAD.size + count * _INPUT.size
            info.state_ts, info.out_last, suspended = _INFO.unpack_from(numbers, at)
            info.ready = numbers[at + _INFO.size :].decode()
            info.suspended = bool(suspended)
            info.values = classify.forward_values(info.ready, info.suspended)
            obj = info
        else:
            legacy = LegacyObject(key, flux_kind, last_seen)
            tail = json.loads(numbers[_HEAD.size + count * _INPUT.size :])
            legacy.cond = {str(s): (int(t), float(v)) for s, (t, v) in tail["cond"].items()}
            suspend = tail["suspend"]
            legacy.suspend = None if suspend is None else (int(suspend[0]), float(suspend[1]))
            for ready, suspended_shown, last in tail["infos"]:
                legacy.info_shown(ready, suspended_shown).last = int(last)
            current = tail["current"]
            if current is not None:
                legacy.current = legacy.infos[(current[0], current[1])]
            legacy.current_ready = tail["current_ready"]
            legacy.last_emit = int(tail["last_emit"])
            obj = legacy
        stored = parsed["inputs"]
        if len(stored) != count:
            raise ValueError(f"object {row}: {len(stored)} inputs, {count} input numbers")
        entries: dict[
            tuple[tuple[str, str], ...], Input
        ] = {}  # a label set stored twice is one input, as before
        for index, (labels, replica) in enumerate(stored):
            parsed_labels = _labels(labels)
            entry = entries[parsed_labels] = Input(parsed_labels, tuple(str(r) for r in replica))
            entry.value_ts, entry.stale_ts = _INPUT.unpack_from(
                numbers, _HEAD.size + index * _INPUT.size
            )
        obj.inputs = tuple(entries.values())
        obj.newest_value_ts, obj.interval, obj.open = newest, interval, bool(is_open)
        obj.deadline = None if deadline == NEVER else deadline
        obj.row = row
        obj.stored_inputs = obj.inputs
        return obj

    def _discard(self, reason: str, why: str, rules: str) -> None:
        """Start empty: forget every stored row, and record the format and rules from now on."""
        import sqlite3

        self.restored = 0
        self._next_row = 1
        self._clock = NEVER
        self.discarded[reason] = self.discarded.get(reason, 0) + 1
        level = logging.INFO if reason == "absent" else logging.WARNING
        log.log(
            level,
            "Flux state not restored; the rules start with no object state",
            extra={"reason": reason, "detail": why},
        )
        try:
            # Dropped and made anew, not emptied: a table of another shape would fail every
            # later write, and with it every request's spool commit.
            self._begin()
            for table in ("flux_objects", "flux_numbers", "flux_meta"):
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self._meta(rules)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            # The spool's own writes will fail too, and say so (503, /-/ready).
            log.error("the Flux state tables cannot be made anew", extra={"reason": str(exc)})

    def _meta(self, rules: str) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO flux_meta (name, value) VALUES (?, ?)",
            (("format", FORMAT), ("rules", rules)),
        )

    def _begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        import sqlite3

        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _delete(self, rows: list[int]) -> None:
        gone = [(row,) for row in rows if row]
        if gone:
            self.db.executemany("DELETE FROM flux_objects WHERE id = ?", gone)
            self.db.executemany("DELETE FROM flux_numbers WHERE id = ?", gone)

    # -- each request ----------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether the rewriter changed something ``write`` has not written yet."""
        rewriter = self.rewriter
        if rewriter is None:
            return False
        return bool(rewriter.changed or rewriter.forgotten) or rewriter.clock != self._clock

    def write(self, cursor: sqlite3.Cursor) -> None:
        """Write what the rewriter changed since the last commit, inside the caller's
        transaction (``Spool.append``); ``committed`` then forgets it, while a rolled back
        transaction leaves it to be written by the next one."""
        rewriter = self.rewriter
        shaped = self._shaped
        shaped.clear()  # what a rolled back write had shaped is shaped again here
        if rewriter is None or rewriter.changed is None:
            return
        if rewriter.clock != self._clock:
            # Deadlines of pending ends are counted on it; it never goes back, after a restart too.
            cursor.execute(
                "INSERT OR REPLACE INTO flux_meta (name, value) VALUES ('clock', ?)",
                (str(rewriter.clock),),
            )
        forgotten = rewriter.forgotten
        if forgotten:
            gone = [(o.row,) for o in forgotten if o.row]
            cursor.executemany("DELETE FROM flux_objects WHERE id = ?", gone)
            cursor.executemany("DELETE FROM flux_numbers WHERE id = ?", gone)
        changed = rewriter.changed
        if not changed:
            return
        shapes: list[tuple[int, bool, str, str]] = []
        numbers: list[tuple[int, bytes]] = []
        for obj in changed:
            if obj.gone:
                continue
            if not obj.row:
                obj.row = self._next_row
                self._next_row += 1
            inputs = obj.inputs
            if inputs != obj.stored_inputs:
                shapes.append((obj.row, isinstance(obj, InfoObject), obj.kind.kind, _shape(obj)))
                shaped.append((obj, inputs))
            numbers.append((obj.row, _numbers(obj)))
        if shapes:
            cursor.executemany(
                "INSERT OR REPLACE INTO flux_objects (id, forward, kind, shape)"
                " VALUES (?, ?, ?, ?)",
                shapes,
            )
        # An upsert updates the row in place (REPLACE deletes and inserts: twice the work).
        cursor.executemany(
            "INSERT INTO flux_numbers (id, numbers) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET numbers = excluded.numbers",
            numbers,
        )

    def rolled_back(self) -> None:
        """The transaction ``write`` wrote into was rolled back: the request it came with is
        refused, and its sender will send it again. Until ``rewind`` runs, the rules hold that
        request's effect, and would take the resend for old news and write nothing for it."""
        if self.pending:
            self.ahead = True

    def rewind(self) -> int:
        """Put back, as stored, the objects the rules changed since the last commit; objects
        put back.

        Only the objects the refused requests touched are read (``changed`` and ``forgotten``
        name them), so this costs what those requests cost, not a reload. Raises
        ``StateUnreadable`` when the database cannot be read; ``ahead`` then stays set.
        """
        import sqlite3

        rewriter = self.rewriter
        if not self.ahead or rewriter is None or rewriter.changed is None:
            self.ahead = False
            return 0
        touched = [*rewriter.changed, *rewriter.forgotten]
        ids = sorted({obj.row for obj in touched if obj.row})
        stored: list[FluxObject] = []
        try:
            for start in range(0, len(ids), _ROWS_PER_READ):
                chunk = ids[start : start + _ROWS_PER_READ]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    "SELECT o.id, o.forward, o.kind, o.shape, n.numbers FROM flux_objects o"
                    f" LEFT JOIN flux_numbers n ON n.id = o.id WHERE o.id IN ({marks})",
                    chunk,
                ).fetchall()
                for row in rows:
                    try:
                        stored.append(self._object(rewriter, *row))
                    except _UNREADABLE as exc:
                        # Left out: the object starts anew when next seen, as after a load.
                        log.warning(
                            "a stored Flux object cannot be read back; it starts anew",
                            extra={"row": row[0], "reason": repr(exc)},
                        )
        except sqlite3.Error as exc:
            raise StateUnreadable(f"cannot read the Flux state back from the spool: {exc}") from exc
        rewriter.rewind(touched, stored)
        rewriter.changed.clear()
        rewriter.forgotten.clear()
        self._shaped.clear()
        self.ahead = False
        return len(stored)

    def committed(self) -> None:
        """The transaction ``write`` wrote into is committed: its changes are stored."""
        rewriter = self.rewriter
        if rewriter is None or rewriter.changed is None:
            return
        for obj, inputs in self._shaped:
            obj.stored_inputs = inputs
        self._shaped.clear()
        self._clock = rewriter.clock
        rewriter.changed.clear()
        rewriter.forgotten.clear()
