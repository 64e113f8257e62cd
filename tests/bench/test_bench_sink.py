"""The benchmark sink's full check fails when a delivery is not exactly what it must be.

The smoke test shows that every configuration's deliveries pass the check; these tests show the
check can fail: the real ``bench/sink.py --full`` is sent what a system would send, right and
wrong in each way that matters (a tenant label kept, the wrong tenant, a changed value, a lost
or repeated sample, a Datadog count's first sample sent), over HTTP, and asked to verify.

The workload has no Flux series, so what the relay must deliver is the variant's own change
alone, written out here from the configuration (not from the bench's code): ``tenants`` routes
by ``job`` and removes it; ``datadog-all`` sends every gauge sample, and every counter sample
but a series' first.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest

from gotk_relay.model import Batch, Sample, Series
from gotk_relay.wire import rw1, rw2
from tests.support import loadgen, rig

REPO = Path(__file__).resolve().parents[2]
SPEC = loadgen.WorkloadSpec("sink-check", series=300, batch_size=300, flux_fraction=0.0)
SERIES = loadgen.generate(SPEC)[0]
Labels = tuple[tuple[str, str], ...]
Delivery = list[tuple[str, Labels, float]]  # (tenant, labels, value)


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = rig.free_port()
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port), "--full"]
    proc = rig.Proc("bench-sink", argv, tmp_path_factory.mktemp("sink"), cwd=REPO)
    try:
        base = f"http://127.0.0.1:{port}"
        rig.wait_http(f"{base}/stats", 30.0, proc=proc)
        yield base
    finally:
        proc.stop()


@pytest.fixture
def fresh(sink: str) -> str:
    status, _, _ = rig.http_request(f"{sink}/reset", method="POST", data=b"")
    assert status == 204
    return sink


def post_write(base: str, series: list[tuple[Labels, float]], ts: int, tenant: str = "") -> None:
    batch = Batch(tuple(Series(labels, (Sample(value, ts),)) for labels, value in series))
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    body = bytes(cramjam.snappy.compress_raw(rw1.encode(batch)))
    status, _, _ = rig.http_request(
        f"{base}/api/v1/write", method="POST", data=body, headers=headers
    )
    assert status == 204


def verify(base: str, expect: str, acked: list[tuple[int, int]]) -> dict[str, Any]:
    payload = {"spec": SPEC.to_json(), "expect": expect, "acked": acked}
    status, _, body = rig.http_request(
        f"{base}/verify",
        method="POST",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def by_tenant() -> Delivery:
    """What ``tenant: {label: job}`` must deliver: the job's value as tenant, job removed."""
    out = []
    for item in SERIES:
        job = dict(item.labels)["job"]
        out.append((job, tuple(p for p in item.labels if p[0] != "job"), item.value))
    return out


def _label_kept(d: Delivery) -> Delivery:
    return [(t, item.labels, v) for (t, _, v), item in zip(d, SERIES, strict=True)]


def _one_tenant(d: Delivery) -> Delivery:
    return [("node-exporter", labels, v) for _, labels, v in d]


def _value_changed(d: Delivery) -> Delivery:
    return [(t, labels, v + 1 if i == 7 else v) for i, (t, labels, v) in enumerate(d)]


def _sample_lost(d: Delivery) -> Delivery:
    return d[1:]


def _sample_twice(d: Delivery) -> Delivery:
    return d + d[-1:]


WRONG: dict[str, tuple[Callable[[Delivery], Delivery], str]] = {
    "tenant-label-kept": (_label_kept, "unexpected"),
    "all-in-one-tenant": (_one_tenant, "missing"),
    "value-changed": (_value_changed, "wrong_value"),
    "sample-lost": (_sample_lost, "missing"),
    "sample-twice": (_sample_twice, "duplicates"),
}


def send(base: str, delivery: Delivery, ts: int) -> None:
    tenants: dict[str, list[tuple[Labels, float]]] = {}
    for tenant, labels, value in delivery:
        tenants.setdefault(tenant, []).append((labels, value))
    for tenant, series in tenants.items():
        post_write(base, series, ts, tenant)


def test_tenants_exact_delivery_passes(fresh: str) -> None:
    send(fresh, by_tenant(), SPEC.timestamp(0))
    result = verify(fresh, "tenants/gotk-relay", [(0, 0)])
    assert result["ok"], result
    assert result["received_samples"] == result["expected_samples"] == len(SERIES)


@pytest.mark.parametrize("case", WRONG, ids=list(WRONG))
def test_tenants_wrong_delivery_fails(fresh: str, case: str) -> None:
    change, counter = WRONG[case]
    send(fresh, change(by_tenant()), SPEC.timestamp(0))
    result = verify(fresh, "tenants/gotk-relay", [(0, 0)])
    assert not result["ok"], result
    assert result[counter] >= 1, result


def test_remote_write_2_is_decoded_and_answered_as_2(fresh: str) -> None:
    """A 2.0 request is counted and checked like a 1.0 one, and answered with the written
    counts the 2.0 spec requires (without them the relay would fall back to 1.0)."""
    ts = SPEC.timestamp(0)
    batch = Batch(tuple(Series(s.labels, (Sample(s.value, ts),)) for s in SERIES))
    body = bytes(cramjam.snappy.compress_raw(rw2.encode(batch)))
    headers = {"Content-Encoding": "snappy", "Content-Type": rw2.CONTENT_TYPE}
    status, answer, _ = rig.http_request(
        f"{fresh}/api/v1/write", method="POST", data=body, headers=headers
    )
    assert status == 204
    assert answer["X-Prometheus-Remote-Write-Samples-Written"] == str(len(SERIES))
    result = verify(fresh, "rw2/gotk-relay", [(0, 0)])
    assert result["ok"], result
    status, _, stats = rig.http_request(f"{fresh}/stats")
    assert json.loads(stats)["remote_write_requests"] == {"2.0": 1}


def datadog_body(rounds: list[int], first_counters: bool) -> bytes:
    """A Datadog ``/api/v2/series`` body for ``rounds`` of the batch: a gauge's point per
    sample; a counter's (a ``_total`` name) from its second sample on, unless
    ``first_counters``."""
    series = []
    for item in SERIES:
        name = dict(item.labels)["__name__"]
        counter = name.endswith("_total")
        points = [
            {"timestamp": SPEC.timestamp(r) // 1000, "value": 0.0 if counter else item.value}
            for i, r in enumerate(rounds)
            if first_counters or not counter or i > 0
        ]
        series.append({"metric": name, "type": 1 if counter else 3, "points": points})
    return gzip.compress(json.dumps({"series": series}).encode())


@pytest.mark.parametrize(
    ("first_counters", "ok"), [(False, True), (True, False)], ids=["exact", "counter-first-sent"]
)
def test_datadog_points_are_checked_per_metric_name(
    fresh: str, first_counters: bool, ok: bool
) -> None:
    body = datadog_body([0, 1], first_counters)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json", "DD-API-KEY": "x"}
    status, _, _ = rig.http_request(
        f"{fresh}/api/v2/series", method="POST", data=body, headers=headers
    )
    assert status == 202
    result = verify(fresh, "datadog-all/gotk-relay", [(0, 0), (0, 1)])
    assert result["ok"] is ok, result
    assert result["datadog_points"]["by_name_ok"] is ok


def write_headers() -> dict[str, str]:
    return {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


def test_writes_answered_before_counted_are_all_counted(fresh: str) -> None:
    """The sink acks a 1.0 write on receipt and counts it right after (``Backlog``): the counts
    ``/stats`` gives are still every sample of every write acked, and a body that does not
    decode, acked too, is counted as an error, which fails the row."""
    ts = SPEC.timestamp(0)
    writes = 40  # more than Backlog.LIMIT: some are counted before they are answered
    for i in range(writes):
        post_write(fresh, [(s.labels, s.value) for s in SERIES[: i + 1]], ts + i)
    status, _, stats = rig.http_request(f"{fresh}/stats")
    counted = json.loads(stats)
    assert status == 200
    assert counted["samples"] == writes * (writes + 1) // 2
    assert counted["requests"] == writes and counted["errors"] == 0
    status, _, _ = rig.http_request(
        f"{fresh}/api/v1/write", method="POST", data=b"\xff not snappy", headers=write_headers()
    )
    assert status == 204
    status, _, stats = rig.http_request(f"{fresh}/stats")
    assert json.loads(stats)["errors"] == 1
    assert not verify(fresh, "tenants/gotk-relay", [])["ok"]


def test_the_bare_receiver_counts_before_it_answers(tmp_path: Path) -> None:
    """``--count-first`` (the latency floor's bare receiver): a write is answered once counted,
    so a body that does not decode is a 400."""
    port = rig.free_port()
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port), "--count-first"]
    proc = rig.Proc("bench-sink-count-first", argv, tmp_path, cwd=REPO)
    try:
        base = f"http://127.0.0.1:{port}"
        rig.wait_http(f"{base}/stats", 30.0, proc=proc)
        status, _, _ = rig.http_request(
            f"{base}/api/v1/write", method="POST", data=b"\xff not snappy", headers=write_headers()
        )
        assert status == 400
        post_write(base, [(s.labels, s.value) for s in SERIES], SPEC.timestamp(0))
        status, _, stats = rig.http_request(f"{base}/stats")
        counted = json.loads(stats)
        assert (counted["samples"], counted["errors"]) == (len(SERIES), 1)
    finally:
        proc.stop()
