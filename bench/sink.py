"""Remote-write receiver for the benchmark: counts what the system under test delivers.

It shares a core with the loader, so counting must be cheap. Parsing a 2000-sample request
with the full ``WriteRequest`` schema costs ~3 ms here (every label is a message with two
validated strings), more than the rest of the loader's work per request put together. The cheap
mode parses the decompressed body twice with two stripped-down schemas built at import time:

* ``Top``   {repeated bytes timeseries = 1}: one view per series, so ``len`` is the series count;
* ``Flat``  {Series timeseries = 1}, singular: protobuf *merges* repeated occurrences of a
  singular message field and concatenates their repeated fields, so the whole request parses
  into one series whose ``samples`` (declared as opaque bytes) hold every sample; labels are not
  declared at all and skipped unparsed. ``len`` gives the sample count (~0.4 ms per request).

Both are exact: nothing is estimated. ``--full`` additionally decodes every request with the
relay's own RW 1.0 codec and keeps every (series, timestamp, value) it received, so that
``POST /verify`` can compare them one by one against what the loader had acked (see
:mod:`expect` for what each system should deliver). That is for small (smoke) runs.

Endpoints: ``POST /api/v1/write`` (204), ``GET /stats``, ``POST /reset``, ``POST /verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import cramjam
import expect
import loadgen
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gotk_relay.allocator import keep_freed_memory

Labels = tuple[tuple[str, str], ...]


def _counting_classes() -> tuple[Any, Any]:
    """The ``Top`` and ``Flat`` message classes (see the module docstring)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bench_sink_count.proto", package="bench_sink_count", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    top = fdp.message_type.add(name="Top")
    top.field.add(name="timeseries", number=1, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    merged = fdp.message_type.add(name="Merged")
    merged.field.add(name="samples", number=2, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    merged.field.add(name="histograms", number=4, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    flat = fdp.message_type.add(name="Flat")
    flat.field.add(
        name="timeseries",
        number=1,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".bench_sink_count.Merged",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("bench_sink_count.Top")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("bench_sink_count.Flat")),
    )


TOP, FLAT = _counting_classes()
_BITS: Final = struct.Struct("<Q")
_DOUBLE: Final = struct.Struct("<d")


def count(raw: bytes) -> tuple[int, int, int]:
    """(series, samples, histograms) of an uncompressed WriteRequest, exactly."""
    top = TOP()
    top.ParseFromString(raw)
    flat = FLAT()
    flat.ParseFromString(raw)
    return len(top.timeseries), len(flat.timeseries.samples), len(flat.timeseries.histograms)


def _bits(value: float) -> int:
    return int(_BITS.unpack(_DOUBLE.pack(value))[0])


@dataclass
class Sink:
    full: bool = False
    requests: int = 0
    body_bytes: int = 0
    series: int = 0
    samples: int = 0
    histograms: int = 0
    errors: int = 0
    unsorted_series: int = 0  # full mode: series whose labels arrived out of order
    duplicates: int = 0  # full mode: (series, timestamp) received more than once
    # full mode: series → timestamp → value bits
    received: dict[Labels, dict[int, int]] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = self.body_bytes = self.series = self.samples = self.histograms = 0
        self.errors = self.unsorted_series = self.duplicates = 0
        self.received = {}

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "bytes": self.body_bytes,
            "series": self.series,
            "samples": self.samples,
            "histograms": self.histograms,
            "errors": self.errors,
            "unsorted_series": self.unsorted_series,
            "duplicates": self.duplicates,
        }

    def take(self, body: bytes) -> int:
        """Count (and in full mode, keep) one request; the HTTP status to answer."""
        try:
            raw = bytes(cramjam.snappy.decompress_raw(body))
            series, samples, histograms = count(raw)
        except Exception:  # any undecodable body is the system's fault: count it, answer 400
            self.errors += 1
            return 400
        self.requests += 1
        self.body_bytes += len(body)
        self.series += series
        self.samples += samples
        self.histograms += histograms
        if self.full:
            self._keep(raw)
        return 204

    def _keep(self, raw: bytes) -> None:
        from gotk_relay.wire import rw1

        for item in rw1.decode(raw, validate=False).series:
            labels = item.labels
            ordered = tuple(sorted(labels))
            if ordered != labels:
                self.unsorted_series += 1
            points = self.received.setdefault(ordered, {})
            for sample in item.samples:
                if sample.timestamp in points:
                    self.duplicates += 1
                points[sample.timestamp] = _bits(sample.value)

    def verify(self, request: dict[str, Any]) -> dict[str, Any]:
        """Compare everything received with what the acked batches should have produced."""
        if not self.full:
            return {"ok": False, "error": "the sink runs in cheap mode; start it with --full"}
        spec = loadgen.WorkloadSpec.from_json(request["spec"])
        transform = expect.EXPECTATIONS[request["expect"]]
        batches = loadgen.generate(spec)
        wanted: dict[tuple[Labels, int], int] = {}
        for index, round_ in request["acked"]:
            ts = spec.timestamp(round_)
            for item in batches[index]:
                for labels, value in transform(item.labels, item.value):
                    wanted[(labels, ts)] = _bits(value)
        got = {
            (labels, ts): bits
            for labels, points in self.received.items()
            for ts, bits in points.items()
        }
        missing = [key for key in wanted if key not in got]
        unexpected = [key for key in got if key not in wanted]
        wrong = [key for key, bits in wanted.items() if key in got and got[key] != bits]
        return {
            "ok": not (missing or unexpected or wrong or self.duplicates or self.errors),
            "expected_samples": len(wanted),
            "received_samples": len(got),
            "missing": len(missing),
            "unexpected": len(unexpected),
            "wrong_value": len(wrong),
            "duplicates": self.duplicates,
            "errors": self.errors,
            "unsorted_series": self.unsorted_series,
            "examples": {
                "missing": [_show(k) for k in missing[:3]],
                "unexpected": [_show(k) for k in unexpected[:3]],
                "wrong_value": [_show(k) for k in wrong[:3]],
            },
        }


def _show(key: tuple[Labels, int]) -> str:
    labels, ts = key
    inner = ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
    name = dict(labels).get("__name__", "")
    return f"{name}{{{inner}}} @{ts}"


SINK: Final = web.AppKey("sink", Sink)


async def _write(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(status=request.app[SINK].take(body))


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SINK].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[SINK].reset()
    return web.Response(status=204)


async def _verify(request: web.Request) -> web.Response:
    return web.json_response(request.app[SINK].verify(await request.json()))


def make_app(sink: Sink) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[SINK] = sink
    app.router.add_post("/api/v1/write", _write)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/reset", _reset)
    app.router.add_post("/verify", _verify)
    return app


async def _serve(port: int, full: bool) -> None:
    runner = web.AppRunner(make_app(Sink(full=full)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"listening": port, "full": full}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="remote-write sink that counts or verifies")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--full", action="store_true", help="keep every sample for /verify")
    args = parser.parse_args(argv)
    # A merged request from gotk-relay is ~6 MB uncompressed: with glibc's defaults the sink
    # spent ~18 ms per such request in page faults instead of ~5 ms and, not the system under
    # test, set the maximum rate (bench/README.md). Larger thresholds than the relay's own.
    keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=256 << 20)
    run(_serve(args.port, args.full))
    return 0


def run(main: Coroutine[Any, Any, None]) -> None:
    """``uvloop.run`` when uvloop is there (it is a relay dependency), else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
