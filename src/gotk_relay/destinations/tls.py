"""The TLS client context every HTTP destination builds from its ``tls_config``."""

from __future__ import annotations

import ssl

from ..config import TLSConfig


def client_ssl_context(url: str, tls: TLSConfig) -> ssl.SSLContext | bool:
    """Python's default verified context, adjusted by ``tls_config`` as Prometheus does.

    ``True`` (aiohttp's default verification) when ``tls_config`` sets nothing the context
    holds; else the context, for every TLS connection the client opens, whatever the URL's
    scheme is spelt (``HTTPS://``) or wherever a redirect leads (an ``http://`` URL redirected
    to ``https``), as Go applies its ``TLSClientConfig``. ``server_name`` is passed per request
    as ``server_hostname``, not set here.
    """
    configured = (
        tls.ca_file
        or tls.cert_file
        or tls.insecure_skip_verify
        or tls.min_version
        or tls.max_version
    )
    if not configured:
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
