"""The whole configuration (``Config``): the receiver, the shared queue bounds, the spool, the
rules, the embedded federate destination and the queued destinations, each named uniquely,
and the scrape jobs.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..model import Protocol
from ..rules.flux import FluxConfig
from ..rules.relabel import RelabelConfig
from ..units import ByteSize, Duration
from .base import Strict
from .client import sanitize_url
from .destinations import (
    DatadogConfig,
    OTLPConfig,
    QueuedDestinationConfig,
    RemoteWriteConfig,
    destination_name,
)
from .receiver import ReceiverConfig
from .scrape import ScrapeConfig, check_jobs

# Each tracked Flux object's series in the federate store: its four outputs (three
# gotk_reconcile_condition, one gotk_suspend_status) and its input (gotk_resource_info).
SERIES_PER_OBJECT = 5
# Room beyond them for the other series the default selector keeps (the controllers' own gotk_*).
FLUX_ROOM = 10_000


def flux_series_needed(max_objects: int) -> int:
    """The federate series ``max_objects`` tracked Flux objects can put in the store."""
    return SERIES_PER_OBJECT * max_objects


class QueuesConfig(Strict):
    """Bounds shared by all destinations' in-memory queues."""

    memory_budget_bytes: ByteSize = Field(256 * 1024 * 1024, gt=0)


class SpoolConfig(Strict):
    """A durable queue per destination in SQLite (WAL) under ``data_dir``; off when unset.

    With the spool on, a batch is committed for every destination before the sender hears
    2xx, and the relay resumes from it after a restart or a crash.
    """

    data_dir: str | None = None
    max_bytes: ByteSize = Field(1024 * 1024 * 1024, gt=0)  # per destination
    when_full: Literal["backpressure", "drop_oldest"] = "backpressure"
    synchronous: Literal["full", "normal"] = "full"  # normal: survives a crash, not power loss


class FederateConfig(Strict):
    """The embedded destination that keeps the latest sample of matching series for scraping."""

    enabled: bool = True
    match: list[str] = Field(default_factory=lambda: ['{__name__=~"gotk_.*"}'])
    # Unset: follows flux.max_objects (Config.federate_max_series).
    max_series: int | None = Field(None, gt=0)
    # GET /federate bounds: requests rendered at once (beyond: 503), match[] selectors in one
    # request (beyond: 400), and the time one may take (beyond: 503). Rendering runs in a thread
    # from a snapshot, off the write path's event loop.
    max_concurrent_requests: int = Field(4, gt=0)
    max_selectors: int = Field(64, gt=0)
    timeout: Duration = Field(10.0, gt=0)
    # Prometheus' --query.lookback-delta: a series whose newest sample is older is not served
    # (kept: a newer sample brings it back), as Prometheus' own /federate leaves it out.
    lookback_delta: Duration = Field(300.0, gt=0)

    @field_validator("match")
    @classmethod
    def _selectors(cls, value: list[str]) -> list[str]:
        from ..selectors import parse_selector

        for selector in value:
            parse_selector(selector)
        return value


class Config(Strict):
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    queues: QueuesConfig = Field(default_factory=QueuesConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    flux: FluxConfig = Field(default_factory=FluxConfig)
    federate: FederateConfig = Field(default_factory=FederateConfig)
    remote_write: list[RemoteWriteConfig] = Field(default_factory=list)
    datadog: list[DatadogConfig] = Field(default_factory=list)
    otlp: list[OTLPConfig] = Field(default_factory=list)
    # Prometheus' scrape_configs (static targets): the relay scrapes KSM or the Flux Operator
    # itself and feeds what it scraped to the same rules and destinations (docs/scrape.md).
    scrape_configs: list[ScrapeConfig] = Field(default_factory=list)

    @field_validator("scrape_configs")
    @classmethod
    def _jobs(cls, value: list[ScrapeConfig]) -> list[ScrapeConfig]:
        return check_jobs(value)

    @model_validator(mode="after")
    def _names(self) -> Config:
        seen: dict[str, str] = {}
        for where, name, _ in self.destinations():
            if name in seen or name == "federate":
                raise ValueError(
                    f"{where}: duplicate destination name {name!r} "
                    f"(also {seen.get(name, 'the embedded federate')}); give each a unique name:"
                )
            seen[name] = where
        return self

    @model_validator(mode="after")
    def _no_twin_remote_write(self) -> Config:
        """Two ``remote_write`` blocks alike in every key (the same URL, settings and name, or
        none) would send every sample twice: refused, as Prometheus refuses them."""
        seen: dict[str, int] = {}
        for i, rw in enumerate(self.remote_write):
            key = rw.model_dump_json()
            if key in seen:
                raise ValueError(
                    f"remote_write[{i}]: duplicate remote write configs are not allowed, found "
                    f"duplicate for URL: {sanitize_url(rw.url)} (the same as "
                    f"remote_write[{seen[key]}]: every sample would be sent twice)"
                )
            seen[key] = i
        return self

    @model_validator(mode="after")
    def _acknowledge(self) -> Config:
        """``receiver.acknowledge: delivered`` answers a write once it is delivered: a spool
        exists to answer before that, and the Flux rules' state moves on when a request is
        admitted, so a request answered 503 afterwards would come again as old news to them."""
        if self.receiver.acknowledge != "delivered":
            return self
        if self.spool.data_dir:
            raise ValueError(
                "receiver.acknowledge: delivered answers a write only once it is delivered; "
                "spool.data_dir (a spool acknowledges before delivery) cannot go with it: "
                "remove one of them (docs/scaling.md)"
            )
        if self.flux.mode != "off":
            raise ValueError(
                f"receiver.acknowledge: delivered needs flux.mode: off (it is {self.flux.mode!r}): "
                "the Flux rules are stateful and belong to one relay with acknowledge: queued "
                "(the Flux tier, docs/scaling.md)"
            )
        return self

    @property
    def federate_max_series(self) -> int:
        """The federate store's bound: ``federate.max_series`` when set, else what every
        tracked Flux object's series need plus room for the controllers' own (``FLUX_ROOM``)."""
        if self.federate.max_series is not None:
            return self.federate.max_series
        return flux_series_needed(self.flux.max_objects) + FLUX_ROOM

    def warnings(self) -> list[str]:
        """What is valid but likely wrong, for ``check-config`` and the log at (re)load."""
        out: list[str] = []
        explicit = self.federate.max_series
        needed = flux_series_needed(self.flux.max_objects)
        if (
            self.federate.enabled
            and self.flux.mode != "off"
            and explicit is not None
            and explicit < needed
        ):
            out.append(
                f"federate.max_series: {explicit} holds the series of "
                f"{explicit // SERIES_PER_OBJECT} Flux objects, but flux.max_objects tracks "
                f"{self.flux.max_objects}, which need {needed} ({SERIES_PER_OBJECT} per object: "
                "its four outputs and its gotk_resource_info); the series of objects past it "
                "are refused from /federate (gotk_relay_samples_dropped_total"
                '{destination="federate",reason="max_series"}); raise it or leave it unset'
            )
        for where, _, cfg in self.destinations():
            q = cfg.queue_config
            if "max_shards" in q.model_fields_set and q.max_shards > q.min_shards:
                # Prometheus adds shards up to max_shards under load; the relay never does, so
                # a block tuned for that (e.g. max_samples_per_send: 500) sends far less.
                out.append(
                    f"{where}.queue_config.max_shards: {q.max_shards} is a bound only: "
                    f"gotk-relay sends on min_shards ({q.min_shards}) ordered streams, one "
                    f"request of up to max_samples_per_send ({q.max_samples_per_send}) points "
                    "in flight each, and does not add shards under load; set min_shards to "
                    "the streams the destination needs"
                )
        for i, rw in enumerate(self.remote_write):
            if rw.protobuf_message == Protocol.V2 and not rw.metadata_config.send:
                # Prometheus' own words for it (storage/remote/queue_manager.go).
                out.append(
                    f"remote_write[{i}].metadata_config.send: false is ignored with "
                    f"protobuf_message: {Protocol.V2}: metadata is always sent in remote write "
                    "2.0, on each series"
                )
        return out

    def destinations(self) -> list[tuple[str, str, QueuedDestinationConfig]]:
        """Every queued destination as (config location, name, config), in config order."""
        out: list[tuple[str, str, QueuedDestinationConfig]] = []
        for i, rw in enumerate(self.remote_write):
            out.append((f"remote_write[{i}]", rw.name or destination_name(i, rw.url), rw))
        for i, dd in enumerate(self.datadog):
            out.append(
                (
                    f"datadog[{i}]",
                    dd.name
                    or f"datadog:{i}:{dd.site if dd.url is None else urlsplit(dd.url).netloc}",
                    dd,
                )
            )
        for i, ot in enumerate(self.otlp):
            out.append((f"otlp[{i}]", ot.name or f"otlp:{destination_name(i, ot.url)}", ot))
        return out


def destination_names(config: Config) -> list[str]:
    return [name for _, name, _ in config.destinations()]
