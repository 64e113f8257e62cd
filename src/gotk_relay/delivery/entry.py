"""What a destination's queue holds: one snappy-compressed request body, not Python objects.

Holding the compressed bytes a destination will be sent (in the message it speaks) makes a
queue's memory measurable to the byte and about four times smaller than the protobuf, lets a
spool store entries as they are, and lets the relay forward a received body without touching
it: a request whose series no rule changes is queued as the block that came. The sender merges
queued v1 entries without decompressing them: protobuf repeated fields concatenate, so
``bytes(A) + bytes(B)`` is one WriteRequest holding both, and snappy blocks concatenate too
(``wire.snappy_concat``). v2 entries (each with its own symbol table) are merged by decoding and
re-encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

import cramjam

from ..model import Batch, FamilyMetadata, Protocol, Series, merge, newest_timestamp
from ..wire import rw1, rw1_bytes, rw2, snappy, snappy_concat

if TYPE_CHECKING:
    from .ack import Ack


class Entry(NamedTuple):
    payload: bytes  # snappy block (remote write's encoding) of a WriteRequest / v2 Request
    protocol: Protocol  # which of the two ``payload`` holds
    points: int  # samples + histograms: what capacity and the forwarded/dropped counters count
    newest_ms: int  # newest sample timestamp, for sample_age_limit
    spool_id: int = 0  # row in the destination's spool, 0 when held in memory only
    tenant: str = ""  # for tenant routing: sent with the destination's tenant header
    # With receiver.acknowledge: delivered, the request waiting for this entry (delivery/ack.py);
    # never spooled (the two are refused together).
    ack: Ack | None = None
    # Whether the request may hold family metadata: False when known to hold none (as most
    # sample requests are; Prometheus sends metadata apart), so a converting destination does
    # not decompress it once more to look for families. Not spooled: read back, it may.
    families: bool = True

    @property
    def size(self) -> int:
        return len(self.payload)


SNAPPY_FRAGMENT: Final = 1 << 16  # the compressor's unit: no copy reaches across one


# One snappy block of ``data`` (bytes or a memoryview): libsnappy's or cramjam's (wire/snappy.py).
compress: Final = snappy.compress


def encode(batch: Batch, protocol: Protocol) -> bytes:
    """The compressed request body of ``batch`` in ``protocol``."""
    return compress(rw2.encode(batch) if protocol == Protocol.V2 else rw1.encode(batch))


def encode_entry(batch: Batch, protocol: Protocol, tenant: str = "") -> Entry:
    return Entry(
        encode(batch, protocol),
        protocol,
        batch.point_count,
        newest_timestamp(batch),
        0,
        tenant,
        families=bool(batch.metadata),
    )


def made_entry(
    series: bytes | Sequence[bytes],
    newest: int,
    points: int,
    metadata: tuple[FamilyMetadata, ...] = (),
    tenant: str = "",
) -> Entry:
    """``encode_entry(batch, Protocol.V1, tenant)`` for a batch whose series a rule encoded already
    (``series``: their WriteRequest bytes, whole or in consecutive chunks, one sample each,
    ``points`` of them, the newest at ``newest``). Only the metadata is encoded here: a
    WriteRequest's metadata follows its series, and the rules add the same few families to
    every batch, so it is remembered."""
    tail = metadata_bytes(metadata) if metadata else b""
    chunks = (series,) if isinstance(series, bytes) else series
    return Entry(
        compress_chunks(chunks, tail),
        Protocol.V1,
        points,
        max(0, newest),
        0,
        tenant,
        families=bool(metadata),
    )


def compress_chunks(chunks: Sequence[bytes], tail: bytes = b"") -> bytes:
    """``compress(b"".join(chunks) + tail)``, byte for byte, without joining them: snappy
    compresses each 64 KiB fragment of its input on its own, so the whole fragments are
    compressed where they lie and only what crosses a chunk's end is copied (a request of 1000
    Flux objects writes ~1.6 MB of series: joined, then copied to append the metadata, it cost
    ~5 MB of transient memory; tests/unit/test_made_entries.py)."""
    blocks: list[bytes] = []
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = len(data) // SNAPPY_FRAGMENT * SNAPPY_FRAGMENT
        if cut:
            blocks.append(compress(memoryview(data)[:cut]) if cut < len(data) else compress(data))
        carry = data[cut:]
    if carry or tail or not blocks:
        blocks.append(compress(carry + tail))
    return blocks[0] if len(blocks) == 1 else snappy_concat.concat(blocks)


@functools.lru_cache(maxsize=16)
def metadata_bytes(metadata: tuple[FamilyMetadata, ...]) -> bytes:
    return rw1.encode(Batch((), metadata))


def message(entry: Entry) -> bytes:
    """The entry's uncompressed protobuf message.

    Entries are made by the relay from validated bodies, so no size limit applies here.
    """
    return bytes(cramjam.snappy.decompress_raw(entry.payload))


def decode_entry(entry: Entry) -> Batch:
    # Entries were validated when they were received; decoding them again needs no checks.
    if entry.protocol == Protocol.V2:
        return rw2.decode(message(entry), validate=False)
    return rw1.decode(message(entry), validate=False)


def split_series(series: Series, max_points: int) -> list[Series]:
    """``series`` as consecutive series of at most ``max_points`` points each (its samples,
    then its histograms, in order), as Prometheus sends a series' samples over as many requests
    as it takes; its exemplars go with the first, its metadata with each."""
    if len(series.samples) + len(series.histograms) <= max_points:
        return [series]
    count = len(series.samples)
    total = count + len(series.histograms)
    pieces = []
    for start in range(0, total, max_points):
        stop = min(start + max_points, total)
        pieces.append(
            series._replace(
                samples=series.samples[start : min(stop, count)],
                histograms=series.histograms[max(start - count, 0) : max(stop - count, 0)],
                exemplars=series.exemplars if start == 0 else (),
            )
        )
    return pieces


def cut_entry(entry: Entry, max_points: int) -> list[Entry]:
    """A 1.0 ``entry`` as entries of at most ``max_points`` points each, in order: its series'
    bytes grouped as they come (a series holding more is cut into series of at most that many,
    ``split_series``), the metadata with the first, each group framed and compressed again.
    Only a series holding more is decoded: a point count per series (upb, in C) and a
    compression of the whole, about what a routed view costs."""
    parts = rw1_bytes.split(message(entry))
    groups: list[list[bytes]] = []
    points: list[int] = []
    for series, n in _fitting(parts.series, max_points):
        if groups and points[-1] + n <= max_points:
            groups[-1].append(series)
            points[-1] += n
        else:
            groups.append([series])
            points.append(n)
    if not groups:
        return [entry]
    metadata = parts.metadata
    cut: list[Entry] = []
    for i, (group, count) in enumerate(zip(groups, points, strict=True)):
        body = rw1_bytes.rebuild(group, metadata if i == 0 else ())
        cut.append(
            Entry(
                compress(body),
                Protocol.V1,
                count,
                entry.newest_ms,  # dated as the entry was (by its arrival, taken as it came)
                0,
                entry.tenant,
                families=entry.families and i == 0 and bool(metadata),
            )
        )
    return cut


def _fitting(series: Sequence[bytes], max_points: int) -> Iterator[tuple[bytes, int]]:
    """Each encoded series as it is, or, holding more than ``max_points``, its pieces; with
    their point counts."""
    for one in series:
        alone = rw1_bytes.rebuild((one,))
        n = rw1_bytes.count_points(alone)
        if n <= max_points:
            yield one, n
            continue
        (whole,) = rw1.decode(alone, validate=False).series
        for piece in split_series(whole, max_points):
            (encoded,) = rw1_bytes.split(rw1.encode(Batch((piece,)))).series
            yield encoded, len(piece.samples) + len(piece.histograms)


def request_body(entries: Sequence[Entry], protocol: Protocol) -> bytes:
    """One compressed request in ``protocol`` holding every entry, in order.

    v1 entries are merged as compressed blocks: nothing is decompressed or recompressed. v1
    entries sent as v2 are merged so, then converted in one go.
    """
    if len(entries) == 1 and entries[0].protocol == protocol:
        return entries[0].payload
    if all(e.protocol == Protocol.V1 for e in entries):
        merged = snappy_concat.concat([e.payload for e in entries])
        if protocol == Protocol.V1:
            return merged
        # Queued as 1.0 (the fast path routes 1.0 bytes), sent as 2.0: merged for free as
        # 1.0 blocks, then converted once per request (wire/_v2.c), symbols shared by all.
        raw = bytes(cramjam.snappy.decompress_raw(merged))
        return compress(rw2.from_v1(raw))
    return encode(merge(decode_entry(e) for e in entries), protocol)
