"""Hypothesis strategies for the internal model, shared by the codec and pipeline tests."""

from __future__ import annotations

import struct

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
)

ORDINARY_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]

label_names = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s != "__name__")
label_values = st.text(
    alphabet=st.characters(min_codepoint=1, exclude_categories=("Cs",)), min_size=1, max_size=20
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


spans = st.builds(BucketSpan, st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1))


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    is_float = draw(st.booleans())
    if is_float:
        count: int | float = draw(st.floats(allow_nan=False, min_value=0))
        zero: int | float = draw(st.floats(allow_nan=False, min_value=0))
    else:
        count = draw(st.integers(0, 2**64 - 1))
        zero = draw(st.integers(0, 2**64 - 1))
    return Histogram(
        timestamp=draw(timestamps),
        count_value=count,
        zero_count=zero,
        is_float=is_float,
        sum=draw(values),
        schema=draw(st.one_of(st.integers(-4, 8), st.just(-53))),
        zero_threshold=draw(st.floats(allow_nan=False, min_value=0)),
        negative_spans=tuple(draw(st.lists(spans, max_size=3))),
        negative_deltas=tuple(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))),
        negative_counts=tuple(draw(st.lists(st.floats(allow_nan=False), max_size=4))),
        positive_spans=tuple(draw(st.lists(spans, max_size=3))),
        positive_deltas=tuple(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))),
        positive_counts=tuple(draw(st.lists(st.floats(allow_nan=False), max_size=4))),
        reset_hint=draw(st.integers(0, 3)),
        custom_values=tuple(draw(st.lists(st.floats(allow_nan=False), max_size=4))),
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


def canonical(batch: Batch) -> object:
    """The batch with every float replaced by its bits, so NaNs compare by payload."""

    def f(x: object) -> object:
        if isinstance(x, float):
            return ("f", struct.pack("<d", x))
        if isinstance(x, tuple):
            return tuple(f(i) for i in x)
        return x

    return f(batch)
