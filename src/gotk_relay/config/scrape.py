"""``scrape_configs:``: the relay scrapes kube-state-metrics or the Flux Operator itself, with
the keys and meanings of Prometheus' ``scrape_configs`` so that a block pasted from
``prometheus.yml`` works (issue 19's "``scrape:`` section").

Only static targets: every service-discovery key, ``relabel_configs`` and the client keys the
relay cannot honour are refused with an error naming them, never accepted and ignored.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from ..rules.relabel import RelabelConfig
from ..units import Base2Bytes, Duration, parse_duration
from .base import Strict
from .client import Authorization, BasicAuth, TLSConfig

# Prometheus' defaults (config/config.go): global scrape_interval 1m, scrape_timeout 10s.
DEFAULT_SCRAPE_INTERVAL: Final = 60.0
DEFAULT_SCRAPE_TIMEOUT: Final = 10.0
# Prometheus' default body_size_limit is 0 (none); the relay bounds every body it reads.
DEFAULT_BODY_SIZE_LIMIT: Final = 64 * 1024 * 1024
# Prometheus' scrape protocols and the media type each asks for (config.ScrapeProtocolsHeaders);
# the protobuf format is known, and refused.
PROTOBUF_PROTOCOL: Final = "PrometheusProto"
SCRAPE_PROTOCOLS: Final = {
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
}
# What Prometheus 2.42 asks for (no scrape_protocols): OpenMetrics preferred, then the text format.
DEFAULT_ACCEPT: Final = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# host:port, as Prometheus requires a static target to be (no scheme, no path).
_TARGET: Final = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^\s/:\[\]@?#]+)(:\d{1,5})?$")

# Keys of Prometheus' scrape_config gotk-relay does not implement, with what to do instead.
UNSUPPORTED: Final[dict[str, str]] = {
    **{
        f"{sd}_sd_configs": "only static_configs are supported by gotk-relay"
        for sd in (
            "azure",
            "consul",
            "digitalocean",
            "docker",
            "dockerswarm",
            "dns",
            "ec2",
            "eureka",
            "file",
            "gce",
            "hetzner",
            "http",
            "ionos",
            "kubernetes",
            "kuma",
            "lightsail",
            "linode",
            "marathon",
            "nerve",
            "nomad",
            "openstack",
            "ovhcloud",
            "puppetdb",
            "scaleway",
            "serverset",
            "triton",
            "uyuni",
            "vultr",
        )
    },
    "relabel_configs": "target relabeling is not supported by gotk-relay: write the target "
    "and its labels in static_configs (metric_relabel_configs is supported)",
    "bearer_token": "use authorization: {credentials: ...} instead",
    "bearer_token_file": "use authorization: {credentials_file: ...} instead",
    "oauth2": "not supported by gotk-relay: use basic_auth, authorization or tls_config",
    "proxy_url": "not supported by gotk-relay for scraping",
    "no_proxy": "not supported by gotk-relay",
    "proxy_from_environment": "not supported by gotk-relay",
    "proxy_connect_header": "not supported by gotk-relay",
    "http_headers": "not supported by gotk-relay for scraping",
    "target_limit": "only meaningful with service discovery; not supported by gotk-relay",
    "keep_dropped_targets": "only meaningful with service discovery; not supported by gotk-relay",
    "native_histogram_bucket_limit": "native histograms are not scraped by gotk-relay",
    "native_histogram_min_bucket_factor": "native histograms are not scraped by gotk-relay",
    "scrape_classic_histograms": "native histograms are not scraped by gotk-relay",
    "always_scrape_classic_histograms": "native histograms are not scraped by gotk-relay",
    "track_timestamps_staleness": "not supported by gotk-relay: series with an exposed "
    "timestamp are not tracked for staleness (Prometheus' default)",
    "metric_name_validation_scheme": "gotk-relay checks names with the legacy scheme",
    "fallback_scrape_protocol": "not supported by gotk-relay",
}


class StaticConfig(Strict):
    targets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not _TARGET.match(target):
                raise ValueError(
                    f'"{target}" is not a valid target: write host:port (the scheme and path '
                    "are the job's scheme and metrics_path)"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f'"{name}" is not a valid label name')
        return value


class ScrapeConfig(Strict):
    """One job, as Prometheus' ``scrape_config`` (static targets only)."""

    job_name: str = Field(min_length=1)
    # 0s: Prometheus' default, as unset (Prometheus takes the global one, 1m by default).
    scrape_interval: Duration = Field(DEFAULT_SCRAPE_INTERVAL, ge=0)
    # None (or 0s): Prometheus' default, 10s or the interval if that is shorter.
    scrape_timeout: Duration | None = Field(None, ge=0)
    metrics_path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    params: dict[str, list[str]] = Field(default_factory=dict)
    static_configs: list[StaticConfig] = Field(default_factory=list)
    honor_labels: bool = False
    honor_timestamps: bool = True
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    follow_redirects: bool = True
    # Accepted so that blocks pasted from a 2.x configuration load; the scraper speaks
    # HTTP/1.1 (as remote_write's enable_http2, see config/destinations.py).
    enable_http2: bool = True
    enable_compression: bool = True
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    # 0: no limit, as in Prometheus (the body size is bounded anyway).
    sample_limit: int = Field(0, ge=0)
    label_limit: int = Field(0, ge=0)
    label_name_length_limit: int = Field(0, ge=0)
    label_value_length_limit: int = Field(0, ge=0)
    # 0 (Prometheus: no limit) is the relay's own bound, as when unset.
    body_size_limit: Base2Bytes = Field(DEFAULT_BODY_SIZE_LIMIT, ge=0)
    # None (or empty): Prometheus 2.42's Accept header (DEFAULT_ACCEPT).
    scrape_protocols: list[str] | None = None

    @field_validator("body_size_limit")
    @classmethod
    def _body_size_limit(cls, value: int) -> int:
        """0, Prometheus' "no limit", is the relay's default bound: every body is bounded."""
        return value or DEFAULT_BODY_SIZE_LIMIT

    @field_validator("scrape_protocols")
    @classmethod
    def _protocols(cls, value: list[str] | None) -> list[str] | None:
        """Known names, each once, as Prometheus checks them; the protobuf format refused."""
        for name in value or ():
            if name == PROTOBUF_PROTOCOL:
                raise ValueError(
                    f"{PROTOBUF_PROTOCOL}: the protobuf format is not supported by gotk-relay; "
                    "list text formats only"
                )
            if name not in SCRAPE_PROTOCOLS:
                known = ", ".join(sorted([*SCRAPE_PROTOCOLS, PROTOBUF_PROTOCOL]))
                raise ValueError(f"unknown scrape protocol {name}, supported: [{known}]")
        if value and len(set(value)) != len(value):
            raise ValueError(f"duplicated protocol in scrape_protocols, got [{' '.join(value)}]")
        return value or None

    @field_validator("scrape_interval")
    @classmethod
    def _default_interval(cls, value: float) -> float:
        return value or DEFAULT_SCRAPE_INTERVAL

    @field_validator("scrape_timeout")
    @classmethod
    def _default_timeout(cls, value: float | None) -> float | None:
        return value or None

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, value: str) -> str:
        # Go's url.URL puts the / before a path that lacks it ("" asks for /), as Prometheus
        # builds the target's URL.
        return value if value.startswith("/") else "/" + value

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in UNSUPPORTED:
                    raise ValueError(f"{key}: {UNSUPPORTED[key]}")
        return data

    @model_validator(mode="after")
    def _check(self) -> ScrapeConfig:
        if self.basic_auth is not None and self.authorization is not None:
            raise ValueError("at most one of basic_auth & authorization must be configured")
        if self.scrape_timeout is not None and self.scrape_timeout > self.scrape_interval:
            raise ValueError(
                f"scrape timeout greater than scrape interval for scrape config with job "
                f'name "{self.job_name}"'
            )
        for group in self.static_configs:
            scheme = group.labels.get("__scheme__", "")
            if scheme not in ("", "http", "https"):
                raise ValueError(f'static_configs labels: invalid scheme: "{scheme}"')
            self.timing(group.labels)
        return self

    def timing(self, labels: dict[str, str]) -> tuple[float, float]:
        """A target's scrape interval and timeout in seconds: the job's, unless its group's
        ``__scrape_interval__`` / ``__scrape_timeout__`` labels set them (an empty value is no
        value), as Prometheus' ``PopulateLabels`` reads them; ValueError with its words."""
        interval = _label_duration(labels, "interval", self.scrape_interval)
        timeout = _label_duration(labels, "timeout", self.timeout)
        if timeout > interval:
            raise ValueError(
                f"scrape timeout cannot be greater than scrape interval ({timeout:g}s > "
                f'{interval:g}s) for a target of job "{self.job_name}"'
            )
        return interval, timeout

    @property
    def accept(self) -> str:
        """The Accept header of a scrape: Prometheus 3's for ``scrape_protocols`` (each in the
        order listed, weighted down from q=0.6, names escaped to underscores as the relay
        validates them), else 2.42's."""
        if self.scrape_protocols is None:
            return DEFAULT_ACCEPT
        weight = len(SCRAPE_PROTOCOLS) + 2  # Prometheus counts the protobuf format too
        values = []
        for name in self.scrape_protocols:
            value = SCRAPE_PROTOCOLS[name]
            if name.endswith("1.0.0"):  # the escaping parameter exists for the 1.0.0 formats
                value += ";escaping=underscores"
            values.append(f"{value};q=0.{weight}")
            weight -= 1
        values.append(f"*/*;q=0.{weight}")
        return ",".join(values)

    @property
    def timeout(self) -> float:
        """The scrape timeout in seconds: as set, else Prometheus' default."""
        if self.scrape_timeout is not None:
            return self.scrape_timeout
        return min(DEFAULT_SCRAPE_TIMEOUT, self.scrape_interval)


def _label_duration(labels: dict[str, str], what: str, default: float) -> float:
    """``__scrape_<what>__`` of a target's labels in seconds (``default`` when unset or
    empty), refused as Prometheus refuses it: unparsable, or 0."""
    text = labels.get(f"__scrape_{what}__", "")
    if not text:
        return default
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"error parsing scrape {what}: {exc}") from None
    if seconds == 0:
        raise ValueError(f"scrape {what} cannot be 0")
    return seconds


def check_jobs(jobs: list[ScrapeConfig]) -> list[ScrapeConfig]:
    """Job names are unique, as Prometheus requires."""
    seen: set[str] = set()
    for job in jobs:
        if job.job_name in seen:
            raise ValueError(f'found multiple scrape configs with job name "{job.job_name}"')
        seen.add(job.job_name)
    return jobs
