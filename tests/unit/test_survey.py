"""wire.rw1_bytes.survey (the C walk): exactly the valid remote-write 1.0 requests, and the answers.

The relay forwards every request the survey accepts as the bytes that came (or with unsorted
label sets sorted), so the survey is the edge's whole check. These tests hold it to:

* a model written here in Python for clarity (``model_survey``): the same Survey or None on
  every input, valid (generated, then re-encoded with shuffled fields, unknown fields, padded
  varints, unpacked repeated fields) or not (mutated, truncated, random bytes): fuzzing;
* upb (``remote_pb2.WriteRequest``): it accepts whatever the strict survey accepts and decodes
  the sorted request to the same content but label order;
* the reference ``validate.survey`` (the worded errors): None exactly where it raises, the same
  Survey otherwise;
* a table of hostile requests, each refused, and of odd but valid encodings, each accepted.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gotk_relay import config as config_module
from gotk_relay.model import Batch
from gotk_relay.wire import remote_pb2, rw1, rw1_bytes, snappy, validate
from gotk_relay.wire.errors import DecodeError
from gotk_relay.wire.labels import NO_LIMITS, Limits
from gotk_relay.write import scan, views
from tests.support import loadgen
from tests.support.hand_proto import ld
from tests.support.strategies import WATCHED, canonical, prometheus_batches, v1_batches
from tests.support.strategies import pb_varint as varint

Surveyor = Callable[..., rw1_bytes.Survey | None]


def test_the_accelerator_is_built() -> None:
    """The README's install builds it (gcc and the Python headers); without it every request
    takes the pure-Python reference, ~30 times slower, and only the start-up line and
    ``gotk_relay_scanned_requests_total{scanner="python"}`` would show it."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        pytest.skip("GOTK_RELAY_NO_EXTENSIONS is set: the Python reference is under test")
    assert rw1_bytes.NATIVE, f"gotk_relay.wire._survey is not built for {sys.executable}"


needs_native = pytest.mark.skipif(not rw1_bytes.NATIVE, reason="the C scanner is not built")


# -- a model of the strict survey, in Python, for fuzzing the C one ---------------------------


class _Invalid(Exception):
    pass


def _m_varint(d: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos >= end:
            raise _Invalid
        byte = d[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
    raise _Invalid


def _m_fields(d: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field, wire, at, value_at, value_end) of each field; LEN values exclude the length."""
    while pos < end:
        at = pos
        key, pos = _m_varint(d, pos, end)
        if pos - at > 5 or key > 0xFFFFFFFF or key >> 3 == 0 or key & 7 not in (0, 1, 2, 5):
            raise _Invalid
        wire = key & 7
        if wire == 0:
            start = pos
            _, pos = _m_varint(d, pos, end)
        elif wire in (1, 5):
            start = pos
            pos += 8 if wire == 1 else 4
        else:
            length, start = _m_varint(d, pos, end)
            if start - pos > 5 or length > 0x7FFFFFFF:  # as upb reads a length
                raise _Invalid
            pos = start + length
        if pos > end:
            raise _Invalid
        yield key >> 3, wire, at, start, pos


def _m_utf8(text: bytes, strict: bool) -> None:
    if strict:
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid from None


def _m_message(d: bytes, pos: int, end: int, schema: dict[int, str], strict: bool) -> None:
    """Check a message whose fields are scalars ("v" varint, "d" double, "s" string, "V"/"D"
    repeated varint/double) or nested messages ("span", "label")."""
    for field, wire, _, start, stop in _m_fields(d, pos, end):
        kind = schema.get(field)
        if kind is None:
            continue
        if kind in ("v", "d"):
            if wire != (0 if kind == "v" else 1):
                raise _Invalid
        elif kind == "V":
            if wire == 2:
                at = start
                while at < stop:
                    _, at = _m_varint(d, at, stop)
            elif wire != 0:
                raise _Invalid
        elif kind == "D":
            if wire == 2:
                if (stop - start) % 8:
                    raise _Invalid
            elif wire != 1:
                raise _Invalid
        elif wire != 2:
            raise _Invalid
        elif kind == "s":
            _m_utf8(d[start:stop], strict)
        else:
            _m_message(d, start, stop, _M_SCHEMAS[kind], strict)


def _m_histogram(d: bytes, pos: int, end: int) -> None:
    """Prometheus' Validate (v3.9) as its remote-write handler reads the histogram: the count
    oneof's last member says integer (deltas) or float (counts), the zero count is its oneof's
    member of that kind (else 0); schema -4 to 52 or -53; exponential: per side no span but the
    first at a negative offset, spans covering the buckets, no custom bounds; custom: bounds
    increasing, not NaN, last not +Inf, positive spans at offsets >= 0 covering the buckets
    within the bounds, no zero bucket or threshold, no negative side; every bucket >= 0; an
    integer one's count the sum of its buckets and zero bucket (mod 2**64; at least it if the
    sum is NaN); a float one's count and zero count >= 0."""
    count_float = zero_float = False  # the oneofs' last members
    count: float = 0
    zero: float = 0
    schema = 0
    total = zero_threshold = 0.0
    spans: dict[int, list[tuple[int, int]]] = {8: [], 11: []}  # side's span field -> spans
    values: dict[int, list[float]] = {9: [], 10: [], 12: [], 13: [], 16: []}

    def double(at: int) -> float:
        return float(struct.unpack("<d", d[at : at + 8])[0])

    for field, _, _, start, stop in _m_fields(d, pos, end):
        if field == 1:
            count_float, count = False, _m_varint(d, start, stop)[0]
        elif field == 6:
            zero_float, zero = False, _m_varint(d, start, stop)[0]
        elif field == 2:
            count_float, count = True, double(start)
        elif field == 7:
            zero_float, zero = True, double(start)
        elif field == 3:
            total = double(start)
        elif field == 4:
            raw = _m_varint(d, start, stop)[0] & 0xFFFFFFFF
            schema = (raw >> 1) ^ -(raw & 1)
        elif field == 5:
            zero_threshold = double(start)
        elif field in spans:
            offset = length = 0
            for f, _, _, b, _ in _m_fields(d, start, stop):
                if f not in (1, 2):
                    continue  # an unknown field, of any wire type
                value = _m_varint(d, b, stop)[0] & 0xFFFFFFFF
                if f == 1:
                    offset = (value >> 1) ^ -(value & 1)
                else:
                    length = value
            spans[field].append((offset, length))
        elif field in (9, 12):
            at = start  # packed or one varint: either way whole varints up to stop
            while at < stop:
                raw, at = _m_varint(d, at, stop)
                values[field].append((raw >> 1) ^ -(raw & 1))
        elif field in values:
            values[field] += [double(at) for at in range(start, stop, 8)]
    is_float = count_float
    if zero_float != count_float:
        zero = 0
    buckets = {
        side: values[(10 if side == 8 else 13) if is_float else (9 if side == 8 else 12)]
        for side in (8, 11)
    }
    counts: dict[int, list[float]] = {}
    if is_float:
        counts = buckets
    else:  # deltas added up with int64 wrap-around
        for side, deltas in buckets.items():
            running: list[float] = []
            last = 0
            for delta in deltas:
                last = (last + int(delta) + 2**63) % 2**64 - 2**63
                running.append(last)
            counts[side] = running
    bounds = values[16]
    if schema == -53:
        if any(b != b for b in bounds) or any(b <= a for a, b in pairwise(bounds)):
            raise _Invalid
        if bounds and bounds[-1] == float("inf"):
            raise _Invalid
        if any(offset < 0 for offset, _ in spans[11]):
            raise _Invalid
        if sum(length for _, length in spans[11]) != len(counts[11]):
            raise _Invalid
        if len(bounds) + 1 < sum(offset + length for offset, length in spans[11]):
            raise _Invalid
        if zero != 0 or zero_threshold != 0 or spans[8] or counts[8]:
            raise _Invalid
    elif -4 <= schema <= 52:
        for side in (8, 11):
            if any(offset < 0 for offset, _ in spans[side][1:]):
                raise _Invalid
            if sum(length for _, length in spans[side]) != len(counts[side]):
                raise _Invalid
        if bounds or (is_float and zero < 0):
            raise _Invalid
    else:
        raise _Invalid
    if any(c < 0 for side in (8, 11) for c in counts[side]):
        raise _Invalid
    if is_float:
        if count < 0:
            raise _Invalid
    else:
        found = (sum(counts[8]) + sum(counts[11]) + zero) % 2**64
        if (found > count) if total != total else (found != count):
            raise _Invalid


_M_SCHEMAS = {
    "label": {1: "s", 2: "s"},
    "sample": {1: "d", 2: "v"},
    "exemplar": {1: "label", 2: "d", 3: "v"},
    "span": {1: "v", 2: "v"},
    "histogram": {
        **dict.fromkeys((1, 4, 6, 14, 15), "v"),
        **dict.fromkeys((2, 3, 5, 7), "d"),
        **dict.fromkeys((8, 11), "span"),
        **dict.fromkeys((9, 12), "V"),
        **dict.fromkeys((10, 13, 16), "D"),
    },
    "metadata": {1: "v", 2: "s", 4: "s", 5: "s"},
}


def model_survey(
    raw: bytes,
    names: frozenset[bytes],
    prefixes: frozenset[bytes],
    limits: Limits = NO_LIMITS,
    *,
    strict: bool = True,
) -> rw1_bytes.Survey | None:
    """What the C survey answers, written for clarity; None for an invalid request."""
    try:
        return _model(raw, names, prefixes, limits, strict)
    except _Invalid:
        return None


def _model(
    raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes], limits: Limits, strict: bool
) -> rw1_bytes.Survey:
    out = bytearray(raw)
    series = points = count_sorted = 0
    picked: list[bytes] = []
    metadata: list[bytes] = []
    for field, wire, _, start, stop in _m_fields(raw, 0, len(raw)):
        if field not in (1, 3):
            continue
        if wire != 2:
            raise _Invalid
        if field == 3:
            _m_message(raw, start, stop, _M_SCHEMAS["metadata"], strict)
            metadata.append(raw[start:stop])
            continue
        series += 1
        if series > limits.max_series:
            raise _Invalid
        labels: list[tuple[bytes, bytes, bytes]] = []  # name, value, the field's bytes
        others: list[bytes] = []
        for inner, kind, at, begin, end in _m_fields(raw, start, stop):
            if inner in (1, 2, 3, 4) and kind != 2:
                raise _Invalid
            if inner == 1:
                _m_message(raw, begin, end, _M_SCHEMAS["label"], strict)
                name = value = b""
                for f, _, _, b, e in _m_fields(raw, begin, end):
                    if f == 1:
                        name = raw[b:e]
                    elif f == 2:
                        value = raw[b:e]
                labels.append((name, value, raw[at:end]))
                continue
            if inner in (2, 4):
                points += 1
                if points > limits.max_samples:
                    raise _Invalid
                _m_message(
                    raw, begin, end, _M_SCHEMAS["sample" if inner == 2 else "histogram"], strict
                )
                if inner == 4 and strict:
                    _m_histogram(raw, begin, end)
            elif inner == 3:
                _m_message(raw, begin, end, _M_SCHEMAS["exemplar"], strict)
            others.append(raw[at:end])
        if strict:
            if len(labels) > limits.max_labels_per_series:
                raise _Invalid
            for name, value, _ in labels:
                if (
                    not name
                    or len(name) > limits.max_label_name_length
                    or len(value) > limits.max_label_value_length
                ):
                    raise _Invalid
            ordered = sorted(labels, key=lambda item: item[0])
            if len({name for name, _, _ in labels}) != len(labels):
                raise _Invalid
            metric: bytes | None = dict((n, v) for n, v, _ in labels).get(b"__name__", b"")
            if not metric:
                raise _Invalid
            if ordered != labels:
                count_sorted += 1
                out[start:stop] = b"".join(item[2] for item in ordered) + b"".join(others)
        else:
            metric = next((v for n, v, _ in labels if n == b"__name__"), None)
        if metric is not None and (metric in names or metric.startswith(tuple(prefixes))):
            picked.append(bytes(out[start:stop]))
    forward = bytes(out) if count_sorted else raw
    return rw1_bytes.Survey(series, points, picked, metadata, forward, count_sorted)


# -- the oracles ------------------------------------------------------------------------------


def reference(
    raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes], limits: Limits = NO_LIMITS
) -> rw1_bytes.Survey | None:
    """The reference check: its Survey, or None where it raises the worded 4xx."""
    try:
        return validate.survey(raw, names, prefixes, limits)
    except DecodeError:  # LabelLimitError and the 413s are DecodeErrors too
        return None


def accepted(found: rw1_bytes.Survey | rw1_bytes.Refused | None) -> rw1_bytes.Survey | None:
    """The C walk's Survey, or None where it refused the request."""
    return found if isinstance(found, rw1_bytes.Survey) else None


def worded(
    raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes], limits: Limits, suspect: int
) -> str:
    with pytest.raises(DecodeError) as raised:
        validate.survey(raw, names, prefixes, limits, suspect=suspect)
    return f"{type(raised.value).__name__}: {raised.value}"


def agree(
    raw: bytes,
    names: frozenset[bytes] = frozenset(),
    prefixes: frozenset[bytes] = frozenset(),
    limits: Limits = NO_LIMITS,
) -> rw1_bytes.Survey | None:
    """Assert that C, the model and the reference agree on ``raw`` (strict and framing), that
    upb accepts what strict C accepts and that framing accepts what strict accepts, and that the
    reference words a refusal alike whether or not it starts at the series C refused it in;
    return the strict answer."""
    walked = rw1_bytes.survey(raw, names, prefixes, limits)
    found = accepted(walked)
    assert found == model_survey(raw, names, prefixes, limits)
    assert found == reference(raw, names, prefixes, limits)
    if isinstance(walked, rw1_bytes.Refused):
        assert walked.series >= -1
        assert worded(raw, names, prefixes, limits, walked.series) == worded(
            raw, names, prefixes, limits, -1
        )
    loose = accepted(rw1_bytes.survey(raw, names, prefixes, limits, strict=False))
    assert loose == model_survey(raw, names, prefixes, limits, strict=False)
    if found is not None:
        assert found.raw is raw if not found.sorted else found.raw != raw
        assert len(found.raw) == len(raw)
        request = remote_pb2.WriteRequest.FromString(found.raw)  # raises if upb refuses
        assert len(request.timeseries) == found.series
        assert sum(len(s.samples) + len(s.histograms) for s in request.timeseries) == found.points
        for item in request.timeseries:
            names_in_order = [label.name for label in item.labels]
            assert names_in_order == sorted(names_in_order, key=str.encode)
        assert loose is not None and (loose.series, loose.points) == (found.series, found.points)
        same_but_label_order(raw, found.raw)
    return found


def same_but_label_order(raw: bytes, forwarded: bytes) -> None:
    """The sorted request decodes to the same series as the input, labels aside."""
    before = remote_pb2.WriteRequest.FromString(raw)
    after = remote_pb2.WriteRequest.FromString(forwarded)
    assert len(before.timeseries) == len(after.timeseries)
    for a, b in zip(before.timeseries, after.timeseries, strict=True):
        assert sorted((x.name, x.value) for x in a.labels) == [(x.name, x.value) for x in b.labels]
        for field in ("samples", "exemplars", "histograms"):
            assert [m.SerializeToString() for m in getattr(a, field)] == [
                m.SerializeToString() for m in getattr(b, field)
            ]
    assert list(before.metadata) == list(after.metadata)


# -- valid requests in every encoding ---------------------------------------------------------

_NESTED = {
    "request": {1: "series", 3: "metadata"},
    "series": {1: "label", 2: "sample", 3: "exemplar", 4: "histogram"},
}


def _odd_unknown(draw: st.DrawFn) -> bytes:
    """An unknown field of each skippable wire type (numbers no message of remote.proto uses)."""
    number = draw(st.sampled_from([17, 99, 2**29 - 1]))
    kind = draw(st.sampled_from([0, 1, 2, 5]))
    key = varint(number << 3 | kind)
    if kind == 0:
        value = draw(st.integers(0, 2**64 - 1))
        return key + varint(value, 10 - len(varint(value)) if draw(st.booleans()) else 0)
    if kind == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if kind == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    return key + varint(3) + b"\xff\x00\x80"  # not UTF-8, not a message: never looked at


def _key(field: int, wire: int, pad: int) -> bytes:
    key = varint(field << 3 | wire)
    return varint(field << 3 | wire, min(pad, 5 - len(key)))


def _length(size: int, pad: int) -> bytes:
    """A length padded to at most 5 bytes, the most upb reads."""
    return varint(size, min(pad, 5 - len(varint(size))))


def _reencode(draw: st.DrawFn, d: bytes, start: int, end: int, kind: str) -> bytes:
    """The message ``kind`` at d[start:end] in another valid encoding of the same content."""
    schema = {**_M_SCHEMAS.get(kind, {}), **_NESTED.get(kind, {})}
    parts: list[bytes] = []
    for field, wire, at, begin, stop in _m_fields(d, start, end):
        sub = schema.get(field)
        pad = draw(st.sampled_from([0, 0, 0, 1, 4]))
        if wire == 2 and sub in (
            "series",
            "metadata",
            "label",
            "sample",
            "exemplar",
            "histogram",
            "span",
        ):
            body = _reencode(draw, d, begin, stop, sub)
            parts.append(_key(field, 2, pad) + _length(len(body), pad) + body)
        elif wire == 2 and sub in ("V", "D") and draw(st.booleans()):  # unpacked
            if sub == "D":
                parts.extend(_key(field, 1, 0) + d[i : i + 8] for i in range(begin, stop, 8))
            else:
                at = begin
                while at < stop:
                    _, after = _m_varint(d, at, stop)
                    parts.append(_key(field, 0, 0) + d[at:after])
                    at = after
        elif wire == 0 and draw(st.booleans()):
            value, _ = _m_varint(d, begin, stop)
            parts.append(_key(field, 0, pad) + varint(value, 10 - len(varint(value))))
        else:
            length = _length(stop - begin, pad) if wire == 2 else b""
            parts.append(_key(field, wire, pad) + length + d[begin:stop])
        if draw(st.integers(0, 5)) == 0:
            parts.append(_odd_unknown(draw))
    # Field order is free, except that repeated fields keep their relative order (samples) and
    # a Label's name/value keep last-wins: shuffle series' labels, and whole small messages.
    if kind in ("label", "sample", "span", "metadata") and draw(st.booleans()):
        draw(st.randoms(use_true_random=False)).shuffle(parts)
    elif kind == "series" and draw(st.booleans()):
        labels = [p for p in parts if p[:1] == b"\x0a"]
        others = [p for p in parts if p[:1] != b"\x0a"]
        draw(st.randoms(use_true_random=False)).shuffle(labels)
        parts = others + labels if draw(st.booleans()) else labels + others
    return b"".join(parts)


@st.composite
def odd_encodings(draw: st.DrawFn) -> bytes:
    """A valid request (generated), re-encoded in any of the ways senders other than Prometheus
    may write it."""
    raw = rw1.encode(draw(st.one_of(v1_batches(), prometheus_batches())))
    return _reencode(draw, raw, 0, len(raw), "request")


@pytest.mark.slow
@needs_native
@settings(max_examples=600, deadline=None)
@given(st.one_of(prometheus_batches(), v1_batches()), WATCHED)
def test_every_valid_request_as_prometheus_writes_it_is_accepted(
    batch: Batch, watched: tuple[frozenset[bytes], frozenset[bytes]]
) -> None:
    """Histograms count as points, exemplars do not; metadata comes back as it came; the
    input object itself is returned (nothing to sort)."""
    raw = rw1.encode(batch)
    found = agree(raw, *watched)
    assert found is not None and found.raw is raw and found.sorted == 0
    assert found.series == len(batch.series)
    assert found.points == batch.sample_count + batch.histogram_count
    names, prefixes = watched
    expected = [
        item for item in rw1_bytes.split(raw).series if _wanted(_name_of(item), names, prefixes)
    ]
    assert found.picked == expected


def _name_of(item: bytes) -> bytes | None:
    """The metric name of one encoded series, read by the decoder."""
    (decoded,) = rw1.decode(rw1_bytes.rebuild([item]), validate=False).series
    found = [value for name, value in decoded.labels if name == "__name__"]
    return found[0].encode() if found else None


def _wanted(name: bytes | None, names: frozenset[bytes], prefixes: frozenset[bytes]) -> bool:
    return name is not None and (name in names or name.startswith(tuple(prefixes)))


@pytest.mark.slow
@needs_native
@settings(max_examples=300, deadline=None)
@given(odd_encodings(), WATCHED)
def test_every_valid_encoding_is_accepted(
    raw: bytes, watched: tuple[frozenset[bytes], frozenset[bytes]]
) -> None:
    """Any field order, unknown fields, long varints and keys, unpacked repeated scalars,
    unsorted labels: accepted, sorted where needed, the same answers as the model and upb."""
    assert agree(raw, *watched) is not None


@needs_native
@settings(max_examples=150, deadline=None)
@given(odd_encodings())
def test_the_series_table_says_where_each_series_and_its_name_are(raw: bytes) -> None:
    """The table rules on the name alone route from (write/_route.c): one record per series
    and metadata field, in order, with the series' extent, its name's place, its points, its
    last sample's timestamp and whether it has an empty label value or histograms; none when
    a series was sorted (its name moved)."""
    import struct

    found = rw1_bytes.survey(raw, frozenset(), table=True)
    assert isinstance(found, rw1_bytes.Survey)
    if found.sorted:
        assert found.table == b""
        return
    records = list(struct.iter_unpack("8I", found.table))
    fields = [
        (field, at, body, end)
        for field, wire, at, body, end in _m_fields(raw, 0, len(raw))
        if wire == 2 and field in (1, 3)
    ]
    assert len(records) == len(fields)
    for (field, start, body, end), record in zip(fields, records, strict=True):
        at, stop, name_at, name_len, points, flags, low, high = record
        assert (at, stop) == (start, end)
        if field == 3:
            assert flags == 4
            continue
        message = remote_pb2.TimeSeries.FromString(raw[body:end])
        (name,) = [label.value for label in message.labels if label.name == "__name__"]
        assert raw[name_at : name_at + name_len] == name.encode()
        assert points == len(message.samples) + len(message.histograms)
        empty = any(label.value == "" for label in message.labels)
        assert flags == (1 if empty else 0) | (2 if message.histograms else 0)
        last = message.samples[-1].timestamp if message.samples else 0
        assert low | high << 32 == last % (1 << 64)
    unasked = rw1_bytes.survey(raw, frozenset())
    assert isinstance(unasked, rw1_bytes.Survey) and unasked.table == b""  # only when asked


# -- broken requests: fuzzing against the model, the reference and upb ------------------------


@pytest.mark.slow
@needs_native
@settings(max_examples=420, deadline=None)
@given(st.one_of(odd_encodings(), st.builds(rw1.encode, prometheus_batches())), WATCHED, st.data())
def test_a_damaged_request_is_judged_alike(
    raw: bytes, watched: tuple[frozenset[bytes], frozenset[bytes]], data: st.DataObject
) -> None:
    """A byte changed, inserted or removed, or the request cut short, anywhere."""
    mutable = bytearray(raw)
    assume(mutable)
    for _ in range(data.draw(st.integers(1, 3))):
        if not mutable:
            break
        at = data.draw(st.integers(0, len(mutable) - 1))
        how = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if how == "set":
            mutable[at] = data.draw(st.integers(0, 255))
        elif how == "insert":
            mutable.insert(at, data.draw(st.integers(0, 255)))
        elif how == "delete":
            del mutable[at]
        else:
            del mutable[at:]
    agree(bytes(mutable), *watched)


@needs_native
@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=80), WATCHED)
def test_random_bytes_are_judged_alike(
    raw: bytes, watched: tuple[frozenset[bytes], frozenset[bytes]]
) -> None:
    agree(raw, *watched)


def decoded_or_error(raw: bytes, limits: Limits = NO_LIMITS) -> object:
    try:
        decoded = rw1.decode_counted(raw, limits=limits)
        return canonical(decoded.batch), decoded.sorted  # NaN compared by its bits
    except DecodeError as exc:  # the limit errors too
        return (type(exc).__name__, str(exc))


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.binary(max_size=80), odd_encodings(), st.builds(rw1.encode, prometheus_batches())),
    st.sampled_from([NO_LIMITS, Limits(max_series=2, max_labels_per_series=3)]),
)
def test_rw1_decode_checks_with_the_walk_and_words_with_the_reference(
    raw: bytes, limits: Limits
) -> None:
    """``rw1.decode`` (the decoded path, and each label set the picked series bring the first
    time) checks with the compiled walk: the same batch, sorted count and worded error as the
    reference alone gives."""
    with_walk = decoded_or_error(raw, limits)
    original = rw1_bytes.survey
    try:
        rw1_bytes.survey = lambda *args, **kwargs: None
        reference_only = decoded_or_error(raw, limits)
    finally:
        rw1_bytes.survey = original
    assert with_walk == reference_only


LIMITS = st.builds(
    Limits,
    max_series=st.integers(0, 8),
    max_labels_per_series=st.integers(1, 8),
    max_label_name_length=st.integers(1, 12),
    max_label_value_length=st.integers(0, 20),
    max_samples=st.integers(0, 10),
)


@pytest.mark.slow
@needs_native
@settings(max_examples=300, deadline=None)
@given(odd_encodings(), LIMITS)
def test_the_limits_are_applied_alike(raw: bytes, limits: Limits) -> None:
    found = agree(raw, frozenset(), frozenset(), limits)
    if found is not None:
        assert found.series <= limits.max_series and found.points <= limits.max_samples


# -- a table of hostile and of odd but valid requests -----------------------------------------


def label(name: bytes, value: bytes) -> bytes:
    return ld(1, ld(1, name) + ld(2, value))


SAMPLE = ld(2, b"\x09" + b"\x00" * 8 + b"\x10\x05")
X = label(b"__name__", b"x")


def series(*fields: bytes) -> bytes:
    return ld(1, b"".join(fields))


def histogram(*fields: bytes) -> bytes:
    return ld(4, b"".join(fields))


HOSTILE = [
    # framing
    pytest.param(b"\x0a", id="truncated-series-length"),
    pytest.param(series(X, SAMPLE)[:-1], id="truncated-sample"),
    pytest.param(series(X, SAMPLE) + b"\x00", id="trailing-zero-byte"),
    pytest.param(series(X, SAMPLE) + b"\x0a\x05ab", id="length-past-the-end"),
    pytest.param(series(X, SAMPLE) + varint(4 << 3 | 3) + varint(4 << 3 | 4), id="top-level-group"),
    pytest.param(series(X, SAMPLE, varint(9 << 3 | 3), varint(9 << 3 | 4)), id="series-group"),
    pytest.param(series(ld(1, ld(1, b"__name__") + ld(2, b"x") + b"\x1c"), SAMPLE), id="end-group"),
    pytest.param(series(X, SAMPLE, b"\x0e"), id="wire-type-6"),
    pytest.param(series(X, SAMPLE, b"\x0f"), id="wire-type-7"),
    pytest.param(series(X, SAMPLE, b"\x02\x00"), id="field-0"),
    pytest.param(series(X, SAMPLE, b"\x80\x80\x80\x80\x80\x08\x00"), id="six-byte-key"),
    pytest.param(series(X, SAMPLE, b"\xf8\xff\xff\xff\x7f\x00"), id="key-over-32-bits"),
    pytest.param(series(X, ld(2, b"\x10" + b"\xff" * 10 + b"\x01")), id="eleven-byte-varint"),
    pytest.param(b"\x0a" + b"\xff" * 9 + b"\x01", id="huge-series-length"),
    pytest.param(b"\x0a" + varint(len(X), 5) + X, id="six-byte-length"),
    # a known field with another wire type
    pytest.param(varint(1 << 3 | 0) + varint(1), id="series-as-varint"),
    pytest.param(series(X, SAMPLE) + varint(3 << 3 | 5) + b"\0\0\0\0", id="metadata-as-fixed32"),
    pytest.param(series(X, varint(1 << 3 | 5) + b"\0\0\0\0", SAMPLE), id="label-as-fixed32"),
    pytest.param(series(X, varint(2 << 3 | 0) + b"\x01"), id="sample-as-varint"),
    pytest.param(series(X, ld(1, ld(1, b"a") + b"\x10\x01")), id="label-value-as-varint"),
    pytest.param(series(X, ld(2, b"\x08\x01")), id="sample-value-as-varint"),
    pytest.param(series(X, ld(2, b"\x11" + b"\0" * 8)), id="sample-timestamp-as-fixed64"),
    pytest.param(series(X, histogram(b"\x09" + b"\0" * 8)), id="histogram-count-int-as-double"),
    pytest.param(series(X, histogram(b"\x18\x01")), id="histogram-sum-as-varint"),
    pytest.param(series(X, histogram(b"\x45\0\0\0\0")), id="histogram-span-as-fixed32"),
    pytest.param(series(X, histogram(ld(8, b"\x09" + b"\0" * 8))), id="span-offset-as-double"),
    pytest.param(series(X, histogram(ld(10, b"\0" * 7))), id="packed-doubles-not-a-multiple"),
    pytest.param(series(X, histogram(ld(9, b"\x80"))), id="packed-varint-cut"),
    pytest.param(series(X, histogram(varint(10 << 3 | 5) + b"\0\0\0\0")), id="double-as-fixed32"),
    # a native histogram's spans against its buckets, as Prometheus' Validate checks them
    pytest.param(
        series(X, histogram(ld(11, b"\x10\x03"), b"\x60\x02")), id="spans-need-more-deltas"
    ),
    pytest.param(series(X, histogram(b"\x60\x02\x60\x02")), id="deltas-without-spans"),
    pytest.param(
        series(X, histogram(b"\x11" + b"\0" * 8, ld(8, b"\x10\x01"), b"\x48\x02")),
        id="float-histogram-spanning-its-deltas",
    ),
    pytest.param(
        series(X, histogram(ld(11, b"\x10\xff\xff\xff\xff\x0f"), b"\x60\x02")),
        id="span-of-four-billion-buckets",
    ),
    pytest.param(
        series(X, histogram(ld(11, b"\x10\x01"), ld(11, b"\x08\x01\x10\x01"), ld(12, b"\x02\x02"))),
        id="second-span-with-negative-offset",
    ),
    pytest.param(series(X, ld(3, b"\x08\x01"), SAMPLE), id="exemplar-labels-as-varint"),
    pytest.param(series(X, SAMPLE) + ld(3, b"\x11" + b"\0" * 8), id="metadata-type-as-fixed64"),
    pytest.param(series(X, SAMPLE) + ld(3, b"\x10\x01"), id="metadata-name-as-varint"),
    # label sets
    pytest.param(series(X, label(b"a", b"1"), label(b"a", b"2"), SAMPLE), id="duplicate-name"),
    pytest.param(series(label(b"a", b"2"), X, label(b"a", b"1"), SAMPLE), id="duplicate-unsorted"),
    pytest.param(series(X, X, SAMPLE), id="duplicate-metric-name"),
    pytest.param(series(X, label(b"", b"1"), SAMPLE), id="empty-name"),
    pytest.param(series(X, ld(1, ld(2, b"1")), SAMPLE), id="label-without-name"),
    pytest.param(series(label(b"job", b"x"), SAMPLE), id="no-metric-name"),
    pytest.param(series(label(b"__name__", b""), SAMPLE), id="empty-metric-name"),
    pytest.param(series(ld(1, ld(1, b"__name__")), SAMPLE), id="metric-name-without-value"),
    pytest.param(
        series(ld(1, ld(1, b"__name__") + ld(2, b"x") + ld(2, b"")), SAMPLE),
        id="metric-name-value-emptied",
    ),
    pytest.param(series(), id="empty-series"),
    pytest.param(series(X, label(b"a\xff", b"1"), SAMPLE), id="invalid-utf8-name"),
    pytest.param(series(X, label(b"a", b"\xc3"), SAMPLE), id="cut-utf8-value"),
    pytest.param(series(X, label(b"a", b"\xc0\xaf"), SAMPLE), id="overlong-utf8"),
    pytest.param(series(X, label(b"a", b"\xed\xa0\x80"), SAMPLE), id="surrogate-utf8"),
    pytest.param(series(X, label(b"a", b"\xf4\x90\x80\x80"), SAMPLE), id="utf8-over-10ffff"),
    pytest.param(series(X, label(b"a", b"12345678\xff"), SAMPLE), id="invalid-utf8-after-8-ascii"),
    pytest.param(
        series(X, ld(1, ld(1, b"a\xff") + ld(1, b"a") + ld(2, b"1")), SAMPLE),
        id="invalid-utf8-name-overwritten",
    ),
    pytest.param(series(X, ld(3, label(b"a", b"\xff")), SAMPLE), id="invalid-utf8-exemplar"),
    pytest.param(series(X, SAMPLE) + ld(3, ld(2, b"\xff")), id="invalid-utf8-metadata-name"),
    pytest.param(series(X, SAMPLE) + ld(3, ld(4, b"\xfe")), id="invalid-utf8-metadata-help"),
    pytest.param(series(X, SAMPLE) + ld(3, ld(5, b"\x80")), id="invalid-utf8-metadata-unit"),
    pytest.param(
        series(X, *(label(b"l%05d" % i, b"v") for i in range(20000)), SAMPLE), id="20000-labels"
    ),
]


@needs_native
@pytest.mark.parametrize("raw", HOSTILE)
def test_a_hostile_request_is_refused(raw: bytes) -> None:
    limits = Limits(max_labels_per_series=128)
    assert accepted(rw1_bytes.survey(raw, frozenset({b"x"}), frozenset(), limits)) is None
    assert agree(raw, frozenset({b"x"}), frozenset(), limits) is None


VALID = [
    pytest.param(series(X, SAMPLE), id="plain"),
    pytest.param(b"", id="empty-request"),
    pytest.param(series(X), id="series-without-points"),
    pytest.param(series(X, label(b"a", b"")), id="empty-value"),
    pytest.param(series(X, ld(1, ld(1, b"a"))), id="omitted-value"),
    pytest.param(series(ld(1, ld(2, b"x") + ld(1, b"__name__")), SAMPLE), id="value-then-name"),
    pytest.param(
        series(ld(1, ld(1, b"b") + ld(1, b"__name__") + ld(2, b"x"))), id="name-repeated-last-wins"
    ),
    pytest.param(series(X, label(b"a", "é€😀".encode())), id="multibyte-utf8"),
    pytest.param(series(X, label("ünï".encode(), b"1")), id="utf8-name"),
    pytest.param(ld(2, b"\xff") + series(X, SAMPLE), id="reserved-field-2"),
    pytest.param(
        series(X, SAMPLE) + varint(17 << 3 | 0) + varint(1, 9), id="unknown-10-byte-varint"
    ),
    pytest.param(series(X, SAMPLE, varint(99 << 3 | 1) + b"\0" * 8), id="unknown-fixed64"),
    pytest.param(series(X, SAMPLE, varint(99 << 3 | 5) + b"\0" * 4), id="unknown-fixed32"),
    pytest.param(
        series(X, ld(1, ld(1, b"a") + ld(7, b"\xff") + ld(2, b"1"))), id="unknown-in-label"
    ),
    pytest.param(series(X, ld(2, b"\x10" + b"\xff" * 9 + b"\x01")), id="ten-byte-timestamp"),
    pytest.param(series(X, ld(2, b"\x10" + b"\x80" * 9 + b"\x00")), id="ten-byte-padded-zero"),
    pytest.param(
        varint(1 << 3 | 2, 4) + varint(len(series(X)[2:]), 4) + series(X)[2:],
        id="five-byte-key-and-length",
    ),
    pytest.param(series(SAMPLE, X), id="sample-before-labels"),
    pytest.param(
        series(X, SAMPLE) + ld(3, b"\x08\x02" + ld(2, b"x") + ld(4, b"help")), id="metadata"
    ),
    pytest.param(ld(3, b"") + series(X, SAMPLE), id="metadata-first"),
    pytest.param(
        series(
            X,
            # count 4: deltas 1, 0, 0 packed then 0, -1 unpacked, bucket counts 1, 1, 1, 1, 0
            histogram(b"\x08\x04", ld(8, b"\x10\x05"), ld(9, b"\x02\x00\x00"), b"\x48\x00\x48\x01"),
        ),
        id="packed-and-unpacked-deltas",
    ),
    pytest.param(
        series(X, histogram(ld(13, b"\0" * 16), b"\x69" + b"\0" * 8)),
        id="packed-and-unpacked-counts",
    ),
    pytest.param(series(X, histogram(b"\x08\x05\x11" + b"\0" * 8)), id="both-count-oneof-members"),
    pytest.param(
        series(
            X, histogram(b"\x08\x03", ld(11, b"\x08\x01\x10\x02"), ld(12, b"\x02\x02"), ld(16, b""))
        ),
        id="spans-and-empty-packed",
    ),
    pytest.param(series(X, ld(3, label(b"trace_id", b"a") + b"\x11" + b"\0" * 8)), id="exemplar"),
    pytest.param(series(label(b"b", b"1"), X, label(b"a", b"2"), SAMPLE), id="unsorted"),
    pytest.param(series(label(b"Z", b"1"), X), id="uppercase-sorts-first"),
]


@needs_native
@pytest.mark.parametrize("raw", VALID)
def test_an_odd_but_valid_request_is_accepted(raw: bytes) -> None:
    found = agree(raw, frozenset({b"x"}), frozenset())
    assert found is not None


def test_the_tables_hold_the_issues_cases() -> None:
    """Issue 16 item 2 and the corpus brief: at least these, by id."""
    ids = {p.id for p in HOSTILE}
    assert {
        "invalid-utf8-name",
        "cut-utf8-value",
        "duplicate-name",
        "empty-name",
        "20000-labels",
    } <= ids
    assert {"label-as-fixed32", "series-group"} <= ids and len(HOSTILE) + len(VALID) >= 60


# -- sorting ----------------------------------------------------------------------------------


@needs_native
def test_an_unsorted_series_is_sorted_and_the_others_kept_byte_for_byte() -> None:
    """Label fields first, in name order, each as it came; then the series' other fields in
    their order; the other series and metadata untouched; picked from the sorted request."""
    odd_label = ld(1, ld(2, b"2") + ld(1, b"a"))  # value before name: kept as it came
    unsorted = series(SAMPLE, label(b"b", b"1"), ld(3, b""), X, odd_label, SAMPLE)
    plain = series(X, label(b"a", b"1"), SAMPLE)
    meta = ld(3, ld(2, b"x"))
    raw = plain + unsorted + plain + meta
    found = accepted(rw1_bytes.survey(raw, frozenset({b"x"}), frozenset()))
    assert found is not None and found.sorted == 1 and found.points == 4
    sorted_series = series(X, odd_label, label(b"b", b"1"), SAMPLE, ld(3, b""), SAMPLE)
    assert found.raw == plain + sorted_series + plain + meta
    assert found.picked == [plain[2:], sorted_series[2:], plain[2:]]
    assert found.metadata == [ld(2, b"x")]
    loose = accepted(rw1_bytes.survey(raw, frozenset(), frozenset(), strict=False))
    assert loose is not None and loose.raw is raw  # framing: as it came
    agree(raw, frozenset({b"x"}), frozenset())


# -- limits and modes -------------------------------------------------------------------------


ONE = series(X, label(b"ab", b"xyz"), SAMPLE, SAMPLE)


@needs_native
@pytest.mark.parametrize(
    ("limits", "accepted"),
    [
        pytest.param(Limits(max_series=1), True, id="series-at"),
        pytest.param(Limits(max_series=0), False, id="series-over"),
        pytest.param(Limits(max_samples=2), True, id="samples-at"),
        pytest.param(Limits(max_samples=1), False, id="samples-over"),
        pytest.param(Limits(max_labels_per_series=2), True, id="labels-at"),
        pytest.param(Limits(max_labels_per_series=1), False, id="labels-over"),
        pytest.param(Limits(max_label_name_length=8), True, id="name-at"),
        pytest.param(Limits(max_label_name_length=7), False, id="name-over"),
        pytest.param(Limits(max_label_value_length=3), True, id="value-at"),
        pytest.param(Limits(max_label_value_length=2), False, id="value-over"),
    ],
)
def test_each_limit_is_inclusive(limits: Limits, accepted: bool) -> None:
    assert (agree(ONE, frozenset(), frozenset(), limits) is not None) is accepted


@needs_native
def test_value_length_counts_utf8_bytes() -> None:
    raw = series(X, label(b"a", "éé".encode()))
    assert accepted(
        rw1_bytes.survey(raw, frozenset(), frozenset(), Limits(max_label_value_length=4))
    )
    assert rw1_bytes.survey(raw, frozenset(), frozenset(), Limits(max_label_value_length=3)) == (
        rw1_bytes.Refused(0)
    )


@needs_native
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(series(X, label(b"a", b"1"), label(b"a", b"2"), SAMPLE), id="duplicate-name"),
        pytest.param(series(X, label(b"a", b"\xff"), SAMPLE), id="invalid-utf8"),
        pytest.param(
            series(label(b"b", b"1"), label(b"a", b"\xff"), SAMPLE), id="unsorted-no-name"
        ),
    ],
)
def test_framing_forwards_label_sets_as_they_came(raw: bytes) -> None:
    """``receiver.validation: framing``, the explicit opt-out: framing and counts only."""
    assert accepted(rw1_bytes.survey(raw, frozenset(), frozenset())) is None
    found = accepted(rw1_bytes.survey(raw, frozenset(), frozenset(), strict=False))
    assert found is not None and found.raw is raw and found.sorted == 0 and found.series == 1


@needs_native
def test_survey_takes_names_as_bytes_only() -> None:
    with pytest.raises(TypeError, match="bytes"):
        rw1_bytes.survey(b"", frozenset({"gotk_resource_info"}), frozenset())  # type: ignore[arg-type]


@needs_native
def test_a_large_request_is_surveyed_without_recursion_or_copies() -> None:
    """3M samples in one series (issue 16 item 5): refused by the sample limit after reading
    just past it; the default limits let the same series with 1M samples through."""
    samples = SAMPLE * 1_000_000
    raw = ld(1, X + samples)
    found = accepted(rw1_bytes.survey(raw, frozenset(), frozenset(), Limits(max_samples=1_000_000)))
    assert found is not None and found.points == 1_000_000 and found.raw is raw
    assert rw1_bytes.survey(
        ld(1, X + samples + SAMPLE), frozenset(), frozenset(), Limits(max_samples=1_000_000)
    ) == rw1_bytes.Refused(0)


@needs_native
def test_a_refusal_is_worded_from_the_series_the_walk_refused_it_in() -> None:
    """Wording a refusal walks one series in Python, not every valid one before it: the walk
    says where it stopped, and the reference's words are the same as from a whole walk."""
    good = ld(1, X + SAMPLE)
    bad = ld(1, label(b"__name__", b"x") + label(b"a", b"1") + label(b"a", b"2") + SAMPLE)
    raw = good * 5000 + bad + good
    assert rw1_bytes.survey(raw, frozenset(), frozenset()) == rw1_bytes.Refused(5000)
    words = worded(raw, frozenset(), frozenset(), NO_LIMITS, 5000)
    assert "duplicate label name" in words and "(timeseries[5000])" in words
    assert words == worded(raw, frozenset(), frozenset(), NO_LIMITS, -1)
    # Outside a series (trailing bytes after valid ones): no series to start from.
    assert rw1_bytes.survey(good * 3 + b"\x00", frozenset(), frozenset()) == rw1_bytes.Refused(-1)


# -- the relay's scan -------------------------------------------------------------------------


def _fast_path(
    tmp_path: Path, keep_source: bool = True, validation: str = "full"
) -> tuple[views.FastPath, config_module.ReceiverConfig]:
    text = config_module.default_config_text().replace(
        "remote_write: []", "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
    )
    if not keep_source:
        text = text.replace("keep_source: true", "keep_source: false")
    path = tmp_path / "relay.yml"
    path.write_text(text)
    config = config_module.load_file(path)
    plan = views.plan(config)
    assert plan is not None and plan.keeps_inputs == keep_source and plan.prefixes
    return plan, config.receiver.model_copy(update={"validation": validation})


@pytest.mark.slow
@needs_native
@pytest.mark.parametrize("keep_source", [True, False], ids=["keep-source", "take-out"])
@pytest.mark.parametrize("workload_name, flux_fraction", [("flux-heavy", 0.05), ("cluster", 0.001)])
def test_scan_request_is_the_same_with_and_without_the_extension(
    tmp_path: Path,
    keep_source: bool,
    workload_name: str,
    flux_fraction: float,
) -> None:
    """On the benchmark's own requests (node-exporter, kube-state-metrics and Flux series):
    the C scanner reads them all, and the reference answers alike."""
    fast, limits = _fast_path(tmp_path, keep_source)
    spec = loadgen.WorkloadSpec(name=workload_name, flux_fraction=flux_fraction)
    workload = loadgen.Workload(spec)
    bodies = [workload.body(i, 0) for i in range(len(workload.batches))]

    def scan_all(survey: scan.Surveyor) -> list[scan.Scanned]:
        return [
            scan.scan_request(body, snappy.decompress(body, 1 << 30), limits, fast, survey)
            for body in bodies
        ]

    with_native = scan_all(scan.survey_compiled)
    without = scan_all(scan.survey_python)
    assert {s.scanner for s in with_native} == {"c"}
    assert {s.scanner for s in without} == {"python"}
    assert [s._replace(scanner="") for s in with_native] == [
        s._replace(scanner="") for s in without
    ]
    picked = sum(len(s.picked) for s in with_native)
    assert picked == pytest.approx(flux_fraction * 2000 * len(bodies), 0.3)
    assert all(s.inputs_forwarded == (keep_source or not s.picked) for s in with_native)
    assert all(
        s.forward is body
        for s, body in zip(with_native, bodies, strict=True)
        if keep_source or not s.picked
    )


@pytest.mark.parametrize(
    "survey",
    [
        pytest.param(scan.survey_compiled, id="c", marks=needs_native),
        pytest.param(scan.survey_python, id="python"),
    ],
)
def test_scan_request_refuses_an_invalid_request_with_the_reference_error(
    tmp_path: Path, survey: scan.Surveyor
) -> None:
    fast, limits = _fast_path(tmp_path)
    raw = series(X, label(b"a", b"1"), label(b"a", b"2"), SAMPLE)
    with pytest.raises(DecodeError, match="duplicate label name"):
        scan.scan_request(snappy.compress(raw), raw, limits, fast, survey)


@pytest.mark.parametrize("keep_source", [True, False], ids=["keep-source", "take-out"])
def test_scan_request_forwards_an_unsorted_request_sorted(
    tmp_path: Path, keep_source: bool
) -> None:
    """Issue 16 item 3: unsorted labels on a Flux series and on another series are sorted,
    counted and forwarded; the Flux series is picked sorted."""
    fast, limits = _fast_path(tmp_path, keep_source)
    flux = series(
        label(b"name", b"apps"),
        label(b"__name__", b"gotk_resource_info"),
        label(b"ready", b"True"),
        SAMPLE,
    )
    other = series(label(b"job", b"n"), label(b"__name__", b"up"), SAMPLE)
    raw = flux + other
    body = snappy.compress(raw)
    scanned = scan.scan_request(body, raw, limits, fast)
    assert scanned.sorted == 2 and scanned.forward is not body
    sorted_flux = series(
        label(b"__name__", b"gotk_resource_info"),
        label(b"name", b"apps"),
        label(b"ready", b"True"),
        SAMPLE,
    )
    sorted_other = series(label(b"__name__", b"up"), label(b"job", b"n"), SAMPLE)
    assert scanned.picked == [sorted_flux[2:]]
    forwarded = snappy.decompress(scanned.forward, 1 << 20)
    assert forwarded == (sorted_flux + sorted_other if keep_source else sorted_other)
    assert scanned.forward_points == (2 if keep_source else 1)


@needs_native
def test_scan_request_in_framing_mode_forwards_duplicates_as_they_came(tmp_path: Path) -> None:
    fast, limits = _fast_path(tmp_path, validation="framing")
    raw = series(X, label(b"a", b"1"), label(b"a", b"2"), SAMPLE)
    body = snappy.compress(raw)
    scanned = scan.scan_request(body, raw, limits, fast)
    assert scanned.forward is body and scanned.scanner == "c" and scanned.sorted == 0


@given(
    st.lists(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
        .map(str.encode)
        .filter(lambda name: name != b"__name__"),
        min_size=1,
        max_size=140,
        unique=True,
    ),
    st.randoms(use_true_random=False),
    st.integers(0, 40),
)
def test_many_labels_in_any_order_are_sorted_as_the_model_sorts_them(
    names: list[bytes], order: object, prefix: int
) -> None:
    """Label sets of up to 140 names in any order, reverse included, names alike for a long
    prefix: the walk sorts them by runs and merges (insertion alone was quadratic in them) and
    compares long names through memcmp; the bytes it forwards are the model's."""
    import random

    assert isinstance(order, random.Random)
    names = [b"p" * prefix + name for name in names]
    fields = [label(name, b"v") for name in names] + [X]
    order.shuffle(fields)
    if order.random() < 0.3:
        fields.sort(reverse=True)
    raw = series(*fields, SAMPLE) + series(*reversed(fields), SAMPLE)
    found = agree(raw, limits=Limits(max_label_name_length=4096))
    assert found is not None
    assert found.sorted >= 1  # the two orders are each other's reverse: one is unsorted
