"""The series of a remote-write 1.0 WriteRequest as rows: what the converting destinations read.

A row is ``(key, samples, raw)`` per top-level ``timeseries`` field, in order:

- ``key``: the series' label fields as encoded (tag, length and payload of each), the bytes
  that came; a memo keyed by them decodes each label set once (``labels``), not per sample;
- ``samples``: ``(value, timestamp)`` of each sample, in order, the value's bits untouched;
- ``raw``: None when the series holds only labels (one run of them) and samples, else the
  series' whole payload (histograms, exemplars, ...) for the caller to decode in full.

Metadata and unknown top-level fields are skipped. Why rows: decoding every label of every
series into Python objects, for each sample sent, made the conversion the Datadog and OTLP
destinations' largest cost (issue 17; figures: docs/performance.md), while a label set's
bytes are enough to find what was worked out for it before. ``_rows.c`` does the walk in one
pass in C (and holds the destinations' other compiled loops); this module's ``rows_py`` is its
twin and reference, used when the extension is not built or ``GOTK_RELAY_NO_EXTENSIONS`` is
set.
Entries are the relay's own, validated when received; a malformed one raises ``DecodeError``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from sys import intern
from typing import Any, Final, NamedTuple

from .. import native
from ..delivery.entry import Entry, decode_entry
from ..delivery.isolate import labels_text
from ..model import Batch, Labels, Protocol, Series
from ..wire import rw1, rw1_bytes, snappy, snappy_concat
from ..wire.errors import DecodeError
from .chunked import (
    _fields,
    _message,
    _varint,
    split_batch,
)
from .chunked import (
    _split_series as split_series,
)

log = logging.getLogger("gotk_relay.convert")

# Steps of ``entry_steps``: about a hundred series of ~10 labels, so that mapping one step holds
# the event loop only briefly (rows are cheaper than decoded series, so steps can be larger).
ROW_CHUNK_BYTES: Final = 32 * 1024

# Consecutive remote write 1.0 entries are read as one message up to this many bytes: a view
# that keeps a few series of each request (a Datadog destination keeping gotk_.*) queues an
# entry per request, and reading each on its own (decompressing it, framing it, a step of its
# own to map) cost more than mapping its series.
COALESCE_BYTES: Final = 1 << 20

Row = tuple[bytes, tuple[tuple[float, int], ...], bytes | None]
_DOUBLE: Final = struct.Struct("<d")
_F_LABELS: Final = 1
_F_SAMPLES: Final = 2


def _sample(data: bytes | memoryview, pos: int, end: int) -> tuple[float, int]:
    value, ts = 0.0, 0
    for field, start, payload, stop in _fields(data, pos, end):
        wire = data[start] & 7
        if field == 1 and wire == 1:
            value = _DOUBLE.unpack_from(data, payload)[0]
        elif field == 2 and wire == 0:
            raw, _ = _varint(data, payload)
            ts = raw - (1 << 64) if raw >= 1 << 63 else raw
        del stop
    return value, ts


def _row(data: bytes | memoryview, pos: int, end: int) -> Row:
    labels_start = labels_end = -1
    labels_done = other = False
    samples: list[tuple[float, int]] = []
    for field, start, payload, stop in _fields(data, pos, end):
        wire = data[start] & 7
        if field == _F_LABELS and wire == 2:
            if labels_start < 0:
                labels_start = start
            elif labels_done:
                other = True
            labels_end = stop
            continue
        if labels_start >= 0:
            labels_done = True
        if field == _F_SAMPLES and wire == 2:
            samples.append(_sample(data, payload, stop))
        else:
            other = True
    key = bytes(data[labels_start:labels_end]) if labels_start >= 0 else b""
    return key, tuple(samples), bytes(data[pos:end]) if other else None


def rows_py(data: bytes | memoryview, pos: int, budget: int) -> tuple[list[Row], int]:
    """The pure-Python walk (see ``rows``)."""
    out: list[Row] = []
    used = 0
    for field, start, payload, stop in _fields(data, pos, len(data)):
        if field != 1 or data[start] & 7 != 2:
            pos = stop  # metadata: read elsewhere
            continue
        if used + stop - start > budget:
            break
        used += stop - start
        out.append(_row(data, payload, stop))
        pos = stop
    return out, pos


Walk = Callable[[bytes | memoryview, int, int], tuple[list[Row], int]]
"""``walk(data, pos, budget)``: the rows of the series fields from ``data[pos:]`` on, as many
whole ones as fit in ``budget`` bytes (each field counted with its tag and length), and where the
next field starts; other top-level fields are passed over. ``([], pos)`` when the series at
``pos`` is larger than ``budget`` on its own (``chunked`` cuts it by samples)."""


class Loops(NamedTuple):
    """The loops the converting destinations run over rows: the walk (``rows_py`` or its
    compiled twin) and ``_rows.c``'s mapping loops (``datadog_rows``, ``datadog_render``,
    ``otlp_rows``), None where their Python twins run alone."""

    walk: Walk
    compiled: Any


_native: Any = native.load(f"{__package__}._rows")
NATIVE: Final = _native is not None
PYTHON: Final = Loops(rows_py, None)
COMPILED: Final = Loops(_native.rows, _native) if _native is not None else None
# The one switch; the destinations take it as a default argument, the tests run both by name.
LOOPS: Final = COMPILED if COMPILED is not None else PYTHON


def labels(key: bytes, loops: Loops = LOOPS) -> Labels:
    """The label set a row's ``key`` encodes, as ``rw1.decode`` makes it, its strings interned
    (memos keep label sets for many series: names and most values repeat across them).

    What a memo miss costs most (every series a destination sees first): compiled
    (``_rows.c``'s ``labels``) for keys in the canonical encoding, decoded here otherwise."""
    native = loops.compiled
    if native is not None:
        found: Labels | None = native.labels(key)
        if found is not None:
            return found
    return tuple((intern(k), intern(v)) for k, v in series(key).labels)


def series(payload: bytes) -> Series:
    """A row's ``raw`` (or ``key``) as the Series ``rw1.decode`` makes of it."""
    batch = rw1.decode(b"\x0a" + rw1.uvarint(len(payload)) + payload, validate=False)
    if len(batch.series) != 1:  # pragma: no cover - one field in, one series out
        raise DecodeError("invalid protobuf: one series expected")
    return batch.series[0]


Item = Series | Row
Step = Batch | list[Item]


async def entry_steps(
    entries: Sequence[Entry], budget: int = ROW_CHUNK_BYTES, loops: Loops = LOOPS
) -> AsyncGenerator[Step, None]:
    """``entry_batches`` with the series as ``rows`` rows, not decoded: a list per step, in
    order, holding a row per series (its labels not decoded: ``rows``) or, for a series holding
    more than labels and samples, its decoded ``Series``. Metadata and remote write 2.0 entries
    come as ``Batch``es, as from ``entry_batches``; an empty list marks a place to yield at."""
    entries = _coalesced(entries)
    for entry in entries:
        if entry.protocol != Protocol.V1:
            yield Batch((), decode_entry(entry).metadata)
            continue
        if not entry.families:  # known to hold none: not decompressed for nothing
            continue
        data = await _message(entry)
        families = rw1_bytes.frame(data).metadata  # type: ignore[arg-type]  # upb reads any buffer
        # In chunks of about ``budget`` bytes, framed again by upb (no Python walk of the
        # message's fields: a merged message holds every request's families).
        chunk: list[bytes] = []
        size = 0
        for family in families:
            chunk.append(family)
            size += len(family)
            if size >= budget:
                yield rw1.decode(rw1_bytes.rebuild((), chunk), validate=False)
                chunk, size = [], 0
        if chunk:
            yield rw1.decode(rw1_bytes.rebuild((), chunk), validate=False)
        del data, families
    for entry in entries:
        if entry.protocol != Protocol.V1:
            yield Batch(decode_entry(entry).series, ())
            continue
        data = await _message(entry)
        pos, size = 0, len(data)
        while pos < size:
            found, after = loops.walk(data, pos, budget)
            if found or after > pos:
                yield _with_series(found)
                pos = after
                continue
            # One series larger than a step: cut by samples, as entry_batches does, in pieces
            # of an eighth of a step (each sample is mapped on its own: ~4 KiB, ~1 ms).
            (_, _, payload, after), *_ = _fields(data, pos, size)
            for raw in split_series(data, payload, after, max(1, budget // 8)):
                yield _with_series(loops.walk(raw, 0, len(raw))[0]) if raw else []
            pos = after
        del data


class Steps:
    """``entry_steps`` of a batch, read one at a time, that can go back to a step it passed
    (``back_to``): a converting destination whose mapping raised maps the same steps again.
    Why not keep the steps read: holding every row of a request until its mapping ends, rather
    than letting each step go once mapped, made the conversion ≈20 % slower (objects out of
    cache); reading them again costs only when mapping raised."""

    def __init__(self, entries: Sequence[Entry], budget: int, loops: Loops = LOOPS) -> None:
        self.entries, self.budget, self.loops = entries, budget, loops
        self._steps = entry_steps(entries, budget, loops)
        self.taken = 0  # steps read so far

    async def next(self) -> Step | None:
        """The next step, None at the end."""
        step = await anext(self._steps, None)
        if step is not None:
            self.taken += 1
        return step

    async def back_to(self, taken: int) -> None:
        """Read on from where ``taken`` steps had been read (walking the entries again)."""
        await self._steps.aclose()
        self._steps = entry_steps(self.entries, self.budget, self.loops)
        self.taken = 0
        while self.taken < taken and await self.next() is not None:
            pass

    async def since(self, taken: int) -> list[Step]:
        """The steps read after the first ``taken``, read again (to be held, not mapped)."""
        read = self.taken - taken
        if not read:
            return []
        await self.back_to(taken)
        steps = [step for _ in range(read) if (step := await self.next()) is not None]
        return steps

    async def aclose(self) -> None:
        await self._steps.aclose()


def _coalesced(entries: Sequence[Entry]) -> list[Entry]:
    """``entries`` with each run of consecutive 1.0 entries joined into one, up to
    ``COALESCE_BYTES`` uncompressed (snappy blocks concatenate: nothing is decompressed here).
    Only the payload and protocol of a joined entry mean anything."""
    out: list[Entry] = []
    run: list[Entry] = []
    size = 0

    def close() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            payload = snappy_concat.concat([e.payload for e in run])
            families = any(e.families for e in run)
            out.append(
                Entry(payload, Protocol.V1, sum(e.points for e in run), 0, families=families)
            )
        run.clear()

    for entry in entries:
        if entry.protocol != Protocol.V1:
            close()
            out.append(entry)
            continue
        try:
            length = snappy.declared_length(entry.payload)
        except DecodeError:  # read on its own, to fail where it always did
            close()
            out.append(entry)
            continue
        if run and size + length > COALESCE_BYTES:
            close()
        if not run:
            size = 0
        run.append(entry)
        size += length
    close()
    return out


def _with_series(found: list[Row]) -> list[Item]:
    """``found`` with the rows that hold more than labels and samples decoded in full."""
    items: list[Item] = found  # type: ignore[assignment]
    for index, row in enumerate(found):
        if row[2] is not None:
            items[index] = series(row[2])
    return items


def step_points(step: list[Item]) -> int:
    """Samples and histograms in ``step``."""
    return sum(
        len(item.samples) + len(item.histograms) if isinstance(item, Series) else len(item[1])
        for item in step
    )


# The reason a converting destination counts the samples of a series it cannot convert.
CONVERSION_ERROR: Final = "conversion_error"
_MAX_LOGGED: Final = 1024  # label sets an Unconvertible logs about, at most (then only counts)
# Series a screening leaves out one by one after a run of them raised, at most (then the
# caller retries): each costs a bisection, a few dozen conversions of the steps.
_MAX_RUN_CULPRITS: Final = 16


class Unconvertible:
    """Screening a converting destination's steps after their mapping raised: which series to
    leave out so that the rest converts. Why: a conversion that raises on one series (a bug: no
    input is known to) must cost that series, counted and logged, not the shard it is on,
    retried for ever, nor a request sent twice."""

    def __init__(self, vendor: str, destination: str) -> None:
        self.vendor = vendor
        self.destination = destination
        self._logged: set[object] = set()  # label sets logged about (bounded)

    async def screen(
        self,
        steps: Sequence[Step],
        alone: Callable[[Item], object],
        run: Callable[[list[Item]], object],
        skipped: Counter[str],
    ) -> list[Step] | None:
        """``steps`` without the series that make the conversion raise (their points counted
        in ``skipped`` as ``conversion_error``, each label set logged once), or None when none
        is found (the error is not the series': the caller retries).

        First each series is converted on its own (``alone``); if none raises alone, the
        series are converted in order from where the steps start (``run`` of a prefix) and the
        first one the run raises at is found by bisection, left out, and the rest run again
        (an error only some series together cause: a ``_created`` series and its counter).
        ``MemoryError`` is no verdict on a series: it is raised. The loop gets a turn between
        conversions."""
        items = [(i, item) for i, step in enumerate(steps) for item in _items(step)]
        out: set[int] = set()  # positions in ``items`` left out
        for at, (_, item) in enumerate(items):
            if (err := _raises(alone, item)) is not None:
                out.add(at)
                self._leave_out(item, err, skipped)
            if at % 256 == 255:
                await asyncio.sleep(0)
        for _ in range(0 if out else _MAX_RUN_CULPRITS):
            kept = [at for at in range(len(items)) if at not in out]
            err = _raises(run, [items[at][1] for at in kept])
            if err is None:
                break
            good, bad = 0, len(kept)  # the first ``good`` run, the first ``bad`` raise
            while bad - good > 1:
                await asyncio.sleep(0)
                middle = (good + bad) // 2
                found = _raises(run, [items[at][1] for at in kept[:middle]])
                if found is None:
                    good = middle
                else:
                    bad, err = middle, found
            out.add(kept[bad - 1])
            self._leave_out(items[kept[bad - 1]][1], err, skipped)
        if not out:
            log.debug(
                "no series found that the mapping fails on; the sender retries the batch",
                extra={"destination": self.destination},
            )
            return None
        kept_by_step: list[list[Item]] = [[] for _ in steps]
        for at, (index, item) in enumerate(items):
            if at not in out:
                kept_by_step[index].append(item)
        screened: list[Step] = []
        for step, kept_items in zip(steps, kept_by_step, strict=True):
            if isinstance(step, Batch):  # its items are all Series
                series = tuple(i for i in kept_items if isinstance(i, Series))
                screened.append(step._replace(series=series))
            else:
                screened.append(kept_items)
        return screened

    def _leave_out(self, item: Item, err: Exception, skipped: Counter[str]) -> None:
        skipped[CONVERSION_ERROR] += step_points([item])
        self._log(item, err)

    def _log(self, item: Item, err: Exception) -> None:
        found = item.labels if isinstance(item, Series) else labels(bytes(item[0]))
        if found in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(found)
        log.error(
            f"a series cannot be converted for {self.vendor}; it is left out "
            "(a bug in the relay: logged once per label set, counted in "
            'gotk_relay_samples_skipped_total{reason="conversion_error"})',
            extra={
                "destination": self.destination,
                "series": labels_text(found),
                "err": repr(err),
            },
            exc_info=err,
        )


def _items(step: Step) -> Sequence[Item]:
    return step.series if isinstance(step, Batch) else step


def _raises(convert: Callable[[Any], object], arg: object) -> Exception | None:
    """What ``convert(arg)`` raises (None when it does not); a ``MemoryError`` is raised."""
    try:
        convert(arg)
    except MemoryError:
        raise
    except Exception as err:
        return err
    return None


def split_step(
    step: list[Item], points: int, loops: Loops = LOOPS
) -> tuple[list[Item], list[Item] | None, int]:
    """``split_batch`` for a step of ``entry_steps``: its first ``points`` samples and
    histograms (a series cut if need be; a ``Series``' exemplars stay with its last part),
    the rest (None when nothing is left), and how many points the first part holds. The rows
    that fit whole are counted by ``step_fits`` where it is compiled (a step holds thousands)."""
    native = loops.compiled
    taken, index, size = 0, 0, len(step)
    while index < size:
        if native is not None:
            index, used = native.step_fits(step, index, points)
            points -= used
            taken += used
            if index >= size:
                break
        item = step[index]
        if isinstance(item, Series):
            count = len(item.samples) + len(item.histograms)
            if count <= points:
                points -= count
                taken += count
                index += 1
                continue
            first, rest = split_batch(Batch((item,), ()), points)
            assert rest is not None
            head = [*step[:index], *first.series]
            return head, [*rest.series, *step[index + 1 :]], taken + first.point_count
        key, samples, _ = item
        if len(samples) <= points:
            points -= len(samples)
            taken += len(samples)
            index += 1
            continue
        head = step[:index]
        if points:
            head.append((key, samples[:points], None))
        return head, [(key, samples[points:], None), *step[index + 1 :]], taken + points
    return step, None, taken
