"""The fast path's two halves: scanning a request (stateless) and admitting it (stateful).

``scan`` needs only the request and the configuration: it checks the request (strictly, unless
``receiver.validation: framing``), counts points, sorts unsorted label sets and picks the series
the rules read, and can run in any process. ``admit`` decodes the picked
series and runs the rules and the queues, which hold state (Flux objects, per-series order), so
it runs where that state lives. The split is what lets ingest scale over cores without moving
any state (see docs/scaling.md).
"""

from __future__ import annotations

from typing import NamedTuple

from .config import ReceiverConfig
from .delivery.entry import V1, Entry, compress
from .fastpath import FastPath
from .ingress import limits_of
from .model import Batch
from .relay import Admission, Relay
from .wire import scan, validate
from .wire.picked import decode as decode_series


class Scanned(NamedTuple):
    """A v1 request reduced to what admission needs; plain bytes and ints, cheap to pass on."""

    forward: bytes  # snappy block to queue as it is (b"" when nothing is left to forward)
    forward_points: int  # samples + histograms in ``forward``
    picked: list[bytes]  # encoded TimeSeries the rules read, in request order
    metadata: list[bytes]  # encoded MetricMetadata of the request
    inputs_forwarded: bool  # ``picked`` are inside ``forward`` too (the rules keep their inputs)
    size: int  # uncompressed request size, for the memory budget / spool estimate
    scanner: str = "python"  # "c": the compiled survey read it (gotk_relay_scanned_requests)
    sorted: int = 0  # series whose labels came unsorted and are forwarded sorted


def scan_request(body: bytes, raw: bytes, limits: ReceiverConfig, fast: FastPath) -> Scanned:
    """Check and reduce a v1 request; ``body`` is its snappy block, ``raw`` that decompressed.

    Raises DecodeError/LabelLimitError (400) and TooManySeriesError/TooManySamplesError (413),
    worded by ``validate.survey``, for a request the compiled survey refused. With
    ``receiver.validation: framing`` only the framing and the counts are checked.
    """
    bounds = limits_of(limits)
    strict = limits.validation != "framing"
    surveyed = scan.survey(raw, fast.names, fast.prefixes, bounds, strict=strict)
    scanner = "c"
    if not isinstance(surveyed, scan.Survey):
        # Refused: the reference words why, starting at the series the walk refused. Without
        # the extension (None) it does the whole check and answers what the walk would.
        suspect = -1 if surveyed is None else surveyed.series
        surveyed = validate.survey(raw, fast.names, fast.prefixes, bounds, suspect=suspect)
        scanner = "python"
    forward_raw = surveyed.raw
    if fast.keeps_inputs or not surveyed.picked:  # forwarded whole
        metadata = surveyed.metadata if surveyed.picked else []
        # The body as it came when no label set needed sorting, else the sorted copy.
        block = body if forward_raw is raw else compress(forward_raw)
        return Scanned(
            block,
            surveyed.points,
            surveyed.picked,
            metadata,
            True,
            len(raw),
            scanner,
            surveyed.sorted,
        )
    # flux.keep_source off and series to take out: the others are re-framed and forwarded.
    # A series picked is taken out wherever its bytes occur (the same bytes: the same series).
    taken = set(surveyed.picked)
    rest = [s for s in scan.frame(forward_raw).timeseries if s not in taken]
    rest_points = surveyed.points - scan.count_points(scan.rebuild(surveyed.picked))
    forward = compress(scan.rebuild(rest)) if rest else b""
    return Scanned(
        forward,
        rest_points,
        surveyed.picked,
        surveyed.metadata,
        False,
        len(raw),
        scanner,
        surveyed.sorted,
    )


def decode_picked(scanned: Scanned, limits: ReceiverConfig) -> Batch:
    """The picked series as a batch, their labels checked (LabelLimitError, DecodeError)."""
    if not scanned.picked:
        return Batch()
    return decode_series(scanned.picked, scanned.metadata, limits_of(limits))


def admit(relay: Relay, scanned: Scanned, picked: Batch, now_ms: int) -> Admission:
    """Queue a scanned request everywhere or nowhere (``Relay.admit``); raises SpoolError."""
    forward = (
        Entry(scanned.forward, V1, scanned.forward_points, now_ms) if scanned.forward else None
    )
    return relay.admit(
        picked, now_ms, scanned.size, forward, inputs_forwarded=scanned.inputs_forwarded
    )
