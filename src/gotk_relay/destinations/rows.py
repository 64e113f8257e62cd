"""The series of a remote-write 1.0 WriteRequest as rows: what the converting destinations read.

A row is ``(key, samples, raw)`` per top-level ``timeseries`` field, in order:

- ``key``: the series' label fields as encoded (tag, length and payload of each), the bytes
  that came; a memo keyed by them decodes each label set once (``labels``), not per sample;
- ``samples``: ``(value, timestamp)`` of each sample, in order, the value's bits untouched;
- ``raw``: None when the series holds only labels (one run of them) and samples, else the
  series' whole payload (histograms, exemplars, ...) for the caller to decode in full.

Metadata and unknown top-level fields are skipped. Why rows: decoding every label of every
series into Python objects made the Datadog and OTLP destinations ~10× slower than the wire
(issue 17). ``_rows.c`` does the walk in one pass in C; this module's ``rows_py`` is its twin and
reference, used when the extension is not built or ``GOTK_RELAY_NO_EXTENSIONS`` is set.
Entries are the relay's own, validated when received; a malformed one raises ``DecodeError``.
"""

from __future__ import annotations

import importlib
import os
import struct
from collections.abc import Callable
from typing import Any, Final

from ..model import Labels, Series
from ..wire import rw1
from ..wire.errors import DecodeError
from .chunked import _fields, _varint

Row = tuple[bytes, list[tuple[float, int]], bytes | None]
_DOUBLE: Final = struct.Struct("<d")
_F_LABELS: Final = 1
_F_SAMPLES: Final = 2


def _load_native() -> Any:
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        return None
    try:
        return importlib.import_module(f"{__package__}._rows")
    except ImportError:  # installed without a C compiler: the twin below does it
        return None


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
    return key, samples, bytes(data[pos:end]) if other else None


def rows_py(data: bytes | memoryview) -> list[Row]:
    """The pure-Python walk (see the module docstring)."""
    out: list[Row] = []
    for field, start, payload, stop in _fields(data, 0, len(data)):
        if field == 1 and data[start] & 7 == 2:
            out.append(_row(data, payload, stop))
    return out


_native: Any = _load_native()
NATIVE: Final = _native is not None
rows: Callable[[bytes | memoryview], list[Row]] = _native.rows if _native is not None else rows_py


def labels(key: bytes) -> Labels:
    """The label set a row's ``key`` encodes, as ``rw1.decode`` makes it."""
    return series(key).labels


def series(payload: bytes) -> Series:
    """A row's ``raw`` (or ``key``) as the Series ``rw1.decode`` makes of it."""
    batch = rw1.decode(b"\x0a" + rw1.uvarint(len(payload)) + payload, validate=False)
    if len(batch.series) != 1:  # pragma: no cover - one field in, one series out
        raise DecodeError("invalid protobuf: one series expected")
    return batch.series[0]
