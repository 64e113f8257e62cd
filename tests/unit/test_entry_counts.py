"""What an entry records of its batch: points (capacity) and the newest timestamp (age limit)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import encode_entry
from gotk_relay.model import Batch, Histogram, Protocol, Sample, Series, newest_timestamp

timestamps = st.integers(-(10**13), 10**13)
series = st.builds(
    lambda samples, histograms: Series(
        (("__name__", "x"),),
        tuple(Sample(1.0, t) for t in sorted(samples)),
        tuple(Histogram(t) for t in sorted(histograms)),
    ),
    st.lists(timestamps, max_size=3),
    st.lists(timestamps, max_size=2),
)


@settings(max_examples=500)
@given(st.lists(series, max_size=6))
def test_points_and_newest_timestamp(items: list[Series]) -> None:
    batch = Batch(tuple(items))
    last = [x.timestamp for s in items for x in s.samples[-1:]]
    last += [x.timestamp for s in items for x in s.histograms[-1:]]
    assert newest_timestamp(batch) == max([0, *last])  # 0 when nothing is newer than the epoch
    points = sum(len(s.samples) + len(s.histograms) for s in items)
    assert batch.point_count == points
    entry = encode_entry(batch, Protocol.V1)
    assert (entry.points, entry.newest_ms) == (points, newest_timestamp(batch))
