"""The HTTP side every destination shares: one connection pool per destination, TLS from its
``tls_config``, its ``remote_timeout``, auth headers from secret files, and transport failures
turned into ``SendError`` (always retried) in exactly one place.
"""

from __future__ import annotations

import base64
from typing import NamedTuple

import aiohttp
from multidict import CIMultiDict

from .. import __version__
from ..config import Authorization, BasicAuth, TLSConfig
from ..errors import SendError
from .tls import client_ssl_context

USER_AGENT = f"gotk-relay/{__version__}"


class Answer(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes  # at most the ``read_limit`` asked for


def one_line(body: bytes) -> str:
    """A response body fit for one log line or a drop reason's detail."""
    return body.decode("utf-8", "replace").strip().replace("\n", " ")[:512]


def auth_headers(
    basic_auth: BasicAuth | None, authorization: Authorization | None
) -> dict[str, str]:
    """Secret files are read on every call, as Prometheus does, so a rotated token is used
    without a reload."""
    if basic_auth is not None:
        token = f"{basic_auth.username}:{basic_auth.resolve_password()}"
        return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
    if authorization is not None:
        return {"Authorization": f"{authorization.type} {authorization.resolve_credentials()}"}
    return {}


class HTTPEndpoint:
    def __init__(
        self,
        url: str,
        tls: TLSConfig,
        timeout: float,
        *,
        proxy: str | None = None,
        follow_redirects: bool = True,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._proxy = proxy
        self._follow = follow_redirects
        self._server_name = tls.server_name
        self._ssl = client_ssl_context(url, tls)
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def post(self, body: bytes, headers: dict[str, str], read_limit: int = 1024) -> Answer:
        try:
            async with self._session_now().post(
                self.url,
                data=body,
                headers=headers,
                proxy=self._proxy,
                allow_redirects=self._follow,
                server_hostname=self._server_name,
            ) as response:
                raw = await response.content.read(read_limit)
                return Answer(response.status, CIMultiDict(response.headers), raw)
        except TimeoutError as exc:
            raise SendError("timeout", f"no answer within {self.timeout}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError("connect_error", str(exc)[:300]) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
