"""The embedded ``federate`` destination: the latest sample of each matching series, for scraping.

A Datadog Agent (openmetrics check) or a Prometheus can scrape ``GET /federate`` and get the
rewritten Flux series without any API key in the relay. It is a destination like the others
(it sees the batch after the Flux rules), but in memory and synchronous, so it is never full:
beyond ``max_series`` new series are refused and counted, existing ones keep updating.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..model import (
    Batch,
    FamilyMetadata,
    Labels,
    Metadata,
    Sample,
    Series,
    family_name,
    is_stale,
)
from ..selectors import Predicate, parse_selectors
from ..wire import text

SNAPSHOT_CHUNK = 10_000  # series copied per event-loop step (about 2 ms)
CHECK_EVERY = 1_024  # series matched between two looks at the stop flag
SORT_RUN = 1_000  # series sorted by one call to sorted() (a few ms holding the GIL)

# update_outputs' memory of a group: its labels, their entries, the values it was checked
# with, and the store's removal count then.
_Group = tuple[tuple[Labels, ...], list[list[Any]], Sequence[float], int]


def _newest(samples: Sequence[Sample]) -> tuple[float, int]:
    newest = max(samples, key=lambda s: s.timestamp)
    return newest.value, newest.timestamp


class FederateStore:
    def __init__(self, match: list[str], max_series: int) -> None:
        self._match = parse_selectors(match)
        self.max_series = max_series
        # [value, timestamp, stored], updated in place; ``stored`` turns False when a stale
        # marker removes the series, so a stale handle below can never revive it.
        self._latest: dict[Labels, list[Any]] = {}
        # The same entries by the id of a labels tuple seen before, with that tuple (which keeps
        # the id from being reused) and its metric name. The Flux rewriter and the fast path's
        # decoder hand the same tuple for a series every scrape, so a known series costs one
        # int lookup here instead of a selector and a hash of all its labels.
        self._by_id: dict[int, tuple[Labels, list[Any], str]] = {}
        self._metadata: dict[str, FamilyMetadata] = {}
        # The series metadata (RW 2.0) each family's entry was last made from: a series that
        # carries the very same object again has nothing to change.
        self._applied: dict[str, Metadata] = {}
        # Entries of series written together (update_outputs), by the id of their labels tuple.
        # Each group holds its labels tuple, values tuple and entries (so no id is reused).
        self._groups: dict[int, _Group] = {}
        self._removals = 0  # series removed so far: a group found before a removal is checked
        self.refused = 0  # series not stored because the store was full

    def __len__(self) -> int:
        return len(self._latest)

    def update(self, batch: Batch) -> int:
        """Keep the newest sample per matching series; a stale marker removes the series.

        Returns the number of samples refused because the store is full.
        """
        by_id = self._by_id
        applied = self._applied
        refused = 0
        for series in batch.series:
            # Unpacked at once: cheaper than three attribute reads, on every stored series.
            labels, samples, _, _, meta, _ = series
            if not samples:
                continue
            handle = by_id.get(id(labels))
            if handle is None:
                refused += self._update_slow(series)
                continue
            stored, entry, name = handle
            if stored is not labels or not entry[2]:
                refused += self._update_slow(series)
                continue
            # The newest sample (the first of equals, as max() picks); most series have one.
            if len(samples) == 1:
                value, timestamp, _ = samples[0]
            else:
                value, timestamp = _newest(samples)
            if entry[1] > timestamp:
                continue
            if value != value and is_stale(value):
                self._remove(labels)
                continue
            entry[0] = value
            entry[1] = timestamp
            if meta is not None and applied.get(name) is not meta:
                self._family(series)
        for family in batch.metadata:
            if family.family in self._metadata or len(self._metadata) < self.max_series:
                self._metadata[family.family] = family
                applied.pop(family.family, None)
        self.refused += refused
        return refused

    def update_outputs(
        self,
        groups: Sequence[tuple[tuple[tuple[Labels, ...], tuple[Metadata, ...]], Sequence[float]]],
        timestamp: int,
        families: Sequence[FamilyMetadata],
    ) -> int:
        """``update(Batch(series, families))`` for series given as groups of label sets with
        their metadata and one value each, all at ``timestamp`` (the Flux rules' steady output).

        A group whose series are all held (the usual case) is updated through the entries it
        found the last time it brought the same values tuple, with no ``Series`` and no lookup
        per series; the others take ``update``, whose metadata handling then runs as it would
        have. Returns the number of samples refused because the store is full.
        """
        found = self._groups
        removals = self._removals
        slow: list[Series] = []
        for group, values in groups:
            names = group[0]
            known = found.get(id(names))
            if (
                known is None
                or known[0] is not names
                or known[2] is not values
                or known[3] != removals
            ):
                known = self._group(group, values)
                if known is None:
                    slow.extend(
                        Series(labels, (Sample(value, timestamp),), (), (), meta)
                        for labels, meta, value in zip(*group, values, strict=True)
                    )
                    continue
            for entry, value in zip(known[1], values, strict=True):
                if entry[1] <= timestamp:
                    entry[0] = value
                    entry[1] = timestamp
        if slow:
            return self.update(Batch(tuple(slow), tuple(families)))
        return 0

    def _group(
        self, group: tuple[tuple[Labels, ...], tuple[Metadata, ...]], values: Sequence[float]
    ) -> _Group | None:
        """The entries of a group's series, remembered by the identity of its labels tuple, if
        every one is held and ``values`` holds no NaN (a stale marker removes a series); None
        otherwise. Valid while no series is removed from the store (``_removals``)."""
        names = group[0]
        if len(values) != len(names) or not all(v == v for v in values):
            return None
        entries: list[list[Any]] = []
        for labels in names:
            entry = self._latest.get(labels)
            if entry is None:
                return None
            entries.append(entry)
        if len(self._groups) >= len(self._latest) + 1024:
            self._groups.clear()  # groups of objects long gone (see _by_id)
        known = self._groups[id(names)] = (names, entries, values, self._removals)
        return known

    def _update_slow(self, series: Series) -> int:
        """``update`` for a series whose labels tuple is new here: the selectors, one hash."""
        labels = series.labels
        samples = series.samples
        if not self._match(labels):
            return 0
        value, timestamp = samples[0][:2] if len(samples) == 1 else _newest(samples)
        latest = self._latest
        entry = latest.get(labels)
        if entry is not None and entry[1] > timestamp:
            return 0
        if value != value and is_stale(value):
            self._remove(labels)
            return 0
        if entry is not None:
            entry[0] = value
            entry[1] = timestamp
        elif len(latest) >= self.max_series:
            return len(samples)
        else:
            entry = latest[labels] = [value, timestamp, True]
        self._family(series)
        by_id = self._by_id
        if len(by_id) >= 2 * len(latest) + 1024:
            # Handles on tuples no decoder hands any more (a decoder that makes new tuples per
            # request, or a cache that was emptied): dropped all at once, so the tuples they
            # keep alive never outnumber the stored series by much.
            by_id.clear()
        by_id[id(labels)] = (labels, entry, series.name)
        return 0

    def _remove(self, labels: Labels) -> None:
        entry = self._latest.pop(labels, None)
        if entry is not None:
            self._removals += 1
            entry[2] = False  # any handle on it in _by_id now takes the slow path

    def _family(self, series: Series) -> None:
        meta = series.metadata
        if meta is not None:
            name = series.name
            family = family_name(name, meta.type)  # a histogram's parts are one family
            self._metadata[family] = FamilyMetadata(family, *meta)
            self._applied[name] = meta

    def render(self, selectors: Predicate | None = None) -> str:
        """Text format of the stored series (those matching ``selectors`` when given)."""
        points = [(labels, value, ts) for labels, (value, ts, _) in self._latest.items()]
        return render_snapshot(Snapshot(points, self._metadata), selectors)

    async def snapshot(self, chunk: int = SNAPSHOT_CHUNK) -> Snapshot:
        """The stored points and metadata as they are now, for ``render_snapshot`` in another
        thread; read ``chunk`` series at a time, yielding to the event loop in between.

        Read on the loop, so each value comes with its own timestamp (the loop updates the two
        in place, one after the other); a series updated while this runs shows either sample,
        one removed meanwhile is left out.
        """
        entries = tuple(self._latest.items())  # one C-level copy: later changes do not move it
        points: list[tuple[Labels, float, int | None]] = []
        for start in range(0, len(entries), chunk):
            points.extend(
                (labels, value, ts)
                for labels, (value, ts, stored) in entries[start : start + chunk]
                if stored
            )
            if start + chunk < len(entries):
                await asyncio.sleep(0)
        return Snapshot(points, dict(self._metadata))


class Abandoned(Exception):
    """A render stopped because its request gave up waiting (``federate.timeout``)."""


class Snapshot(NamedTuple):
    points: list[tuple[Labels, float, int | None]]
    metadata: dict[str, FamilyMetadata]


def render_snapshot(
    snapshot: Snapshot, selectors: Predicate | None = None, stop: threading.Event | None = None
) -> str:
    """Text format of a snapshot's series (those matching ``selectors``), sorted by labels.

    Safe in another thread: it reads only the snapshot. Raises ``Abandoned`` once ``stop`` is
    set.
    """
    points = snapshot.points
    if selectors is not None:
        kept = []
        for i, point in enumerate(points):
            if stop is not None and i % CHECK_EVERY == 0 and stop.is_set():
                raise Abandoned
            if selectors(point[0]):
                kept.append(point)
        points = kept
    # Sorted in short runs, then merged: one sorted() over all of them would hold the GIL for
    # its whole length (its comparisons run in C), stalling the event loop that long on a large
    # store. Label sets are unique: values are never compared.
    runs = [sorted(points[i : i + SORT_RUN]) for i in range(0, len(points), SORT_RUN)]
    if stop is not None and stop.is_set():
        raise Abandoned
    ordered = runs[0] if len(runs) == 1 else heapq.merge(*runs)
    return text.render(ordered, snapshot.metadata)
