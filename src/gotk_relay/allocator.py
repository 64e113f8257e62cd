"""glibc's allocator told to keep freed memory for reuse, for a process that handles large bodies.

Why: every remote-write request is decompressed into a fresh ~0.5–1 MB buffer and parsed into
upb arenas about as large. With glibc's defaults such blocks are mapped and unmapped, or the top
of the heap is trimmed and grown again, so each request first takes a page fault for every
4 KiB it writes, which more than doubled what decompressing and counting a request cost
(``bench/inprocess.py``; figures: docs/performance.md, the hot path). Blocks up to
``mmap_threshold`` then come from the heap, and
up to ``trim_threshold`` of free memory at its top is kept rather than given back.

What it costs: RSS does not fall below its high-water mark by less than ``trim_threshold`` after
a burst. Operators who set glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``) keep them: nothing is changed then. Not glibc
(musl, macOS): nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from typing import Final

MMAP_THRESHOLD: Final = 8 << 20
TRIM_THRESHOLD: Final = 32 << 20

# <malloc.h>
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_OPERATOR_SETTINGS: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD,
    trim_threshold: int = TRIM_THRESHOLD,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Set glibc's mmap and trim thresholds; False when left alone (see the module docstring)."""
    if not sys.platform.startswith("linux") or any(name in environ for name in _OPERATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
