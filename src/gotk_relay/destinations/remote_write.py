"""A Prometheus remote-write destination (v1 or v2), the client half of ``remote_write:``.

The sender decides *when* to send; this decides *what* goes on the wire and what the answer
means. A v2 destination that turns out to be v1-only (415, or a 2xx without the
``X-Prometheus-Remote-Write-*-Written`` headers the 2.0 spec requires) is switched to v1 for
the rest of its life and the same batch is sent again at once, as the spec allows.

``send_exemplars: false``, ``send_native_histograms: false`` and ``metadata_config.send: false``
are applied here, to the request about to be sent (``strip``): queues hold what was received,
shared by every destination, and the fast path never decodes it; only a destination that
leaves something out pays for decoding its own requests.
"""

from __future__ import annotations

import asyncio
import logging
import time

from multidict import CIMultiDict

from ..config import RemoteWriteConfig
from ..delivery.entry import Entry, request_body
from ..delivery.retry import Outcome, classify, parse_retry_after
from ..delivery.sender import SendResult
from ..errors import SendError
from ..model import Batch, Protocol
from ..wire import remote_pb2, rw1, rw2, snappy, write_v2_pb2
from .http import HTTPEndpoint, auth_headers, one_line

log = logging.getLogger("gotk_relay.remote_write")

# A request that holds nothing: no series, no metadata (1.0), or the symbols table alone (2.0).
_NOTHING = {Protocol.V1: snappy.compress(b""), Protocol.V2: snappy.compress(rw2.from_v1(b""))}
_WRITTEN = (
    "X-Prometheus-Remote-Write-Samples-Written",
    "X-Prometheus-Remote-Write-Histograms-Written",
    "X-Prometheus-Remote-Write-Exemplars-Written",
)


def protocol_headers(protobuf_message: Protocol) -> dict[str, str]:
    codec = rw2 if protobuf_message == Protocol.V2 else rw1
    return {
        "Content-Type": codec.CONTENT_TYPE,
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": codec.VERSION,
    }


def encode_request(batch: Batch, protobuf_message: Protocol) -> tuple[bytes, dict[str, str]]:
    """Compressed body and protocol headers for one request of ``batch``."""
    body = (rw2 if protobuf_message == Protocol.V2 else rw1).encode(batch)
    return snappy.compress(body), protocol_headers(protobuf_message)


def strip(
    body: bytes,
    protobuf_message: Protocol,
    *,
    exemplars: bool = True,
    histograms: bool = True,
    metadata: bool = True,
) -> tuple[bytes, int]:
    """``body`` (a compressed request) without what a destination is not to be sent: the
    exemplars, native histograms or metadata whose flag is False. Series left with nothing are
    left out. Returns the body (the same object when nothing was in it to leave out) and the
    number of native histogram points left out."""
    # The relay made this body from requests it validated: its own size is the only bound.
    raw = snappy.decompress(body, snappy.declared_length(body))
    request: remote_pb2.WriteRequest | write_v2_pb2.Request
    if protobuf_message == Protocol.V2:
        request = write_v2_pb2.Request.FromString(raw)
    else:
        request = remote_pb2.WriteRequest.FromString(raw)
    changed = False
    left_out = 0
    emptied = False
    per_series = not (exemplars and histograms) or (
        protobuf_message == Protocol.V2 and not metadata
    )
    # Only metadata off in 1.0: it is a field of the request, no series needs a look.
    for ts in request.timeseries if per_series else ():
        cleared = False
        if not exemplars and ts.exemplars:
            ts.ClearField("exemplars")
            cleared = True
        if not histograms and ts.histograms:
            left_out += len(ts.histograms)
            ts.ClearField("histograms")
            cleared = True
        if not metadata and isinstance(ts, write_v2_pb2.TimeSeries) and ts.HasField("metadata"):
            ts.ClearField("metadata")
            changed = True
        if cleared:
            changed = True
            emptied = emptied or not (ts.samples or ts.histograms or ts.exemplars)
    if not metadata and isinstance(request, remote_pb2.WriteRequest) and request.metadata:
        request.ClearField("metadata")
        changed = True
    if not changed:
        return body, 0
    if emptied:
        # Prometheus sends exemplars (and histograms) in series of their own, without samples:
        # such a series left empty is not sent at all.
        kept = [ts for ts in request.timeseries if ts.samples or ts.histograms or ts.exemplars]
        request.ClearField("timeseries")
        request.timeseries.extend(kept)
    if isinstance(request, write_v2_pb2.Request):
        _drop_unused_symbols(request)  # help texts and exemplar labels must not travel unused
    return snappy.compress(request.SerializeToString()), left_out


def _drop_unused_symbols(request: write_v2_pb2.Request) -> None:
    """Renumber a 2.0 request's symbol table to the strings its series still refer to."""
    symbols = request.symbols
    renumber: dict[int, int] = {0: 0}  # symbols[0] is always ""

    def new(ref: int) -> int:
        found = renumber.get(ref)
        if found is None:
            found = renumber[ref] = len(renumber)
        return found

    for ts in request.timeseries:
        ts.labels_refs[:] = [new(r) for r in ts.labels_refs]
        for ex in ts.exemplars:
            ex.labels_refs[:] = [new(r) for r in ex.labels_refs]
        if ts.HasField("metadata"):
            ts.metadata.help_ref = new(ts.metadata.help_ref)
            ts.metadata.unit_ref = new(ts.metadata.unit_ref)
    table = [""] * len(renumber)
    for old, ref in renumber.items():
        table[ref] = symbols[old]
    request.ClearField("symbols")
    request.symbols.extend(table)


class RemoteWriteClient:
    def __init__(self, name: str, cfg: RemoteWriteConfig) -> None:
        self.name = name
        self.cfg = cfg
        # Points a destination is not sent (its send_native_histograms: false), by reason: the
        # relay shows them as gotk_relay_samples_skipped_total; they count as forwarded too.
        self.skipped: dict[str, int] = {}
        if cfg.enable_http2:
            log.info(
                "enable_http2: the relay's HTTP client speaks HTTP/1.1 only; this destination "
                "is sent HTTP/1.1 requests (as Prometheus does when a server offers no h2)",
                extra={"destination": name},
            )
        self.protocol: Protocol = cfg.protobuf_message
        self.tenant = cfg.tenant  # the relay splits batches by it; entries carry the value
        self.http = HTTPEndpoint(
            cfg.url,
            cfg.tls_config,
            cfg.remote_timeout,
            proxy=cfg.proxy_url,
            follow_redirects=cfg.follow_redirects,
            round_robin_dns=cfg.round_robin_dns,
        )

    async def send(self, entries: list[Entry]) -> SendResult:
        while True:
            protocol = self.protocol
            body = request_body(entries, protocol)  # compressed
            if self.cfg.strips:
                body = await self._strip(body, protocol)
            if body == _NOTHING[protocol]:
                # An empty write received, or one the destination's flags left empty
                # (metadata with metadata_config.send off): as Prometheus, nothing is sent.
                return SendResult(Outcome.OK, "ok")
            headers = protocol_headers(protocol)
            if self.tenant is not None:  # the queue never merges entries of two tenants
                # An entry without a tenant was spooled before tenant routing was configured:
                # the default tenant's, or else the header the destination's headers set
                # (an empty one would override it, and name no tenant).
                tenant = entries[0].tenant or self.tenant.default
                if tenant:
                    headers[self.tenant.header] = tenant
            try:
                auth = auth_headers(self.cfg.basic_auth, self.cfg.authorization)
                status, response_headers, answer = await self.http.post(
                    body, {**self.cfg.headers, **auth, **headers}
                )
            except SendError as exc:
                return SendResult(Outcome.RETRY, exc.reason, detail=exc.detail)
            if protocol == Protocol.V2 and self._is_v1_only(status, response_headers):
                log.warning(
                    "destination does not speak remote write 2.0; switching it to "
                    "prometheus.WriteRequest and resending",
                    extra={"destination": self.name, "status": status},
                )
                self.protocol = Protocol.V1
                continue
            outcome = classify(status, retry_on_http_429=self.cfg.queue_config.retry_on_http_429)
            retry_after = parse_retry_after(response_headers.get("Retry-After"), time.time())
            reason = "ok" if outcome is Outcome.OK else f"http_{status}"
            detail = one_line(answer) if outcome is not Outcome.OK else ""
            return SendResult(outcome, reason, retry_after, detail)

    async def _strip(self, body: bytes, protocol: Protocol) -> bytes:
        # Every series is decoded, looked at and re-encoded: in a thread, so that the
        # event loop gets the GIL back every switch interval while a merged request is worked.
        body, left_out = await asyncio.to_thread(
            strip,
            body,
            protocol,
            exemplars=self.cfg.send_exemplars,
            histograms=self.cfg.send_native_histograms,
            # 2.0 always carries its metadata (as Prometheus); a destination switched to 1.0
            # (415) leaves it out as metadata_config.send says.
            metadata=self.cfg.metadata_config.send or protocol == Protocol.V2,
        )
        if left_out:
            reason = "send_native_histograms_false"
            self.skipped[reason] = self.skipped.get(reason, 0) + left_out
        return body

    @staticmethod
    def _is_v1_only(status: int, headers: CIMultiDict[str]) -> bool:
        if status == 415:
            return True
        return 200 <= status < 300 and not any(h in headers for h in _WRITTEN)

    def forget(self, entries: list[Entry]) -> None:
        """Nothing kept between retries: each send is the batch's bytes."""

    def tls_files_unusable(self) -> bool:
        return self.http.tls_files_unusable()

    async def close(self) -> None:
        await self.http.close()
