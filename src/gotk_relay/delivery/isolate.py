"""Splitting a refused request to find the series a destination keeps refusing (pure functions).

A request is a list of entries. It is halved at entry boundaries first (no decoding), and a
single entry is halved by series (decoded with the project's codecs and re-encoded in the same
message, tenant kept). Halves keep the order of what they came from: the first half holds every
series' earlier samples, so sending halves in order never lets a series' samples overtake each
other. The smallest unit is one entry holding one series (or metadata only).
"""

from __future__ import annotations

from ..model import Batch
from .entry import Entry, decode_entry, encode_entry

MAX_LABELS_TEXT = 300  # a log line names the series, cut so it stays one short line


def split(entries: list[Entry]) -> tuple[list[Entry], list[Entry]] | None:
    """Two halves of ``entries`` in order, or None when it is one series (cannot be split)."""
    if len(entries) > 1:
        middle = len(entries) // 2
        return entries[:middle], entries[middle:]
    if not entries:
        return None
    entry = entries[0]
    batch = decode_entry(entry)
    if len(batch.series) < 2:
        return None
    middle = len(batch.series) // 2
    first = Batch(batch.series[:middle], batch.metadata)
    second = Batch(batch.series[middle:], ())
    return [_encode(first, entry)], [_encode(second, entry)]


Labels = tuple[tuple[str, str], ...]


def series_of(entries: list[Entry]) -> set[Labels]:
    """The label sets of the series in ``entries``."""
    return {series.labels for entry in entries for series in decode_entry(entry).series}


def separate(entries: list[Entry], held: set[Labels]) -> tuple[list[Entry], list[Entry]]:
    """``entries`` without the series in ``held``, and those series on their own, both in order.

    Isolation holds back the later samples of a series it suspects until it has judged the
    earlier ones, so that a suspect delivered at its last try never lands behind them.
    Metadata stays with the first part.
    """
    rest: list[Entry] = []
    later: list[Entry] = []
    for entry in entries:
        batch = decode_entry(entry)
        kept = tuple(s for s in batch.series if s.labels not in held)
        if len(kept) == len(batch.series):
            rest.append(entry)
            continue
        if kept or batch.metadata:
            rest.append(_encode(Batch(kept, batch.metadata), entry))
        taken = tuple(s for s in batch.series if s.labels in held)
        later.append(_encode(Batch(taken, ()), entry))
    return rest, later


def _encode(batch: Batch, like: Entry) -> Entry:
    # spool_id stays 0: the spool row is the original entry's, deleted when the shard is done.
    return encode_entry(batch, like.protocol, like.tenant)


def describe(entries: list[Entry]) -> str:
    """The series of ``entries`` as Prometheus writes label sets, cut to one short line."""
    names: list[str] = []
    for entry in entries:
        for series in decode_entry(entry).series:
            names.append(labels_text(series.labels))
    text = ", ".join(names) if names else "(metadata only)"
    return text if len(text) <= MAX_LABELS_TEXT else text[: MAX_LABELS_TEXT - 1] + "…"


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    pairs = ",".join(f"{name}={_quote(value)}" for name, value in labels)
    return "{" + pairs + "}"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
