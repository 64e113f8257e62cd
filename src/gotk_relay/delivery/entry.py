"""What a destination's queue holds: one encoded request body, not Python objects.

Holding the protobuf bytes a destination will be sent (uncompressed, in the message it speaks)
makes a queue's memory measurable to the byte, lets a spool store entries as they are, and lets
the sender merge queued v1 entries by concatenation: protobuf repeated fields concatenate, so
``bytes(A) + bytes(B)`` is one WriteRequest holding both. v2 entries (with their own symbol
tables) are merged by decoding and re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..model import Batch, merge
from ..wire import rw1, rw2

V1 = "prometheus.WriteRequest"
V2 = "io.prometheus.write.v2.Request"


class Entry(NamedTuple):
    payload: bytes  # uncompressed WriteRequest / v2 Request
    protocol: str  # which of the two ``payload`` is
    points: int  # samples + histograms: what capacity and the forwarded/dropped counters count
    newest_ms: int  # newest sample timestamp, for sample_age_limit
    spool_id: int = 0  # row in the destination's spool, 0 when held in memory only
    tenant: str = ""  # for tenant routing: sent with the destination's tenant header

    @property
    def size(self) -> int:
        return len(self.payload)


def newest_timestamp(batch: Batch) -> int:
    newest = 0
    for series in batch.series:
        if series.samples:
            newest = max(newest, series.samples[-1].timestamp)
        if series.histograms:
            newest = max(newest, series.histograms[-1].timestamp)
    return newest


def encode(batch: Batch, protocol: str) -> bytes:
    return rw2.encode(batch) if protocol == V2 else rw1.encode(batch)


def encode_entry(batch: Batch, protocol: str, tenant: str = "") -> Entry:
    return Entry(
        encode(batch, protocol), protocol, batch.point_count, newest_timestamp(batch), 0, tenant
    )


def decode_entry(entry: Entry) -> Batch:
    # Entries were validated when they were received; decoding them again needs no checks.
    if entry.protocol == V2:
        return rw2.decode(entry.payload, validate=False)
    return rw1.decode(entry.payload, validate=False)


def request_body(entries: Sequence[Entry], protocol: str) -> bytes:
    """One uncompressed request in ``protocol`` holding every entry, in order."""
    if len(entries) == 1 and entries[0].protocol == protocol:
        return entries[0].payload
    if protocol == V1 and all(e.protocol == V1 for e in entries):
        return b"".join(e.payload for e in entries)
    return encode(merge(decode_entry(e) for e in entries), protocol)
