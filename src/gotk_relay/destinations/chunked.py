"""Queued entries as a stream of small batches, for destinations that convert what they send.

(The Datadog and OTLP destinations read entries with ``rows.entry_steps``, which cuts them
with the functions here but leaves series undecoded; ``entry_batches`` is its decoded twin.)

An OTLP or Datadog destination maps every sample to an object of its own, so decoding a whole
queued entry first (one remote-write request may hold a million samples of a single series)
costs ~270 bytes per sample and seconds of event loop. ``entry_batches`` instead walks the
uncompressed WriteRequest's fields and decodes at most ``budget`` bytes of it at a time:

- consecutive series are decoded together as long as they fit in ``budget``: a run of whole
  top-level ``timeseries`` fields is itself a valid WriteRequest;
- a series larger than ``budget`` is cut by samples (and histograms): each piece is the series'
  labels with the next run of its sample fields, in their order, so values keep their exact
  bits; its exemplars go with its last piece (mappings attach them to the series' last point);
- metadata of every entry comes first, as a merged batch puts it first.

What stays whole is the entry's uncompressed message (~20 bytes a sample), one entry at a time,
in cramjam's buffer; it is decompressed off the event loop when large. Empty batches are
yielded now and then while fields are only being skipped, so the consumer can give the loop a
turn.

Entries are the relay's own, validated when they were received; a malformed one raises
``DecodeError`` as ``decode_entry`` would. Remote write 2.0 entries (which these destinations
never queue) are decoded whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Final

import cramjam

from ..delivery.entry import Entry, decode_entry
from ..model import Batch, Protocol, Series
from ..wire import rw1
from ..wire.errors import DecodeError

SUB_CHUNK_BYTES: Final = 4 * 1024  # ~230 samples of one series, ~25 small series: ~1-2 ms
_SKIP_YIELD_FIELDS: Final = 4096  # fields skipped between two empty batches
_OFF_LOOP_BYTES: Final = 256 * 1024  # decompress bigger entries in a worker thread
_TAG_SERIES: Final = 0x0A  # WriteRequest.timeseries (1, LEN)
_F_SERIES: Final = 1
_F_METADATA: Final = 3
_F_LABELS: Final = 1  # TimeSeries.labels
_F_EXEMPLARS: Final = 3  # TimeSeries.exemplars
_EMPTY: Final = Batch((), ())
_Data = bytes | memoryview


def _varint(data: _Data, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("invalid protobuf: varint too long")


def _fields(data: _Data, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, start of its tag, start of its payload, end)`` of each field."""
    try:
        while pos < end:
            start = pos
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _varint(data, pos)
            wire = tag & 7
            if wire == 2:
                size = data[pos]
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = _varint(data, pos)
                payload, pos = pos, pos + size
            elif wire == 0:
                payload = pos
                _, pos = _varint(data, pos)
            elif wire == 1:
                payload, pos = pos, pos + 8
            elif wire == 5:
                payload, pos = pos, pos + 4
            else:
                raise DecodeError(f"invalid protobuf: wire type {wire}")
            if pos > end:
                raise DecodeError("invalid protobuf: field runs past its message")
            yield tag >> 3, start, payload, pos
    except IndexError as exc:
        raise DecodeError("invalid protobuf: truncated") from exc


def metadata_chunks(data: _Data, budget: int = SUB_CHUNK_BYTES) -> Iterator[bytes]:
    """WriteRequests holding only ``data``'s metadata, in order; b"" now and then."""
    parts: list[bytes] = []
    size = 0
    for seen, (field, start, _, end) in enumerate(_fields(data, 0, len(data)), 1):
        if field == _F_METADATA:
            parts.append(bytes(data[start:end]))
            size += end - start
            if size >= budget:
                yield b"".join(parts)
                parts, size = [], 0
        elif seen % _SKIP_YIELD_FIELDS == 0:
            yield b""
    if parts:
        yield b"".join(parts)


def series_chunks(data: _Data, budget: int = SUB_CHUNK_BYTES) -> Iterator[bytes]:
    """WriteRequests holding ``data``'s series in order, each about ``budget`` bytes at most."""
    run = -1  # start of the current run of whole series
    run_end = 0
    for seen, (field, start, payload, end) in enumerate(_fields(data, 0, len(data)), 1):
        if field != _F_SERIES:
            if run >= 0:
                yield bytes(data[run:run_end])
                run = -1
            elif seen % _SKIP_YIELD_FIELDS == 0:
                yield b""
            continue
        if end - payload > budget:
            if run >= 0:
                yield bytes(data[run:run_end])
                run = -1
            yield from _split_series(data, payload, end, budget)
            continue
        if run >= 0 and end - run > budget:
            yield bytes(data[run:run_end])
            run = -1
        if run < 0:
            run = start
        run_end = end
    if run >= 0:
        yield bytes(data[run:run_end])


def _split_series(data: _Data, pos: int, end: int, budget: int) -> Iterator[bytes]:
    """One large TimeSeries (its payload is ``data[pos:end]``) as several, cut by samples."""
    labels: list[bytes] = []
    exemplars: list[bytes] = []
    for count, (field, start, _, stop) in enumerate(_fields(data, pos, end), 1):
        if field == _F_LABELS:
            labels.append(bytes(data[start:stop]))
        elif field == _F_EXEMPLARS:
            exemplars.append(bytes(data[start:stop]))
        if count % _SKIP_YIELD_FIELDS == 0:
            yield b""
    head = b"".join(labels)
    spans: list[tuple[int, int]] = []  # runs of sample/histogram fields, contiguous in data
    size = 0
    for field, start, _, stop in _fields(data, pos, end):
        if field in (_F_LABELS, _F_EXEMPLARS):
            continue
        if size >= budget:
            yield _series_request(head, data, spans, [])
            spans, size = [], 0
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], stop)
        else:
            spans.append((start, stop))
        size += stop - start
    yield _series_request(head, data, spans, exemplars)


def _series_request(
    head: bytes, data: _Data, spans: list[tuple[int, int]], tail: list[bytes]
) -> bytes:
    body = b"".join([head, *(data[a:b] for a, b in spans), *tail])
    return bytes((_TAG_SERIES,)) + rw1.uvarint(len(body)) + body


def split_batch(batch: Batch, points: int) -> tuple[Batch, Batch | None]:
    """``batch``'s first ``points`` samples and histograms (a series cut if need be; its
    exemplars stay with its last part) and the rest, None when nothing is left."""
    if batch.point_count <= points:
        return batch, None
    head: list[Series] = []
    for index, series in enumerate(batch.series):
        size = len(series.samples) + len(series.histograms)
        if size <= points:
            head.append(series)
            points -= size
            continue
        samples = series.samples[:points]
        histograms = series.histograms[: points - len(samples)]
        first = series._replace(samples=samples, histograms=histograms, exemplars=())
        rest = series._replace(
            samples=series.samples[len(samples) :], histograms=series.histograms[len(histograms) :]
        )
        if samples or histograms:
            head.append(first)
        return Batch(tuple(head), batch.metadata), Batch((rest, *batch.series[index + 1 :]), ())
    raise AssertionError("point_count counts more than the series hold")  # pragma: no cover


async def _message(entry: Entry) -> memoryview:
    """The entry's uncompressed WriteRequest, left in cramjam's buffer (``message`` would copy
    it into a bytes object, doubling what a large entry takes while it is converted)."""
    if len(entry.payload) >= _OFF_LOOP_BYTES:
        return memoryview(await asyncio.to_thread(cramjam.snappy.decompress_raw, entry.payload))
    return memoryview(cramjam.snappy.decompress_raw(entry.payload))


async def entry_batches(
    entries: Sequence[Entry], budget: int = SUB_CHUNK_BYTES
) -> AsyncGenerator[Batch, None]:
    """``merge(decode_entry(e) for e in entries)`` as small batches: all metadata, then every
    series in order (a large one cut by samples). Empty batches mark places to yield at."""
    for entry in entries:
        if entry.protocol != Protocol.V1:
            yield Batch((), decode_entry(entry).metadata)
            continue
        if not entry.families:  # known to hold none: not decompressed for nothing
            continue
        data = await _message(entry)
        for raw in metadata_chunks(data, budget):
            yield rw1.decode(raw, validate=False) if raw else _EMPTY
        del data  # before the next one is decompressed
    for entry in entries:
        if entry.protocol != Protocol.V1:
            yield Batch(decode_entry(entry).series, ())
            continue
        data = await _message(entry)
        for raw in series_chunks(data, budget):
            yield rw1.decode(raw, validate=False) if raw else _EMPTY
        del data
