"""The queued destinations: ``remote_write:`` (the same keys as in ``prometheus.yml``, so a
user can paste one), ``datadog:`` and ``otlp:``, with their queue, metadata and tenant
settings, and the default name of each.
"""

from __future__ import annotations

from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ..model import Protocol
from ..rules.relabel import RelabelConfig
from ..units import Duration
from .base import Strict
from .client import (
    RESERVED_HEADERS,
    URL,
    Authorization,
    BasicAuth,
    Headers,
    TLSConfig,
    read_secret_file,
)


class QueueConfig(Strict):
    """Prometheus' queue_config keys, with Prometheus' defaults.

    gotk-relay keeps ``min_shards`` ordered streams per destination (a series always goes to the
    same one, one request in flight each), which is what keeps per-series order across retries;
    it does not reshard dynamically, since resharding without draining reorders samples.
    """

    # Prometheus 2.42's default is 2500 per shard (10000 since 2.44), with up to 200 shards
    # (50 since 2.44) added under load. The relay keeps min_shards and receives whole batches
    # from several senders at once, so it buffers more per shard: enough for bursts of
    # concurrent 2000-sample requests without refusals.
    capacity: int = Field(100_000, gt=0)
    # The relay keeps exactly min_shards streams (resharding would reorder a series' samples),
    # so max_shards is the bound min_shards is checked against, with Prometheus 2.42's default.
    max_shards: int = Field(200, gt=0)
    min_shards: int = Field(1, gt=0)
    # Prometheus: 500 per request in 2.42 (2000 since 2.44), over up to 200 shards. The relay
    # merges what queued while a request was in flight into the next one, so one ordered
    # stream keeps up: bigger default.
    max_samples_per_send: int = Field(20_000, gt=0)
    # Prometheus: the longest a sample waits in a shard's buffer for a batch to fill. A shard of
    # the relay never waits for more: it sends what is queued as soon as its previous request
    # was answered (tests/integration/test_remote_write_keys.py). Must be > 0, as a deadline.
    batch_send_deadline: Duration = 5.0
    min_backoff: Duration = 0.03
    max_backoff: Duration = 5.0
    retry_on_http_429: bool = False
    sample_age_limit: Duration = 0.0

    @model_validator(mode="after")
    def _bounds(self) -> QueueConfig:
        if self.min_shards > self.max_shards:
            raise ValueError(
                f"min_shards ({self.min_shards}) must not be greater than max_shards "
                f"({self.max_shards}): the relay runs min_shards ordered streams"
            )
        if self.batch_send_deadline <= 0:
            raise ValueError("batch_send_deadline must be greater than 0")
        if self.min_backoff <= 0:
            # Prometheus takes 0 and then retries without pause, as fast as the backend fails.
            raise ValueError("min_backoff must be greater than 0 (0 retries without pause)")
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not be greater than max_backoff")
        return self


# Prometheus' metadata_config defaults. The relay sends metadata within the requests it came
# in, as the senders batched and timed it: it keeps no metadata of its own to resend on a timer
# or to rebatch, so only these values are accepted (send: false is honoured). A batch size of
# 500 was Prometheus' default until 2.44, 2000 since: a block pasted from either is accepted.
METADATA_SEND_INTERVAL: Final = 60.0
METADATA_MAX_SAMPLES_PER_SEND: Final = 2000
METADATA_BATCH_DEFAULTS: Final = frozenset({500, 2000})


class MetadataConfig(Strict):
    send: bool = True
    send_interval: Duration = METADATA_SEND_INTERVAL
    max_samples_per_send: int = METADATA_MAX_SAMPLES_PER_SEND

    @field_validator("send_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value != METADATA_SEND_INTERVAL:
            raise ValueError(
                "only Prometheus' default 1m is accepted: gotk-relay forwards metadata when its "
                "senders send it, in the same requests, and has none of its own to send on an "
                "interval (set send: false to send none)"
            )
        return value

    @field_validator("max_samples_per_send")
    @classmethod
    def _batch(cls, value: int) -> int:
        if value not in METADATA_BATCH_DEFAULTS:
            raise ValueError(
                "only Prometheus' defaults 2000 (500 before 2.44) are accepted: "
                "gotk-relay forwards metadata within the requests it came in, as its senders "
                "batched it (set send: false to send none)"
            )
        return value


class TenantConfig(Strict):
    """Route each series to a tenant taken from one of its labels (as cortex-tenant does)."""

    label: str
    header: str = "X-Scope-OrgID"  # THANOS-TENANT for Thanos Receive
    default: str = ""  # tenant of series without the label; empty: such series are dropped
    keep_label: bool = False

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value.lower() in RESERVED_HEADERS or value.lower() == "authorization":
            raise ValueError(f"{value} is a reserved header and cannot carry the tenant")
        return value


class _QueuedDestinationConfig(Strict):
    """What every queued destination has: a name, its rules, its queue and its timeout."""

    name: str = ""
    # > 0: Prometheus takes 0s and then fails every request at once ("context deadline
    # exceeded"); refused here rather than read as "no timeout".
    remote_timeout: Duration = Field(30.0, gt=0)
    write_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    queue_config: QueueConfig = Field(default_factory=QueueConfig)


class RemoteWriteConfig(_QueuedDestinationConfig):
    url: URL
    headers: Headers = Field(default_factory=dict)
    tenant: TenantConfig | None = None
    protobuf_message: Protocol = Protocol.V1
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    proxy_url: URL | None = None
    follow_redirects: bool = True
    # Prometheus 3's default for remote write (2.x defaulted to true). The relay's HTTP client
    # speaks HTTP/1.1 only; true is accepted so that blocks pasted from a 2.x configuration
    # load, and it is logged at start and documented that HTTP/2 is not negotiated (Prometheus
    # itself falls back to HTTP/1.1 when a server does not offer h2; the data sent is the same).
    enable_http2: bool = False
    # Prometheus 3's (experimental): each new connection goes to one of the host's addresses,
    # chosen at random (destinations/http.py, RandomAddress).
    round_robin_dns: bool = False
    # Prometheus, as a sender, defaults both to false: it sends what it scraped. The relay
    # forwards what its senders chose to send (a Prometheus sends exemplars or native
    # histograms only when configured to), so by default it passes them on; an explicit false
    # strips them from what this destination receives, as Prometheus documents.
    send_exemplars: bool = True
    send_native_histograms: bool = True
    metadata_config: MetadataConfig = Field(default_factory=MetadataConfig)
    # Keys Prometheus knows that gotk-relay cannot honour yet: refused with a clear message
    # rather than accepted and ignored (a silently unsigned request is a silent outage).
    oauth2: dict[str, Any] | None = None
    sigv4: dict[str, Any] | None = None
    azuread: dict[str, Any] | None = None
    google_iam: dict[str, Any] | None = None

    @field_validator("proxy_url", mode="before")
    @classmethod
    def _empty_proxy(cls, value: object) -> object:
        # Go reads an empty URL as none: `proxy_url: ''` (a template's empty value) is unset.
        return None if value == "" else value

    @model_validator(mode="after")
    def _auth(self) -> RemoteWriteConfig:
        for key in ("oauth2", "sigv4", "azuread", "google_iam"):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is not supported by gotk-relay yet; use basic_auth, authorization or "
                    "headers, or open an issue"
                )
        if self.basic_auth is not None and self.authorization is not None:
            raise ValueError("at most one of basic_auth & authorization must be configured")
        return self

    @property
    def strips(self) -> bool:
        """What this destination is sent differs from what was received (exemplars, native
        histograms or metadata left out), so its requests are re-encoded before sending."""
        # metadata_config.send: false on a 2.0 destination strips nothing while it speaks 2.0
        # (destinations/remote_write.py), but does once it has switched to 1.0.
        return not (
            self.send_exemplars and self.send_native_histograms and self.metadata_config.send
        )


DATADOG_SITES = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "datadoghq.eu",
    "ddog-gov.com",
    "uk1.datadoghq.com",
    "us2.ddog-gov.com",
)


class _ConvertingDestinationConfig(_QueuedDestinationConfig):
    """A destination the relay converts for (Datadog, OTLP): their intakes document 429 as
    "retry later", so it is always retried and remote write's opt-in is refused, not ignored."""

    @field_validator("queue_config")
    @classmethod
    def _no_429_switch(cls, value: QueueConfig) -> QueueConfig:
        if "retry_on_http_429" in value.model_fields_set:
            raise ValueError(
                "retry_on_http_429 is remote write's: Datadog and OTLP destinations always "
                "retry a 429, as their intakes document (remove the key)"
            )
        return value


class DatadogConfig(_ConvertingDestinationConfig):
    """Datadog's metrics intake (``POST https://api.<site>/api/v2/series``, JSON)."""

    site: Literal[DATADOG_SITES] = "datadoghq.com"  # type: ignore[valid-type]
    url: URL | None = None  # overrides site: a proxy, or a test double
    api_key: SecretStr | None = None  # use ${DD_API_KEY}
    api_key_file: str | None = None
    host_label: str | None = None  # label whose value becomes the series' host resource
    counters: Literal["count", "gauge"] = "count"  # count: monotonic_count deltas
    tags: list[str] = Field(default_factory=list)  # static tags added to every series
    compression: Literal["gzip", "deflate"] = "gzip"
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    # Send the Flux families under the names and tags Datadog's Flux check (fluxcd) gives them,
    # so its dashboard and monitors work without the Agent check (docs/recipes.md).
    flux_integration: bool = False
    # Labels kept as tags on those families besides the check's own (e.g. cluster).
    flux_integration_labels: list[str] = Field(default_factory=list)
    # Where the Flux controllers run: their process_*, workqueue_* and controller_runtime_*
    # families are the integration's only from targets in these namespaces (every Go program
    # has process_*), as the check only scrapes Flux's controllers.
    flux_integration_namespaces: list[str] = Field(default_factory=lambda: ["flux-system"])

    @model_validator(mode="after")
    def _key(self) -> DatadogConfig:
        if (self.api_key is None) == (not self.api_key_file):
            raise ValueError("configure exactly one of api_key (e.g. ${DD_API_KEY}) & api_key_file")
        return self

    @model_validator(mode="after")
    def _flux(self) -> DatadogConfig:
        for key in ("flux_integration_labels", "flux_integration_namespaces"):
            if key in self.model_fields_set and not self.flux_integration:
                raise ValueError(
                    f"{key} is set but flux_integration is false: it applies to the Flux "
                    "integration's families only; set flux_integration: true"
                )
        if not all(self.flux_integration_namespaces):
            raise ValueError(
                "flux_integration_namespaces: list the namespaces Flux's controllers run in "
                "(usually flux-system), without empty names"
            )
        if self.flux_integration and self.counters != "count":
            raise ValueError(
                "flux_integration: true sends the Flux check's counters as counts, as the check "
                f"does; counters: {self.counters} contradicts it (remove counters, or set it to "
                "count)"
            )
        return self

    @property
    def endpoint(self) -> str:
        return self.url or f"https://api.{self.site}/api/v2/series"

    def resolve_api_key(self) -> str:
        """Stripped as a key file is: ``${DD_API_KEY}`` filled from a Secret made of a file
        often ends in a newline, which no HTTP header may hold."""
        if self.api_key_file:
            return read_secret_file(self.api_key_file)
        return self.api_key.get_secret_value().strip() if self.api_key else ""


class OTLPConfig(_ConvertingDestinationConfig):
    """An OTLP/HTTP metrics receiver (``POST …/v1/metrics``, protobuf)."""

    url: URL
    headers: Headers = Field(default_factory=dict)  # vendor keys: use ${ENV}
    compression: Literal["gzip", "none"] = "gzip"
    temporality: Literal["cumulative", "delta"] = "cumulative"  # delta for Datadog's OTLP intake
    resource_labels: list[str] = Field(default_factory=lambda: ["job", "instance"])
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: TLSConfig = Field(default_factory=TLSConfig)


QueuedDestinationConfig = RemoteWriteConfig | DatadogConfig | OTLPConfig


def destination_name(index: int, url: str) -> str:
    """A stable default name when the user gave none: what logs and metric labels show."""
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return f"{index}:{host}"
