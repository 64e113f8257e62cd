"""``wire.snappy.decompress``: a request's body decompressed straight into the bytes it returns
(``_survey.fill_bytes``) is what cramjam's own buffer copied gives, for any data and any damaged
block (the same bytes, or the same error), and the filler refuses a fill that breaks its
contract."""

from __future__ import annotations

from typing import Any, Final

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.wire import snappy
from gotk_relay.wire.errors import DecodeError, TooLargeError

FILL: Final[Any] = snappy._fill_bytes
needs_fill = pytest.mark.skipif(FILL is None, reason="wire/_survey.c is not built")
PATHS: Final = [pytest.param(None, id="python")]
if FILL is not None:
    PATHS.append(pytest.param(FILL, id="compiled"))

# Data that compresses (repeats, as label sets do) and data that does not.
DATA: Final = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from([b"__name__", b"up", b"job", b"\x00", b"\xff" * 9]), max_size=400).map(
        b"".join
    ),
)


def _outcome(block: bytes, max_size: int = 1 << 20) -> bytes | type[Exception]:
    try:
        return snappy.decompress(block, max_size)
    except (DecodeError, TooLargeError) as exc:
        return type(exc)


@pytest.mark.parametrize("fill", PATHS)
@settings(max_examples=200, deadline=None)
@given(data=DATA)
def test_any_data_comes_back(fill: Any, data: bytes) -> None:
    snappy._fill_bytes = fill
    try:
        out = snappy.decompress(snappy.compress(data), len(data))
    finally:
        snappy._fill_bytes = FILL
    assert out == data and type(out) is bytes


@needs_fill
@settings(max_examples=300, deadline=None)
@given(
    data=DATA, edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)
)
def test_a_damaged_block_gives_what_the_copying_path_gives(
    data: bytes, edits: list[tuple[int, int]]
) -> None:
    block = bytearray(snappy.compress(data))
    for at, byte in edits:
        block[at % len(block)] = byte
    damaged = bytes(block[: max(1, len(block) - edits[0][0] % 3)]) if edits else bytes(block)
    compiled = _outcome(damaged)
    snappy._fill_bytes = None
    try:
        reference = _outcome(damaged)
    finally:
        snappy._fill_bytes = FILL
    assert compiled == reference


@needs_fill
def test_the_filler_refuses_a_fill_that_breaks_its_contract() -> None:
    block = snappy.compress(b"abc" * 100)
    assert FILL(300, cramjam.snappy.decompress_raw_into, block) == b"abc" * 100
    with pytest.raises(ValueError, match="fill wrote 299 bytes of 300"):
        FILL(300, lambda source, view: 299, block)
    with pytest.raises(ValueError):
        FILL(300, lambda source, view: "300", block)
    with pytest.raises(ZeroDivisionError):
        FILL(300, lambda source, view: 1 // 0, block)
    kept: list[memoryview] = []

    def keeping(source: bytes, storage: Any) -> int:
        kept.append(memoryview(storage))
        return 3

    with pytest.raises(BufferError, match="kept a view"):  # a view outlives the fill
        FILL(3, keeping, block)
    with pytest.raises(BufferError, match="has returned"):  # and cannot be had after it
        memoryview(kept[0].obj)
    with pytest.raises(ValueError):
        FILL(-1, cramjam.snappy.decompress_raw_into, block)
    assert FILL(0, lambda source, view: memoryview(view).nbytes, b"") == b""
