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

Both are exact: nothing is estimated. Remote write 2.0 (``Content-Type: ...;proto=
io.prometheus.write.v2.Request``) is counted the same way (its series are field 5, their
samples field 2) and answered with the ``X-Prometheus-Remote-Write-*-Written`` headers the 2.0
spec requires. A request's ``X-Scope-OrgID`` names its tenant.

Counts are kept per destination (see :mod:`variants`): ``remote_write`` (or
``remote_write@<tenant>``), ``datadog`` (points of ``/api/v2/series`` JSON, gzip or deflate,
per metric name too) and ``otlp`` (data points of an OTLP/HTTP protobuf
``ExportMetricsServiceRequest``, per metric name too, parsed with a stripped schema that leaves
the points as opaque bytes).

``--full`` additionally decodes every remote-write request with the relay's own RW 1.0 / 2.0
codec and keeps every (destination, series, timestamp, value) it received, so that
``POST /verify`` can compare them one by one against what the loader had acked (see
:mod:`expect` and :mod:`variants` for what each system should deliver), and compares the
Datadog and OTLP points per metric name. That is for small (smoke) runs.

A remote write 1.0 request is answered on receipt and counted right after (``Backlog``: so
that a destination with one request in flight is not held for the count; ``--count-first``
counts before answering, as the latency floor's bare receiver does).

Endpoints: ``POST /api/v1/write`` (204), ``POST /api/v2/series`` (202), ``POST /v1/metrics``
(200), ``GET /stats``, ``POST /reset``, ``POST /verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import struct
import sys
import zlib
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import cramjam
import orjson
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bench import variants
from gotk_relay.allocator import keep_freed_memory
from tests.support import loadgen

Labels = tuple[tuple[str, str], ...]


_F: Final = descriptor_pb2.FieldDescriptorProto
_PACKAGE: Final = "bench_sink_count"


def _field(message: Any, name: str, number: int, kind: int, repeated: bool = True) -> None:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    message.field.add(name=name, number=number, type=kind, label=label)


def _message_field(message: Any, name: str, number: int, type_name: str, repeated: bool) -> None:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    message.field.add(
        name=name,
        number=number,
        type=_F.TYPE_MESSAGE,
        label=label,
        type_name=f".{_PACKAGE}.{type_name}",
    )


def _counting_classes() -> dict[str, Any]:
    """The stripped-down message classes (see the module docstring), by name.

    ``Top``/``Flat`` for remote write 1.0 (series are field 1), ``Top2``/``Flat2`` for 2.0
    (field 5; a series' samples are field 2 in both, histograms 4 in 1.0 and 3 in 2.0), and
    ``Export`` for OTLP: resource metrics (1) → scope metrics (2) → metrics (2) with their
    name (1) and, in each of gauge (5), sum (7), histogram (9), exponential histogram (10) and
    summary (11), data points (1) left unparsed.
    """
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bench_sink_count.proto", package=_PACKAGE, syntax="proto3"
    )
    add = fdp.message_type.add
    for version, series_field, histograms_field in (("", 1, 4), ("2", 5, 3)):
        top = add(name=f"Top{version}")
        _field(top, "timeseries", series_field, _F.TYPE_BYTES)
        merged = add(name=f"Merged{version}")
        _field(merged, "samples", 2, _F.TYPE_BYTES)
        _field(merged, "histograms", histograms_field, _F.TYPE_BYTES)
        flat = add(name=f"Flat{version}")
        _message_field(flat, "timeseries", series_field, f"Merged{version}", repeated=False)
    points = add(name="Points")
    _field(points, "data_points", 1, _F.TYPE_BYTES)
    metric = add(name="Metric")
    _field(metric, "name", 1, _F.TYPE_STRING, repeated=False)
    for name, number in (
        ("gauge", 5),
        ("sum", 7),
        ("histogram", 9),
        ("exponential_histogram", 10),
        ("summary", 11),
    ):
        _message_field(metric, name, number, "Points", repeated=False)
    scope = add(name="Scope")
    _message_field(scope, "metrics", 2, "Metric", repeated=True)
    resource = add(name="Resource")
    _message_field(resource, "scope_metrics", 2, "Scope", repeated=True)
    export = add(name="Export")
    _message_field(export, "resource_metrics", 1, "Resource", repeated=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    names = ("Top", "Flat", "Top2", "Flat2", "Export")
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}"))
        for n in names
    }


_CLASSES: Final = _counting_classes()
TOP, FLAT = _CLASSES["Top"], _CLASSES["Flat"]
TOP2, FLAT2 = _CLASSES["Top2"], _CLASSES["Flat2"]
EXPORT: Final = _CLASSES["Export"]
_BITS: Final = struct.Struct("<Q")
_DOUBLE: Final = struct.Struct("<d")
_OTLP_KINDS: Final = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def count(raw: bytes, v2: bool = False) -> tuple[int, int, int]:
    """(series, samples, histograms) of an uncompressed WriteRequest (``v2``: a remote write
    2.0 Request), exactly."""
    top = (TOP2 if v2 else TOP)()
    top.ParseFromString(raw)
    flat = (FLAT2 if v2 else FLAT)()
    flat.ParseFromString(raw)
    return len(top.timeseries), len(flat.timeseries.samples), len(flat.timeseries.histograms)


def count_otlp(raw: bytes) -> Counter[str]:
    """Data points per metric name of an uncompressed ExportMetricsServiceRequest."""
    export = EXPORT()
    export.ParseFromString(raw)
    out: Counter[str] = Counter()
    for resource in export.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] += sum(len(getattr(metric, k).data_points) for k in _OTLP_KINDS)
    return out


def count_datadog(raw: bytes) -> Counter[str]:
    """Points per metric name of an uncompressed ``/api/v2/series`` JSON body."""
    out: Counter[str] = Counter()
    for series in orjson.loads(raw)["series"]:
        out[series["metric"]] += len(series["points"])
    return out


def _bits(value: float) -> int:
    return int(_BITS.unpack(_DOUBLE.pack(value))[0])


Key = tuple[str, Labels, int]  # (destination, series, timestamp)


@dataclass
class Sink:
    full: bool = False
    requests: int = 0
    body_bytes: int = 0
    series: int = 0
    samples: int = 0  # remote write, every tenant
    histograms: int = 0
    errors: int = 0
    unsorted_series: int = 0  # full mode: series whose labels arrived out of order
    duplicates: int = 0  # full mode: (destination, series, timestamp) received more than once
    by_dest: Counter[str] = field(default_factory=Counter)  # samples / points per destination
    rw_requests: Counter[str] = field(default_factory=Counter)  # remote write, by version
    datadog_names: Counter[str] = field(default_factory=Counter)  # points per metric name
    otlp_names: Counter[str] = field(default_factory=Counter)  # data points per metric name
    # full mode: (destination, series) → timestamp → value bits
    received: dict[tuple[str, Labels], dict[int, int]] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = self.body_bytes = self.series = self.samples = self.histograms = 0
        self.errors = self.unsorted_series = self.duplicates = 0
        self.by_dest, self.rw_requests = Counter(), Counter()
        self.datadog_names, self.otlp_names = Counter(), Counter()
        self.received = {}

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "bytes": self.body_bytes,
            "series": self.series,
            "samples": self.samples,
            "histograms": self.histograms,
            "errors": self.errors,
            "unsorted_series": self.unsorted_series,
            "duplicates": self.duplicates,
            "by_destination": dict(self.by_dest),
            "remote_write_requests": dict(self.rw_requests),
            "datadog_points_by_name": dict(self.datadog_names),
            "otlp_points_by_name": dict(self.otlp_names),
        }

    def take(self, body: bytes, tenant: str = "", v2: bool = False) -> int:
        """Count (and in full mode, keep) one remote-write request; the HTTP status to answer."""
        try:
            raw = bytes(cramjam.snappy.decompress_raw(body))
            series, samples, histograms = count(raw, v2)
        except Exception:  # any undecodable body is the system's fault: count it, answer 400
            self.errors += 1
            return 400
        dest = f"{variants.REMOTE_WRITE}@{tenant}" if tenant else variants.REMOTE_WRITE
        self.requests += 1
        self.body_bytes += len(body)
        self.series += series
        self.samples += samples
        self.histograms += histograms
        self.by_dest[dest] += samples
        self.rw_requests["2.0" if v2 else "1.0"] += 1
        if self.full:
            self._keep(dest, raw, v2)
        return 204

    def take_points(self, dest: str, body: bytes, encoding: str) -> int:
        """Count one Datadog or OTLP request; the HTTP status to answer."""
        try:
            # aiohttp's server decompresses gzip and deflate request bodies itself; a body still
            # compressed (another server stack) is recognised by its header.
            raw = body
            if encoding == "gzip" and body[:2] == b"\x1f\x8b":
                raw = gzip.decompress(body)
            elif encoding == "deflate" and body[:1] == b"\x78":
                raw = zlib.decompress(body)
            names = count_datadog(raw) if dest == variants.DATADOG else count_otlp(raw)
        except Exception:  # the system's fault: count it, answer 400
            self.errors += 1
            return 400
        self.requests += 1
        self.body_bytes += len(body)
        self.by_dest[dest] += sum(names.values())
        (self.datadog_names if dest == variants.DATADOG else self.otlp_names).update(names)
        return 202 if dest == variants.DATADOG else 200

    def _keep(self, dest: str, raw: bytes, v2: bool) -> None:
        from gotk_relay.wire import rw1, rw2

        for item in (rw2 if v2 else rw1).decode(raw, validate=False).series:
            labels = item.labels
            ordered = tuple(sorted(labels))
            if ordered != labels:
                self.unsorted_series += 1
            points = self.received.setdefault((dest, ordered), {})
            for sample in item.samples:
                if sample.timestamp in points:
                    self.duplicates += 1
                points[sample.timestamp] = _bits(sample.value)

    def verify(self, request: dict[str, Any]) -> dict[str, Any]:
        """Compare everything received with what the acked batches should have produced.

        Remote write: every (destination, series, timestamp, value), one by one. Datadog and
        OTLP: the points per metric name (a Datadog count's first sample sends none).
        """
        if not self.full:
            return {"ok": False, "error": "the sink runs in cheap mode; start it with --full"}
        spec = loadgen.WorkloadSpec.from_json(request["spec"])
        expectation = variants.expectation(request["expect"])
        batches = loadgen.generate(spec)
        first_round: dict[int, int] = {}
        for index, round_ in request["acked"]:
            first_round[index] = min(round_, first_round.get(index, round_))
        wanted: dict[Key, int] = {}
        datadog: Counter[str] = Counter()
        otlp: Counter[str] = Counter()
        for index, round_ in request["acked"]:
            ts = spec.timestamp(round_)
            for item in batches[index]:
                for dest, labels, value in expectation.outputs(item.labels, item.value):
                    name = dict(labels).get("__name__", "")
                    if dest == variants.DATADOG:
                        if round_ != first_round[index] or not variants.datadog_counter(name):
                            datadog[name] += 1
                    elif dest == variants.OTLP:
                        otlp[name] += 1  # the name it had (docs: OTLP mapping)
                    else:
                        wanted[(dest, labels, ts)] = _bits(value)
        got = {
            (dest, labels, ts): bits
            for (dest, labels), points in self.received.items()
            for ts, bits in points.items()
        }
        missing = [key for key in wanted if key not in got]
        unexpected = [key for key in got if key not in wanted]
        wrong = [key for key, bits in wanted.items() if key in got and got[key] != bits]
        names_ok = datadog == self.datadog_names and otlp == self.otlp_names
        return {
            "ok": not (missing or unexpected or wrong or self.duplicates or self.errors)
            and names_ok,
            "expected_samples": len(wanted),
            "received_samples": len(got),
            "missing": len(missing),
            "unexpected": len(unexpected),
            "wrong_value": len(wrong),
            "duplicates": self.duplicates,
            "errors": self.errors,
            "unsorted_series": self.unsorted_series,
            "datadog_points": {
                "expected": sum(datadog.values()),
                "received": sum(self.datadog_names.values()),
                "by_name_ok": datadog == self.datadog_names,
                "names": sorted(self.datadog_names),
            },
            "otlp_points": {
                "expected": sum(otlp.values()),
                "received": sum(self.otlp_names.values()),
                "by_name_ok": otlp == self.otlp_names,
                "names": len(self.otlp_names),
            },
            "examples": {
                "missing": [_show(k) for k in missing[:3]],
                "unexpected": [_show(k) for k in unexpected[:3]],
                "wrong_value": [_show(k) for k in wrong[:3]],
                "datadog_by_name": _diff(datadog, self.datadog_names),
                "otlp_by_name": _diff(otlp, self.otlp_names),
            },
        }


def _diff(wanted: Counter[str], got: Counter[str]) -> dict[str, list[int]]:
    """Up to three names whose counts differ: name → [expected, received]."""
    names = sorted(n for n in wanted.keys() | got.keys() if wanted[n] != got[n])
    return {n: [wanted[n], got[n]] for n in names[:3]}


def _show(key: Key) -> str:
    dest, labels, ts = key
    inner = ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
    name = dict(labels).get("__name__", "")
    return f"{dest}: {name}{{{inner}}} @{ts}"


class Backlog:
    """Remote write 1.0 bodies acked on receipt and counted right after, one per loop turn.

    Counting a merged 20000-sample request takes a few ms of core 1, which the loader shares.
    Answered only after it, one relay destination (one request in flight, as Prometheus sends
    per shard) waited that long for every send: from about 2M samples/s the sink, not the
    system under test, set the relay's maximum rate, its queue filled, and it refused writes
    (503) and idled at ~80 % of its core. Acked on receipt, as vmagent or VictoriaMetrics ack
    what they buffered, the next send overlaps the count. Nothing is lost to the figures: a
    body that does not decode is counted in ``errors`` (the row is then not delivered), the
    runner's drain waits for the counts, and ``/stats``, ``/reset`` and ``/verify`` count
    everything pending first. At most ``LIMIT`` bodies wait: beyond, a write is counted before
    it is answered (backpressure, as before). Remote write 2.0 is counted before its answer,
    whose headers carry the counts.
    """

    LIMIT: Final = 16

    def __init__(self, sink: Sink, answer_first: bool = True) -> None:
        self.sink = sink
        self.answer_first = answer_first
        self.pending: deque[tuple[bytes, str]] = deque()
        self.scheduled = False

    def add(self, body: bytes, tenant: str) -> None:
        self.pending.append((body, tenant))
        while len(self.pending) > self.LIMIT:
            self._take_one()
        if self.pending and not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def flush(self) -> None:
        while self.pending:
            self._take_one()

    def _take_one(self) -> None:
        body, tenant = self.pending.popleft()
        self.sink.take(body, tenant)

    def _turn(self) -> None:
        # One body per loop turn: the sockets are read between two counts.
        self.scheduled = False
        if self.pending:
            self._take_one()
        if self.pending:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)


SINK: Final = web.AppKey("sink", Sink)
BACKLOG: Final = web.AppKey("backlog", Backlog)


async def _write(request: web.Request) -> web.Response:
    body = await request.read()
    v2 = "io.prometheus.write.v2.Request" in request.headers.get("Content-Type", "")
    sink = request.app[SINK]
    tenant = request.headers.get(variants.TENANT_HEADER, "")
    backlog = request.app[BACKLOG]
    if not v2 and backlog.answer_first:
        backlog.add(body, tenant)
        return web.Response(status=204)
    before = sink.samples, sink.histograms
    status = sink.take(body, tenant, v2)
    headers = {}
    if v2 and status < 300:  # the 2.0 spec's answer; without it the relay falls back to 1.0
        headers = {
            "X-Prometheus-Remote-Write-Samples-Written": str(sink.samples - before[0]),
            "X-Prometheus-Remote-Write-Histograms-Written": str(sink.histograms - before[1]),
            "X-Prometheus-Remote-Write-Exemplars-Written": "0",
        }
    return web.Response(status=status, headers=headers)


async def _datadog(request: web.Request) -> web.Response:
    body = await request.read()
    encoding = request.headers.get("Content-Encoding", "")
    status = request.app[SINK].take_points(variants.DATADOG, body, encoding)
    return web.json_response({"errors": []}, status=status)


async def _otlp(request: web.Request) -> web.Response:
    body = await request.read()
    encoding = request.headers.get("Content-Encoding", "")
    status = request.app[SINK].take_points(variants.OTLP, body, encoding)
    # An empty ExportMetricsServiceResponse: no partial success.
    return web.Response(status=status, body=b"", content_type="application/x-protobuf")


async def _stats(request: web.Request) -> web.Response:
    request.app[BACKLOG].flush()
    return web.json_response(request.app[SINK].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[BACKLOG].flush()
    request.app[SINK].reset()
    return web.Response(status=204)


async def _verify(request: web.Request) -> web.Response:
    request.app[BACKLOG].flush()
    return web.json_response(request.app[SINK].verify(await request.json()))


def make_app(sink: Sink, answer_first: bool = True) -> web.Application:
    """The sink's app; ``answer_first``: remote write 1.0 acked before it is counted
    (``Backlog``); without it every write is counted before its answer (the latency floor's
    bare receiver, whose answer must include the decompression and the count)."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[SINK] = sink
    app[BACKLOG] = Backlog(sink, answer_first)
    app.router.add_post(variants.WRITE_PATH, _write)
    app.router.add_post(variants.DATADOG_PATH, _datadog)
    app.router.add_post(variants.OTLP_PATH, _otlp)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/reset", _reset)
    app.router.add_post("/verify", _verify)
    return app


async def _serve(port: int, full: bool, answer_first: bool) -> None:
    runner = web.AppRunner(make_app(Sink(full=full), answer_first), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"listening": port, "full": full, "answer_first": answer_first}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="remote-write sink that counts or verifies")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--full", action="store_true", help="keep every sample for /verify")
    parser.add_argument(
        "--count-first",
        action="store_true",
        help="count each remote write 1.0 request before answering it (the bare receiver)",
    )
    args = parser.parse_args(argv)
    # A merged request from gotk-relay is ~6 MB uncompressed: with glibc's defaults the sink
    # spent ~18 ms per such request in page faults instead of ~5 ms and, not the system under
    # test, set the maximum rate (bench/README.md). Larger thresholds than the relay's own.
    keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=256 << 20)
    run(_serve(args.port, args.full, not args.count_first))
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
