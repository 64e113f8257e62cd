"""OpenMetrics 1.0 read as Prometheus 2.42 reads a scrape: its lexer
(``model/textparse/openmetricslex.l``) and parser (``openmetricsparse.go``).

Prometheus reads OpenMetrics strictly in its syntax (one space between tokens, a comma between
labels, ``# EOF`` at the end, nothing but ``HELP``, ``TYPE`` and ``UNIT`` comments) and loosely
in its meaning: it does not check that a family's samples carry the names its type gives them,
or that they come together. kube-state-metrics relies on that: asked for OpenMetrics (as
Prometheus and the relay ask), it writes ``# TYPE kube_pod_info info`` over samples named
``kube_pod_info``, and ``# TYPE x_total counter`` over ``x_total``, which
``prometheus_client``'s parser, used before, refused (the whole scrape failed).

Pure: text in, families out; ``TextError`` says why a scrape fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Final

from .promtext import TextError, TextSample, parse_float, set_label, unescaped

_META: Final = re.compile(r"# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)")
_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_VALUE: Final = re.compile(r'"(?:\\[^\n]|[^\\"\n])*"')
_TOKEN: Final = re.compile(r" ([^ ]+)")  # a value or a timestamp: one space, then no space
_EXEMPLAR: Final = " # {"
_INT64: Final = 1 << 63
_TYPES: Final = frozenset(
    (
        "counter",
        "gauge",
        "histogram",
        "gaugehistogram",
        "summary",
        "info",
        "stateset",
        "unknown",
    )
)
# The sample names a family of each type takes (metadata), as the OpenMetrics spec names them;
# the family's own name too, as kube-state-metrics writes ``info`` and ``_total`` counters.
_SUFFIXES: Final = {
    "counter": ("", "_total", "_created"),
    "info": ("", "_info"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
}


def _labels(line: str, pos: int, what: str) -> tuple[dict[str, str], int]:
    """``parseLVals`` from ``pos`` (after the brace): the labels, and where the brace closes."""
    labels: dict[str, str] = {}
    first = True
    while True:
        if line.startswith("}", pos):
            return labels, pos + 1
        if not first:
            if not line.startswith(",", pos):
                raise TextError(f"expected comma or right brace in {what}")
            pos += 1
        name = _LABEL_NAME.match(line, pos)
        if name is None:
            raise TextError(f"expected label name in {what}")
        first = False
        pos = name.end()
        if not line.startswith("=", pos):
            raise TextError(f"expected equal after label {name.group()} in {what}")
        value = _LABEL_VALUE.match(line, pos + 1)
        if value is None:
            raise TextError(f"expected label value for {name.group()} in {what}")
        set_label(labels, name.group(), value.group(), what)
        pos = value.end()


def _timestamp_ms(token: str) -> int:
    """A timestamp in seconds (a float) as ms, truncated as Go's int64(ts * 1000); past int64,
    the smallest int64, as that conversion gives on amd64 (a sample from long ago)."""
    seconds = parse_float(token)
    if math.isnan(seconds) or math.isinf(seconds):
        raise TextError("invalid timestamp")
    ms = math.trunc(seconds * 1000)
    return ms if -_INT64 <= ms < _INT64 else -_INT64


def _exemplar(line: str, pos: int, name: str) -> None:
    """An exemplar after a sample (`` # {labels} value [timestamp]``): checked, not kept (a
    scrape keeps no exemplars without Prometheus' exemplar storage)."""
    if not name.endswith(("_total", "_bucket")):
        raise TextError(f"metric name {name} does not support exemplars")
    _, pos = _labels(line, pos + len(_EXEMPLAR), f"the exemplar of {name}")
    value = _TOKEN.match(line, pos)
    if value is None:
        raise TextError(f"expected value after exemplar labels of {name}")
    parse_float(value.group(1))
    if value.end() < len(line):
        stamp = _TOKEN.match(line, value.end())
        if stamp is None:
            raise TextError(f"expected timestamp or comment after the exemplar of {name}")
        if stamp.end() != len(line):
            raise TextError(f"expected next entry after exemplar timestamp of {name}")
        if math.isinf(seconds := parse_float(stamp.group(1))) or math.isnan(seconds):
            raise TextError("invalid exemplar timestamp")


def _sample(line: str) -> TextSample:
    name = _METRIC_NAME.match(line)
    if name is None:
        raise TextError(f'"{line[:40]}" is not a valid start token')
    pos = name.end()
    labels: dict[str, str] = {}
    if line.startswith("{", pos):
        labels, pos = _labels(line, pos + 1, name.group())
    value = _TOKEN.match(line, pos)
    if value is None:
        raise TextError(f"expected value after metric {name.group()}")
    parsed = parse_float(value.group(1))
    pos = value.end()
    timestamp: int | None = None
    if pos < len(line) and not line.startswith(_EXEMPLAR, pos):
        stamp = _TOKEN.match(line, pos)
        if stamp is None:
            raise TextError(f"expected timestamp or # symbol after {name.group()}")
        timestamp = _timestamp_ms(stamp.group(1))
        pos = stamp.end()
        if pos < len(line) and not line.startswith(_EXEMPLAR, pos):
            raise TextError(f"expected next entry after timestamp of {name.group()}")
    if pos < len(line):
        _exemplar(line, pos, name.group())
    return TextSample(name.group(), labels, parsed, timestamp)


def _entries(text: str) -> Iterator[tuple[str, str, str, TextSample | None]]:
    """(kind, name, text, sample) per line up to ``# EOF``, which must end the body."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line == "# EOF":
            rest = lines[index + 1 :]
            if rest not in ([], [""]):
                raise TextError("unexpected data after # EOF")
            return
        if index == len(lines) - 1:
            break  # the body ended without # EOF (a last line without its newline too)
        if line.startswith("#"):
            meta = _META.fullmatch(line)
            if meta is None:
                raise TextError(f'"{line[:40]}" is not a valid start token')
            yield meta.group(1), meta.group(2), meta.group(3), None
            continue
        yield "sample", "", "", _sample(line)
    raise TextError("data does not end with # EOF")


def families(text: str) -> Iterator[tuple[str, str, str, str, list[TextSample]]]:
    """(family name, type, help, unit, samples) of each family: a ``# HELP``, ``# TYPE`` or
    ``# UNIT`` line starts a family of that name, which takes the samples its type names (see
    ``_SUFFIXES``); any other sample is a family of its own, ``unknown``. A family split by
    another is two. Raises ``TextError`` for what Prometheus refuses."""
    name, kind, help_text, unit = "", "unknown", "", ""
    samples: list[TextSample] = []
    allowed: tuple[str, ...] = ()
    for entry, entry_name, body, sample in _entries(text):
        if sample is not None:
            if sample.name in allowed:
                samples.append(sample)
                continue
            if name:
                yield name, kind, help_text, unit, samples
            name, kind, help_text, unit, samples, allowed = "", "unknown", "", "", [], ()
            yield sample.name, "unknown", "", "", [sample]
            continue
        if entry_name != name:
            if name:
                yield name, kind, help_text, unit, samples
            name, kind, help_text, unit, samples = entry_name, "unknown", "", "", []
            allowed = (entry_name,)
        if entry == "HELP":
            help_text = unescaped(body)
        elif entry == "TYPE":
            if body not in _TYPES:
                raise TextError(f'invalid metric type "{body}"')
            kind = body
            allowed = tuple(entry_name + s for s in _SUFFIXES.get(body, ("",)))
        else:
            if body and not (entry_name.endswith("_" + body)):
                raise TextError(f'unit not a suffix of metric "{entry_name}"')
            unit = body
    if name:
        yield name, kind, help_text, unit, samples
