"""The relay's worst input shapes at doubling sizes: CPU time per size and its growth.

Why: "performance is measured, not asserted". An audit (2026-12-07) found input shapes where the
relay's work grew faster than linearly with what one accepted request holds (labels sorted in
the survey, Flux outputs, Flux expiry, /federate's family walk, OTLP native histogram spans,
remote write 2.0 symbols, the 1.0 → 2.0 conversion's hash tables); each was fixed. This runs
each shape at doubling sizes through the relay's own entry points, in process (no HTTP, the
queues emptied as a sender that keeps up would, see ``bench/inprocess.py``), and prints the CPU
time (``time.process_time``) per size and its growth per doubling: about ×2 is linear, ×4
quadratic, ×1 flat. A shape whose growth climbs back towards ×4 has regressed.

Shapes (sizes double; ``--quick`` takes the two smallest of each):

* ``survey``: one 16 MiB request of series with L labels in reverse name order, names of
  1 KiB sharing a 1020-byte prefix (L = 16..128); ``baseline`` is the same request sorted.
* ``flux-timestamps``: one Flux object (``gotk_resource_info``) at n timestamps in one request.
* ``flux-expiry``: n Flux objects last seen at staggered times, then the CPU per tiny request
  while they expire (mean over 200 requests).
* ``federate-unnamed``: K stored series whose first label sorts before ``__name__``, and
  ``/federate?match[]=gotk_none`` streamed from the store (matches none).
* ``otlp-spans``: an ``otlp:`` destination converting one native histogram whose two spans are
  a gap of g buckets apart (bounded now: should be flat).
* ``v2-symbols``: a remote write 2.0 request of n series that all refer to the same long
  symbols (127 labels, 1 KiB names, 4 KiB values); refused with 413 once its resolved labels
  pass ``receiver.max_decompressed_bytes``: the time to the refusal (or to admission).
* ``v2-collisions``: ``rw2.from_v1`` on n series whose label values differ only in their
  middle; ``baseline`` is the same with them differing at their end.

Usage: .venv/bin/python -m bench.worst_case              # every shape, about 45 s
       .venv/bin/python -m bench.worst_case --quick      # the two smallest sizes of each
       .venv/bin/python -m bench.worst_case --shapes survey,v2-symbols --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gotk_relay import config as config_module
from gotk_relay.access import limits_of
from gotk_relay.allocator import keep_freed_memory
from gotk_relay.delivery.entry import Entry
from gotk_relay.delivery.retry import Outcome
from gotk_relay.model import Batch, BucketSpan, Histogram, Sample, Series
from gotk_relay.relay import Relay
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, rw2, snappy
from gotk_relay.wire.errors import TooLargeError
from tests.support import hand_proto, loadgen

from .inprocess import drain, write

T0 = 1_700_000_000_000  # ms: every shape's clock starts here
HOUR_MS = 3_600_000  # past flux.idle_expiry's default: every object is due
SURVEY_BYTES = 16 << 20  # the survey shape's request, whatever L
EXPIRY_GROUP = 10  # flux-expiry: objects per request while they are first seen
EXPIRY_REQUESTS = 200  # flux-expiry: tiny requests timed
V2_LABELS = 128  # v2-symbols: labels per series, __name__ included
COLLISION_DIGITS = 8  # v2-collisions: the part of each value that differs


@dataclass(frozen=True)
class Measured:
    """One size's figure: CPU seconds, the baseline's where the shape has one, and a note."""

    seconds: float
    baseline: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Shape:
    name: str
    unit: str  # what the size counts
    sizes: tuple[int, ...]
    measure: Callable[[int], Measured]


def make_relay(remote: str = "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n") -> Relay:
    """The embedded default config with ``remote`` for its ``remote_write: []`` (one
    ``remote_write`` by default) and room for a million Flux objects."""
    text = config_module.default_config_text().replace("remote_write: []\n", remote)
    text = text.replace("\nflux:\n", "\nflux:\n  max_objects: 1000000\n", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        config = config_module.load_file(path)
    return Relay(config, Telemetry())


def timed_write(relay: Relay, raw: bytes, now_ms: int) -> float:
    """CPU seconds of ``inprocess.write`` (decompress, scan, decode, admit, drain) of ``raw``."""
    body = snappy.compress_cramjam(raw)
    started = time.process_time()
    write(relay, body, now_ms)
    return time.process_time() - started


def best(repeats: int, run: Callable[[], float]) -> float:
    """The least of ``repeats`` runs: the one least disturbed by the rest of the machine."""
    return min(run() for _ in range(repeats))


def _flux_labels(count: int) -> list[tuple[tuple[str, str], ...]]:
    rng = random.Random(1)
    return [tuple(sorted(loadgen.flux_labels(rng, i).items())) for i in range(count)]


# --- survey ---------------------------------------------------------------------------------


def _survey_request(labels: int, reverse: bool) -> bytes:
    """Series of ``labels`` labels (``__name__`` and names of 1 KiB sharing all but their
    last 4 bytes), up to ``SURVEY_BYTES``; in reverse name order or sorted."""
    prefix = b"a" * 1020
    names = [prefix + b"%04d" % i for i in range(labels - 1)]
    out: list[bytes] = []
    size = 0
    while size < SURVEY_BYTES:
        name = (b"__name__", b"m%d" % len(out))
        pairs = [(n, b"v") for n in names]
        series = (
            hand_proto.series(*reversed(pairs), name)
            if reverse
            else hand_proto.series(name, *pairs)
        )
        out.append(series)
        size += len(series)
    return b"".join(out)


def survey(labels: int, repeats: int) -> Measured:
    reverse, ordered = _survey_request(labels, True), _survey_request(labels, False)
    relay = make_relay()
    return Measured(
        best(repeats, lambda: timed_write(relay, reverse, T0)),
        best(repeats, lambda: timed_write(relay, ordered, T0)),
        f"{SURVEY_BYTES >> 20} MiB",
    )


# --- Flux -----------------------------------------------------------------------------------


def flux_timestamps(count: int, repeats: int) -> Measured:
    """One object's ``gotk_resource_info`` as ``count`` series, one a millisecond."""
    (labels,) = _flux_labels(1)
    batch = Batch(tuple(Series(labels, (Sample(1.0, T0 + i),)) for i in range(count)))
    raw = rw1.encode(batch)
    return Measured(best(repeats, lambda: timed_write(make_relay(), raw, T0 + count)))


def flux_expiry(count: int, repeats: int) -> Measured:
    """``count`` objects first seen ``EXPIRY_GROUP`` a millisecond, then, past their idle
    expiry, the mean CPU of a one-series request sent every ``EXPIRY_GROUP`` ms."""
    objects = _flux_labels(count)
    setup = [
        rw1.encode(
            Batch(tuple(Series(o, (Sample(1.0, T0 + g),)) for o in objects[g : g + EXPIRY_GROUP]))
        )
        for g in range(0, count, EXPIRY_GROUP)
    ]
    late = T0 + HOUR_MS + count
    tiny = snappy.compress_cramjam(
        rw1.encode(Batch((Series((("__name__", "up"), ("job", "x")), (Sample(1.0, late),)),)))
    )

    tracked = 0

    def run() -> float:
        nonlocal tracked
        relay = make_relay()
        for g, raw in enumerate(setup):
            write(relay, snappy.compress_cramjam(raw), T0 + g * EXPIRY_GROUP)
        started = time.process_time()
        for j in range(EXPIRY_REQUESTS):
            write(relay, tiny, T0 + HOUR_MS + j * EXPIRY_GROUP)
        spent = time.process_time() - started
        tracked = relay.pipeline.flux.stats.objects_tracked
        return spent / EXPIRY_REQUESTS

    seconds = best(repeats, run)
    return Measured(seconds, note=f"per request; {tracked} of {count} objects tracked after")


# --- /federate ------------------------------------------------------------------------------


async def _stream(relay: Relay, matches: list[str]) -> int:
    store = relay.federate
    assert store is not None, "the default config federates"
    size = 0
    async for piece in store.stream(store.query(matches)):
        size += len(piece)
    return size


def federate_unnamed(count: int, repeats: int) -> Measured:
    """``count`` series ``{A="v<i>", __name__="gotk_x"}`` (A sorts before ``__name__``), then
    a query matching none of them; the first query (which sorts the store) is not timed."""
    relay = make_relay()
    step = 20_000
    for start in range(0, count, step):
        series = tuple(
            Series((("A", f"v{i}"), ("__name__", "gotk_x")), (Sample(1.0, T0),))
            for i in range(start, min(count, start + step))
        )
        write(relay, snappy.compress_cramjam(rw1.encode(Batch(series))), T0)
    asyncio.run(_stream(relay, ["gotk_none"]))

    def run() -> float:
        started = time.process_time()
        asyncio.run(_stream(relay, ["gotk_none"]))
        return time.process_time() - started

    stored = len(relay.federate) if relay.federate is not None else 0
    return Measured(best(repeats, run), note=f"{stored} stored")


# --- OTLP -----------------------------------------------------------------------------------

OTLP = "remote_write: []\notlp:\n  - url: http://127.0.0.1:9/v1/metrics\n"


async def _send_queued(relay: Relay) -> float:
    """CPU seconds of each destination's client sending what is queued, its post answered
    at once (as ``bench/convert.py`` does): conversion, sizing, compression, state commits."""
    spent = 0.0
    for destination in relay.destinations.values():
        entries: list[Entry] = [e for shard in destination.queue.shards for e in shard.entries]
        client: Any = destination.client

        async def accepted(piece: Any) -> None:
            return None

        client._post = accepted
        started = time.process_time()
        result = await client.send(entries)
        spent += time.process_time() - started
        if result.outcome is not Outcome.OK:
            raise RuntimeError(f"send failed: {result}")
    drain(relay)
    return spent


def otlp_spans(gap: int, repeats: int) -> Measured:
    """One native histogram with a bucket at 0 and one ``gap`` buckets further."""
    histogram = Histogram(
        timestamp=T0,
        count_value=2,
        positive_spans=(BucketSpan(0, 1), BucketSpan(gap, 1)),
        positive_deltas=(1, 0),
    )
    raw = rw1.encode(Batch((Series((("__name__", "h"), ("job", "j")), (), (histogram,)),)))

    def run() -> float:
        relay = make_relay(OTLP)
        body = snappy.compress_cramjam(raw)
        limits = relay.config.receiver
        batch = rw1.decode(snappy.decompress(body, limits.max_decompressed_bytes))
        if not relay.admit(batch, T0, len(raw)).accepted:
            raise RuntimeError("refused")
        return asyncio.run(_send_queued(relay))

    return Measured(best(repeats, run), note=f"{len(raw)}-byte request")


# --- remote write 2.0 -----------------------------------------------------------------------


def v2_symbols(count: int, repeats: int) -> Measured:
    """A 2.0 request of ``count`` series with the same 128 labels (1 KiB names, one 4 KiB
    value): decompress, decode (symbols resolved and counted), admit; as the server does."""
    names = [f"n{i:04d}".ljust(1024, "x") for i in range(V2_LABELS - 1)]
    labels = tuple(sorted([("__name__", "m"), *((n, "v" * 4096) for n in names)]))
    raw = rw2.encode(Batch(tuple(Series(labels, (Sample(1.0, T0 + k),)) for k in range(count))))
    body = snappy.compress_cramjam(raw)
    outcome = ""

    def run() -> float:
        nonlocal outcome
        relay = make_relay()
        limits = relay.config.receiver
        started = time.process_time()
        try:
            plain = snappy.decompress(body, limits.max_decompressed_bytes)
            decoded = rw2.decode_counted(plain, limits=limits_of(limits))
            admitted = relay.admit(decoded.batch, T0, max(len(plain), decoded.expanded))
            outcome = "admitted" if admitted.accepted else "503"
        except TooLargeError:
            outcome = "413"
        spent = time.process_time() - started
        drain(relay)
        return spent

    seconds = best(repeats, run)
    return Measured(seconds, note=f"{outcome}; {len(body) / 1024:.0f} KiB snappy")


def _collision_request(count: int, middle: bool) -> bytes:
    """``count`` series ``m{a="A…<i>…B…"}``: the value's 8 digits in its middle or at its end."""

    def value(i: int) -> str:
        digits = f"{i:0{COLLISION_DIGITS}d}"
        return "A" * 16 + digits + "B" * 16 if middle else "A" * 16 + "B" * 16 + digits

    series = tuple(
        Series((("__name__", "m"), ("a", value(i))), (Sample(1.0, T0),)) for i in range(count)
    )
    return rw1.encode(Batch(series))


def v2_collisions(count: int, repeats: int) -> Measured:
    middle, end = _collision_request(count, True), _collision_request(count, False)

    def convert(raw: bytes) -> Callable[[], float]:
        def run() -> float:
            started = time.process_time()
            rw2.from_v1(raw)
            return time.process_time() - started

        return run

    note = "compiled" if rw2.NATIVE else "reference (no _v2)"
    return Measured(best(repeats, convert(middle)), best(repeats, convert(end)), note)


# --- the run --------------------------------------------------------------------------------

# (name, unit, sizes, measure, repeats): the default sizes keep a full run under a minute.
_SHAPES: tuple[tuple[str, str, tuple[int, ...], Callable[[int, int], Measured], int], ...] = (
    ("survey", "L", (16, 32, 64, 128), survey, 3),
    ("flux-timestamps", "n", (5_000, 10_000, 20_000, 40_000), flux_timestamps, 3),
    ("flux-expiry", "n", (5_000, 10_000, 20_000, 40_000), flux_expiry, 1),
    ("federate-unnamed", "K", (2_500, 5_000, 10_000, 20_000), federate_unnamed, 3),
    ("otlp-spans", "gap", (1_000_000, 2_000_000, 4_000_000, 8_000_000), otlp_spans, 3),
    ("v2-symbols", "n", (250, 500, 1_000, 2_000), v2_symbols, 3),
    ("v2-collisions", "n", (2_500, 5_000, 10_000, 20_000), v2_collisions, 5),
)
SHAPES = {name: (unit, sizes) for name, unit, sizes, _, _ in _SHAPES}


def _call(measure: Callable[[int, int], Measured], repeats: int, size: int) -> Measured:
    return measure(size, repeats)


def shapes(names: Sequence[str], quick: bool) -> list[Shape]:
    chosen = []
    for name, unit, sizes, measure, repeats in _SHAPES:
        if name not in names:
            continue

        bound = functools.partial(_call, measure, repeats)
        chosen.append(Shape(name, unit, sizes[:2] if quick else sizes, bound))
    return chosen


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


def run(selected: list[Shape]) -> dict[str, Any]:
    """Every size of every shape, printed as it comes; the JSON's ``shapes``."""
    print(
        f"{'shape':18} {'size':>12} {'ms':>11} {'×growth':>8} {'baseline ms':>12}  note",
        flush=True,
    )
    results: dict[str, Any] = {}
    for shape in selected:
        rows: list[dict[str, Any]] = []
        previous: float | None = None
        for size in shape.sizes:
            gc.collect()
            measured = shape.measure(size)
            growth = measured.seconds / previous if previous else None
            previous = measured.seconds
            rows.append(
                {
                    "size": size,
                    "ms": measured.seconds * 1000,
                    "growth": growth,
                    "baseline_ms": None if measured.baseline is None else measured.baseline * 1000,
                    "note": measured.note,
                }
            )
            print(
                f"{shape.name:18} {f'{shape.unit}={size}':>12} {_ms(measured.seconds):>11} "
                f"{'' if growth is None else f'×{growth:.2f}':>8} "
                f"{_ms(measured.baseline):>12}  {measured.note}",
                flush=True,
            )
        growths = [row["growth"] for row in rows if row["growth"] is not None]
        results[shape.name] = {
            "unit": shape.unit,
            "sizes": list(shape.sizes),
            "rows": rows,
            "max_growth": max(growths) if growths else None,
        }
    print()
    for name, result in results.items():
        top = result["max_growth"]
        print(f"{name:18} growth per doubling: " + ("-" if top is None else f"×{top:.2f} (max)"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}"
    )
    parser.add_argument("--quick", action="store_true", help="the two smallest sizes of each")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.shapes.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        parser.error(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    keep_freed_memory()  # as `gotk-relay serve` does
    started = time.monotonic()
    results = run(shapes(names, args.quick))
    if args.json is not None:
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": args.quick,
            "wall_s": round(time.monotonic() - started, 1),
            "shapes": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
