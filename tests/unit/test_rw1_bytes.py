"""wire.rw1_bytes: requests handled as bytes agree with the full decoder (rw1 / upb) on every input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError as ProtoDecodeError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gotk_relay.model import Batch, FamilyMetadata, MetricType, Sample, Series, labels_from
from gotk_relay.wire import remote_pb2 as pb
from gotk_relay.wire import rw1, rw1_bytes
from gotk_relay.wire.errors import DecodeError
from tests.support.strategies import canonical, series, v1_batches

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


def reference_name(encoded: bytes) -> bytes | None:
    """What upb makes of it: the first label whose name is ``__name__``."""
    ts = pb.TimeSeries.FromString(encoded)
    for label in ts.labels:
        if label.name == "__name__":
            value: str = label.value
            return value.encode()
    return None


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
    assert rw1_bytes.metric_name(rw1_bytes.split(raw).series[0]) == b"up"


# -- metric_name -------------------------------------------------------------------------------

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


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(series_encodings())
def test_metric_name_agrees_with_upb_on_any_encoding(encoded: bytes) -> None:
    try:
        expected = reference_name(encoded)
    except ProtoDecodeError:  # upb refuses it (e.g. invalid UTF-8): nothing to agree on
        assume(False)
    assert rw1_bytes.metric_name(encoded) == expected


@settings(max_examples=300, deadline=None)
@given(series())
def test_metric_name_of_prometheus_encoded_series(item: Series) -> None:
    (encoded,) = encode_series(item)
    assert rw1_bytes.metric_name(encoded) == item.name.encode()


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"", None),
        (ld(1, ld(1, b"__name__") + ld(2, b"up")), b"up"),  # the fast path
        (ld(1, ld(2, b"up") + ld(1, b"__name__")), b"up"),  # value before name
        (ld(1, ld(1, b"__name__")), b""),  # proto3 omits an empty value
        (ld(1, ld(1, b"job") + ld(2, b"x")), None),  # no __name__ at all
        (ld(1, ld(1, b"__name__") + ld(2, b"a") + ld(2, b"b")), b"b"),  # last value wins
        (ld(1, ld(1, b"__name__") + ld(2, b"a")) + ld(1, ld(1, b"__name__") + ld(2, b"b")), b"a"),
        (ld(1, ld(1, b"__name__") + ld(2, b"up") + varint(9 << 3) + b"\x01"), b"up"),
        (ld(1, ld(1, b"__name__") + ld(2, b"x" * 300)), b"x" * 300),  # 2-byte lengths
        (ld(1, ld(1, b"__name__", pad=1) + ld(2, b"up")), b"up"),  # overlong length varint
        (ld(2, b"") + ld(1, ld(1, b"__name__") + ld(2, b"up")), b"up"),  # sample first
        (ld(1, ld(1, b"__name__") + ld(2, b"up"))[:-1], None),  # truncated label: see below
    ],
)
def test_metric_name_cases(encoded: bytes, expected: bytes | None) -> None:
    try:
        upb = reference_name(encoded)
    except ProtoDecodeError:
        with pytest.raises(DecodeError):
            rw1_bytes.metric_name(encoded)
        return
    assert upb == expected
    assert rw1_bytes.metric_name(encoded) == expected


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x0a",  # no length
        b"\x0a\x05\x0a\x08",  # label past the end
        ld(1, b"\x0a\x09__name__"),  # name past the label's end
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # varint of 11 bytes
        b"\x07",  # wire type 7
        varint(13 << 3 | 3) + varint(12 << 3 | 4),  # mismatched end group
        varint(13 << 3 | 3),  # unterminated group
        varint(13 << 3 | 3) * 101,  # groups nested beyond upb's limit
        b"\xf8\xff\xff\xff\x7f\x01",  # key over 32 bits
        b"\x00\x01",  # field number 0
    ],
)
def test_metric_name_refuses_broken_framing(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        rw1_bytes.metric_name(encoded)
    with pytest.raises(ProtoDecodeError):  # upb refuses them too
        pb.TimeSeries.FromString(encoded)


# -- select ------------------------------------------------------------------------------------

FLUX = frozenset({b"gotk_resource_info"})


def reference_select(parts: rw1_bytes.Split, names: frozenset[bytes]) -> list[int]:
    return [i for i, s in enumerate(parts.series) if reference_name(s) in names]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(series_encodings(), max_size=8),
    st.frozensets(
        st.one_of(
            st.sampled_from([b"up", b"gotk_resource_info", b"__name__", b"", b"x", b"x.", b"(x"]),
            st.binary(max_size=3),
        )
    ),
)
def test_select_agrees_with_upb_on_any_encoding(
    encodings: list[bytes], names: frozenset[bytes]
) -> None:
    try:
        expected = reference_select(rw1_bytes.Split(encodings, []), names)
    except ProtoDecodeError:
        assume(False)
    assert rw1_bytes.select(rw1_bytes.Split(encodings, []), names) == expected
    if not rw1_bytes.mentions(rw1_bytes.rebuild(encodings), names):
        assert expected == []


@pytest.mark.parametrize(
    ("names", "body", "expected"),
    [
        (frozenset(), b"anything", False),
        (frozenset({b""}), b"", True),
        (frozenset({b"a.b"}), b"axb", False),  # names are bytes, not patterns
        (frozenset({b"a.b"}), b"xa.b", True),
        (frozenset({b"\xff\x00("}), b"..\xff\x00(..", True),  # not UTF-8, metacharacters
        (frozenset({b"\xff"}), "\xff".encode(), False),  # one byte is one byte, not UTF-8
        (frozenset({b"gotk_resource_info", b"up"}), b"..up..", True),
    ],
)
def test_mentions(names: frozenset[bytes], body: bytes, expected: bool) -> None:
    assert rw1_bytes.mentions(body, names) is expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gotk_resource_info", "gotk_reconcile_condition", "up", "gotk_x"]),
            st.sampled_from(["", "gotk_resource_info", "gotk_reconcile_condition", "gotk_"]),
        ),
        max_size=10,
    ),
    st.frozensets(
        st.sampled_from([b"gotk_resource_info", b"gotk_reconcile_condition", b"gotk_suspend"])
    ),
)
def test_select_with_names_hidden_in_other_labels_and_metadata(
    rows: list[tuple[str, str]], names: frozenset[bytes]
) -> None:
    items = tuple(
        Series(labels_from({"__name__": name, "note": note}), (Sample(1.0, 1),))
        for name, note in rows
    )
    metadata = tuple(FamilyMetadata(n.decode()) for n in sorted(names))
    parts = rw1_bytes.split(rw1.encode(Batch(items, metadata)))
    expected = [i for i, item in enumerate(items) if item.name.encode() in names]
    assert rw1_bytes.select(parts, names) == expected


def test_select_edge_cases() -> None:
    parts = rw1_bytes.split(
        rw1.encode(
            Batch(
                (
                    Series(labels_from({"__name__": "gotk_resource_info"}), (Sample(1, 1),)),
                    Series(labels_from({"job": "no_name"}), (Sample(1, 1),)),
                    Series(labels_from({"__name__": "up"}), (Sample(1, 1),)),
                )
            )
        )
    )
    assert rw1_bytes.select(parts, frozenset()) == []
    assert rw1_bytes.select(rw1_bytes.Split([], []), FLUX) == []
    assert rw1_bytes.select(parts, FLUX) == [0]
    assert rw1_bytes.select(parts, frozenset({b"up", b"gotk_resource_info"})) == [0, 2]
    assert rw1_bytes.select(parts, frozenset({b""})) == []  # a missing name is not ""
    assert rw1_bytes.select(rw1_bytes.Split([b"", *parts.series, b""], []), FLUX) == [1]
    empty_name = ld(1, ld(1, b"__name__"))
    assert rw1_bytes.select(rw1_bytes.Split([b"", empty_name], []), frozenset({b""})) == [1]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real: Callable[[bytes], bytes | None] = rw1_bytes.metric_name

    def counted(series_bytes: bytes) -> bytes | None:
        calls.append(series_bytes)
        return real(series_bytes)

    monkeypatch.setattr(rw1_bytes, "metric_name", counted)
    return calls


def _node_batch(n: int, flux_every: int = 0) -> rw1_bytes.Split:
    items = []
    for i in range(n):
        if flux_every and i % flux_every == 0:
            labels = {"__name__": "gotk_resource_info", "name": f"app{i}", "ready": "True"}
        else:
            labels = {"__name__": "node_cpu_seconds_total", "cpu": str(i % 8), "i": str(i)}
        items.append(Series(labels_from(labels), (Sample(float(i), 1000),)))
    return rw1_bytes.split(rw1.encode(Batch(tuple(items))))


def test_select_reads_no_series_when_no_name_occurs(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _node_batch(500)
    calls = _counting(monkeypatch)
    names = frozenset({b"gotk_resource_info", b"gotk_reconcile_condition", b"gotk_suspend_status"})
    assert rw1_bytes.select(parts, names) == []
    assert calls == []


def test_select_reads_only_series_holding_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _node_batch(500, flux_every=20)
    calls = _counting(monkeypatch)
    assert rw1_bytes.select(parts, FLUX) == list(range(0, 500, 20))
    assert len(calls) == 25


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


def test_select_by_prefix_finds_every_name_that_starts_with_it() -> None:
    from gotk_relay.model import Batch, Sample, Series
    from gotk_relay.wire import rw1, rw1_bytes

    names = [
        "up",
        "gotk_resource_info",
        "node_load1",
        "gotk_reconcile_duration_seconds_count",
        "xgotk_y",
    ]
    raw = rw1.encode(Batch(tuple(Series((("__name__", n),), (Sample(1.0, 1),)) for n in names)))
    split = rw1_bytes.split(raw)
    assert rw1_bytes.select(split, frozenset(), frozenset({b"gotk_"})) == [1, 3]
    assert rw1_bytes.select(split, frozenset({b"up"}), frozenset({b"gotk_"})) == [0, 1, 3]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=64),
    st.frozensets(
        st.one_of(st.sampled_from([b"gotk_", b"up", b"", b"(x", b"\xff"]), st.binary(max_size=3))
    ),
    st.integers(min_value=0, max_value=70),
    st.integers(min_value=0, max_value=70),
)
def test_the_fast_search_answers_as_the_re2_module_does(
    data: bytes, names: frozenset[bytes], pos: int, end: int
) -> None:
    """select calls RE2 underneath the re2 module's wrapper; both must find the same place."""
    from gotk_relay.wire.rw1_bytes import _finder, _public_search, _searcher

    if not names:
        return
    end = min(end, len(data))
    pos = min(pos, end)
    assert _searcher(names)(data, pos, end) == _public_search(_finder(names), data, pos, end)
