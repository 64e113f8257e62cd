"""The Flux rules' kept output encodings (``emitter.prefixes``) against a fresh encode.

An owner keeps its outputs' bytes as pieces (the labels all its outputs share once, the rest
shared with every other owner) with ``emitter.SLOT`` where each timestamp field goes. Joined
with the slot filled, they must be exactly what ``rw1.encode`` writes for the outputs at that
timestamp, for any outputs and values: the relay queues these bytes as the outputs.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import STALE_NAN, Batch, Labels, Sample, Series, labels_from
from gotk_relay.rules.flux import emitter
from gotk_relay.rules.flux.classify import Classifier
from gotk_relay.rules.flux.config import FluxConfig
from gotk_relay.rules.flux.state import InfoObject, InfoSeries, Values
from gotk_relay.rules.flux_kinds import BY_KIND
from gotk_relay.wire import rw1
from tests.support.strategies import label_names, label_values

KIND = next(iter(BY_KIND.values()))
# Timestamps whose Sample.timestamp field is rw1.STAMP_FIELD_LEN bytes (6-byte varints):
# milliseconds from 1971 to 2109, every scrape's.
STAMPED = st.integers(min_value=1 << 35, max_value=(1 << 42) - 1)
doubles = st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0])
output_values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, STALE_NAN, float("inf")]), doubles, st.floats()
)


def _fresh(outputs: tuple[Labels, ...], values: Values, ts: int) -> bytes:
    series = tuple(
        Series(labels, (Sample(value, ts),)) for labels, value in zip(outputs, values, strict=True)
    )
    return rw1.encode(Batch(series))


def _joined(owner: InfoObject | InfoSeries, values: Values, ts: int) -> bytes | None:
    pieces = emitter.prefixes(owner, values, rw1)
    stamp = emitter.timestamp_field(ts, rw1)
    if pieces is None or stamp is None:
        return None
    emitter.stamped(stamp)
    return b"".join(pieces)


@st.composite
def related_outputs(draw: st.DrawFn) -> tuple[Labels, ...]:
    """1-5 label sets drawn from one pool of pairs, so they share some labels and not others,
    the ones they do not share anywhere in their order."""
    pool = draw(st.dictionaries(label_names, label_values, min_size=1, max_size=10))
    if draw(st.booleans()):  # an object's name: the shared runs are cut around it
        pool["name"] = draw(label_values)
    pairs = sorted(pool.items())
    count = draw(st.integers(1, 5))
    outputs = []
    for _ in range(count):
        chosen = draw(st.lists(st.sampled_from(pairs), max_size=len(pairs), unique=True))
        own = draw(st.dictionaries(label_names, label_values, max_size=2))
        labels = {**dict(chosen), **own, "__name__": draw(st.sampled_from(["a", "b_c"]))}
        outputs.append(labels_from(labels))
    return tuple(outputs)


@settings(max_examples=300, deadline=None)
@given(
    outputs=related_outputs(),
    values=st.lists(output_values, min_size=5, max_size=5),
    stamps=st.lists(STAMPED, min_size=1, max_size=3),
)
def test_pieces_join_to_a_fresh_encode(
    outputs: tuple[Labels, ...], values: list[float], stamps: list[int]
) -> None:
    """Any outputs, any values, any timestamps (the pieces kept across them): the join is
    rw1.encode's bytes."""
    owned = tuple(values[: len(outputs)])
    owner = InfoObject(outputs[0], KIND, 0, (outputs, ()), owned)
    for ts in stamps:
        assert _joined(owner, owned, ts) == _fresh(outputs, owned, ts)


@settings(max_examples=200, deadline=None)
@given(
    key=st.dictionaries(label_names, label_values, min_size=1, max_size=12).map(
        lambda d: {k: v for k, v in d.items() if k not in ("status", "type")}
    ),
    name=st.one_of(st.none(), label_values),
    ready=st.sampled_from(["True", "False", "Unknown"]),
    suspended=st.booleans(),
    ts=STAMPED,
)
def test_forward_objects_outputs_join_to_a_fresh_encode(
    key: dict[str, str], name: str | None, ready: str, suspended: bool, ts: int
) -> None:
    """A forward object's four outputs as the classifier builds them, in each state it may
    take (the values tuple changes, the pieces follow it)."""
    classify = Classifier(FluxConfig())
    if name is not None:
        key["name"] = name
    identity = labels_from({**key, "kind": KIND.kind})
    outputs = classify.forward_outputs(identity)
    owner = InfoObject(identity, KIND, 0, outputs, ())
    for values in (
        classify.forward_values("Unknown", False),
        classify.forward_values(ready, suspended),
    ):
        assert _joined(owner, values, ts) == _fresh(outputs[0], values, ts)


@settings(max_examples=100, deadline=None)
@given(key=st.dictionaries(label_names, label_values, max_size=8), value=output_values, ts=STAMPED)
def test_an_info_series_joins_to_a_fresh_encode(key: dict[str, str], value: float, ts: int) -> None:
    """A legacy object's one output: one piece and the slot."""
    labels = labels_from({**key, "__name__": "gotk_resource_info"})
    owner = InfoSeries(labels)
    assert _joined(owner, (value,), ts) == _fresh((labels,), (value,), ts)
