"""A mapped batch (``Mapped``, ``MappedSeries``, and the ``Row`` lists the hot loop makes
instead), the mapping's options, and what a label set maps to whatever its samples
(``SeriesInfo``, memoized in a ``SeriesMemo``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from ...model import Labels, MetricType
from ..rows import LOOPS
from .counters import CounterMark, counter_key
from .flux import FLUX_KEY, flux_applies, flux_labels
from .kinds import Kind
from .names import series_tags


@dataclass
class MappedSeries:
    """One Datadog series of one Prometheus series, with what committing it means.

    ``marks`` hold, for counters, the counter state after each point; ``final`` the state after
    the series' last sample in the batch (which may be later than its last point, e.g. a first
    observation), committed when the request carrying this series is accepted.
    """

    key: bytes  # the label set's ``counter_key``: its counter state's
    metric: str
    type: int
    tags: Sequence[str]
    host: str
    points: list[tuple[int, float]] = field(default_factory=list)
    marks: Sequence[CounterMark] = field(default_factory=list)
    final: CounterMark | None = None
    interval: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "type": self.type,
            "points": [{"timestamp": ts, "value": value} for ts, value in self.points],
        }
        if self.tags:
            out["tags"] = list(self.tags)
        if self.host:
            out["resources"] = [{"name": self.host, "type": "host"}]
        if self.interval:
            out["interval"] = self.interval
        return out

    def row(self) -> Row:
        """This series as a ``Row`` (its label set's info not kept)."""
        return [
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points,
            self.marks,
            self.final,
            self.interval,
            None,
        ]

    def split(self) -> tuple[MappedSeries, MappedSeries]:
        """Two series holding the first and second half of the points (for a 413)."""
        mid = len(self.points) // 2
        first = MappedSeries(
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points[:mid],
            self.marks[:mid],
            self.marks[mid - 1] if self.marks else None,
            self.interval,
        )
        second = MappedSeries(
            self.key,
            self.metric,
            self.type,
            self.tags,
            self.host,
            self.points[mid:],
            self.marks[mid:],
            self.final,
            self.interval,
        )
        return first, second


@dataclass
class Mapped:
    """A batch in Datadog's terms: the series to send, counter state that no point carries
    (series whose samples were all first observations, too old, ...), and the skipped samples
    by reason."""

    series: list[MappedSeries]
    updates: dict[bytes, CounterMark]
    skipped: Counter[str]


@dataclass(frozen=True)
class MappingOptions:
    host_label: str | None = None
    counters_as_count: bool = True
    static_tags: tuple[str, ...] = ()
    # Name and tag the Flux families as Datadog's Flux check does (``flux``), keeping the
    # ``flux_keep`` labels on them too; the controller families only from targets in the
    # ``flux_namespaces``.
    flux_integration: bool = False
    flux_keep: tuple[str, ...] = ()
    flux_namespaces: frozenset[str] = frozenset(("flux-system",))


# The name of a label set that is not sent at all (``Mapped.skipped``: ``inf_bucket``): not a
# metric name, so no series of another label set resolves to it. It starts with a lone
# surrogate, which no label decoded from a request holds (strict UTF-8: upb, the compiled
# decoder and rw1.decode refuse the bytes that would make one), so no metric name equals it.
OMITTED = "\udc00omitted"

# A mapped series as a list, in ``MappedSeries``' field order (key, metric, type, tags, host,
# points, marks, final, interval), then its label set's ``SeriesInfo`` (None when not
# memoized): the destination's hot loop makes one per series, and a list costs a fraction of a
# dataclass (a ``MappedSeries`` is made only where one is asked for).
Row = list[Any]
# [labels, name, tags, host, the tags' and host's JSON once rendered, (token, metric, kind,
# counted) as last resolved in the conversion of that ``NameCache`` token, ``counter_key``] of
# one label set.
SeriesInfo = list[Any]
Names = dict[tuple[str, MetricType | None], tuple[str | None, Kind]]


class NameCache(Names):
    """The ``names`` of one conversion, with a token by which the label sets' infos remember
    what they resolved to in it (a token, not the cache: an info must not keep it alive)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = object()


class LabelKey(tuple):  # type: ignore[type-arg]
    """A label set (equal to, and hashing as, the plain tuple) whose hash is computed once: a
    memoized series is looked up several times per sample (merging, counter state), and a
    tuple of ~10 pairs hashes its every string again each time."""

    def __init__(self, labels: Labels) -> None:
        self._hash = tuple.__hash__(self)

    def __hash__(self) -> int:
        return self._hash


# The collector stops walking a label set's info and its LabelKey (``_rows.c``'s untrack; nothing
# without it): they hold only strings, numbers, bytes and tuples of them, never a cycle, and a
# full collection walked every memoized one (docs/performance.md, "Memos the collector skips").
_untrack: Callable[[object], None] = (
    LOOPS.compiled.untrack if LOOPS.compiled is not None else lambda obj: None
)


def series_info(labels: Labels, options: MappingOptions) -> SeriesInfo:
    """What a label set maps to whatever its samples: memoized by the caller.

    Its name (``info[1]``) is what the mapper resolves the Datadog name and kind from: the
    Prometheus name; for a series the Flux integration maps, that name after ``FLUX_KEY``
    (so that another job's ``process_*`` series keep their own name), or ``OMITTED`` for one
    it does not send.
    """
    labels = LabelKey(labels)
    name = ""
    for key, value in labels:
        if key == "__name__":
            name = value
            break
    tagged: Labels = labels
    if options.flux_integration and flux_applies(name, labels, options.flux_namespaces):
        keep = options.flux_keep
        if options.host_label is not None:
            keep = (*keep, options.host_label)
        shaped = flux_labels(name, labels, keep)
        if shaped is None:
            name = OMITTED
        else:
            tagged = shaped
            name = FLUX_KEY + name
    tags, host = series_tags(tagged, options.host_label, options.static_tags)
    # A tuple of strings, which the collector stops walking (it walks every memo).
    info = [
        labels,
        name,
        tuple([intern(tag) for tag in tags]),
        host,
        None,
        None,
        counter_key(labels),
    ]
    _untrack(labels)
    _untrack(info)
    return info


def _always(size: int) -> bool:
    return True


class SeriesMemo:
    """The ``SeriesInfo`` of each label set seen, by its encoded bytes (a row's key) and by
    the label set itself: one info per label set, whatever bytes encoded it, so series of one
    label set merge by the info's identity. The owner bounds it: ``learns`` says whether it
    takes one more label set (``map_items`` asks), ``clear`` empties it."""

    def __init__(self, learns: Callable[[int], bool] | None = None) -> None:
        # Whether a memo of this many label sets learns one more (caches.Saturating.learns):
        # a label set it does not learn is mapped afresh each time it comes.
        self.learns: Callable[[int], bool] = learns if learns is not None else _always
        self.by_bytes: dict[bytes, SeriesInfo] = {}
        self.by_labels: dict[Labels, SeriesInfo] = {}
        # The compiled loop's index of by_bytes (``_rows.c``'s key_index), made by map_items
        # when it runs compiled: every entry is one of by_bytes', dropped with it.
        self.index: object | None = None

    def __len__(self) -> int:
        """The label sets held, or the encodings of them if more (either dict may be larger)."""
        return max(len(self.by_labels), len(self.by_bytes))

    def clear(self) -> None:
        self.by_bytes.clear()
        self.by_labels.clear()
        self.index = None


@dataclass
class MappedRows:
    """``Mapped`` with the series as ``Row`` lists."""

    rows: list[Row]
    updates: dict[bytes, CounterMark]
    skipped: Counter[str]
