"""gotk-relay between a real Prometheus agent and real receivers.

Pipeline under test: StaticExporter -> ``prometheus --enable-feature=agent`` (remote write 1.0)
-> gotk-relay -> Prometheus 2.42 (remote-write receiver) and VictoriaMetrics 1.79.

Each test mirrors a test in ``test_rig.py`` that writes straight to the receivers and asserts
the same thing, so the relay is held to exactly what the receivers do without it: same series,
same labels, same float64 bits (to VictoriaMetrics' own precision there), stale markers kept.
"""

from __future__ import annotations

from tests.support import rig

from .conftest import AgentStarter, RelayStarter

DEADLINE_S = 45.0
"""Per wait. A new agent's first scrape takes ~5 s (Prometheus 2.42 applies targets on a 5 s
tick); after that samples should cross the relay within a couple of seconds."""

V1 = "prometheus.WriteRequest"
V2 = "io.prometheus.write.v2.Request"


def relay_config(prom_url: str, prom_message: str, vm_url: str | None = None) -> str:
    """Relay YAML: destination ``prom`` speaking ``prom_message`` and, optionally, ``vm``."""
    config = f"""\
flux:
  mode: "off"
remote_write:
  - name: prom
    url: {prom_url}
    protobuf_message: {prom_message}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
"""
    if vm_url is not None:
        config += f"""\
  - name: vm
    url: {vm_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
"""
    return config


def forwarded(relay: rig.Relay, destination: str) -> float:
    """``gotk_relay_samples_forwarded_total`` for one destination (0 if not exposed yet)."""
    return sum(
        s.value
        for s in relay.metric_samples("gotk_relay_samples_forwarded_total")
        if s.labels.get("destination") == destination
    )


def protocols_in_use(relay: rig.Relay, destination: str) -> dict[str, float]:
    """``gotk_relay_destination_protocol`` for one destination, by ``protobuf_message``."""
    return {
        s.labels.get("protobuf_message", ""): s.value
        for s in relay.metric_samples("gotk_relay_destination_protocol")
        if s.labels.get("destination") == destination
    }


def test_agent_relay_prometheus_and_vm_hold_identical_samples(
    prom_receiver: rig.Prom,
    victoria_metrics: rig.VM,
    exporter: rig.StaticExporter,
    start_relay: RelayStarter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """Every reference series crosses the relay with all scraped labels and the same value.

    Prometheus (v1 destination) must hold every float64 bit-exact, NaN included;
    VictoriaMetrics drops NaN, keeps :func:`rig.vm_keeps_exactly` values exact and the rest
    within :data:`rig.VM_REL_TOL` (its decimal storage; see the twin in ``test_rig``).
    """
    families = rig.reference_families()
    exporter.set_text(rig.render_exposition(families))
    relay = start_relay(relay_config(prom_receiver.write_url, V1, victoria_metrics.write_url))
    start_agent([exporter.target], relay.write_url, job_name=job_name)
    expected = rig.expected_series(families, job=job_name, instance=exporter.target)
    selector = rig.scraped_selector(job_name)

    rig.await_samples(prom_receiver, selector, expected, deadline_s=DEADLINE_S)
    in_vm = rig.await_samples(
        victoria_metrics,
        selector,
        rig.without_nan(expected),
        rel_tol=rig.VM_REL_TOL,
        deadline_s=DEADLINE_S,
    )
    assert rig.diff_vm_exact(in_vm, expected) == []

    def forwarded_a_scrape_each() -> bool:
        counts = {d: forwarded(relay, d) for d in ("prom", "vm")}
        assert all(count >= len(expected) for count in counts.values()), counts
        return True

    # The relay accounts for what it forwarded: at least one scrape's worth per destination.
    rig.eventually(forwarded_a_scrape_each, DEADLINE_S, what="gotk_relay_samples_forwarded_total")


def test_v2_destination_falls_back_to_v1_on_prometheus_2_42(
    prom_receiver: rig.Prom,
    exporter: rig.StaticExporter,
    start_relay: RelayStarter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """A destination configured for RW 2.0 that only speaks 1.0 still gets the data, in 1.0.

    Prometheus 2.42 predates RW 2.0: it answers a 2.0 request with a 2xx that lacks the
    ``X-Prometheus-Remote-Write-*-Written`` headers (having decoded nothing), which must make
    the relay switch the destination to ``prometheus.WriteRequest`` and deliver in that form.
    """
    families = rig.reference_families()
    exporter.set_text(rig.render_exposition(families))
    relay = start_relay(relay_config(prom_receiver.write_url, V2))
    start_agent([exporter.target], relay.write_url, job_name=job_name)
    expected = rig.expected_series(families, job=job_name, instance=exporter.target)

    rig.await_samples(
        prom_receiver, rig.scraped_selector(job_name), expected, deadline_s=DEADLINE_S
    )

    def speaks_only_v1() -> bool:
        in_use = protocols_in_use(relay, "prom")
        assert {message for message, value in in_use.items() if value == 1.0} == {V1}, in_use
        return True

    rig.eventually(
        speaks_only_v1,
        DEADLINE_S,
        what=f'gotk_relay_destination_protocol{{destination="prom",protobuf_message="{V1}"}} 1',
    )


def test_stale_markers_survive_the_relay(
    prom_receiver: rig.Prom,
    victoria_metrics: rig.VM,
    exporter: rig.StaticExporter,
    start_relay: RelayStarter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """A series that vanishes from the target is ended by a stale marker behind the relay.

    Prometheus keeps a 5m lookback, so the series can only leave its instant query within the
    deadline through a stale marker (a plain NaN would show as ``NaN``); VictoriaMetrics must
    store the marker itself (``null`` in its export), as it does without the relay.
    """
    keep, gone = rig.stale_scenario_families()
    exporter.set_text(rig.render_exposition([keep, gone]))
    relay = start_relay(relay_config(prom_receiver.write_url, V1, victoria_metrics.write_url))
    start_agent([exporter.target], relay.write_url, job_name=job_name)
    selector = rig.scraped_selector(job_name)
    both = rig.expected_series([keep, gone], job=job_name, instance=exporter.target)
    rig.await_samples(prom_receiver, selector, both, deadline_s=DEADLINE_S)
    rig.await_samples(victoria_metrics, selector, both, deadline_s=DEADLINE_S)

    exporter.set_text(rig.render_exposition([keep]))
    gone_selector = f'{gone.name}{{job="{job_name}"}}'
    rig.await_stale(prom_receiver, gone_selector, deadline_s=DEADLINE_S)
    rig.await_vm_stale_marker(victoria_metrics, gone_selector, deadline_s=DEADLINE_S)
    only_keep = rig.expected_series([keep], job=job_name, instance=exporter.target)
    assert rig.diff_samples(prom_receiver.samples(selector), only_keep) == []
