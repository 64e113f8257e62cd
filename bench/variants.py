"""The configurations issue 17 benchmarks ("variants"), and what each must deliver.

A variant is one change to the plain setup (one ``remote_write`` to the sink): the relay's
config gets it, and vmagent, where it has the same feature, gets the same rules or flag. Each
(variant, system) pair has an *expectation*: what every accepted sample must turn into, per
destination. Expectations are exact, so the sink can count and check each delivery:

* relabel rules are applied with the relay's reference implementation of Prometheus'
  relabeling (``gotk_relay.rules.relabel.compile_rules(...).apply``), parsed from the very YAML
  the relay and vmagent are given; the Flux rules' output comes from :mod:`expect`, written
  from the reference rather than from the relay;
* a destination is a string: ``remote_write`` (``remote_write@<tenant>`` when the request
  carried that ``X-Scope-OrgID``), ``datadog``, ``otlp``.

Both the runner and the sink (another process) build an expectation from its name,
``<variant>/<system>``, with :func:`expectation`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from bench import expect
from gotk_relay.rules.relabel import RelabelConfig, RuleSet, compile_rules
from tests.support.loadgen import GenSeries, Labels

REMOTE_WRITE: Final = "remote_write"
DATADOG: Final = "datadog"
OTLP: Final = "otlp"
TENANT_HEADER: Final = "X-Scope-OrgID"

Output = tuple[str, Labels, float]  # (destination, labels, value)

#: Dropped by a destination's write_relabel_configs: names the workload has (node-exporter's
#: disk and transmit counters, ~4.7 % of the series), plus the issue's ``go_gc_.*``.
WRITE_RELABEL_DROP: Final = """\
- source_labels: [__name__]
  regex: 'go_gc_.*|node_disk_io_time_seconds_total|node_network_transmit_bytes_total'
  action: drop
"""
#: A global rule that changes every series: each has an ``instance`` with a port.
GLOBAL_RELABEL_REWRITE: Final = """\
- source_labels: [instance]
  regex: '(.+):\\d+'
  target_label: host
  replacement: '$1'
"""
#: The usual Datadog fan-out: only the series one pays for.
DATADOG_KEEP: Final = """\
- source_labels: [__name__]
  regex: 'gotk_.*'
  action: keep
"""
#: Every series has ``job`` (two values here: node-exporter, kube-state-metrics).
TENANT_LABEL: Final = "job"
SHARDS: Final = 4
DATADOG_PATH: Final = "/api/v2/series"
OTLP_PATH: Final = "/v1/metrics"
WRITE_PATH: Final = "/api/v1/write"


@dataclass(frozen=True, slots=True)
class Goal:
    """Issue 17's target for a variant: ``kind`` is ``vmagent`` (relay/vmagent with the same
    feature, x), ``plain`` (relay / the relay's own plain figure, x) or ``absolute``
    (samples/CPU-s)."""

    kind: str
    target: float


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    summary: str
    vmagent: bool  # vmagent runs it too (it has the same feature)
    goal: Goal | None
    rw_protocol: str = "1.0"  # what the remote_write destination must receive ("" = none)


VARIANTS: Final = {
    v.name: v
    for v in (
        Variant("plain", "one remote_write, nothing else", True, None),
        Variant(
            "write-relabel-drop",
            "remote_write with write_relabel_configs dropping ~4.7% by __name__",
            True,
            Goal("vmagent", 2.0),
        ),
        Variant(
            "global-relabel-rewrite",
            "relabel_configs: host from instance on every series",
            True,
            Goal("vmagent", 2.0),
        ),
        Variant(
            "shards-4", "queue_config: {min_shards: 4, max_shards: 4}", True, Goal("vmagent", 2.0)
        ),
        Variant(
            "tenants",
            f"tenant: {{label: {TENANT_LABEL}}} (X-Scope-OrgID, label removed)",
            False,
            Goal("plain", 0.7),
        ),
        Variant(
            "rw2",
            "protobuf_message: io.prometheus.write.v2.Request",
            False,
            Goal("plain", 0.7),
            rw_protocol="2.0",
        ),
        Variant(
            "fanout-datadog",
            "remote_write + datadog keeping gotk_.*",
            False,
            Goal("plain", 0.8),
        ),
        Variant(
            "datadog-all",
            "one datadog destination, everything",
            False,
            Goal("absolute", 300_000),
            "",
        ),
        Variant(
            "otlp-all", "one otlp destination, everything", False, Goal("absolute", 300_000), ""
        ),
    )
}


def rules(text: str) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, list)
    return loaded


@functools.cache
def _compiled(text: str) -> RuleSet:
    return compile_rules([RelabelConfig.model_validate(r) for r in rules(text)])


def relay_config(variant: str, config: dict[str, Any], sink_base: str) -> dict[str, Any]:
    """The relay's config for ``variant``: ``config`` (the embedded default) plus destinations
    at the sink (``sink_base`` is ``http://host:port``)."""
    out = dict(config)
    write: dict[str, Any] = {"url": sink_base + WRITE_PATH, "name": "sink"}
    datadog = {"url": sink_base + DATADOG_PATH, "api_key": "bench", "name": "datadog"}
    if variant == "write-relabel-drop":
        write["write_relabel_configs"] = rules(WRITE_RELABEL_DROP)
    elif variant == "global-relabel-rewrite":
        out["relabel_configs"] = rules(GLOBAL_RELABEL_REWRITE)
    elif variant == "shards-4":
        write["queue_config"] = {"min_shards": SHARDS, "max_shards": SHARDS}
    elif variant == "tenants":
        write["tenant"] = {"label": TENANT_LABEL}
    elif variant == "rw2":
        write["protobuf_message"] = "io.prometheus.write.v2.Request"
    elif variant == "fanout-datadog":
        out["datadog"] = [{**datadog, "write_relabel_configs": rules(DATADOG_KEEP)}]
    elif variant == "datadog-all":
        out["datadog"] = [datadog]
    elif variant == "otlp-all":
        out["otlp"] = [{"url": sink_base + OTLP_PATH, "name": "otlp"}]
    elif variant != "plain":
        raise ValueError(f"unknown variant {variant!r}")
    out["remote_write"] = [] if variant in ("datadog-all", "otlp-all") else [write]
    return out


def vmagent_files(variant: str) -> dict[str, tuple[str, str]]:
    """vmagent's flags for ``variant`` that name a file: flag → (file name, its content)."""
    if variant == "write-relabel-drop":
        return {"-remoteWrite.urlRelabelConfig": ("url-relabel.yml", WRITE_RELABEL_DROP)}
    if variant == "global-relabel-rewrite":
        return {"-remoteWrite.relabelConfig": ("relabel.yml", GLOBAL_RELABEL_REWRITE)}
    return {}


def vmagent_flags(variant: str) -> list[str]:
    """vmagent's flags for ``variant`` that are not files."""
    return [f"-remoteWrite.queues={SHARDS}"] if variant == "shards-4" else []


# --------------------------------------------------------------------------------------------
# Expectations


def _relay_flux(labels: Labels, value: float) -> expect.Expected:
    return expect.relay_legacy(labels, value)


def _relabeled(text: str, outputs: expect.Expected) -> expect.Expected:
    ruleset = _compiled(text)
    out = []
    for labels, value in outputs:
        kept = ruleset.apply(labels)
        if kept is not None:
            out.append((tuple(sorted(kept)), value))
    return out


def _to(dest: str, outputs: expect.Expected) -> list[Output]:
    return [(dest, labels, value) for labels, value in outputs]


def _tenants(outputs: expect.Expected) -> list[Output]:
    """Each series to its tenant's requests, the tenant label removed (``keep_label: false``);
    series without the label are dropped (no ``default``)."""
    out = []
    for labels, value in outputs:
        tenant = dict(labels).get(TENANT_LABEL)
        if tenant:
            rest = tuple(p for p in labels if p[0] != TENANT_LABEL)
            out.append((f"{REMOTE_WRITE}@{tenant}", rest, value))
    return out


Transform = Callable[[Labels, float], list[Output]]


def _transform(variant: str, system: str) -> Transform:
    if system == "gotk-relay":
        if variant in ("plain", "shards-4", "rw2"):
            return lambda labels, value: _to(REMOTE_WRITE, _relay_flux(labels, value))
        if variant == "write-relabel-drop":
            return lambda labels, value: _to(
                REMOTE_WRITE, _relabeled(WRITE_RELABEL_DROP, _relay_flux(labels, value))
            )
        if variant == "global-relabel-rewrite":

            def rewrite(labels: Labels, value: float) -> list[Output]:
                kept = _relabeled(GLOBAL_RELABEL_REWRITE, [(labels, value)])
                return [o for lv in kept for o in _to(REMOTE_WRITE, _relay_flux(*lv))]

            return rewrite
        if variant == "tenants":
            return lambda labels, value: _tenants(_relay_flux(labels, value))
        if variant == "fanout-datadog":

            def fanout(labels: Labels, value: float) -> list[Output]:
                legacy = _relay_flux(labels, value)
                return _to(REMOTE_WRITE, legacy) + _to(DATADOG, _relabeled(DATADOG_KEEP, legacy))

            return fanout
        if variant == "datadog-all":
            return lambda labels, value: _to(DATADOG, _relay_flux(labels, value))
        if variant == "otlp-all":
            return lambda labels, value: _to(OTLP, _relay_flux(labels, value))
    if system == "vmagent":
        if variant in ("plain", "shards-4"):
            return lambda labels, value: [(REMOTE_WRITE, labels, value)]
        if variant == "write-relabel-drop":
            return lambda labels, value: _to(
                REMOTE_WRITE, _relabeled(WRITE_RELABEL_DROP, [(labels, value)])
            )
        if variant == "global-relabel-rewrite":
            return lambda labels, value: _to(
                REMOTE_WRITE, _relabeled(GLOBAL_RELABEL_REWRITE, [(labels, value)])
            )
    if system == "vmagent-relabel" and variant == "plain":
        return lambda labels, value: _to(REMOTE_WRITE, expect.vmagent_rename(labels, value))
    raise ValueError(f"no expectation for {system} with variant {variant!r}")


def datadog_counter(name: str) -> bool:
    """A series the Datadog destination sends as a count (``counters: count``, the default):
    without metadata (the load has none) the name's suffix decides, and a count's first
    sample only sets the baseline, so it sends no point (docs/destinations, Datadog)."""
    return name.endswith(("_total", "_count", "_sum", "_bucket"))


def _name(labels: Labels) -> str:
    return dict(labels).get("__name__", "")


@dataclass(frozen=True, slots=True)
class Expectation:
    """What ``system`` running ``variant`` must deliver for each accepted sample."""

    key: str  # "<variant>/<system>"
    transform: Transform

    def outputs(self, labels: Labels, value: float) -> list[Output]:
        return self.transform(labels, value)

    def batch_counts(self, batch: Sequence[GenSeries]) -> tuple[Counter[str], Counter[str]]:
        """Samples per destination for a batch's first accepted round, and for its later ones
        (they differ where a Datadog count's first sample sends no point)."""
        first: Counter[str] = Counter()
        later: Counter[str] = Counter()
        for item in batch:
            for dest, labels, _ in self.outputs(item.labels, item.value):
                later[dest] += 1
                if not (dest == DATADOG and datadog_counter(_name(labels))):
                    first[dest] += 1
        return first, later


@functools.cache
def expectation(key: str) -> Expectation:
    """The expectation named ``<variant>/<system>``."""
    variant, _, system = key.partition("/")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    return Expectation(key, _transform(variant, system))


def systems_of(variant: str, systems: Sequence[str]) -> list[str]:
    """The systems (of those asked for) that run ``variant``."""
    if variant == "plain":
        return list(systems)
    allowed = {"gotk-relay", "vmagent"} if VARIANTS[variant].vmagent else {"gotk-relay"}
    return [s for s in systems if s in allowed]
