"""Issue 16: a corpus of hostile remote-write requests, each with its exact status over HTTP.

Every case goes to a relay run with the DEFAULT configuration (the embedded ``default.yml`` and
one remote_write destination), which must check every request as strictly as Prometheus 3 and
Mimir do; a refused request leaves nothing in any queue and nothing reaches the destination,
an accepted one arrives with its label sets sorted. Each case runs three ways:

* ``full``: ``receiver.validation: full``, every request decoded (``rw1``/``rw2.decode``);
* ``default``: the default configuration, remote write 1.0 read by the compiled scanner,
  which hands any request it does not accept to ``wire.validate`` for the words;
* ``default-pure``: the same with the scanner switched off (as ``GOTK_RELAY_NO_EXTENSIONS``
  does), so ``wire.validate`` alone decides.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

import pytest
import yaml

from gotk_relay.config import load_text
from gotk_relay.model import Labels
from gotk_relay.relay import Relay
from gotk_relay.wire import rw1, rw1_bytes, snappy, write_v2_pb2
from gotk_relay.wire.errors import DecodeError
from gotk_relay.wire.labels import LabelLimitError, TooManySamplesError, TooManySeriesError
from gotk_relay.write import scan, views
from tests.support.hand_proto import key, label, ld, sample, series
from tests.support.harness import ScriptedReceiver, eventually, receivers, relay_client
from tests.support.strategies import pb_varint

V1 = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
V2 = {
    "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
UP = (b"__name__", b"up")
JOB = (b"job", b"a")
OK = series(UP, JOB)
KSM = (
    (b"__name__", b"gotk_resource_info"),
    (b"customresource_group", b"kustomize.toolkit.fluxcd.io"),
    (b"customresource_kind", b"Kustomization"),
    (b"customresource_version", b"v1"),
    (b"exported_namespace", b"flux-system"),
    (b"name", b"apps"),
    (b"ready", b"True"),
)


@dataclass(frozen=True)
class Case:
    """A request and its answer: status and a fragment of the body (a regex); for a 204, the
    label sets that must reach the destination, sorted."""

    id: str
    body: bytes  # as sent (snappy-compressed unless the case is about snappy)
    status: int
    reason: str = ""
    headers: dict[str, str] = field(default_factory=lambda: dict(V1))
    delivers: tuple[Labels, ...] = ()


def c(case_id: str, raw: bytes, status: int, reason: str = "", **kw: object) -> Case:
    """A remote write 1.0 case from an uncompressed request."""
    return Case(case_id, snappy.compress(raw), status, reason, **kw)  # type: ignore[arg-type]


def v2(case_id: str, raw: bytes, status: int, reason: str = "", **kw: object) -> Case:
    return Case(case_id, snappy.compress(raw), status, reason, dict(V2), **kw)  # type: ignore[arg-type]


def _v2_good_then_empty() -> bytes:
    request = write_v2_pb2.Request(symbols=["", "__name__", "up"])
    request.timeseries.add(labels_refs=[1, 2]).samples.add(value=1, timestamp=1000)
    request.timeseries.add(labels_refs=[1, 2])
    return bytes(request.SerializeToString())


OK_V2_TWICE_LAST_EMPTY = _v2_good_then_empty()


def labels(*pairs: tuple[bytes, bytes]) -> Labels:
    return tuple(sorted((n.decode(), v.decode()) for n, v in pairs))


def v2_request(symbols: list[str], refs: list[int], samples: int = 1, **series: object) -> bytes:
    request = write_v2_pb2.Request(symbols=symbols)
    ts = request.timeseries.add(labels_refs=refs, **series)
    for i in range(samples):
        ts.samples.add(value=1, timestamp=1000 + i)
    return bytes(request.SerializeToString())


def v2_raw_symbols(*symbols: bytes, refs: bytes = b"") -> bytes:
    """A v2 Request written by hand: any symbol bytes, the refs as a packed field."""
    body = b"".join(ld(4, s) for s in symbols)
    return body + ld(5, ld(1, refs) + ld(2, key(1, 1) + bytes(8) + key(2, 0) + b"\x01"))


MANY_LABELS = series(UP, *((b"l%05d" % i, b"v") for i in range(19_999)))
HIST = ld(
    4, key(1, 0) + b"\x01" + key(6, 0) + b"\x01" + key(15, 0) + pb_varint(1000)
)  # 1 in the zero bucket


def hist(*fields: bytes) -> bytes:
    """A series ``up`` with one native histogram of these fields."""
    return series(UP, tail=ld(4, b"".join(fields)))


SPAN_1 = ld(11, key(2, 0) + b"\x01")  # positive side: one bucket at offset 0
# fmt: off
CORPUS: list[Case] = [
    # HTTP and snappy
    Case("gzip-encoding", snappy.compress(OK), 415, "snappy", V1 | {"Content-Encoding": "gzip"}),
    Case("json-content-type", b"{}", 415, "Content-Type", V1 | {"Content-Type": "application/json"}),
    Case("unknown-proto", snappy.compress(OK), 415, "unsupported proto", V1 | {"Content-Type": "application/x-protobuf;proto=foo.Bar"}),
    Case("empty-body", b"", 400, "snappy"),
    Case("bad-snappy", b"\x0a\xff\xff\xff", 400, "snappy"),
    Case("truncated-snappy", snappy.compress(OK * 50)[:40], 400, "snappy"),
    Case("snappy-declares-more", b"\xe8\x07\x24" + b"0123456789", 400, "snappy"),
    Case("snappy-copy-before-start", b"\x0a\x01\x05", 400, "snappy"),
    Case("snappy-bomb-1GiB", b"\x80\x80\x80\x80\x04" + b"\x00" * 16, 413, "exceeds the limit"),
    c("empty-write-request", b"", 204),
    v2("empty-v2-request", b"", 204),
    # protobuf framing, remote write 1.0
    c("trailing-garbage", OK + b"\x0a", 400, "truncated varint"),
    c("trailing-zero-byte", OK + b"\x00", 400, "field number 0"),
    c("trailing-partial-series", OK + OK[:-3], 400, "declares"),
    c("varint-overflow", series(UP, tail=ld(2, key(2, 0) + b"\xff" * 10 + b"\x01")), 400, "longer than 10 bytes"),
    c("ten-byte-varint-is-valid", series(UP, tail=ld(2, key(2, 0) + pb_varint(7, pad=9))), 204, delivers=(labels(UP),)),
    c("five-byte-length-is-valid", ld(1, label(*UP) + sample(), pad=4), 204, delivers=(labels(UP),)),
    c("six-byte-length", ld(1, label(*UP) + sample(), pad=5), 400, "longer than 5 bytes"),
    c("field-0-top", b"\x00\x01" + OK, 400, "field number 0"),
    c("field-0-in-series", ld(1, label(*UP) + b"\x00\x01"), 400, r"timeseries\[0\].*field number 0"),
    c("huge-declared-length", b"\x0a" + pb_varint(2**32 - 1) + OK, 400, "declares 4294967295 bytes"),
    c("length-past-series", ld(1, b"\x0a\x40" + label(*UP)), 400, r"timeseries\[0\].*declares 64 bytes"),
    c("truncated-label", OK + ld(1, b"\x0a\x05\x0a\x08__"), 400, r"timeseries\[1\]"),
    c("truncated-sample", series(UP, tail=ld(2, b"\x09\x00\x00")), 400, "truncated"),
    c("truncated-exemplar", series(UP, tail=ld(3, key(2, 1) + b"\x00")), 400, "truncated"),
    c("truncated-histogram", series(UP, tail=ld(4, key(3, 1) + b"\x00\x00")), 400, "truncated"),
    c("truncated-metadata", OK + ld(3, key(1, 0)), 400, r"metadata\[0\]"),
    c("group-top", key(1, 3) + key(1, 4) + OK, 400, "group wire type"),
    c("group-in-series", ld(1, label(*UP) + key(9, 3) + key(9, 4)), 400, "group wire type"),
    c("group-in-label", ld(1, ld(1, ld(1, b"__name__") + key(5, 3) + key(5, 4) + ld(2, b"up"))), 400, "group wire type"),
    c("end-group-alone", key(1, 4), 400, "group wire type 4"),
    c("wire-type-6", OK + key(1, 6), 400, "wire type 6"),
    c("timeseries-as-varint", key(1, 0) + b"\x01", 400, "has wire type VARINT, declared LEN"),
    c("repeated-labels-wrong-wire-type", ld(1, label(*UP) + key(1, 0) + b"\x01" + sample()), 400, "labels .1. has wire type VARINT"),
    c("repeated-samples-wrong-wire-type", series(UP, tail=sample() + key(2, 1) + bytes(8)), 400, "samples .2. has wire type I64"),
    c("sample-value-as-varint", series(UP, tail=ld(2, key(1, 0) + b"\x01")), 400, "declared I64"),
    c("histogram-span-as-varint", series(UP, tail=ld(4, key(8, 0) + b"\x00")), 400, "declared LEN"),
    c("packed-doubles-not-whole", series(UP, tail=ld(4, ld(13, bytes(12)))), 400, "not whole doubles"),
    c("unknown-fields-everywhere", key(9, 0) + b"\x01" + ld(1, key(7, 5) + bytes(4) + ld(1, ld(1, b"__name__") + key(3, 1) + bytes(8) + ld(2, b"up")) + ld(2, ld(9, b"x") + key(1, 1) + bytes(8) + key(2, 0) + b"\x01")), 204, delivers=(labels(UP),)),
    c("labels-after-samples", ld(1, sample() + label(*JOB) + label(*UP)), 204, delivers=(labels(UP, JOB),)),
    c("repeated-label-name-last-wins", ld(1, ld(1, ld(1, b"job") + ld(1, b"__name__") + ld(2, b"up")) + sample()), 204, delivers=(labels(UP),)),
    c("histogram-series", series(UP, tail=HIST), 204, delivers=(labels(UP),)),
    # native histograms as Prometheus' Validate judges them
    c("histogram-schema-too-high", hist(key(4, 0) + pb_varint(106)), 400, r"invalid native histogram in series up\{\}.*got schema 53"),
    c("histogram-schema-9-reduced-later", hist(key(4, 0) + pb_varint(18)), 204, delivers=(labels(UP),)),
    c("histogram-negative-bucket", hist(key(1, 0) + b"\x01", SPAN_1, key(12, 0) + b"\x01"), 400, r"positive side: bucket number 1 has observation count of -1"),
    c("histogram-count-mismatch", hist(key(1, 0) + b"\x05", SPAN_1, key(12, 0) + b"\x02"), 400, r"1 observations found in buckets, but the Count field is 5"),
    c("histogram-custom-bounds-unsorted", hist(key(4, 0) + pb_varint(105), ld(16, struct.pack("<dd", 2.0, 1.0))), 400, r"custom buckets: previous bound is 2.0 and current is 1.0"),
    c("histogram-exponential-with-bounds", hist(key(16, 1) + struct.pack("<d", 1.0)), 400, r"exponential schema must not have custom bounds"),
    # strings
    c("utf8-label-name", series(UP, (b"\xff\xfe", b"x")), 400, r'invalid UTF-8 in label name "\\xff\\xfe"'),
    c("utf8-label-value", series((b"__name__", b"\xc3\x28")), 400, "invalid UTF-8 in the value of label \"__name__\""),
    c("utf8-surrogate", series(UP, (b"a", b"\xed\xa0\x80")), 400, "invalid UTF-8"),
    c("utf8-overlong", series(UP, (b"a", b"\xc0\xaf")), 400, "invalid UTF-8"),
    c("utf8-exemplar-label", series(UP, tail=sample() + ld(3, label(b"trace_id", b"\xff"))), 400, r"invalid UTF-8 in Label\.value"),
    c("utf8-metadata-help", OK + ld(3, key(1, 0) + b"\x02" + ld(2, b"up") + ld(4, b"\xfe")), 400, r"invalid UTF-8 in MetricMetadata\.help"),
    c("utf8-metadata-family", OK + ld(3, ld(2, b"\xfe")), 400, r"invalid UTF-8 in MetricMetadata\.metric_family_name"),
    # label sets (issue 16 items 2 and 3)
    c("duplicate-label-name", series((b"__name__", b"x"), (b"a", b"1"), (b"a", b"2")), 400, re.escape('duplicate label name "a" in series x{a="1",a="2"}')),
    c("otel-attribute-collision", OK + series((b"__name__", b"http_requests"), (b"a_b", b"1"), (b"a_b", b"2")), 400, r'duplicate label name "a_b".*timeseries\[1\]'),
    c("empty-label-name", series(UP, (b"", b"x")), 400, "empty label name"),
    c("no-metric-name", series(JOB), 400, r"without a metric name \(__name__\)"),
    c("empty-metric-name", series((b"__name__", b""), JOB), 400, "empty metric name"),
    c("bad-series-after-good-ones", OK + series((b"__name__", b"b"), JOB) + series(JOB, JOB, UP), 400, r"timeseries\[2\]"),
    c("empty-label-value", series(UP, (b"job", b"")), 204, delivers=(labels(UP, (b"job", b"")),)),
    c("unsorted-labels", series((b"zone", b"z"), JOB, UP), 204, delivers=(labels((b"zone", b"z"), JOB, UP),)),
    c("unsorted-flux-series", series(*reversed(KSM)), 204, delivers=(labels(*KSM),)),
    c("unsorted-flux-among-others", OK + series(*KSM[3:], *KSM[:3]) + series(JOB, (b"__name__", b"down")), 204, delivers=(labels(UP, JOB), labels(*KSM), labels(JOB, (b"__name__", b"down")))),
    # limits (receiver.* defaults)
    c("20000-labels", MANY_LABELS, 400, r"20000 labels, over receiver\.max_labels_per_series \(128\)"),
    c("label-name-too-long", series(UP, (b"n" * 1025, b"v")), 400, r"max_label_name_length \(1024\)"),
    c("label-value-too-long-in-bytes", series(UP, (b"job", "é".encode() * 2049)), 400, r"of 4098 bytes, over receiver\.max_label_value_length \(4096\)"),
    c("too-many-series", ld(1, b"") * 200_001, 413, r"200001 series, over receiver\.max_series_per_request"),
    c("3M-samples-in-one-series", series(UP, tail=ld(2, b"") * 3_000_000), 413, r"3000000 samples and histograms, over receiver\.max_samples_per_request \(1000000\)"),
    c("samples-over-many-series", series(UP, tail=ld(2, b"") * 500_000) + series((b"__name__", b"b"), tail=ld(2, b"") * 500_001), 413, "1000001 samples"),
    # remote write 2.0
    v2("v2-label-ref-out-of-range", v2_request(["", "__name__", "up"], [1, 99]), 400, "out of range"),
    v2("v2-label-ref-max-uint32", v2_request(["", "__name__", "up"], [1, 2**32 - 1]), 400, "out of range"),
    v2("v2-odd-label-refs", v2_request(["", "__name__", "up"], [1, 2, 1]), 400, "odd number"),
    v2("v2-symbols0-not-empty", v2_request(["x", "__name__", "up"], [1, 2]), 400, r"symbols\[0\]"),
    v2("v2-help-ref-out-of-range", v2_request(["", "__name__", "up"], [1, 2], metadata=write_v2_pb2.Metadata(type=1, help_ref=42)), 400, "help_ref"),
    v2("v2-exemplar-ref-out-of-range", v2_request(["", "__name__", "up"], [1, 2], exemplars=[write_v2_pb2.Exemplar(labels_refs=[1, 9])]), 400, "exemplars.labels_refs"),
    v2("v2-utf8-symbol", v2_raw_symbols(b"", b"__name__", b"\xff", refs=b"\x01\x02"), 400, "UTF-8"),
    v2("v2-duplicate-label-name", v2_request(["", "__name__", "up", "a"], [1, 2, 3, 2, 3, 2]), 400, 'duplicate label name "a"'),
    v2("v2-no-metric-name", v2_request(["", "a", "b"], [1, 2]), 400, "without a metric name"),
    v2("v2-empty-label-name", v2_request(["", "__name__", "up"], [1, 2, 0, 2]), 400, "empty label name"),
    v2("v2-empty-metric-name", v2_request(["", "__name__", "up"], [1, 0]), 400, "empty metric name"),
    v2("v2-too-many-labels", v2_request(["", "__name__", "up", *(f"l{i}" for i in range(200))], [1, 2, *(r for i in range(200) for r in (3 + i, 2))]), 400, r"max_labels_per_series \(128\)"),
    v2("v2-samples-and-histograms", v2_request(["", "__name__", "up"], [1, 2], histograms=[write_v2_pb2.Histogram(count_int=1)]), 400, "both samples and histograms"),
    # as Prometheus 3.8+ (#17250): a 2.0 series with neither samples nor histograms is refused
    v2("v2-metadata-alone", v2_request(["", "__name__", "up", "help"], [1, 2], samples=0, metadata=write_v2_pb2.Metadata(type=2, help_ref=3)), 400, r"TimeSeries must contain at least one sample or histogram for series up\{\} \(timeseries\[0\]\)"),
    # but exemplars alone are taken, as 1.0 takes them: Prometheus 3's 2.0 sender sends each
    # exemplar in a series of its own
    v2("v2-exemplar-alone", v2_request(["", "__name__", "up"], [1, 2], samples=0, exemplars=[write_v2_pb2.Exemplar(value=1, timestamp=5)]), 204),
    v2("v2-empty-after-a-good-series", OK_V2_TWICE_LAST_EMPTY, 400, r"series up\{\} \(timeseries\[1\]\)"),
    v2("v2-too-many-samples", v2_request(["", "__name__", "up"], [1, 2], samples=1_000_001), 413, "1000001 samples"),
    v2("v2-wrong-wire-type", ld(4, b"") + key(5, 0) + b"\x01", 400, "has wire type VARINT, declared LEN"),
    v2("v2-group", ld(4, b"") + ld(5, key(2, 3) + key(2, 4)), 400, "group wire type"),
    v2("v2-trailing-garbage", v2_request(["", "__name__", "up"], [1, 2]) + b"\x2a", 400, "invalid protobuf"),
    v2("v2-unsorted-labels", v2_request(["", "__name__", "up", "job", "a"], [3, 4, 1, 2]), 204, delivers=(labels(UP, JOB),)),
]
# fmt: on

MODES = ("full", "default")


def _params() -> Iterator[object]:
    for mode in MODES:
        for case in CORPUS:
            yield pytest.param(mode, case, id=f"{mode}-{case.id}")


def _config(mode: str, url: str) -> dict[str, object]:
    config = yaml.safe_load(resources.files("gotk_relay").joinpath("default.yml").read_text())
    config["remote_write"] = [{"name": "d", "url": url, "queue_config": {"min_backoff": "10ms"}}]
    if mode == "full":
        config["receiver"] = {"validation": "full"}
    return dict(config)


def _queued(relay: Relay) -> int:
    return sum(d.queue.points for d in relay.destinations.values())


def _label_sets(receiver: ScriptedReceiver) -> list[Labels]:
    """Every series the destination got, as forwarded (label order kept: no re-sorting)."""
    found: list[Labels] = []
    for request in receiver.requests:
        for encoded in rw1_bytes.split(request.raw).series:
            (item,) = rw1.decode(rw1_bytes.rebuild([encoded]), validate=False).series
            found.append(item.labels)
    return found


def test_the_corpus_is_big_enough_and_ids_are_unique() -> None:
    ids = [case.id for case in CORPUS]
    assert len(ids) == len(set(ids)) >= 60


@pytest.mark.parametrize(("mode", "case"), list(_params()))
async def test_hostile_request_gets_its_exact_status(mode: str, case: Case) -> None:
    receiver = ScriptedReceiver()
    async with receivers(receiver), relay_client(_config(mode, receiver.url)) as (client, relay):
        response = await client.post("/api/v1/write", data=case.body, headers=case.headers)
        text = await response.text()
        assert response.status == case.status, text[:500]
        if case.status != 204:
            assert re.search(case.reason, text), text[:500]
            assert "\n" not in text.strip()
            # Nothing of it was queued or sent (an admitted request would be in one or the other).
            assert _queued(relay) == 0
            assert receiver.requests == []
            # The relay still takes a valid write, and that is all the destination ever gets.
            marker = snappy.compress(series((b"__name__", b"marker")))
            assert (await client.post("/api/v1/write", data=marker, headers=V1)).status == 204
            await eventually(lambda: len(receiver.requests) >= 1)
            await eventually(lambda: _queued(relay) == 0)
            assert _label_sets(receiver) == [(("__name__", "marker"),)]
            return
        if not case.delivers:
            assert _queued(relay) == 0
            return
        await eventually(
            lambda: _queued(relay) == 0 and all(w in _label_sets(receiver) for w in case.delivers)
        )
        delivered = _label_sets(receiver)
        for want in case.delivers:
            assert want in delivered, delivered
        assert all(list(got) == sorted(got) for got in delivered), delivered


@pytest.mark.skipif(not rw1_bytes.NATIVE, reason="the C scanner is not built")
@pytest.mark.parametrize("case", [x for x in CORPUS if x.headers == V1], ids=lambda x: x.id)
def test_the_pure_python_survey_answers_every_request_as_the_compiled_one(case: Case) -> None:
    """Without the extension (``scan.survey_python``) each remote write 1.0 request of the
    corpus is scanned into the same result, or refused with the same error, as with it."""
    config = load_text(resources.files("gotk_relay").joinpath("default.yml").read_text())
    fast = views.plan(config)
    assert fast is not None
    limits = config.receiver
    try:
        raw = snappy.decompress(case.body, limits.max_decompressed_bytes)
    except DecodeError:
        return  # refused before any survey (the snappy cases): nothing to compare
    outcomes: list[object] = []
    for survey in (scan.survey_compiled, scan.survey_python):
        try:
            try:
                scanned = scan.scan_request(case.body, raw, limits, fast, survey)
            except scan.Unworded as unworded:  # a large refusal: worded as the server words it
                unworded.word()
                raise AssertionError("worded without an error") from None
            outcomes.append(scanned._replace(scanner=""))
        except (DecodeError, LabelLimitError, TooManySeriesError, TooManySamplesError) as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]
