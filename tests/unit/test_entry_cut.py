"""``entry.cut_entry``: a 1.0 entry cut on its bytes into entries of at most ``max_points``,
as ``queue.chunk`` cuts a batch: the same series in the same order, a bigger series cut into
series of at most ``max_points`` (``entry.split_series``: its points in order, its exemplars with
the first), the metadata with the first, the entry's date and tenant kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import cut_entry, decode_entry, encode_entry, split_series
from gotk_relay.delivery.queue import chunk
from gotk_relay.model import Batch, Protocol, merge
from tests.support.strategies import canonical, v1_batches


@settings(max_examples=200, deadline=None)
@given(batch=v1_batches(), max_points=st.integers(1, 12), tenant=st.sampled_from(["", "t1"]))
def test_a_cut_entry_is_the_chunked_batch(batch: Batch, max_points: int, tenant: str) -> None:
    entry = encode_entry(batch, Protocol.V1, tenant)._replace(newest_ms=123)
    cut = cut_entry(entry, max_points)
    decoded = [decode_entry(part) for part in cut]
    want = chunk(decode_entry(entry), max_points) or [Batch()]
    assert [canonical(d) for d in decoded] == [canonical(w) for w in want]
    whole = decode_entry(entry)
    pieces = [piece for series in whole.series for piece in split_series(series, max_points)]
    assert canonical(merge(decoded)) == canonical(whole._replace(series=tuple(pieces)))
    assert [part.points for part in cut] == [d.point_count for d in decoded]
    for part, d in zip(cut, decoded, strict=True):
        assert part.points <= max_points
        assert (part.newest_ms, part.tenant, part.protocol) == (123, tenant, Protocol.V1)
        assert part.families == bool(d.metadata)


@settings(max_examples=200, deadline=None)
@given(batch=v1_batches(), max_points=st.integers(1, 5))
def test_a_series_cut_holds_its_points_in_order(batch: Batch, max_points: int) -> None:
    """Joined again, a series' pieces are the series: its labels and metadata on each, its
    samples then its histograms in order, its exemplars once, on the first."""
    for series in batch.series:
        pieces = split_series(series, max_points)
        assert all(0 < len(p.samples) + len(p.histograms) <= max_points for p in pieces)
        assert {(p.labels, p.metadata, p.created_timestamp) for p in pieces} == {
            (series.labels, series.metadata, series.created_timestamp)
        }
        joined = series._replace(
            samples=tuple(s for p in pieces for s in p.samples),
            histograms=tuple(h for p in pieces for h in p.histograms),
            exemplars=tuple(e for p in pieces for e in p.exemplars),
        )
        assert canonical(joined) == canonical(series)
        assert pieces[0].exemplars == series.exemplars
