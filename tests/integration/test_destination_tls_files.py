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
from prometheus_client.parser import text_string_to_metric_families

from gotk_relay.config import TLSConfig
from gotk_relay.destinations.http import HTTPEndpoint
from gotk_relay.errors import SendError
from tests.support.harness import eventually, gauge_batch, relay_client, rw_body
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
    bodies: list[bytes]  # what it was written, in order


@pytest.fixture
async def server(authorities: tuple[Authority, Authority]) -> AsyncIterator[Server]:
    old, _ = authorities
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(old.cert, old.key)

    bodies: list[bytes] = []

    async def write(request: web.Request) -> web.Response:
        bodies.append(await request.read())
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
        yield Server(f"https://{HOST}:{port}/api/v1/write", context, bodies)
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
        assert endpoint.tls_files_unusable()
        _replace(new.ca.read_bytes(), trust)
        assert (await endpoint.post(b"", {})).status == 204
        assert not endpoint.tls_files_unusable()
    finally:
        await endpoint.close()


async def test_files_that_cannot_be_used_show_on_metrics_until_they_load(
    tmp_path: Path, authorities: tuple[Authority, Authority], server: Server
) -> None:
    """A rotation left half done is not silent: ``/metrics`` says so for that destination,
    checked at the scrape even while it sends nothing, and writes go on with the last good
    files; once the files load, the gauge is 0 again."""
    old, _ = authorities
    trust = tmp_path / "ca.pem"
    _replace(old.ca.read_bytes(), trust)
    fast = {"min_backoff": "10ms", "max_backoff": "50ms", "batch_send_deadline": "10ms"}
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {"name": "secure", "url": server.url, "tls_config": {"ca_file": str(trust)}},
            {"name": "other", "url": server.url, "tls_config": {"ca_file": str(old.ca)}},
        ],
    }
    for destination in config["remote_write"]:
        destination["queue_config"] = fast  # type: ignore[index]
    async with relay_client(config) as (client, _):

        async def unusable() -> dict[str, float]:
            text = await (await client.get("/metrics")).text()
            (family,) = [
                f
                for f in text_string_to_metric_families(text)
                if f.name == "gotk_relay_destination_tls_files_unusable"
            ]
            return {s.labels["destination"]: s.value for s in family.samples}

        async def written(value: float) -> None:
            body, headers = rw_body(gauge_batch(["up"], int(value)), False)
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204

        await written(1000)
        await eventually(lambda: len(server.bodies) == 2)
        assert await unusable() == {"secure": 0, "other": 0}
        _replace(b"not a certificate\n", trust)
        assert await unusable() == {"secure": 1, "other": 0}
        await written(2000)  # sent with the last good CA
        await eventually(lambda: len(server.bodies) == 4)
        assert await unusable() == {"secure": 1, "other": 0}  # until the files change again
        _replace(old.ca.read_bytes(), trust)
        assert await unusable() == {"secure": 0, "other": 0}


@pytest.mark.parametrize("way", ["upper-case-scheme", "redirected-from-http"])
async def test_tls_config_applies_to_every_tls_connection_whatever_the_url_says(
    server: Server, way: str
) -> None:
    """``insecure_skip_verify`` (the server's CA is not trusted here) holds for a URL whose
    scheme is spelt ``HTTPS://`` and for an ``http://`` URL redirected to ``https``, as Go's
    transport applies its TLS config to every TLS connection it opens. Before, both were
    verified against the system's CAs and failed as connection errors."""
    runner: web.AppRunner | None = None
    if way == "upper-case-scheme":
        url = server.url.replace("https://", "HTTPS://")
    else:

        async def moved(request: web.Request) -> web.Response:
            await request.read()
            raise web.HTTPTemporaryRedirect(server.url)

        app = web.Application()
        app.router.add_post("/api/v1/write", moved)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, HOST, port).start()
        url = f"http://{HOST}:{port}/api/v1/write"
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {
                "name": "d",
                "url": url,
                "tls_config": {"insecure_skip_verify": True},
                "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"},
            }
        ],
    }
    try:
        async with relay_client(config) as (client, _):
            body, headers = rw_body(gauge_batch(["up"], 1000))
            assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204
            await eventually(lambda: len(server.bodies) == 1)
    finally:
        if runner is not None:
            await runner.cleanup()
