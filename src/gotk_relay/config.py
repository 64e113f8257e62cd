"""The relay's configuration: schema, defaults, ``${ENV}`` expansion, ``*_file`` secrets, and
errors that name the file, the line and the key.

A ``remote_write:`` entry takes the same keys as in ``prometheus.yml`` so a user can paste one.
Loading never exits the process: it returns a ``Config`` or raises ``ConfigError`` whose message
is ready to print (``check-config`` and ``/-/reload`` both show it as is).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .model import Protocol
from .rules.flux import FluxConfig
from .rules.relabel import RelabelConfig
from .units import ByteSize, Duration


class ConfigError(Exception):
    """A configuration that cannot be used; the message names where and what to fix."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently turn a feature off."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Strict):
    username: str = ""
    password: SecretStr | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if self.password is not None and self.password_file:
            raise ValueError(
                "at most one of basic_auth password & password_file must be configured"
            )
        return self

    def resolve_password(self) -> str:
        if self.password_file:
            return read_secret_file(self.password_file)
        return self.password.get_secret_value() if self.password else ""


class Authorization(_Strict):
    type: str = "Bearer"
    credentials: SecretStr | None = None
    credentials_file: str | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> Authorization:
        if self.credentials is not None and self.credentials_file:
            raise ValueError(
                "at most one of authorization credentials & credentials_file must be configured"
            )
        if self.type.strip().lower() == "basic":
            raise ValueError(
                'authorization type cannot be set to "basic", use "basic_auth" instead'
            )
        return self

    def resolve_credentials(self) -> str:
        if self.credentials_file:
            return read_secret_file(self.credentials_file)
        return self.credentials.get_secret_value() if self.credentials else ""


class TLSConfig(_Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: Literal["TLS12", "TLS13"] | None = None

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls_config: cert_file and key_file must be configured together")
        return self


class QueueConfig(_Strict):
    """Prometheus' queue_config keys, with Prometheus' defaults.

    gotk-relay keeps ``min_shards`` ordered streams per destination (a series always goes to the
    same one, one request in flight each), which is what keeps per-series order across retries;
    it does not reshard dynamically, since resharding without draining reorders samples.
    """

    # Prometheus' default is 10000 per shard, with up to 50 shards added under load. The relay
    # keeps min_shards and receives whole batches from several senders at once, so it buffers
    # more per shard: enough for bursts of concurrent 2000-sample requests without refusals.
    capacity: int = Field(100_000, gt=0)
    # The relay keeps exactly min_shards streams (resharding would reorder a series' samples),
    # so max_shards is the bound min_shards is checked against, as Prometheus' maximum is.
    max_shards: int = Field(50, gt=0)
    min_shards: int = Field(1, gt=0)
    # Prometheus: 2000 per request, over up to 50 shards. The relay merges what queued while a
    # request was in flight into the next one, so one ordered stream keeps up: bigger default.
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
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not be greater than max_backoff")
        return self


# Prometheus' metadata_config defaults. The relay sends metadata within the requests it came
# in, as the senders batched and timed it: it keeps no metadata of its own to resend on a timer
# or to rebatch, so only these values are accepted (send: false is honoured).
METADATA_SEND_INTERVAL: Final = 60.0
METADATA_MAX_SAMPLES_PER_SEND: Final = 500


class MetadataConfig(_Strict):
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
        if value != METADATA_MAX_SAMPLES_PER_SEND:
            raise ValueError(
                f"only Prometheus' default {METADATA_MAX_SAMPLES_PER_SEND} is accepted: "
                "gotk-relay forwards metadata within the requests it came in, as its senders "
                "batched it (set send: false to send none)"
            )
        return value


_RESERVED_HEADERS = frozenset(
    {
        "content-encoding",
        "content-length",
        "content-type",
        "user-agent",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "www-authenticate",
        "retry-after",
        "x-prometheus-remote-write-version",
        "authorization",
    }
)


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host and, if given, a port from 1 to 65535.

    The messages show the URL without user info or query (they may hold credentials).
    """
    try:
        parts = urlsplit(value)
        shown = sanitize_url(value)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"not a valid URL: {exc}") from None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f'"{shown}" is not a valid URL: it contains a space or control character')
    if parts.scheme not in ("http", "https"):
        raise ValueError(f'"{shown}" is not a valid http(s) URL: the scheme must be http or https')
    if not parts.hostname:
        raise ValueError(f'"{shown}" is not a valid http(s) URL: it has no host')
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 and parts.netloc.rsplit("@", 1)[-1].rsplit("]", 1)[-1].count(":"):
        raise ValueError(
            f'"{shown}" is not a valid http(s) URL: the port must be a number from 1 to 65535'
        )
    return value


def check_headers(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{key} is a reserved header. It must not be changed")
    return value


URL = Annotated[str, AfterValidator(check_url)]
Headers = Annotated[dict[str, str], AfterValidator(check_headers)]


class TenantConfig(_Strict):
    """Route each series to a tenant taken from one of its labels (as cortex-tenant does)."""

    label: str
    header: str = "X-Scope-OrgID"  # THANOS-TENANT for Thanos Receive
    default: str = ""  # tenant of series without the label; empty: such series are dropped
    keep_label: bool = False

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{value} is a reserved header and cannot carry the tenant")
        return value


class _QueuedDestinationConfig(_Strict):
    """What every queued destination has: a name, its rules, its queue and its timeout."""

    name: str = ""
    remote_timeout: Duration = 30.0
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


class DatadogConfig(_QueuedDestinationConfig):
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

    @model_validator(mode="after")
    def _key(self) -> DatadogConfig:
        if (self.api_key is None) == (not self.api_key_file):
            raise ValueError("configure exactly one of api_key (e.g. ${DD_API_KEY}) & api_key_file")
        return self

    @property
    def endpoint(self) -> str:
        return self.url or f"https://api.{self.site}/api/v2/series"

    def resolve_api_key(self) -> str:
        if self.api_key_file:
            return read_secret_file(self.api_key_file)
        return self.api_key.get_secret_value() if self.api_key else ""


class OTLPConfig(_QueuedDestinationConfig):
    """An OTLP/HTTP metrics receiver (``POST …/v1/metrics``, protobuf)."""

    url: URL
    headers: Headers = Field(default_factory=dict)  # vendor keys: use ${ENV}
    compression: Literal["gzip", "none"] = "gzip"
    temporality: Literal["cumulative", "delta"] = "cumulative"  # delta for Datadog's OTLP intake
    resource_labels: list[str] = Field(default_factory=lambda: ["job", "instance"])
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: TLSConfig = Field(default_factory=TLSConfig)


class IngressBasicAuth(_Strict):
    username: str
    password_file: str


class IngressAuth(_Strict):
    """Who may write. Secrets only from files, read at start and on reload, never logged."""

    bearer_token_file: str | None = None
    basic_auth: IngressBasicAuth | None = None

    @model_validator(mode="after")
    def _one(self) -> IngressAuth:
        if self.bearer_token_file and self.basic_auth is not None:
            raise ValueError("configure one of bearer_token_file & basic_auth, not both")
        if not self.bearer_token_file and self.basic_auth is None:
            raise ValueError("auth needs bearer_token_file or basic_auth (or remove auth)")
        return self


class IngressTLS(_Strict):
    """Serve HTTPS; with ``client_ca_file``, only clients with a certificate it signed (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class ReceiverConfig(_Strict):
    """Limits and security of ``POST /api/v1/write``.

    Each limit is checked before the work it protects (sizes before reading or decompressing,
    counts while decoding); a breach is answered with a 4xx and a one-line reason.
    """

    max_request_bytes: ByteSize = Field(32 * 1024 * 1024, gt=0)
    max_decompressed_bytes: ByteSize = Field(128 * 1024 * 1024, gt=0)
    max_series_per_request: int = Field(200_000, gt=0)
    # Samples + histograms in one request (413 above it). Prometheus sends at most
    # max_samples_per_send (2000 by default) per request; this bounds the memory and event-loop
    # time one small, highly compressible request can cost (a converting destination included).
    max_samples_per_request: int = Field(1_000_000, gt=0)
    max_labels_per_series: int = Field(128, gt=0)
    max_label_name_length: int = Field(1024, gt=0)
    max_label_value_length: int = Field(4096, gt=0)
    read_timeout: Duration = 30.0  # whole body; a slower sender gets 408
    max_concurrent_requests: int = Field(64, gt=0)  # beyond it: 503, retry later
    # Connection bounds (connections.py), per process. A new connection, and a kept-alive one
    # from the first byte of its next request, must send a whole request head within
    # header_timeout (Go's ReadHeaderTimeout). An idle kept-alive connection is closed after
    # idle_timeout: above the 5m of Prometheus' client (prometheus/common), so the client closes
    # first and never sends on a connection the relay is closing.
    header_timeout: Duration = Field(10.0, gt=0)
    idle_timeout: Duration = Field(310.0, gt=0)
    # Open connections at once; 0: sized from the file-descriptor limit (raised to the hard
    # limit at start), leaving room for the destinations, the spool and the probes. At the cap
    # a new connection first takes the place of an idle one, else it is closed at once.
    max_connections: int = Field(0, ge=0)
    # A body must keep coming at min_body_rate bytes/s on average once min_body_rate_grace has
    # passed (as Apache's mod_reqtimeout MinRate), else 408 and the connection is closed: slow
    # uploads cannot hold the write slots for all of read_timeout. 0: off.
    min_body_rate: int = Field(500, ge=0)
    min_body_rate_grace: Duration = Field(5.0, ge=0)
    # full (default): every remote write 1.0 request is checked as strictly as Prometheus 3 and
    # Mimir check it (protobuf, UTF-8, label names unique and non-empty, __name__, the limits
    # above; unsorted label sets are sorted, not refused), in one compiled pass at about the
    # speed of the framing check, and still forwarded as the bytes that came where it can be.
    # framing: an explicit opt-out nobody needs for speed: only the protobuf framing and the
    # counts are checked, other label sets are left to the destinations to judge. Remote
    # write 2.0 requests are always decoded in full. See docs/performance.md.
    validation: Literal["full", "framing"] = "full"
    auth: IngressAuth | None = None
    tls: IngressTLS | None = None
    # Processes that take connections on the listen address (SO_REUSEPORT). 1: one process, as
    # always. N > 1: the serve process keeps all state (Flux rules, queues, senders, spool,
    # federate, telemetry) and starts N-1 ingest workers that read, decompress and scan remote
    # write 1.0 requests and hand them to it for admission; everything else they pass on to it.
    # Changes with a restart only. See docs/scaling.md.
    workers: int = Field(1, ge=1, le=64)


class QueuesConfig(_Strict):
    """Bounds shared by all destinations' in-memory queues."""

    memory_budget_bytes: ByteSize = Field(256 * 1024 * 1024, gt=0)


class SpoolConfig(_Strict):
    """A durable queue per destination in SQLite (WAL) under ``data_dir``; off when unset.

    With the spool on, a batch is committed for every destination before the sender hears
    2xx, and the relay resumes from it after a restart or a crash.
    """

    data_dir: str | None = None
    max_bytes: ByteSize = Field(1024 * 1024 * 1024, gt=0)  # per destination
    when_full: Literal["backpressure", "drop_oldest"] = "backpressure"
    synchronous: Literal["full", "normal"] = "full"  # normal: survives a crash, not power loss


class FederateConfig(_Strict):
    """The embedded destination that keeps the latest sample of matching series for scraping."""

    enabled: bool = True
    match: list[str] = Field(default_factory=lambda: ['{__name__=~"gotk_.*"}'])
    max_series: int = Field(100000, gt=0)
    # GET /federate bounds: requests rendered at once (beyond: 503), match[] selectors in one
    # request (beyond: 400), and the time one may take (beyond: 503). Rendering runs in a thread
    # from a snapshot, off the write path's event loop.
    max_concurrent_requests: int = Field(4, gt=0)
    max_selectors: int = Field(64, gt=0)
    timeout: Duration = Field(10.0, gt=0)

    @field_validator("match")
    @classmethod
    def _selectors(cls, value: list[str]) -> list[str]:
        from .selectors import parse_selector

        for selector in value:
            parse_selector(selector)
        return value


class Config(_Strict):
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    queues: QueuesConfig = Field(default_factory=QueuesConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    flux: FluxConfig = Field(default_factory=FluxConfig)
    federate: FederateConfig = Field(default_factory=FederateConfig)
    remote_write: list[RemoteWriteConfig] = Field(default_factory=list)
    datadog: list[DatadogConfig] = Field(default_factory=list)
    otlp: list[OTLPConfig] = Field(default_factory=list)

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


QueuedDestinationConfig = RemoteWriteConfig | DatadogConfig | OTLPConfig


def destination_name(index: int, url: str) -> str:
    """A stable default name when the user gave none: what logs and metric labels show."""
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return f"{index}:{host}"


def sanitize_url(url: str) -> str:
    """The URL without user info or query, so no secret reaches a log line or a label."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"unable to read secret file {path}: {exc.strerror}") from exc


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")


class Expanded(NamedTuple):
    """A string value that held ``${VAR}``: as written, as expanded, and the variables' values."""

    written: str
    value: str
    variables: tuple[tuple[str, str], ...]  # (name, value)


def expand_env(
    node: Any,
    environ: Mapping[str, str],
    where: str = "",
    found: dict[tuple[str | int, ...], Expanded] | None = None,
    path: tuple[str | int, ...] = (),
) -> Any:
    """Replace ``${VAR}`` in every string value; ``$$`` is a literal ``$``.

    A variable that is not set is an error rather than an empty string, since an empty password
    or URL fails later and far from its cause. ``found`` collects, by location, every value that
    came from the environment, so that no error message shows it.
    """
    if isinstance(node, str):
        used: list[tuple[str, str]] = []

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in environ:
                raise ConfigError(
                    f"{where or 'config'}: environment variable ${{{name}}} is not set"
                )
            used.append((name, environ[name]))
            return environ[name]

        if "$" not in node:
            return node
        value = _ENV.sub(sub, node)
        if used and found is not None:
            found[path] = Expanded(node, value, tuple(used))
        return value
    if isinstance(node, list):
        return [
            expand_env(item, environ, f"{where}[{i}]", found, (*path, i))
            for i, item in enumerate(node)
        ]
    if isinstance(node, dict):
        return {
            key: expand_env(
                value, environ, f"{where}.{key}" if where else str(key), found, (*path, key)
            )
            for key, value in node.items()
        }
    return node


def referenced_files(node: object, where: str = "") -> list[tuple[str, str]]:
    """(key, path) of every ``*_file`` the configuration names (secrets, TLS files), in order."""
    found: list[tuple[str, str]] = []
    if isinstance(node, BaseModel):
        for key in type(node).model_fields:
            value = getattr(node, key)
            at = f"{where}.{key}" if where else key
            if key.endswith("_file") and isinstance(value, str) and value:
                found.append((at, value))
            else:
                found.extend(referenced_files(value, at))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(referenced_files(item, f"{where}[{index}]"))
    return found


def destination_names(config: Config) -> list[str]:
    return [name for _, name, _ in config.destinations()]


def load(path: str | Path | None) -> Config:
    """The configuration in ``path``, or the embedded default when there is none."""
    if path:
        return load_file(path)
    return load_text(default_config_text(), "<embedded default>")


def default_config_text() -> str:
    return resources.files("gotk_relay").joinpath("default.yml").read_text(encoding="utf-8")


def load_file(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"couldn't load configuration (--config={path}): {exc.strerror}") from exc
    return load_text(text, str(path), environ)


def load_text(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate; every error message starts with ``source`` and, when known, the line."""
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: invalid YAML: {problem}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the configuration must be a YAML mapping, got {type(raw).__name__}"
        )
    from_env: dict[tuple[str | int, ...], Expanded] = {}
    try:
        expanded = expand_env(raw, os.environ if environ is None else environ, found=from_env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, root, from_env)) from exc
    except ConfigError as exc:  # a validator that reads something (e.g. a rules file)
        raise ConfigError(_redact(f"{source}: {exc}", list(from_env.values()))) from exc


def _describe(
    exc: ValidationError,
    source: str,
    root: yaml.Node | None,
    from_env: Mapping[tuple[str | int, ...], Expanded] | None = None,
) -> str:
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_pydantic_tag(part)]
        key = _format_loc(loc)
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            hint = _PROMETHEUS_KEYS.get(str(loc[-1]), "check its spelling")
            message = f"field {loc[-1]} not found in type {_parent_name(loc)} ({hint})"
        if from_env:
            # A validator may quote the value it refuses: never one that came from ${ENV}.
            near = [e for path, e in from_env.items() if _related(tuple(loc), path)]
            message = _redact(message, near, list(from_env.values()))
        lines.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
    return "\n".join(lines)


# Keys of Prometheus' remote_write (http_config) that gotk-relay does not take, with what to
# write instead: refused rather than accepted and ignored.
_PROMETHEUS_KEYS: Final = {
    "bearer_token": "use authorization: {credentials: ...} instead",
    "bearer_token_file": "use authorization: {credentials_file: ...} instead",
    "http_headers": "use headers: {Name: value} instead",
    "no_proxy": "not supported by gotk-relay: only proxy_url",
    "proxy_from_environment": "not supported by gotk-relay: set proxy_url",
    "proxy_connect_header": "not supported by gotk-relay",
    "username_file": "not supported by gotk-relay: set username",
}


def _related(loc: tuple[Any, ...], path: tuple[str | int, ...]) -> bool:
    """The error at ``loc`` is about the value at ``path``, or about a block holding it."""
    return loc[: len(path)] == path or path[: len(loc)] == loc


def _redact(message: str, near: list[Expanded], everywhere: list[Expanded] | None = None) -> str:
    """``message`` with every value that came from ``${ENV}`` shown as written (``${VAR}``).

    Values are replaced whole, and as a URL without user info and query (how URLs are quoted);
    if a variable's value still shows in an error about its own location (a validator quoted
    a part of it), the message is replaced by one that names the variables only.
    """
    pairs: dict[str, str] = {}
    for item in (*near, *(everywhere or ())):
        for value, written in (
            (item.value, item.written),
            (item.value.strip(), item.written.strip()),
            (_safe_sanitize(item.value), _safe_sanitize(item.written)),
        ):
            if value and value != written:
                pairs.setdefault(value, written)
    for value in sorted(pairs, key=len, reverse=True):
        if len(value) >= 3:
            message = message.replace(value, pairs[value])
        else:  # "1" or "h" would also match inside other words: only where it is quoted
            message = message.replace(f'"{value}"', f'"{pairs[value]}"')
    for item in near:
        for _, value in item.variables:
            # Shorter values are not secrets worth a vaguer message ("1", "h").
            if len(value) >= 3 and value in message:
                names = ", ".join(sorted({f"${{{n}}}" for n, _ in item.variables}))
                return f"invalid value (from {names}; the value is not shown)"
    return message


def _safe_sanitize(url: str) -> str:
    try:
        return sanitize_url(url)
    except ValueError:
        return url


def _is_pydantic_tag(part: object) -> bool:
    # Literal / union branches show up in locations as e.g. 'literal[...]'; they name no key.
    return isinstance(part, str) and ("[" in part and part.endswith("]") and not part[0].isdigit())


def _parent_name(loc: list[Any]) -> str:
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    return parents[-1] if parents else "config"


def _format_loc(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """Line (1-based) of the deepest YAML node the error location reaches."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if node is None:
                break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line
