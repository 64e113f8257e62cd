"""Stage 2 of the write path: scanning a remote write 1.0 request, on its bytes.

``scan_request`` needs only the request and the configuration: it checks the request (strictly,
unless ``receiver.validation: framing``), counts points, sorts unsorted label sets, applies the
global relabel rules, picks the series the Flux rules read and routes the request to every
destination (their rules, shards, tenants and message: ``routing``), and can run in any
process. Admission (``admission.py``) then decodes the picked series and runs the Flux rules and
the queues, which hold state, where that state lives. The split is what lets the write path
scale over cores without moving any state (see docs/scaling.md).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import NamedTuple

from ..access import limits_of
from ..config import ReceiverConfig
from ..model import Batch, Protocol
from ..wire import rw1_bytes, rw2, validate
from ..wire.errors import DecodeError
from ..wire.labels import NO_LIMITS, Limits
from ..wire.picked import decode as decode_series
from ..wire.snappy import compress
from .routing import Routed, Router
from .views import FastPath, View

AS_RECEIVED = -1
"""``Part.newest_ms`` of the request as it came: its newest timestamp is not read (admission
time stands for it, as for every forwarded block)."""


class Part(NamedTuple):
    """What one shard (of one tenant) of a destination gets from a request: an entry to be."""

    tenant: str
    shard: int
    payload: bytes  # snappy block of a WriteRequest (Protocol.V1) or a v2 Request (Protocol.V2)
    protocol: Protocol
    points: int
    newest_ms: int  # AS_RECEIVED for the request itself


class Routing(NamedTuple):
    """One view's share of a request: its parts, their points, and what it drops."""

    parts: tuple[Part, ...]
    points: int
    orphaned: int  # points without a tenant (dropped, counted as no_tenant)
    dropped: int = 0  # points of series the view's write_relabel_configs dropped


class Scanned(NamedTuple):
    """A v1 request reduced to what admission needs; plain bytes and ints, cheap to pass on."""

    forward: bytes  # snappy block after the global rules (b"" when nothing is left to forward)
    forward_points: int  # samples + histograms in ``forward``
    picked: list[bytes]  # encoded TimeSeries the rules read, in request order
    metadata: list[bytes]  # encoded MetricMetadata of the request
    inputs_forwarded: bool  # ``picked`` are inside ``forward`` too (the rules keep their inputs)
    size: int  # uncompressed request size, for the memory budget / spool estimate
    scanner: str = "python"  # "c": the compiled survey read it (gotk_relay_scanned_requests)
    sorted: int = 0  # series whose labels came unsorted and are forwarded sorted
    points: int = 0  # samples + histograms received (before any rule)
    # Per destination that does not take ``forward`` as it is: its share. Destinations that
    # see alike share one Routing object.
    routes: dict[str, Routing] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
    # The request held family metadata (every part of it may): else its entries say none.
    families: bool = True
    relabel_dropped: int = 0  # samples + histograms the global relabel_configs dropped


class Surveyor(typing.Protocol):
    """Checks a request and answers what the fast path needs of it (``rw1_bytes.Survey``), or
    raises the worded 4xx error; and says which implementation read it (for telemetry)."""

    def __call__(
        self, raw: bytes, fast: FastPath, bounds: Limits, strict: bool
    ) -> tuple[rw1_bytes.Survey, str]: ...


# A refused request larger than this is worded off the event loop (``Unworded``): the
# reference walks its top-level fields in Python, ≈1.3 µs a series (0.27 s for 200,000).
WORD_IN_THREAD = 256 * 1024


class Unworded(Exception):
    """The compiled walk refused a large request; ``word()`` raises the worded 4xx error
    (``validate.survey``'s), which its caller runs off the event loop."""

    def __init__(self, word: Callable[[], object]) -> None:
        super().__init__("a refused request to be worded")
        self.word = word


def survey_compiled(
    raw: bytes, fast: FastPath, bounds: Limits, strict: bool
) -> tuple[rw1_bytes.Survey, str]:
    """The compiled walk (``_survey.c``); a request it refuses is worded by the reference,
    which starts at the series the walk refused (for a request over ``WORD_IN_THREAD`` bytes,
    by the caller, through ``Unworded``). Only where the extension is built."""
    surveyed = rw1_bytes.survey(
        raw, fast.names, fast.prefixes, bounds, strict=strict, table=strict and fast.tabled
    )
    if isinstance(surveyed, rw1_bytes.Survey):
        return surveyed, "c"
    suspect = -1 if surveyed is None else surveyed.series

    def word() -> rw1_bytes.Survey:
        return validate.survey(raw, fast.names, fast.prefixes, bounds, suspect=suspect)

    if len(raw) > WORD_IN_THREAD:
        raise Unworded(word)
    return word(), "python"


def survey_python(
    raw: bytes, fast: FastPath, bounds: Limits, strict: bool
) -> tuple[rw1_bytes.Survey, str]:
    """The pure-Python reference: the whole check (strict whatever ``strict`` says)."""
    return validate.survey(raw, fast.names, fast.prefixes, bounds), "python"


# The one switch between the two; tests run both by name.
SURVEY: Surveyor = survey_compiled if rw1_bytes.NATIVE else survey_python


def scan_request(
    body: bytes | None,
    raw: bytes,
    limits: ReceiverConfig,
    fast: FastPath,
    survey: Surveyor = SURVEY,
    strict: bool | None = None,
) -> Scanned:
    """Check, reduce and route a v1 request; ``body`` is its snappy block (None: none came, it
    is compressed here when needed), ``raw`` that decompressed.

    Raises DecodeError/LabelLimitError (400) and TooManySeriesError/TooManySamplesError (413),
    worded by ``validate.survey``, for a request the survey refused. With
    ``receiver.validation: framing`` only the framing and the counts are checked, unless
    ``strict`` says otherwise.
    """
    bounds = limits_of(limits)
    if strict is None:
        strict = limits.validation != "framing"
    surveyed, scanner = survey(raw, fast, bounds, strict)
    received = surveyed.points
    forward_raw = surveyed.raw
    # The body as it came when no label set needed sorting and no global rule changed it.
    block: bytes | None = body if body is not None and forward_raw is raw else None
    picked, metadata, points = surveyed.picked, surveyed.metadata, surveyed.points
    relabel_dropped = 0
    if fast.relabel is not None:
        # Compressed as the walk fills it where nothing after reads the rewritten request
        # itself (another view to route, a second survey, keep_source off): the block queued.
        packed = _relabeled_block_only(fast)
        relabeled = fast.relabel.route(
            forward_raw,
            presorted=strict,
            points=points,
            table=surveyed.table,
            compress=compress if packed else None,
        )
        relabel_dropped = relabeled.dropped
        if relabeled.groups is not None:
            block = None
            forward_raw = relabeled.groups[0].body if relabeled.groups else b""
            points = relabeled.groups[0].points if relabeled.groups else 0
            if packed:
                block, forward_raw = forward_raw, b""
            if not fast.watched:
                picked, metadata = [], []
            elif fast.relabel.keeps_names:
                # The rules name no series anew: the watched series they left are the picked
                # ones routed (a few), not a second survey of the whole request.
                picked = _relabeled(fast.relabel, picked, strict)
            else:
                picked, metadata = _pick(forward_raw, fast)
    inputs_forwarded = fast.keeps_inputs or not picked
    if not inputs_forwarded:
        # flux.keep_source off: the series the rules read are taken out of what is forwarded.
        # A series picked is taken out wherever its bytes occur (the same bytes: the same series).
        # The request's metadata stay with the rest (every tenant of it gets them, as on the
        # decoded path); the rules' own families come with their output.
        taken = set(picked)
        framed = rw1_bytes.frame(forward_raw)
        rest = [s for s in framed.timeseries if s not in taken]
        points -= rw1_bytes.count_points(rw1_bytes.rebuild(picked))
        forward_raw = rw1_bytes.rebuild(rest, framed.metadata) if rest or framed.metadata else b""
        block = None
    routes: dict[str, Routing] = {}
    shared: dict[int, Routing] = {}
    for name, view in fast.views.items():
        if view.as_received:
            continue
        routing = shared.get(id(view))
        if routing is None:
            # The series table describes the request as surveyed, not one the rules changed.
            table = surveyed.table if forward_raw is surveyed.raw else b""
            routing = shared[id(view)] = _route(view, forward_raw, block, points, strict, table)
        routes[name] = routing
    if not _forwarded(fast):
        block = b""
    elif block is None:
        block = compress(forward_raw) if forward_raw else b""
    return Scanned(
        block,
        points,
        picked,
        metadata,
        inputs_forwarded,
        len(raw),
        scanner,
        surveyed.sorted,
        received,
        routes,
        bool(surveyed.metadata),
        relabel_dropped,
    )


def scan_v2(
    raw: bytes, limits: ReceiverConfig, fast: FastPath
) -> tuple[Scanned, rw2.Converted] | None:
    """A remote write 2.0 request on the fast path: as 1.0 (``rw2.to_v1``), scanned strictly
    whatever ``receiver.validation`` says (2.0 is always checked in full), with what it holds;
    None when it must be decoded instead: 1.0 cannot carry it as the decoded path does (start
    or created timestamps), its labels once resolved are over
    ``receiver.max_decompressed_bytes``, or it is refused (``rw2.decode_counted`` then words
    the refusal in 2.0's terms: ``timeseries[3].labels_refs``)."""
    convert = rw2.to_v1
    if convert is None:
        return None
    converted = convert(raw, limits_of(limits).max_expanded_bytes)
    if converted is None:
        return None
    try:
        try:
            return scan_request(None, converted.v1, limits, fast, strict=True), converted
        except Unworded as refused:
            refused.word()  # raises: a limit as 1.0 words it, a DecodeError for 2.0's words
            raise AssertionError("a refused request worded without an error") from None
    except DecodeError:
        return None


def _relabeled_block_only(fast: FastPath) -> bool:
    """Whether, after the global rules, only the compressed block of the request they leave
    is needed: every destination takes it as it is, the rules read only series the global
    rules cannot rename (no second survey) and keep them (``flux.keep_source``)."""
    return (
        bool(fast.views)
        and all(v.as_received for v in fast.views.values())
        and fast.keeps_inputs
        and (not fast.watched or (fast.relabel is not None and fast.relabel.keeps_names))
    )


def _forwarded(fast: FastPath) -> bool:
    """Whether some destination takes the (globally relabeled) request as it is."""
    return not fast.views or any(v.as_received for v in fast.views.values())


def _relabeled(router: Router, picked: list[bytes], strict: bool) -> list[bytes]:
    """The series ``picked`` as the global rules leave them, in order (those they drop left out)."""
    if not picked:
        return []
    routed = router.route(rw1_bytes.rebuild(picked), presorted=strict)
    if routed.groups is None:
        return picked
    return [bytes(s) for g in routed.groups for s in rw1_bytes.frame(g.body).timeseries]


def _pick(raw: bytes, fast: FastPath) -> tuple[list[bytes], list[bytes]]:
    """The series the rules read in a request the global rules rewrote (checked already)."""
    found = rw1_bytes.survey(raw, fast.names, fast.prefixes, NO_LIMITS, strict=False)
    if not isinstance(found, rw1_bytes.Survey):
        found = validate.survey(raw, fast.names, fast.prefixes, NO_LIMITS)
    return found.picked, found.metadata


def _route(
    view: View, raw: bytes, block: bytes | None, points: int, strict: bool, table: bytes = b""
) -> Routing:
    """A view's parts, in remote write 1.0 whatever the destination speaks: queued 1.0 entries
    merge as compressed blocks, and a 2.0 destination converts each merged request once
    (``delivery.entry.request_body``)."""
    # Each part compressed by the walk as it fills it (routing.Router.route_compiled).
    routed = (
        view.router.route(raw, presorted=strict, points=points, table=table, compress=compress)
        if raw
        else Routed(())
    )
    if routed.groups is None:  # the request as it is
        payload = block if block is not None else compress(raw)
        return Routing((Part("", 0, payload, Protocol.V1, points, AS_RECEIVED),), points, 0)
    parts = tuple(
        Part(
            g.tenant,
            g.shard,
            g.body if routed.compressed else compress(g.body),
            Protocol.V1,
            g.points,
            g.newest_ms,
        )
        for g in routed.groups
    )
    return Routing(parts, sum(g.points for g in routed.groups), routed.orphaned, routed.dropped)


def decode_picked(scanned: Scanned, limits: ReceiverConfig) -> Batch:
    """The picked series as a batch, with the request's family metadata (which the federate
    store keeps, also from the metadata-only requests Prometheus sends), their labels checked
    (LabelLimitError, DecodeError)."""
    if not scanned.picked and not scanned.metadata:
        return Batch()
    return decode_series(scanned.picked, scanned.metadata, limits_of(limits))
