"""When a write request may skip decoding: the plan, derived once per configuration.

A remote-write 1.0 request whose series no rule can change is forwarded as the bytes that came:
no Python object per series, no re-encoding, not even a recompression (the snappy block is
queued as received). That holds when there are no global relabel rules,
every destination takes the request as is (one shard, no write_relabel_configs, no tenants,
remote write 1.0 — Datadog and OTLP destinations read 1.0 entries too), and the request holds
none of the metric names the Flux rules or the federate store look at. The series that hold such
names are selected from the encoded request (``wire.scan``) and decoded; only they go through
the rules. With ``flux.keep_source`` (the default) the rules change none of them, so the whole
body is forwarded as it came and the synthesized series are queued after it; without it the
other series are re-framed and forwarded as bytes beside the rules' output.

Every request on it is checked as strictly as a decode would (``scan.survey``, in C: protobuf,
UTF-8, label names, limits; unsorted label sets are sorted), unless ``receiver.validation:
framing`` asks for framing and counts only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import V1, Config, RemoteWriteConfig
from .rules.flux import RECONCILE_CONDITION, RESOURCE_INFO, SUSPEND_STATUS
from .selectors import name_prefixes


@dataclass(frozen=True, slots=True)
class FastPath:
    names: frozenset[bytes]  # exact metric names the Flux rules read
    prefixes: frozenset[bytes]  # name prefixes the federate store may keep
    # The rules leave every series they read in place (flux.keep_source): the received body is
    # then forwarded whole, as the snappy block that came, and only synthesized series are added.
    keeps_inputs: bool = True

    @property
    def watched(self) -> frozenset[bytes]:
        return self.names | self.prefixes


_LITERAL = re.compile(r"[A-Za-z0-9_:]*")


def plan(config: Config) -> FastPath | None:
    """The fast path this configuration allows, or None when every request must be decoded."""
    if config.relabel_configs:
        return None
    for _, _, cfg in config.destinations():
        if cfg.queue_config.min_shards != 1 or cfg.write_relabel_configs:
            return None
        if isinstance(cfg, RemoteWriteConfig) and (
            cfg.tenant is not None or cfg.protobuf_message != V1
        ):
            return None
    names: set[bytes] = set()
    if config.flux.mode in ("legacy", "both"):
        names.add(RESOURCE_INFO.encode())
    if config.flux.mode in ("resource_info", "both"):
        names.update((RECONCILE_CONDITION.encode(), SUSPEND_STATUS.encode()))
    prefixes: set[str] = set()
    if config.federate.enabled:
        found = name_prefixes(config.federate.match)
        if found is None or "" in found:
            return None  # a selector that can match any name: the store must see every series
        prefixes = found
    return FastPath(
        frozenset(names), frozenset(p.encode() for p in prefixes), config.flux.keep_source
    )
