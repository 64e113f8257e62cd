"""The ``receiver:`` section: limits and security of ``POST /api/v1/write``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..units import ByteSize, Duration
from .base import Strict


class IngressBasicAuth(Strict):
    username: str
    password_file: str


class IngressAuth(Strict):
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


class IngressTLS(Strict):
    """Serve HTTPS; with ``client_ca_file``, only clients with a certificate it signed (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class ReceiverConfig(Strict):
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
    read_timeout: Duration = 30.0  # whole body; a slower sender gets 503 (it retries)
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
    # passed (as Apache's mod_reqtimeout MinRate), else 503 and the connection is closed: slow
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
    # When a write is answered. queued (default): once it is queued for every destination (or
    # committed to the spool). delivered: once every destination that got a part of it accepted
    # that part (2xx; a 4xx refusal is dropped and counted as in queued), without retries: the
    # first retryable failure is answered 503, and the sender resends. Then the sender's next
    # batch of a shard follows the previous one into the backend, whichever replica behind a
    # balancer takes it, and nothing a replica acknowledged is held only by it. Needs
    # flux.mode: off and no spool (the config refuses the others). See docs/scaling.md.
    acknowledge: Literal["queued", "delivered"] = "queued"
    # delivered: the longest a write waits for its destinations before it is answered 503
    # (Prometheus' remote_timeout is 30s too: a longer wait would answer a sender gone).
    acknowledge_timeout: Duration = Field(30.0, gt=0)
