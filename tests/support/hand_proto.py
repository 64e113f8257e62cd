"""Protobuf written by hand, so a test can send any bytes: any wire type, width or string.

The protobuf library refuses to serialize invalid UTF-8 or a field of the wrong wire type; a
hostile sender does not. Remote write 1.0 shapes (``proto/remote.proto``) for brevity.
"""

from __future__ import annotations

import struct

from tests.support.strategies import pb_varint


def key(number: int, wire: int, pad: int = 0) -> bytes:
    return pb_varint(number << 3 | wire, pad)


def ld(number: int, payload: bytes, pad: int = 0) -> bytes:
    """A LEN field; ``pad`` widens its length varint."""
    return key(number, 2) + pb_varint(len(payload), pad) + payload


def label(name: bytes, value: bytes) -> bytes:
    """A TimeSeries.labels field."""
    return ld(1, ld(1, name) + ld(2, value))


def sample(value: float = 1.0, timestamp: int = 1000) -> bytes:
    """A TimeSeries.samples field."""
    return ld(2, key(1, 1) + struct.pack("<d", value) + key(2, 0) + pb_varint(timestamp))


def series(*labels: tuple[bytes, bytes], tail: bytes | None = None) -> bytes:
    """A WriteRequest.timeseries field: the labels in the order given, then ``tail`` (one
    sample by default)."""
    body = b"".join(label(n, v) for n, v in labels)
    return ld(1, body + (sample() if tail is None else tail))
