"""Who may write, over what, and how much at once: ingress auth, TLS and the in-flight gate.

Everything here is off by default. Secrets come only from files; they are held as bytes, compared
in constant time, and never formatted into a log line, an error body or a metric. Errors name
the file and the configuration key, never the content.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn

from .config import (
    ConfigError,
    FileStamp,
    IngressAuth,
    IngressTLS,
    ReceiverConfig,
    file_stamp,
    read_secret_file,
)
from .telemetry import gauge
from .wire.labels import Limits

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("gotk_relay.access")

REALM: Final = "gotk-relay"


def limits_of(receiver: ReceiverConfig) -> Limits:
    """The codecs' view of the ``receiver.*`` limits.

    Asked twice per write request: the last answer is kept for the (frozen) config object it
    was made from, so a request builds none (≈5 µs each) until a reload brings a new one.
    """
    global _last_limits
    last = _last_limits
    if last is not None and last[0] is receiver:
        return last[1]
    limits = Limits(
        max_series=receiver.max_series_per_request,
        max_labels_per_series=receiver.max_labels_per_series,
        max_label_name_length=receiver.max_label_name_length,
        max_label_value_length=receiver.max_label_value_length,
        max_samples=receiver.max_samples_per_request,
        max_expanded_bytes=receiver.max_decompressed_bytes,
    )
    _last_limits = (receiver, limits)
    return limits


_last_limits: tuple[ReceiverConfig, Limits] | None = None


class InFlight:
    """Counts write requests being handled, so a burst beyond the limit is refused (503) at once
    instead of each holding a connection and a body in memory.

    No lock: the event loop runs one handler step at a time and ``enter`` does not await.
    """

    def __init__(self) -> None:
        self.active = 0

    def enter(self, limit: int) -> bool:
        if self.active >= limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not authenticated: the 401 body and its ``WWW-Authenticate`` header."""

    reason: str
    challenge: str


class _SecretFile:
    """A secret read from a file, re-read when the file's (mtime, size) changes.

    Re-reading lets a rotated Kubernetes Secret take effect without a reload. A file that is
    momentarily unreadable or empty (being rewritten) keeps the last good secret, and is logged
    once per change of the file rather than once per request.
    """

    def __init__(self, key: str, path: str) -> None:
        self.key = key  # the configuration key, for messages
        self.path = path
        self._stamp = file_stamp(path)
        self.value = _read_strict(key, path)

    def current(self) -> bytes:
        stamp = file_stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return self.value
        self._stamp = stamp
        try:
            value = read_secret_file(self.path)
        except ConfigError as exc:
            log.warning("keeping the previous secret", extra={"key": self.key, "err": str(exc)})
            return self.value
        if not value:
            log.warning(
                "secret file is empty; keeping the previous secret",
                extra={"key": self.key, "file": self.path},
            )
            return self.value
        self.value = value.encode("utf-8")
        return self.value


def _read_strict(key: str, path: str) -> bytes:
    try:
        value = read_secret_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if not value:
        # An empty secret would let ``Bearer `` (or an empty password) in.
        raise ConfigError(f"{key}: secret file {path} is empty")
    return value.encode("utf-8")


class Authenticator:
    """Checks the ``Authorization`` header of a request against ``receiver.auth``.

    Built when the app is, and ``configure``-d again on reload before the new configuration is
    swapped in, so an unreadable secret file fails the start or the reload (keeping the running
    configuration), not the first request.
    """

    def __init__(self, auth: IngressAuth | None = None) -> None:
        self._bearer: _SecretFile | None = None
        self._username = b""
        self._password: _SecretFile | None = None
        self.configure(auth)

    def configure(self, auth: IngressAuth | None) -> None:
        """Read the secret files now; raise ``ConfigError`` naming the file and change nothing
        when one is unreadable or empty."""
        bearer = password = None
        if auth is not None and auth.bearer_token_file:
            bearer = _SecretFile("receiver.auth.bearer_token_file", auth.bearer_token_file)
        if auth is not None and auth.basic_auth is not None:
            password = _SecretFile(
                "receiver.auth.basic_auth.password_file", auth.basic_auth.password_file
            )
        self._bearer, self._password = bearer, password
        self._username = auth.basic_auth.username.encode() if auth and auth.basic_auth else b""

    @property
    def scheme(self) -> str | None:
        """``Bearer``, ``Basic``, or None when writes need no credentials."""
        if self._bearer is not None:
            return "Bearer"
        if self._password is not None:
            return "Basic"
        return None

    def refusal(self, authorization: str | None) -> Refusal | None:
        """None when the request may proceed, else why not (never echoing what was sent)."""
        if self._bearer is not None:
            return self._check_bearer(self._bearer, authorization)
        if self._password is not None:
            return self._check_basic(self._password, authorization)
        return None

    def _check_bearer(self, secret: _SecretFile, authorization: str | None) -> Refusal | None:
        challenge = f'Bearer realm="{REALM}"'
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Refusal("authentication required: send Authorization: Bearer <token>", challenge)
        if not hmac.compare_digest(_bytes(token.strip()), secret.current()):
            return Refusal("invalid bearer token", challenge)
        return None

    def _check_basic(self, secret: _SecretFile, authorization: str | None) -> Refusal | None:
        challenge = f'Basic realm="{REALM}", charset="UTF-8"'
        scheme, _, encoded = (authorization or "").strip().partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return Refusal("authentication required: send HTTP basic auth credentials", challenge)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return Refusal("malformed basic auth credentials", challenge)
        username, sep, password = decoded.partition(b":")
        # Both comparisons always run, so the time taken does not tell which one failed.
        user_ok = hmac.compare_digest(username, self._username)
        password_ok = hmac.compare_digest(password, secret.current())
        if not (sep and user_ok and password_ok):
            return Refusal("invalid username or password", challenge)
        return None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


_TLS_VERSIONS: Final = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def server_ssl_context(tls: IngressTLS) -> ssl.SSLContext:
    """The context HTTPS is served with; ``ConfigError`` naming the key and file when unusable.

    With ``client_ca_file`` a client must present a certificate that CA signed: one without is
    refused during the handshake, before any HTTP is read.
    """
    files = {
        "receiver.tls.cert_file": tls.cert_file,
        "receiver.tls.key_file": tls.key_file,
        "receiver.tls.client_ca_file": tls.client_ca_file,
    }
    for key, path in files.items():
        if path:
            _check_readable(key, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]

    def no_passphrase() -> NoReturn:
        # Without a callback OpenSSL would prompt on the terminal for the key's passphrase.
        raise ConfigError(
            f"receiver.tls.key_file {tls.key_file}: the key is encrypted; "
            "gotk-relay needs an unencrypted key"
        )

    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"receiver.tls: cannot use certificate {tls.cert_file} with key {tls.key_file}: "
            f"{exc.reason or exc}"
        ) from exc
    if tls.client_ca_file:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"receiver.tls.client_ca_file {tls.client_ca_file}: no usable CA certificate: "
                f"{exc.reason or exc}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ServerTLS:
    """The HTTPS context of a listener, renewed from its files when they change on disk.

    cert-manager and the like replace the certificate and key files in place before the old
    certificate expires. As Prometheus' own web server does, the relay picks up new files at
    the next TLS handshake, with no reload and no restart: every ClientHello compares the
    files' (mtime, size) with those the serving context was built from, and builds a new one
    when they differ; connections already open keep theirs. Files that cannot be used (a key
    that does not match yet, a file being written) leave the previous certificate in service
    and are logged once per change. ``client_ca_file`` is re-read the same way; changing a
    path or ``min_version`` in the config still needs a restart (cli/serve.py says so on reload).
    """

    def __init__(self, tls: IngressTLS) -> None:
        self.tls = tls
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p)
        self._stamps = self._stamp_files()
        self.context = server_ssl_context(tls)  # the listener's; ConfigError when unusable
        self._serving = self.context
        self._refused: tuple[FileStamp, ...] | None = None
        # Called for every ClientHello, also one without SNI (a client dialling an IP address).
        self.context.sni_callback = self._on_client_hello

    def _stamp_files(self) -> tuple[FileStamp, ...]:
        return tuple(map(file_stamp, self._paths))

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        self.refresh()
        if self._serving is not self.context:
            connection.context = self._serving

    def files_unusable(self) -> bool:
        """Whether the files on disk changed and cannot be used now (the previous certificate
        stays in service): checked now, as a handshake would check them; for telemetry."""
        self.refresh()
        return self._refused is not None

    def refresh(self) -> ssl.SSLContext:
        """The context new connections get: a new one when the files changed and are usable."""
        stamps = self._stamp_files()
        if stamps == self._stamps or stamps == self._refused:
            return self._serving
        try:
            fresh = server_ssl_context(self.tls)
        except (ConfigError, OSError) as exc:  # OSError: a file gone between check and load
            self._refused = stamps
            log.error(
                "new TLS files are unusable; the previous certificate stays in service",
                extra={"err": str(exc)},
            )
            return self._serving
        self._serving, self._stamps, self._refused = fresh, stamps, None
        log.info(
            "TLS files changed; serving the new certificate", extra={"file": self.tls.cert_file}
        )
        return fresh


def listener_tls_metric(tls: ServerTLS | None) -> GaugeMetricFamily:
    """``gotk_relay_listener_tls_files_unusable`` (no sample without ``receiver.tls``), the
    files checked at each scrape: every process listening reads the same files, so the one
    scraped answers for all of them."""
    return gauge(
        "gotk_relay_listener_tls_files_unusable",
        "1 while receiver.tls files changed on disk and cannot be used (a key that does not "
        "match the certificate yet): the previous certificate stays in service until they load.",
        [],
        [([], int(tls.files_unusable()))] if tls is not None else [],
    )


def _check_readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{key} {path}: {exc.strerror}") from exc
