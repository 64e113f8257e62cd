"""Bounded caches by name: one place to see what every memo on the path holds and may hold.

A cache here is a plain dict (``Bounded.entries``) that its owner reads inline on the hot
path; when it holds ``limit`` entries, a miss drops the oldest slice of them (``make_room``:
insertion order, a ``1/SLICE`` of the limit at a time), never the whole cache, so a working set
near the limit keeps most of its hits instead of being decoded again all at once. A hit costs
one dict lookup and no bookkeeping, a miss one ``len`` against the bound. Each kind of cache is
a ``Family`` in ``FAMILIES`` (by name); its instances (one per rule, per selector, per
``Limits`` value, or just one) are counted while they live, and ``/metrics`` shows each
family's entries and limit (``gotk_relay_cache_entries`` / ``gotk_relay_cache_limit``, summed
over its instances). State an owner bounds by its own rule (the Datadog destinations' counter
state, the OTLP destinations' streams: least recently committed first) is shown the same way
through ``Watched``.

Pure: it imports nothing of the relay, so any module can own a cache.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SLICE: Final = 16  # a full cache drops this fraction (1/SLICE) of its limit at once


def evict_oldest(entries: dict[K, V], count: int) -> list[K]:
    """Drop the ``count`` entries inserted first (a dict keeps insertion order); their keys."""
    doomed = list(itertools.islice(entries, count))
    for key in doomed:
        del entries[key]
    return doomed


class Bounded(Generic[K, V]):
    """One cache: ``entries``, trimmed by its owner (``make_room``) before it grows past
    ``limit``."""

    __slots__ = ("__weakref__", "entries", "limit")

    def __init__(self, limit: int) -> None:
        self.entries: dict[K, V] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    def make_room(self) -> list[K]:
        """Before adding an entry: when ``limit`` are held (or more, after the limit was
        lowered), drop the oldest until a slice of the limit is free; the keys dropped (for an
        owner that keeps something per entry). A slice at a time keeps the cost per miss
        constant on average."""
        over = len(self.entries) - self.limit
        if over < 0:
            return []
        return evict_oldest(self.entries, over + max(1, self.limit // SLICE))


class Saturating:
    """The bound of a memo read on every row of a stream that comes round again (the Datadog and
    OTLP destinations' label sets, ~2-3 KiB each with their state): it learns until it holds
    ``limit`` entries, then stops learning instead of forgetting, and a full one is emptied at
    most once per ``interval`` seconds.

    Why not ``Bounded``'s slices: every scrape sends each series once, in a cycle, and any
    policy that evicts by age misses on every row of a cycle longer than the cache (each entry
    is evicted before its series comes round again); emptying it whole does the same. A memo
    that keeps what it holds hits on ``limit`` of the cycle's N label sets, the others being
    mapped afresh each time; label sets that stopped coming are forgotten at the next emptying.
    """

    __slots__ = ("__weakref__", "_emptied_at", "_news", "_size", "full", "interval", "limit")

    def __init__(self, limit: int, interval: float = 600.0) -> None:
        self.limit = limit
        self.interval = interval
        self._emptied_at: float | None = None  # or when it was first found full
        self._size: Callable[[], int] = lambda: 0
        self.full = False  # found full since it was last emptied (or ever)
        self._news = False  # it turned full and its owner was not told yet (``turned_full``)

    def watch(self, size: Callable[[], int]) -> None:
        """What ``len`` reports (the memo's size), for ``gotk_relay_cache_entries``."""
        self._size = size

    def __len__(self) -> int:
        return self._size()

    def learns(self, size: int) -> bool:
        """Whether a memo holding ``size`` entries learns one more."""
        return size < self.limit

    def empties(self, size: int, now: float) -> bool:
        """Before a batch: whether a memo holding ``size`` entries is emptied now: full, and
        neither emptied nor first found full within ``interval`` seconds (a clock that went back
        counts from where it is now)."""
        if size < self.limit:
            return False
        if not self.full:
            self.full = self._news = True
        if self._emptied_at is None or now < self._emptied_at:
            self._emptied_at = now
            return False
        if now - self._emptied_at < self.interval:
            return False
        self._emptied_at = now
        self.full = False
        return True

    def turned_full(self) -> bool:
        """True once each time the memo was found full after being emptied (or ever): for its
        owner's one log line. A memo that refills after each emptying turns full again."""
        news, self._news = self._news, False
        return news


class Watched:
    """State whose owner bounds it by its own rule, at ``limit`` entries: only shown (its size
    is what ``size`` says). The owner keeps it; it leaves its family with the owner."""

    __slots__ = ("__weakref__", "_size", "limit")

    def __init__(self, limit: int, size: Callable[[], int]) -> None:
        self.limit = limit
        self._size = size

    def __len__(self) -> int:
        return self._size()


class Family:
    """The caches of one kind: the bound new ones get, and the ones alive now."""

    __slots__ = ("_bounds", "_live", "_watched", "limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit  # for caches made from now on (a test may lower it)
        self._live: weakref.WeakSet[Bounded[object, object]] = weakref.WeakSet()
        self._bounds: weakref.WeakSet[Saturating] = weakref.WeakSet()  # memos bounded so
        self._watched: weakref.WeakSet[Watched] = weakref.WeakSet()

    def new(self, limit: int | None = None) -> Bounded[K, V]:
        """A cache of this family, bounded by ``limit`` or the family's."""
        cache: Bounded[K, V] = Bounded(self.limit if limit is None else limit)
        self._live.add(cache)  # type: ignore[arg-type]
        return cache

    def saturating(self, limit: int | None = None, interval: float = 600.0) -> Saturating:
        """A ``Saturating`` bound of this family (its owner tells it the memo's size)."""
        bound = Saturating(self.limit if limit is None else limit, interval)
        self._bounds.add(bound)
        return bound

    def watched(self, limit: int, size: Callable[[], int]) -> Watched:
        """A ``Watched`` state of this family: ``size`` should not hold its owner (a bound
        method of the dict it counts, say), so the state leaves with the owner at once."""
        state = Watched(limit, size)
        self._watched.add(state)
        return state

    def live(self) -> list[Bounded[object, object]]:
        """The caches of this family still in use."""
        return list(self._live)

    def bounds(self) -> list[Saturating]:
        """The ``Saturating`` bounds of this family still in use."""
        return list(self._bounds)

    def entries(self) -> int:
        """Entries held now, over every live cache of this family."""
        watched = sum(len(w) for w in list(self._watched))
        return sum(len(c) for c in self.live()) + sum(len(b) for b in self.bounds()) + watched

    def capacity(self) -> int:
        """The most they may hold together: the sum of their limits."""
        watched = sum(w.limit for w in list(self._watched))
        return sum(c.limit for c in self.live()) + sum(b.limit for b in self.bounds()) + watched


FAMILIES: dict[str, Family] = {}


def family(name: str, limit: int) -> Family:
    """The family ``name``, made with ``limit`` the first time (a module owns its family)."""
    found = FAMILIES.get(name)
    if found is None:
        found = FAMILIES[name] = Family(name, limit)
    return found
