"""How the relay reaches a destination over HTTP, as Prometheus' ``http_config`` says it: basic
auth, authorization, TLS, URLs and headers; secrets read from their ``*_file``; URLs shown
without the parts that may hold credentials.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, SecretStr, field_validator, model_validator

from .base import ConfigError, Strict


class BasicAuth(Strict):
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


class Authorization(Strict):
    type: str = "Bearer"
    credentials: SecretStr | None = None
    credentials_file: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        # As prometheus/common's HTTPClientConfig.Validate: the type is trimmed, and an empty
        # one is Bearer (so ``type: ""`` sends "Bearer <credentials>", not " <credentials>").
        return value.strip() or "Bearer"

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


class TLSConfig(Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    # Prometheus' names; unset: Python's default floor (TLS 1.2) and the newest version.
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls_config: cert_file and key_file must be configured together")
        if self.min_version and self.max_version and self.min_version > self.max_version:
            raise ValueError(
                f"tls_config: max_version {self.max_version} is lower than min_version "
                f"{self.min_version}"
            )
        return self


# Prometheus' reservedHeaders (prometheus/prometheus config/config.go), compared lowercased as
# there. Authorization is refused separately, as there, with its own message.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-encoding",
        "content-length",
        "content-type",
        "user-agent",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "www-authenticate",
        "accept-encoding",
        "x-prometheus-remote-write-version",
        "x-prometheus-remote-read-version",
        # Added by SigV4.
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
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


# An HTTP field name (RFC 9110's token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_headers(value: dict[str, str]) -> dict[str, str]:
    """Prometheus' validateHeaders (config/config.go), with its messages; its Authorization
    message names the parameters gotk-relay supports (oauth2, sigv4, azuread and google_iam
    are refused)."""
    for key, text in value.items():
        if not _TOKEN.fullmatch(key):
            # Go's client refuses to send such a header; a receiver would refuse the request.
            raise ValueError(
                f"invalid header name {key!r}: letters, digits and !#$%&'*+-.^_`|~ only"
            )
        if "\r" in text or "\n" in text or "\0" in text:
            raise ValueError(f"header {key}: a value cannot hold a line break or NUL")
        if key.lower() == "authorization":
            raise ValueError(
                "authorization header must be changed via the basic_auth or authorization parameter"
            )
        if key.lower() in RESERVED_HEADERS:
            raise ValueError(f"{key} is a reserved header. It must not be changed")
    return value


URL = Annotated[str, AfterValidator(check_url)]
Headers = Annotated[dict[str, str], AfterValidator(check_headers)]


def sanitize_url(url: str) -> str:
    """The URL without user info or query, so no secret reaches a log line or a label."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


FileStamp = tuple[int, int, int] | None  # (inode, size, mtime in ns); None: unreadable


def file_stamp(path: str) -> FileStamp:
    """What tells a rewritten file from the one read: a Secret volume update replaces the file
    (a new inode), an editor or cert-manager may rewrite it in place (size, mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"unable to read secret file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not UTF-8 text") from None
