"""What one ``rewrite()`` call writes: the synthesized series, and their remote write bytes."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Final, Protocol

from ...model import FamilyMetadata, Labels, Metadata, Sample, Series
from .names import (
    CONDITION_METADATA,
    INFO_METADATA,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    SUSPEND_METADATA,
    SUSPEND_STATUS,
)
from .state import NEVER, InfoObject, InfoSeries, Pieces, Values

Families = tuple[tuple[str, Metadata], ...]  # the families of an Outputs, in order
FORWARD: Final[Families] = (
    (RECONCILE_CONDITION, CONDITION_METADATA),
    (SUSPEND_STATUS, SUSPEND_METADATA),
)
INFO: Final[Families] = ((RESOURCE_INFO, INFO_METADATA),)
# The metadata rewrite() adds to a batch whose forward objects wrote outputs.
FORWARD_FAMILIES: Final = tuple(
    FamilyMetadata(family, meta.type, meta.help, meta.unit) for family, meta in FORWARD
)

# The NamedTuples' own __new__ spells out every default by keyword; the output is built per
# sample, so it is made with tuple.__new__ and every field given (the same values either way).
_new = tuple.__new__


class SeriesEncoder(Protocol):
    """The remote write 1.0 encoder, as far as the rules write their outputs' bytes (``wire.rw1``).

    Handed in by whoever builds the rewriter, so that the rules do not depend on the wire.
    """

    STAMP_FIELD_LEN: int  # what series_pieces assumes timestamp_field gives

    def timestamp_field(self, timestamp: int) -> bytes: ...

    def series_pieces(
        self, labels: Sequence[Labels], values: Sequence[float]
    ) -> tuple[tuple[bytes, ...], ...] | None: ...


# Where each output's timestamp field goes in the pieces ``prefixes`` keeps: one buffer, filled
# with a call's timestamp field (``stamped``) just before its pieces are joined, so that a
# scrape's outputs are one ``b"".join`` of pieces kept per object and the buffer. The rules run
# on the event loop only; nothing holds the buffer between a fill and its join.
SLOT: Final = bytearray()
_COMMON_MAX: Final = 4096  # pieces shared by every object (headers, names, statuses) at most
_common: dict[bytes, bytes] = {}
# Label names that tell one object from the others of its kind and namespace: the runs of
# shared labels are cut around them, and the runs without them (its source's scrape labels,
# its namespace and kind) are kept once for every object that has them, up to _RUNS_MAX_BYTES.
IDENTITY: Final = frozenset(("name",))
_RUNS_MAX_BYTES: Final = 8 << 20


class _Runs:
    """Runs of label fields equal across objects, one bytes object each, bounded in bytes:
    once full, a new run is kept by its object alone, as every run was before. A run stays
    until the process ends (the objects that had it may be gone): at most _RUNS_MAX_BYTES."""

    __slots__ = ("held", "size")

    def __init__(self) -> None:
        self.held: dict[bytes, bytes] = {}
        self.size = 0

    def share(self, run: bytes) -> bytes:
        found = self.held.get(run)
        if found is not None:
            return found
        if self.size + len(run) <= _RUNS_MAX_BYTES:
            self.held[run] = run
            self.size += len(run)
        return run


_runs: Final = _Runs()


def stamped(stamp: bytes) -> None:
    """Fill ``SLOT`` with ``stamp`` (a ``timestamp_field``) for the joins that follow."""
    SLOT[:] = stamp


def prefixes(
    owner: InfoObject | InfoSeries, values: Values, encoder: SeriesEncoder
) -> Pieces | None:
    """The owner's outputs' bytes for ``values``, as pieces with ``SLOT`` where each output's
    timestamp field goes, or None (an output only upb encodes).

    Kept on the owner for the values it last wrote: an object's state lasts many scrapes, so a
    scrape's outputs are one join of these. ``b"".join`` of them, ``SLOT`` filled with a
    timestamp field, is ``rw1.encode`` of the outputs at that timestamp.
    """
    if owner.encoded_for is not values:
        pieces = _pieces(owner.outputs[0], values, encoder)
        if pieces is None:
            return None
        owner.encoded_for, owner.pieces = values, pieces
    return owner.pieces


def _pieces(outputs: tuple[Labels, ...], values: Values, encoder: SeriesEncoder) -> Pieces | None:
    """``prefixes``' pieces: the labels every output holds (a forward object's key, ~85% of
    its outputs' bytes) kept once, in runs cut where an output has a label of its own and
    around the object's name (``IDENTITY``), the runs without it shared with the objects that
    have the same; the rest (headers, names, statuses, sample heads) shared with every other
    object."""
    cut = encoder.series_pieces(outputs, values)
    if cut is None:
        return None
    if len(outputs) == 1:
        return (b"".join(cut[0]), SLOT)
    shared = set(outputs[0]).intersection(*outputs[1:])
    # Every output lists the shared pairs in one order (sorted by name): runs of them end
    # where any output puts a label of its own between two of them.
    order = [pair for pair in outputs[0] if pair in shared]
    ends = {len(order)}
    for index, pair in enumerate(order):
        if pair[0] in IDENTITY:
            ends.update((index, index + 1))
    for labels in outputs:
        seen = 0
        for pair in labels:
            if pair in shared:
                seen += 1
            elif seen:
                ends.add(seen)
    field = dict(zip(outputs[0], cut[0][1:-1], strict=True))
    runs: dict[tuple[str, str], bytes] = {}  # first pair of a run → the run's bytes
    start = 0
    for end in sorted(ends):
        if end > start:
            joined = b"".join([field[pair] for pair in order[start:end]])
            if order[start][0] not in IDENTITY:  # a name is cut out alone: its own
                joined = _runs.share(joined)
            runs[order[start]] = joined
            start = end
    out: list[bytes | bytearray] = []
    for labels, fields in zip(outputs, cut, strict=True):
        own = [fields[0]]  # bytes of this output's own, since the last run
        for pair, encoded in zip(labels, fields[1:-1], strict=True):
            if pair not in shared:
                own.append(encoded)
                continue
            run = runs.get(pair)
            if run is not None:
                if own:
                    out.append(_share(b"".join(own)))
                    own = []
                out.append(run)
        own.append(fields[-1])
        out.append(_share(b"".join(own)))
        out.append(SLOT)
    return tuple(out)


def _share(piece: bytes) -> bytes:
    """One bytes object for equal pieces, as long as there are few of them."""
    found = _common.get(piece)
    if found is not None:
        return found
    if len(_common) < _COMMON_MAX:
        _common[piece] = piece
    return piece


def timestamp_field(ts: int, encoder: SeriesEncoder) -> bytes | None:
    """The Sample.timestamp field that ``prefixes`` are joined around, or None (not that long)."""
    stamp = encoder.timestamp_field(ts) if type(ts) is int and ts else b""
    return stamp if len(stamp) == encoder.STAMP_FIELD_LEN else None


class Emitter:
    """Synthesized samples of one rewrite() call: one entry per output series, in first-emission
    order, kept as flat lists that become Series at the end.

    Whatever emits (a forward object, whose outputs are always written together, or one info
    series of a reverse object) owns its output set, and no two owners have outputs with equal
    labels. So rather than look its labels up, an owner is stamped with the call that last
    emitted it, and the call keeps where its outputs are (``at``, by owner): a second emission
    in the same call (several timestamps in one batch) appends to the samples already there.
    """

    __slots__ = (
        "at",
        "blocks",
        "call",
        "encoder",
        "families",
        "grown",
        "labels",
        "metadata",
        "newest",
        "samples",
        "shared",
        "shared_ts",
    )

    def __init__(self, call: int, encoder: SeriesEncoder | None) -> None:
        self.call = call  # unique per rewrite() call of one rewriter, never 0
        self.encoder = encoder
        # The remote write 1.0 encoding of the outputs so far, an owner's outputs at a time, as
        # long as every output series has one sample (see encode); then None (also without an
        # encoder).
        self.blocks: list[bytes] | None = [] if encoder is not None else None
        self.newest = NEVER  # newest timestamp in ``blocks``
        self.labels: list[Labels] = []
        self.metadata: list[Metadata] = []
        # A tuple per output; a list once a second emission in the call appends to it (a tuple
        # grown by += is copied whole each time: n samples of one object in a request cost n²).
        self.samples: list[tuple[Sample, ...] | list[Sample]] = []
        self.grown = False
        self.families: dict[str, Metadata] = {}
        # Objects in one state write the same values at one scrape's timestamp: the samples
        # are equal (and immutable), so they are built once per values tuple and timestamp.
        # Each entry holds its values tuple, so the id it is filed under is not reused.
        self.shared: dict[int, tuple[Values, tuple[tuple[Sample], ...]]] = {}
        self.shared_ts = NEVER
        # Where each owner's outputs are in this call's lists: here for the call only, not on
        # the owner (an int of its own per object, kept until its next emission).
        self.at: dict[InfoObject | InfoSeries, int] = {}

    def add(
        self,
        owner: InfoObject | InfoSeries,
        families: Families,
        ts: int,
        values: Values,
    ) -> None:
        """Add a sample to each of the owner's outputs; ``families`` are theirs, in order."""
        if owner.emit_call != self.call:
            owner.emit_call = self.call
            self.at[owner] = len(self.labels)
            outputs = owner.outputs
            self.labels += outputs[0]
            self.metadata += outputs[1]
            if ts != self.shared_ts:
                self.shared.clear()
                self.shared_ts = ts
            known = self.shared.get(id(values))
            if known is None:
                fresh = tuple([(_new(Sample, (value, ts, 0)),) for value in values])
                known = self.shared[id(values)] = (values, fresh)
            self.samples += known[1]
            if families[0][0] not in self.families:
                self.families.update(families)
            if self.blocks is not None:
                self.encode(owner, ts, values)
        else:
            start = self.at[owner]
            samples = self.samples
            for offset, value in enumerate(values):
                held = samples[start + offset]
                if type(held) is tuple:
                    held = samples[start + offset] = list(held)
                held.append(_new(Sample, (value, ts, 0)))  # type: ignore[union-attr]
            self.grown = True
            self.blocks = None  # a series with two samples: left to the encoder

    def encode(self, owner: InfoObject | InfoSeries, ts: int, values: Values) -> None:
        """Add the encoding of the owner's outputs, just added with ``values`` at ``ts``.

        An owner keeps its outputs' bytes up to each timestamp field for the values it last
        wrote (an object's state lasts many scrapes), so a scrape's four series are one join
        here instead of four passes through the encoder. The relay queues these bytes when
        they are the whole of what it queues (``FluxRewriter.encoded``).
        """
        blocks = self.blocks
        assert blocks is not None and self.encoder is not None
        parts = prefixes(owner, values, self.encoder)
        stamp = timestamp_field(ts, self.encoder)
        if parts is None or stamp is None:
            self.blocks = None
            return
        stamped(stamp)
        blocks.append(b"".join(parts))
        if ts > self.newest:
            self.newest = ts

    def series(self) -> list[Series]:
        """The synthesized series, built by C iterators: a Series per output is much of the
        rewriter's work in steady state, so no Python bytecode runs per output here."""
        count = len(self.labels)
        samples = self.samples
        if self.grown:
            samples = [s if type(s) is tuple else tuple(s) for s in samples]
        fields = zip(
            self.labels,
            samples,
            repeat((), count),
            repeat((), count),
            self.metadata,
            repeat(0, count),
            strict=True,
        )
        return list(map(_new, repeat(Series, count), fields))
