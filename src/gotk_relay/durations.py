"""Prometheus durations (``30s``, ``1m30s``, ``100ms``), as every config section writes them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus duration or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        try:
            return float(text)
        except ValueError:
            pass
        raise ValueError(f'not a valid duration string: "{text}" (examples: 30s, 1m30s, 100ms)')
    return sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)


Duration = Annotated[float, BeforeValidator(parse_duration)]
