"""A real sender's invalid series is refused at the relay, and every other sender keeps flowing.

Pipeline under test (issue 16, "interop kept")::

    StaticExporter "prom"    -> prometheus --enable-feature=agent ------------------\\
    StaticExporter "vmagent" -> vmagent -remoteWrite.url=<relay>?from=vmagent-good --> relay -> VM
    StaticExporter "poison"  -> (same vmagent) -remoteWrite.url=<relay>?from=vmagent-poison /

The poison target exposes a series that Prometheus never sends but vmagent 1.79 does:

* ``nameless``: ``metric_relabel_configs`` replacing ``__name__`` by ``""``; vmagent sends the
  series without ``__name__``.
* ``invalid-utf8``: a label value with the bytes ``\\xff\\xfe``; vmagent forwards the bytes as
  they came.

Prometheus 2.42 fails the whole scrape of either page (``up`` 0) and sends none of it; the last
test here checks both senders on the wire, so that this premise cannot silently stop holding.

vmagent writes the poison job and its good job to the relay in requests of their own (two
``-remoteWrite.url`` with ``-remoteWrite.urlRelabelConfig`` keeping one job each), as one
vmagent with two tenants or teams would. vmagent drops a block answered 400 without retrying
(``vmagent_remotewrite_packets_dropped_total``, a "was rejected (skipping the block)" log line
with the answer's body) and goes on with the next, so nothing stalls behind the refusal; the
relay must answer that 400 itself, and queue nothing of the refused request.

Each good series carries the test's phase as its value, so "keeps arriving" is a value that
changes in VictoriaMetrics, not a series that was there once.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import cramjam
import pytest

from tests.support import rig

from .conftest import AgentStarter, RelayStarter, VMAgentStarter

DEADLINE_S = 45.0
"""Per wait. A new Prometheus agent's first scrape takes ~5 s (targets are applied on a 5 s
tick); vmagent scrapes within a second; then samples cross the relay within a couple of seconds."""

FLOW = "e2e_flow"
COMPANION = "e2e_poison_companion"


RawLabels = tuple[tuple[bytes, bytes], ...]
"""A series' labels as the bytes on the wire, in the order sent (not decoded: may be invalid)."""


@dataclass(frozen=True)
class Poison:
    """A series vmagent sends and Prometheus never would: the exposition and scrape rules that
    make it, ``marker``, the value of its ``poison`` label, which the relay's 400 must name,
    and ``wire_labels``, its labels as vmagent sends them (besides ``job`` and ``instance``)."""

    name: str
    marker: str
    exposition: bytes
    wire_labels: RawLabels
    metric_relabel_configs: tuple[dict[str, Any], ...] = field(default=())

    def sent_by_scrape(self, job: str, instance: str) -> RawLabels:
        """The poison series as a sender puts it on the wire, labels sorted by name."""
        target = ((b"instance", instance.encode()), (b"job", job.encode()))
        return tuple(sorted(self.wire_labels + target))


NAMELESS = Poison(
    name="nameless",
    marker="e2e-nameless-series",
    exposition=b'e2e_poison_nameless{poison="e2e-nameless-series"} 1\n',
    wire_labels=((b"poison", b"e2e-nameless-series"),),
    metric_relabel_configs=(
        {
            "action": "replace",
            "source_labels": ["__name__"],
            "regex": "e2e_poison_nameless",
            "target_label": "__name__",
            "replacement": "",
        },
    ),
)
INVALID_UTF8 = Poison(
    name="utf8",
    marker="e2e-invalid-utf8-series",
    exposition=b'e2e_poison_utf8{poison="e2e-invalid-utf8-series",v="\xff\xfe"} 1\n',
    wire_labels=(
        (b"__name__", b"e2e_poison_utf8"),
        (b"poison", b"e2e-invalid-utf8-series"),
        (b"v", b"\xff\xfe"),
    ),
)


def relay_config(vm_url: str, validation: str | None) -> str:
    """Relay YAML: one destination, VictoriaMetrics; ``receiver.validation`` only if given,
    so that ``None`` runs the relay's default receiver (and default Flux rules)."""
    config = ""
    if validation is not None:
        config += f"receiver:\n  validation: {validation}\n"
    config += f"""\
remote_write:
  - name: vm
    url: {vm_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
"""
    return config


def flow_family(sender: str, phase: int) -> rig.Family:
    """The good series of one sender, whose value is the test's phase."""
    sample = rig.ExpositionSample(FLOW, {"sender": sender}, float(phase))
    return rig.Family(FLOW, "gauge", "Value is the test phase.", [sample])


def poison_body(phase: int, poison: Poison | None) -> bytes:
    """The poison target's page: a valid companion series (value: the phase) and the poison."""
    companion = rig.ExpositionSample(COMPANION, {}, float(phase))
    family = rig.Family(COMPANION, "gauge", "Scraped with the poison.", [companion])
    text = rig.render_exposition([family]).encode()
    return text + (poison.exposition if poison is not None else b"")


def scrape_job(
    job: str, target: str, metric_relabel_configs: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """A vmagent scrape config for one target, scraped every second."""
    config: dict[str, Any] = {
        "job_name": job,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{"targets": [target]}],
    }
    if metric_relabel_configs:
        config["metric_relabel_configs"] = list(metric_relabel_configs)
    return config


def keep_job(job: str) -> list[dict[str, Any]]:
    """A ``-remoteWrite.urlRelabelConfig`` that sends only ``job`` to its URL."""
    return [{"action": "keep", "source_labels": ["job"], "regex": job}]


def refused_by_relay(relay: rig.Relay) -> dict[str, float]:
    """``gotk_relay_rejected_requests_total`` by reason, the reasons counted so far only."""
    counts: dict[str, float] = {}
    for sample in relay.metric_samples("gotk_relay_rejected_requests_total"):
        reason = sample.labels.get("reason", "")
        counts[reason] = counts.get(reason, 0.0) + sample.value
    return {reason: count for reason, count in counts.items() if count > 0}


def dropped_by_vmagent(vmagent: rig.VMAgent) -> float:
    """Blocks vmagent gave up on because the relay refused them (400/409, never retried)."""
    return vmagent.counter("vmagent_remotewrite_packets_dropped_total")


@dataclass
class Case:
    """One poison's pipeline: its targets and jobs, its relay, agent and vmagent."""

    poison: Poison
    vm: rig.VM
    prom_target: rig.StaticExporter
    good_target: rig.StaticExporter
    poison_target: rig.StaticExporter
    relay: rig.Relay | None = None
    vmagent: rig.VMAgent | None = None

    @property
    def jobs(self) -> tuple[str, str, str]:
        # Short job names (unique in the shared VictoriaMetrics): the relay's description of
        # the poison series, which must reach its ``poison`` label, may be cut after ~200
        # characters.
        case = f"e2e_inv_default_{self.poison.name}"
        prom_job, good_job, poison_job = (f"{case}_{s}" for s in ("prom", "vmagent", "poison"))
        return prom_job, good_job, poison_job

    def set_phase(self, phase: int, *, with_poison: bool) -> None:
        self.prom_target.set_text(rig.render_exposition([flow_family("prometheus", phase)]))
        self.good_target.set_text(rig.render_exposition([flow_family("vmagent", phase)]))
        self.poison_target.set_body(poison_body(phase, self.poison if with_poison else None))

    def await_flow(self, phase: int) -> None:
        """Both senders' good series hold ``phase`` in VictoriaMetrics."""
        prom_job, good_job, _ = self.jobs
        for sender, job, target in (
            ("prometheus", prom_job, self.prom_target),
            ("vmagent", good_job, self.good_target),
        ):
            expected = rig.expected_series(
                [flow_family(sender, phase)], job=job, instance=target.target
            )
            rig.await_samples(self.vm, f'{FLOW}{{job="{job}"}}', expected, deadline_s=DEADLINE_S)

    def stored_of_poison_job(self) -> list[dict[str, str]]:
        self.vm.flush()
        return self.vm.series(f'{{job="{self.jobs[2]}"}}', start=0)

    def refused_naming_the_poison(self) -> list[str]:
        assert self.vmagent is not None
        lines = [
            line
            for line in self.vmagent.rejected_blocks()
            if "status code 400" in line and self.poison.marker in line
        ]
        assert lines, self.vmagent.rejected_blocks()[-3:] or "vmagent logged no refused block"
        return lines


@pytest.mark.slow
def test_invalid_series_from_vmagent_is_refused_while_other_senders_keep_flowing(
    victoria_metrics: rig.VM,
    start_relay: RelayStarter,
    start_agent: AgentStarter,
    start_vmagent: VMAgentStarter,
    teardown: ExitStack,
) -> None:
    """For each poison: vmagent's requests carrying it are answered 400 naming it and are not
    stored; the Prometheus agent's data and vmagent's other requests keep arriving, during the
    poison and after it is gone; vmagent then delivers the formerly poisoned job's data again.

    The relay runs its default receiver, whose default is ``validation: full`` (the strict
    scanner, issue 16). The two poisons run side by side, each in a pipeline of its own (its
    relay, Prometheus agent and vmagent), so the agents' first scrapes are waited for once.
    """

    def exporter() -> rig.StaticExporter:
        return teardown.enter_context(rig.StaticExporter())

    cases = [
        Case(poison, victoria_metrics, exporter(), exporter(), exporter())
        for poison in (NAMELESS, INVALID_UTF8)
    ]
    for case in cases:
        prom_job, good_job, poison_job = case.jobs
        case.set_phase(1, with_poison=True)
        relay = case.relay = start_relay(relay_config(victoria_metrics.write_url, None))
        start_agent([case.prom_target.target], relay.write_url, job_name=prom_job)
        case.vmagent = start_vmagent(
            [
                scrape_job(good_job, case.good_target.target),
                scrape_job(
                    poison_job, case.poison_target.target, case.poison.metric_relabel_configs
                ),
            ],
            [
                rig.VMAgentRemoteWrite(f"{relay.write_url}?from=vmagent-good", keep_job(good_job)),
                rig.VMAgentRemoteWrite(
                    f"{relay.write_url}?from=vmagent-poison", keep_job(poison_job)
                ),
            ],
        )

    # Phase 1: both senders' data arrives, and vmagent's poisoned requests are refused with
    # a 400 that names the poison series (vmagent logs the relay's answer).
    for case in cases:
        assert case.relay is not None and case.vmagent is not None
        case.await_flow(1)
        rig.eventually(
            case.refused_naming_the_poison,
            DEADLINE_S,
            what=f"vmagent saw a 400 naming the {case.poison.name} series",
        )
        assert refused_by_relay(case.relay), f"the relay did not count the {case.poison.name}"

    # Phase 2, during: the poison is still scraped and refused, and new values keep flowing.
    dropped_before = {}
    for case in cases:
        assert case.vmagent is not None
        dropped_before[case.poison.name] = dropped_by_vmagent(case.vmagent)
        case.set_phase(2, with_poison=True)
    for case in cases:
        vmagent = case.vmagent
        assert vmagent is not None
        case.await_flow(2)
        before = dropped_before[case.poison.name]

        def dropped_more(vmagent: rig.VMAgent = vmagent, before: float = before) -> bool:
            return dropped_by_vmagent(vmagent) > before

        rig.eventually(
            dropped_more,
            DEADLINE_S,
            what=f"vmagent dropped another refused block during phase 2 ({case.poison.name})",
        )
        # Nothing of a refused request reached the destination: not the poison, not the
        # companion series and vmagent's own up/scrape_* series that came with it.
        assert case.stored_of_poison_job() == [], case.poison.name

    # Phase 3, after: the target is fixed; vmagent's queue for that URL was never stuck.
    for case in cases:
        case.set_phase(3, with_poison=False)
    for case in cases:
        poison_job = case.jobs[2]
        case.await_flow(3)
        companion = rig.expected_series(
            [rig.Family(COMPANION, "gauge", "", [rig.ExpositionSample(COMPANION, {}, 3.0)])],
            job=poison_job,
            instance=case.poison_target.target,
        )
        rig.await_samples(
            victoria_metrics,
            f'{COMPANION}{{job="{poison_job}"}}',
            companion,
            deadline_s=DEADLINE_S,
        )
        stored = victoria_metrics.export(f'{COMPANION}{{job="{poison_job}"}}')
        assert {value for row in stored for value in row["values"]} == {3.0}, stored
        assert all("poison" not in series for series in case.stored_of_poison_job())


# --------------------------------------------------------------------------------------------
# The control: what each sender really puts on the wire, without the relay


def _fields(message: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """``(field number, wire type, value)`` of a protobuf message, length-delimited values as
    bytes; enough for remote write 1.0 (no groups)."""

    def varint(pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            byte = message[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result, pos

    pos = 0
    while pos < len(message):
        key, pos = varint(pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = varint(pos)
            yield number, wire_type, value
        elif wire_type == 1:
            yield number, wire_type, message[pos : pos + 8]
            pos += 8
        elif wire_type == 2:
            size, pos = varint(pos)
            yield number, wire_type, message[pos : pos + size]
            pos += size
        elif wire_type == 5:
            yield number, wire_type, message[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wire_type} at byte {pos}")


def _sub(message: bytes, number: int) -> list[bytes]:
    return [v for n, t, v in _fields(message) if n == number and t == 2 and isinstance(v, bytes)]


def _sample_value(sample: bytes) -> float:
    # proto3 leaves a zero value out of the message (Prometheus' ``up`` 0, for one).
    for number, wire_type, value in _fields(sample):
        if number == 1 and wire_type == 1 and isinstance(value, bytes):
            return float(struct.unpack("<d", value)[0])
    return 0.0


def request_series(request: bytes) -> list[tuple[RawLabels, tuple[float, ...]]]:
    """The series of an uncompressed ``prometheus.WriteRequest``: raw labels and sample values."""
    series = []
    for ts in _sub(request, 1):
        labels = tuple(
            (b"".join(_sub(label, 1)), b"".join(_sub(label, 2))) for label in _sub(ts, 1)
        )
        values = tuple(_sample_value(sample) for sample in _sub(ts, 2))
        series.append((labels, values))
    return series


class RemoteWriteCapture:
    """A remote-write 1.0 receiver on 127.0.0.1 that answers 204 and keeps every series it got,
    as raw label bytes (invalid UTF-8 stays visible), by URL path so senders can share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, list[tuple[RawLabels, tuple[float, ...]]]] = {}
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                series = request_series(bytes(cramjam.snappy.decompress_raw(body)))
                with capture._lock:
                    capture._series.setdefault(urlsplit(self.path).path, []).extend(series)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((rig.HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """Where a sender writes to have its series kept under ``path``."""
        return f"http://{rig.HOST}:{self._server.server_address[1]}{path}"

    def series(self, path: str) -> list[tuple[RawLabels, tuple[float, ...]]]:
        """Every series received on ``path`` so far, one entry per series per request."""
        with self._lock:
            return list(self._series.get(path, []))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


@pytest.mark.slow
def test_vmagent_sends_the_poison_series_that_prometheus_never_sends(
    start_agent: AgentStarter,
    start_vmagent: VMAgentStarter,
    teardown: ExitStack,
) -> None:
    """The premise of the test above, checked on the wire for each poison: scraping the poison
    target with the same rules, vmagent sends the invalid series as it is; Prometheus 2.42
    fails the scrape.

    If a vmagent upgrade stopped sending it, the test above would prove nothing; this fails.
    Each poison has its own target, job, agents and capture path; they run side by side, so
    the agents' first scrapes (~5 s away) are waited for once.
    """
    capture = teardown.enter_context(RemoteWriteCapture())
    cases: list[tuple[Poison, str, str]] = []
    for poison in (NAMELESS, INVALID_UTF8):
        target = teardown.enter_context(rig.StaticExporter())
        target.set_body(poison_body(1, poison))
        job = f"e2e_inv_wire_{poison.name}"
        rules = list(poison.metric_relabel_configs)
        start_agent(
            [target.target],
            capture.url(f"/prometheus/{poison.name}"),
            job_name=job,
            extra_scrape_config={"metric_relabel_configs": rules} if rules else None,
        )
        start_vmagent(
            [scrape_job(job, target.target, rules)],
            [rig.VMAgentRemoteWrite(capture.url(f"/vmagent/{poison.name}"))],
        )
        cases.append((poison, job, target.target))

    for poison, job, instance in cases:
        wanted = poison.sent_by_scrape(job, instance)

        def vmagent_sent_it(poison: Poison = poison, wanted: RawLabels = wanted) -> bool:
            sent = [
                tuple(sorted(labels)) for labels, _ in capture.series(f"/vmagent/{poison.name}")
            ]
            assert wanted in sent, sent[-5:]
            return True

        rig.eventually(vmagent_sent_it, DEADLINE_S, what=f"vmagent sent the {poison.name} series")

        def prometheus_reported_scrapes(count: int, poison: Poison = poison) -> list[float]:
            up = [
                value
                for labels, values in capture.series(f"/prometheus/{poison.name}")
                if (b"__name__", b"up") in labels
                for value in values
            ]
            assert len(up) >= count, up
            return up

        # Three scrapes of the same page reported by Prometheus, each failed as a whole (up 0),
        # and not one poison series sent.
        up = rig.eventually(
            lambda: prometheus_reported_scrapes(3), DEADLINE_S, what=f"3 scrapes ({poison.name})"
        )
        assert set(up) == {0.0}, (poison.name, up)
        sent = capture.series(f"/prometheus/{poison.name}")
        marker = (b"poison", poison.marker.encode())
        assert not [labels for labels, _ in sent if marker in labels], poison.name
