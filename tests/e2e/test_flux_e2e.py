"""Flux's legacy gauges synthesized by gotk-relay, end to end, through five changes of state.

Pipeline under test: a :class:`rig.StaticExporter` serving what kube-state-metrics exposes for
Flux objects (``gotk_resource_info{...} 1``, Flux's published custom-resource-state config) →
``prometheus --enable-feature=agent`` (scrape every 1 s, and every 15 s in one case; remote write
1.0) → gotk-relay (``flux.mode: legacy``, ``keep_source: true``, the default automatic
``stale_grace``) → Prometheus 2.42 as remote-write receiver.

The issue's acceptance point: dashboards and alerts written for Flux ≤ 2.1
(``gotk_reconcile_condition`` / ``gotk_suspend_status``, stored shape) keep working on a Flux
whose controllers no longer expose those gauges. The exporter's text is changed step by step
(create, HelmRelease Ready True → False → True, Kustomization suspended, GitRepository deleted)
and after each change the test polls the receiver until its instant queries return *exactly*
the expected series and values, the legacy dashboard panels the expected numbers and the legacy
alert exactly the expected objects. On the KSM side a Ready change is a new series plus a stale
marker for the old one; on the legacy side the same three series must change value without
being interrupted, which the test checks at the end with a fine-grained range query. Finally the
receiver must have refused nothing: no out-of-order, duplicate or out-of-bounds sample in its
log or counters, no 4xx answer to a write, and the relay must have dropped nothing.

The receiver is shared by the session, so every query is scoped by this test's ``job`` label
(the dashboard and alert expressions get a ``job`` matcher added to each selector), and its
log and counters are judged by what changed during the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import pytest

from gotk_relay.wire import rw1_bytes
from tests.support import rig

from .conftest import AgentStarter, RelayStarter

DEADLINE_S = 45.0
"""Per step, plus three scrape intervals. A new agent's first scrape takes ~5 s (Prometheus 2.42
applies targets on a 5 s tick); after that a change crosses scrape, agent queue and relay in
about two seconds, and a deletion waits one more scrape interval and 5 s (the relay's default,
automatic ``flux.stale_grace``)."""


RANGE_STEP_S = 0.25
"""Resolution of the final "never interrupted" range query: well below the 1 s scrape interval,
so a stale marker followed by the next scrape's sample leaves at least three empty steps. (A
stale marker the relay's rules wrote just before a sample would hide between two steps; the
rewriter's own stale-marker counter, checked at the end, catches that case.)"""

CONTROLLER_NAMESPACE = "flux-system"

#: Substrings of the receiver's log that mean it refused a sample (Prometheus 2.42 logs
#: "Out of order sample from remote write" with err "out of order sample", "duplicate sample
#: for timestamp" or "out of bounds"; "too old" is the out-of-order window's own error).
REFUSAL_LOG = re.compile(r"out of order|duplicate sample|out of bounds|too old", re.IGNORECASE)

#: Receiver counters that must not move during the test. In 2.42 the tsdb ones are counter
#: vectors (label ``type``) that only appear once incremented, so absence counts as 0.
REFUSAL_COUNTERS = (
    "prometheus_tsdb_out_of_order_samples_total",
    "prometheus_tsdb_out_of_bound_samples_total",
    "prometheus_tsdb_too_old_samples_total",
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
)


# --------------------------------------------------------------------------------------------
# The Flux objects and what kube-state-metrics exposes for them


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: each is a module constant
class FluxObject:
    """One Flux object as Flux's KSM config describes it.

    ``extra`` holds the kind's KSM-only labels (revision, chart, url...), which the relay must
    drop from the legacy series; ``ready``/``suspended`` vary by step and live in :class:`Ksm`.
    """

    kind: str
    group: str
    version: str
    namespace: str
    name: str
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        """``Kind/namespace/name``, for messages."""
        return f"{self.kind}/{self.namespace}/{self.name}"


# The reference's real KSM lines (HelmRelease: no `suspended`, as KSM omits a label whose field
# is unset; Kustomization: the real line, whose `suspended` the test toggles), a GitRepository
# with the v1 config's revision/url labels, and an Alert, which has no `ready` at all.
HELM_RELEASE = FluxObject(
    "HelmRelease",
    "helm.toolkit.fluxcd.io",
    "v2",
    "nextcloud",
    "nextcloud-redis",
    {
        "chart_app_version": "7.2.5",
        "chart_name": "redis",
        "chart_source_name": "bitnami-charts",
        "revision": "19.6.4",
    },
)
KUSTOMIZATION = FluxObject(
    "Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "flux-system", "flux-system"
)
GIT_REPOSITORY = FluxObject(
    "GitRepository",
    "source.toolkit.fluxcd.io",
    "v1",
    "flux-system",
    "flux-system",
    {
        "revision": "main@sha1:6f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        "url": "ssh://git@github.com/acme/fleet-infra",
    },
)
ALERT = FluxObject(
    "Alert", "notification.toolkit.fluxcd.io", "v1beta3", "flux-system", "on-call-slack"
)


class Ksm(NamedTuple):
    """An object's KSM state labels at one step; None where KSM omits the label."""

    ready: str | None = None
    suspended: str | None = None


def ksm_labels(obj: FluxObject, state: Ksm) -> dict[str, str]:
    """The labels of KSM's ``gotk_resource_info`` series for ``obj`` (before the scrape's)."""
    labels = {
        "customresource_group": obj.group,
        "customresource_kind": obj.kind,
        "customresource_version": obj.version,
        "exported_namespace": obj.namespace,
        "name": obj.name,
        **obj.extra,
    }
    if state.ready is not None:
        labels["ready"] = state.ready
    if state.suspended is not None:
        labels["suspended"] = state.suspended
    return labels


def ksm_exposition(states: Mapping[FluxObject, Ksm]) -> str:
    """What KSM serves: one header, then one line per object, labels sorted, value 1."""
    samples = [
        rig.ExpositionSample("gotk_resource_info", dict(sorted(ksm_labels(o, s).items())), 1.0)
        for o, s in states.items()
    ]
    family = rig.Family(
        "gotk_resource_info", "gauge", "The current state of a Flux resource.", samples
    )
    return rig.render_exposition([family])


# --------------------------------------------------------------------------------------------
# The steps and their expected legacy series


class Row(NamedTuple):
    """Expected legacy values of one live object: the three Ready statuses and suspend."""

    true: int
    false: int
    unknown: int
    suspend: int


GONE = None
"""In a step's ``legacy`` table: the object was deleted (its line left the exposition)."""


@dataclass(frozen=True)
class Step:
    """One state of the cluster and everything the receiver must then answer.

    ``reconcilers`` and ``failing`` are the legacy dashboard's two stat panels (see
    :func:`dashboard_queries`); ``alerting`` is what the legacy alert rule returns when the
    relay emits the pre-2.1 ``status="Deleted"`` series.
    """

    name: str
    ksm: Mapping[FluxObject, Ksm]
    legacy: Mapping[FluxObject, Row | None]
    reconcilers: int
    failing: int
    alerting: frozenset[FluxObject]


# Why `reconcilers` is 2 at every step: the panel is
# count(gotk_reconcile_condition{...,status="True",kind=~"Kustomization|HelmRelease"}), and
# every object has a status="True" series whether its value is 1 or 0, so count() counts the
# Kustomization and HelmRelease objects, ready or not. `failing` is the sum over status="False",
# i.e. the number of those objects whose Ready is False.
STEPS: tuple[Step, ...] = (
    Step(
        "1 create",
        ksm={
            HELM_RELEASE: Ksm(ready="True"),
            KUSTOMIZATION: Ksm(ready="True", suspended="false"),
            GIT_REPOSITORY: Ksm(ready="False", suspended="false"),
            ALERT: Ksm(suspended="false"),
        },
        #                      True False Unknown suspend
        legacy={
            HELM_RELEASE: Row(1, 0, 0, 0),
            KUSTOMIZATION: Row(1, 0, 0, 0),
            GIT_REPOSITORY: Row(0, 1, 0, 0),
            ALERT: Row(0, 0, 1, 0),  # no `ready` label: Unknown
        },
        reconcilers=2,
        failing=0,
        alerting=frozenset({GIT_REPOSITORY}),
    ),
    Step(
        "2 HelmRelease Ready True -> False",
        ksm={
            HELM_RELEASE: Ksm(ready="False"),
            KUSTOMIZATION: Ksm(ready="True", suspended="false"),
            GIT_REPOSITORY: Ksm(ready="False", suspended="false"),
            ALERT: Ksm(suspended="false"),
        },
        legacy={
            HELM_RELEASE: Row(0, 1, 0, 0),
            KUSTOMIZATION: Row(1, 0, 0, 0),
            GIT_REPOSITORY: Row(0, 1, 0, 0),
            ALERT: Row(0, 0, 1, 0),
        },
        reconcilers=2,
        failing=1,
        alerting=frozenset({GIT_REPOSITORY, HELM_RELEASE}),
    ),
    Step(
        "3 HelmRelease Ready False -> True",
        ksm={
            HELM_RELEASE: Ksm(ready="True"),
            KUSTOMIZATION: Ksm(ready="True", suspended="false"),
            GIT_REPOSITORY: Ksm(ready="False", suspended="false"),
            ALERT: Ksm(suspended="false"),
        },
        legacy={
            HELM_RELEASE: Row(1, 0, 0, 0),
            KUSTOMIZATION: Row(1, 0, 0, 0),
            GIT_REPOSITORY: Row(0, 1, 0, 0),
            ALERT: Row(0, 0, 1, 0),
        },
        reconcilers=2,
        failing=0,
        alerting=frozenset({GIT_REPOSITORY}),
    ),
    Step(
        "4 Kustomization suspended false -> true",
        ksm={
            HELM_RELEASE: Ksm(ready="True"),
            KUSTOMIZATION: Ksm(ready="True", suspended="true"),
            GIT_REPOSITORY: Ksm(ready="False", suspended="false"),
            ALERT: Ksm(suspended="false"),
        },
        legacy={
            HELM_RELEASE: Row(1, 0, 0, 0),
            KUSTOMIZATION: Row(1, 0, 0, 1),
            GIT_REPOSITORY: Row(0, 1, 0, 0),
            ALERT: Row(0, 0, 1, 0),
        },
        reconcilers=2,
        failing=0,
        alerting=frozenset({GIT_REPOSITORY}),
    ),
    Step(
        "5 GitRepository deleted",
        ksm={
            HELM_RELEASE: Ksm(ready="True"),
            KUSTOMIZATION: Ksm(ready="True", suspended="true"),
            ALERT: Ksm(suspended="false"),
        },
        legacy={
            HELM_RELEASE: Row(1, 0, 0, 0),
            KUSTOMIZATION: Row(1, 0, 0, 1),
            GIT_REPOSITORY: GONE,
            ALERT: Row(0, 0, 1, 0),
        },
        reconcilers=2,
        failing=0,
        # Deleted: max(False)=0 + max(Deleted)=1 * 2 = 2, not 1: the alert resolves.
        alerting=frozenset(),
    ),
)


# A shorter life at a 15 s scrape interval (each step waits for scrapes): create, a Ready
# change, a deletion.
SHORT_STEPS: tuple[Step, ...] = (
    STEPS[0],
    STEPS[1],
    Step(
        "3 GitRepository deleted",
        ksm={o: state for o, state in STEPS[1].ksm.items() if o is not GIT_REPOSITORY},
        legacy={**STEPS[1].legacy, GIT_REPOSITORY: GONE},
        reconcilers=2,
        failing=1,
        alerting=frozenset({HELM_RELEASE}),
    ),
)


@dataclass(frozen=True)
class Variant:
    """One relay configuration the scenario runs against."""

    label_shape: Literal["stored", "raw"]
    emit_deleted: bool

    @property
    def id(self) -> str:
        return f"{self.label_shape}{'_emit_deleted' if self.emit_deleted else ''}"


VARIANTS = (
    # The configuration: deletion ends the legacy series with stale markers; the
    # legacy alert cannot fire (its `+ on(...)` join finds no status="Deleted" series).
    Variant("stored", emit_deleted=False),
    # The pre-2.1 recorder's behaviour, which the legacy alert rule needs, in the labels a
    # controller's own /metrics showed (namespace = the object's namespace): the two options
    # are independent (tests/unit/test_flux.py has each alone), so one run proves both on a
    # real Prometheus.
    Variant("raw", emit_deleted=True),
)


DELETION_SLACK_S = 15.0
"""The automatic grace's 5 s margin, the relay's 1 s tick, the agent's and relay's send queues
and this test's polling, with room for a loaded machine: scripts/test runs this test beside the
CPU-bound unit tests."""

# Each case runs its variants side by side (a relay and an agent each, one exporter, a job
# label each), so their scrapes, queues and graces are waited for once.
CASES: list[tuple[tuple[Variant, ...], int]] = [
    (VARIANTS, 1),
    # A common production interval, on the configuration: the automatic grace follows it
    # (a deletion ends the outputs within two intervals and the slack, far sooner than the 60 s
    # used while no interval is known). Issue 19 asks for this interval end to end.
    ((VARIANTS[0],), 15),
]


def relay_config(prom_url: str, variant: Variant) -> str:
    """Relay YAML: legacy synthesis with the inputs kept, one destination (the receiver)."""
    return f"""\
flux:
  mode: legacy
  keep_source: true
  label_shape: {variant.label_shape}
  controller_namespace: {CONTROLLER_NAMESPACE}
  emit_deleted: {str(variant.emit_deleted).lower()}
remote_write:
  - name: prom
    url: {prom_url}
    queue_config: {{min_backoff: 50ms, max_backoff: 1s}}
"""


def legacy_identity(obj: FluxObject, variant: Variant) -> dict[str, str]:
    """Labels shared by an object's legacy series, besides job/instance.

    Stored shape (as Prometheus stored a controller's gauges under a PodMonitor): the object's
    namespace in ``exported_namespace``, the controllers' namespace in ``namespace``. Raw shape:
    ``namespace`` is the object's. None of the KSM-only labels survive.
    """
    labels = {"kind": obj.kind, "name": obj.name}
    if variant.label_shape == "stored":
        labels |= {"exported_namespace": obj.namespace, "namespace": CONTROLLER_NAMESPACE}
    else:
        labels["namespace"] = obj.namespace
    return labels


def expected_legacy(
    step: Step, variant: Variant, *, job: str, instance: str
) -> tuple[dict[rig.LabelKey, float], dict[rig.LabelKey, float]]:
    """``(gotk_reconcile_condition, gotk_suspend_status)`` series the receiver must hold.

    A deleted object has no series without ``emit_deleted`` (stale markers ended them); with
    it, the pre-2.1 recorder's final snapshot: Deleted 1, True/False/Unknown 0, suspend 0.
    Live objects carry ``status="Deleted"`` 0 when ``emit_deleted`` is on.
    """
    conditions: dict[rig.LabelKey, float] = {}
    suspend: dict[rig.LabelKey, float] = {}
    for obj, row in step.legacy.items():
        if row is None and not variant.emit_deleted:
            continue
        values = {"True": 0, "False": 0, "Unknown": 0}
        deleted, suspended = 1, 0
        if row is not None:
            values = {"True": row.true, "False": row.false, "Unknown": row.unknown}
            deleted, suspended = 0, row.suspend
        if variant.emit_deleted:
            values["Deleted"] = deleted
        base = {**legacy_identity(obj, variant), "job": job, "instance": instance}
        for status, value in values.items():
            labels = {**base, "__name__": "gotk_reconcile_condition"}
            labels |= {"type": "Ready", "status": status}
            conditions[rig.label_key(labels)] = float(value)
        suspend[rig.label_key({**base, "__name__": "gotk_suspend_status"})] = float(suspended)
    return conditions, suspend


def expected_source(step: Step, *, job: str, instance: str) -> dict[rig.LabelKey, float]:
    """``gotk_resource_info`` as scraped (keep_source): KSM's labels plus job/instance, 1."""
    return {
        rig.label_key(
            {"__name__": "gotk_resource_info", **ksm_labels(o, s), "job": job, "instance": instance}
        ): 1.0
        for o, s in step.ksm.items()
    }


def dashboard_queries(job: str) -> tuple[str, str]:
    """Flux's legacy dashboard stat panels (``$operator_namespace`` = flux-system, ``$namespace``
    = all), with a ``job`` matcher added because the receiver is shared."""
    selector = (
        f'job="{job}",namespace=~"{CONTROLLER_NAMESPACE}",exported_namespace=~".*",'
        'type="Ready",kind=~"Kustomization|HelmRelease"'
    )
    return (
        f'count(gotk_reconcile_condition{{{selector},status="True"}})',
        f'sum(gotk_reconcile_condition{{{selector},status="False"}})',
    )


def alert_query(job: str) -> str:
    """Flux's legacy "reconciliation failure" alert expression, ``job``-scoped."""
    return (
        f'max(gotk_reconcile_condition{{job="{job}",status="False",type="Ready"}}) '
        "by (exported_namespace, name, kind) + on(exported_namespace, name, kind) "
        f'(max(gotk_reconcile_condition{{job="{job}",status="Deleted"}}) '
        "by (exported_namespace, name, kind)) * 2 == 1"
    )


def expected_alerts(step: Step, variant: Variant) -> dict[rig.LabelKey, float]:
    """The alert's result: value 1 per firing object, labelled by the ``by`` clause."""
    if not variant.emit_deleted:
        return {}  # no status="Deleted" series, so the `+ on(...)` join is empty
    return {
        rig.label_key(
            {"exported_namespace": o.namespace, "name": o.name, "kind": o.kind}
            if variant.label_shape == "stored"
            else {"name": o.name, "kind": o.kind}  # raw: no exported_namespace label
        ): 1.0
        for o in step.alerting
    }


# --------------------------------------------------------------------------------------------
# Receiver health: what it refused during the test


def counter_sums(text: str, names: tuple[str, ...], **match: str) -> dict[str, float]:
    """Per metric name, the sum of the samples whose labels include ``match`` (0 if absent)."""
    sums = dict.fromkeys(names, 0.0)
    for sample in rig.parse_exposition(text):
        if sample.name in sums and all(sample.labels.get(k) == v for k, v in match.items()):
            sums[sample.name] += sample.value
    return sums


def rejected_writes(text: str) -> float:
    """Remote-write requests the receiver answered with a 4xx."""
    return sum(
        s.value
        for s in rig.parse_exposition(text)
        if s.name == "prometheus_http_requests_total"
        and s.labels.get("handler") == "/api/v1/write"
        and s.labels.get("code", "").startswith("4")
    )


@dataclass
class ReceiverBaseline:
    """The shared receiver's log size and refusal counters when the test began."""

    log_offset: int
    counters: dict[str, float]
    rejected: float

    @classmethod
    def take(cls, prom: rig.Prom) -> ReceiverBaseline:
        text = prom.metrics_text()
        return cls(
            prom.proc.log_size(), counter_sums(text, REFUSAL_COUNTERS), rejected_writes(text)
        )

    def problems(self, prom: rig.Prom) -> list[str]:
        """What the receiver refused since :meth:`take`; empty if nothing."""
        found: list[str] = []
        with open(prom.proc.log_path, "rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
        found += [f"receiver log: {line}" for line in text.splitlines() if REFUSAL_LOG.search(line)]
        metrics = prom.metrics_text()
        for name, value in counter_sums(metrics, REFUSAL_COUNTERS).items():
            if value != self.counters[name]:
                found.append(f"receiver {name} went from {self.counters[name]:g} to {value:g}")
        rejected = rejected_writes(metrics)
        if rejected != self.rejected:
            found.append(f"receiver answered {rejected - self.rejected:g} writes with a 4xx")
        return found


# --------------------------------------------------------------------------------------------
# The test


def step_problems(
    prom: rig.Prom, step: Step, variant: Variant, *, job: str, instance: str
) -> list[str]:
    """Everything the receiver answers differently from ``step``'s expectations."""
    conditions, suspend = expected_legacy(step, variant, job=job, instance=instance)
    checks: list[tuple[str, dict[rig.LabelKey, float]]] = [
        (f'gotk_reconcile_condition{{job="{job}"}}', conditions),
        (f'gotk_suspend_status{{job="{job}"}}', suspend),
        (f'gotk_resource_info{{job="{job}"}}', expected_source(step, job=job, instance=instance)),
    ]
    if variant.label_shape == "stored":
        # The legacy dashboards and alert are written for the stored shape; in the raw shape
        # their namespace=~"flux-system" matcher selects objects by their own namespace.
        reconcilers, failing = dashboard_queries(job)
        checks += [
            (reconcilers, {(): float(step.reconcilers)}),
            (failing, {(): float(step.failing)}),
            (alert_query(job), expected_alerts(step, variant)),
        ]
    problems: list[str] = []
    for query, expected in checks:
        problems += [f"{query}: {p}" for p in rig.diff_samples(prom.samples(query), expected)]
    return problems


def expected_histories(
    steps: tuple[Step, ...], variant: Variant, *, job: str, instance: str
) -> dict[rig.LabelKey, list[float]]:
    """Per legacy series, the values it must take over the steps, repeats collapsed.

    E.g. the HelmRelease's ``status="True"`` series is ``[1, 0, 1]``: it goes to 0 and back
    to 1, as the *same* series. A series is listed from the first step that has it to the last.
    """
    histories: dict[rig.LabelKey, list[float]] = {}
    for step in steps:
        for series in expected_legacy(step, variant, job=job, instance=instance):
            for key, value in series.items():
                history = histories.setdefault(key, [])
                if not history or history[-1] != value:
                    history.append(value)
    return histories


def history_problems(
    prom: rig.Prom,
    selector: str,
    start: float,
    end: float,
    expected: Mapping[rig.LabelKey, list[float]],
) -> list[str]:
    """How the receiver's record of ``selector`` over ``[start, end]`` differs from ``expected``.

    Evaluated every :data:`RANGE_STEP_S`, well below the scrape interval. With the receiver's
    5 m lookback only a stale marker can leave a step empty between a series' first and last
    point, so an output that was staled and restarted until the next scrape (a Ready change
    flapping the legacy series) shows up here even if no instant query ran while it was gone;
    and a sample that flipped a value back shows up as an extra entry in the value history.
    """
    found: list[str] = []
    seen: set[rig.LabelKey] = set()
    for item in prom.query_range(selector, start, end, RANGE_STEP_S):
        key = rig.label_key(item["metric"])
        seen.add(key)
        name = rig.format_key(key)
        stamps = [float(t) for t, _ in item["values"]]
        span = round((stamps[-1] - stamps[0]) / RANGE_STEP_S) + 1
        if len(stamps) != span:
            found.append(f"{name}: {span - len(stamps)} of {span} steps empty (stale marker)")
        history: list[float] = []
        for _, text in item["values"]:
            if not history or history[-1] != float(text):
                history.append(float(text))
        if key not in expected:
            found.append(f"unexpected {name}")
        elif history != expected[key]:
            found.append(f"{name}: values {history}, want {expected[key]}")
    found += [f"missing {rig.format_key(k)}" for k in expected if k not in seen]
    return found


def flux_counter(relay: rig.Relay, name: str) -> float:
    """A ``gotk_relay_flux_*`` counter of the relay; absent (not exported) fails the test."""
    samples = relay.metric_samples(name)
    assert samples, f"the relay's /metrics has no {name}"
    return sum(s.value for s in samples)


@pytest.mark.parametrize(
    ("variants", "interval"),
    CASES,
    ids=[f"{'+'.join(v.id for v in vs)}-{i}s" for vs, i in CASES],
)
def test_legacy_gauges_follow_flux_objects_through_their_life(
    variants: tuple[Variant, ...],
    interval: int,
    prom_receiver: rig.Prom,
    exporter: rig.StaticExporter,
    start_relay: RelayStarter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """After each change of the KSM exposition, the receiver converges to exactly the legacy
    series, dashboard numbers and alerts the pre-2.2 controllers would have produced; surviving
    objects' legacy series are never interrupted; nothing is refused or dropped on the way.
    """
    baseline = ReceiverBaseline.take(prom_receiver)
    instance = exporter.target
    jobs = {variant: f"{job_name}_{variant.id}" for variant in variants}
    relays: dict[Variant, rig.Relay] = {}
    for variant, job in jobs.items():
        relays[variant] = start_relay(relay_config(prom_receiver.write_url, variant))
        start_agent([instance], relays[variant].write_url, f"{interval}s", job_name=job)

    converged_at: dict[Variant, list[float]] = {variant: [] for variant in variants}
    steps = SHORT_STEPS if interval > 1 else STEPS
    for step in steps:
        changed_at = time.time()
        exporter.set_text(ksm_exposition(step.ksm))
        for variant, job in jobs.items():

            def converged(step: Step = step, variant: Variant = variant, job: str = job) -> bool:
                problems = step_problems(prom_receiver, step, variant, job=job, instance=instance)
                assert not problems, problems
                return True

            what = f"step {step.name!r} ({variant.id})"
            rig.eventually(converged, DEADLINE_S + 3 * interval, what=what)
            converged_at[variant].append(time.time())

    for variant, job in jobs.items():
        relay = relays[variant]
        # The deletion (the last step) ended the legacy series on time: at most one scrape to
        # see it, one interval and 5 s of grace, and a few seconds of queues, ticks and polling;
        # the old fixed 60 s grace could not.
        took = converged_at[variant][-1] - changed_at
        assert took <= 2 * interval + DELETION_SLACK_S, (
            f"{variant.id}: the deletion took {took:.1f} s"
        )

        # The same series changed value in place, never interrupted, never flipped back.
        legacy = f'{{__name__=~"gotk_reconcile_condition|gotk_suspend_status",job="{job}"}}'
        histories = expected_histories(steps, variant, job=job, instance=instance)
        first, last = converged_at[variant][0], converged_at[variant][-1]
        assert history_problems(prom_receiver, legacy, first, last, histories) == [], variant.id

        # Nothing given up by the relay.
        dropped = relay.metric_samples("gotk_relay_samples_dropped_total")
        assert [(s.labels, s.value) for s in dropped if s.value] == [], variant.id
        assert flux_counter(relay, "gotk_relay_flux_out_of_order_dropped_total") == 0
        # The rewriter wrote stale markers only for the deleted GitRepository's four outputs
        # (three conditions and suspend), none on a Ready change; emit_deleted writes none.
        stale = 0 if variant.emit_deleted else 4
        assert flux_counter(relay, "gotk_relay_flux_stale_markers_total") == stale, variant.id
        # Every request the real Prometheus sent was read by the compiled one-pass scanner: what
        # Prometheus writes is inside the shape it accepts, so none fell back to protobuf.
        scanned = {
            s.labels["scanner"]: s.value
            for s in relay.metric_samples("gotk_relay_scanned_requests_total")
        }
        if rw1_bytes.NATIVE:  # the relay runs with this process's environment and sources
            assert scanned["c"] > 0 and scanned["python"] == 0, scanned
        else:
            assert scanned["c"] == 0 and scanned["python"] > 0, scanned

    # Nothing refused by the receiver.
    assert baseline.problems(prom_receiver) == []
