"""Config units: Prometheus durations (``30s``, ``1m30s``) and byte sizes (``256MiB``)."""

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


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_bytes(value: object) -> int:
    """Bytes from an integer or a size such as ``512KiB``, ``256MiB``, ``1GB`` (SI or IEC)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f'not a valid size: "{text}" (examples: 1048576, 512KiB, 256MiB, 1GB)')
    unit = (match.group(2) or "B").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
