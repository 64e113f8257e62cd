"""The Datadog and OTLP bodies' compression (``destinations/deflate.py``): plain gzip and zlib,
and the vector registers left clean for the rest of the relay."""

from __future__ import annotations

import gzip
import platform
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from isal import igzip

from gotk_relay.destinations import datadog, deflate, otlp

_rows = pytest.importorskip("gotk_relay.destinations._rows")


@given(st.binary(max_size=200_000) | st.text(max_size=50_000).map(str.encode))
def test_bodies_are_plain_gzip_and_zlib(body: bytes) -> None:
    """Any gzip or zlib reader takes them: the intakes' and the doubles' (stdlib)."""
    assert gzip.decompress(deflate.gzip(body)) == body
    assert zlib.decompress(deflate.zlib(body)) == body
    assert gzip.decompress(datadog.compress(body, "gzip")) == body
    assert zlib.decompress(datadog.compress(body, "deflate")) == body
    assert gzip.decompress(otlp._gzip_now(body)) == body


def test_the_fallback_compresses_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the compiled module nothing clears the registers; the bodies are the same."""
    body = b'{"metric":"up","points":[{"timestamp":1,"value":1.0}]}' * 2000
    compiled = deflate.gzip(body), deflate.zlib(body)
    monkeypatch.setattr(deflate, "clear_upper", lambda: None)
    assert (deflate.gzip(body), deflate.zlib(body)) == compiled


@pytest.mark.skipif(platform.machine() != "x86_64", reason="AVX is x86's")
@pytest.mark.skipif(
    deflate._native is None, reason="the extensions are off (GOTK_RELAY_NO_EXTENSIONS)"
)
def test_isal_leaves_the_vector_registers_dirty_and_the_relay_cleans_them() -> None:
    """ISA-L returns without VZEROUPPER: every SSE instruction after it (the next request's
    snappy decompression: 163 -> 266 µs measured) then waits on the registers' upper halves.
    The relay's compression clears them after each call, on the thread that made it."""
    assert _rows.upper_clearing(), "an x86-64 CPU without AVX: nothing to clear"
    body = b"gotk_reconcile_condition{kind=Kustomization} 1\n" * 4000
    assert _rows.upper_dirty() is not None, "XGETBV(1) unavailable: cannot tell"
    igzip.compress(body, 1)
    assert _rows.upper_dirty() is True  # what the fix is for (else ISA-L changed)
    _rows.clear_upper()
    assert _rows.upper_dirty() is False
    for compress in (deflate.gzip, deflate.zlib, otlp._gzip_now):
        igzip.compress(body, 1)
        compress(body)
        assert _rows.upper_dirty() is False, compress
    datadog.compress(body, "gzip")
    assert _rows.upper_dirty() is False
