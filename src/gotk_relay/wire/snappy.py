"""Snappy block format with limits checked *before* anything is decompressed.

Remote write uses the block format (not the framed one). A block starts with the decompressed
length as a varint, so a length bomb is refused from its first bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import cramjam

from .. import native
from .errors import DecodeError, TooLargeError


def declared_length(block: bytes | memoryview) -> int:
    """The decompressed size a snappy block announces in its varint preamble."""
    result = 0
    for shift, byte in zip(range(0, 35, 7), bytes(block[:5]), strict=False):
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result > 0xFFFFFFFF:
                break
            return result
    raise DecodeError("snappy: corrupt input (bad length preamble)")


def decompress(block: bytes, max_size: int) -> bytes:
    """Decompress a remote-write body, refusing blocks that declare more than ``max_size``."""
    size = declared_length(block)
    if size > max_size:
        raise TooLargeError(f"decompressed size {size} bytes exceeds the limit of {max_size} bytes")
    try:
        if _fill_bytes is not None:
            # Decompressed straight into the bytes returned (_survey.c), not copied from
            # cramjam's buffer: ~2 % of a request's CPU.
            out: bytes = _fill_bytes(size, _decompress_into, block)
            return out
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise DecodeError(str(exc).split("\n", 1)[0]) from exc


_decompress_into = cramjam.snappy.decompress_raw_into
# The compiled filler when built (native.load says when it is not): the one switch.
_fill_bytes: Callable[..., bytes] | None = getattr(
    native.load(f"{__package__}._survey"), "fill_bytes", None
)


def compress_cramjam(data: bytes | memoryview) -> bytes:
    """``data`` as one snappy block, by cramjam (the ``snap`` crate): the twin of libsnappy's."""
    return bytes(cramjam.snappy.compress_raw(data))


# Compression: libsnappy's (``_snappy.c`` loads it; ~25 % less CPU; blocks of the same data, not
# always the same bytes: each picks its own copies) where it is
# built and the library is installed (Debian: libsnappy1v5), else cramjam's. The one switch;
# tests run both by name.
_libsnappy: Any = native.load(f"{__package__}._snappy")
COMPRESSOR: Final = "libsnappy" if _libsnappy is not None else "cramjam"
compress: Callable[[bytes | memoryview], bytes] = (
    _libsnappy.compress if _libsnappy is not None else compress_cramjam
)
