"""A Prometheus remote-write destination (v1 or v2), the client half of ``remote_write:``.

The sender decides *when* to send; this decides *what* goes on the wire and what the answer
means. A v2 destination that turns out to be v1-only (415, or a 2xx without the
``X-Prometheus-Remote-Write-*-Written`` headers the 2.0 spec requires) is switched to v1 for
the rest of its life and the same batch is sent again at once, as the spec allows.
"""

from __future__ import annotations

import base64
import logging
import time

import aiohttp
from multidict import CIMultiDict

from .. import __version__
from ..config import V1, V2, RemoteWriteConfig
from ..delivery.entry import Entry, request_body
from ..delivery.retry import Outcome, classify, parse_retry_after
from ..delivery.sender import SendResult
from ..errors import SendError
from ..model import Batch
from ..wire import rw1, rw2, snappy
from .tls import client_ssl_context

log = logging.getLogger("gotk_relay.remote_write")

USER_AGENT = f"gotk-relay/{__version__}"
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
        self._ssl = client_ssl_context(cfg.url, cfg.tls_config)
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.cfg.remote_timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        # Secret files are read per request, as Prometheus does, so a rotated token is picked
        # up without a reload.
        cfg = self.cfg
        if cfg.basic_auth is not None:
            token = f"{cfg.basic_auth.username}:{cfg.basic_auth.resolve_password()}"
            return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
        if cfg.authorization is not None:
            return {
                "Authorization": (
                    f"{cfg.authorization.type} {cfg.authorization.resolve_credentials()}"
                )
            }
        return {}

    async def send(self, entries: list[Entry]) -> SendResult:
        while True:
            protocol = self.protobuf_message
            body = snappy.compress(request_body(entries, protocol))
            headers = protocol_headers(protocol)
            if self.tenant is not None:  # the queue never merges entries of two tenants
                headers[self.tenant.header] = entries[0].tenant
            try:
                status, response_headers, text = await self._post(body, headers)
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
            return SendResult(outcome, reason, retry_after, text)

    @staticmethod
    def _is_v1_only(status: int, headers: CIMultiDict[str]) -> bool:
        if status == 415:
            return True
        return 200 <= status < 300 and not any(h in headers for h in _WRITTEN)

    async def _post(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int, CIMultiDict[str], str]:
        session = self._session_now()
        all_headers = {**self.cfg.headers, **self._auth_headers(), **headers}
        try:
            async with session.post(
                self.cfg.url,
                data=body,
                headers=all_headers,
                proxy=self.cfg.proxy_url,
                allow_redirects=self.cfg.follow_redirects,
            ) as response:
                text = ""
                if response.status >= 300:
                    raw = await response.content.read(1024)
                    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")[:512]
                else:
                    await response.read()
                return response.status, CIMultiDict(response.headers), text
        except TimeoutError as exc:
            raise SendError("timeout", f"no answer within {self.cfg.remote_timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise SendError("connect_error", str(exc)[:300]) from exc
        except OSError as exc:
            raise SendError("connect_error", str(exc)[:300]) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
