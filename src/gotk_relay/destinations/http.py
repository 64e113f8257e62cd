"""The HTTP side every destination shares: one connection pool per destination, TLS from its
``tls_config`` (its files followed as they change), its ``remote_timeout``, auth headers from
secret files, and transport failures turned into ``SendError`` (always retried) in exactly one
place.
"""

from __future__ import annotations

import base64
import logging
import random
import socket
import ssl
import time
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from .. import __version__
from ..config import (
    Authorization,
    BasicAuth,
    ConfigError,
    FileStamp,
    TLSConfig,
    file_stamp,
    sanitize_url,
)
from ..errors import SendError
from .tls import client_ssl_context

USER_AGENT = f"gotk-relay/{__version__}"
log = logging.getLogger("gotk_relay.destinations")


class Answer(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes  # at most the ``read_limit`` asked for


def one_line(body: bytes) -> str:
    """A response body fit for one log line or a drop reason's detail."""
    return body.decode("utf-8", "replace").strip().replace("\n", " ")[:512]


def basic(username: str, password: str) -> str:
    """An ``Authorization`` value for HTTP Basic auth, UTF-8 as Go's ``SetBasicAuth``."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def auth_headers(
    basic_auth: BasicAuth | None, authorization: Authorization | None
) -> dict[str, str]:
    """Secret files are read on every call, as Prometheus does, so a rotated token is used
    without a reload. A file that cannot be read (a Secret being rotated) is a ``SendError``:
    the send is retried with backoff, and the destination shows as failing until it can."""
    try:
        if basic_auth is not None:
            return {"Authorization": basic(basic_auth.username, basic_auth.resolve_password())}
        if authorization is not None:
            credentials = authorization.resolve_credentials()
            return {"Authorization": f"{authorization.type} {credentials}"}
    except ConfigError as exc:
        raise SendError("credentials_file", str(exc)) from None
    return {}


def url_auth(url: str) -> str | None:
    """The Basic auth Go's ``http.Client`` sends for a URL's user info (``user:pass@``), or
    None without one: the user info percent-decoded, split at its first colon, as
    ``net/url`` does; an empty ``@`` is an empty user, as there."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return None
    username, _, password = netloc.rpartition("@")[0].partition(":")
    return basic(unquote(username), unquote(password))


class RandomAddress(AbstractResolver):
    """``round_robin_dns``, as Prometheus' remote write dials (storage/remote/dial_context.go):
    each new connection looks the host up and connects to one of its addresses, chosen at
    random, rather than to the first that answers; a lookup that fails fails the connection."""

    def __init__(self) -> None:
        self._lookup = aiohttp.ThreadedResolver()  # getaddrinfo, as Go's resolver reads hosts
        self._random = random.Random()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._lookup.resolve(host, port, family)
        return [self._random.choice(found)] if found else found

    async def close(self) -> None:
        await self._lookup.close()


class HTTPEndpoint:
    def __init__(
        self,
        url: str,
        tls: TLSConfig,
        timeout: float,
        *,
        proxy: str | None = None,
        follow_redirects: bool = True,
        round_robin_dns: bool = False,
    ) -> None:
        self.url = url
        self._round_robin_dns = round_robin_dns
        # As Prometheus: Go's http.Client turns the URL's user info into Basic auth before the
        # request reaches prometheus/common's basic_auth/authorization round-trippers, which
        # leave an Authorization already set alone; so the user info wins over them. The URL
        # is sent without it (aiohttp refuses user info beside an Authorization header).
        self._url_auth = url_auth(url)
        self._request_url = URL(url).with_user(None) if self._url_auth is not None else URL(url)
        self.timeout = timeout
        self._proxy = proxy
        self._follow = follow_redirects
        self._server_name = tls.server_name
        self._tls = tls
        self._tls_files = tuple(f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        self._tls_stamps = tuple(map(file_stamp, self._tls_files))
        # The stamps of changed files that did not load: logged once, not loaded again until
        # they change again (None: the files in use are the ones on disk).
        self._tls_refused: tuple[FileStamp, ...] | None = None
        self._ssl = client_ssl_context(url, tls)
        self._session: aiohttp.ClientSession | None = None
        # Sessions made with the TLS files before they changed, closed once their requests are
        # done (a remote_timeout after): (monotonic time to close, session).
        self._retired: list[tuple[float, aiohttp.ClientSession]] = []

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running event loop.
        if self._session is None or self._session.closed:
            # The host looked up for every new connection, as Go dials: aiohttp's DNS cache
            # would turn its addresses round for each connection, where Prometheus connects to
            # the first that answers (or, with round_robin_dns, to one at random).
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=0,
                use_dns_cache=False,
                resolver=RandomAddress() if self._round_robin_dns else None,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def _follow_tls_files(self) -> None:
        """Close the sessions retired by a change of TLS files, then follow the files."""
        now = time.monotonic()
        while self._retired and self._retired[0][0] <= now:
            await self._retired.pop(0)[1].close()
        self.tls_files_unusable()

    def tls_files_unusable(self) -> bool:
        """Whether the ``tls_config`` files on disk changed and cannot be used now (the
        previous ones stay in use): checked at each request and each scrape of ``/metrics``.

        As Prometheus (prometheus/common reads ``ca_file``, ``cert_file`` and ``key_file``
        again when they change): rotated files are used from the next request, on new
        connections; requests under way finish on the old ones. Files that do not load (a
        certificate renewed before its key) leave the last good ones in use, logged once, and
        are not loaded again until they change again."""
        if not self._tls_files:
            return False
        stamps = tuple(map(file_stamp, self._tls_files))
        if stamps == self._tls_stamps or stamps == self._tls_refused:
            return stamps == self._tls_refused
        try:
            context = client_ssl_context(self.url, self._tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            if self._tls_refused is None:
                log.warning(
                    "tls_config files changed but cannot be used; the previous ones stay in use "
                    "until they can (logged once until then)",
                    extra={"url": sanitize_url(self.url), "err": str(exc)[:300]},
                )
            self._tls_refused = stamps
            return True
        self._tls_stamps = stamps
        self._tls_refused = None
        self._ssl = context
        if self._session is not None:
            self._retired.append((time.monotonic() + self.timeout + 1, self._session))
            self._session = None
        log.info(
            "tls_config files changed; new connections use them",
            extra={"url": sanitize_url(self.url)},
        )
        return False

    async def post(self, body: bytes, headers: dict[str, str], read_limit: int = 1024) -> Answer:
        if self._tls_files:
            await self._follow_tls_files()
        if self._url_auth is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = self._url_auth
        try:
            async with self._session_now().post(
                self._request_url,
                data=body,
                headers=headers,
                proxy=self._proxy,
                allow_redirects=self._follow,
                server_hostname=self._server_name,
            ) as response:
                status, answered = response.status, CIMultiDict(response.headers)
                try:
                    raw = await response.content.read(read_limit)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    # The status decides, as in Prometheus: a body that stalls or breaks after
                    # it only loses what the log would have shown (a 2xx is not sent again).
                    raw = b""
                return Answer(status, answered, raw)
        except TimeoutError as exc:
            raise SendError("timeout", f"no answer within {self.timeout}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError("connect_error", str(exc)[:300]) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        while self._retired:
            await self._retired.pop(0)[1].close()
