"""Scale-out that keeps the guarantees, end to end (docs/scaling.md).

Pipeline under test, every piece real and on loopback: a :class:`rig.StaticExporter` serving
kube-state-metrics' Flux lines plus ordinary gauges and counters that change at every scrape →
Prometheus 2.42 in server mode (scrape every 1 s; its own TSDB is the reference) → remote write
to HAProxy (round robin, ``/-/ready`` checks) → 3 gateway relays (``receiver.acknowledge:
delivered``, ``flux.mode: off``; the Flux inputs to the Flux tier, everything else to the store)
→ the Flux tier relay (the Flux rules, ``legacy``, with a spool) → Prometheus 2.42 as the store.

The Flux objects go through test_flux_e2e's life (create, HelmRelease Ready True → False →
True, Kustomization suspended, GitRepository deleted). During step 3 a gateway is SIGKILLed;
before step 4 a fourth one, listed in HAProxy from the start but not running, is started. At the
end: every ordinary sample Prometheus scraped during the run is in the store, byte for byte; the
legacy series have no hole and no wrong value (a range query at a fine step); the store refused
nothing (log and counters); Prometheus failed and dropped no sample (it retried some: those the
killed gateway held, which it had not acknowledged).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support import rig
from tests.support.balancer import Balancer, start_haproxy

from .test_flux_e2e import (
    CONTROLLER_NAMESPACE,
    DEADLINE_S,
    STEPS,
    ReceiverBaseline,
    Step,
    Variant,
    expected_histories,
    history_problems,
    ksm_exposition,
    step_problems,
)

# Without haproxy the test fails naming the package (start_haproxy), as the rig does for the
# other binaries: a skip would hide that nothing ran.
# HAProxy drops a replica after one failed 200 ms check: a loaded machine makes them flap.
pytestmark = [pytest.mark.slow, pytest.mark.alone]

VARIANT = Variant("stored", emit_deleted=False)
FLUX_INPUTS = "gotk_resource_info|flux_resource_info|gotk_reconcile_condition|gotk_suspend_status"
GATEWAYS = 3
KILLED = 1  # the gateway SIGKILLed during step 3
ACK_TIMEOUT_S = 5  # below Prometheus' remote_timeout (10 s here), as the docs advise
HOLD_SCRAPES = 2  # scrapes between a step's convergence and the next change
ORDINARY = 150  # gauges, and as many counters: a few writes per scrape (100 samples each)


class LiveExporter(rig.StaticExporter):
    """The Flux lines the test sets, plus ordinary series whose values change at every scrape:
    gauges with values whose float bits are not round, and counters."""

    def __init__(self) -> None:
        super().__init__()
        self._round = 0
        self._round_lock = threading.Lock()

    def _serve(self) -> bytes:
        flux = super()._serve()
        with self._round_lock:
            self._round += 1
            n = self._round
        lines = ["# TYPE app_temperature gauge"]
        lines += [f'app_temperature{{sensor="s{k}"}} {n / 7 + k / 3!r}' for k in range(ORDINARY)]
        lines.append("# TYPE app_requests_total counter")
        lines += [f'app_requests_total{{path="/p{k}"}} {n * (k + 1)}' for k in range(ORDINARY)]
        return flux + ("\n".join(lines) + "\n").encode()


def flux_tier_config(store_url: str, spool: Path) -> str:
    """The one Flux owner (config/examples/flux-tier.yml, pointed at the store)."""
    return f"""\
flux:
  mode: legacy
  keep_source: true
  label_shape: {VARIANT.label_shape}
  controller_namespace: {CONTROLLER_NAMESPACE}
spool:
  data_dir: {spool}
remote_write:
  - name: store
    url: {store_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
"""


def gateway_config(store_url: str, flux_tier_url: str) -> str:
    """A gateway replica (config/examples/gateway.yml, pointed at the store and the tier)."""
    return f"""\
receiver:
  acknowledge: delivered
  acknowledge_timeout: {ACK_TIMEOUT_S}s
flux: {{mode: "off"}}
federate: {{enabled: false}}
remote_write:
  - name: store
    url: {store_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
    write_relabel_configs:
      - {{source_labels: [__name__], regex: "{FLUX_INPUTS}", action: drop}}
  - name: flux-tier
    url: {flux_tier_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
    write_relabel_configs:
      - {{source_labels: [__name__], regex: "{FLUX_INPUTS}", action: keep}}
"""


def start_relay_on(tmp: Path, port: int, config_yaml: str) -> rig.Relay:
    """``rig.start_relay`` on a port chosen before (HAProxy lists it before it runs)."""
    workdir = rig._component_dir(tmp, "relay")
    config_path = workdir / "relay.yml"
    config_path.write_text(config_yaml)
    argv = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(config_path)]
    argv += ["--listen-address", f"{rig.HOST}:{port}"]
    proc = rig.Proc(f"relay-{port}", argv, workdir, env=rig.relay_env(), cwd=rig.REPO_ROOT)
    relay = rig.Relay(proc, port, config_path)
    rig._await_ready(relay, "/-/ready", 30.0)
    return relay


def start_prometheus_server(tmp: Path, target: str, write_url: str, job: str) -> rig.Prom:
    """Prometheus in server mode: scrapes ``target`` every second into its own TSDB (the
    reference of what was scraped) and remote-writes it to ``write_url``."""
    workdir = rig._component_dir(tmp, "prom-server")
    port = rig.free_port()
    config = rig.agent_config(
        [target],
        [write_url],
        job_name=job,
        scrape_interval="1s",
        extra_remote_write={
            "remote_timeout": "10s",
            "queue_config": {"max_samples_per_send": 100},
        },
    )
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    argv = [
        rig.require_binary("prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={rig.HOST}:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=info",
    ]
    prom = rig.Prom(rig.Proc(f"prom-server-{port}", argv, workdir), port)
    rig._await_ready(prom, "/-/ready", 30.0)
    return prom


def raw_samples(prom: rig.Prom, selector: str, start: float, end: float) -> dict[str, list[str]]:
    """Every stored sample of ``selector`` in ``[start, end]``, per series: ``ts value`` as
    the server prints them (Go's shortest round trip: equal text is equal float bits)."""
    window = math.ceil(end - start) + 1
    data = prom.api("query", [("query", f"{selector}[{window}s]"), ("time", f"{end:.3f}")])
    assert data["resultType"] == "matrix", data
    found: dict[str, list[str]] = {}
    for item in data["result"]:
        points = [f"{t} {v}" for t, v in item["values"] if float(t) >= start]
        found[rig.format_key(rig.label_key(item["metric"]))] = points
    return found


def remote_storage(prom: rig.Prom) -> dict[str, float]:
    """Prometheus' ``prometheus_remote_storage_*_total`` counters, summed over queues."""
    totals: dict[str, float] = {}
    for sample in rig.parse_exposition(prom.metrics_text()):
        name = sample.name
        if name.startswith("prometheus_remote_storage_") and name.endswith("_total"):
            totals[name] = totals.get(name, 0.0) + sample.value
    return totals


def counter(relay: rig.Relay, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in relay.metric_samples(name)
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def drops(relay: rig.Relay, *, but: Collection[str] = ()) -> list[tuple[Mapping[str, str], float]]:
    return [
        (s.labels, s.value)
        for s in relay.metric_samples("gotk_relay_samples_dropped_total")
        if s.value and s.labels.get("reason") not in but
    ]


def kill_holding_a_write(
    victim: rig.Relay, flux_tier: rig.Relay, exporter: rig.StaticExporter
) -> None:
    """SIGKILL ``victim`` while it holds a write it has not answered: the Flux tier is paused
    (SIGSTOP) until a write holding Flux series waits in the victim's queue for it, and two
    scrapes more (a relay that acknowledged on queuing would by then hold further Flux series
    it acknowledged and never sent: lost with it). Writes waiting for the Flux tier elsewhere
    are answered 503 after ACK_TIMEOUT_S; Prometheus sends them again."""
    os.kill(flux_tier.proc.pid, signal.SIGSTOP)
    try:

        def holding() -> bool:
            return counter(victim, "gotk_relay_queue_samples", destination="flux-tier") > 0

        rig.eventually(holding, 40.0, 0.05, what="the victim holding a write")
        exporter.wait_for_scrapes(2, 10.0)
        os.kill(victim.proc.pid, signal.SIGKILL)
    finally:
        os.kill(flux_tier.proc.pid, signal.SIGCONT)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as components:
        yield components


def test_replicas_behind_a_balancer_keep_every_guarantee_through_a_kill_and_an_add(
    prom_receiver: rig.Prom, tmp_path: Path, stack: ExitStack, job_name: str
) -> None:
    store = prom_receiver
    baseline = ReceiverBaseline.take(store)
    exporter = stack.enter_context(LiveExporter())
    flux_tier = stack.enter_context(
        start_relay_on(
            tmp_path, rig.free_port(), flux_tier_config(store.write_url, tmp_path / "spool")
        )
    )
    gateway = gateway_config(store.write_url, flux_tier.write_url)
    ports = [rig.free_port() for _ in range(GATEWAYS + 1)]
    gateways = [stack.enter_context(start_relay_on(tmp_path, p, gateway)) for p in ports[:-1]]
    balancer: Balancer = stack.enter_context(start_haproxy(tmp_path, ports))
    started = time.time()
    prom = stack.enter_context(
        start_prometheus_server(tmp_path, exporter.target, balancer.write_url, job_name)
    )
    instance = exporter.target

    converged_at: list[float] = []
    for index, step in enumerate(STEPS):
        exporter.set_text(ksm_exposition(step.ksm))
        if index == 2:
            kill_holding_a_write(gateways[KILLED], flux_tier, exporter)
        if index == 3:
            gateways.append(stack.enter_context(start_relay_on(tmp_path, ports[-1], gateway)))

        def converged(step: Step = step) -> bool:
            problems = step_problems(store, step, VARIANT, job=job_name, instance=instance)
            assert not problems, problems
            return True

        rig.eventually(converged, DEADLINE_S + 3, what=f"step {step.name!r}")
        converged_at.append(time.time())
        exporter.wait_for_scrapes(HOLD_SCRAPES, 10.0)  # traffic between the changes

    # Every sample Prometheus scraped (and stored in its own TSDB) during the run is in the
    # store, exactly: the ordinary series from the gateways, the Flux inputs through the tier.
    ended = time.time() - 1
    scraped = f'{{job="{job_name}",__name__!~"gotk_reconcile_condition|gotk_suspend_status"}}'

    def all_delivered() -> bool:
        want = raw_samples(prom, scraped, started, ended)
        got = raw_samples(store, scraped, started, ended)
        missing = {k: sorted(set(v) - set(got.get(k, []))) for k, v in want.items()}
        missing = {k: v[:3] for k, v in missing.items() if v}
        assert not missing, f"{len(missing)} series miss samples, e.g. {list(missing.items())[:3]}"
        assert got == want, "the store holds samples Prometheus did not scrape"
        return True

    rig.eventually(all_delivered, 30.0, what="every scraped sample in the store")
    assert any(k.startswith("app_temperature") for k in raw_samples(prom, scraped, started, ended))

    # The legacy series, written by the one Flux owner, changed value in place: no hole (no
    # stale marker between two points at a 0.25 s step), no wrong or flipped-back value.
    legacy = f'{{__name__=~"gotk_reconcile_condition|gotk_suspend_status",job="{job_name}"}}'
    histories = expected_histories(STEPS, VARIANT, job=job_name, instance=instance)
    assert history_problems(store, legacy, converged_at[0], converged_at[-1], histories) == []

    # The store refused nothing (out of order, duplicate with another value, out of bounds).
    assert baseline.problems(store) == []
    # Prometheus failed and dropped nothing (it retried what the killed gateway held).
    counters = remote_storage(prom)
    for name in (
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
        "prometheus_remote_storage_exemplars_failed_total",
        "prometheus_remote_storage_exemplars_dropped_total",
        "prometheus_remote_storage_metadata_failed_total",
    ):
        assert counters.get(name, 0.0) == 0, (name, counters)
    assert counters["prometheus_remote_storage_samples_retried_total"] > 0  # the killed one's

    # Each gateway that ran to the end took writes (the added one too), and gave up none but
    # those whose writes it answered 503 (sent again by Prometheus); its write_relabel_configs
    # dropped, by design, each destination's share of the other's series. The Flux tier gave
    # up nothing.
    for relay in gateways[:KILLED] + gateways[KILLED + 1 :]:
        assert counter(relay, "gotk_relay_acknowledged_requests_total", outcome="delivered") > 0
        assert drops(relay, but=("not_acknowledged", "dropped_series")) == []
        assert counter(relay, "gotk_relay_samples_dropped_total", reason="dropped_series") > 0
    assert drops(flux_tier) == []
    assert counter(flux_tier, "gotk_relay_flux_stale_markers_total") == 4  # the deletion only
