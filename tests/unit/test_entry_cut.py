"""``entry.cut_entry``: a 1.0 entry cut on its bytes into entries of at most ``max_points``,
as ``queue.chunk`` cuts a batch: the same series in the same order, a bigger series alone and
whole, the metadata with the first, the entry's date and tenant kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.delivery.entry import cut_entry, decode_entry, encode_entry
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
    assert canonical(merge(decoded)) == canonical(decode_entry(entry))
    assert [part.points for part in cut] == [d.point_count for d in decoded]
    for part, d in zip(cut, decoded, strict=True):
        assert part.points <= max_points or len(d.series) == 1
        assert (part.newest_ms, part.tenant, part.protocol) == (123, tenant, Protocol.V1)
        assert part.families == bool(d.metadata)
