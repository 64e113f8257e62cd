"""Snappy block surgery: merge compressed blocks and append raw bytes without recompressing.

Why: compressing a request costs more than everything else the fast path does to it
(docs/performance.md). A relay that forwards what it received can instead keep the compressed
bodies it was sent, merge queued ones into one larger request, and append synthesized series
after them.

The block format (snappy's ``format_description.txt``) is a varint preamble holding the
decompressed length, then a stream of elements, each tagged by its two low bits:

* ``00`` literal: ``tag >> 2`` is ``length - 1`` when below 60; 60, 61, 62, 63 say that 1, 2,
  3, 4 little-endian bytes of ``length - 1`` follow; then the bytes themselves;
* ``01``/``10``/``11`` copy: ``length`` bytes from ``offset`` bytes back in the *output*
  (offsets of 11, 16 and 32 bits).

A copy's offset counts back from its own output position, and a valid block never reaches
before its own start (offset ≤ bytes it has output so far; decoders reject anything else).
Putting other output in front of a block therefore changes nothing it refers to: every
element of every kind stays valid wherever the block's output lands, including overlapping
(run-length) copies, copies that reach back exactly to the block's start, and 4-byte offsets.
So a block's element stream can be moved behind any other output unchanged, and only the
preamble needs rewriting. No element kind needs a decompress + compress fallback
(``tests/unit/test_snappy_concat.py`` checks this against cramjam with hand-built streams of
every kind, not only what cramjam's compressor happens to emit).

One decoder quirk matters for what is *emitted*, not for merging: cramjam (the Rust ``snap``
crate) reads four bytes after the tag of any literal with an extended length, so it refuses a
block that *ends* with a longer length form than needed (e.g. a 1-byte literal written with
the 1-byte-length form). ``literal_tag`` always uses the shortest form, which never meets it.

What this cannot see is an *invalid* input block: one that copies from before its start, or
whose preamble disagrees with its elements, could decode "successfully" once merged. Every
block must therefore be known valid (the relay decompresses each body it receives, and cramjam
rejects both faults), or checked with ``check``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cramjam

from .errors import DecodeError, TooLargeError
from .rw1 import uvarint

MAX_LENGTH = 0xFFFFFFFF  # the preamble is a varint32: no block decompresses to more


def concat(blocks: Sequence[bytes]) -> bytes:
    """One block that decompresses to the concatenation of ``blocks``' decompressions.

    Each block must be valid (see the module docstring). Cost: parsing each preamble plus one
    copy of the element streams; nothing is decompressed. Raises TooLargeError if
    the total would exceed what a preamble can declare, DecodeError on a broken preamble.
    """
    if len(blocks) == 1:
        preamble(blocks[0])  # the same checks as for several
        return blocks[0]
    total = 0
    parts: list[bytes | memoryview] = [b""]
    for block in blocks:
        length, start = preamble(block)
        total += length
        parts.append(memoryview(block)[start:])
    if total > MAX_LENGTH:
        raise TooLargeError(f"snappy: merged length {total} exceeds the block format's limit")
    parts[0] = uvarint(total)
    return b"".join(parts)


def append_literal(block: bytes, data: bytes) -> bytes:
    """``block`` with ``data`` appended to its decompression, as one literal element.

    The element's length uses the shortest form (inline below 61 bytes, else 1–4 length
    bytes); the format lets a literal be as long as the block, so ``data`` is not cut up.
    ``append_literal(b"\\x00", data)`` is an uncompressed block of ``data``.
    """
    if not data:
        preamble(block)
        return block
    length, start = preamble(block)
    total = length + len(data)
    if total > MAX_LENGTH:
        raise TooLargeError(f"snappy: length {total} exceeds the block format's limit")
    return b"".join((uvarint(total), memoryview(block)[start:], literal_tag(len(data)), data))


def literal_tag(length: int) -> bytes:
    """The tag (and length bytes) of a literal element of ``length`` ≥ 1 bytes."""
    if not 1 <= length <= MAX_LENGTH:
        raise ValueError(f"snappy literal length {length} out of range")
    n = length - 1
    if n < 60:
        return bytes((n << 2,))
    width = (n.bit_length() + 7) // 8  # 1..4
    return bytes(((59 + width) << 2,)) + n.to_bytes(width, "little")


def preamble(block: bytes) -> tuple[int, int]:
    """The decompressed length a block declares and the size of the varint declaring it."""
    result = 0
    for i in range(min(5, len(block))):
        byte = block[i]
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if result > MAX_LENGTH:
                break
            return result, i + 1
    raise DecodeError("snappy: corrupt input (bad length preamble)")


def check(block: bytes) -> None:
    """Raise DecodeError unless ``block`` decompresses (in C) to exactly its declared length.

    For blocks of unknown origin before they are merged; costs a decompression.
    """
    declared, _ = preamble(block)
    try:
        out = cramjam.snappy.decompress_raw(block)
    except cramjam.DecompressionError as exc:
        raise DecodeError(str(exc).split("\n", 1)[0]) from exc
    if len(out) != declared:
        raise DecodeError("snappy: corrupt input (length mismatch)")
