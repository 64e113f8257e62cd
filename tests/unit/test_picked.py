"""wire.picked: the same Batch, or the same error, as ``rw1.decode(rw1_bytes.rebuild(...))``.

The cache is module-wide and deliberately not reset between examples: a label part learned from
one request must never change what another decodes to, under any limits.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Sequence
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Histogram,
    MetricType,
    Sample,
    Series,
    float_bits,
)
from gotk_relay.wire import picked, rw1, rw1_bytes, validate
from gotk_relay.wire.errors import DecodeError
from gotk_relay.wire.labels import NO_LIMITS, LabelLimitError, Limits, TooManySeriesError
from tests.support.strategies import ORDINARY_NAN, canonical, label_sets, series, v1_batches

Outcome = tuple[object, ...]

# -- an independent protobuf encoder, for encodings rw1.encode never writes -------------------


def varint(value: int, pad: int = 0) -> bytes:
    """``value`` (two's complement when negative) as a varint, ``pad`` bytes longer than needed."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    if pad:
        out.append(value | 0x80)
        out.extend(b"\x80" * (pad - 1))
        out.append(0)
    else:
        out.append(value)
    return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def label_field(name: str, value: str) -> bytes:
    return ld(1, ld(1, name.encode()) + ld(2, value.encode()))


def double(value: float) -> bytes:
    return struct.pack("<d", value)


# -- outcomes --------------------------------------------------------------------------------


def outcome(decode: Callable[[], Batch]) -> Outcome:
    try:
        return ("ok", canonical(decode()))
    except DecodeError as exc:
        return ("error", type(exc), str(exc))


def reference(series: Sequence[bytes], metadata: Sequence[bytes], limits: Limits) -> Outcome:
    return outcome(lambda: rw1.decode(rw1_bytes.rebuild(series, metadata), limits=limits))


def assert_same(series: Sequence[bytes], metadata: Sequence[bytes], limits: Limits) -> Outcome:
    want = reference(series, metadata, limits)
    for _ in range(2):  # the second call finds every label part it may cache already cached
        assert outcome(lambda: picked.decode(series, metadata, limits)) == want
    return want


limits_values = st.one_of(
    st.just(NO_LIMITS),
    st.builds(
        Limits,
        max_series=st.integers(1, 8),
        max_labels_per_series=st.integers(1, 8),
        max_label_name_length=st.integers(1, 14),
        max_label_value_length=st.integers(1, 22),
    ),
)

# -- equivalence over arbitrary batches ------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(v1_batches(), limits_values)
def test_same_batch_or_error_as_rw1(batch: Batch, limits: Limits) -> None:
    parts = rw1_bytes.split(rw1.encode(batch))
    assert_same(parts.series, parts.metadata, limits)


@st.composite
def broken_label_sets(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
    """Label sets a sender may get wrong: refused (a name twice, an empty name, no metric name)
    or accepted and sorted (shuffled, an empty value)."""
    labels = list(draw(label_sets()))
    how = draw(st.sampled_from(["shuffle", "duplicate", "empty-name", "empty-value", "no-name"]))
    if how == "shuffle":
        labels = draw(st.permutations(labels))
    elif how == "duplicate":
        labels.append(labels[-1])
    elif how == "empty-name":
        labels.insert(0, ("", "x"))
    elif how == "empty-value":
        labels.append(("zz", ""))
    else:
        labels = [pair for pair in labels if pair[0] != "__name__"]
    return tuple(labels)


def _with_broken_labels(item: Series) -> st.SearchStrategy[Series]:
    return broken_label_sets().map(lambda labels: item._replace(labels=labels))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(series(), series().flatmap(_with_broken_labels)), max_size=5), limits_values
)
def test_invalid_labels_raise_what_rw1_raises(items: list[Series], limits: Limits) -> None:
    parts = rw1_bytes.split(rw1.encode(Batch(tuple(items))))
    assert_same(parts.series, parts.metadata, limits)


# -- the encodings a sender may use ----------------------------------------------------------


@st.composite
def sample_fields(draw: st.DrawFn) -> bytes:
    """A Sample as Prometheus writes it, with proto3's omissions, or in unusual encodings."""
    value = draw(
        st.one_of(
            st.floats(),
            st.sampled_from([STALE_NAN, ORDINARY_NAN, 0.0, -0.0, 1.0, float("inf"), 5e-324]),
        )
    )
    timestamp = draw(
        st.one_of(
            st.integers(1, 2**42),
            st.just(0),
            st.integers(-(2**63), -1),
            st.integers(2**56, 2**63 - 1),
        )
    )
    pad = draw(st.sampled_from([0, 0, 0, 1, 2]))
    shape = draw(st.sampled_from(["usual", "usual", "usual", "swapped", "unknown", "repeated"]))
    value_part = b"" if value == 0.0 and float_bits(value) == 0 else b"\x09" + double(value)
    ts_part = b"" if timestamp == 0 else b"\x10" + varint(timestamp, pad)
    if shape == "usual":
        inner = value_part + ts_part
    elif shape == "swapped":
        inner = ts_part + value_part
    elif shape == "unknown":
        inner = value_part + ts_part + varint(7 << 3) + varint(draw(st.integers(0, 300)))
    else:
        inner = b"\x09" + double(2.5) + b"\x10" + varint(3) + value_part + ts_part
    return ld(2, inner)


@st.composite
def series_encodings(draw: st.DrawFn) -> bytes:
    """An encoded TimeSeries built field by field, mostly in Prometheus' own shape."""
    labels = draw(st.one_of(label_sets(), label_sets(), broken_label_sets()))
    parts = [label_field(name, value) for name, value in labels]
    samples = draw(st.lists(sample_fields(), max_size=3))
    extras: list[bytes] = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["unknown", "label-late", "exemplar", "histogram", "junk"]))
        if kind == "unknown":
            extras.append(varint(9 << 3) + varint(draw(st.integers(0, 2**20))))
        elif kind == "label-late":
            extras.append(label_field("zz_late", "v"))
        elif kind == "exemplar":
            extras.append(ld(3, ld(1, ld(1, b"trace_id") + ld(2, b"abc")) + b"\x11" + double(1.0)))
        elif kind == "histogram":
            extras.append(ld(4, b"\x08\x03\x19" + double(2.0)))
        else:
            extras.append(draw(st.binary(min_size=1, max_size=4)))
    where = draw(st.sampled_from(["after", "before", "between"]))
    if where == "after":
        fields = parts + samples + extras
    elif where == "before":
        fields = extras + parts + samples
    else:
        fields = parts[:1] + extras + parts[1:] + samples
    return b"".join(fields)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.lists(series_encodings(), max_size=4), limits_values)
def test_hand_encoded_series_decode_as_rw1_decodes_them(
    encoded: list[bytes], limits: Limits
) -> None:
    assert_same(encoded, [], limits)


@settings(max_examples=300, deadline=None)
@given(series_encodings(), st.data())
def test_mangled_series_decode_or_fail_as_rw1(encoded: bytes, data: st.DataObject) -> None:
    mangled = bytearray(encoded)
    if mangled and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(mangled) - 1))
        mangled[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mangled)))
    variants = [bytes(mangled), bytes(mangled[:cut]), bytes(mangled[cut:])]
    assert_same(variants, [], NO_LIMITS)
    assert_same([encoded, *variants], [], NO_LIMITS)


@pytest.mark.parametrize(
    "compiled",
    [
        pytest.param(
            True,
            id="compiled-run",
            marks=pytest.mark.skipif(not rw1_bytes.NATIVE, reason="_survey not built"),
        ),
        pytest.param(False, id="python-loop"),
    ],
)
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(series(), min_size=1, max_size=4), min_size=1, max_size=3),
    st.lists(series_encodings(), max_size=2),
    st.integers(2, 3),
    st.data(),
)
def test_known_series_decode_alike_in_the_compiled_run_and_the_loop(
    compiled: bool,
    batches: list[list[Series]],
    odd: list[bytes],
    rounds: int,
    data: st.DataObject,
) -> None:
    """The usual series are decoded a run at a time in C (``decode_known``) once their label
    part is cached, the others by the Python loop it hands them to: either way, every round
    (the first learns the label parts, the next find them), what ``rw1.decode`` gives."""
    cache = picked.LabelCache()
    if compiled:
        assert cache.known is not None
    else:
        cache.known = None
    # Series as Prometheus writes them (valid, each batch's label sets distinct), and a few
    # hand-encoded ones (odd shapes, invalid labels) that the run hands to the loop.
    pool = [
        part
        for items in batches
        for part in rw1_bytes.split(rw1.encode(Batch(tuple(items)))).series
    ]
    for round_ in range(rounds):
        # Again in any order, some twice: a run stops and starts anywhere.
        request = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
        if round_ and odd and data.draw(st.booleans()):
            request.insert(data.draw(st.integers(0, len(request))), data.draw(st.sampled_from(odd)))
        want = reference(request, [], NO_LIMITS)
        assert outcome(partial(picked.decode, request, [], NO_LIMITS, cache)) == want


# -- cases worth naming ----------------------------------------------------------------------

UP = (("__name__", "up"), ("job", "node"))


def encode(*items: Series, metadata: tuple[FamilyMetadata, ...] = ()) -> rw1_bytes.Split:
    return rw1_bytes.split(rw1.encode(Batch(items, metadata)))


@pytest.mark.parametrize(
    "value",
    [STALE_NAN, ORDINARY_NAN, float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.0],
    ids=["stale", "nan", "+inf", "-inf", "-0", "0", "denormal", "one"],
)
def test_float_bits_are_kept(value: float) -> None:
    parts = encode(Series(UP, (Sample(value, 1_764_000_000_000), Sample(value, 5))))
    for _ in range(2):
        got = picked.decode(parts.series, [], NO_LIMITS).series[0].samples
        assert [float_bits(s.value) for s in got] == [float_bits(value)] * 2
        assert [s.timestamp for s in got] == [1_764_000_000_000, 5]


def test_repeated_label_sets_come_from_the_cache() -> None:
    # Caches are per Limits value: one no other test uses starts empty.
    limits = Limits(max_series=100_001)
    first = picked.decode(encode(Series(UP, (Sample(1.0, 10),))).series, [], limits)
    again = picked.decode(
        encode(Series(UP, (Sample(2.0, 20),))).series, [], Limits(max_series=100_001)
    )
    assert again.series[0].labels is first.series[0].labels  # equal Limits share one cache
    assert again.series[0].samples == (Sample(2.0, 20),)
    other = picked.decode(encode(Series(UP, (Sample(2.0, 20),))).series, [], NO_LIMITS)
    assert other.series[0].labels == UP
    assert other.series[0].labels is not first.series[0].labels


def test_label_sets_share_their_pairs_and_label_names() -> None:
    """Two objects' label sets: the pair they both have is one tuple, and the pairs of their
    own (each object's name) share one str for the label name (memory per Flux object)."""
    limits = Limits(max_series=100_002)  # a cache of its own
    first, second = (
        {"__name__": "gotk_resource_info", "job": "ksm", "name": f"object-{i}"} for i in (1, 2)
    )
    batch = picked.decode(
        encode(
            Series(tuple(sorted(first.items())), (Sample(1.0, 10),)),
            Series(tuple(sorted(second.items())), (Sample(1.0, 10),)),
        ).series,
        [],
        limits,
    )
    one, two = (dict(zip(("__name__", "job", "name"), s.labels, strict=True)) for s in batch.series)
    assert one["job"] is two["job"]
    assert one["name"] != two["name"]
    assert one["name"][0] is two["name"][0]
    assert [s.labels for s in batch.series] == [
        tuple(sorted(first.items())),
        tuple(sorted(second.items())),
    ]


def test_a_label_set_accepted_under_loose_limits_is_refused_under_strict_ones() -> None:
    parts = encode(Series(UP, (Sample(1.0, 10),)))
    assert picked.decode(parts.series, [], NO_LIMITS).series[0].labels == UP
    for strict, message in [
        (Limits(max_labels_per_series=1), "over receiver.max_labels_per_series"),
        (Limits(max_label_value_length=3), "over receiver.max_label_value_length"),
    ]:
        with pytest.raises(LabelLimitError, match=message):
            picked.decode(parts.series, [], strict)
    assert picked.decode(parts.series, [], NO_LIMITS).series[0].labels == UP


def test_too_many_series_is_refused_before_anything_is_decoded() -> None:
    parts = encode(Series(UP, (Sample(1.0, 10),)), Series(UP, (Sample(1.0, 11),)))
    with pytest.raises(TooManySeriesError, match="request has 2 series"):
        picked.decode(parts.series, [], Limits(max_series=1))
    # The count is checked once the request's own framing is, before any series is read.
    with pytest.raises(TooManySeriesError, match="request has 3 series"):
        picked.decode([b"\x0a", *parts.series], [], Limits(max_series=1))
    with pytest.raises(DecodeError, match=r"invalid protobuf WriteRequest: timeseries\[0\]"):
        picked.decode([b"\x0a", *parts.series], [], Limits(max_series=3))


def test_metadata_is_decoded_and_broken_metadata_refused() -> None:
    meta = (FamilyMetadata("up", MetricType.GAUGE, "Up.", "s"),)
    parts = encode(Series(UP, (Sample(1.0, 10),)), metadata=meta)
    assert picked.decode(parts.series, parts.metadata, NO_LIMITS).metadata == meta
    assert picked.decode([], parts.metadata, NO_LIMITS) == Batch((), meta)
    assert_same(parts.series, [b"\x12\x05ab"], NO_LIMITS)


def test_a_series_with_histograms_or_several_samples_takes_the_general_path() -> None:
    parts = encode(
        Series(UP, (Sample(1.0, 10), Sample(0.0, 20), Sample(3.0, 0))),
        Series((("__name__", "h"),), (), (Histogram(7, count_value=3, sum=2.0),)),
        Series(UP, (Sample(1.0, -5),)),
    )
    assert_same(parts.series, [], NO_LIMITS)


def test_a_full_cache_drops_its_oldest_and_keeps_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(picked.LABEL_CACHES, "limit", 3)  # for the cache of a new Limits value
    limits = Limits(max_series=1_000_003)  # a value no other test decodes with
    items = [Series((("__name__", f"m{i}"),), (Sample(float(i), i + 1),)) for i in range(10)]
    parts = encode(*items)
    for _ in range(3):
        assert canonical(picked.decode(parts.series, [], limits)) == canonical(Batch(tuple(items)))
        small = [cache for cache in picked.LABEL_CACHES.live() if cache.limit == 3]
        assert len(small) == 1
        kept = [labels for labels in small[0].entries.values() if labels is not None]
        assert kept == [items[i].labels for i in (7, 8, 9)]  # the newest, never emptied


SMALL_ENTRIES, SMALL_BYTES = 5, 160
SMALL = Limits(max_series=1_000_007)  # a value no other test decodes with


def _constant(key: bytes) -> int:
    return 0  # every label part's hash collides


# Hashers a LabelCache may be given: its own (None: the compiled lookup when built), Python's
# ``hash`` through the reference lookup, one under which every part collides, and one under
# which parts of the same length collide.
HASHERS = [None, hash, _constant, len]
HASHER_IDS = ["default", "hash", "constant", "length"]


def small_cache(hasher: Callable[[bytes], int] | None) -> picked.LabelCache:
    cache = picked.LabelCache(hasher)
    cache.bounded.limit = cache.raw.limit = SMALL_ENTRIES
    return cache


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(series(), min_size=1, max_size=6), min_size=1, max_size=8))
def test_a_small_cache_stays_in_its_bounds_and_decodes_as_a_fresh_decode(
    hasher: Callable[[bytes], int] | None, requests: list[list[Series]]
) -> None:
    """Incremental eviction under both bounds (entries in each dict, key bytes of the parts kept
    by their bytes), whatever the hashes: after every request the cache is within them, and
    every decode, twice (the second finds what the first cached, or what it evicted), is what
    ``rw1.decode`` gives, also when every part's hash collides with every other's."""
    saved = picked.BUDGET.key_bytes
    picked.BUDGET.key_bytes = SMALL_BYTES
    cache = small_cache(hasher)
    try:
        for items in requests:
            parts = rw1_bytes.split(rw1.encode(Batch(tuple(items))))
            want = reference(parts.series, [], SMALL)
            for _ in range(2):
                assert outcome(partial(picked.decode, parts.series, [], SMALL, cache)) == want
            assert len(cache.entries) <= SMALL_ENTRIES and len(cache.by_bytes) <= SMALL_ENTRIES
            assert all(type(key) is int for key in cache.entries)
            assert all(type(key) is bytes for key in cache.by_bytes)
            assert cache.key_bytes == sum(map(len, cache.by_bytes)) <= SMALL_BYTES
    finally:
        picked.BUDGET.key_bytes = saved


def test_bound_applies_to_the_caches_made_already_with_its_floors() -> None:
    saved = picked.LABEL_CACHES.limit, picked.BUDGET.key_bytes
    try:
        picked.decode(encode(Series(UP, (Sample(1.0, 10),))).series, [], NO_LIMITS)
        picked.bound(500_000, 400 << 20)
        assert {cache.limit for cache in picked.LABEL_CACHES.live()} == {500_000}
        assert {cache.limit for cache in picked.BYTES_CACHES.live()} == {500_000}
        assert picked.BUDGET.key_bytes == 400 << 20
        picked.bound(10, 10)  # a tiny fleet: the floors
        assert {cache.limit for cache in picked.LABEL_CACHES.live()} == {picked.MIN_ENTRIES}
        assert {cache.limit for cache in picked.BYTES_CACHES.live()} == {picked.MIN_ENTRIES}
        assert picked.BUDGET.key_bytes == picked.MIN_KEY_BYTES
    finally:
        picked.bound(*saved)


@pytest.mark.slow  # the benchmark's flux-heavy workload, 3 rounds
def test_loadgen_flux_heavy_rounds() -> None:
    """The benchmark's own traffic: a realistic request, round after round."""
    from tests.support import loadgen

    spec = loadgen.WorkloadSpec("flux-heavy", series=4000, flux_fraction=0.05)
    workload = loadgen.Workload(spec, precompress=False)
    names = frozenset({b"gotk_resource_info"})
    limits = Limits(200_000, 128, 1024, 4096)
    for round_ in range(3):
        for index in range(len(workload.batches)):
            parts_raw = workload.raw(index, round_)
            parts = rw1_bytes.split(parts_raw)
            chosen = validate.survey(parts_raw, names, frozenset(), NO_LIMITS).picked
            assert chosen
            for series_set in (chosen, list(parts.series)):
                want = rw1.decode(rw1_bytes.rebuild(series_set, parts.metadata), limits=limits)
                got = picked.decode(series_set, parts.metadata, limits)
                assert canonical(got) == canonical(want)


def test_series_sharing_several_trailing_samples_keep_them_all() -> None:
    samples = (Sample(1.0, 10), Sample(0.0, 20), Sample(2.0, 30))
    other = (("__name__", "up"), ("job", "other"))
    parts = encode(Series(UP, samples), Series(other, samples), Series(UP, samples[1:]))
    assert_same(parts.series, [], NO_LIMITS)
    got = picked.decode(parts.series, [], NO_LIMITS)
    assert [s.samples for s in got.series] == [samples, samples, samples[1:]]


USUAL = ld(2, b"\x09" + double(1.0) + b"\x10" + varint(1_764_000_000_000))
LOOKALIKES = {
    # Value and timestamp inside a label value: not a sample at all.
    "in-a-label": ld(1, ld(1, b"zz") + ld(2, b"\x12\x0b\x09" + double(2.0) + b"\x10\x05")),
    # A timestamp varint of 10 bytes: a negative timestamp.
    "negative": ld(2, b"\x09" + double(1.0) + b"\x10" + varint(-5)),
}
# Look-alikes that hold a declared field of the wrong wire type: protobuf libraries skip it as
# unknown, Prometheus 3 and Mimir refuse the request, and so does the strict check that every
# request passes before its picked series reach ``picked.decode``.
REFUSED_LOOKALIKES = {
    # A value-only sample, then a varint field 2 of the series (samples is LEN): the bytes of
    # a usual sample whose length byte says 9 instead of 16.
    "short-length": ld(2, b"\x09" + double(4.0)) + b"\x10" + varint(1_764_000_000_000),
    # An empty sample, then the same stray varint.
    "empty-sample": ld(2, b"") + b"\x10" + varint(77),
    # A timestamp-only sample whose length covers the usual sample after it too (inside a
    # Sample, that one is a field 2, timestamp, of the wrong wire type).
    "long-length": b"\x12" + varint(2 + len(USUAL)) + b"\x10\x05" + USUAL,
    # The same with a value.
    "long-length-value": b"\x12"
    + varint(11 + len(USUAL))
    + b"\x09"
    + double(3.0)
    + b"\x10\x05"
    + USUAL,
}


@pytest.mark.parametrize("tail", list(REFUSED_LOOKALIKES.values()), ids=list(REFUSED_LOOKALIKES))
def test_sample_lookalikes_of_the_wrong_wire_type_are_refused(tail: bytes) -> None:
    head = b"".join(label_field(k, v) for k, v in UP)
    with pytest.raises(DecodeError, match=r"has wire type [A-Z0-9]+, declared"):
        rw1.decode(rw1_bytes.rebuild([head + USUAL, head + tail]))


@pytest.mark.parametrize("tail", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
def test_sample_lookalikes_decode_as_protobuf_reads_them(tail: bytes) -> None:
    head = b"".join(label_field(k, v) for k, v in UP)
    encoded = [head + USUAL, head + tail, head + USUAL + tail, head + tail + USUAL]
    assert assert_same(encoded, [], NO_LIMITS)[0] == "ok"
    for item in encoded:
        assert_same([item], [], NO_LIMITS)


LABELS_PART = b"\n\r\n\x08__name__\x12\x010"
MISTYPED_SAMPLES = b"\x11\x00\x00\x00\x00\x00\x00\xf0?"  # field 2 as I64: samples must be LEN
SAMPLE = b"\x12\x0b\t\x00\x00\x00\x00\x00\x00\xf0?\x10\x01"  # value 1.0 at timestamp 1


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(LABELS_PART + b"\xb8\x1a\x1a" + MISTYPED_SAMPLES, id="after-the-labels"),
        pytest.param(LABELS_PART + MISTYPED_SAMPLES + SAMPLE, id="inside-the-label-part"),
    ],
)
def test_a_field_of_the_wrong_wire_type_is_refused_as_rw1_refuses_it(data: bytes) -> None:
    """The survey that picked a series may have checked the framing only; a known field with
    the wrong wire type must not pass as an unknown one (found by hypothesis)."""
    found = assert_same([data], [], NO_LIMITS)
    assert found[0] == "error"


# -- the label cache keyed by hash, confirmed against the labels (labels_equal) ---------------

EQUALS = [
    pytest.param(picked.labels_equal_reference, id="reference"),
    pytest.param(
        rw1_bytes.labels_equal_compiled,
        id="compiled",
        marks=pytest.mark.skipif(not rw1_bytes.NATIVE, reason="_survey not built"),
    ),
]
any_text = st.text(max_size=140)  # ASCII and not, lengths across the one-byte varint limit


@st.composite
def label_parts(draw: st.DrawFn, labels: tuple[tuple[str, str], ...]) -> bytes:
    """An encoding of ``labels`` or of something near them: the canonical one (written by this
    file's own encoder), the same labels encoded otherwise, or arbitrary bytes."""
    how = draw(
        st.sampled_from(["canonical", "padded", "empty-written", "swapped", "unknown", "other"])
    )
    fields = []
    for name, value in labels:
        name_bytes, value_bytes = name.encode(), value.encode()
        name_field = ld(1, name_bytes) if name_bytes else b""
        value_field = ld(2, value_bytes) if value_bytes else b""
        body = name_field + value_field
        if how == "padded" and draw(st.booleans()):
            body = b"\x0a" + varint(len(name_bytes), pad=1) + name_bytes + value_field
        elif how == "empty-written" and draw(st.booleans()):
            body = ld(1, name_bytes) + ld(2, value_bytes)
        elif how == "swapped" and draw(st.booleans()):
            body = value_field + name_field
        elif how == "unknown" and draw(st.booleans()):
            body += varint(3 << 3) + varint(draw(st.integers(0, 300)))
        fields.append(b"\x0a" + varint(len(body)) + body)
    if how == "other":
        return draw(st.binary(max_size=40))
    return b"".join(fields)


@pytest.mark.parametrize("equal", EQUALS)
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_labels_equal_is_true_exactly_for_rw1s_encoding(
    equal: Callable[[bytes, tuple[tuple[str, str], ...]], bool], data: st.DataObject
) -> None:
    labels = data.draw(st.lists(st.tuples(any_text, any_text), max_size=4).map(tuple))
    key = data.draw(label_parts(labels))
    assert equal(key, labels) is (rw1._encode_labels(labels) == key)


@pytest.mark.skipif(not rw1_bytes.NATIVE, reason="_survey not built")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.lists(st.tuples(any_text, any_text), max_size=3).map(tuple))
def test_labels_equal_compiled_answers_as_its_twin_on_any_bytes(
    key: bytes, labels: tuple[tuple[str, str], ...]
) -> None:
    assert rw1_bytes.labels_equal_compiled is not None
    compiled = rw1_bytes.labels_equal_compiled
    assert compiled(key, labels) is picked.labels_equal_reference(key, labels)
    canonical_key = rw1._encode_labels(labels)
    assert compiled(canonical_key, labels) is picked.labels_equal_reference(canonical_key, labels)


@pytest.mark.parametrize("equal", EQUALS)
@pytest.mark.parametrize(
    ("key", "labels", "want"),
    [
        pytest.param(
            b"\x0a\x07\x0a\x01a\x12\x02\xed\xa0", (("a", "\ud800"),), False, id="surrogate"
        ),
        pytest.param(b"\x0a\x05\x0a\x03\xe2\x88\x82", (("∂", ""),), True, id="non-ascii-name"),
        pytest.param(b"\x0a\x02\x0a\x00", (("", ""),), False, id="empty-name-written"),
        pytest.param(b"\x0a\x00", (("", ""),), True, id="both-empty"),
        pytest.param(b"", (), True, id="no-labels"),
        pytest.param(
            label_field("b", "1") + label_field("a", "2"),
            (("a", "2"), ("b", "1")),
            False,
            id="other-order",
        ),
        pytest.param(label_field("a", "2"), (("a", "2"), ("b", "1")), False, id="fewer-labels"),
        pytest.param(label_field("a", "2"), (("a", "2"),), True, id="one-label"),
    ],
)
def test_labels_equal_on_edge_cases(
    equal: Callable[[bytes, tuple[tuple[str, str], ...]], bool],
    key: bytes,
    labels: tuple[tuple[str, str], ...],
    want: bool,
) -> None:
    assert equal(key, labels) is want


FLUX_LIKE = tuple(
    Series(
        (
            ("__name__", "gotk_resource_info"),
            ("customresource_kind", "Kustomization"),
            ("exported_namespace", "flux-system"),
            ("name", f"app-{i}"),
            ("ready", "True"),
        ),
        (Sample(1.0, 1_764_000_000_000),),
    )
    for i in range(20)
)


def test_canonical_label_parts_are_kept_by_hash_not_by_their_bytes() -> None:
    """What the cache is for: a label part as Prometheus writes it keeps no bytes, and is found
    again (the very tuples the first decode returned, so no second decode happened)."""
    cache = picked.LabelCache()
    parts = encode(*FLUX_LIKE)
    first = picked.decode(parts.series, [], NO_LIMITS, cache)
    again = picked.decode(parts.series, [], NO_LIMITS, cache)
    assert canonical(first) == canonical(again) == canonical(Batch(FLUX_LIKE))
    assert len(cache.entries) == len(FLUX_LIKE) and not cache.by_bytes and cache.key_bytes == 0
    assert all(a.labels is b.labels for a, b in zip(first.series, again.series, strict=True))


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_colliding_and_non_canonical_parts_are_kept_by_their_bytes(
    hasher: Callable[[bytes], int] | None,
) -> None:
    """Two label sets whose parts' hashes collide (``constant``: all of them), and parts that
    are not their labels' canonical encoding (labels out of order, a padded length), decode to
    their own labels and are found again, never decoded twice; a part that holds a sample is
    remembered as such (None, by its bytes), not parsed alone again."""
    cache = picked.LabelCache(hasher)
    sample = ld(2, b"\x09" + double(1.0) + b"\x10" + varint(5))
    unsorted = label_field("job", "a") + label_field("__name__", "up")
    padded = b"\x0a" + varint(6, pad=1) + b"\x0a\x01x\x12\x01y" + label_field("__name__", "up")
    with_sample = label_field("__name__", "up") + sample + label_field("job", "b")
    encoded = [
        *encode(*FLUX_LIKE[:2]).series,
        unsorted + sample,
        padded + sample,
        with_sample + sample,
    ]
    want = reference(encoded, [], NO_LIMITS)
    first = picked.decode(encoded, [], NO_LIMITS, cache)
    held = (len(cache.entries), len(cache.by_bytes))
    again = picked.decode(encoded, [], NO_LIMITS, cache)
    assert ("ok", canonical(first)) == ("ok", canonical(again)) == want
    assert all(a.labels is b.labels for a, b in zip(first.series[:4], again.series, strict=False))
    assert cache.by_bytes[with_sample] is None
    assert (len(cache.entries), len(cache.by_bytes)) == held
    # The two canonical parts (of the same length: ``length`` collides them too); the rest by bytes.
    in_entries = 2 if hasher in (None, hash) else 1
    assert held == (in_entries, len(encoded) - in_entries)
    assert cache.key_bytes == sum(map(len, cache.by_bytes))


@pytest.mark.skipif(not rw1_bytes.NATIVE, reason="_survey not built")
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.tuples(any_text, any_text), max_size=3).map(tuple), max_size=4),
    st.data(),
)
def test_find_compiled_answers_as_its_twin(
    label_sets_held: list[tuple[tuple[str, str], ...]], data: st.DataObject
) -> None:
    """The cache's lookup: the labels held under the part's hash when the part is their
    encoding, else None, from a part that ends anywhere in a series' bytes; the compiled one
    hashes the part without making it, as ``hash_part`` of the bytes would."""
    assert rw1_bytes.find_compiled is not None and rw1_bytes.hash_part_compiled is not None
    hash_part = rw1_bytes.hash_part_compiled
    entries: dict[int, tuple[tuple[str, str], ...]] = {}
    for labels in label_sets_held:
        with contextlib.suppress(UnicodeEncodeError):
            entries[hash_part(rw1._encode_labels(labels))] = labels
    held = data.draw(st.booleans())  # a part near a label set held, or any bytes
    if entries and held:
        labels = data.draw(st.sampled_from(list(entries.values())))
        part = data.draw(label_parts(labels))
    else:
        part = data.draw(st.binary(max_size=40))
    series = part + data.draw(st.binary(max_size=12))
    end = data.draw(st.sampled_from([len(part), 0, len(series)]))
    found = rw1_bytes.find_compiled(entries, series, end)
    assert found is picked.find_reference(entries, series, end, hash_part)
    if found is not None:
        assert rw1._encode_labels(found) == series[:end]


@pytest.mark.skipif(not rw1_bytes.NATIVE, reason="_survey not built")
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_hash_part_is_a_function_of_the_bytes_alone(part: bytes, other: bytes) -> None:
    """The same bytes hash alike wherever they lie (find hashes a part inside a series), in 60
    bits; distinct parts rarely share a hash (no pair among these examples did)."""
    assert rw1_bytes.hash_part_compiled is not None
    hash_part = rw1_bytes.hash_part_compiled
    assert (
        hash_part(part)
        == hash_part(bytes(bytearray(part)))
        == hash_part((part + other)[: len(part)])
    )
    assert 0 <= hash_part(part) < 1 << 60
    if other != part:
        assert hash_part(other) != hash_part(part)
