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

from collections import OrderedDict
from collections.abc import Iterable

from ...model import Labels

CounterMark = tuple[int, float]  # (timestamp ms, cumulative value) of a counter's last sample


class CounterStore:
    """Last accepted (timestamp, value) per counter series, bounded in time and size.

    Only values Datadog accepted are committed (by the client, after a 202), so a retried
    request never computes its deltas from its own, unacknowledged, samples. A series not
    committed for ``ttl`` seconds, or the least recently committed beyond ``max_series``, is
    forgotten: its next sample is a first observation again (one increase is not sent).
    """

    def __init__(self, max_series: int = 500_000, ttl: float = 3600.0) -> None:
        self.max_series = max_series
        self.ttl = ttl
        self._marks: OrderedDict[Labels, tuple[int, float, float]] = OrderedDict()

    def get(self, key: Labels) -> CounterMark | None:
        found = self._marks.get(key)
        return None if found is None else (found[0], found[1])

    def commit(self, key: Labels, mark: CounterMark, now: float) -> None:
        current = self._marks.pop(key, None)
        if current is not None and current[0] > mark[0]:
            mark = (current[0], current[1])  # never go back in time
        self._marks[key] = (mark[0], mark[1], now)
        while len(self._marks) > self.max_series:
            self._marks.popitem(last=False)

    def commit_all(self, marks: Iterable[tuple[Labels, CounterMark]], now: float) -> None:
        """``commit`` of each (key, mark), in order: one loop for a request's counters."""
        store = self._marks
        pop = store.pop
        for key, mark in marks:
            current = pop(key, None)
            if current is not None and current[0] > mark[0]:
                store[key] = (current[0], current[1], now)  # never go back in time
            else:
                store[key] = (mark[0], mark[1], now)
        while len(store) > self.max_series:
            store.popitem(last=False)

    def expire(self, now: float) -> int:
        """Forget series not committed for ``ttl`` seconds; how many were forgotten."""
        gone = 0
        while self._marks:
            key, (_, _, seen) = next(iter(self._marks.items()))
            if seen >= now - self.ttl:
                break
            del self._marks[key]
            gone += 1
        return gone

    def __len__(self) -> int:
        return len(self._marks)
