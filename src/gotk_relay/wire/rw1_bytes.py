"""Remote write 1.0 requests handled as bytes: survey, split, count, re-frame.

Why: decoding every series into ``model`` objects and re-encoding it per destination costs an
object per label and sample where the bytes cost a copy, while a rule (the Flux rewrites) only
ever changes a few series picked by metric name. These functions let the relay touch only those
and forward every other series as the exact bytes that came:

* ``survey`` checks a request as strictly as Prometheus 3 and Mimir do (protobuf, UTF-8, label
  names, limits), counts its points and picks the series of some metric names, in one pass in
  C (``_survey.c``), sorting unsorted label sets; None for an invalid request, whose error
  ``validate.survey`` words. The write path's scan stage is this one call;
* ``split`` and ``frame`` slice a WriteRequest into its encoded TimeSeries/MetricMetadata
  messages with a reduced schema (``proto/fastpath.proto``) that upb parses without building
  nested objects (``frame`` without a Python object per series);
* ``count_points`` counts samples + histograms by a protobuf merge trick, in C;
* ``rebuild`` frames series/metadata bytes back into a WriteRequest;
* ``find_compiled``, ``labels_equal_compiled``, ``hash_part_compiled``: the lookup of
  ``picked``'s label cache, in C (``picked`` switches between them and its twins).

The input is the *uncompressed* request body. Everything here is pure and returns new objects.
Only ``survey`` validates label sets; the other functions check framing at most. Sample values
and timestamps are never judged (any float bits and any int64 are valid). Wire format: protobuf
encoding, ``proto/remote.proto``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError as ProtoDecodeError

from .. import native
from ..model import Labels
from . import fastpath_pb2 as _fastpath_pb2
from .errors import DecodeError
from .labels import NO_LIMITS, Limits

# Generated code is typed as Any at the boundary (as remote_pb2 is for rw1); tests pin it.
_pb: Any = _fastpath_pb2


_native: Any = native.load(f"{__package__}._survey")
NATIVE = _native is not None
# Whether a label part is exactly rw1's encoding of a label set (``_survey.c``); None without
# the extension. ``picked`` holds the switch between these and their pure-Python twins.
labels_equal_compiled: Callable[[bytes, Labels], bool] | None = (
    None if _native is None else _native.labels_equal
)
# ``entries.get(hash_part_compiled(data[:end]))`` when those bytes are the labels' encoding,
# else None; and that hash of a label part (``_survey.c`` says why not ``hash``).
find_compiled: Callable[[dict[int, Labels], bytes, int], Labels | None] | None = (
    None if _native is None else _native.find
)
hash_part_compiled: Callable[[bytes], int] | None = None if _native is None else _native.hash_part
# rw1's encoding of a label set (``rw1._encode_labels_reference``'s bytes); None without it.
encode_labels_compiled: Callable[[Labels], bytes] | None = (
    None if _native is None else _native.encode_labels
)
# ``picked.decode``'s usual series (samples in their usual encodings, the label part a cached
# set's exact encoding under ``hash_part``), from an index on, appended to a list; the index of
# the first series left to the Python loop. None without the extension.
decode_known_compiled: (
    Callable[[list[bytes], int, dict[int, Labels], list[Any], type, type], int] | None
) = None if _native is None else _native.decode_known


class Split(NamedTuple):
    """A WriteRequest as its encoded sub-messages, in the order they came."""

    series: Sequence[bytes]  # encoded prometheus.TimeSeries
    metadata: Sequence[bytes]  # encoded prometheus.MetricMetadata


def split(raw: bytes) -> Split:
    """Slice an uncompressed WriteRequest into encoded series and metadata, in one upb parse.

    Only the top level is parsed: a malformed series is returned as it came and only surfaces
    when something reads it (``count_points``, the receiver).
    """
    try:
        request = _pb.FlatWriteRequest.FromString(raw)
    except ProtoDecodeError as exc:
        raise _decode_error(exc) from exc
    return Split(list(request.timeseries), list(request.metadata))


def frame(raw: bytes) -> Any:
    """The top level of an uncompressed WriteRequest, its framing checked, no object per series.

    A ``FlatWriteRequest``: ``len(.timeseries)`` is the series count and its items are the
    encoded series, made into Python bytes only when read (that is most of ``split``'s cost).
    """
    try:
        return _pb.FlatWriteRequest.FromString(raw)
    except ProtoDecodeError as exc:
        raise _decode_error(exc) from exc


def rebuild(series: Iterable[bytes], metadata: Iterable[bytes] = ()) -> bytes:
    """Frame encoded series and metadata into a WriteRequest (series first, then metadata).

    Each entry becomes ``tag + varint(len) + bytes`` (tag 0x0a for series, 0x1a for metadata),
    serialized by upb in C. For a request that lists its series before its metadata, as
    Prometheus does, ``rebuild(*split(raw)) == raw`` byte for byte.
    """
    request = _pb.FlatWriteRequest(timeseries=series, metadata=metadata)
    return bytes(request.SerializeToString())


class Survey(NamedTuple):
    """What the fast path needs of a request that keeps its series: see ``survey``."""

    series: int  # len(frame(raw).timeseries)
    points: int  # count_points(raw): samples + histograms
    picked: list[bytes]  # encoded series a rule reads, as in ``raw`` below (labels sorted)
    metadata: list[bytes]  # list(frame(raw).metadata)
    # The request to forward: the input object itself, or a copy in which every series whose
    # labels were not sorted by name has them sorted (``sorted`` counts those series).
    raw: bytes = b""
    sorted: int = 0
    # With ``survey(..., table=True)`` and no series sorted: one record per series and metadata
    # field of ``raw`` (native uint32s, ``_survey.c``'s REC_*), for routing by name; else b"".
    table: bytes = b""


class Refused(NamedTuple):
    """The compiled walk refused a request; ``validate.survey(..., suspect=series)`` words why."""

    series: int  # the index of the series it was refused in; -1: outside a series


def survey(
    raw: bytes,
    names: frozenset[bytes],
    prefixes: frozenset[bytes] = frozenset(),
    limits: Limits = NO_LIMITS,
    *,
    strict: bool = True,
    table: bool = False,
) -> Survey | Refused | None:
    """The request ``raw`` checked and surveyed in one pass (``_survey.c``); ``Refused`` when it
    is invalid or over ``limits``, None when the extension is not built or
    ``GOTK_RELAY_NO_EXTENSIONS`` is set: then ``validate.survey`` (the pure-Python reference, same
    arguments) raises the worded error or answers the same Survey.

    Strict (the default, ``receiver.validation: full``): valid protobuf at every level with Go's
    wire-type rules, every string valid UTF-8, label names non-empty and unique, ``__name__``
    present and non-empty, and every limit of ``limits`` (series, samples + histograms, labels
    per series, name and value bytes). Label sets not sorted by name are sorted in
    ``Survey.raw`` (a copy; the input object itself when none was). Not strict
    (``receiver.validation: framing``): framing and the series/point limits only, the request
    forwarded as it came. Why in C: the checks cost about as much as one memory scan, where
    protobuf and Python do Python work per label (figures: docs/performance.md). ``table``: also
    the series table (``Survey.table``) that rules keeping or dropping by name route from.
    """
    if _native is None:
        return None
    found = _native.survey(
        raw,
        tuple(names),
        tuple(prefixes),
        limits.max_series,
        limits.max_samples,
        limits.max_labels_per_series,
        limits.max_label_name_length,
        limits.max_label_value_length,
        strict,
        table,
    )
    return Refused(found) if isinstance(found, int) else Survey(*found)


def count_points(source: Split | bytes) -> int:
    """Samples + histograms in a request: from its ``Split`` or from the raw body itself.

    Parsed with ``MergedPoints`` (``proto/fastpath.proto``), where ``timeseries`` is a singular
    message: protobuf merges every occurrence into one, concatenating their ``samples`` and
    ``histograms``, so the count is two ``len()`` calls and no Python loop runs per series.
    Each series is still parsed within its own length, so the count is exact, and a series whose
    own framing is broken raises DecodeError. From the raw body it is one parse; from a Split
    the series are re-framed first; a nested parse and a sum would build an object per sample.
    """
    raw = source if isinstance(source, bytes) else rebuild(source.series)
    try:
        merged = _pb.MergedPoints.FromString(raw).timeseries
    except ProtoDecodeError as exc:
        raise _decode_error(exc) from exc
    return len(merged.samples) + len(merged.histograms)


def _decode_error(exc: ProtoDecodeError) -> DecodeError:
    """upb's reason without the internal schema's name (clients sent a prometheus.WriteRequest)."""
    reason = str(exc).rsplit("': ", 1)[-1]
    return DecodeError(f"invalid protobuf WriteRequest: {reason}")


# -- the general protobuf walk ------------------------------------------------------------


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:
        if pos >= end:
            raise DecodeError("invalid protobuf: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise DecodeError("invalid protobuf: varint longer than 10 bytes")
