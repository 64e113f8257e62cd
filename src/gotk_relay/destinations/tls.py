"""The TLS client context every HTTP destination builds from its ``tls_config``."""

from __future__ import annotations

import ssl

from ..config import TLSConfig


def client_ssl_context(url: str, tls: TLSConfig) -> ssl.SSLContext | bool:
    """Python's default verified context, adjusted by ``tls_config`` as Prometheus does.

    ``True`` (aiohttp's default verification) when nothing is configured for a plain or https
    URL; ``server_name`` is passed per request as ``server_hostname``, not set here.
    """
    if not url.startswith("https") and not tls.ca_file and not tls.cert_file:
        return True
    context = (
        ssl.create_default_context(cafile=tls.ca_file)
        if tls.ca_file
        else ssl.create_default_context()
    )
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        context.minimum_version = _VERSIONS[tls.min_version]
    if tls.max_version:
        context.maximum_version = _VERSIONS[tls.max_version]
    return context


# TLS 1.0 and 1.1 also need the system's OpenSSL to allow them (Debian's refuses them by its
# security level): a handshake that cannot agree fails and is retried as a connection error.
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
