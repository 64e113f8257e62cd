"""The write endpoint answers every request as the remote-write spec says, and keeps serving."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from gotk_relay.model import Batch, Exemplar, Histogram, Sample, Series
from gotk_relay.server import V2_DECODE_IN_THREAD
from gotk_relay.wire import remote_pb2, rw2, snappy, validate, write_v2_pb2
from gotk_relay.write.scan import WORD_IN_THREAD
from tests.support.harness import gauge_batch, metric_value, relay_client, rw_body

RECEIVER = {"max_request_bytes": 4096, "max_decompressed_bytes": 65536}
CONFIG = {"flux": {"mode": "off"}, "receiver": RECEIVER}
# Every series decoded and checked at the edge (test_strict_corpus runs the default path too).
FULL = {**CONFIG, "receiver": {**RECEIVER, "validation": "full"}}
V1_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
V2_HEADERS = {
    "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    "Content-Encoding": "snappy",
}


def _unsorted(name: str = "up") -> bytes:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="job", value="a")
    ts.labels.add(name="__name__", value=name)
    ts.samples.add(value=1, timestamp=1)
    return snappy.compress(req.SerializeToString())


def _duplicate(name: str = "up") -> bytes:
    req = remote_pb2.WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value=name)
    ts.labels.add(name="job", value="a")
    ts.labels.add(name="job", value="b")
    ts.samples.add(value=1, timestamp=1)
    return snappy.compress(req.SerializeToString())


def _v2_bad_ref() -> bytes:
    req = write_v2_pb2.Request(symbols=["", "__name__", "up"])
    req.timeseries.add(labels_refs=[1, 99]).samples.add(value=1, timestamp=1)
    return snappy.compress(req.SerializeToString())


def _v2_expanding() -> bytes:
    """A 2.0 request far under both size limits whose labels, once their symbols are resolved,
    are over max_decompressed_bytes: one 4,000-byte value that each of 20 series refers to."""
    symbols = ["", "__name__", "up", "v", "x" * 4000, "i", *(str(i) for i in range(20))]
    req = write_v2_pb2.Request(symbols=symbols)
    for i in range(20):
        ts = req.timeseries.add(labels_refs=[1, 2, 5, 6 + i, 3, 4])
        ts.samples.add(value=1, timestamp=1)
    body = snappy.compress(req.SerializeToString())
    assert len(body) < RECEIVER["max_request_bytes"]
    assert len(req.SerializeToString()) < RECEIVER["max_decompressed_bytes"]
    return body


def _bomb() -> bytes:
    # A snappy preamble declaring 1 GiB, followed by nothing: refused before decompressing.
    return bytes([0x80, 0x80, 0x80, 0x80, 0x04]) + b"\x00" * 16


MALFORMED = [
    ("gzip", V1_HEADERS | {"Content-Encoding": "gzip"}, snappy.compress(b""), 415, "snappy"),
    ("zstd", V1_HEADERS | {"Content-Encoding": "zstd"}, snappy.compress(b""), 415, "snappy"),
    (
        "json",
        {"Content-Type": "application/json", "Content-Encoding": "snappy"},
        b"{}",
        415,
        "Content-Type",
    ),
    (
        "unknown-proto",
        V1_HEADERS | {"Content-Type": "application/x-protobuf;proto=foo.Bar"},
        snappy.compress(b""),
        415,
        "unsupported proto",
    ),
    (
        "parameter-without-value",
        V1_HEADERS | {"Content-Type": "application/x-protobuf; v2"},
        snappy.compress(b""),
        415,
        "parameter 'v2' is not a key=value pair",
    ),
    ("bad-snappy", V1_HEADERS, b"\x0a\xff\xff\xff", 400, "snappy"),
    ("length-bomb", V1_HEADERS, _bomb(), 413, "exceeds the limit"),
    ("body-too-large", V1_HEADERS, b"\x00" * 5000, 413, "exceeds the limit"),
    (
        "bad-protobuf",
        V1_HEADERS,
        snappy.compress(b"\x0a\xff\xff\xff\xff\x0f"),
        400,
        "invalid protobuf",
    ),
    ("duplicate-label", V1_HEADERS, _duplicate(), 400, 'duplicate label name "job"'),
    ("v2-ref-out-of-range", V2_HEADERS, _v2_bad_ref(), 400, "out of range"),
    (
        "v2-expanding-past-the-limit",
        V2_HEADERS,
        _v2_expanding(),
        413,
        "request expands to over 65536 bytes of labels once its symbols are resolved",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
async def test_malformed_requests_get_the_documented_status(
    headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    async with relay_client(FULL) as (client, _):
        response = await client.post("/api/v1/write", data=body, headers=headers)
        text = await response.text()
        assert response.status == status, text
        assert reason in text
        assert text.count("\n") == 1  # one readable line
        assert (await client.get("/-/healthy")).status == 200
        ok_body, ok_headers = rw_body(gauge_batch(["up"], 1))
        assert (await client.post("/api/v1/write", data=ok_body, headers=ok_headers)).status == 204


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-protobuf;",
        "Application/X-Protobuf ; ; proto=prometheus.WriteRequest",
        'application/x-protobuf;charset=binary; proto="prometheus.WriteRequest"',
    ],
)
async def test_content_types_rfc_9110_allows_are_taken_as_remote_write_1_0(
    content_type: str,
) -> None:
    async with relay_client(FULL) as (client, _):
        body, headers = rw_body(gauge_batch(["up"], 1))
        response = await client.post(
            "/api/v1/write", data=body, headers=headers | {"Content-Type": content_type}
        )
        assert response.status == 204, await response.text()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(method: str) -> None:
    async with relay_client(CONFIG) as (client, _):
        response = await client.request(method, "/api/v1/write")
        assert response.status == 405


async def test_v1_success_is_204_without_written_headers() -> None:
    async with relay_client(CONFIG) as (client, _):
        body, headers = rw_body(gauge_batch(["up", "down"], 1))
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status == 204
        assert not any(h.startswith("X-Prometheus-Remote-Write") for h in response.headers)


async def test_v2_success_reports_what_was_written() -> None:
    batch = Batch(
        (
            Series((("__name__", "a"),), (Sample(1, 1), Sample(2, 2))),
            Series((("__name__", "h"),), histograms=(Histogram(5, count_value=1, zero_count=1),)),
        )
    )
    async with relay_client(CONFIG) as (client, _):
        body, headers = rw_body(batch, v2=True)
        response = await client.post("/api/v1/push", data=body, headers=headers)
        assert response.status == 204
        assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2"
        assert response.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "1"
        assert response.headers["X-Prometheus-Remote-Write-Exemplars-Written"] == "0"


async def test_a_refused_v2_request_says_it_wrote_nothing_and_an_empty_encoding_is_snappy() -> None:
    """The 2.0 spec's written headers are on every answer to a 2.0 request, a refusal too
    (0: the relay writes nothing of a refused request), as Prometheus' receiver sends them;
    a 1.0 refusal has none. An empty Content-Encoding is snappy, as Go reads it."""
    bad = Batch((Series((("__name__", "a"), ("x", "1"), ("x", "2")), (Sample(1, 1),)),))
    async with relay_client(CONFIG) as (client, _):
        body, headers = rw_body(bad, v2=True)
        refused = await client.post("/api/v1/write", data=body, headers=headers)
        assert refused.status == 400
        assert [
            refused.headers.get(f"X-Prometheus-Remote-Write-{kind}-Written")
            for kind in ("Samples", "Histograms", "Exemplars")
        ] == ["0", "0", "0"]
        body, headers = rw_body(bad)
        refused = await client.post("/api/v1/write", data=body, headers=headers)
        assert refused.status == 400
        assert not any(h.startswith("X-Prometheus-Remote-Write") for h in refused.headers)
        body, headers = rw_body(gauge_batch(["up"], 1))
        headers["Content-Encoding"] = ""
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204


async def test_a_v2_request_of_samples_takes_the_fast_path() -> None:
    """A 2.0 request 1.0 carries as the decoded path would (samples, metadata, exemplars,
    native histograms) is scanned on its bytes as 1.0 (``gotk_relay_scanned_requests_total``),
    counted as 2.0 and answered with 2.0's written counts; one with a start timestamp is
    decoded."""
    samples = Batch((Series((("__name__", "a"), ("i", "1")), (Sample(1, 1), Sample(2, 2))),))
    histogram = Batch(
        (Series((("__name__", "h"),), histograms=(Histogram(5, count_value=1, zero_count=1),)),)
    )
    exemplar = Batch(
        (Series((("__name__", "e"),), (Sample(1, 1),), (), (Exemplar((("t", "1"),), 1.0, 1),)),)
    )
    started = Batch((Series((("__name__", "s"),), (Sample(1, 5, 2),)),))
    cases = ((samples, 1.0), (histogram, 2.0), (exemplar, 3.0), (started, 3.0))
    async with relay_client(CONFIG) as (client, _):
        for batch, scanned in cases:
            body, headers = rw_body(batch, v2=True)
            response = await client.post("/api/v1/write", data=body, headers=headers)
            assert response.status == 204
            written = {
                kind: response.headers[f"X-Prometheus-Remote-Write-{kind}-Written"]
                for kind in ("Samples", "Histograms", "Exemplars")
            }
            want = (batch.sample_count, batch.histogram_count, batch.exemplar_count)
            assert written == dict(zip(written, map(str, want), strict=True))
            metrics = await (await client.get("/metrics")).text()
            assert metric_value(metrics, "gotk_relay_scanned_requests_total") == scanned
        received = {
            kind: metric_value(
                metrics,
                "gotk_relay_received_total",
                kind=kind,
                protobuf_message="io.prometheus.write.v2.Request",
            )
            for kind in ("sample", "histogram", "exemplar")
        }
        assert received == {"sample": 4.0, "histogram": 1.0, "exemplar": 1.0}


async def test_a_large_v2_request_is_answered_and_refused_as_a_small_one() -> None:
    """A large 2.0 request: accepted and counted as a small one is; one the conversion to 1.0
    gives way on (a reference out of range) is decoded (over V2_DECODE_IN_THREAD bytes off the
    event loop) and its refusal reaches the answer in 2.0's terms."""
    from gotk_relay import server

    series = tuple(
        Series((("__name__", "m"), ("i", f"{i:06d}"), ("pad", "x" * 40)), (Sample(i, 1000),))
        for i in range(2000)
    )
    body, headers = rw_body(Batch(series), v2=True)
    assert len(snappy.decompress(body, 1 << 30)) > server.V2_DECODE_IN_THREAD
    bad = write_v2_pb2.Request.FromString(snappy.decompress(body, 1 << 30))
    bad.timeseries[-1].labels_refs[1] = 10**6
    async with relay_client({"flux": {"mode": "off"}}) as (client, _):
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status == 204
        assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "2000"
        refused = await client.post(
            "/api/v1/write", data=snappy.compress(bad.SerializeToString()), headers=headers
        )
        assert refused.status == 400
        assert "timeseries[1999].labels_refs: symbol ref 1000000 out of range" in (
            await refused.text()
        )


async def test_missing_content_type_means_v1() -> None:
    async with relay_client(CONFIG) as (client, _):
        body, _ = rw_body(gauge_batch(["up"], 1))
        response = await client.post(
            "/api/v1/write",
            data=body,
            headers={"Content-Encoding": "snappy"},
            skip_auto_headers=["Content-Type"],
        )
        assert response.status == 204


@pytest.mark.parametrize("validation", ["framing", "full"])
@pytest.mark.parametrize("name", ["gotk_resource_info", "up"], ids=["read", "forwarded"])
async def test_unsorted_labels_are_accepted_whoever_reads_the_series(
    name: str, validation: str
) -> None:
    """Prometheus, Mimir and VictoriaMetrics take a label set in any order: so does the relay,
    a series the Flux rules read included (issue 16 item 3)."""
    config = {**CONFIG, "flux": {"mode": "legacy"}, "receiver": {"validation": validation}}
    async with relay_client(config) as (client, _):
        response = await client.post("/api/v1/write", data=_unsorted(name), headers=V1_HEADERS)
        assert response.status == 204, await response.text()


async def test_the_rules_refuse_a_bad_series_they_read() -> None:
    """A series the Flux rules read is decoded and checked on every path (400)."""
    config = {**CONFIG, "flux": {"mode": "legacy"}}
    async with relay_client(config) as (client, _):
        body = _duplicate("gotk_resource_info")
        response = await client.post("/api/v1/write", data=body, headers=V1_HEADERS)
        text = await response.text()
        assert response.status == 400, text
        assert "duplicate label name" in text and text.count("\n") == 1


async def test_remote_write_2_requests_decoded_into_the_model_take_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2.0 request 1.0 cannot carry (created timestamps) is decoded into the model, a Python
    object per label: a few hundred MiB for a request within the default limits. Several at
    once decode one after another, so they cost one such request's memory, not several."""
    running = peak = 0
    lock = threading.Lock()
    decode = rw2.decode_counted

    def watched(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.2)  # long enough for the others to come in meanwhile
            return decode(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(rw2, "decode_counted", watched)
    batch = Batch(
        tuple(
            Series(
                (("__name__", f"metric_{i:05d}_total"), ("job", "j"), ("pad", "x" * 40)),
                (Sample(1.0, 1000),),
                created_timestamp=500,
            )
            for i in range(2000)
        )
    )
    body, headers = rw_body(batch, v2=True)
    assert len(snappy.decompress(body, 1 << 24)) > V2_DECODE_IN_THREAD  # decoded in a thread
    async with relay_client({"flux": {"mode": "off"}}) as (client, _):
        answers = await asyncio.gather(
            *(client.post("/api/v1/write", data=body, headers=headers) for _ in range(3))
        )
        assert [a.status for a in answers] == [204, 204, 204]
    assert peak == 1


async def test_a_large_refused_request_is_worded_while_the_relay_answers_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled scanner finds a large request invalid at once; the 400's wording is the
    reference's Python walk of the whole request (≈0.27 s for 200,000 series), done off the
    event loop: the relay answers other requests meanwhile. Here the wording is held until
    ``/-/healthy`` has been answered, which could not happen were it on the loop."""
    gate = threading.Event()
    survey = validate.survey

    def held(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(10), "the relay did not answer /-/healthy meanwhile"
        return survey(*args, **kwargs)

    monkeypatch.setattr(validate, "survey", held)
    req = remote_pb2.WriteRequest()
    for i in range(20_000):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=f"metric_{i:05d}")
        ts.samples.add(value=1, timestamp=1)
    bad = req.timeseries.add()
    bad.labels.add(name="__name__", value="up")
    bad.labels.add(name="job", value="a")
    bad.labels.add(name="job", value="b")
    bad.samples.add(value=1, timestamp=1)
    raw = req.SerializeToString()
    assert len(raw) > WORD_IN_THREAD
    async with relay_client({"flux": {"mode": "off"}}) as (client, _):
        write = asyncio.ensure_future(
            client.post("/api/v1/write", data=snappy.compress(raw), headers=V1_HEADERS)
        )
        health = await asyncio.wait_for(client.get("/-/healthy"), 5)
        assert health.status == 200
        gate.set()
        answered = await asyncio.wait_for(write, 10)
        assert answered.status == 400
        assert 'duplicate label name "job"' in await answered.text()
        assert "timeseries[20000]" in await answered.text()
