"""Config units: Prometheus durations (``30s``, ``1m30s``) and byte sizes (``256MiB``, ``10MB``),
YAML's boolean words as written, and the scalar types Go's YAML holds a key's value to."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator


class BoolText(str):
    """A YAML 1.1 boolean word (``true``, ``False``, ``yes``, ``off``...) as written
    (config/yaml_text.py). Go's YAML gives a string key that text (``replacement: true`` is
    ``"true"``) and a bool key its truth value, which pydantic reads from every such word; a
    check that refuses booleans (``modulus``) tells it from a quoted string by its type."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles as a plain str
        return (str, (str(self),))


class EnvText(str):
    """A string value that came from ``${VAR}`` (config/env.py): read as whatever its key takes,
    a number or a boolean too, as if the variable's text had been written there."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (str, (str(self),))


_GO_TYPES: Final = {bool: "bool", int: "int", float: "float64"}
_INT64: Final = 1 << 63
_kinds: dict[tuple[type[BaseModel], str], type | None] = {}


def _scalar_kind(model: type[BaseModel], name: str) -> type | None:
    """bool, int or float when ``model``'s field ``name`` takes one (or None) and nothing of its
    own reads text into it first (a duration, a byte size); else None."""
    key = (model, name)
    if key in _kinds:
        return _kinds[key]
    kind: type | None = None
    field = model.model_fields.get(name)
    if field is not None:
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = annotation if annotation in _GO_TYPES else (args[0] if len(args) == 1 else None)
        own = any(isinstance(m, BeforeValidator) for m in field.metadata) or any(
            d.info.mode in ("before", "plain", "wrap") and name in d.info.fields
            for d in model.__pydantic_decorators__.field_validators.values()
        )
        if base in _GO_TYPES and not own:
            kind = base
    _kinds[key] = kind
    return kind


def go_scalar(model: type[BaseModel], name: str, value: Any) -> Any:
    """``value`` for ``model``'s field ``name``, refused as Go's YAML refuses it when the field
    takes a bool, an int or a float: a quoted string (``'true'``, ``'10'``), a number into a
    bool, a boolean word into a number, an int over 64 bits. A value from ``${VAR}`` is taken
    as its text reads."""
    kind = _scalar_kind(model, name)
    if kind is None or value is None or isinstance(value, EnvText):
        return value
    if isinstance(value, bool | BoolText):
        tag = "!!bool"
    elif isinstance(value, int):
        tag = "!!int"
        if kind is int and not -_INT64 <= value < _INT64:
            raise ValueError(f"cannot unmarshal !!int `{_shown(value)}` into int")
    elif isinstance(value, float):
        tag = "!!float"
    elif isinstance(value, str):
        tag = "!!str"
    else:
        return value  # a list or a mapping: the field's own error says what it takes
    takes = ("!!bool",) if kind is bool else ("!!int", "!!float")
    if tag not in takes:
        hint = " (a quoted value is a string; write it without quotes)" if tag == "!!str" else ""
        raise ValueError(f"cannot unmarshal {tag} `{_shown(value)}` into {_GO_TYPES[kind]}{hint}")
    return value


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= 10 else text[:7] + "..."  # as Go's message cuts it


_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


# A Go time.Duration holds up to 2^63-1 ns (about 292 years); Prometheus refuses longer ones.
_MAX_SECONDS = (2**63 - 1) / 1e9


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus duration (``30s``, ``1m30s``, ``100ms``, ``0``), as Prometheus
    reads one: a bare number other than 0 is refused (``30`` is not 30 s there), and so are a
    sign, a fraction and spaces."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(_not_a_duration(value))
    text = str(value)  # a YAML integer as written (config/yaml_text.py)
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(_not_a_duration(text))
    seconds = sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)
    if seconds > _MAX_SECONDS:
        raise ValueError(f'duration out of range: "{text}" (at most 292y)')
    return seconds


def parse_seconds(value: object) -> float:
    """Seconds from a Prometheus duration or a number of seconds (the relay's own keys that say
    so), finite and not negative."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not 0 <= seconds <= _MAX_SECONDS:  # NaN fails both
            raise ValueError(f"not a number of seconds from 0 to 292 years: {value}")
        return seconds
    return parse_duration(value)


def _not_a_duration(value: object) -> str:
    return f'not a valid duration string: "{value}" (examples: 30s, 1m30s, 100ms)'


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


# Prometheus' sizes (body_size_limit: alecthomas/units' base-2 bytes): KB = KiB = 1024, every
# number with its unit, several in a row ("1MB512KB"), "0" alone.
_BASE2_UNITS = {
    "B": 1,
    **{f"{p}B": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")},
    **{f"{p}iB": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")},
}
_BASE2_PART = re.compile(r"(\d+(?:\.\d+)?)([KMGTPE]i?B|B)")


def parse_base2_bytes(value: object) -> int:
    """Bytes from a size as Prometheus reads ``body_size_limit`` (``10MB`` = 10 MiB)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(_not_a_size(value))
    text = str(value)
    if text == "0":
        return 0
    total, at = 0.0, 0
    for part in _BASE2_PART.finditer(text):
        if part.start() != at:
            break
        total += float(part.group(1)) * _BASE2_UNITS[part.group(2)]
        at = part.end()
    if at == 0 or at != len(text):
        raise ValueError(_not_a_size(text))
    return int(total)


def _not_a_size(value: object) -> str:
    return f'not a valid size: "{value}" (examples: 10MB, 512KiB, 1GB; KB and KiB are 1024 bytes)'


Base2Bytes = Annotated[int, BeforeValidator(parse_base2_bytes)]
