"""send_exemplars / send_native_histograms / metadata_config.send: false leave out exactly that."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations.remote_write import strip
from gotk_relay.model import Batch, Protocol, Series, with_series_families
from gotk_relay.wire import rw1, rw2, snappy, write_v2_pb2
from tests.support.strategies import canonical, v1_batches, v2_batches

FLAGS = st.fixed_dictionaries(
    {"exemplars": st.booleans(), "histograms": st.booleans(), "metadata": st.booleans()}
)


def _expected(batch: Batch, exemplars: bool, histograms: bool, metadata: bool) -> Batch:
    """What Prometheus documents for each flag, written out on the model."""
    kept: list[Series] = []
    for s in batch.series:
        s = s._replace(
            exemplars=s.exemplars if exemplars else (),
            histograms=s.histograms if histograms else (),
            metadata=s.metadata if metadata else None,
        )
        if s.samples or s.histograms or s.exemplars:  # a series left empty is not sent
            kept.append(s)
    return Batch(tuple(kept), batch.metadata if metadata else ())


@pytest.mark.parametrize(
    ("protocol", "batches"),
    [(Protocol.V1, v1_batches()), (Protocol.V2, v2_batches())],
    ids=["v1", "v2"],
)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), flags=FLAGS)
def test_strip_leaves_out_exactly_what_is_switched_off(
    protocol: Protocol,
    batches: st.SearchStrategy[Batch],
    data: st.DataObject,
    flags: dict[str, bool],
) -> None:
    batch = data.draw(batches)
    codec = rw2 if protocol == Protocol.V2 else rw1
    body = snappy.compress(codec.encode(batch))
    out, left_out = strip(body, protocol, **flags)
    got = codec.decode(snappy.decompress(out, 1 << 30), validate=False)
    # Samples keep their exact bits and order; only the switched-off parts are gone.
    expected = _expected(batch, **flags)
    if protocol == Protocol.V2:  # a decoded 2.0 request also gives its families' entries
        expected = with_series_families(expected)
    assert canonical(got) == canonical(expected)
    histogram_points = sum(len(s.histograms) for s in batch.series)
    assert left_out == (0 if flags["histograms"] else histogram_points)
    if protocol == Protocol.V2 and out is not body:
        # What was left out does not travel as unused strings in the symbol table either.
        request = write_v2_pb2.Request.FromString(snappy.decompress(out, 1 << 30))
        used = {0}
        for ts in request.timeseries:
            used.update(ts.labels_refs)
            for ex in ts.exemplars:
                used.update(ex.labels_refs)
            if ts.HasField("metadata"):
                used.update((ts.metadata.help_ref, ts.metadata.unit_ref))
        assert used == set(range(len(request.symbols)))


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2], ids=["v1", "v2"])
@settings(max_examples=20, deadline=None)
@given(batch=v1_batches())
def test_nothing_to_leave_out_sends_the_body_as_it_is(protocol: Protocol, batch: Batch) -> None:
    codec = rw2 if protocol == Protocol.V2 else rw1
    body = snappy.compress(
        codec.encode(batch._replace(metadata=()) if protocol == Protocol.V2 else batch)
    )
    out, left_out = strip(body, protocol)
    assert out is body and left_out == 0
