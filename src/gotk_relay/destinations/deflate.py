"""The request bodies of the Datadog and OTLP destinations, gzip or zlib (HTTP ``deflate``).

ISA-L (the ``isal`` package) at its fastest level: a fraction of zlib's CPU at its level 1,
for a body no larger (zlib's level 6 cost more than mapping the series; figures:
docs/performance.md). The output is plain gzip/zlib.

ISA-L's x86 code uses AVX2/AVX-512 and returns without ``VZEROUPPER``: the calling thread's
vector registers are left with dirty upper halves, and every SSE instruction after it pays a
false dependency on them until something clears them. Measured on this project's Xeon: one
ISA-L call every fifty requests made each 646 kB snappy decompression cost 266 µs instead of
163 µs, and the relay with a ``datadog:`` destination keeping ``gotk_.*`` (small bodies,
compressed on the event loop) took 12–14 % fewer samples per CPU-second. So each call is
followed by ``_rows.clear_upper`` (``VZEROUPPER`` where the CPU has AVX; nothing elsewhere,
or without the compiled module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from isal import igzip, isal_zlib  # type: ignore[import-untyped, unused-ignore]

from .. import native

LEVEL: Final = 1

_native: Any = native.load(f"{__package__}._rows")
# The one switch: clears the vector registers' upper halves after ISA-L, or does nothing.
clear_upper: Callable[[], None] = _native.clear_upper if _native is not None else (lambda: None)


def gzip(body: bytes) -> bytes:
    """``body`` as one gzip member (mtime 0), by ISA-L at ``LEVEL``."""
    try:
        return bytes(igzip.compress(body, LEVEL, mtime=0))
    finally:
        clear_upper()


def zlib(body: bytes) -> bytes:
    """``body`` in the zlib format (HTTP ``deflate``, as the Datadog Agent sends it), by ISA-L."""
    try:
        return bytes(isal_zlib.compress(body, LEVEL))
    finally:
        clear_upper()
