"""What a scrape writes besides the exposition, as Prometheus 2.x does: a stale marker for
every series the previous scrape wrote and this one does not (all of them when the scrape
failed), and the report series (``up``, ``scrape_duration_seconds``...).

Pure: the caller keeps the series written (``append`` says what they are once its batch is
queued) and hands in the scrape's timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Final, NamedTuple

from ..model import STALE_NAN, Batch, Labels, Sample, Series
from .parse import Scraped

REPORT_NAMES: Final = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)


class Report(NamedTuple):
    up: bool
    duration_s: float
    samples_scraped: int = 0
    samples_post_relabeling: int = 0
    series_added: int = 0


def stale_markers(previous: Iterable[Labels], current: Set[Labels], ts: int) -> tuple[Series, ...]:
    """A stale marker at ``ts`` for each series of ``previous`` not in ``current``, in order."""
    return tuple(
        Series(labels, (Sample(STALE_NAN, ts),)) for labels in previous if labels not in current
    )


def report_series(target: Labels, report: Report, ts: int) -> tuple[Series, ...]:
    """The five series Prometheus writes for each scrape, with the target's labels."""
    values = (
        1.0 if report.up else 0.0,
        report.duration_s,
        float(report.samples_scraped),
        float(report.samples_post_relabeling),
        float(report.series_added),
    )
    return tuple(
        Series(report_labels(target, name), (Sample(value, ts),))
        for name, value in zip(REPORT_NAMES, values, strict=True)
    )


def report_labels(target: Labels, name: str) -> Labels:
    return tuple(sorted((*(kv for kv in target if kv[0] != "__name__"), ("__name__", name))))


def series_added(previous: Set[Labels], current: Iterable[Labels]) -> int:
    """Series of this scrape that the previous one did not write."""
    return sum(1 for labels in current if labels not in previous)


class Appended(NamedTuple):
    batch: Batch  # the scrape's samples, the stale markers, the report series, in that order
    written: dict[Labels, None]  # the series live once ``batch`` is written


def append(
    written: Mapping[Labels, None],
    scraped: Scraped | None,
    target: Labels,
    ts: int,
    duration_s: float,
) -> Appended:
    """What one scrape appends after the series in ``written`` (those whose last written value
    is not a stale marker): ``scraped`` is None when the scrape failed. A series with its own
    timestamp is written but not tracked (Prometheus 2.x does not stale it)."""
    samples = scraped.series if scraped is not None else ()
    timestamped = scraped.timestamped if scraped is not None else frozenset()
    current = {s.labels: None for s in samples if s.labels not in timestamped}
    report = Report(
        scraped is not None,
        duration_s,
        scraped.samples_scraped if scraped is not None else 0,
        scraped.samples_post_relabeling if scraped is not None else 0,
        series_added(written.keys(), current) if scraped is not None else 0,
    )
    reports = report_series(target, report, ts)
    current.update((s.labels, None) for s in reports)
    stale = stale_markers(written, current.keys(), ts)
    metadata = scraped.metadata if scraped is not None else ()
    return Appended(Batch((*samples, *stale, *reports), metadata), current)
