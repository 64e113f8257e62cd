"""The benchmark's workload generator (``bench/loadgen.py``) for tests that replay its traffic.

Loaded under its own module name: ``tests/faults/loadgen.py`` is also imported as ``loadgen``
when the whole suite runs, and the first one imported would win.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load() -> ModuleType:
    name = "gotk_bench_loadgen"
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))  # its sibling snappy_holes; appended, so nothing is shadowed
    spec = importlib.util.spec_from_file_location(name, BENCH / "loadgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


loadgen = _load()
