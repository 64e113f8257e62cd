"""Remote write 1.0 requests handled as bytes: split, find series by name, count, re-frame.

Why: decoding every series into ``model`` objects and re-encoding it per destination costs about
70 ms per 2000-series batch, while a rule (the Flux rewrites) only ever changes a few series
picked by metric name. These functions let the relay touch only those and forward every other
series as the exact bytes that came:

* ``split`` slices a WriteRequest into its encoded TimeSeries/MetricMetadata messages with a
  reduced schema (``proto/fastpath.proto``) that upb parses without building nested objects;
  ``frame`` parses the same without making a Python object per series;
* ``mentions`` says in ≈0.02 ms whether a request can hold a series of some names at all;
* ``select`` finds the series whose ``__name__`` is one of a few names by a C-speed search,
  walking the label encoding only of series that contain a name's bytes at all;
* ``count_points`` counts samples + histograms by a protobuf merge trick, in C;
* ``rebuild`` frames series/metadata bytes back into a WriteRequest;
* ``survey`` checks a request as strictly as Prometheus 3 and Mimir do (protobuf, UTF-8, label
  names, limits) and answers ``frame``'s, ``count_points``' and ``select``'s questions, in one
  pass in C (``_survey.c``), sorting unsorted label sets; None for an invalid request, whose
  error ``validate.survey`` words. The relay's write path uses only this one.

The input is the *uncompressed* request body. Everything here is pure and returns new objects.
Only ``survey`` validates label sets; the other functions check framing at most. Sample values
and timestamps are never judged (any float bits and any int64 are valid). Wire format: protobuf
encoding, ``proto/remote.proto``.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Any, NamedTuple

import re2
from google.protobuf.message import DecodeError as ProtoDecodeError

from .. import native
from . import fastpath_pb2 as _fastpath_pb2
from .errors import DecodeError
from .labels import NO_LIMITS, Limits

# Generated code is typed as Any at the boundary (as remote_pb2 is for rw1); tests pin it.
_pb: Any = _fastpath_pb2


_native: Any = native.load(f"{__package__}._survey")
NATIVE = _native is not None

NAME = b"__name__"
# Field 1 (Label.name, LEN) of length 8 holding "__name__", then the tag of field 2 (value).
_NAME_THEN_VALUE = b"\x0a\x08__name__\x12"


class Split(NamedTuple):
    """A WriteRequest as its encoded sub-messages, in the order they came."""

    series: Sequence[bytes]  # encoded prometheus.TimeSeries
    metadata: Sequence[bytes]  # encoded prometheus.MetricMetadata


def split(raw: bytes) -> Split:
    """Slice an uncompressed WriteRequest into encoded series and metadata (≈0.15 ms per 2000).

    Only the top level is parsed: a malformed series is returned as it came and only surfaces
    when something reads it (``metric_name``, ``count_points``, the receiver).
    """
    try:
        request = _pb.FlatWriteRequest.FromString(raw)
    except ProtoDecodeError as exc:
        raise _decode_error(exc) from exc
    return Split(list(request.timeseries), list(request.metadata))


def frame(raw: bytes) -> Any:
    """The top level of an uncompressed WriteRequest, its framing checked (≈0.04 ms per 2000).

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


def metric_name(series: bytes) -> bytes | None:
    """The value of the first ``__name__`` label of an encoded TimeSeries; None if it has none.

    Reads only the label fields up to that one, never decoding the series. The common shape
    (Prometheus sorts labels, so ``__name__`` comes first, encoded ``0a L 0a 08 __name__ 12 V
    value``) is recognised in a few byte comparisons; anything else (labels in another order,
    fields inside a label in another order or repeated, unknown fields, long varints) takes
    the general walk, which follows protobuf's rules: within a label the last ``name``/``value``
    wins, a field whose wire type does not match its declaration is an unknown field, and an
    omitted value is the empty string. The same answer as ``rw1.decode(...)``'s ``Series.name``
    except that a missing label is None rather than "". Raises DecodeError on broken framing
    met before the answer; bytes after it are not looked at.
    """
    size = len(series)
    if size > 13 and series[0] == 0x0A:
        label_len = series[1]
        value_len = series[13]
        if (
            label_len < 0x80
            and value_len < 0x80
            and value_len + 12 == label_len
            and label_len + 2 <= size
            and series.startswith(_NAME_THEN_VALUE, 2)
        ):
            return series[14 : 14 + value_len]
    return _walk_metric_name(series)


def mentions(raw: bytes, names: frozenset[bytes]) -> bool:
    """False if no series of the request ``raw`` can have its metric name in ``names``.

    The cheapest question the fast path asks of every batch: one RE2 search for any of the
    names' bytes (RE2 scans for a literal with memchr/memmem, ≈0.02 ms per 600 kB where
    ``bytes.find`` takes ≈0.18 ms). True only means "maybe": a name's bytes may also occur in
    some label value or in metadata; ``select`` gives the exact answer.
    """
    return bool(names) and _searcher(names)(raw, 0, len(raw)) >= 0


def select(
    split: Split, names: frozenset[bytes], prefixes: frozenset[bytes] = frozenset()
) -> list[int]:
    """Indices, ascending, of the series whose metric name is in ``names`` or starts with one
    of ``prefixes``.

    One RE2 search over all series bytes finds the first place any name's bytes occur. Only
    then are series looked at: the one holding that place is found by bisecting cumulative
    lengths, its name read exactly (``metric_name``), and the search resumes at the next
    series. So only series that contain a name's bytes are ever read, and a name that also
    appears in a label value costs a little, never a wrong answer. RE2 finds a literal with
    memchr, ≈0.02 ms per 600 kB; each search is one call into RE2 (≈1.5 µs, see ``_searcher``),
    so per 2000 series this is ≈0.07 ms with no match and ≈0.25 ms with 100 (a Flux-heavy
    stream).
    """
    series = split.series
    wanted = names | prefixes
    if not wanted or not series:
        return []
    joined = b"".join(series)
    search = _searcher(wanted)
    end = len(joined)
    found = search(joined, 0, end)
    if found < 0:
        return []
    ends = list(accumulate(map(len, series)))
    count = len(ends)
    starts = tuple(prefixes)
    hits: list[int] = []
    while found >= 0:
        index = bisect_right(ends, found)
        if index == count:  # an empty name matches at the very end
            break
        name = metric_name(series[index])
        if name is not None and (name in names or name.startswith(starts)):
            hits.append(index)
        found = search(joined, ends[index], end)
    return hits


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
    protobuf and Python take ~30 times as long (docs/performance.md).
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
    )
    return Refused(found) if isinstance(found, int) else Survey(*found)


def count_points(source: Split | bytes) -> int:
    """Samples + histograms in a request: from its ``Split`` or from the raw body itself.

    Parsed with ``MergedPoints`` (``proto/fastpath.proto``), where ``timeseries`` is a singular
    message: protobuf merges every occurrence into one, concatenating their ``samples`` and
    ``histograms``, so the count is two ``len()`` calls and no Python loop runs per series.
    Each series is still parsed within its own length, so the count is exact, and a series whose
    own framing is broken raises DecodeError. Cost per 2000-series batch: ≈0.2 ms from the raw
    body, ≈0.3 ms from a Split (re-framed first); the naive nested parse + sum is ≈2 ms.
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


@functools.lru_cache(maxsize=64)
def _finder(names: frozenset[bytes]) -> Any:
    """An RE2 program matching any of ``names`` as raw bytes (Latin-1: one char per byte)."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    alternatives = sorted(names, key=lambda n: (-len(n), n))
    return re2.compile(b"|".join(re2.escape(n) for n in alternatives), options)


Search = Callable[[bytes, int, int], int]


@functools.lru_cache(maxsize=64)
def _searcher(names: frozenset[bytes]) -> Search:
    """``search(data, pos, end)``: where the first of ``names`` starts in ``data[pos:end]``, or -1.

    The re2 module's ``search`` costs ≈6 µs a call in Python (it builds a match object and
    walks offsets for ``str``); the RE2 object underneath answers the same question in ≈1.5 µs,
    which is what a request holding a hundred Flux series pays per series. The module's public
    API is the fallback should a release ever change what is underneath.
    """
    finder = _finder(names)
    regexp = getattr(finder, "_regexp", None)
    anchor = getattr(getattr(re2, "_re2", None), "RE2", None)
    anchor = getattr(getattr(anchor, "Anchor", None), "UNANCHORED", None)
    match = getattr(regexp, "Match", None)
    if match is not None and anchor is not None:
        try:
            probe = match(anchor, b"..", 0, 2)
        except Exception:  # any surprise means: use the public API
            probe = None
        if isinstance(probe, list) and probe and probe[0] == (-1, -1):

            def direct(data: bytes, pos: int, end: int) -> int:
                return int(match(anchor, data, pos, end)[0][0])

            return direct
    return functools.partial(_public_search, finder)


def _public_search(finder: Any, data: bytes, pos: int, end: int) -> int:
    found = finder.search(data, pos, end)
    return -1 if found is None else int(found.start())


# -- the general protobuf walk ------------------------------------------------------------

_MAX_DEPTH = 100  # upb's default recursion limit


def _walk_metric_name(data: bytes) -> bytes | None:
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _key(data, pos, end)
        if key & 7 == 2:
            length, pos = _varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError("invalid protobuf TimeSeries: truncated field")
            if key >> 3 == 1:
                name, value = _label(data, pos, stop)
                if name == NAME:
                    return value
            pos = stop
        else:
            pos = _skip(data, pos, end, key)
    return None


def _label(data: bytes, pos: int, end: int) -> tuple[bytes, bytes]:
    """A Label's name and value; a repeated singular field keeps its last occurrence."""
    name = value = b""
    while pos < end:
        key, pos = _key(data, pos, end)
        if key & 7 == 2:
            length, pos = _varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError("invalid protobuf Label: truncated field")
            if key >> 3 == 1:
                name = data[pos:stop]
            elif key >> 3 == 2:
                value = data[pos:stop]
            pos = stop
        else:
            pos = _skip(data, pos, end, key)
    return name, value


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


def _key(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A field key: a varint of at most 32 bits, as upb requires."""
    key, pos = _varint(data, pos, end)
    if key > 0xFFFFFFFF:
        raise DecodeError("invalid protobuf: field key out of range")
    return key, pos


def _skip(data: bytes, pos: int, end: int, key: int, depth: int = 0) -> int:
    """Skip the value of a non-LEN field whose key was just read; returns the next position."""
    if key >> 3 == 0:
        raise DecodeError("invalid protobuf: field number 0")
    kind = key & 7
    if kind == 0:
        return _varint(data, pos, end)[1]
    if kind in (1, 5):
        pos += 8 if kind == 1 else 4
        if pos > end:
            raise DecodeError("invalid protobuf: truncated fixed-width field")
        return pos
    if kind == 3:  # a group: skip fields up to its matching end tag
        if depth >= _MAX_DEPTH:
            raise DecodeError("invalid protobuf: groups nested too deeply")
        while True:
            if pos >= end:
                raise DecodeError("invalid protobuf: unterminated group")
            inner, pos = _key(data, pos, end)
            if inner & 7 == 4:
                if inner >> 3 != key >> 3:
                    raise DecodeError("invalid protobuf: mismatched end group")
                return pos
            if inner & 7 == 2:
                length, pos = _varint(data, pos, end)
                pos += length
                if pos > end:
                    raise DecodeError("invalid protobuf: truncated field")
            else:
                pos = _skip(data, pos, end, inner, depth + 1)
    raise DecodeError(f"invalid protobuf: unexpected wire type {kind}")
