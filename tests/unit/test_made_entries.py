"""Entries the relay queues from the Flux rewriter's own encoding equal encoded ones, byte for byte.

On the fast path the rewriter encodes its synthesized series as it makes them
(``FluxRewriter.encoded``) and the relay queues those bytes instead of encoding the series again.
Here two relays take the benchmark's Flux-heavy requests (state changes included), one as built
and one that always encodes; every queued entry must be the same: payload, points, newest.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay import config as config_module
from gotk_relay.delivery.entry import Entry, compress, made_entry, metadata_bytes
from gotk_relay.model import STALE_NAN, Batch, FamilyMetadata, MetricType, Sample, Series
from gotk_relay.relay import Relay
from gotk_relay.rules.flux import FluxRewriter
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, snappy
from gotk_relay.write import admission, scan
from tests.support import loadgen


def _relay(flux: str) -> Relay:
    text = (
        "receiver: {validation: framing}\n"
        f"flux: {flux}\n"
        "federate: {enabled: true}\n"
        "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        return Relay(config_module.load_file(path), Telemetry())


def _write(relay: Relay, raw: bytes, now_ms: int) -> list[Entry]:
    fast = relay.fast
    assert fast is not None
    limits = relay.config.receiver
    body = snappy.compress(raw)
    scanned = scan.scan_request(body, raw, limits, fast)
    picked = scan.decode_picked(scanned, limits)
    assert admission.queue_scanned(relay, scanned, picked, now_ms).accepted
    (destination,) = relay.destinations.values()
    shard = destination.queue.shards[0]
    taken = list(shard.entries)
    shard.entries.clear()
    shard.points = shard.memory_points = shard.queued_bytes = 0
    relay.budget.used = 0
    return taken


def _requests(rng: random.Random) -> list[tuple[bytes, int]]:
    """Flux-heavy requests over rounds, with objects flipping state and some ending."""
    spec = loadgen.WorkloadSpec("made", series=2000, batch_size=400, flux_fraction=0.05)
    workload = loadgen.Workload(spec, precompress=False)
    out = []
    for round_ in range(4):
        ts = spec.timestamp(round_)
        for index in range(len(workload.batches)):
            batch = rw1.decode(workload.raw(index, round_))
            series = list(batch.series)
            for i, item in enumerate(series):
                if item.name == "gotk_resource_info" and rng.random() < 0.2:
                    labels = dict(item.labels)
                    if "ready" in labels:
                        labels["ready"] = rng.choice(["True", "False", "Unknown"])
                    value = STALE_NAN if rng.random() < 0.2 else 1.0
                    series[i] = Series(tuple(sorted(labels.items())), (Sample(value, ts),))
            out.append((rw1.encode(Batch(tuple(series))), ts + 500))
    return out


@pytest.mark.parametrize(
    "flux",
    [
        "{mode: legacy}",
        "{mode: legacy, emit_deleted: true}",
        "{mode: legacy, keep_source: false}",
        "{mode: both, emit_deleted: true}",
    ],
)
def test_made_entries_equal_encoded_ones(flux: str) -> None:
    requests = _requests(random.Random(flux))
    made_relay = _relay(flux)
    made = [_write(made_relay, raw, now) for raw, now in requests]
    encoded_relay = _relay(flux)
    # Rules without an encoder write series only: the relay encodes every entry itself.
    encoded_relay.pipeline.flux = FluxRewriter(encoded_relay.config.flux)
    encoded = [_write(encoded_relay, raw, now) for raw, now in requests]
    assert made == encoded
    # The comparison saw synthesized entries (not only the forwarded blocks).
    assert sum(len(entries) - 1 for entries in made) > len(requests) // 2


@settings(max_examples=60, deadline=None)
@given(
    size=st.one_of(
        st.integers(0, 300),
        st.sampled_from([65_535, 65_536, 65_537, 131_072, 200_000]),
        st.integers(0, 400_000),
    ),
    seed=st.integers(0, 2**32 - 1),
    families=st.lists(
        st.builds(
            FamilyMetadata,
            st.text(min_size=1, max_size=20),
            st.sampled_from(list(MetricType)),
            st.text(max_size=40),
        ),
        max_size=3,
    ),
)
def test_made_entry_compresses_the_series_and_metadata_as_one_body(
    size: int, seed: int, families: list[FamilyMetadata]
) -> None:
    """The series, whole or in chunks, are compressed where they lie (only what crosses a
    chunk's end is copied): the payload is the very bytes of compressing the joined body."""
    rng = random.Random(seed)
    words = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40))) for _ in range(50)]
    series = b"".join(rng.choice(words) for _ in range(size // 20 + 1))[:size]
    made = made_entry(series, 5, 1, tuple(families))
    assert made.payload == compress(series + metadata_bytes(tuple(families)))
    # The same series handed as consecutive chunks of any sizes (the rules' steady output).
    cuts = sorted(rng.randrange(size + 1) for _ in range(rng.randrange(0, 12)))
    chunks = [series[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    made = made_entry(chunks, 5, 1, tuple(families))
    assert made.payload == compress(series + metadata_bytes(tuple(families)))
