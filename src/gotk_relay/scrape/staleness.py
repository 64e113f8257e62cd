"""What a scrape writes besides the exposition, as Prometheus 2.x does: a stale marker for
every series the previous scrape wrote and this one does not (all of them when the scrape
failed), and the report series (``up``, ``scrape_duration_seconds``...).

Pure: the caller keeps the set of series written and hands in the scrape's timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Final, NamedTuple

from ..model import STALE_NAN, Labels, Sample, Series

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
