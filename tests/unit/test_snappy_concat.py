"""wire.snappy_concat: merged and appended blocks decompress (by cramjam) to what they should.

Blocks come from cramjam's compressor and also from a hand-built element stream, so every
element kind is covered (literals in each length form, 1-, 2- and 4-byte-offset copies,
overlapping copies, copies reaching back to their own block's start, offsets past 64 KiB),
not only the ones a particular compressor emits.
"""

from __future__ import annotations

import random

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import Batch, Sample, Series, labels_from
from gotk_relay.wire import rw1, snappy
from gotk_relay.wire import snappy_concat as sc
from gotk_relay.wire.errors import DecodeError, TooLargeError

EDGE_LENGTHS = [0, 1, 59, 60, 61, 255, 256, 257, 65535, 65536, 65537, 1 << 20]


def decompress(block: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(block))


def compress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(data: bytes, width: int) -> bytes:
    """A literal element whose length takes ``width`` extra bytes (0: inline in the tag)."""
    n = len(data) - 1
    if width == 0:
        return bytes([n << 2]) + data
    return bytes([(59 + width) << 2]) + n.to_bytes(width, "little") + data


def copy(offset: int, length: int, kind: int) -> bytes:
    """A copy element of tag kind 1 (11-bit offset), 2 (16-bit) or 3 (32-bit)."""
    if kind == 1:
        assert 4 <= length <= 11 and offset < 2048
        return bytes([(offset >> 8) << 5 | (length - 4) << 2 | 1, offset & 0xFF])
    assert 1 <= length <= 64
    width = 2 if kind == 2 else 4
    return bytes([(length - 1) << 2 | kind]) + offset.to_bytes(width, "little")


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(1, 12)) for _ in range(8)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


@st.composite
def hand_built(draw: st.DrawFn, prefix: int = 0) -> tuple[bytes, bytes]:
    """(block, its decompression): a random valid element stream, decoded by the spec.

    ``prefix`` random bytes come first as one literal, so copies can reach far back.
    """
    out = bytearray()
    elements: list[bytes] = []
    if prefix:
        head = random_bytes(draw(st.integers(0, 1 << 30)), prefix)
        elements.append(literal(head, 3))
        out += head
    for _ in range(draw(st.integers(0, 12))):
        if not out or draw(st.integers(0, 2)) == 0:
            data = draw(st.binary(min_size=1, max_size=70))
            # Longer length forms than needed are valid, but cramjam reads 4 bytes after the
            # tag of any extended-length literal, so it refuses one that ends the stream with
            # fewer left (a quirk of its decoder that minimal forms, ours included, never meet).
            widths = [w for w in range(5) if (w == 0 and len(data) <= 60) or w + len(data) >= 4]
            elements.append(literal(data, draw(st.sampled_from(widths))))
            out += data
            continue
        where = draw(st.sampled_from(["start", "one", "any", "far"]))
        if where == "start":
            offset = len(out)  # back to the block's own first byte
        elif where == "one":
            offset = 1  # run-length: the copy overlaps its own output
        elif where == "far":
            offset = max(1, len(out) - draw(st.integers(0, 3)))
        else:
            offset = draw(st.integers(1, len(out)))
        length = draw(st.integers(1, 64))
        kinds = [3] + ([2] if offset < 65536 else []) + ([1] if 4 <= length <= 11 else [])
        kinds = [k for k in kinds if k != 1 or offset < 2048]
        elements.append(copy(offset, length, draw(st.sampled_from(kinds))))
        for _ in range(length):
            out.append(out[-offset])
    return varint(len(out)) + b"".join(elements), bytes(out)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.sampled_from(["random", "compressible", "hand", "empty"]))
    if kind == "hand":
        return draw(hand_built())
    if kind == "empty":
        return compress(b""), b""
    size = draw(st.sampled_from([1, 4, 59, 60, 61, 255, 256, 1000, 5000]))
    make = random_bytes if kind == "random" else compressible
    data = make(draw(st.integers(0, 1 << 30)), size)
    return compress(data), data


# -- the reference stream itself ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(hand_built())
def test_hand_built_blocks_are_valid_for_cramjam(pair: tuple[bytes, bytes]) -> None:
    block, data = pair
    assert decompress(block) == data


# -- concat ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(blocks(), max_size=6))
def test_concat_decompresses_to_the_concatenation(pairs: list[tuple[bytes, bytes]]) -> None:
    merged = sc.concat([b for b, _ in pairs])
    assert decompress(merged) == b"".join(d for _, d in pairs)
    assert sc.preamble(merged)[0] == sum(len(d) for _, d in pairs)


@settings(max_examples=30, deadline=None)
@given(st.lists(hand_built(prefix=70000), min_size=1, max_size=3), blocks())
def test_concat_keeps_copies_that_reach_past_64_kib(
    pairs: list[tuple[bytes, bytes]], other: tuple[bytes, bytes]
) -> None:
    pairs = [other, *pairs, other]
    merged = sc.concat([b for b, _ in pairs])
    assert decompress(merged) == b"".join(d for _, d in pairs)


def test_concat_of_copies_at_the_window_edges() -> None:
    """Offsets 65535 (2-byte form), 65536 and the block's full length (4-byte form)."""
    head = random_bytes(1, 70000)
    body = bytearray(head)
    elements = [literal(head, 3)]
    for offset, kind in ((65535, 2), (65536, 3), (70000 + 64, 3), (2047, 1), (1, 2)):
        length = 11 if kind == 1 else 64
        elements.append(copy(offset, length, kind))
        for _ in range(length):
            body.append(body[-offset])
    block = varint(len(body)) + b"".join(elements)
    assert decompress(block) == bytes(body)
    first = compress(compressible(2, 200000))  # cramjam's own long-distance copies
    assert decompress(sc.concat([first, block, first, block])) == (
        decompress(first) + bytes(body) + decompress(first) + bytes(body)
    )


def test_concat_of_blocks_cramjam_compressed_with_long_matches() -> None:
    chunk = random_bytes(3, 60000)
    blocks_ = [compress(chunk * 3), compress(random_bytes(4, 100000)), compress(chunk[:10])]
    expected = chunk * 3 + random_bytes(4, 100000) + chunk[:10]
    assert decompress(sc.concat(blocks_)) == expected


def test_concat_edge_cases() -> None:
    assert sc.concat([]) == b"\x00" and decompress(sc.concat([])) == b""
    one = compress(b"hello")
    assert sc.concat([one]) is one
    assert decompress(sc.concat([b"\x00", one, b"\x00"])) == b"hello"
    for bad in (b"", b"\x80", b"\x80\x80\x80\x80\x80\x01", b"\xff\xff\xff\xff\x1f"):
        with pytest.raises(DecodeError):
            sc.concat([one, bad])
        with pytest.raises(DecodeError):
            sc.concat([bad])


def test_concat_refuses_more_than_a_preamble_can_declare() -> None:
    biggest = b"\xff\xff\xff\xff\x0f"  # declares 2**32 - 1 (no elements needed to check this)
    assert sc.preamble(biggest) == (0xFFFFFFFF, 5)
    with pytest.raises(TooLargeError):
        sc.concat([biggest, b"\x01\x00x"])


def test_an_invalid_block_is_not_detected_by_concat_but_by_check() -> None:
    """The one hazard: a copy reaching before its own block's start.

    Alone the block is refused; merged behind another block the copy finds bytes to read and
    the result decodes. Hence concat's precondition (blocks known valid), and ``check``.
    """
    good = compress(b"abc")
    bad = varint(4) + copy(3, 4, 1)  # copies 4 bytes from 3 back, at output position 0
    with pytest.raises(cramjam.DecompressionError):
        decompress(bad)
    with pytest.raises(DecodeError):
        sc.check(bad)
    sc.check(good)
    assert decompress(sc.concat([good, bad])) == b"abcabca"
    lying = varint(5) + literal(b"abc", 0)  # preamble disagrees with the elements
    with pytest.raises(DecodeError):
        sc.check(lying)


# -- append_literal ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", EDGE_LENGTHS)
@pytest.mark.parametrize("base", ["empty", "random", "compressible", "hand"])
def test_append_literal_at_edge_lengths(size: int, base: str) -> None:
    if base == "empty":
        block, before = b"\x00", b""
    elif base == "hand":
        before = b"abcd" * 3
        block = varint(len(before)) + literal(b"abcd", 0) + copy(4, 8, 1)
    else:
        before = (random_bytes if base == "random" else compressible)(size + 7, 3000)
        block = compress(before)
    data = random_bytes(size, size)
    out = sc.append_literal(block, data)
    assert decompress(out) == before + data
    if size:
        head = sc.preamble(block)[1]
        assert out.endswith(block[head:] + sc.literal_tag(size) + data)
    else:
        assert out is block


def test_literal_tag_forms() -> None:
    assert sc.literal_tag(1) == b"\x00"
    assert sc.literal_tag(60) == bytes([59 << 2])  # the longest inline length
    assert sc.literal_tag(61) == bytes([60 << 2, 60])
    assert sc.literal_tag(256) == bytes([60 << 2, 255])
    assert sc.literal_tag(257) == bytes([61 << 2, 0, 1])
    assert sc.literal_tag(65536) == bytes([61 << 2, 255, 255])
    assert sc.literal_tag(65537) == bytes([62 << 2, 0, 0, 1])
    assert sc.literal_tag(1 << 24) == bytes([62 << 2, 255, 255, 255])
    assert sc.literal_tag((1 << 24) + 1) == bytes([63 << 2, 0, 0, 0, 1])
    assert sc.literal_tag(0xFFFFFFFF) == bytes([63 << 2, 254, 255, 255, 255])
    for bad in (0, 1 << 32):
        with pytest.raises(ValueError):
            sc.literal_tag(bad)


def test_append_literal_with_the_four_byte_length_form() -> None:
    data = compressible(5, (1 << 24) + 1)
    out = sc.append_literal(compress(b"x"), data)
    assert out[-len(data) - 5] == 63 << 2
    assert decompress(out) == b"x" + data


@settings(max_examples=300, deadline=None)
@given(blocks(), st.lists(st.binary(max_size=300), max_size=4))
def test_append_literal_repeatedly(pair: tuple[bytes, bytes], pieces: list[bytes]) -> None:
    block, expected = pair
    for piece in pieces:
        block = sc.append_literal(block, piece)
        expected += piece
    assert decompress(block) == expected


def test_append_literal_refuses_more_than_a_preamble_can_declare() -> None:
    with pytest.raises(TooLargeError):
        sc.append_literal(b"\xff\xff\xff\xff\x0f", b"x")
    with pytest.raises(DecodeError):
        sc.append_literal(b"", b"x")


# -- what the relay does with them -------------------------------------------------------------


def _batch(name: str, n: int) -> Batch:
    return Batch(
        tuple(
            Series(labels_from({"__name__": name, "i": str(i)}), (Sample(float(i), 1000 + i),))
            for i in range(n)
        )
    )


def test_merged_requests_plus_appended_series_decode_as_one_request() -> None:
    """Protobuf repeated fields concatenate, so merged bodies are one WriteRequest."""
    received = [_batch("up", 50), _batch("node_load1", 30), _batch("up", 1)]
    bodies = [snappy.compress(rw1.encode(b)) for b in received]
    synthesized = _batch("gotk_reconcile_condition", 3)
    out = sc.append_literal(sc.concat(bodies), rw1.encode(synthesized))
    decoded = rw1.decode(snappy.decompress(out, 1 << 24))
    expected = [s for b in [*received, synthesized] for s in b.series]
    assert list(decoded.series) == expected
