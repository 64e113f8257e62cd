"""NumberDataPoints encoded straight to protobuf bytes, for the rows of remote write 1.0
requests: a point made as bytes costs a fraction of a upb message built field by field, and
``Output.serialized`` writes them after their metric's other points, in order.
"""

from __future__ import annotations

import struct
from typing import Final

from ...model import Labels
from ...wire.rw1 import uvarint
from ..rows import LOOPS, Loops
from .naming import NO_RECORDED_VALUE, NS_PER_MS

_FIELD_KEY: Final = b"\x0a"  # KeyValue.key, AnyValue.string_value
_FIELD_VALUE: Final = b"\x12"  # KeyValue.value
_FIELD_ATTRIBUTE: Final = b"\x3a"  # NumberDataPoint.attributes (7)
_STALE_FLAGS: Final = b"\x40" + bytes((NO_RECORDED_VALUE,))  # NumberDataPoint.flags (8)
_TIME: Final = struct.Struct("<BQ")  # time_unix_nano (3, fixed64)
_TIME_VALUE: Final = struct.Struct("<BQBd")  # time_unix_nano, as_double (4, double)
_START_TIME_VALUE: Final = struct.Struct("<BQBQBd")  # start_time_unix_nano (2) first


def _string_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + uvarint(len(raw)) + raw


def attributes_bytes(attributes: Labels, loops: Loops = LOOPS) -> bytes:
    """``attributes`` as NumberDataPoint.attributes fields (KeyValue with a string AnyValue).
    Compiled where built (``_rows.c``): every series a destination sees first costs this."""
    if loops.compiled is not None and isinstance(attributes, tuple):
        encoded: bytes = loops.compiled.attributes_bytes(attributes)
        return encoded
    out = []
    for key, value in attributes:
        any_value = _string_field(_FIELD_KEY, value)  # a oneof member: sent even when ""
        pair = _string_field(_FIELD_KEY, key) + _FIELD_VALUE + uvarint(len(any_value)) + any_value
        out.append(_FIELD_ATTRIBUTE + uvarint(len(pair)) + pair)
    return b"".join(out)


def number_bytes(attrs: bytes, ts: int, start: int, value: float | None) -> bytes:
    """An encoded NumberDataPoint, as ``Output.number`` would fill it (times in ms), framed as
    a Gauge's or Sum's ``data_points`` field (1)."""
    if value is None:
        body = _TIME.pack(0x19, ts * NS_PER_MS) if ts else b""
        if start:
            body = b"\x11" + struct.pack("<Q", start * NS_PER_MS) + body
        body += attrs + _STALE_FLAGS
    elif start and ts:
        body = _START_TIME_VALUE.pack(0x11, start * NS_PER_MS, 0x19, ts * NS_PER_MS, 0x21, value)
        body += attrs
    elif ts:
        body = _TIME_VALUE.pack(0x19, ts * NS_PER_MS, 0x21, value) + attrs
    else:
        body = b"\x11" + struct.pack("<Q", start * NS_PER_MS) if start else b""
        body += b"\x21" + struct.pack("<d", value) + attrs
    size = len(body)
    if size < 0x80:
        return bytes((0x0A, size)) + body
    if size < 0x4000:
        return bytes((0x0A, size & 0x7F | 0x80, size >> 7)) + body
    return b"\x0a" + uvarint(size) + body
