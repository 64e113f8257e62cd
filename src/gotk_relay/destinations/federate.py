"""The embedded ``federate`` destination: the latest sample of each matching series, for scraping.

A Datadog Agent (openmetrics check) or a Prometheus can scrape ``GET /federate`` and get the
rewritten Flux series without any API key in the relay. It is a destination like the others
(it sees the batch after the Flux rules), but in memory and synchronous, so it is never full:
beyond ``max_series`` new series are refused and counted, existing ones keep updating.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..model import Batch, FamilyMetadata, Labels, Sample, is_stale
from ..selectors import Predicate, parse_selectors
from ..wire import text


def _newest(samples: Sequence[Sample]) -> tuple[float, int]:
    newest = max(samples, key=lambda s: s.timestamp)
    return newest.value, newest.timestamp


class FederateStore:
    def __init__(self, match: list[str], max_series: int) -> None:
        self._match = parse_selectors(match)
        self.max_series = max_series
        # [value, timestamp], updated in place: a known series costs one hash of its labels.
        self._latest: dict[Labels, list[Any]] = {}
        self._metadata: dict[str, FamilyMetadata] = {}
        self.refused = 0  # series not stored because the store was full

    def __len__(self) -> int:
        return len(self._latest)

    def update(self, batch: Batch) -> int:
        """Keep the newest sample per matching series; a stale marker removes the series.

        Returns the number of samples refused because the store is full.
        """
        latest = self._latest
        match = self._match
        max_series = self.max_series
        refused = 0
        for series in batch.series:
            samples = series.samples
            if not samples or not match(series.labels):
                continue
            # The newest sample (the first of equals, as max() picks); most series have one.
            value, timestamp = samples[0][:2] if len(samples) == 1 else _newest(samples)
            labels = series.labels
            known = latest.get(labels)
            if known is not None and known[1] > timestamp:
                continue
            if value != value and is_stale(value):
                latest.pop(labels, None)
                continue
            if known is not None:
                known[0] = value
                known[1] = timestamp
            elif len(latest) >= max_series:
                refused += len(samples)
                continue
            else:
                latest[labels] = [value, timestamp]
            if series.metadata is not None:
                name = series.name
                self._metadata[name] = FamilyMetadata(name, *series.metadata)
        for meta in batch.metadata:
            if meta.family in self._metadata or len(self._metadata) < self.max_series:
                self._metadata[meta.family] = meta
        self.refused += refused
        return refused

    def render(self, selectors: Predicate | None = None) -> str:
        """Text format of the stored series (those matching ``selectors`` when given)."""
        points: Iterable[tuple[Labels, float, int | None]] = (
            (labels, value, ts)
            for labels, (value, ts) in sorted(self._latest.items())
            if selectors is None or selectors(labels)
        )
        return text.render(points, self._metadata)
