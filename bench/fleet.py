"""The "fleet" workload: N Flux objects behind one relay, every one refreshed each 30 s round.

Why: issue 22 measured the relay's cost per sample collapsing as tracked objects grow (1.43M
samples/CPU-s at 1k objects, 385k at 100k with 5 % Flux; 338k and 38k with 50 %). This is that
measurement, in process (``bench.inprocess``'s write path: decompress, scan, decode the picked
series, Flux, queue, federate; no HTTP), so the growth from 1k to 100k objects can be read in
seconds: ``python -m bench.inprocess --workload fleet --objects N --flux-share 0.05``.

A round is ``N / flux_share`` samples in 2000-sample requests, every request with its share of
the round's distinct Flux objects (``gotk_resource_info`` as Prometheus stores it from
kube-state-metrics, ``loadgen.flux_labels``) shuffled among pass-through series. The
pass-through series come from a pool of at most ``POOL`` distinct ones, reused across the
round's requests (the same bytes objects): at 100k objects and 5 % Flux a round is 2M samples,
whose distinct encodings alone would take ~700 MB in this process. The relay forwards
pass-through series as received bytes and keeps no state for them, so their cost does not
depend on their being distinct. Timestamps step 30 s per round, as a scrape would.
"""

from __future__ import annotations

import math
import random
from typing import Final

import cramjam

from tests.support import loadgen

BATCH: Final = 2000
POOL: Final = 50_000  # distinct pass-through series at most
STEP_MS: Final = 30_000  # a round: every object scraped once


class Fleet:
    """A fleet's requests, kept as references to each series' encoding up to its timestamp."""

    def __init__(self, objects: int, flux_share: float, seed: int = 1) -> None:
        if objects < 1 or not 0.0 < flux_share <= 1.0:
            raise ValueError("objects must be >= 1 and flux_share within (0, 1]")
        self.objects = objects
        self.flux_share = flux_share
        self.base_ms = loadgen.WorkloadSpec(name="fleet").ts_base_ms
        per_request = max(1, round(BATCH * flux_share))
        requests = math.ceil(objects / per_request)
        plain_per_request = BATCH - per_request
        rng = random.Random(seed)
        cache: dict[tuple[str, str], bytes] = {}
        flux = [
            _chunk(tuple(sorted(loadgen.flux_labels(rng, i).items())), 1.0, True, cache)
            for i in range(objects)
        ]
        pool = _plain_pool(rng, min(POOL, plain_per_request * requests), cache)
        self.requests: list[tuple[bytes, ...]] = []
        self.samples = 0
        used = 0
        for index in range(requests):
            chunks = flux[index * per_request : (index + 1) * per_request]
            # The last request may hold fewer objects: fewer pass-through series, same share.
            plain = plain_per_request * len(chunks) // per_request
            for _ in range(plain if pool else 0):
                chunks.append(pool[used % len(pool)])
                used += 1
            rng.shuffle(chunks)  # remote write's sharding scatters the Flux series
            self.requests.append((*chunks, b""))
            self.samples += len(chunks)

    def timestamp(self, round_: int) -> int:
        return self.base_ms + round_ * STEP_MS

    def body(self, index: int, round_: int) -> bytes:
        """Request ``index`` of round ``round_``, snappy-compressed as Prometheus sends it."""
        raw = loadgen.ts_varint(self.timestamp(round_)).join(self.requests[index])
        return bytes(cramjam.snappy.compress_raw(raw))


def _chunk(
    labels: loadgen.Labels, value: float, flux: bool, cache: dict[tuple[str, str], bytes]
) -> bytes:
    """One series' encoding up to its timestamp (``loadgen.encode_batch``'s chunk)."""
    batch = loadgen.encode_batch([loadgen.GenSeries(labels, value, flux)], cache)
    return batch.chunks[0]


def _plain_pool(rng: random.Random, size: int, cache: dict[tuple[str, str], bytes]) -> list[bytes]:
    """``size`` distinct pass-through series (loadgen's pods and nodes), encoded once."""
    if size <= 0:
        return []
    spec = loadgen.WorkloadSpec(
        name="fleet-pool", series=size, flux_fraction=0.0, seed=rng.getrandbits(32)
    )
    return [
        _chunk(series.labels, series.value, False, cache)
        for batch in loadgen.generate(spec)
        for series in batch
    ]
