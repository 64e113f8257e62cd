"""Counter state between requests: the last accepted sample of each counter series.

Counters
    With ``counters: count`` a counter is sent as Datadog's ``count`` (type 1) with the
    semantics of the Agent's ``monotonic_count``: the increase since the previous sample of the
    same series (labels). The first sample of a series only records the value (nothing to
    subtract from); a value lower than the previous one is a reset, so the increase is the value
    itself; a sample not newer than the last one seen is ignored (a resend, or out of order).
    With ``counters: gauge`` the cumulative value is sent as a gauge.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

from ... import caches
from ...model import Labels
from ..rows import LOOPS, Loops

CounterMark = tuple[int, float]  # (timestamp ms, cumulative value) of a counter's last sample
# Every Datadog destination's counter state: gotk_relay_cache_entries{cache="datadog_counters"}.
STATES: Final = caches.family("datadog_counters", 500_000)


def counter_key(labels: Labels, loops: Loops = LOOPS) -> bytes:
    """A label set's identity in counter state: its pairs, in order, each string prefixed with
    its length. A label set's ``SeriesInfo`` holds it, so the state is looked up by a bytes
    object whose hash CPython keeps (a counter sample is looked up three or four times).
    Compiled where built (``_rows.c``), for the memo's misses."""
    if loops.compiled is not None and isinstance(labels, tuple):
        key: bytes = loops.compiled.counter_key(labels)
        return key
    return "".join([f"{len(k)}:{k}{len(v)}:{v}" for k, v in labels]).encode()


class CounterStore:
    """Last accepted (timestamp, value) per counter series, by ``counter_key``, bounded in time
    and size.

    Only values Datadog accepted are committed (by the client, after a 202), so a retried
    request never computes its deltas from its own, unacknowledged, samples. A series not
    committed for ``ttl`` seconds, or the least recently committed beyond ``max_series``, is
    forgotten: its next sample is a first observation again (one increase is not sent).
    """

    def __init__(self, max_series: int = 500_000, ttl: float = 3600.0) -> None:
        self.max_series = max_series
        self.ttl = ttl
        # A plain dict, least recently committed first: a commit moves its key to the end.
        self._marks: dict[bytes, tuple[int, float, float]] = {}
        self._shown = STATES.watched(max_series, self._marks.__len__)

    def get(self, labels: Labels) -> CounterMark | None:
        found = self._marks.get(counter_key(labels))
        return None if found is None else (found[0], found[1])

    def commit(self, labels: Labels, mark: CounterMark, now: float) -> None:
        self.commit_keys(((counter_key(labels), mark),), now)

    def commit_keys(self, marks: Iterable[tuple[bytes, CounterMark]], now: float) -> None:
        """Commit each (``counter_key``, mark), in order; a mark older than the one kept does
        not replace it (never back in time)."""
        store = self._marks
        pop = store.pop
        for key, mark in marks:
            current = pop(key, None)
            if current is not None and current[0] > mark[0]:
                store[key] = (current[0], current[1], now)
            else:
                store[key] = (mark[0], mark[1], now)
        self._bound()

    def commit_rows(self, rows: list[list[Any] | None], now: float, loops: Loops = LOOPS) -> None:
        """``commit_keys`` of each mapped row's (key, final) that has a final mark: the state
        after a request's counters, compiled (``datadog_commit``) where built. A None is a row
        let go after rendering (a series of one point, not a counter: nothing to commit)."""
        if loops.compiled is not None:
            loops.compiled.datadog_commit(self._marks, rows, now)
            self._bound()
        else:
            self.commit_keys(
                [(row[0], row[7]) for row in rows if row is not None and row[7] is not None], now
            )

    def _bound(self) -> None:
        excess = len(self._marks) - self.max_series
        if excess > 0:  # the least recently committed, in one walk from the front
            for key in list(islice(self._marks, excess)):
                del self._marks[key]

    def expire(self, now: float) -> int:
        """Forget series not committed for ``ttl`` seconds; how many were forgotten."""
        stale: list[bytes] = []
        for key, (_, _, seen) in self._marks.items():  # oldest first: stop at the first fresh
            if seen >= now - self.ttl:
                break
            stale.append(key)
        for key in stale:
            del self._marks[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._marks)
