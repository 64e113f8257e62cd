"""No Prometheus needed (issue 19): gotk-relay scrapes a kube-state-metrics-shaped target itself
and a real Prometheus 2.42, as remote-write receiver, ends up with exactly the legacy series.

Pipeline under test: a :class:`rig.StaticExporter` serving KSM's ``gotk_resource_info`` for Flux
objects → gotk-relay (``scrape_configs``, 1 s interval; ``flux.mode: legacy``) → Prometheus
(remote-write receiver). The same five steps as ``test_flux_e2e`` (create, Ready True → False →
True, suspend, delete) must converge to the same receiver answers as when a Prometheus agent
scraped the target, the surviving objects' legacy series must never be interrupted, and when
the target stops answering ``up`` must turn 0 and every series end; when a reload removes the
target, its ``up`` ends too. The target labels are the relay's
own (``job``, ``instance``), as Prometheus would set them.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import rig

from .conftest import RelayStarter
from .test_flux_e2e import (
    CONTROLLER_NAMESPACE,
    DEADLINE_S,
    STEPS,
    ReceiverBaseline,
    Step,
    Variant,
    expected_histories,
    flux_counter,
    history_problems,
    ksm_exposition,
    step_problems,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def relay_config(prom_url: str, job: str, target: str) -> str:
    return f"""\
flux:
  mode: legacy
  keep_source: true
  label_shape: stored
  controller_namespace: {CONTROLLER_NAMESPACE}
remote_write:
  - name: prom
    url: {prom_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
scrape_configs:
  - job_name: {job}
    scrape_interval: 1s
    static_configs:
      - targets: ["{target}"]
"""


def openmetrics(text: str) -> str:
    """What kube-state-metrics (2.8 and later) serves when asked for OpenMetrics, as Prometheus
    and the relay ask: its Info families typed ``info`` under the sample's own name, and
    ``# EOF``."""
    info = text.replace("# TYPE gotk_resource_info gauge", "# TYPE gotk_resource_info info")
    assert info != text
    return info + "# EOF\n"


@pytest.mark.parametrize("served", ["text", "openmetrics"])
def test_the_relay_scrapes_ksm_and_the_receiver_holds_the_legacy_series(
    prom_receiver: rig.Prom,
    exporter: rig.StaticExporter,
    start_relay: RelayStarter,
    job_name: str,
    served: str,
) -> None:
    variant = Variant("stored", emit_deleted=False)
    baseline = ReceiverBaseline.take(prom_receiver)
    shape = openmetrics if served == "openmetrics" else str
    if served == "openmetrics":
        exporter.content_type = rig.StaticExporter.OPENMETRICS
    exporter.set_text(shape(ksm_exposition(STEPS[0].ksm)))
    relay = start_relay(relay_config(prom_receiver.write_url, job_name, exporter.target))
    instance = exporter.target

    converged_at: list[float] = []
    for step in STEPS:
        exporter.set_text(shape(ksm_exposition(step.ksm)))

        def converged(step: Step = step) -> bool:
            problems = step_problems(prom_receiver, step, variant, job=job_name, instance=instance)
            up = prom_receiver.samples(f'up{{job="{job_name}"}}')
            assert up == {
                rig.label_key({"__name__": "up", "job": job_name, "instance": instance}): 1.0
            }
            assert not problems, problems
            return True

        rig.eventually(converged, DEADLINE_S, what=f"step {step.name!r}")
        converged_at.append(time.time())

    # /federate serves the same legacy series, for a Datadog Agent that scrapes the relay.
    federated = relay.federate(f'{{__name__="gotk_reconcile_condition",job="{job_name}"}}')
    assert 'name="nextcloud-redis"' in federated

    legacy = f'{{__name__=~"gotk_reconcile_condition|gotk_suspend_status",job="{job_name}"}}'
    histories = expected_histories(STEPS, variant, job=job_name, instance=instance)
    assert (
        history_problems(prom_receiver, legacy, converged_at[0], converged_at[-1], histories) == []
    )

    # The target stops answering: up 0, and every series it gave (and the rules made) ends.
    exporter.close()

    def ended() -> bool:
        up = prom_receiver.samples(f'up{{job="{job_name}"}}')
        assert list(up.values()) == [0.0], up
        for name in ("gotk_resource_info", "gotk_reconcile_condition", "gotk_suspend_status"):
            left = prom_receiver.samples(f'{name}{{job="{job_name}"}}')
            assert left == {}, (name, left)
        return True

    rig.eventually(ended, DEADLINE_S, what="the target's series to end")

    # A reload (SIGHUP) that removes the job ends the target's report series too.
    relay.config_path.write_text(
        relay_config(prom_receiver.write_url, job_name, "").split("scrape_configs:")[0]
    )
    os.kill(relay.proc.pid, signal.SIGHUP)

    def removed() -> bool:
        left = prom_receiver.samples(f'{{job="{job_name}"}}')
        assert left == {}, left
        return True

    rig.eventually(removed, DEADLINE_S, what="the removed target's up to end")

    assert baseline.problems(prom_receiver) == []
    dropped = relay.metric_samples("gotk_relay_samples_dropped_total")
    assert [(s.labels, s.value) for s in dropped if s.value] == []
    scrape_dropped = relay.metric_samples("gotk_relay_scrape_samples_dropped_total")
    assert [(s.labels, s.value) for s in scrape_dropped if s.value] == []
    assert flux_counter(relay, "gotk_relay_flux_out_of_order_dropped_total") == 0
    failures = relay.metric_samples("gotk_relay_scrape_failures_total")
    assert {s.labels["reason"] for s in failures if s.value} == {"connection"}
