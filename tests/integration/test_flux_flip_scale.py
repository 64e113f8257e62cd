"""Issue 22's correctness at scale: after a round of 50,000 Flux objects and a round in which a
random 10 % of them flip Ready, every object's outputs are right, in order and current, both in
what the relay sent its destination and in what ``/federate`` holds.

The relay is the real app (``harness.relay_client``, default Flux and federate settings plus one
``remote_write``); the destination is a real HTTP server that keeps, per output series, every
sample it receives. The second round is sent as Prometheus sends a KSM scrape in which an
object's ``ready`` label changed: the series with the new label, and a stale marker for the old
one, the requests cut and their series shuffled as remote write's shards deliver them. Each
object's expected outputs follow from its input alone: ``gotk_reconcile_condition`` 1 for its
Ready status and 0 for the two others, ``gotk_suspend_status`` 1 when suspended, all at the
round's timestamp.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

import pytest
from aiohttp import web

from gotk_relay.model import STALE_NAN, Batch, Labels, Series, labels_from
from gotk_relay.rules.flux import RECONCILE_CONDITION, STATUSES, SUSPEND_STATUS
from gotk_relay.wire import fastpath_pb2, remote_pb2, rw1, snappy
from tests.support import loadgen
from tests.support.harness import RelayClient, ScriptedReceiver, eventually, receivers, relay_client

OBJECTS: Final = 50_000
FLIP: Final = 0.10
PER_REQUEST: Final = 5_000
T1: Final = 1_732_560_000_000
T2: Final = T1 + 30_000
HEADERS: Final = {
    "Content-Type": rw1.CONTENT_TYPE,
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
# A label as remote write encodes it (field 1 name, field 2 value, lengths < 128 here): the
# sink reads the three labels it needs from the series' encoded labels without decoding them.
_NAME: Final = b"\n\x08__name__\x12"
_OBJECT: Final = b"\n\x04name\x12"
_STATUS: Final = b"\n\x06status\x12"
_CONDITION: Final = RECONCILE_CONDITION.encode()
_SUSPEND: Final = SUSPEND_STATUS.encode()

Output = tuple[str, str]  # (object name, status; "" for gotk_suspend_status)


def _value(labels: Sequence[bytes], prefix: bytes) -> bytes:
    for label in labels:
        if label.startswith(prefix):
            return label[len(prefix) + 1 :]
    return b""


class OutputSink(ScriptedReceiver):
    """Keeps every output sample received, per output series: (timestamp, value) in arrival
    order. Other series (the forwarded inputs) are only counted."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[Output, list[tuple[int, float]]] = {}
        self.samples = 0
        self.others = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = snappy.decompress(await request.read(), 1 << 30)
        outputs = self.outputs
        for encoded in fastpath_pb2.FlatWriteRequest.FromString(raw).timeseries:
            series = fastpath_pb2.FlatTimeSeries.FromString(encoded)
            labels = series.labels
            metric = labels[0][len(_NAME) + 1 :]  # the relay sorts labels: __name__ first
            if metric not in (_CONDITION, _SUSPEND):
                self.others += len(series.samples)
                continue
            status = _value(labels, _STATUS).decode() if metric == _CONDITION else ""
            got = outputs.setdefault((_value(labels, _OBJECT).decode(), status), [])
            for encoded_sample in series.samples:
                sample = remote_pb2.Sample.FromString(encoded_sample)
                got.append((sample.timestamp, sample.value))
                self.samples += 1
        return web.Response(status=204)


@dataclass
class Tally:
    """What an output check found, with a few examples of each kind of fault."""

    wrong: int = 0
    out_of_order: int = 0
    stale: int = 0
    examples: list[str] = field(default_factory=list)

    def fault(self, kind: str, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {what}")

    def counts(self) -> tuple[int, int, int]:
        return (self.wrong, self.out_of_order, self.stale)


def expected(objects: list[dict[str, str]]) -> dict[Output, float]:
    """Every output series of every object, with the value its input implies."""
    out: dict[Output, float] = {}
    for obj in objects:
        ready = obj.get("ready", "Unknown")
        for status in STATUSES:
            out[(obj["name"], status)] = 1.0 if status == ready else 0.0
        out[(obj["name"], "")] = 1.0 if obj.get("suspended") == "true" else 0.0
    return out


def flipped(rng: random.Random, ready: str) -> str:
    """Ready's next value: True ↔ False, one in five to Unknown; Unknown back to True/False."""
    if ready == "Unknown":
        return rng.choice(("True", "False"))
    if rng.random() < 0.2:
        return "Unknown"
    return "False" if ready == "True" else "True"


def encoded(labels: list[Labels]) -> list[bytes]:
    """Each label set as an encoded remote-write series (sample-less), in order: the labels are
    encoded once, and each round puts its samples around their bytes (``with_sample``)."""
    request = rw1.encode(Batch(tuple(Series(one, ()) for one in labels)))
    return list(fastpath_pb2.FlatWriteRequest.FromString(request).timeseries)


def with_sample(series: bytes, value: float, ts: int) -> bytes:
    sample = bytes(remote_pb2.Sample(value=value, timestamp=ts).SerializeToString())
    return series + b"\x12" + bytes((len(sample),)) + sample  # field 2, length < 128


def requests(series: list[bytes], rng: random.Random) -> list[bytes]:
    """The round as remote write delivers it: shuffled across requests of ``PER_REQUEST``."""
    rng.shuffle(series)
    out = []
    for i in range(0, len(series), PER_REQUEST):
        request = fastpath_pb2.FlatWriteRequest()
        request.timeseries.extend(series[i : i + PER_REQUEST])
        out.append(snappy.compress(request.SerializeToString()))
    return out


def check_sink(
    sink: OutputSink, before: dict[Output, float], want: dict[Output, float], tally: Tally
) -> None:
    """Each output's samples strictly later than the one before (out of order otherwise), one
    at T1 with the value of the first round's input and one at T2 with the current input's
    (wrong otherwise; NaN, a stale marker, is wrong too), none missing at T2 (stale)."""
    for key, value in want.items():
        got = sink.outputs.get(key, [])
        for (earlier, _), (ts, _) in pairwise(got):
            if ts <= earlier:
                tally.fault("out_of_order", f"{key}: {ts} after {earlier} in {got}")
        if not got or got[-1][0] != T2:
            tally.fault("stale", f"{key}: last sample {got[-1:]}, want one at {T2}")
        elif got != [(T1, before[key]), (T2, value)]:
            tally.fault("wrong", f"{key}: {got}, want {[(T1, before[key]), (T2, value)]}")
    extra = sink.outputs.keys() - want.keys()
    for key in sorted(extra)[:3]:
        tally.fault("wrong", f"{key}: an output no object implies: {sink.outputs[key]}")
    tally.wrong += max(0, len(extra) - 3)


_LINE: Final = re.compile(
    r"^(gotk_reconcile_condition|gotk_suspend_status)\{(.*)\} (\S+) (\d+)$", re.MULTILINE
)
_LABEL: Final = re.compile(r'(name|status)="([^"]*)"')


async def check_federate(client: RelayClient, want: dict[Output, float], tally: Tally) -> None:
    """What ``/federate`` holds for every output: its latest value, at T2."""
    selectors = [f'{{__name__="{RECONCILE_CONDITION}"}}', f'{{__name__="{SUSPEND_STATUS}"}}']
    response = await client.get("/federate", params=[("match[]", s) for s in selectors])
    assert response.status == 200, await response.text()
    held: dict[Output, tuple[float, int]] = {}
    for metric, labels, value, ts in _LINE.findall(await response.text()):
        found = dict(_LABEL.findall(labels))
        key = (found["name"], found.get("status", "") if metric == RECONCILE_CONDITION else "")
        assert key not in held, f"{key} twice in /federate"
        held[key] = (float(value), int(ts))
    for key, value in want.items():
        if key not in held or held[key][1] != T2:
            tally.fault("stale", f"/federate {key}: {held.get(key)}, want ({value}, {T2})")
        elif held[key][0] != value:
            tally.fault("wrong", f"/federate {key}: {held[key]}, want ({value}, {T2})")
    for key in sorted(held.keys() - want.keys())[:3]:
        tally.fault("wrong", f"/federate {key}: no object implies it")


@pytest.mark.slow
async def test_every_object_is_right_after_a_round_in_which_a_tenth_flip_ready() -> None:
    rng = random.Random(2210)
    objects = [loadgen.flux_labels(rng, i) for i in range(OBJECTS)]
    inputs = encoded([labels_from(o) for o in objects])
    before = expected(objects)
    flips = Counter[tuple[str, str]]()
    ended = []  # each flipped object's old series, which a stale marker ends
    for i, obj in enumerate(objects):
        if "ready" in obj and rng.random() < FLIP:
            old = obj["ready"]
            obj["ready"] = flipped(rng, old)
            flips[(old, obj["ready"])] += 1
            ended.append(i)
    renamed = dict(zip(ended, encoded([labels_from(objects[i]) for i in ended]), strict=True))
    first = [with_sample(one, 1.0, T1) for one in inputs]
    second = [with_sample(renamed.get(i, one), 1.0, T2) for i, one in enumerate(inputs)]
    second += [with_sample(inputs[i], STALE_NAN, T2) for i in ended]
    rounds = {T1: requests(first, rng), T2: requests(second, rng)}
    want = expected(objects)
    # 10 % of the objects that have a Ready condition (a few kinds have none), each way
    assert sum(flips.values()) > 0.08 * OBJECTS and len(flips) == 6, flips
    # A round's queue whole (its inputs and outputs): push-back is tested elsewhere.
    queue = {"capacity": 1_000_000}
    async with (
        receivers(OutputSink()) as (sink,),
        # The rounds are dated 2024: no lookback leaves them out of /federate.
        relay_client(
            {
                "remote_write": [{"url": sink.url, "queue_config": queue}],
                "federate": {"lookback_delta": "100y"},
            }
        ) as (client, _),
    ):
        assert isinstance(sink, OutputSink)

        async def send(bodies: list[bytes], outputs: int) -> None:
            for body in bodies:
                response = await client.post("/api/v1/write", data=body, headers=HEADERS)
                assert response.status == 204, await response.text()
            await eventually(lambda: sink.samples >= outputs, timeout=60)

        await send(rounds[T1], len(want))
        await send(rounds[T2], 2 * len(want))
        tally = Tally()
        check_sink(sink, before, want, tally)
        await check_federate(client, want, tally)
    detail = "\n".join(tally.examples)
    assert sink.samples == 2 * len(want), f"{sink.samples} output samples\n{detail}"
    assert tally.counts() == (0, 0, 0), f"(wrong, out of order, stale)\n{detail}"
