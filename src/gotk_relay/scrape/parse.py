"""One scrape's exposition as what Prometheus 2.x would append: the text format or OpenMetrics
(chosen by ``Content-Type``, as Prometheus negotiates) read as Prometheus 2.42 reads them
(``promtext.py``, ``openmetrics.py``), the target's labels merged in (``honor_labels``),
``metric_relabel_configs`` applied, the limits checked.

Pure: no I/O, no clock; the scrape's timestamp is an argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

from ..model import NORMAL_NAN, FamilyMetadata, Labels, MetricType, Sample, Series
from ..rules.relabel import RuleSet
from ..wire.text import TYPES
from .openmetrics import families as openmetrics_families
from .promtext import families as text_families

OPENMETRICS: Final = "application/openmetrics-text"

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Prometheus' scrape appender refuses samples more than this far ahead of its clock (the
# scrape's start here), without failing the scrape (``maxAheadTime``, ``timeLimitAppender``).
MAX_AHEAD_MS: Final = 10 * 60 * 1000
_METRIC_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class ScrapeError(Exception):
    """Why a scrape failed; ``reason`` is a short token for metrics and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Limits(NamedTuple):
    """The job's per-scrape limits; 0 is no limit, as in Prometheus."""

    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0


NO_LIMITS: Final = Limits()


class Scraped(NamedTuple):
    """What one successful scrape appends, before staleness and the report series."""

    series: tuple[Series, ...]  # one sample each, after metric relabeling
    metadata: tuple[FamilyMetadata, ...]
    samples_scraped: int  # in the exposition, before metric relabeling
    timestamped: frozenset[Labels]  # series with their own timestamp: not tracked for staleness
    samples_post_relabeling: int = 0  # lines left by metric relabeling, duplicates included
    too_far_ahead: int = 0  # samples left out: their own timestamp over MAX_AHEAD_MS ahead


def is_openmetrics(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == OPENMETRICS


def merge_labels(scraped: Mapping[str, str], target: Labels, honor_labels: bool) -> Labels:
    """A scraped sample's labels with the target's, as Prometheus' ``mutateSampleLabels``.

    ``honor_labels: false``: a scraped label that clashes with a target label is kept as
    ``exported_<name>`` (``exported_exported_<name>`` if that is taken too), and the target's
    value is set. ``true``: the scraped value wins; the target's is set only where the scraped
    one is absent (a label exposed with an empty value counts as present, and then is dropped
    with the other empty values: the target's is not set). Empty values are dropped.
    """
    labels = {name: value for name, value in scraped.items() if value != ""}
    for name, value in target:
        if honor_labels:
            if name not in scraped:
                labels[name] = value
            continue
        existing = labels.get(name)
        if existing:
            renamed = f"exported_{name}"
            while renamed in labels:
                renamed = f"exported_{renamed}"
            labels[renamed] = existing
        labels[name] = value
    return tuple(sorted(labels.items()))


def _timestamp_ms(value: Any) -> int:
    """A parsed sample's timestamp in ms: the text format's as written (an int, ms), or
    OpenMetrics' (seconds: a float, or a ``Timestamp``)."""
    if isinstance(value, int):
        return value
    sec = getattr(value, "sec", None)
    if sec is not None:
        return int(sec) * 1000 + int(value.nsec) // 1_000_000
    return round(float(value) * 1000)


def _families(text: str, openmetrics: bool) -> Iterator[tuple[str, str, str, str, list[Any]]]:
    """(family name for metadata, type, help, unit, samples) of each family in ``text``."""
    if openmetrics:
        # A family's ``_created`` samples are series of their own, as Prometheus appends them
        # (it skips them only with created-timestamp ingestion, a feature flag).
        yield from openmetrics_families(text)
        return
    for name, kind, help_text, samples in text_families(text):
        yield name, kind, help_text, "", samples


def parse(
    body: bytes,
    content_type: str,
    scrape_ms: int,
    target: Labels,
    *,
    honor_labels: bool = False,
    honor_timestamps: bool = True,
    rules: RuleSet | None = None,
    limits: Limits = NO_LIMITS,
) -> Scraped:
    """The series one scrape appends, or ``ScrapeError`` (the scrape fails as a whole)."""
    # Bytes that are not UTF-8 are kept as lone surrogates: Prometheus skips a plain comment
    # unread and refuses them only where it reads text (a name, a label value, a HELP).
    text = body.decode("utf-8", "surrogateescape")
    openmetrics = is_openmetrics(content_type)
    series: dict[Labels, Series] = {}
    timestamped: set[Labels] = set()
    metadata: list[FamilyMetadata] = []
    scraped = 0
    appended = 0  # samples after metric relabeling, each line counted (duplicates too)
    ahead = 0
    try:
        families = list(_families(text, openmetrics))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        kind = "OpenMetrics" if openmetrics else "text"
        raise ScrapeError(
            "parse", f"invalid {kind} exposition: {exc or type(exc).__name__}"
        ) from None
    described: set[str] = set()
    for family, kind, help_text, unit, samples in families:
        _utf8(help_text, f"the HELP of {family!r}")
        kept = False
        for sample in samples:
            if getattr(sample, "native_histogram", None) is not None:
                continue  # Prometheus 2.42 does not scrape native histograms from text
            _utf8(sample.name, "a metric name")
            for label_name, label_value in sample.labels.items():
                _utf8(label_name, "a label name")
                _utf8(label_value, f"the value of label {label_name!r}")
            scraped += 1
            labels = _labels(sample.name, sample.labels, target, honor_labels, rules)
            if labels is None:  # dropped by a rule
                continue
            appended += 1
            if labels in series:  # a duplicate: the first wins, as the receiver keeps it
                continue
            ts = scrape_ms
            if honor_timestamps and sample.timestamp is not None:
                ts = _timestamp_ms(sample.timestamp)
                if ts > scrape_ms + MAX_AHEAD_MS:
                    # Not appended, so a later line of the series may be; its labels are
                    # judged first, as Prometheus checks them before the append refuses it.
                    _check(labels, limits)
                    ahead += 1
                    continue
                timestamped.add(labels)
            value = float(sample.value)
            if value != value:
                value = NORMAL_NAN  # what Go's strconv.ParseFloat gives for "NaN"
            series[labels] = Series(labels, (Sample(value, ts),))
            kept = True
        mtype = TYPES.get(kind, MetricType.UNKNOWN)
        says_nothing = mtype is MetricType.UNKNOWN and not help_text and not unit
        if kept and not says_nothing and family not in described:
            # A family split in two is described once. One with neither a type, a help nor a
            # unit (samples without comment lines) has no metadata, as in Prometheus' cache.
            described.add(family)
            metadata.append(FamilyMetadata(family, mtype, help_text, unit))
    if limits.sample_limit and appended > limits.sample_limit:
        # Every line appended counts, a duplicate too, as Prometheus' limit appender counts.
        raise ScrapeError(
            "sample_limit",
            f"sample limit exceeded: {appended} samples after metric relabeling, "
            f"sample_limit is {limits.sample_limit}",
        )
    for labels in series:
        _check(labels, limits)
    return Scraped(
        tuple(series.values()), tuple(metadata), scraped, frozenset(timestamped), appended, ahead
    )


def _utf8(text: str, what: str) -> None:
    """Fail the scrape, as Prometheus' parser does, when ``text`` held bytes that are not
    UTF-8 (decoded with ``surrogateescape``)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ScrapeError(
                "parse", f"the exposition is not valid UTF-8: in {what} (byte {exc.start})"
            ) from None


def _labels(
    name: str,
    scraped: Mapping[str, str],
    target: Labels,
    honor_labels: bool,
    rules: RuleSet | None,
) -> Labels | None:
    merged = merge_labels({**scraped, "__name__": name}, target, honor_labels)
    if not rules:
        return merged
    out = rules.apply(merged, keep_nameless=True)
    if not out:  # no label left: dropped, as Prometheus drops an empty label set
        return None
    if not any(label == "__name__" for label, _ in out):
        # Prometheus fails the scrape ("missing metric name"); dropping it would be silent.
        raise ScrapeError(
            "parse", f"metric_relabel_configs left a series without __name__: {dict(merged)}"
        )
    return out


def _check(labels: Labels, limits: Limits) -> None:
    """Names valid in the legacy scheme (what every remote-write receiver takes), and the
    job's label limits; a breach fails the scrape, as in Prometheus."""
    if limits.label_limit and len(labels) > limits.label_limit:
        raise ScrapeError(
            "label_limit",
            f"label_limit exceeded: {len(labels)} labels, the limit is {limits.label_limit}",
        )
    for name, value in labels:
        if name == "__name__":
            if not _METRIC_NAME.match(value):
                raise ScrapeError("parse", f'invalid metric name "{value}"')
        elif not _LABEL_NAME.match(name):
            raise ScrapeError("parse", f'invalid label name "{name}"')
        # Lengths in bytes (UTF-8), as Go's len() counts them.
        if limits.label_name_length_limit and len(name.encode()) > limits.label_name_length_limit:
            raise ScrapeError(
                "label_limit",
                f'label name "{name}" is longer than label_name_length_limit '
                f"({limits.label_name_length_limit})",
            )
        if (
            limits.label_value_length_limit
            and len(value.encode()) > limits.label_value_length_limit
        ):
            raise ScrapeError(
                "label_limit",
                f'the value of label "{name}" is longer than label_value_length_limit '
                f"({limits.label_value_length_limit})",
            )
