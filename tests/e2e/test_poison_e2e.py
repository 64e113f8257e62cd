"""A real Prometheus 2.42 refusing one series (500) does not stall the relay's other senders.

Prometheus 2.42 answers a whole remote-write request 500, storing none of it, when one series
has a duplicate label name ("label name "a" is not unique: invalid sample"); a sender such as the
OpenTelemetry exporter produces that when ``a.b`` and ``a_b`` both become ``a_b``. The relay is
run with ``receiver.validation: framing``, the opt-out that forwards label sets unchecked, so the
series reaches Prometheus; the relay must then find it, drop only it, and deliver the rest.
"""

from __future__ import annotations

import time

import pytest

from gotk_relay.wire import remote_pb2, rw1_bytes, snappy
from tests.support import rig

from .conftest import RelayStarter

DEADLINE_S = 30.0


def _request(series: list[list[tuple[str, str]]], ts_ms: int) -> bytes:
    request = remote_pb2.WriteRequest()
    for labels in series:
        ts = request.timeseries.add()
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        ts.samples.add(value=1.0, timestamp=ts_ms)
    return snappy.compress(request.SerializeToString())


def _post(url: str, body: bytes) -> int:
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    return rig.http_request(url, method="POST", data=body, headers=headers)[0]


@pytest.mark.slow
@pytest.mark.skipif(
    not rw1_bytes.NATIVE,
    reason="receiver.validation: framing needs the compiled scanner (README); without it the "
    "relay refuses the poison series itself",
)
def test_a_series_prometheus_refuses_is_dropped_and_both_senders_data_arrives(
    prom_receiver: rig.Prom, start_relay: RelayStarter, job_name: str
) -> None:
    relay = start_relay(
        f"""\
flux: {{mode: "off"}}
receiver: {{validation: framing}}
remote_write:
  - name: prom
    url: {prom_receiver.write_url}
    queue_config: {{min_backoff: 20ms, max_backoff: 200ms}}
"""
    )
    now = int(time.time() * 1000)
    poison = [("__name__", "x"), ("a", "1"), ("a", "2"), ("job", job_name)]
    expected = set()
    for step in range(5):
        for sender in ("a", "b"):
            names = [f"{sender}_good_{step}_{k}" for k in range(3)]
            series = [[("__name__", n), ("job", job_name)] for n in names]
            if sender == "a" and step == 0:
                series.insert(1, poison)  # among good series, in one request
            assert _post(relay.write_url, _request(series, now + step)) == 204
            expected.update(names)

    def arrived() -> bool:
        got = {s["__name__"] for s in prom_receiver.series(f'{{job="{job_name}"}}')}
        assert got == expected, sorted(expected - got)[:5]
        return True

    rig.eventually(arrived, DEADLINE_S, what="every good series in Prometheus")

    def poison_dropped() -> float:
        return sum(
            s.value
            for s in relay.metric_samples("gotk_relay_samples_dropped_total")
            if s.labels == {"destination": "prom", "reason": "poison"}
        )

    assert rig.eventually(poison_dropped, DEADLINE_S, what="poison drop counted") == 1
    lines = [line for line in relay.proc.log_text().splitlines() if "refusing one series" in line]
    assert len(lines) == 1, lines
    assert "not unique" in lines[0] and "http_500" in lines[0]
    assert rig.http_request(f"{relay.base_url}/-/ready")[0] == 200
