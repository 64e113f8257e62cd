"""wire.rw1_bytes: requests handled as bytes agree with the full decoder (rw1 / upb) on every input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import Batch, FamilyMetadata, MetricType, Sample, Series, labels_from
from gotk_relay.wire import remote_pb2 as pb
from gotk_relay.wire import rw1, rw1_bytes
from gotk_relay.wire.errors import DecodeError
from tests.support.strategies import canonical, v1_batches

# -- a protobuf encoder written independently of the one under test --------------------------


def varint(value: int, pad: int = 0) -> bytes:
    """``value`` as a varint, made ``pad`` bytes longer than needed (still valid protobuf)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value or pad:
            out.append(byte | 0x80)
            if not value:
                pad -= 1
                while pad:
                    out.append(0x80)
                    pad -= 1
                out.append(0)
                break
        else:
            out.append(byte)
            break
    return bytes(out)


def ld(field: int, payload: bytes, pad: int = 0) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload), pad) + payload


def encode_series(*items: Series) -> list[bytes]:
    return list(rw1_bytes.split(rw1.encode(Batch(items))).series)


# -- split / rebuild ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(v1_batches())
def test_split_then_rebuild_is_byte_exact(batch: Batch) -> None:
    raw = rw1.encode(batch)
    parts = rw1_bytes.split(raw)
    assert len(parts.series) == len(batch.series)
    assert len(parts.metadata) == len(batch.metadata)
    assert rw1_bytes.rebuild(parts.series, parts.metadata) == raw
    assert rw1_bytes.rebuild(iter(parts.series), (m for m in parts.metadata)) == raw
    for item, encoded in zip(batch.series, parts.series, strict=True):
        assert canonical(rw1.decode(rw1_bytes.rebuild([encoded])).series[0]) == canonical(item)


def test_split_of_an_empty_request() -> None:
    assert rw1_bytes.split(b"") == rw1_bytes.Split([], [])
    assert rw1_bytes.rebuild([], []) == b""


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a",  # key without length
        b"\x0a\x05ab",  # length past the end
        b"\x1a\xff\xff\xff\xff\x0f",  # metadata longer than the body
        b"\x08",  # varint field without value
        b"\x07",  # wire type 7
        b"\x00\x01",  # field number 0
    ],
)
def test_split_refuses_broken_framing_with_one_line(raw: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        rw1_bytes.split(raw)
    reason = str(info.value)
    assert reason.startswith("invalid protobuf WriteRequest:")
    assert "\n" not in reason and "fastpath" not in reason
    with pytest.raises(DecodeError):  # the full decoder agrees
        rw1.decode(raw)


def test_split_keeps_a_malformed_series_as_it_came() -> None:
    """Only the top level is parsed: the series' inside is the receiver's business."""
    raw = ld(1, b"\x12\x05ab") + ld(1, b"")
    assert rw1_bytes.split(raw).series == [b"\x12\x05ab", b""]


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(v1_batches(), v1_batches(), st.data())
def test_drop_replace_and_append_series_without_touching_the_others(
    batch: Batch, extra: Batch, data: st.DataObject
) -> None:
    parts = rw1_bytes.split(rw1.encode(batch))
    n = len(batch.series)
    dropped = data.draw(st.sets(st.integers(0, max(n - 1, 0))) if n else st.just(set()))
    replaced = data.draw(st.sets(st.integers(0, max(n - 1, 0))) if n else st.just(set()))
    replacement = Series(labels_from({"__name__": "replaced", "job": "x"}), (Sample(1.0, 2),))
    new_encoded = encode_series(replacement)[0]
    extra_encoded = rw1_bytes.split(rw1.encode(extra)).series

    out: list[bytes] = []
    expected: list[Series] = []
    for i, (item, encoded) in enumerate(zip(batch.series, parts.series, strict=True)):
        if i in dropped:
            continue
        out.append(new_encoded if i in replaced else encoded)
        expected.append(replacement if i in replaced else item)
    out.extend(extra_encoded)
    expected.extend(extra.series)

    body = rw1_bytes.rebuild(out, parts.metadata)
    want = Batch(tuple(expected), batch.metadata)
    assert canonical(rw1.decode(body, validate=False)) == canonical(want)


def test_rebuild_puts_series_before_metadata_whatever_order_they_came_in() -> None:
    series_bytes = encode_series(Series(labels_from({"__name__": "up"}), (Sample(1.0, 5),)))[0]
    meta = FamilyMetadata("up", MetricType.GAUGE, "help")
    meta_bytes = rw1_bytes.split(rw1.encode(Batch((), (meta,)))).metadata[0]
    raw = ld(3, meta_bytes) + ld(1, series_bytes)  # metadata first: legal, not Prometheus' order
    parts = rw1_bytes.split(raw)
    assert parts == rw1_bytes.Split([series_bytes], [meta_bytes])
    rebuilt = rw1_bytes.rebuild(*parts)
    assert rebuilt == ld(1, series_bytes) + ld(3, meta_bytes)
    assert rw1.decode(rebuilt) == rw1.decode(raw)


def test_rebuild_uses_multi_byte_lengths() -> None:
    long_value = "v" * 20000
    item = Series(labels_from({"__name__": "up", "big": long_value}), (Sample(1.0, 5),))
    raw = rw1.encode(Batch((item,)))
    assert rw1_bytes.rebuild(*rw1_bytes.split(raw)) == raw


# -- hand-made series encodings (any field order, padding; used by test_picked) -------------

NAMES = st.sampled_from(["__name__", "job", "__name", "a", "__name__x", "Z"])
VALUES = st.one_of(
    st.sampled_from(["", "up", "gotk_resource_info", "__name__", "x" * 200]),
    st.text(max_size=10),
)


@st.composite
def label_encodings(draw: st.DrawFn) -> bytes:
    """One Label message: name/value in any order, repeated or absent, with unknown fields."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["name", "value", "name", "value", "unknown", "mismatch"]))
        pad = draw(st.sampled_from([0, 0, 0, 1, 3]))
        if kind == "name":
            parts.append(ld(1, draw(NAMES).encode(), pad))
        elif kind == "value":
            parts.append(ld(2, draw(VALUES).encode(), pad))
        elif kind == "unknown":
            parts.append(draw(unknown_fields))
        else:  # field 1 or 2 with a non-LEN wire type: an unknown field to protobuf
            parts.append(varint(draw(st.sampled_from([1, 2])) << 3 | 0) + varint(7))
    return b"".join(parts)


unknown_fields = st.one_of(
    st.builds(lambda v: varint(9 << 3 | 0) + varint(v), st.integers(0, 2**64 - 1)),
    st.builds(lambda b: varint(10 << 3 | 1) + b, st.binary(min_size=8, max_size=8)),
    st.builds(lambda b: varint(11 << 3 | 5) + b, st.binary(min_size=4, max_size=4)),
    st.builds(lambda b: ld(12, b), st.binary(max_size=12)),
    st.builds(  # a group holding a varint, a LEN and a nested group
        lambda b: (
            varint(13 << 3 | 3)
            + varint(1 << 3 | 0)
            + varint(5)
            + ld(2, b)
            + varint(14 << 3 | 3)
            + varint(14 << 3 | 4)
            + varint(13 << 3 | 4)
        ),
        st.binary(max_size=6),
    ),
)


@st.composite
def series_encodings(draw: st.DrawFn) -> bytes:
    """A TimeSeries in any field order, with samples, unknown fields, odd varints."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["label", "label", "label", "sample", "unknown", "mismatch"]))
        if kind == "label":
            parts.append(ld(1, draw(label_encodings()), draw(st.sampled_from([0, 0, 1]))))
        elif kind == "sample":
            parts.append(ld(2, b"\x09" + b"\x00" * 8 + b"\x10\x05"))
        elif kind == "unknown":
            parts.append(draw(unknown_fields))
        else:
            parts.append(varint(1 << 3 | 5) + b"\x00\x00\x00\x00")
    return b"".join(parts)


# -- select ------------------------------------------------------------------------------------


# -- count_points ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(v1_batches())
def test_count_points_is_exact(batch: Batch) -> None:
    raw = rw1.encode(batch)
    expected = sum(len(s.samples) + len(s.histograms) for s in batch.series)
    assert rw1_bytes.count_points(raw) == expected
    assert rw1_bytes.count_points(rw1_bytes.split(raw)) == expected


def test_count_points_ignores_exemplars_labels_and_metadata() -> None:
    item = ld(1, ld(1, b"__name__") + ld(2, b"x")) + ld(2, b"") + ld(3, b"") + ld(4, b"")
    raw = ld(1, item) * 3 + ld(3, b"\x08\x01")
    assert rw1_bytes.count_points(raw) == 6
    assert rw1_bytes.count_points(rw1_bytes.split(raw)) == 6


def test_count_points_refuses_a_series_with_broken_framing() -> None:
    """Each series is parsed within its own length: no miscount across series boundaries."""
    broken = rw1_bytes.Split([b"\x12\x05ab", ld(1, b"abc")], [])
    with pytest.raises(DecodeError):
        rw1_bytes.count_points(broken)
    with pytest.raises(DecodeError):
        rw1_bytes.count_points(rw1_bytes.rebuild(broken.series))
    with pytest.raises(DecodeError):
        rw1_bytes.count_points(b"\x0a")


# -- the reduced schemas themselves ------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(v1_batches())
def test_reduced_schemas_are_wire_compatible_with_prometheus(batch: Batch) -> None:
    """FlatTimeSeries (for the lead's per-series rewrites) slices exactly what upb parses."""
    from gotk_relay.wire import fastpath_pb2 as fp

    raw = rw1.encode(batch)
    full = pb.WriteRequest.FromString(raw)
    for encoded, ts in zip(rw1_bytes.split(raw).series, full.timeseries, strict=True):
        flat = fp.FlatTimeSeries.FromString(encoded)
        for sliced, parsed in (
            (flat.labels, ts.labels),
            (flat.samples, ts.samples),
            (flat.histograms, ts.histograms),
            (flat.exemplars, ts.exemplars),
        ):
            assert list(sliced) == [m.SerializeToString() for m in parsed]
        assert flat.SerializeToString() == encoded
