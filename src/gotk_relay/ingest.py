"""The fast path's two halves: scanning a request (stateless) and admitting it (stateful).

``scan`` needs only the request and the configuration: it checks the framing, counts points
and picks the series the rules read, and can run in any process. ``admit`` decodes the picked
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
from .wire import scan
from .wire.labels import TooManySeriesError
from .wire.picked import decode as decode_series


class Scanned(NamedTuple):
    """A v1 request reduced to what admission needs; plain bytes and ints, cheap to pass on."""

    forward: bytes  # snappy block to queue as it is (b"" when nothing is left to forward)
    forward_points: int  # samples + histograms in ``forward``
    picked: list[bytes]  # encoded TimeSeries the rules read, in request order
    metadata: list[bytes]  # encoded MetricMetadata of the request
    inputs_forwarded: bool  # ``picked`` are inside ``forward`` too (the rules keep their inputs)
    size: int  # uncompressed request size, for the memory budget / spool estimate
    scanner: str = "protobuf"  # "c": the compiled survey read it (gotk_relay_scanned_requests)


def scan_request(body: bytes, raw: bytes, limits: ReceiverConfig, fast: FastPath) -> Scanned:
    """Check and reduce a v1 request; ``body`` is its snappy block, ``raw`` that decompressed.

    Raises DecodeError (broken framing) and TooManySeriesError like a full decode would.
    """
    surveyed = scan.survey(raw, fast.names, fast.prefixes)
    if surveyed is not None:  # the shape Prometheus writes, in one pass
        _check_count(surveyed.series, limits)
        if fast.keeps_inputs or not surveyed.picked:  # forwarded whole, as the bytes that came
            metadata = surveyed.metadata if surveyed.picked else []
            return Scanned(body, surveyed.points, surveyed.picked, metadata, True, len(raw), "c")
        request = scan.frame(raw)
        points = surveyed.points
        scanner = "c"
    else:  # anything else: protobuf and RE2, which also word the errors
        scanner = "protobuf"
        request = scan.frame(raw)  # checks the top-level framing
        _check_count(len(request.timeseries), limits)
        points = scan.count_points(raw)  # checks each series' framing
        if fast.keeps_inputs:
            picked = scan.pick(raw, fast.names, fast.prefixes)
            if picked is None:  # a name in a place Prometheus does not write it: the exact way
                series = list(request.timeseries)
                picked = [
                    series[i]
                    for i in scan.select(scan.Split(series, ()), fast.names, fast.prefixes)
                ]
            metadata = list(request.metadata) if picked else []
            return Scanned(body, points, picked, metadata, True, len(raw))
    # flux.keep_source off and series to take out: the others are re-framed and forwarded.
    split = scan.Split(list(request.timeseries), list(request.metadata))
    indices = (
        scan.select(split, fast.names, fast.prefixes) if scan.mentions(raw, fast.watched) else []
    )
    picked = [split.series[i] for i in indices]
    if not picked:
        return Scanned(body, points, [], [], True, len(raw), scanner)
    chosen = set(indices)
    rest = [s for i, s in enumerate(split.series) if i not in chosen]
    rest_points = points - scan.count_points(scan.rebuild(picked))
    forward = compress(scan.rebuild(rest)) if rest else b""
    return Scanned(forward, rest_points, picked, list(split.metadata), False, len(raw), scanner)


def _check_count(count: int, limits: ReceiverConfig) -> None:
    if count > limits.max_series_per_request:
        raise TooManySeriesError(
            f"request has {count} series, over receiver.max_series_per_request "
            f"({limits.max_series_per_request}); send smaller requests"
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
