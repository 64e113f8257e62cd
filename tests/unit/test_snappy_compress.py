"""``wire.snappy.compress``: libsnappy's compression (``wire/_snappy.c``) and its twin, cramjam's,
give blocks that decompress to the data for any input, bytes or a view, and compress each 64 KiB
fragment on its own, which ``delivery.entry.compress_chunks`` relies on to compress a request's
pieces where they lie."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Final

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay import native
from gotk_relay.delivery.entry import SNAPPY_FRAGMENT, compress_chunks
from gotk_relay.wire import snappy, snappy_concat

Compress = Callable[[bytes | memoryview], bytes]
_BUILT: Final = native.load("gotk_relay.wire._snappy")
COMPRESSORS: Final = [pytest.param(snappy.compress_cramjam, id="cramjam")]
if _BUILT is not None:
    COMPRESSORS.append(pytest.param(_BUILT.compress, id="libsnappy"))

# Data that compresses (repeats, as label sets do) and data that does not.
DATA: Final = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.sampled_from([b"__name__", b"node_cpu_seconds_total", b"job", b"\x00", b"\xff" * 9]),
        max_size=600,
    ).map(b"".join),
)


def _back(block: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(block))


def test_the_switch_takes_libsnappy_where_it_is_built_and_installed() -> None:
    """The README's install builds ``_snappy`` and installs libsnappy1v5; without either, every
    routed request is compressed by cramjam at ~1.3x the CPU, and only the start-up line's
    ``compressor`` would show it."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        pytest.skip("GOTK_RELAY_NO_EXTENSIONS is set: cramjam is under test")
    assert _BUILT is not None, f"gotk_relay.wire._snappy is not loadable in {sys.executable}"
    assert snappy.COMPRESSOR == "libsnappy"
    assert snappy.compress is _BUILT.compress


@pytest.mark.parametrize("compress", COMPRESSORS)
@settings(max_examples=200, deadline=None)
@given(data=DATA)
def test_any_data_comes_back(compress: Compress, data: bytes) -> None:
    block = compress(data)
    assert type(block) is bytes
    assert _back(block) == data
    assert snappy.decompress(block, len(data)) == data


@pytest.mark.parametrize("compress", COMPRESSORS)
@settings(max_examples=50, deadline=None)
@given(data=DATA, start=st.integers(0, 50), stop=st.integers(0, 50))
def test_a_view_is_compressed_as_its_bytes(
    compress: Compress, data: bytes, start: int, stop: int
) -> None:
    view = memoryview(data)[start : len(data) - stop]
    assert compress(view) == compress(bytes(view))


@pytest.mark.parametrize("compress", COMPRESSORS)
@pytest.mark.parametrize(
    "size", [0, 1, SNAPPY_FRAGMENT - 1, SNAPPY_FRAGMENT, 5 * SNAPPY_FRAGMENT + 7]
)
def test_sizes_around_the_fragment_and_the_unlocked_path(compress: Compress, size: int) -> None:
    """Inputs of 64 KiB and more are compressed with the GIL released in ``_snappy.c``."""
    data = (b'node_cpu_seconds_total{cpu="3"} ' * (size // 32 + 1))[:size]
    assert _back(compress(data)) == data


@pytest.mark.parametrize("compress", COMPRESSORS)
@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.integers(1, 3), DATA).map(lambda p: (p[1] * 40)[: p[0] * SNAPPY_FRAGMENT]),
        min_size=1,
        max_size=3,
    )
)
def test_each_fragment_is_compressed_on_its_own(compress: Compress, parts: list[bytes]) -> None:
    """Whole 64 KiB fragments compressed apart and concatenated are the block of the whole: no
    copy reaches across a fragment (what ``compress_chunks`` builds on)."""
    whole = b"".join(parts)
    cut = len(whole) // SNAPPY_FRAGMENT * SNAPPY_FRAGMENT
    if cut == 0 or cut == len(whole):
        return
    apart = snappy_concat.concat([compress(whole[:cut]), compress(whole[cut:])])
    assert apart == compress(whole)


@pytest.mark.parametrize("compress", COMPRESSORS)
def test_compress_chunks_is_the_block_of_the_joined_chunks(
    compress: Compress, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gotk_relay.delivery import entry

    monkeypatch.setattr(entry, "compress", compress)
    chunks = [b"a" * 70_000, b"node_load1" * 9_000, b"b" * 10, b"c" * 200_000]
    assert compress_chunks(chunks, b"tail") == compress(b"".join(chunks) + b"tail")


def test_a_non_buffer_is_refused() -> None:
    if _BUILT is None:
        pytest.skip("wire/_snappy.c is not built or libsnappy is missing")
    with pytest.raises(TypeError):
        _BUILT.compress("text")
