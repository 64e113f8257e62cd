"""A destination's ``tls_config`` files followed as they change, as Prometheus follows them
(prometheus/common reads ``ca_file``, ``cert_file`` and ``key_file`` again when they change):
a rotated CA is trusted from the next request, without a reload or a restart, and files that do
not load leave the last good ones in use. A real HTTPS server (aiohttp, certificates made by
openssl) that closes each connection, so that every request makes a new handshake."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gotk_relay.config import TLSConfig
from gotk_relay.destinations.http import HTTPEndpoint
from gotk_relay.errors import SendError
from tests.support.rig import HOST, free_port

_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Authority:
    ca: Path
    cert: Path  # a server certificate for 127.0.0.1 it signed
    key: Path


def _authority(d: Path, name: str) -> Authority:
    ca, ca_key = d / f"{name}-ca.pem", d / f"{name}-ca.key"
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", ca_key, "-out", ca, "-days", "1",
        "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl("req", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext,
    )  # fmt: skip
    return Authority(ca, cert, key)


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    d = tmp_path_factory.mktemp("pki")
    return _authority(d, "old"), _authority(d, "new")


@dataclass
class Server:
    url: str
    context: ssl.SSLContext  # its certificate can be changed for the next handshakes


@pytest.fixture
async def server(authorities: tuple[Authority, Authority]) -> AsyncIterator[Server]:
    old, _ = authorities
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(old.cert, old.key)

    async def write(request: web.Request) -> web.Response:
        await request.read()
        response = web.Response(status=204)
        response.force_close()  # a new connection, so a new handshake, for every request
        return response

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port, ssl_context=context).start()
    try:
        yield Server(f"https://{HOST}:{port}/api/v1/write", context)
    finally:
        await runner.cleanup()


def _replace(content: bytes, target: Path) -> None:
    """``content`` at ``target`` in one step, as a Secret volume update puts it."""
    staged = target.with_suffix(".new")
    staged.write_bytes(content)
    os.replace(staged, target)


async def test_a_rotated_ca_file_is_trusted_from_the_next_request(
    tmp_path: Path,
    authorities: tuple[Authority, Authority],
    server: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = authorities
    trust = tmp_path / "ca.pem"
    _replace(old.ca.read_bytes(), trust)
    endpoint = HTTPEndpoint(server.url, TLSConfig(ca_file=str(trust)), 10.0)
    try:
        assert (await endpoint.post(b"", {})).status == 204
        server.context.load_cert_chain(new.cert, new.key)  # the server's certificate renewed
        with pytest.raises(SendError, match="certificate verify failed"):
            await endpoint.post(b"", {})
        _replace(new.ca.read_bytes(), trust)  # then the CA the relay trusts
        assert (await endpoint.post(b"", {})).status == 204
        # A file that does not load (a rotation half done): the last good CA stays in use,
        # and that is logged once, not at every request.
        _replace(b"not a certificate\n", trust)
        with caplog.at_level(logging.WARNING, logger="gotk_relay.destinations"):
            for _ in range(3):
                assert (await endpoint.post(b"", {})).status == 204
        unusable = [r for r in caplog.records if "cannot be used" in r.getMessage()]
        assert len(unusable) == 1
        _replace(new.ca.read_bytes(), trust)
        assert (await endpoint.post(b"", {})).status == 204
    finally:
        await endpoint.close()
