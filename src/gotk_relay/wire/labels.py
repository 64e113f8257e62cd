"""Label-set rules every remote-write series must follow (spec 1.0 and 2.0 alike), and the
receiver's configurable bounds on what one request may hold.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..model import Labels
from .errors import DecodeError, TooLargeError

_UNLIMITED: Final = sys.maxsize


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoded write must stay within; the default bounds nothing.

    The codecs take them as an argument (rather than reading the configuration) so they stay
    pure functions of their input; the server builds one from ``receiver.*``. Lengths are UTF-8
    bytes, as Mimir and Cortex count them, so a limit means the same thing to every backend.
    """

    max_series: int = _UNLIMITED
    max_labels_per_series: int = _UNLIMITED
    max_label_name_length: int = _UNLIMITED
    max_label_value_length: int = _UNLIMITED
    max_samples: int = _UNLIMITED  # samples + histograms (receiver.max_samples_per_request)
    # A remote write 2.0 request's labels once their symbols are resolved, in bytes as 1.0
    # encodes them (receiver.max_decompressed_bytes): a symbol costs its bytes once in 2.0, and
    # each reference to it costs them again in every copy the relay queues.
    max_expanded_bytes: int = _UNLIMITED

    @property
    def bounds_labels(self) -> bool:
        """Whether any per-series check applies (when not, decoding skips the label loop)."""
        return (
            self.max_labels_per_series != _UNLIMITED
            or self.max_label_name_length != _UNLIMITED
            or self.max_label_value_length != _UNLIMITED
        )


NO_LIMITS: Final = Limits()


class TooManySeriesError(TooLargeError):
    """More series in one request than ``max_series``: answered with 413, like an oversized body.

    The request as a whole is too big, not any series in it: the sender can split it (a smaller
    ``max_samples_per_send``), so the status is the one the other size limits use.
    """


class TooManySamplesError(TooLargeError):
    """More samples + histograms in one request than ``receiver.max_samples_per_request``: 413.

    Like too many series, the request as a whole is too big and the sender can split it.
    """


class LabelLimitError(DecodeError):
    """A series over a per-series label limit: answered with 400 naming the series (as Mimir)."""


def check_series_count(count: int, limits: Limits) -> None:
    """Refuse a request with too many series; called before any series is converted."""
    if count > limits.max_series:
        raise TooManySeriesError(
            f"request has {count} series, over receiver.max_series_per_request "
            f"({limits.max_series}); send smaller requests"
        )


def check_points(count: int, limits: Limits) -> None:
    """Refuse a request with more samples + histograms than ``max_samples``."""
    if count > limits.max_samples:
        raise TooManySamplesError(
            f"request has {count} samples and histograms, over "
            f"receiver.max_samples_per_request ({limits.max_samples}); send smaller requests"
        )


def check_series(labels: Labels, limits: Limits = NO_LIMITS, *, validate: bool = True) -> None:
    """Raise ``LabelLimitError`` for a breached limit, ``DecodeError`` for a spec violation.

    Limits are checked first: they are cheap and bound the work the spec checks then do.
    """
    problem = limit_problem(labels, limits)
    if problem:
        raise LabelLimitError(f"{problem} in series {describe(labels)}")
    if validate:
        problem = label_problem(labels)
        if problem:
            raise DecodeError(f"{problem} in series {describe(labels)}")


def limit_problem(labels: Labels, limits: Limits) -> str | None:
    """Which label limit ``labels`` breaks, or None; the reason names the configuration key."""
    if len(labels) > limits.max_labels_per_series:
        return (
            f"{len(labels)} labels, over receiver.max_labels_per_series "
            f"({limits.max_labels_per_series})"
        )
    max_name, max_value = limits.max_label_name_length, limits.max_label_value_length
    for name, value in labels:
        # Characters are a lower bound of UTF-8 bytes, and equal them for ASCII: the common
        # case costs two len() and two isascii(), no encoding.
        if (
            len(name) > max_name
            or len(value) > max_value
            or not (name.isascii() and value.isascii())
        ):
            problem = _length_problem(name, value, limits)
            if problem:
                return problem
    return None


def _length_problem(name: str, value: str, limits: Limits) -> str | None:
    size = _utf8_len(name)
    if size > limits.max_label_name_length:
        return (
            f"label name {clip(name)!r} of {size} bytes, over "
            f"receiver.max_label_name_length ({limits.max_label_name_length})"
        )
    size = _utf8_len(value)
    if size > limits.max_label_value_length:
        return (
            f"value of label {clip(name)!r} of {size} bytes, over "
            f"receiver.max_label_value_length ({limits.max_label_value_length})"
        )
    return None


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def clip(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else text[: keep - 3] + "..."


def label_problem(labels: Labels) -> str | None:
    """Why ``labels`` is not a valid remote-write label set, or None when it is.

    The rules Prometheus 3 and Mimir apply: non-empty names, no name twice, a non-empty metric
    name (``__name__``). Empty values are allowed (they mean "no such label"), and so is any
    order: the codecs sort a label set (``sort_labels``) rather than refuse it. A receiver that
    stored a refused set would corrupt the destination's index, so the request is refused (400).
    """
    seen: set[str] = set()
    metric: str | None = None
    for name, value in labels:
        if not name:
            return "empty label name"
        if name in seen:
            return f"duplicate label name {quote(name)}"
        seen.add(name)
        if name == "__name__":
            metric = value
    if metric is None:
        return "series without a metric name (__name__)"
    if not metric:
        return "empty metric name (__name__)"
    return None


def is_sorted(labels: Labels) -> bool:
    """Whether the names ascend (strictly, for a set ``label_problem`` accepts)."""
    return all(labels[i][0] < labels[i + 1][0] for i in range(len(labels) - 1))


def sort_labels(labels: Labels) -> Labels:
    """``labels`` in name order; the very tuple when it is in order already.

    Code points order str as UTF-8 bytes order, so this is the order Prometheus sorts in.
    """
    return labels if is_sorted(labels) else tuple(sorted(labels))


def quote(text: str) -> str:
    return '"' + _one_line(text) + '"'


def _one_line(text: str) -> str:
    """Quotes and line breaks escaped, as Go's %q would: a reason stays one readable line."""
    if '"' in text or "\n" in text or "\r" in text:
        return text.replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return text


def describe_raw(pairs: Sequence[tuple[bytes, bytes]]) -> str:
    """``describe`` for label bytes not yet known to be UTF-8 (bad bytes shown as ``\\xNN``)."""
    return describe(
        tuple(
            (name.decode("utf-8", "backslashreplace"), value.decode("utf-8", "backslashreplace"))
            for name, value in pairs
        )
    )


def describe(labels: Labels) -> str:
    """``name{a="b"}`` for error messages; long sets are cut so a reason stays one line."""
    name = next((v for k, v in labels if k == "__name__"), "")
    rest = ",".join(f'{_one_line(k)}="{_one_line(v)}"' for k, v in labels[:100] if k != "__name__")
    text = f"{_one_line(name)}{{{rest}}}"
    return text if len(text) <= 200 else text[:197] + "..."
