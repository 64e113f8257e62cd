"""The Prometheus text format (0.0.4) read as Prometheus 2.42 reads a scrape: its lexer
(``model/textparse/promlex.l``) and parser (``promparse.go``), so that a scrape fails where
Prometheus' fails and reads what Prometheus reads where it succeeds.

``prometheus_client``'s parser, used before, is laxer in some places (a ``\\r`` before the
newline, a negative or fractional timestamp, a value out of float64's range read as infinite)
and stricter in others (a label name starting with ``__``), so the relay's ``up`` and samples
differed from Prometheus' on the same target. What it is still used for here: grouping samples
into families for metadata, which this module does the same way (see ``families``).

Pure: text in, families out; ``TextError`` says why a scrape fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final, NamedTuple


class TextError(ValueError):
    """The exposition is not what Prometheus 2.42 reads; the scrape fails."""


class TextSample(NamedTuple):
    """One sample line: labels as exposed (no ``__name__``), value, timestamp in ms or None."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: int | None


_WS: Final = re.compile(r"[ \t]*")
_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# flex's "." is any byte but a newline: a backslash escapes anything but a newline, and a raw
# newline may stand in a label value.
_LABEL_VALUE: Final = re.compile(r'"(?:\\[^\n]|[^\\"])*"')
_VALUE: Final = re.compile(r"[^{ \t\n]+")
_TIMESTAMP: Final = re.compile(r"[0-9]+")
_META: Final = re.compile(r"#[ \t]+(?:(HELP|TYPE)[ \t]+)?")
_TO_EOL: Final = re.compile(r"[^\n]*")
# strconv.ParseFloat's syntax (ASCII only, no hex: Prometheus refuses 'p' and '_', and a hex
# mantissa needs a 'p' exponent), and its words for infinity and NaN.
_FLOAT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf(?:inity)?))|(?i:nan)"
)
_LABEL_ESCAPES: Final = re.compile(r'\\[\\n"]')
_HELP_ESCAPES: Final = re.compile(r"\\[\\n]")
_UNESCAPED: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_TYPES: Final = frozenset(("counter", "gauge", "histogram", "summary", "untyped"))
_INT64: Final = 1 << 63
# The sample names a declared family takes, as prometheus_client groups them (metadata).
_SUFFIXES: Final = {
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}


def _unescape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: _UNESCAPED[m.group(0)], text) if "\\" in text else text


def parse_float(token: str) -> float:
    """``parseFloat`` of promparse.go: strconv.ParseFloat without 'p', 'P' or '_'."""
    if not _FLOAT.fullmatch(token):
        raise TextError(f'strconv.ParseFloat: parsing "{token}": invalid syntax')
    value = float(token)
    if value in (float("inf"), float("-inf")) and token.lstrip("+-")[:1] not in "iI":
        raise TextError(f'strconv.ParseFloat: parsing "{token}": value out of range')
    return value


class _Line(NamedTuple):
    kind: str  # "sample", "help", "type"
    name: str
    text: str  # help text or type
    sample: TextSample | None


def _lines(text: str) -> Iterator[_Line]:
    """Each entry of ``text`` in order, or ``TextError`` at the first Prometheus refuses."""
    pos, end = 0, len(text)
    while True:
        start = pos
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return
        char = text[pos]
        if char == "\n":
            pos += 1
            continue
        if char == "#":
            meta = _META.match(text, pos)
            keyword = meta.group(1) if meta is not None else None
            if meta is None or keyword is None:
                pos = _TO_EOL.match(text, pos).end() + 1  # type: ignore[union-attr]
                continue  # a comment
            name = _METRIC_NAME.match(text, meta.end())
            if name is None:
                raise TextError(f"expected metric name after {keyword}")
            rest = _TO_EOL.match(text, name.end()).end()  # type: ignore[union-attr]
            body = text[name.end() + 1 : rest] if rest - name.end() > 1 else ""
            pos = rest + 1
            if keyword == "TYPE":
                if body not in _TYPES:
                    raise TextError(f'invalid metric type "{body}"')
                yield _Line("type", name.group(), body, None)
            else:
                yield _Line("help", name.group(), _unescape(_HELP_ESCAPES, body), None)
            continue
        name = _METRIC_NAME.match(text, pos)
        if name is None:
            raise TextError(f'"{_excerpt(text, pos)}" is not a valid start token')
        if pos != start:
            # Prometheus takes the series from the line's start: the blanks become part of
            # the metric name, which is then invalid (before a comment they do no harm).
            raise TextError(f'invalid metric name "{text[start : name.end()]}"')
        pos = _WS.match(text, name.end()).end()  # type: ignore[union-attr]
        labels: dict[str, str] = {}
        if text.startswith("{", pos):
            pos = _labels(text, pos + 1, labels, name.group())
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        value = _VALUE.match(text, pos)
        if value is None:
            raise TextError(f"expected value after metric {name.group()}")
        parsed = parse_float(value.group())
        pos = _WS.match(text, value.end()).end()  # type: ignore[union-attr]
        timestamp: int | None = None
        stamp = _TIMESTAMP.match(text, pos)
        if stamp is not None:
            # Past 19 digits it is out of range anyway (and int() refuses very long ones).
            timestamp = int(stamp.group()) if len(stamp.group()) <= 19 else _INT64
            if timestamp >= _INT64:
                raise TextError(f'strconv.ParseInt: parsing "{stamp.group()}": value out of range')
            pos = _WS.match(text, stamp.end()).end()  # type: ignore[union-attr]
        if pos < end and text[pos] != "\n":  # the body's end ends a line too
            expected = "next entry after timestamp" if stamp else "timestamp or new record"
            raise TextError(f"expected {expected} after {name.group()}: {_excerpt(text, pos)!r}")
        pos += 1
        yield _Line("sample", name.group(), "", TextSample(name.group(), labels, parsed, timestamp))


def _labels(text: str, pos: int, labels: dict[str, str], metric: str) -> int:
    """``parseLVals``: the labels from ``pos`` (after the brace) into ``labels``; where the
    closing brace ends. A name given twice fails, as the scrape's duplicate check fails it."""
    while True:
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("}", pos):
            return pos + 1
        name = _LABEL_NAME.match(text, pos)
        if name is None:
            raise TextError(f"expected label name in {metric}: {_excerpt(text, pos)!r}")
        pos = _WS.match(text, name.end()).end()  # type: ignore[union-attr]
        if not text.startswith("=", pos):
            raise TextError(f"expected equal after label {name.group()} in {metric}")
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        value = _LABEL_VALUE.match(text, pos)
        if value is None:
            raise TextError(f"expected label value for {name.group()} in {metric}")
        set_label(labels, name.group(), value.group(), metric)
        pos = _WS.match(text, value.end()).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1


def unescaped(text: str) -> str:
    """A label value's (or an OpenMetrics help text's) escapes read: ``\\\\``, ``\\n``,
    ``\\"``."""
    return _unescape(_LABEL_ESCAPES, text)


def set_label(labels: dict[str, str], name: str, quoted: str, where: str) -> None:
    """``name`` set to the quoted value ``quoted``, unescaped (the three escapes Prometheus
    reads; any other backslash stays). A name given twice, ``__name__`` too, fails, as the
    scrape's duplicate check fails it."""
    if name in labels or name == "__name__":
        raise TextError(f"label name {name} is not unique in {where}")
    labels[name] = unescaped(quoted[1:-1])


def _excerpt(text: str, pos: int) -> str:
    return text[pos : pos + 40].split("\n", 1)[0]


def families(text: str) -> Iterator[tuple[str, str, str, list[TextSample]]]:
    """(family name, type, help, samples) of each family, grouped as ``prometheus_client``'s
    text parser groups them, so that metadata stays what it was: a ``# HELP`` or ``# TYPE``
    line starts a family of that name, which takes the samples its type names (the name
    itself; a summary's ``_count`` and ``_sum`` too; a histogram's ``_count``, ``_sum`` and
    ``_bucket``), and any other sample is a family of its own, ``unknown``. Sample names stay
    as exposed (a counter's too). Raises ``TextError`` for what Prometheus refuses."""
    name, help_text, kind = "", "", "unknown"
    samples: list[TextSample] = []
    allowed: tuple[str, ...] = ()
    for line in _lines(text):
        if line.kind == "sample":
            sample = line.sample
            assert sample is not None
            if sample.name in allowed:
                samples.append(sample)
                continue
            if name:
                yield name, kind, help_text, samples
            name, help_text, kind, samples, allowed = "", "", "unknown", [], ()
            yield sample.name, "unknown", "", [sample]
            continue
        if line.name != name:
            if name:
                yield name, kind, help_text, samples
            name, help_text, samples = line.name, "", []
            if line.kind == "help":
                kind, allowed = "unknown", (line.name,)
        if line.kind == "help":
            help_text = line.text
        else:
            kind = "unknown" if line.text == "untyped" else line.text
            allowed = tuple(line.name + s for s in _SUFFIXES.get(line.text, ("",)))
    if name:
        yield name, kind, help_text, samples
