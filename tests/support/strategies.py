"""Hypothesis strategies for the internal model, shared by the codec and pipeline tests."""

from __future__ import annotations

import struct
from itertools import pairwise

from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Labels,
    Metadata,
    MetricType,
    Sample,
    Series,
    labels_from,
)

ORDINARY_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]

label_names = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=["Cs"]),
    min_size=1,
    max_size=12,
).filter(lambda s: s != "__name__")
label_values = st.text(
    alphabet=st.characters(min_codepoint=1, exclude_categories=["Cs"]), min_size=1, max_size=20
)
timestamps = st.integers(min_value=-(2**62), max_value=2**62)
values = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([STALE_NAN, ORDINARY_NAN, float("inf"), float("-inf"), -0.0, 0.0]),
)


@st.composite
def label_sets(draw: st.DrawFn) -> Labels:
    name = draw(label_values)
    others = draw(st.dictionaries(label_names, label_values, max_size=6))
    return tuple(sorted({**others, "__name__": name}.items()))


_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT31 = st.integers(0, 2**31 - 1)


@st.composite
def bucket_spans(
    draw: st.DrawFn,
    buckets: int,
    first_offsets: st.SearchStrategy[int] = _INT32,
    offsets: st.SearchStrategy[int] = _UINT31,
) -> tuple[BucketSpan, ...]:
    """Spans over exactly ``buckets`` buckets, every offset but the first non-negative: what
    Prometheus' ``Validate`` accepts of an exponential histogram (zero-length spans included)."""
    cuts = sorted(draw(st.lists(st.integers(0, buckets), max_size=2)))
    if not buckets and not cuts and draw(st.booleans()):
        return ()
    bounds = [0, *cuts, buckets]
    lengths = [b - a for a, b in pairwise(bounds)]
    first = draw(first_offsets)
    rest = draw(st.lists(offsets, min_size=len(lengths) - 1, max_size=len(lengths) - 1))
    return tuple(
        BucketSpan(offset, length) for offset, length in zip([first, *rest], lengths, strict=True)
    )


def _deltas(counts: list[int]) -> tuple[int, ...]:
    """An integer histogram's deltas for bucket counts in [0, 2**63)."""
    return tuple(b - a for a, b in pairwise([0, *counts]))


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    """A native histogram Prometheus accepts (its ``Validate``, as its remote-write handler
    reads it): a known schema (-4 to 52, or -53 for custom buckets); each side's spans cover its
    buckets (deltas for an integer one, counts for a float one); bucket counts >= 0; an integer
    one's count equal to its buckets' and zero bucket's (uint64 sums; at least them if the sum is
    NaN); custom buckets with increasing finite bounds that cover the spans, and no zero bucket
    or negative side. The other kind's buckets, which Prometheus ignores, may be there too."""
    is_float = draw(st.booleans())
    custom = draw(st.integers(0, 4)) == 0
    schema = -53 if custom else draw(st.one_of(st.integers(-4, 8), st.integers(9, 52)))
    sides = 1 if custom else 2
    float_counts = st.one_of(st.floats(min_value=0), st.just(ORDINARY_NAN))
    int_counts = st.integers(0, 2**63 - 1)
    buckets: list[list[int] | list[float]] = [
        draw(st.lists(float_counts if is_float else int_counts, max_size=4)) for _ in range(sides)
    ]
    if custom:
        buckets.insert(0, [])
    negative, positive = buckets
    other_deltas = [
        tuple(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3))) for _ in "np"
    ]
    other_counts = [tuple(draw(st.lists(st.floats(allow_nan=False), max_size=3))) for _ in "np"]
    total = draw(values)
    count: int | float
    zero: int | float = 0.0 if is_float else 0
    if is_float:
        if not custom:
            zero = draw(float_counts)
        count = draw(float_counts)
    else:
        if not custom:
            zero = draw(st.integers(0, 2**64 - 1))
        found = (sum(int(c) for c in negative) + sum(int(c) for c in positive) + int(zero)) % 2**64
        count = draw(st.integers(found, 2**64 - 1)) if total != total else found
    if custom:
        negative_spans: tuple[BucketSpan, ...] = ()
        positive_spans = draw(
            bucket_spans(len(positive), first_offsets=st.integers(0, 3), offsets=st.integers(0, 3))
        )
        extent = sum(span.offset + span.length for span in positive_spans)
        bounds = sorted(
            draw(
                st.sets(
                    st.floats(allow_nan=False, allow_infinity=False),
                    min_size=max(extent - 1, 0),
                    max_size=max(extent - 1, 0) + 2,
                )
            )
        )
        minus_inf = draw(st.booleans())
        if bounds and minus_inf:
            bounds[0] = float("-inf")  # a first bound of -Inf is odd, and valid
        threshold = 0.0
    else:
        negative_spans = draw(bucket_spans(len(negative)))
        positive_spans = draw(bucket_spans(len(positive)))
        bounds = []
        threshold = draw(st.floats(allow_nan=False, min_value=0))
    if is_float:
        counts = [tuple(float(c) for c in side) for side in (negative, positive)]
        deltas = other_deltas
    else:
        deltas = [_deltas([int(c) for c in side]) for side in (negative, positive)]
        counts = other_counts
    return Histogram(
        timestamp=draw(timestamps),
        count_value=count,
        zero_count=zero,
        is_float=is_float,
        sum=total,
        schema=schema,
        zero_threshold=threshold,
        negative_spans=negative_spans,
        negative_deltas=deltas[0],
        negative_counts=counts[0],
        positive_spans=positive_spans,
        positive_deltas=deltas[1],
        positive_counts=counts[1],
        reset_hint=draw(st.integers(0, 3)),
        custom_values=tuple(bounds),
    )


exemplars = st.builds(
    Exemplar,
    st.dictionaries(label_names, label_values, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    values,
    timestamps,
)
metric_types = st.sampled_from(list(MetricType))
metadatas = st.builds(Metadata, metric_types, st.text(max_size=30), st.text(max_size=8))


@st.composite
def series(draw: st.DrawFn, *, v2: bool = False, with_metadata: bool = False) -> Series:
    """A series; v2 fields (start/created timestamps, per-series metadata) only when asked."""
    labels = draw(label_sets())
    if draw(st.booleans()):
        samples = tuple(
            Sample(v, t, draw(st.integers(0, 2**40)) if v2 else 0)
            for v, t in draw(st.lists(st.tuples(values, timestamps), min_size=1, max_size=4))
        )
        hists: tuple[Histogram, ...] = ()
    else:
        samples = ()
        hists = tuple(draw(st.lists(histograms(), min_size=1, max_size=2)))
    return Series(
        labels=labels,
        samples=samples,
        histograms=hists,
        exemplars=tuple(draw(st.lists(exemplars, max_size=2))),
        metadata=draw(metadatas) if with_metadata else None,
        created_timestamp=draw(st.integers(0, 2**40)) if v2 else 0,
    )


@st.composite
def v1_batches(draw: st.DrawFn) -> Batch:
    items = tuple(draw(st.lists(series(), max_size=6)))
    metadata = tuple(
        FamilyMetadata(name, t, h, u)
        for name, t, h, u in draw(
            st.lists(
                st.tuples(label_values, metric_types, st.text(max_size=20), st.text(max_size=5)),
                max_size=3,
            )
        )
    )
    return Batch(items, metadata)


@st.composite
def v2_batches(draw: st.DrawFn) -> Batch:
    return Batch(
        tuple(draw(st.lists(series(v2=True, with_metadata=draw(st.booleans())), max_size=6))), ()
    )


def canonical(batch: object) -> object:
    """The batch (or series, sample, ...) with every float replaced by its bits, so NaNs compare
    by payload."""

    def f(x: object) -> object:
        if isinstance(x, float):
            return ("f", struct.pack("<d", x))
        if isinstance(x, tuple):
            return tuple(f(i) for i in x)
        return x

    return f(batch)


# -- requests in every encoding protobuf allows (for the strict check, wire.validate) -------


def pb_varint(value: int, pad: int = 0, width: int = 10) -> bytes:
    """``value`` (two's complement when negative) as a varint, ``pad`` bytes longer than needed
    but at most ``width`` bytes in all: 10 for a value, 5 for a key or a length (upb's limit)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    pad = max(0, min(pad, width - 1 - len(out)))
    if pad:
        out.append(value | 0x80)
        out.extend(b"\x80" * (pad - 1))
        out.append(0)
    else:
        out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


Field = tuple[int, bytes]  # field number, whole encoded field (key included)


class OddEncoder:
    """Encodes the model as protobuf in any way a valid encoder may: fields in any order
    (repeated fields keep their relative order), varints wider than needed, unknown fields,
    packed or unpacked repeated scalars, repeated Label name/value fields (the last wins)."""

    def __init__(self, draw: st.DrawFn, *, shuffle_labels: bool = True) -> None:
        self.draw = draw
        self.shuffle_labels = shuffle_labels
        self.written: list[Labels] = []  # each series' labels in the order encoded

    def pad(self) -> int:
        return self.draw(st.sampled_from([0, 0, 0, 1, 3]))

    def key(self, number: int, wire: int) -> bytes:
        return pb_varint(number << 3 | wire, self.pad(), 5)

    def varint(self, number: int, value: int) -> Field:
        return number, self.key(number, 0) + pb_varint(value, self.pad())

    def double(self, number: int, value: float) -> Field:
        return number, self.key(number, 1) + struct.pack("<d", value)

    def ld(self, number: int, payload: bytes) -> Field:
        return number, self.key(number, 2) + pb_varint(len(payload), self.pad(), 5) + payload

    def unknown(self) -> list[Field]:
        out: list[Field] = []
        for _ in range(self.draw(st.sampled_from([0, 0, 0, 1, 2]))):
            number = self.draw(st.integers(20, 2**29 - 1))
            wire = self.draw(st.sampled_from([0, 1, 2, 5]))
            if wire == 0:
                out.append(self.varint(number, self.draw(st.integers(0, 2**64 - 1))))
            elif wire == 1:
                out.append((number, self.key(number, 1) + bytes(8)))
            elif wire == 5:
                out.append((number, self.key(number, 5) + b"\x01\x02\x03\x04"))
            else:
                out.append(self.ld(number, self.draw(st.binary(max_size=6))))
        return out

    def message(self, fields: list[Field]) -> bytes:
        """The fields in an order protobuf reads as the same message, unknown fields among them."""
        fields = fields + self.unknown()
        order = self.draw(st.permutations(range(len(fields))))
        # Position ``at`` gets a field of ``fields[order[at]]``'s number.
        slots: dict[int, list[int]] = {}
        for at, position in enumerate(order):
            slots.setdefault(fields[position][0], []).append(at)
        # Each field number's occurrences keep their order among the positions they got.
        by_number: dict[int, list[bytes]] = {}
        for number, data in fields:
            by_number.setdefault(number, []).append(data)
        placed: list[bytes] = [b""] * len(fields)
        for number, positions in slots.items():
            for position, data in zip(sorted(positions), by_number[number], strict=True):
                placed[position] = data
        return b"".join(placed)

    def label(self, name: str, value: str) -> bytes:
        fields: list[Field] = []
        if self.draw(st.booleans()):  # an earlier occurrence the last one overrides
            fields.append(self.ld(1, b"overridden"))
            fields.append(self.ld(2, b"overridden"))
        if name or self.draw(st.booleans()):
            fields.append(self.ld(1, name.encode()))
        if value or self.draw(st.booleans()):
            fields.append(self.ld(2, value.encode()))
        return self.message(fields)

    def labels(self, labels: Labels) -> list[Field]:
        return [self.ld(1, self.label(k, v)) for k, v in labels]

    def scalars(
        self, number: int, values: tuple[int, ...] | tuple[float, ...], kind: str
    ) -> list[Field]:
        if not values:
            return []
        if kind == "double":
            if self.draw(st.booleans()):
                return [self.ld(number, b"".join(struct.pack("<d", v) for v in values))]
            return [self.double(number, float(v)) for v in values]
        encoded = [int(v) if kind == "uint" else _zigzag(int(v)) for v in values]
        if self.draw(st.booleans()):
            return [self.ld(number, b"".join(pb_varint(v, self.pad()) for v in encoded))]
        return [self.varint(number, v) for v in encoded]

    def histogram(self, hist: Histogram) -> bytes:
        fields: list[Field] = []
        if hist.is_float:
            fields += [
                self.double(2, float(hist.count_value)),
                self.double(7, float(hist.zero_count)),
            ]
        else:
            fields += [self.varint(1, int(hist.count_value)), self.varint(6, int(hist.zero_count))]
        fields += [
            self.double(3, hist.sum),
            self.varint(4, _zigzag(hist.schema)),
            self.double(5, hist.zero_threshold),
            self.varint(14, hist.reset_hint),
            self.varint(15, hist.timestamp),
        ]
        for number, spans in ((8, hist.negative_spans), (11, hist.positive_spans)):
            for span in spans:
                body = self.message(
                    [self.varint(1, _zigzag(span.offset)), self.varint(2, span.length)]
                )
                fields.append(self.ld(number, body))
        fields += self.scalars(9, hist.negative_deltas, "sint")
        fields += self.scalars(10, hist.negative_counts, "double")
        fields += self.scalars(12, hist.positive_deltas, "sint")
        fields += self.scalars(13, hist.positive_counts, "double")
        fields += self.scalars(16, hist.custom_values, "double")
        return self.message(fields)

    def series(self, item: Series) -> bytes:
        labels = item.labels
        if self.shuffle_labels:
            labels = tuple(self.draw(st.permutations(labels)))
        self.written.append(labels)
        fields = self.labels(labels)
        for sample in item.samples:
            body = self.message([self.double(1, sample.value), self.varint(2, sample.timestamp)])
            fields.append(self.ld(2, body))
        for ex in item.exemplars:
            body = self.message(
                [*self.labels(ex.labels), self.double(2, ex.value), self.varint(3, ex.timestamp)]
            )
            fields.append(self.ld(3, body))
        for hist in item.histograms:
            fields.append(self.ld(4, self.histogram(hist)))
        return self.message(fields)

    def request(self, batch: Batch) -> bytes:
        fields = [self.ld(1, self.series(item)) for item in batch.series]
        for meta in batch.metadata:
            body = self.message(
                [
                    self.varint(1, int(meta.type)),
                    self.ld(2, meta.family.encode()),
                    self.ld(4, meta.help.encode()),
                    self.ld(5, meta.unit.encode()),
                ]
            )
            fields.append(self.ld(3, body))
        return self.message(fields)


@st.composite
def odd_v1_requests(draw: st.DrawFn, *, shuffle_labels: bool = True) -> tuple[bytes, Batch]:
    """A valid remote write 1.0 request in an encoding Prometheus never writes, and the batch it
    holds (labels as encoded: maybe unsorted)."""
    batch = draw(v1_batches())
    encoder = OddEncoder(draw, shuffle_labels=shuffle_labels)
    raw = encoder.request(batch)
    written = tuple(
        item._replace(labels=labels)
        for item, labels in zip(batch.series, encoder.written, strict=True)
    )
    return raw, batch._replace(series=written)


@st.composite
def odd_v2_requests(draw: st.DrawFn) -> tuple[bytes, Batch]:
    """A valid remote write 2.0 request in an encoding the Prometheus client never writes
    (field order, unknown fields, wide varints, packed or unpacked refs, labels in any order),
    and the batch it holds, its label sets sorted (as ``rw2.decode`` hands them on)."""
    batch = draw(v2_batches())
    encoder = OddEncoder(draw)
    table: dict[str, int] = {"": 0}

    def ref(text: str) -> int:
        return table.setdefault(text, len(table))

    def refs(labels: Labels) -> list[Field]:
        numbers = tuple(r for name, value in labels for r in (ref(name), ref(value)))
        return encoder.scalars(1, numbers, "uint")

    series_fields: list[Field] = []
    for item in batch.series:
        fields = refs(tuple(draw(st.permutations(item.labels))))
        for s in item.samples:
            body = encoder.message(
                [
                    encoder.double(1, s.value),
                    encoder.varint(2, s.timestamp),
                    encoder.varint(3, s.start_timestamp),
                ]
            )
            fields.append(encoder.ld(2, body))
        for hist in item.histograms:
            fields.append(encoder.ld(3, encoder.histogram(hist)))
        for ex in item.exemplars:
            body = encoder.message(
                [*refs(ex.labels), encoder.double(2, ex.value), encoder.varint(3, ex.timestamp)]
            )
            fields.append(encoder.ld(4, body))
        if item.metadata is not None:
            meta = item.metadata
            body = encoder.message(
                [
                    encoder.varint(1, int(meta.type)),
                    encoder.varint(3, ref(meta.help)),
                    encoder.varint(4, ref(meta.unit)),
                ]
            )
            fields.append(encoder.ld(5, body))
        if item.created_timestamp:
            fields.append(encoder.varint(6, item.created_timestamp))
        series_fields.append(encoder.ld(5, encoder.message(fields)))
    symbols = [encoder.ld(4, text.encode()) for text in table]  # in ref order, "" first
    return encoder.message(symbols + series_fields), batch


# -- requests as Prometheus writes them (test_rw1_bytes, test_survey) ---------------------------


WATCHED = st.tuples(
    st.frozensets(st.sampled_from([b"gotk_resource_info", b"up", b"x", b"node_load1"])),
    st.frozensets(st.sampled_from([b"gotk_", b"node_", b"u"])),
)


NAMES_SEEN = st.sampled_from(
    [
        "gotk_resource_info",
        "gotk_reconcile_duration_seconds_count",
        "up",
        "node_load1",
        "node_cpu_seconds_total",
        "kube_pod_info",
        "gotk_" + "x" * 120,  # a name whose label length takes two bytes
    ]
)
VALUES_SEEN = st.one_of(
    st.sampled_from(["", "True", "gotk_resource_info", "up", "node_1", "p" * 200]),
    st.text(max_size=12),
)


@st.composite
def prometheus_batches(draw: st.DrawFn) -> Batch:
    """Requests as Prometheus writes them: labels sorted, ``__name__`` first, one sample each,
    names and values drawn so that watched names are common, also inside values."""
    items = []
    for _ in range(draw(st.integers(0, 12))):
        others = draw(st.dictionaries(st.sampled_from(["job", "name", "ready", "z"]), VALUES_SEEN))
        labels = labels_from({"__name__": draw(NAMES_SEEN), **others})
        items.append(Series(labels, (Sample(draw(st.floats()), draw(st.integers(0, 2**50))),)))
    return Batch(tuple(items))
