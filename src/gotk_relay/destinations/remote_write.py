"""A Prometheus remote-write destination (v1 or v2), the client half of ``remote_write:``.

The sender decides *when* to send; this decides *what* goes on the wire and what the answer
means. A v2 destination that turns out to be v1-only (415, or a 2xx without the
``X-Prometheus-Remote-Write-*-Written`` headers the 2.0 spec requires) is switched to v1 for
the rest of its life and the same batch is sent again at once, as the spec allows.
"""

from __future__ import annotations

import logging
import time

from multidict import CIMultiDict

from ..config import V1, V2, RemoteWriteConfig
from ..delivery.entry import Entry, request_body
from ..delivery.retry import Outcome, classify, parse_retry_after
from ..delivery.sender import SendResult
from ..errors import SendError
from ..model import Batch
from ..wire import rw1, rw2, snappy
from .http import HTTPEndpoint, auth_headers, one_line

log = logging.getLogger("gotk_relay.remote_write")

_WRITTEN = (
    "X-Prometheus-Remote-Write-Samples-Written",
    "X-Prometheus-Remote-Write-Histograms-Written",
    "X-Prometheus-Remote-Write-Exemplars-Written",
)


def protocol_headers(protobuf_message: str) -> dict[str, str]:
    codec = rw2 if protobuf_message == V2 else rw1
    return {
        "Content-Type": codec.CONTENT_TYPE,
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": codec.VERSION,
    }


def encode_request(batch: Batch, protobuf_message: str) -> tuple[bytes, dict[str, str]]:
    """Compressed body and protocol headers for one request of ``batch``."""
    body = (rw2 if protobuf_message == V2 else rw1).encode(batch)
    return snappy.compress(body), protocol_headers(protobuf_message)


class RemoteWriteClient:
    def __init__(self, name: str, cfg: RemoteWriteConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.protobuf_message: str = cfg.protobuf_message
        self.tenant = cfg.tenant  # the relay splits batches by it; entries carry the value
        self.http = HTTPEndpoint(
            cfg.url,
            cfg.tls_config,
            cfg.remote_timeout,
            proxy=cfg.proxy_url,
            follow_redirects=cfg.follow_redirects,
        )

    async def send(self, entries: list[Entry]) -> SendResult:
        while True:
            protocol = self.protobuf_message
            body = request_body(entries, protocol)  # compressed
            headers = protocol_headers(protocol)
            if self.tenant is not None:  # the queue never merges entries of two tenants
                headers[self.tenant.header] = entries[0].tenant
            try:
                auth = auth_headers(self.cfg.basic_auth, self.cfg.authorization)
                status, response_headers, answer = await self.http.post(
                    body, {**self.cfg.headers, **auth, **headers}
                )
            except SendError as exc:
                return SendResult(Outcome.RETRY, exc.reason, detail=exc.detail)
            if protocol == V2 and self._is_v1_only(status, response_headers):
                log.warning(
                    "destination does not speak remote write 2.0; switching it to "
                    "prometheus.WriteRequest and resending",
                    extra={"destination": self.name, "status": status},
                )
                self.protobuf_message = V1
                continue
            outcome = classify(status, retry_on_http_429=self.cfg.queue_config.retry_on_http_429)
            retry_after = parse_retry_after(response_headers.get("Retry-After"), time.time())
            reason = "ok" if outcome is Outcome.OK else f"http_{status}"
            detail = one_line(answer) if outcome is not Outcome.OK else ""
            return SendResult(outcome, reason, retry_after, detail)

    @staticmethod
    def _is_v1_only(status: int, headers: CIMultiDict[str]) -> bool:
        if status == 415:
            return True
        return 200 <= status < 300 and not any(h in headers for h in _WRITTEN)

    async def close(self) -> None:
        await self.http.close()
