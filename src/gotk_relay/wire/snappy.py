"""Snappy block format with limits checked *before* anything is decompressed.

Remote write uses the block format (not the framed one). A block starts with the decompressed
length as a varint, so a length bomb is refused from its first bytes.
"""

from __future__ import annotations

import cramjam

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
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise DecodeError(str(exc).split("\n", 1)[0]) from exc


def compress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))
