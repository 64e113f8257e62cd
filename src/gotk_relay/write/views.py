"""How a remote write 1.0 request is handled without decoding it: the plan, once per configuration.

A request is checked as strictly as a decode would (``write.scan.SURVEY``, in C: protobuf, UTF-8,
label names, limits; unsorted label sets are sorted) unless ``receiver.validation: framing``
asks for framing and counts only. Then, on its bytes (``routing``): the global
``relabel_configs``; the series the Flux rules or the federate store read are picked and decoded
(only they go through the rules); and every destination gets its own view of the request, its
``write_relabel_configs`` applied, spread over its shards and tenants, in the message it speaks.
A destination with no rules, one shard, no tenant and remote write 1.0 (Datadog and OTLP
destinations read 1.0 entries too) takes the snappy block as it came, not even recompressed.

With ``flux.keep_source`` (the default) the Flux rules change none of the series they read, so
they are forwarded with the rest and the synthesized series are queued after them; without it
the series they read are taken out and only the rules' output is queued for them.

A federate selector that can match any metric name (``{job="x"}``, a regex without a literal
start) has every series picked: the store must see them all. The request is still forwarded
as it came; each series is decoded through the label cache, a few µs each (docs/performance.md,
"A federate selector on any name").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config, QueuedDestinationConfig, RemoteWriteConfig
from ..model import Protocol
from ..rules.flux import OPERATOR_INFO, RECONCILE_CONDITION, RESOURCE_INFO, SUSPEND_STATUS
from ..selectors import name_prefixes
from .routing import Router


@dataclass(frozen=True, slots=True)
class View:
    """How one destination (or several alike) sees each request."""

    router: Router  # its write_relabel_configs, shards and tenant routing
    protocol: Protocol  # the message its entries hold

    @property
    def as_received(self) -> bool:
        """It takes the request as it came (after the global rules)."""
        return self.router.trivial and self.protocol == Protocol.V1


@dataclass(frozen=True, slots=True)
class FastPath:
    names: frozenset[bytes]  # exact metric names the Flux rules read
    prefixes: frozenset[bytes]  # name prefixes the federate store may keep
    # The rules leave every series they read in place (flux.keep_source): the received body is
    # then forwarded whole, as the snappy block that came, and only synthesized series are added.
    keeps_inputs: bool = True
    relabel: Router | None = None  # the global relabel_configs, None without any
    # Per destination name, its view; destinations that see alike share one View object, so a
    # request is routed once per distinct view.
    views: dict[str, View] = field(default_factory=dict)
    # Some view (or the global rules) only keeps or drops by name: the survey also makes its
    # series table (rw1_bytes.Survey.table), which routes such a view without reading labels.
    tabled: bool = False

    @property
    def as_received(self) -> bool:
        """Every destination takes the request as it came: the Flux rules' steady state may skip
        building series (Relay._plan_steady)."""
        return self.relabel is None and all(v.as_received for v in self.views.values())

    @property
    def watched(self) -> frozenset[bytes]:
        return self.names | self.prefixes


# Input series a Flux object sends in each flux.mode's steady state: legacy, its one
# gotk_resource_info (or flux_resource_info); resource_info, its gotk_reconcile_condition
# statuses (Deleted included, as pre-2.1 controllers send it) and gotk_suspend_status; both.
_INPUTS_PER_OBJECT = {"off": 0, "legacy": 1, "resource_info": 5, "both": 6}
LABEL_SET_BYTES = 1024  # key bytes allowed per label set: a Flux one is ~555 B encoded


def label_cache_bound(config: Config) -> tuple[int, int]:
    """The decoder's label cache bound (``wire.picked.bound``): entries and key bytes.

    Why: the cache holds the label sets of the series the fast path picks, which are the Flux
    rules' inputs and the series the federate store may keep, so what the relay tracks bounds
    it: every input of ``flux.max_objects`` objects plus the federate store's bound, at
    ``LABEL_SET_BYTES`` each. Sized below that, it would miss on every round of a full fleet.
    """
    entries = _INPUTS_PER_OBJECT[config.flux.mode] * config.flux.max_objects
    if config.federate.enabled:
        entries += config.federate_max_series
    return entries, entries * LABEL_SET_BYTES


def plan(config: Config) -> FastPath:
    """How every remote write 1.0 request is taken under this configuration: the names the
    survey picks (the Flux rules' inputs, what the federate store may keep) and each
    destination's view."""
    names: set[bytes] = set()
    if config.flux.mode in ("legacy", "both"):
        names.update((RESOURCE_INFO.encode(), OPERATOR_INFO.encode()))
    if config.flux.mode in ("resource_info", "both"):
        # The legacy gauges, and the operator's report, which is also written in KSM's shape.
        names.update(
            (RECONCILE_CONDITION.encode(), SUSPEND_STATUS.encode(), OPERATOR_INFO.encode())
        )
    prefixes: set[str] = set()
    if config.federate.enabled:
        found = name_prefixes(config.federate.match)
        # A selector that can match any name: the store must see every series, so every
        # series is picked (decoded through the label cache; still forwarded as it came).
        prefixes = {""} if found is None or "" in found else found
    relabel = Router(config.relabel_configs) if config.relabel_configs else None
    each = views(config)
    routers = [*(v.router for v in each.values()), *([relabel] if relabel else [])]
    return FastPath(
        frozenset(names),
        frozenset(p.encode() for p in prefixes),
        config.flux.keep_source,
        relabel,
        each,
        any(r.name_only for r in routers),
    )


def views(config: Config) -> dict[str, View]:
    """Each destination's view, one object per distinct (rules, shards, tenant, message)."""
    shared: dict[str, View] = {}
    out: dict[str, View] = {}
    for _, name, cfg in config.destinations():
        key, make = _view_of(cfg)
        if key not in shared:
            shared[key] = make()
        out[name] = shared[key]
    return out


def _view_of(cfg: QueuedDestinationConfig) -> tuple[str, Callable[[], View]]:
    tenant = cfg.tenant if isinstance(cfg, RemoteWriteConfig) else None
    protocol = cfg.protobuf_message if isinstance(cfg, RemoteWriteConfig) else Protocol.V1
    shards = cfg.queue_config.min_shards
    rules = cfg.write_relabel_configs
    key = json.dumps(
        [
            [r.model_dump(mode="json") for r in rules],
            shards,
            None if tenant is None else tenant.model_dump(mode="json"),
            protocol,
        ],
        sort_keys=True,
    )
    return key, lambda: View(Router(rules, shards, tenant), protocol)
