"""Hostile input: a corpus of malformed writes, each with its documented status, and a bounded
fuzz of the decoders.

The relay is an internet-facing parser (often the first hop from many clusters), so a bad
request must cost a 4xx with a one-line reason and nothing else: no 500, no crash, no hang, no
memory blow-up. The corpus runs against one real relay process (receiver limits tightened, a
bearer token required) over raw sockets, so requests a well-behaved client library would
refuse to send (bodies that stall, lie about their length, or are far over the limit) are
sent too. After the corpus, the same process must still accept a valid write.

Statuses, as README, ``server.py`` and the receiver limits document them:

- 401 missing/wrong credentials (``receiver.auth``); 405 a method other than POST;
- 415 a Content-Encoding other than snappy or a Content-Type other than protobuf v1/v2;
- 413 a body over ``max_request_bytes``, a snappy preamble declaring more than
  ``max_decompressed_bytes`` (refused before decompressing), more series than
  ``max_series_per_request`` (the request is too big; the sender can split it);
- 400 anything that does not decode: corrupt snappy, corrupt protobuf, invalid UTF-8 in a
  string field (upb refuses it in proto3 strings), label sets the spec forbids, v2 symbol
  references out of range, a series over a per-series label limit (as Mimir answers);
- 503 a body not complete within ``read_timeout`` (the sender retries it); 503 beyond ``max_concurrent_requests``;
- 204 the edge cases that *are* valid: an empty WriteRequest (snappy of zero bytes), a label
  set with an empty value or not sorted by name (sorted on the way). A declared field of
  another wire type is refused (400) as Prometheus 3 and Mimir refuse it. A zero-byte body is
  not a snappy block at all: 400, as Prometheus' own receiver answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Metadata,
    MetricType,
    Sample,
    Series,
)
from gotk_relay.wire import remote_pb2, rw1, rw1_bytes, rw2, snappy, write_v2_pb2
from gotk_relay.wire.errors import DecodeError
from tests.support.fault_load import HOST, RelayProcess, relay_config
from tests.support.strategies import v1_batches, v2_batches

# The fuzz bounds each example's time, and a flood must be refused within 0.8 s.
pytestmark = pytest.mark.alone

TOKEN = "fault-suite-token"
KiB = 1024
MiB = 1024 * KiB
LIMITS = {
    "max_request_bytes": 256 * KiB,
    "max_decompressed_bytes": 1 * MiB,
    "max_series_per_request": 1000,
    "max_labels_per_series": 32,
    "max_label_name_length": 128,
    "max_label_value_length": 1024,
    "read_timeout": "1s",
    "max_concurrent_requests": 4,
}
READ_TIMEOUT_S = 1.0
ANSWER_TIMEOUT_S = READ_TIMEOUT_S + 4.0  # any case must be answered by then

AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"} | AUTH
V2 = {
    "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    "Content-Encoding": "snappy",
} | AUTH


# --------------------------------------------------------------------------------------------
# Building bodies


def _v1(batch: Batch) -> bytes:
    return snappy.compress(rw1.encode(batch))


def _v2(batch: Batch) -> bytes:
    return snappy.compress(rw2.encode(batch))


def _series(*labels: tuple[str, str], n: int = 1) -> Batch:
    return Batch(tuple(Series(tuple(labels), (Sample(1.0, 1000),)) for _ in range(n)))


def _pb_string_label(name: bytes, value: bytes) -> bytes:
    """A v1 WriteRequest with one series holding one label, written by hand so the strings can
    be any bytes (the protobuf library refuses to serialize invalid UTF-8)."""
    label = b"\x0a" + bytes([len(name)]) + name + b"\x12" + bytes([len(value)]) + value
    series = b"\x0a" + bytes([len(label)]) + label
    return snappy.compress(b"\x0a" + bytes([len(series)]) + series)


def _unchecked_v1(labels: Sequence[tuple[str, str]]) -> bytes:
    request = remote_pb2.WriteRequest()
    ts = request.timeseries.add()
    for name, value in labels:
        ts.labels.add(name=name, value=value)
    ts.samples.add(value=1, timestamp=1000)
    return snappy.compress(request.SerializeToString())


def _v2_request(symbols: list[str], refs: list[int], **series: object) -> bytes:
    request = write_v2_pb2.Request(symbols=symbols)
    request.timeseries.add(labels_refs=refs, **series).samples.add(value=1, timestamp=1000)
    return snappy.compress(request.SerializeToString())


OK_V1 = _v1(_series(("__name__", "up"), ("job", "fault")))
OK_V2 = _v2(_series(("__name__", "up"), ("job", "fault")))
_BIG = _v1(
    Batch(
        tuple(
            Series((("__name__", "big"), ("i", f"{i:07d}")), (Sample(float(i), 1000),))
            for i in range(900)
        )
    )
)


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Case:
    """One request and the status it must get; ``why`` is the documented reason."""

    id: str
    status: int
    why: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(V1))
    method: str = "POST"
    path: str = "/api/v1/write"
    parts: Sequence[bytes] | None = None  # sent one by one, pause_s apart; default: the body
    pause_s: float = 0.0
    content_length: int | None = None  # declared; default len(body), None with chunked
    chunked: bool = False


def _without_auth() -> dict[str, str]:
    return {k: v for k, v in V1.items() if k != "Authorization"}


# One row per case reads better than what the formatter would make of it.
# fmt: off
CORPUS: list[Case] = [
    # Who and how
    Case("no-credentials", 401, "receiver.auth is set", OK_V1, _without_auth()),
    Case("wrong-bearer-token", 401, "token mismatch", OK_V1, V1 | {"Authorization": "Bearer nope"}),
    Case("token-prefix-only", 401, "constant-time compare of the whole token", OK_V1, V1 | {"Authorization": f"Bearer {TOKEN[:-1]}"}),
    Case("basic-instead-of-bearer", 401, "wrong scheme", OK_V1, V1 | {"Authorization": "Basic dTpw"}),
    Case("method-get", 405, "write is POST only", OK_V1, method="GET"),
    Case("method-put", 405, "write is POST only", OK_V1, method="PUT"),
    Case("method-delete", 405, "write is POST only", b"", method="DELETE"),
    Case("gzip-encoding", 415, "remote write requires snappy", OK_V1, V1 | {"Content-Encoding": "gzip"}),
    Case("zstd-encoding", 415, "remote write requires snappy", OK_V1, V1 | {"Content-Encoding": "zstd"}),
    Case("identity-encoding", 415, "uncompressed protobuf is not remote write", rw1.encode(_series(("__name__", "up"))), V1 | {"Content-Encoding": "identity"}),
    Case("json-content-type", 415, "not protobuf", b"{}", V1 | {"Content-Type": "application/json"}),
    Case("text-plain-content-type", 415, "not protobuf", b"up 1", V1 | {"Content-Type": "text/plain"}),
    Case("unknown-proto-parameter", 415, "neither v1 nor v2", OK_V1, V1 | {"Content-Type": "application/x-protobuf;proto=foo.Bar"}),
    # Snappy framing
    Case("empty-body", 400, "zero bytes are not a snappy block (Prometheus: 400)", b""),
    Case("empty-write-request", 204, "snappy of an empty WriteRequest is a valid, empty write", snappy.compress(b"")),
    Case("empty-v2-request", 204, "an empty v2 Request is valid", snappy.compress(b""), dict(V2)),
    Case("truncated-snappy", 400, "block cut in half", _BIG[: len(_BIG) // 2]),
    Case("snappy-preamble-unterminated", 400, "length varint never ends", b"\xff" * 6),
    Case("snappy-declares-more-than-it-holds", 400, "preamble 1000, block 10", b"\xe8\x07\x24" + b"0123456789"),
    Case("snappy-declares-less-than-it-holds", 400, "preamble 2, literal 10", b"\x02\x24" + b"0123456789"),
    Case("snappy-copy-before-start", 400, "back-reference before the first byte", b"\x0a\x01\x05"),
    Case("length-bomb-1GiB", 413, "declared size checked before decompressing", b"\x80\x80\x80\x80\x04" + b"\x00" * 16),
    Case("length-bomb-4GiB", 413, "largest 32-bit declared size", b"\xff\xff\xff\xff\x0f" + b"\x00" * 16),
    Case("declared-one-byte-over-limit", 413, "max_decompressed_bytes + 1", b"\x81\x80\x40" + b"\x00" * 16),
    Case("one-MiB-of-zeros", 400, "inflates within the limit to a protobuf field number 0", snappy.compress(b"\x00" * MiB)),
    # Body size
    Case("body-over-limit-content-length", 413, "Content-Length over max_request_bytes", b"\x00" * (4 * MiB)),
    Case("body-over-limit-chunked", 413, "no Content-Length: counted while reading", b"\x00" * (4 * MiB), chunked=True),
    # Protobuf
    Case("protobuf-varint-too-long", 400, "11-byte varint", snappy.compress(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")),
    Case("protobuf-length-past-end", 400, "field length beyond the message", snappy.compress(b"\x0a\x64abc")),
    Case("protobuf-end-group-without-start", 400, "wire type 4 alone", snappy.compress(b"\x0c")),
    Case("protobuf-field-number-zero", 400, "field 0 does not exist", snappy.compress(b"\x00\x01")),
    Case("protobuf-wrong-wire-type-top-level", 400, "a declared field of another wire type (Prometheus 3, Mimir)", snappy.compress(b"\x08\x01")),
    Case("protobuf-wrong-wire-type-in-series", 400, "a declared field of another wire type (Prometheus 3, Mimir)", snappy.compress(b"\x0a\x02\x08\x01")),
    Case("protobuf-truncated-double", 400, "sample value cut short", snappy.compress(b"\x0a\x05\x12\x03\x09\x00\x00")),
    # Strings and label sets
    Case("invalid-utf8-label-name", 400, "upb refuses bad UTF-8 in proto3 strings", _pb_string_label(b"\xff\xfe", b"x")),
    Case("invalid-utf8-label-value", 400, "upb refuses bad UTF-8 in proto3 strings", _pb_string_label(b"__name__", b"\xc3\x28")),
    Case("utf8-encoded-surrogate", 400, "surrogates are not UTF-8", _pb_string_label(b"__name__", b"\xed\xa0\x80")),
    Case("overlong-utf8", 400, "overlong encodings are not UTF-8", _pb_string_label(b"__name__", b"\xc0\xaf")),
    Case("empty-label-name", 400, "spec: names are non-empty", _unchecked_v1([("", "x"), ("__name__", "up")])),
    Case("empty-label-value", 204, "an empty value means no such label (Prometheus 3, Mimir)", _unchecked_v1([("__name__", "up"), ("job", "")])),
    Case("duplicate-label-name", 400, "spec: no name twice", _unchecked_v1([("__name__", "up"), ("job", "a"), ("job", "b")])),
    Case("unsorted-labels", 204, "sorted on the way, as Prometheus and VictoriaMetrics accept it", _unchecked_v1([("job", "a"), ("__name__", "up")])),
    Case("no-metric-name", 400, "spec: __name__ is required", _unchecked_v1([("job", "a")])),
    # Receiver limits
    Case("too-many-series", 413, "max_series_per_request 1000", _v1(_series(("__name__", "up"), n=1001))),
    Case("too-many-labels", 400, "max_labels_per_series 32", _v1(_series(("__name__", "up"), *((f"l{i:02d}", "v") for i in range(32))))),
    Case("label-name-too-long", 400, "max_label_name_length 128", _v1(_series(("__name__", "up"), ("n" * 129, "v")))),
    Case("label-value-too-long", 400, "max_label_value_length 1024", _v1(_series(("__name__", "up"), ("job", "v" * 1025)))),
    # Remote write 2.0 symbols
    Case("v2-label-ref-out-of-range", 400, "ref 99 of 3 symbols", _v2_request(["", "__name__", "up"], [1, 99]), dict(V2)),
    Case("v2-label-ref-max-uint32", 400, "ref 2**32-1", _v2_request(["", "__name__", "up"], [1, 2**32 - 1]), dict(V2)),
    Case("v2-odd-label-refs", 400, "refs come in pairs", _v2_request(["", "__name__", "up"], [1, 2, 1]), dict(V2)),
    Case("v2-symbols0-not-empty", 400, "spec: symbols[0] is empty", _v2_request(["x", "__name__", "up"], [1, 2]), dict(V2)),
    Case("v2-help-ref-out-of-range", 400, "metadata refs are range-checked too", _v2_request(["", "__name__", "up"], [1, 2], metadata=write_v2_pb2.Metadata(type=1, help_ref=42)), dict(V2)),
    Case("v2-samples-and-histograms", 400, "a series is one or the other", _v2(Batch((Series((("__name__", "up"),), (Sample(1.0, 1),), (Histogram(1),)),))), dict(V2)),
    Case("v2-invalid-utf8-symbol", 400, "upb refuses bad UTF-8 in proto3 strings", snappy.compress(b"\x22\x00\x22\x02\xff\xfe"), dict(V2)),
    # Slow senders
    Case("body-stalls", 503, "Content-Length 1000, 10 bytes, then nothing", parts=[b"0123456789"], content_length=1000),
    Case("body-dribbles", 503, "read_timeout bounds the whole body, not each read", parts=[b"x"] * 40, pause_s=0.1, content_length=40),
]
# fmt: on


# --------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: it sends whatever the case says and never refuses to


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _head(case: Case, port: int) -> bytes:
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in case.headers.items()]
    if case.chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        length = case.content_length if case.content_length is not None else len(case.body)
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parts(case: Case) -> list[bytes]:
    if case.parts is not None:
        return list(case.parts)
    step = 64 * KiB
    pieces = [case.body[i : i + step] for i in range(0, len(case.body), step)]
    if case.chunked:
        return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
    return pieces


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    status_line = await reader.readline()
    if not status_line:
        raise AssertionError("connection closed without an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = b""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        body = await reader.readexactly(min(length, 64 * KiB))
    return Answer(status, headers, body)


async def exchange(port: int, case: Case) -> Answer:
    """Send ``case`` and return the answer; the body is written while the answer is awaited, so
    a server that answers early (413 on Content-Length) and hangs up is heard, not a reset."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(_head(case, port))
        answer = asyncio.create_task(_read_answer(reader))
        for part in _parts(case):
            if answer.done():
                break
            writer.write(part)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.wait(
                {drain, answer}, timeout=ANSWER_TIMEOUT_S, return_when="FIRST_COMPLETED"
            )
            if not drain.done():
                drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await drain
            if writer.is_closing() or (
                drain.done() and not drain.cancelled() and drain.exception()
            ):
                break
            if case.pause_s:
                await asyncio.wait({answer}, timeout=case.pause_s)
        try:
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT_S:g}s") from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# --------------------------------------------------------------------------------------------
# The relay under attack


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the whole corpus (no destinations: admission is all that is exercised),
    so a request that damages the process shows up in every later case too. It checks every
    series (``receiver.validation: full``), so each malformed label set gets its 400."""
    yield from _relay(tmp_path_factory, "full")


@pytest.fixture(scope="module")
def framing_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """The same relay with the default ``receiver.validation: framing``."""
    yield from _relay(tmp_path_factory, "framing")


def _relay(factory: pytest.TempPathFactory, validation: str) -> Iterator[RelayProcess]:
    workdir = factory.mktemp(f"hostile-{validation}")
    token = workdir / "token"
    token.write_text(TOKEN + "\n")
    receiver = {**LIMITS, "auth": {"bearer_token_file": str(token)}, "validation": validation}
    process = RelayProcess(
        workdir, relay_config([], receiver=receiver), name=f"relay-hostile-{validation}"
    )
    asyncio.run(process.start())
    try:
        yield process
    finally:
        asyncio.run(process.stop())


# What only the strict check (the default) refuses: the label rules (UTF-8, names) and the
# per-series label limits. ``validation: framing`` (the opt-out) checks snappy, the protobuf
# encoding at every level and the counts, and forwards a series the rules do not read as it
# came: the destination judges its labels. With no Flux name in these bodies, framing answers
# them 204.
FULL_ONLY = frozenset(
    {
        "invalid-utf8-label-name",
        "invalid-utf8-label-value",
        "utf8-encoded-surrogate",
        "overlong-utf8",
        "empty-label-name",
        "duplicate-label-name",
        "no-metric-name",
        "too-many-labels",
        "label-name-too-long",
        "label-value-too-long",
    }
)
ONE_SHOT = [c for c in CORPUS if c.parts is None and not c.pause_s]


def _check(relay: RelayProcess, case: Case, status: int) -> None:
    answer = asyncio.run(exchange(relay.port, case))
    text = answer.body.decode("utf-8", "replace").strip()
    detail = f"{case.id}: want {status} ({case.why}), got {answer.status}: {text[:300]!r}"
    assert answer.status == status, detail
    if 400 <= status < 500 and status != 405:
        assert text and "\n" not in text, "the reason must be one readable line\n" + detail
    assert relay.proc is not None and relay.proc.alive, detail + "\n" + relay.log_tail()


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_malformed_request_gets_its_documented_status(relay: RelayProcess, case: Case) -> None:
    _check(relay, case, case.status)


@pytest.mark.parametrize("case", ONE_SHOT, ids=[c.id for c in ONE_SHOT])
def test_framing_refuses_what_it_checks_and_forwards_the_rest(
    framing_relay: RelayProcess, case: Case
) -> None:
    # framing needs the compiled scanner; without it every request is checked in full (README).
    lenient = case.id in FULL_ONLY and rw1_bytes.NATIVE
    _check(framing_relay, case, 204 if lenient else case.status)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_sent_whole_before_the_answer_is_read_gets_its_413(
    relay: RelayProcess, chunked: bool
) -> None:
    """A sender that writes all of its body before it reads (Prometheus' Go client may) hears
    the 413, not a reset: the relay reads the rest of the body and discards it before it
    closes. Closing with the body unread reset the connection, and a reset is retried."""
    case = Case("whole", 413, "written whole", b"\x00" * (4 * MiB), chunked=chunked)

    async def scenario() -> int:
        reader, writer = await asyncio.open_connection(HOST, relay.port)
        try:
            writer.write(_head(case, relay.port))
            for part in _parts(case):
                writer.write(part)
                await asyncio.wait_for(writer.drain(), ANSWER_TIMEOUT_S)
            answer = await asyncio.wait_for(_read_answer(reader), ANSWER_TIMEOUT_S)
            return answer.status
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    assert [asyncio.run(scenario()) for _ in range(3)] == [413] * 3


def test_every_full_only_case_is_in_the_corpus() -> None:
    assert {c.id for c in ONE_SHOT} >= FULL_ONLY


def test_requests_beyond_the_concurrency_limit_get_503(relay: RelayProcess) -> None:
    """Four stalled bodies hold every slot of ``max_concurrent_requests``; the next writer is
    told 503 at once (not queued behind them), and the slots free up when they time out."""

    async def scenario() -> tuple[list[int], list[int], int]:
        stall = Case("stall", 503, "holds a slot", parts=[b"0123456789"], content_length=1000)
        stalled = [asyncio.create_task(exchange(relay.port, stall)) for _ in range(4)]
        ok = Case("ok", 204, "valid", OK_V1)
        seen: list[int] = []
        deadline = time.monotonic() + READ_TIMEOUT_S * 0.8  # before the stalls time out
        while time.monotonic() < deadline and 503 not in seen:
            seen.append((await exchange(relay.port, ok)).status)
            await asyncio.sleep(0.02)
        stalls = [a.status for a in await asyncio.gather(*stalled)]
        after = (await exchange(relay.port, ok)).status
        return seen, stalls, after

    seen, stalls, after = asyncio.run(scenario())
    detail = f"writer saw {seen}; stalled bodies got {stalls}; then {after}"
    assert 503 in seen, detail
    assert stalls == [503] * 4, detail
    assert after == 204, detail


def test_relay_still_serves_after_the_corpus(relay: RelayProcess) -> None:
    async def valid() -> list[int]:
        return [
            (await exchange(relay.port, Case("v1", 204, "", OK_V1))).status,
            (await exchange(relay.port, Case("v2", 204, "", OK_V2, dict(V2)))).status,
            (
                await exchange(
                    relay.port, Case("healthy", 200, "", method="GET", path="/-/healthy")
                )
            ).status,
        ]

    assert asyncio.run(valid()) == [204, 204, 200], relay.log_tail()
    assert relay.proc is not None and relay.proc.alive


# --------------------------------------------------------------------------------------------
# Fuzz: the decoders raise DecodeError and nothing else, quickly

PER_EXAMPLE_S = 1.0  # a decode of a few KiB takes microseconds; a second means a pathology
FUZZ = settings(
    max_examples=2000,
    deadline=None,  # timed by hand below, so a slow CI box does not flake on GC pauses
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def hang_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """A decoder stuck in C code cannot be interrupted; faulthandler's watchdog thread dumps
    every stack and exits the run instead of letting it hang (fuzz tests only)."""
    if "fuzz" not in request.node.name:
        yield
        return
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _only_decode_error(work: Callable[[], object]) -> None:
    started = time.perf_counter()
    with contextlib.suppress(DecodeError):
        work()
    elapsed = time.perf_counter() - started
    assert elapsed < PER_EXAMPLE_S, f"took {elapsed:.3f}s"


def _receive(body: bytes, codec: ModuleType) -> None:
    """What the write handler does with a body; an accepted batch must re-encode (the relay
    encodes every batch it admits, so an undecodable-once-decoded batch would be a 500)."""
    batch = codec.decode(snappy.decompress(body, MiB))
    codec.encode(batch)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_snappy_random_bytes(data: bytes) -> None:
    _only_decode_error(lambda: snappy.decompress(data, MiB))


@pytest.mark.parametrize("codec", [rw1, rw2], ids=["v1", "v2"])
@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_decoder_random_bytes(codec: ModuleType, data: bytes) -> None:
    _only_decode_error(lambda: codec.encode(codec.decode(data)))


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, steps: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, position, blob in steps:
        at = position % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= blob[0] or 1
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = blob
        elif kind == "delete":
            del out[at : at + len(blob)]
        elif kind == "duplicate":
            out[at:at] = out[at : at + 1 + blob[0] % 16]
    return bytes(out)


def _seeds() -> list[Batch]:
    """Valid requests using every part of the model: samples with special values, native
    histograms (integer and float), exemplars, metadata, several series."""
    hist = Histogram(
        timestamp=1000,
        count_value=12,
        zero_count=2,
        sum=33.5,
        schema=3,
        zero_threshold=1e-128,
        negative_spans=(BucketSpan(-2, 2),),
        negative_deltas=(1, -1),
        positive_spans=(BucketSpan(0, 3), BucketSpan(2, 1)),
        positive_deltas=(2, 1, -1, 3),
        reset_hint=1,
    )
    float_hist = hist._replace(
        is_float=True,
        count_value=12.5,
        zero_count=0.5,
        negative_deltas=(),
        positive_deltas=(),
        negative_counts=(1.0, 2.0),
        positive_counts=(1.0, 0.5, 3.0, 4.0),
    )
    job = ("job", "fault")
    return [
        Batch(
            (
                Series((("__name__", "up"), job), (Sample(1.0, 1000), Sample(STALE_NAN, 2000))),
                Series((("__name__", "temp"), job, ("unit", "°C")), (Sample(float("-inf"), -5),)),
            ),
            (FamilyMetadata("up", MetricType.GAUGE, "whether up", ""),),
        ),
        Batch((Series((("__name__", "h"), job), histograms=(hist, float_hist)),)),
        Batch(
            (
                Series(
                    (("__name__", "requests_total"), job),
                    (Sample(7.0, 1000, 500),),
                    exemplars=(Exemplar((("trace_id", "abc123"),), 1.0, 999),),
                    metadata=Metadata(MetricType.COUNTER, "requests", "1"),
                    created_timestamp=400,
                ),
            )
        ),
        _series(("__name__", "many"), *((f"l{i:02d}", "v" * i) for i in range(1, 20))),
    ]


SEEDS = _seeds()


@pytest.mark.parametrize("codec", [rw1, rw2], ids=["v1", "v2"])
@FUZZ
@given(seed=st.sampled_from(SEEDS), steps=mutations, compressed=st.booleans())
def test_fuzz_mutated_valid_requests(
    codec: ModuleType, seed: Batch, steps: list[tuple[str, int, bytes]], compressed: bool
) -> None:
    """Mutations of valid requests reach deep into the decoders (past the snappy and protobuf
    framing) where random bytes rarely go; mutated either before or after compression."""
    payload = codec.encode(seed)
    if compressed:
        body = _mutate(snappy.compress(payload), steps)
    else:
        body = snappy.compress(_mutate(payload, steps))
    _only_decode_error(lambda: _receive(body, codec))


@pytest.mark.parametrize("codec", [rw1, rw2], ids=["v1", "v2"])
@settings(FUZZ, max_examples=100)
@given(data=st.data(), steps=mutations)
def test_fuzz_mutated_generated_requests(
    codec: ModuleType, data: st.DataObject, steps: list[tuple[str, int, bytes]]
) -> None:
    """The same on requests drawn from the codec tests' model strategies: fewer examples (they
    are slow to generate) but shapes no hand-written seed has."""
    batch = data.draw(v1_batches() if codec is rw1 else v2_batches())
    body = snappy.compress(_mutate(codec.encode(batch), steps))
    _only_decode_error(lambda: _receive(body, codec))
