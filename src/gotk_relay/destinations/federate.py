"""The embedded ``federate`` destination: the latest sample of each matching series, for scraping.

A Datadog Agent (openmetrics check) or a Prometheus can scrape ``GET /federate`` and get the
rewritten Flux series without any API key in the relay. It is a destination like the others
(it sees the batch after the Flux rules), but in memory and synchronous, so it is never full:
beyond ``max_series`` new series are refused and counted, existing ones keep updating.

A refused series is remembered (at most 4 × ``max_series`` of them, the oldest forgotten first), so
it is counted once and a write that brings it again costs one lookup while the store is full.

``GET /federate`` is served by ``stream`` on the event loop, a few thousand series at a time:
each series keeps its text line ready (made again only after its sample changed), the series
are kept sorted per first label (the metric name: the index a ``match[]`` naming its metrics
uses), and the text is the one ``render`` (the reference) gives for the same store. New series
are put in order, lines made and label indexes built by ``_federate.c`` when it is built (a
bounded step per call), else by its pure-Python twins here (``_py_sort``, ``_py_merge``,
``_py_lines``, ``_py_index``, ``_py_sample_head``), which its tests compare it with.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from .. import native
from ..identity import IdentityMap
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
from ..selectors import (
    Predicate,
    label_equalities,
    parse_selectors,
    required_names,
    value_of,
)
from ..wire import text

SNAPSHOT_CHUNK = 10_000  # series copied per event-loop step (about 2 ms)
CHECK_EVERY = 1_024  # series matched between two looks at the stop flag
SORT_RUN = 1_000  # series sorted by one call to sorted() (a few ms holding the GIL)
# Series between two turns of the loop: ~0.2 ms, so a write waits little behind a piece (1024, ~1
# ms a piece, moved the write p99 by ~1.5 ms beside back-to-back renders; docs/performance.md).
STREAM_CHUNK = 256
# Series merged by one call of _merge between two turns of the loop: ~1 ms compiled (0.6 us a
# series at 500,000 of them, most reads missing the cache); the pure-Python twin (no C
# compiler) is several times slower, so it takes fewer.
MERGE_STEP = 2_048
PY_MERGE_STEP = 256
# Series a label index's build reads by one compiled call (~1 ms); the pure-Python twin reads
# a stream's chunk at a time.
INDEX_STEP = 8_192
INSERT_STEP = 128  # new series put in place (bisect) between two turns of the loop (~1 ms)
# A bucket's new series are put in place one by one (bisect, a copy of the list) up to this
# many (and an eighth of the bucket); more are sorted in runs and merged, yielding as it goes.
INSERT_MAX = 256
# Refused series remembered per series the store holds (oldest forgotten first): a fleet four
# times what the store holds costs a lookup per refused series, not a selector and a count.
REFUSED_PER_SERIES = 4
# Series a stale marker removed, remembered with its timestamp (the latest this many, oldest
# forgotten first): a sample not newer than the marker does not bring the series back, as
# Prometheus' head refuses it (out of order). Resends and a lagging replica come within
# seconds of the marker; the bound keeps a churning fleet's removals from piling up.
TOMBSTONES = 10_000
# Selectors naming metrics that hold at most this share of the store read those metrics'
# series instead of building an index of their label equalities' labels.
SCAN_SHARE = 16
INDEXED_LABELS = 4  # label indexes kept for match[] equalities (8 bytes a series each)
# Labels indexed from the start, kept up to date as series come (a lookup per new series) and
# never evicted: the Flux objects' namespace as kube-state-metrics exports it and a scrape's
# namespace, what a team's or a tenant's slice of a fleet is selected by, so its first query
# costs what the next ones do. Other labels are indexed by the first query that names them.
KEPT_INDEXES = ("exported_namespace", "namespace")

# A label index: a value to its one stored entry, or to a list of them (of two or more), told
# apart by their class (a list is never an entry): a value held by one series (a name, say)
# costs no list, no memory and no garbage collector's work.
_Index = dict[str, list[Any]]

# A stored series' entry: (value, timestamp, stored, line, fresh, labels), read and written by
# index. ``stored`` turns False when a stale marker removes the series (a handle on it can
# never revive it); ``line`` is its text line (bytes) as of the sample it was last rendered
# with, ``fresh`` whether that is still the sample held (a write sets it False; the next render
# makes the line again). Compiled, an entry is ``_federate.Entry`` (one 80-byte block, where a
# list takes 104 bytes in two: five per Flux object); its twin is a list of its own class, so
# that a list is never an entry (``_Index``, ``_by_id``).
VALUE, TIMESTAMP, STORED, LINE, FRESH, LABELS = range(6)
_labels_of = itemgetter(LABELS)


def store_key(labels: Labels) -> Labels:
    """The label set a series is stored and written under: ``__name__`` first, then its other
    labels in name order, those with an empty value left out (Prometheus' identity of a series:
    ``a=""`` is no label). The relay's label sets are sorted by name, so a name that sorts
    before ``__name__`` (an upper-case initial, ``__a``) comes first there; the usual set, name
    first and no empty value, is returned as it is."""
    if labels and labels[0][0] == "__name__" and all([value for _, value in labels]):
        return labels
    kept = [pair for pair in labels if pair[1]]
    named = [pair for pair in kept if pair[0] == "__name__"]
    return (*named, *(pair for pair in kept if pair[0] != "__name__"))


class _PyEntry(list[Any]):
    """An entry without the compiled module: a list of the six fields."""

    __slots__ = ()


# The compiled twins when built (setup.py; native.load says when they are not).
_native: Any = native.load(f"{__package__}._federate")
_Entry: Any = _PyEntry if _native is None else _native.Entry


def _new_entry(
    value: float,
    timestamp: int | float,
    stored: bool,
    line: bytes | None,
    fresh: bool,
    labels: Labels,
) -> list[Any]:
    """A new entry (the one switch between the compiled ``Entry`` and the twin)."""
    if _native is None:
        return _PyEntry((value, timestamp, stored, line, fresh, labels))
    entry: list[Any] = _native.Entry(value, timestamp, stored, line, fresh, labels)
    return entry


def _new_refusal() -> list[Any]:
    """An entry that is never stored, with a timestamp no sample is newer than: nothing
    updates it."""
    return _new_entry(math.nan, math.inf, False, b"", True, ())


# What a group holds for a series refused while the store is full, or not matched (a group is
# checked again after any removal). Handles use the store's own mark (``_refusal``).
_REFUSED: list[Any] = _new_refusal()

# update_outputs' memory of a group: its labels, their entries, the values it was checked
# with, and the store's removal count then.
_Group = tuple[tuple[Labels, ...], list[list[Any]], Sequence[float], int]


def _newest(samples: Sequence[Sample]) -> tuple[float, int]:
    newest = max(samples, key=lambda s: s.timestamp)
    return newest.value, newest.timestamp


def _post(index: _Index, value: str, entry: list[Any]) -> None:
    """Add ``entry`` to ``index`` under ``value`` (see ``_Index``)."""
    posting = index.get(value)
    if posting is None:
        index[value] = entry
    elif posting.__class__ is list:
        posting.append(entry)
    else:
        index[value] = [posting, entry]


def _entries_of(posting: list[Any]) -> list[list[Any]]:
    """The entries an index holds for a value (see ``_Index``)."""
    return posting if posting.__class__ is list else [posting]


class _Bucket:
    """The stored series of one first label (one metric name), in label order."""

    __slots__ = ("dead", "live", "ordered", "pending")

    def __init__(self) -> None:
        # Sorted by labels; replaced, never changed in place, so a render can go on reading
        # the list it took across its turns of the loop. Removed entries stay until a sort.
        self.ordered: list[list[Any]] = []
        self.pending: list[list[Any]] = []  # added since the last sort
        self.live = 0
        self.dead = 0  # removed entries still in ordered or pending


class FederateStore:
    def __init__(self, match: list[str], max_series: int) -> None:
        self._match = parse_selectors(match)
        self._max_series = max_series
        # Series matched against the selectors: a refused series must not come back here on
        # every write (issue 22), which this count shows (tests, /federate's cost).
        self.selector_checks = 0
        # Entries (see LABELS), updated in place.
        self._latest: dict[Labels, list[Any]] = {}
        # Stored series by their first label (``__name__`` and the metric name, in the relay's
        # sorted label sets): label order is the order of these keys, then within each.
        self._buckets: dict[Labels, _Bucket] = {}
        self._keys: list[Labels] | None = []  # the buckets' keys sorted; None: to sort
        self._sorting = asyncio.Lock()  # one render at a time puts a bucket's new series in
        # Indexes of label values (a label of match[] equalities) to stored entries, in the
        # order they were built (INDEXED_LABELS at most), and their removed entries' counts.
        self._indexes: dict[str, _Index] = {k: {} for k in KEPT_INDEXES}
        self._index_dead: dict[str, int] = dict.fromkeys(KEPT_INDEXES, 0)
        # Series refused because the store was full, oldest first: counted once each.
        self._refused: dict[Labels, None] = {}
        # Series stale markers removed, by store key: the marker's timestamp (TOMBSTONES).
        self._tombstones: dict[Labels, int] = {}
        # The same entries by the identity of a labels tuple seen before: the entry itself when
        # that tuple is the one it holds (the usual case: no more memory), else that tuple (which
        # keeps it alive), the entry and the metric name. The Flux rewriter and the fast path's
        # decoder hand the same tuple for a series every scrape, so a known series costs one
        # identity lookup here instead of a selector and a hash of all its labels.
        self._by_id: IdentityMap[list[Any] | tuple[Labels, list[Any], str]] = IdentityMap()
        self._metadata: dict[str, FamilyMetadata] = {}
        # The series metadata (RW 2.0) each family's entry was last made from: a series that
        # carries the very same object again has nothing to change.
        self._applied: dict[str, Metadata] = {}
        # Entries of series written together (update_outputs), by the identity of their labels
        # tuple. Each group holds its labels tuple, values tuple and entries (keeping them alive).
        self._groups: IdentityMap[_Group] = IdentityMap()
        # Removals and raised bounds so far: after either a refused series may be stored, so a
        # group found before one is checked again, and the handles on refused tuples hold a
        # mark (``_refusal``) that is replaced then (``_room_made``).
        self._removals = 0
        self._refusal = _new_refusal()
        self.refused = 0  # distinct series not stored because the store was full

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def max_series(self) -> int:
        return self._max_series

    @max_series.setter
    def max_series(self, value: int) -> None:
        """A reload may change the bound (it follows ``flux.max_objects``) with what is stored
        kept: a larger one lets series refused so far in."""
        grew = value > self._max_series
        self._max_series = value
        if grew:
            self._room_made()

    def _room_made(self) -> None:
        """A refused series may be stored from now on (under any tuple of its labels): groups
        and the handles on refused tuples, made before, take the slow path again."""
        self._removals += 1
        self._refusal = _new_refusal()

    def update(self, batch: Batch) -> int:
        """Keep the newest sample per matching series (the first of those at one timestamp, as
        Prometheus keeps it); a stale marker removes the series.

        Returns the number of series newly refused because the store is full (a series
        refused before and remembered is not counted again).
        """
        by_id = self._by_id
        applied = self._applied
        refused = 0
        every = batch.series
        index, size = 0, len(every)
        known = _update_known if every.__class__ is tuple else None
        get = by_id.get
        while index < size:
            if known is not None:  # the usual series compiled, from index on, as below
                index = known(every, index, get)
                if index >= size:
                    break
            series = every[index]
            index += 1
            # Unpacked at once: cheaper than three attribute reads, on every stored series.
            labels, samples, _, _, meta, _ = series
            if not samples:
                continue
            handle: Any = by_id.get(labels)
            if handle is None:
                refused += self._update_slow(series)
                continue
            if handle.__class__ is _Entry:  # else (labels, entry, name)
                entry = handle
                stored = entry[5]
                name = None  # read from the series when its metadata needs it
            else:
                stored, entry, name = handle
            if stored is not labels or not entry[2]:
                if entry is self._refusal and len(self._latest) >= self.max_series:
                    if any(s[0] != s[0] for s in samples):  # a stale marker buries it still
                        self._update_slow(series)
                    continue  # refused, and no room made since: still not stored
                refused += self._update_slow(series)
                continue
            # The newest sample (the first of equals, as max() picks); most series have one.
            if len(samples) == 1:
                value, timestamp, _ = samples[0]
            else:
                value, timestamp = _newest(samples)
            if entry[1] >= timestamp:
                continue  # the first sample at a timestamp stays, as Prometheus keeps it
            if value != value and is_stale(value):
                self._remove(entry[5], timestamp)  # the key it is stored under (store_key)
                continue
            entry[0] = value
            entry[1] = timestamp
            entry[4] = False
            if meta is not None and applied.get(series.name if name is None else name) is not meta:
                self._family(series)
        for family in batch.metadata:
            if family.family in self._metadata or len(self._metadata) < self.max_series:
                self._metadata[family.family] = family
                applied.pop(family.family, None)
        return refused

    def update_outputs(
        self,
        groups: Sequence[tuple[tuple[tuple[Labels, ...], tuple[Metadata, ...]], tuple[float, ...]]],
        timestamp: int,
        families: Sequence[FamilyMetadata],
    ) -> int:
        """``update(Batch(series, families))`` for series given as groups of label sets with
        their metadata and one value each, all at ``timestamp`` (the Flux rules' steady output).

        A group whose series are all held (the usual case) is updated through the entries it
        found the last time it brought the same values tuple, with no ``Series`` and no lookup
        per series; the others take ``update``, whose metadata handling then runs as it would
        have. Returns the number of series newly refused because the store is full.
        """
        found = self._groups
        removals = self._removals
        slow: list[Series] = []
        for group, values in groups:
            names = group[0]
            known = found.get(names)
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
            _stamp(known[1], values, timestamp)
        if slow:
            return self.update(Batch(tuple(slow), tuple(families)))
        return 0

    def _group(
        self, group: tuple[tuple[Labels, ...], tuple[Metadata, ...]], values: Sequence[float]
    ) -> _Group | None:
        """The entries of a group's series, remembered by the identity of its labels tuple, if
        every one is held, not matched, or refused (and the store still full), and ``values``
        holds no NaN (a stale marker removes a series); None otherwise. Valid while no room is
        made (``_removals``: a series removed, a larger bound): until then a full store stays
        full."""
        names = group[0]
        if len(values) != len(names) or not all(v == v for v in values):
            return None
        entries: list[list[Any]] = []
        full = len(self._latest) >= self.max_series
        for labels in names:
            entry = self._latest.get(labels)  # the usual set is its own key (store_key)
            if entry is None:
                key = store_key(labels)
                entry = self._latest.get(key) if key is not labels else None
            if entry is None:
                self.selector_checks += 1
                if self._match(labels) and not (full and key in self._refused):
                    return None  # new here: update() stores or refuses it
                entry = _REFUSED
            entries.append(entry)
        if len(self._groups) >= len(self._latest) + 1024:
            self._groups.clear()  # groups of objects long gone (see _by_id)
        known = self._groups[names] = (names, entries, values, self._removals)
        return known

    def _update_slow(self, series: Series) -> int:
        """``update`` for a series whose labels tuple is new here: the selectors, one hash."""
        labels = series.labels
        key = store_key(labels)
        samples = series.samples
        latest = self._latest
        if len(latest) >= self.max_series and key in self._refused:
            # Refused before (a new tuple of it): one hash, no selector, nothing counted.
            self._handle(labels, self._refusal, series.name)
            value, timestamp = samples[0][:2] if len(samples) == 1 else _newest(samples)
            if value != value and is_stale(value):
                self._bury(key, timestamp)
            return 0
        self.selector_checks += 1
        if not key or key[0][0] != "__name__" or not self._match(labels):
            return 0  # a series without a name has no line (receiver.validation: framing)
        value, timestamp = samples[0][:2] if len(samples) == 1 else _newest(samples)
        entry = latest.get(key)
        if entry is not None and entry[1] >= timestamp:
            return 0
        if value != value and is_stale(value):
            self._remove(key, timestamp)
            return 0
        if entry is None and self._tombstones:
            buried = self._tombstones.get(key)
            if buried is not None:
                if timestamp <= buried:
                    return 0  # not newer than the stale marker that removed it
                del self._tombstones[key]
        counted = 0
        if entry is not None:
            entry[0] = value
            entry[1] = timestamp
            entry[4] = False
        elif len(latest) >= self.max_series:
            entry = self._refusal
            refused = self._refused
            if key not in refused:
                if len(refused) >= REFUSED_PER_SERIES * self.max_series:
                    del refused[next(iter(refused))]  # the oldest refusal: bounded
                refused[key] = None
                counted = 1
                self.refused += 1
        else:
            entry = latest[key] = _new_entry(value, timestamp, True, None, False, key)
            self._refused.pop(key, None)
            self._insert(key, entry)
        if entry is not self._refusal:
            self._family(series)
        self._handle(labels, entry, series.name)
        return counted

    def _handle(self, labels: Labels, entry: list[Any], name: str) -> None:
        by_id = self._by_id
        if len(by_id) >= 2 * (len(self._latest) + len(self._refused)) + 1024:
            # Handles on tuples no decoder hands any more (a decoder that makes new tuples per
            # request, or a cache that was emptied): dropped all at once, so the tuples they
            # keep alive never outnumber the stored and refused series by much.
            by_id.clear()
        by_id[labels] = entry if entry[5] is labels else (labels, entry, name)

    def _insert(self, labels: Labels, entry: list[Any]) -> None:
        key = labels[:1]
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
            self._keys = None
        bucket.pending.append(entry)
        bucket.live += 1
        for label, index in self._indexes.items():
            value = value_of(labels, label)
            if value:
                _post(index, value, entry)

    def _bury(self, labels: Labels, stale_at: int) -> None:
        """Remember a stale marker at ``stale_at`` for the series stored under ``labels``."""
        tombstones = self._tombstones
        if tombstones.get(labels, stale_at - 1) < stale_at:
            tombstones.pop(labels, None)  # re-inserted: the newest removals are kept
            if len(tombstones) >= TOMBSTONES:
                del tombstones[next(iter(tombstones))]
            tombstones[labels] = stale_at

    def _remove(self, labels: Labels, stale_at: int) -> None:
        """A stale marker at ``stale_at`` removes the series stored under ``labels``."""
        self._bury(labels, stale_at)
        entry = self._latest.pop(labels, None)
        if entry is not None:
            self._room_made()
            entry[2] = False  # any handle on it in _by_id now takes the slow path
            key = labels[:1]
            bucket = self._buckets[key]
            bucket.live -= 1
            bucket.dead += 1
            if not bucket.live:
                del self._buckets[key]
                self._keys = None
            # Label indexes keep removed entries (skipped when read) until they are as many as
            # the stored series; then the index goes, to be built again when next needed.
            dead = self._index_dead
            for label in self._indexes:
                dead[label] += 1
                if dead[label] > len(self._latest) + 1024:
                    self._indexes = {k: v for k, v in self._indexes.items() if k != label}
                    break

    def _family(self, series: Series) -> None:
        meta = series.metadata
        if meta is not None:
            name = series.name
            family = family_name(name, meta.type)  # a histogram's parts are one family
            self._metadata[family] = FamilyMetadata(family, *meta)
            self._applied[name] = meta

    def render(self, selectors: Predicate | None = None, oldest: int | None = None) -> str:
        """Text format of the stored series (those matching ``selectors`` when given, and
        whose sample is timestamped at ``oldest`` or later), made from all of them at once:
        the reference ``stream`` answers as."""
        points = [
            (labels, e[0], e[1])
            for labels, e in self._latest.items()
            if oldest is None or e[1] >= oldest
        ]
        return render_snapshot(Snapshot(points, self._metadata), selectors)

    def query(self, matches: Sequence[str]) -> Query:
        """``match[]`` selectors ready for ``stream``; SelectorError when one is invalid."""
        if not matches:
            return Query(None, None, None)
        return Query(parse_selectors(matches), required_names(matches), label_equalities(matches))

    async def stream(
        self, query: Query, chunk: int = STREAM_CHUNK, oldest: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The text ``render`` gives (UTF-8), in pieces, made on the event loop: ``chunk``
        series at most are looked at before each piece is handed over (one may be empty), so
        the loop's other work waits a few ms at most, and a piece is small whatever the store.

        Selectors that each name their metrics read only those metrics' series; selectors that
        each have a label equality (``{namespace="a"}``) read only the series an index of that
        label's values gives (kept from the start for ``KEPT_INDEXES``, else built by the
        first such request; kept up to date after).

        A series whose sample is timestamped before ``oldest`` (Prometheus' lookback: the
        server passes now less ``federate.lookback_delta``) is left out, and kept. A series
        updated meanwhile shows either sample; one removed meanwhile, its sample at the start
        or none; one added meanwhile may be left out.
        """
        selectors, names, equalities = query
        if equalities is not None and names is not None and not self._indexed_all(equalities):
            # Named metrics with few series: reading them costs less than a first index.
            named = sum(
                bucket.live
                for name in names
                if (bucket := self._buckets.get((("__name__", name),))) is not None
            )
            if named * SCAN_SHARE <= len(self._latest):
                equalities = None
        metadata = dict(self._metadata)
        found: dict[Labels, list[list[Any]]] | None = None
        if equalities is not None:
            found = {}
            async for _ in self._indexed(equalities, names, found, chunk):
                yield b""
            keys = sorted(found)
        else:
            keys = self._keys if self._keys is not None else sorted(self._buckets)
            self._keys = keys
        if names is not None:
            keys = [k for k in keys if k[0][1] in names]  # stored name first (store_key)
        # A family is written where its first line comes, with that line's metadata (as
        # render() does): its later buckets follow at once, its earlier ones had no line.
        # Each key's place among its family's (taken here, not looked up per key: a family
        # of many buckets with no line, as "" is for label sets without a name first, would
        # cost a search of its list per bucket, quadratic in them).
        family_of: dict[Labels, tuple[str, FamilyMetadata | None]] = {}
        members: dict[str, list[Labels]] = {}
        place: list[int] = []  # by the key's position in keys
        for key in keys:
            family_of[key] = family, _ = text.family_key(key[0][1], metadata)
            following = members.setdefault(family, [])
            place.append(len(following))
            following.append(key)
        out: list[bytes] = []
        seen = 0
        done: set[str] = set()
        for at, first in enumerate(keys):
            family = family_of[first][0]
            if family in done:
                continue
            following = members[family]
            started = False
            for i in range(place[at], len(following)):
                key = following[i]
                async for lines, looked in self._pieces(key, found, selectors, chunk, oldest):
                    if lines:
                        if not started:
                            out.append(text.family_header(family, family_of[key][1]).encode())
                            started = True
                        out.append(b"".join(lines))
                    seen += looked
                    if seen >= chunk:
                        yield b"".join(out)
                        out = []
                        seen = 0
                if not started:
                    break  # no line here: the family starts at a later bucket, if any
            if started:
                done.add(family)
        if out:
            yield b"".join(out)

    async def _pieces(
        self,
        key: Labels,
        found: dict[Labels, list[list[Any]]] | None,
        selectors: Predicate | None,
        chunk: int,
        oldest: int | None = None,
    ) -> AsyncIterator[tuple[list[bytes], int]]:
        """The lines of a bucket's series (those an index ``found``, when given), matching
        ``selectors``, in label order, a chunk at a time, with the number looked at."""
        if found is not None:
            ordered = found[key]
            if len(ordered) > SORT_RUN:
                ordered = await _sorted(ordered)
            else:
                ordered.sort(key=_labels_of)
        else:
            bucket = self._buckets.get(key)
            if bucket is None:
                return  # all its series went meanwhile
            ordered = await self._ordered(bucket)
        for start in range(0, len(ordered), chunk):
            part = ordered[start : start + chunk]
            yield _lines(part, selectors, oldest), len(part)

    def _indexed_all(self, equalities: list[list[tuple[str, str]]]) -> bool:
        return all(label in self._indexes for labels in equalities for label, _ in labels)

    async def _indexed(
        self,
        equalities: list[list[tuple[str, str]]],
        names: frozenset[str] | None,
        found: dict[Labels, list[list[Any]]],
        chunk: int,
    ) -> AsyncIterator[None]:
        """Fill ``found`` (by bucket key) with the stored entries the label indexes give for
        the selectors' equalities (one per selector: the one with the fewest series), of the
        ``names`` when given; yields between chunks of work (an index built the first time)."""
        seen: set[int] = set()
        for alternatives in equalities:
            indexes: dict[str, _Index] = {}
            for label, _ in alternatives:
                index = self._indexes.get(label)
                if index is None:
                    index = {}
                    async for _ in self._build(label, index, chunk):
                        yield None
                indexes[label] = index
            postings: list[list[list[Any]]] = []
            for label, value in alternatives:
                posting = indexes[label].get(value)
                if posting is None:
                    break  # no series has that value: this selector matches none
                postings.append(_entries_of(posting))
            else:
                smallest = min(postings, key=len)
                async for _ in self._gather(smallest, names, found, seen, chunk):
                    yield None

    @staticmethod
    async def _gather(
        posting: list[list[Any]],
        names: frozenset[str] | None,
        found: dict[Labels, list[list[Any]]],
        seen: set[int],
        chunk: int,
    ) -> AsyncIterator[None]:
        """The stored entries of ``posting`` (of the ``names`` when given) not ``seen`` yet,
        into ``found`` by bucket key, a chunk at a time."""
        for start in range(0, len(posting), chunk):
            for entry in posting[start : start + chunk]:
                if not entry[2] or id(entry) in seen:
                    continue
                key = entry[5][:1]
                if names is not None and key[0][1] not in names:
                    continue
                seen.add(id(entry))
                group = found.get(key)
                if group is None:
                    group = found[key] = []
                group.append(entry)
            yield None

    async def _build(self, label: str, index: _Index, chunk: int) -> AsyncIterator[None]:
        """Fill ``index`` with ``label``'s values over the stored series, a chunk at a time
        (new series join it as they come meanwhile), and keep it; the least recently built
        goes beyond ``INDEXED_LABELS`` (the ``KEPT_INDEXES`` aside)."""
        built = [k for k in self._indexes if k not in KEPT_INDEXES]
        if len(built) >= INDEXED_LABELS:
            del self._indexes[built[0]]
        self._indexes[label] = index
        self._index_dead[label] = 0
        entries = list(self._latest.values())  # one C-level copy of the references
        step = max(chunk, _index_step)
        for start in range(0, len(entries), step):
            _index(entries, start, start + step, label, index)
            yield None

    async def _ordered(self, bucket: _Bucket) -> list[list[Any]]:
        """The bucket's series in label order, its new ones put in place and removed ones
        dropped first when there are some (on the loop, yielding when it is long). A render
        stopped meanwhile (its request timed out, its task cancelled) leaves the new series
        to the next one."""
        if not bucket.pending and bucket.dead * 4 <= len(bucket.ordered):
            return bucket.ordered
        async with self._sorting:
            pending, bucket.pending = bucket.pending, []
            ordered = bucket.ordered
            dead = bucket.dead  # removals counted so far; _remove counts those meanwhile
            try:
                if dead * 4 <= len(ordered) and len(pending) <= max(INSERT_MAX, len(ordered) // 8):
                    added = [entry for entry in pending if entry[2]]
                    added.sort(key=_labels_of)
                    merged: list[list[Any]] = []
                    at = 0
                    for i, entry in enumerate(added):
                        place = bisect.bisect_left(ordered, entry[5], at, key=_labels_of)
                        merged.extend(ordered[at:place])
                        merged.append(entry)
                        at = place
                        if i % INSERT_STEP == INSERT_STEP - 1:
                            await asyncio.sleep(0)
                    merged.extend(ordered[at:])
                    dropped = len(pending) - len(added)  # removed before being put in place
                else:
                    # The merge drops every entry removed before it; those removed while it
                    # runs are counted by _remove, kept or not (dropped at a later sort).
                    merged = await _sorted(pending, ordered)
                    dropped = dead
            except BaseException:
                bucket.pending = pending + bucket.pending  # for the next render to put in
                raise
            bucket.dead -= dropped
            bucket.ordered = merged
            return merged

    async def snapshot(self, chunk: int = SNAPSHOT_CHUNK, oldest: int | None = None) -> Snapshot:
        """The stored points and metadata as they are now (those timestamped at ``oldest`` or
        later, when given), for ``render_snapshot`` in another thread; read ``chunk`` series at
        a time, yielding to the event loop in between.

        Read on the loop, so each value comes with its own timestamp (the loop updates the two
        in place, one after the other); a series updated while this runs shows either sample,
        one removed meanwhile is left out.
        """
        entries = tuple(self._latest.items())  # one C-level copy: later changes do not move it
        points: list[tuple[Labels, float, int | None]] = []
        for start in range(0, len(entries), chunk):
            points.extend(
                (labels, e[0], e[1])
                for labels, e in entries[start : start + chunk]
                if e[2] and (oldest is None or e[1] >= oldest)
            )
            if start + chunk < len(entries):
                await asyncio.sleep(0)
        return Snapshot(points, dict(self._metadata))


class Query(NamedTuple):
    """Parsed ``match[]`` selectors: the predicate (None: every series), the metric names it
    can match (None: any), and each selector's label equalities (None: not every selector
    has one)."""

    selectors: Predicate | None
    names: frozenset[str] | None
    equalities: list[list[tuple[str, str]]] | None


async def _sorted(
    entries: list[list[Any]], ordered: list[list[Any]] | None = None
) -> list[list[Any]]:
    """``entries`` sorted by labels, merged with the already sorted ``ordered`` when given,
    those removed meanwhile dropped: sorted in runs, the runs merged at once, each call a
    bounded piece of work with a turn of the loop after it."""
    runs = [ordered] if ordered else []
    for start in range(0, len(entries), SORT_RUN):
        run = entries[start : start + SORT_RUN]
        # Their lines made now, in the order they came (mostly the order they lie in memory),
        # rather than in label order later, where each read misses the cache.
        _all_lines(run, _refresh, None)
        _sort(run, LABELS)
        runs.append(run)
        await asyncio.sleep(0)
    merged: list[list[Any]] = []
    positions = [0] * len(runs)
    while _merge(merged, runs, positions, LABELS, STORED, _merge_step):
        await asyncio.sleep(0)
    return merged


def _py_sort(entries: list[list[Any]], at: int) -> None:
    """``_federate.sort``'s pure-Python twin (the reference)."""
    entries.sort(key=itemgetter(at))


def _py_merge(
    out: list[list[Any]],
    runs: list[list[list[Any]]],
    positions: list[int],
    at: int,
    alive: int,
    limit: int,
) -> bool:
    """``_federate.merge``'s pure-Python twin (the reference): the ``runs`` (each sorted by
    ``entry[at]``) from their ``positions`` merged onto ``out`` (the earlier run's first on
    equal labels), ``limit`` taken at most, those whose ``entry[alive]`` is not True dropped
    (``alive`` < 0: none); ``positions`` updated; whether entries are left."""
    heads = [
        (run[p][at], r)
        for r, (run, p) in enumerate(zip(runs, positions, strict=True))
        if p < len(run)
    ]
    heapq.heapify(heads)
    for _ in range(limit):
        if not heads:
            break
        r = heads[0][1]
        take = runs[r][positions[r]]
        positions[r] += 1
        if alive < 0 or take[alive] is True:
            out.append(take)
        if positions[r] < len(runs[r]):
            heapq.heapreplace(heads, (runs[r][positions[r]][at], r))
        else:
            heapq.heappop(heads)
    return bool(heads)


def _py_sample_head(labels: Labels) -> bytes:
    """``_federate.sample_head``'s pure-Python twin (the reference)."""
    return text.sample_head(text.series_name(labels), labels).encode()


def _lines(
    entries: list[list[Any]], selectors: Predicate | None, oldest: int | None = None
) -> list[bytes]:
    """The text lines of the stored ``entries`` (matching ``selectors``, timestamped at
    ``oldest`` or later), each made again only when its sample changed since it was last
    made."""
    if selectors is None:
        return _all_lines(entries, _refresh, oldest)
    lines: list[bytes] = []
    append = lines.append
    for entry in entries:
        if entry[2] and (oldest is None or entry[1] >= oldest) and selectors(entry[5]):
            if not entry[4]:
                _refresh(entry)
            append(entry[3])
    return lines


def _py_lines(
    entries: list[list[Any]], refresh: Callable[[list[Any]], None], oldest: int | None = None
) -> list[bytes]:
    """``_federate.lines``'s pure-Python twin (the reference): the stored entries' lines (those
    timestamped at ``oldest`` or later, when given), made again by ``refresh`` first where the
    sample changed."""
    lines: list[bytes] = []
    append = lines.append
    for entry in entries:
        if entry[2] and (oldest is None or entry[1] >= oldest):
            if not entry[4]:
                refresh(entry)
            append(entry[3])
    return lines


def _py_index(entries: list[list[Any]], start: int, stop: int, label: str, index: _Index) -> None:
    """``_federate.index``'s pure-Python twin (the reference): the stored entries of
    ``entries[start:stop]`` added to ``index`` by their value of ``label`` (when not empty)."""
    for entry in entries[start:stop]:
        if entry[2]:
            value = value_of(entry[5], label)
            if value:
                _post(index, value, entry)


def _py_stamp(entries: list[list[Any]], values: tuple[float, ...], timestamp: int) -> None:
    """Each entry older than ``timestamp`` takes its value and the timestamp, its line to be
    made again (``update_outputs`` for a group it knows; never ``_REFUSED``, timestamped inf)."""
    for entry, value in zip(entries, values, strict=True):
        if entry[TIMESTAMP] < timestamp:
            entry[VALUE] = value
            entry[TIMESTAMP] = timestamp
            entry[FRESH] = False


_stamp: Callable[[list[list[Any]], tuple[float, ...], int], None] = (
    _py_stamp if _native is None else _native.stamp
)
# No twin: without it ``update``'s own loop takes every series (the reference).
_update_known: Callable[[tuple[Series, ...], int, Callable[[Any], Any]], int] | None = (
    None if _native is None else _native.update_known
)
_sort: Callable[[list[list[Any]], int], None] = _py_sort if _native is None else _native.sort
_merge: Callable[[list[list[Any]], list[list[list[Any]]], list[int], int, int, int], bool] = (
    _py_merge if _native is None else _native.merge
)
_sample_head: Callable[[Labels], bytes] = (
    _py_sample_head if _native is None else _native.sample_head
)
_all_lines: Callable[[list[list[Any]], Callable[[list[Any]], None], int | None], list[bytes]] = (
    _py_lines if _native is None else _native.lines
)
_index: Callable[[list[list[Any]], int, int, str, _Index], None] = (
    _py_index if _native is None else _native.index
)
_merge_step = PY_MERGE_STEP if _native is None else MERGE_STEP
_index_step = 0 if _native is None else INDEX_STEP


def _refresh(entry: list[Any]) -> None:
    line: bytes | None = entry[3]
    if line is None:
        head = _sample_head(entry[5])
    else:
        head = line[: line.rindex(b" ", 0, line.rindex(b" "))]  # before " value timestamp"
    value = entry[0]
    # 1.0 (a Flux output's usual value) is exactly one float: no sign or NaN to tell apart.
    shown = b"1.0" if value == 1.0 else text.go_float(value).encode()
    entry[3] = b"%s %s %d\n" % (head, shown, entry[1])
    entry[4] = True


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
