import sys
from pathlib import Path

# tests/strategies.py and friends are imported as top-level helper modules.
sys.path.insert(0, str(Path(__file__).parent))

import pytest

# Suites that start real processes (Prometheus, vmagent, VictoriaMetrics, the relay, the
# benchmark) take seconds per test: `pytest -m "not slow"` leaves them out for a quick signal.
_SLOW_DIRS = tuple(Path(__file__).parent / name for name in ("e2e", "faults", "bench"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(directory in Path(item.path).parents for directory in _SLOW_DIRS):
            item.add_marker(pytest.mark.slow)
