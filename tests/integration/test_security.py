"""Ingress security: who may write (``receiver.auth``) and over what (``receiver.tls``).

Both are off by default. With ``receiver.auth``, the write endpoints, ``/federate`` and
``/-/reload`` answer 401 with a ``WWW-Authenticate`` challenge unless the request carries the
right credentials; ``/metrics``, ``/-/healthy`` and ``/-/ready`` stay open for scrapers and
probes. With ``receiver.tls`` the relay serves HTTPS only, and with ``client_ca_file`` it
refuses, during the TLS handshake, a client without a certificate that CA signed. Secrets are
read from files, never shown in logs, metrics or answers, and an unusable secret or certificate
stops the start (exit 1, one line naming the file) or the reload (the running one stays).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import yaml

from gotk_relay.access import Authenticator
from gotk_relay.config import ConfigError, IngressAuth
from tests.support.harness import (
    ScriptedReceiver,
    gauge_batch,
    metric_value,
    receivers,
    relay_client,
    rw_body,
)
from tests.support.rig import free_port

TOKEN = "tok-3f9a1c7e5b"
PASSWORD = "pw-8d2e6b0a4c"
USERNAME = "prometheus"
BEARER_CHALLENGE = 'Bearer realm="gotk-relay"'
BASIC_CHALLENGE = 'Basic realm="gotk-relay", charset="UTF-8"'


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")  # a trailing newline, as `echo` or a Secret mount leaves it
    return str(path)


def _bearer_config(tmp_path: Path) -> dict[str, object]:
    token_file = _secret(tmp_path, "token", TOKEN)
    return {"flux": {"mode": "off"}, "receiver": {"auth": {"bearer_token_file": token_file}}}


def _basic_config(tmp_path: Path) -> dict[str, object]:
    password_file = _secret(tmp_path, "password", PASSWORD)
    auth = {"basic_auth": {"username": USERNAME, "password_file": password_file}}
    return {"flux": {"mode": "off"}, "receiver": {"auth": auth}}


# ---- who may write --------------------------------------------------------------------------

BEARER_CASES = [
    ("no-credentials", None, 401),
    ("wrong-token", "Bearer not-the-token", 401),
    ("empty-token", "Bearer ", 401),
    ("basic-instead-of-bearer", _basic(USERNAME, TOKEN), 401),
    ("right-token", f"Bearer {TOKEN}", 204),
    ("scheme-in-lowercase", f"bearer {TOKEN}", 204),
]


@pytest.mark.parametrize(
    ("authorization", "status"),
    [c[1:] for c in BEARER_CASES],
    ids=[c[0] for c in BEARER_CASES],
)
async def test_bearer_token_auth(tmp_path: Path, authorization: str | None, status: int) -> None:
    body, headers = rw_body(gauge_batch(["up"], 1))
    if authorization is not None:
        headers["Authorization"] = authorization
    async with relay_client(_bearer_config(tmp_path)) as (client, _):
        response = await client.post("/api/v1/write", data=body, headers=headers)
        text = await response.text()
        assert response.status == status, text
        if status == 401:
            assert response.headers["WWW-Authenticate"] == BEARER_CHALLENGE
            assert text.count("\n") == 1
            metrics = await (await client.get("/metrics")).text()
            rejected = metric_value(
                metrics, "gotk_relay_rejected_requests_total", reason="unauthorized"
            )
            assert rejected == 1


BASIC_CASES = [
    ("no-credentials", None, 401),
    ("wrong-password", _basic(USERNAME, "not-the-password"), 401),
    ("wrong-username", _basic("someone-else", PASSWORD), 401),
    ("no-colon", "Basic " + base64.b64encode(PASSWORD.encode()).decode(), 401),
    ("not-base64", "Basic %%%", 401),
    ("bearer-instead-of-basic", f"Bearer {PASSWORD}", 401),
    ("right-credentials", _basic(USERNAME, PASSWORD), 204),
]


@pytest.mark.parametrize(
    ("authorization", "status"),
    [c[1:] for c in BASIC_CASES],
    ids=[c[0] for c in BASIC_CASES],
)
async def test_basic_auth(tmp_path: Path, authorization: str | None, status: int) -> None:
    body, headers = rw_body(gauge_batch(["up"], 1))
    if authorization is not None:
        headers["Authorization"] = authorization
    async with relay_client(_basic_config(tmp_path)) as (client, _):
        response = await client.post("/api/v1/write", data=body, headers=headers)
        text = await response.text()
        assert response.status == status, text
        if status == 401:
            assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
            assert text.count("\n") == 1


async def test_without_receiver_auth_writes_need_no_credentials() -> None:
    body, headers = rw_body(gauge_batch(["up"], 1))
    async with relay_client({"flux": {"mode": "off"}}) as (client, _):
        assert (await client.post("/api/v1/write", data=body, headers=headers)).status == 204


ENDPOINTS = [
    ("POST", "/api/v1/write", True),
    ("POST", "/api/v1/push", True),
    ("GET", "/federate", True),  # it serves what was written
    ("POST", "/-/reload", True),  # it changes what the relay does
    ("GET", "/metrics", False),  # the relay's own metrics, for its scraper
    ("GET", "/-/healthy", False),  # probes
    ("GET", "/-/ready", False),
]


@pytest.mark.parametrize(
    ("method", "path", "protected"),
    ENDPOINTS,
    ids=[f"{m} {p}" for m, p, _ in ENDPOINTS],
)
async def test_which_endpoints_need_credentials(
    tmp_path: Path, method: str, path: str, protected: bool
) -> None:
    async with relay_client(_bearer_config(tmp_path)) as (client, _):
        anonymous = await client.request(method, path)
        assert (anonymous.status == 401) is protected, await anonymous.text()
        signed = await client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert signed.status != 401


@pytest.mark.parametrize(
    ("config", "right", "wrong_guess"),
    [
        (_bearer_config, f"Bearer {TOKEN}", "Bearer guess-0c4d9e"),
        (_basic_config, _basic(USERNAME, PASSWORD), _basic(USERNAME, "guess-0c4d9e")),
    ],
    ids=["bearer", "basic"],
)
async def test_secrets_never_reach_logs_metrics_or_answers(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: Callable[[Path], dict[str, object]],
    right: str,
    wrong_guess: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    body, headers = rw_body(gauge_batch(["up"], 1))
    answers = []
    async with relay_client(config(tmp_path)) as (client, _):
        for authorization in (None, wrong_guess, right):
            sent = headers | ({"Authorization": authorization} if authorization else {})
            response = await client.post("/api/v1/write", data=body, headers=sent)
            answers.append(f"{response.headers} {await response.text()}")
        answers.append(await (await client.get("/metrics")).text())
    seen = "\n".join([*answers, caplog.text])
    for secret in (TOKEN, PASSWORD, "guess-0c4d9e", right.split()[1], wrong_guess.split()[1]):
        assert secret not in seen


async def test_a_rotated_secret_file_takes_effect_without_a_reload(tmp_path: Path) -> None:
    config = _bearer_config(tmp_path)
    body, headers = rw_body(gauge_batch(["up"], 1))
    async with relay_client(config) as (client, _):
        old = headers | {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/api/v1/write", data=body, headers=old)).status == 204
        _secret(tmp_path, "token", "a-longer-rotated-token")  # as a Secret update rewrites it
        new = headers | {"Authorization": "Bearer a-longer-rotated-token"}
        assert (await client.post("/api/v1/write", data=body, headers=new)).status == 204
        assert (await client.post("/api/v1/write", data=body, headers=old)).status == 401


@pytest.mark.parametrize("content", [None, ""], ids=["missing-file", "empty-file"])
def test_an_unusable_secret_file_is_refused_and_the_running_credentials_stay(
    tmp_path: Path, content: str | None
) -> None:
    authenticator = Authenticator(IngressAuth(bearer_token_file=_secret(tmp_path, "t", TOKEN)))
    bad = tmp_path / "bad-token"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(ConfigError) as info:
        authenticator.configure(IngressAuth(bearer_token_file=str(bad)))
    assert "receiver.auth.bearer_token_file: " in str(info.value)
    assert str(bad) in str(info.value)
    assert authenticator.refusal(f"Bearer {TOKEN}") is None


# ---- the real command: reload, HTTPS, mTLS, start-up errors ---------------------------------


def _serve_command(config: Path, port: int, *flags: str) -> list[str]:
    serve = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(config)]
    return [*serve, "--listen-address", f"127.0.0.1:{port}", *flags]


@dataclass
class Served:
    port: int
    config: Path
    log: Path


@contextmanager
def _serving(tmp_path: Path, config: dict[str, object], *flags: str) -> Iterator[Served]:
    """``gotk-relay serve`` on ``config`` until the test is done (SIGTERM, exit 0)."""
    served = Served(free_port(), tmp_path / "relay.yml", tmp_path / "relay.log")
    served.config.write_text(yaml.safe_dump(config))
    with served.log.open("w") as log:
        proc = subprocess.Popen(
            _serve_command(served.config, served.port, *flags),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while 'msg="gotk-relay started"' not in served.log.read_text():
                assert proc.poll() is None, served.log.read_text()
                assert time.monotonic() < deadline, "relay did not start"
                time.sleep(0.05)
            yield served
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=15) == 0, served.log.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()


def _request(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str | None = None,
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _write(
    base: str, authorization: str | None = None, context: ssl.SSLContext | None = None
) -> int:
    body, headers = rw_body(gauge_batch(["up"], 1))
    if authorization is not None:
        headers["Authorization"] = authorization
    return _request(base + "/api/v1/write", data=body, headers=headers, context=context)[0]


def test_reload_rereads_the_secret_files_and_keeps_them_on_error(tmp_path: Path) -> None:
    config = _bearer_config(tmp_path)
    with _serving(tmp_path, config, "--web.enable-lifecycle") as served:
        base = f"http://127.0.0.1:{served.port}"
        old = f"Bearer {TOKEN}"
        assert _write(base, old) == 204

        # A reload onto a missing token file fails, naming it; the running token stays.
        missing = tmp_path / "no-such-token"
        config["receiver"] = {"auth": {"bearer_token_file": str(missing)}}
        served.config.write_text(yaml.safe_dump(config))
        status, text = _request(base + "/-/reload", method="POST", headers={"Authorization": old})
        assert status == 500 and str(missing) in text
        assert _write(base, old) == 204

        # A reload onto a new token file switches to it.
        new_file = _secret(tmp_path, "new-token", "tok-rotated-by-reload")
        config["receiver"] = {"auth": {"bearer_token_file": new_file}}
        served.config.write_text(yaml.safe_dump(config))
        status, text = _request(base + "/-/reload", method="POST", headers={"Authorization": old})
        assert status == 200, text
        assert _write(base, "Bearer tok-rotated-by-reload") == 204
        assert _write(base, old) == 401

        checked = subprocess.run(
            [sys.executable, "-m", "gotk_relay", "check-config", str(served.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0
    shown = served.log.read_text() + checked.stdout + checked.stderr
    assert TOKEN not in shown and "tok-rotated-by-reload" not in shown


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _issue(ca_dir: Path, out: Path, name: str, extensions: Path) -> tuple[Path, Path]:
    """A new key and a certificate ``CN=name`` with ``extensions``, signed by the CA in ``ca_dir``."""
    key, csr, cert = out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem"
    _openssl("req", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca_dir / "ca.pem", "-CAkey", ca_dir / "ca.key",
        "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", extensions,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for IP 127.0.0.1 and a client certificate, made by openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1",
        "-subj", "/CN=gotk-relay test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for who, ext in extensions.items():
        (d / f"{who}.ext").write_text(ext + "authorityKeyIdentifier=keyid,issuer\n")
        _issue(d, d, who, d / f"{who}.ext")
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return Pki(*(str(d / name) for name in names))


def _tls_config(pki: Pki, **tls: str) -> dict[str, object]:
    settings = {"cert_file": pki.server_cert, "key_file": pki.server_key, **tls}
    return {"flux": {"mode": "off"}, "receiver": {"tls": settings}}


def _client(
    pki: Pki, *, certificate: bool = False, tls: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """An HTTPS client trusting the test CA; with ``certificate``, presenting the client one."""
    context = ssl.create_default_context(cafile=pki.ca)
    if certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    if tls is not None:
        context.minimum_version = context.maximum_version = tls
    return context


def test_with_tls_the_relay_speaks_only_https(tmp_path: Path, pki: Pki) -> None:
    with _serving(tmp_path, _tls_config(pki)) as served:
        with pytest.raises(OSError):  # the relay hangs up on plain HTTP
            _request(f"http://127.0.0.1:{served.port}/-/healthy")
        base = f"https://127.0.0.1:{served.port}"
        with pytest.raises(urllib.error.URLError) as untrusted:  # a client not trusting the CA
            _request(base + "/-/healthy", context=ssl.create_default_context())
        assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
        assert _request(base + "/-/healthy", context=_client(pki))[0] == 200
        assert _write(base, context=_client(pki)) == 204


def test_with_client_ca_file_a_client_needs_a_certificate(tmp_path: Path, pki: Pki) -> None:
    with _serving(tmp_path, _tls_config(pki, client_ca_file=pki.ca)) as served:
        base = f"https://127.0.0.1:{served.port}"
        # TLS 1.2: refused during the handshake itself.
        with pytest.raises(ssl.SSLError):
            _handshake(served.port, _client(pki, tls=ssl.TLSVersion.TLSv1_2))
        # TLS 1.3 sends the client's certificate after the client considers the handshake done:
        # the refusal arrives as a closed connection, before any HTTP answer.
        with pytest.raises(OSError):
            _request(base + "/-/healthy", context=_client(pki, tls=ssl.TLSVersion.TLSv1_3))
        assert _write(base, context=_client(pki, certificate=True)) == 204


def test_min_version_tls13_refuses_a_tls12_client(tmp_path: Path, pki: Pki) -> None:
    with _serving(tmp_path, _tls_config(pki, min_version="TLS13")) as served:
        with pytest.raises(ssl.SSLError):
            _handshake(served.port, _client(pki, tls=ssl.TLSVersion.TLSv1_2))
        _handshake(served.port, _client(pki, tls=ssl.TLSVersion.TLSv1_3))


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """A new TLS connection; the common name of the certificate the relay presented."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    # ((("commonName", "relay"),), ...): one tuple of (name, value) pairs per RDN
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", peer["subject"])
    names = {name: value for rdn in subject for name, value in rdn}
    return names["commonName"]


def _replace(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target`` in one step, as a Secret volume update does."""
    staged = target.with_suffix(".new")
    staged.write_bytes(source.read_bytes())
    os.replace(staged, target)


@pytest.mark.slow  # a real process, waits for the renewal
@pytest.mark.parametrize("workers", [1, 2])
def test_a_renewed_certificate_is_served_without_a_reload_or_restart(
    tmp_path: Path, pki: Pki, workers: int
) -> None:
    """cert-manager rewrites the files in place: the next handshake gets the new certificate;
    a half-done renewal (a key that does not match yet) keeps the old one in service. With
    ingest workers every process listens, so every one of them must follow."""
    live = tmp_path / "tls"
    live.mkdir()
    cert, key = live / "tls.crt", live / "tls.key"
    _replace(Path(pki.server_cert), cert)
    _replace(Path(pki.server_key), key)
    config = {
        "flux": {"mode": "off"},
        "receiver": {
            "workers": workers,
            "tls": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": pki.ca},
        },
    }
    ca_dir = Path(pki.ca).parent  # a renewal: a new key, signed by the same CA
    renewed_cert, renewed_key = _issue(ca_dir, tmp_path, "renewed", ca_dir / "server.ext")
    client = _client(pki, certificate=True)
    connections = 6 * workers  # SO_REUSEPORT spreads them over the processes

    def served_names(port: int) -> set[str]:
        return {_handshake(port, client) for _ in range(connections)}

    with _serving(tmp_path, config) as served:
        deadline = time.monotonic() + 30
        while served.log.read_text().count("ingest worker listening") < workers - 1:
            assert time.monotonic() < deadline, served.log.read_text()
            time.sleep(0.05)
        base = f"https://127.0.0.1:{served.port}"
        assert served_names(served.port) == {"server"}

        def unusable() -> float:
            status, text = _request(base + "/metrics", context=client)
            assert status == 200
            return metric_value(text, "gotk_relay_listener_tls_files_unusable")

        assert (
            "gotk_relay_listener_tls_files_unusable 0.0"
            in _request(base + "/metrics", context=client)[1]
        )
        _replace(renewed_cert, cert)  # the certificate first: it does not match the old key
        assert served_names(served.port) == {"server"}
        assert _write(base, context=client) == 204
        assert unusable() == 1  # not silent while the old certificate is served

        _replace(renewed_key, key)
        assert served_names(served.port) == {"renewed"}
        assert _write(base, context=client) == 204
        assert unusable() == 0
        with pytest.raises(ssl.SSLError):  # the client CA is still required of every client
            _handshake(served.port, _client(pki, tls=ssl.TLSVersion.TLSv1_2))
    log = served.log.read_text()
    # Logged once per change by each process that saw it, not once per handshake.
    assert 1 <= log.count("new TLS files are unusable") <= workers
    assert f"cannot use certificate {cert}" in log
    assert 'msg="TLS files changed; serving the new certificate"' in log


def _send(tmp_path: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``gotk-relay send`` of one sample to ``url`` with ``flags``."""
    sample = tmp_path / "up.prom"
    sample.write_text('up{job="send"} 1\n')
    argv = [sys.executable, "-m", "gotk_relay", "send", str(sample), "--url", url, *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_send_reaches_a_relay_that_wants_a_token_and_a_client_certificate(
    tmp_path: Path, pki: Pki
) -> None:
    """The README's `send` works against a secured relay with the flags a remote_write block
    would have: CA, client certificate and a token, each from a file."""
    token = _secret(tmp_path, "token", TOKEN)
    wrong = _secret(tmp_path, "wrong-token", "not-the-token")
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    config = {
        "flux": {"mode": "off"},
        "receiver": {"auth": {"bearer_token_file": token}, "tls": tls},
    }
    mtls = ["--ca-file", pki.ca, "--cert-file", pki.client_cert, "--key-file", pki.client_key]
    with _serving(tmp_path, config) as served:
        url = f"https://127.0.0.1:{served.port}/api/v1/write"
        sent = _send(tmp_path, url, *mtls, "--bearer-token-file", token)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("204 No Content: sent 1 series, 1 samples")

        runs = {
            "no token": _send(tmp_path, url, *mtls),
            "wrong token": _send(tmp_path, url, *mtls, "--bearer-token-file", wrong),
        }
        for what, done in runs.items():
            assert done.returncode == 1, what
            assert done.stderr.startswith("401 Unauthorized: sent 1 series"), (what, done.stderr)

        no_certificate = _send(tmp_path, url, "--ca-file", pki.ca, "--bearer-token-file", token)
        assert no_certificate.returncode == 1
        assert no_certificate.stderr.startswith(f"error: {url}: ")
        untrusted = _send(tmp_path, url, *mtls[2:], "--bearer-token-file", token)
        assert untrusted.returncode == 1 and "certificate verify failed" in untrusted.stderr
        skipped = _send(
            tmp_path, url, *mtls[2:], "--bearer-token-file", token, "--insecure-skip-verify"
        )
        assert skipped.returncode == 0, skipped.stderr
    shown = served.log.read_text() + "".join(d.stdout + d.stderr for d in [sent, *runs.values()])
    assert TOKEN not in shown


@pytest.mark.slow  # runs `gotk-relay send`
def test_send_with_basic_auth(tmp_path: Path) -> None:
    with _serving(tmp_path, _basic_config(tmp_path)) as served:
        url = f"http://127.0.0.1:{served.port}/api/v1/write"
        user = ["--basic-auth-username", USERNAME]
        right = _send(
            tmp_path, url, *user, "--basic-auth-password-file", str(tmp_path / "password")
        )
        assert right.returncode == 0, right.stderr
        wrong = _secret(tmp_path, "wrong-password", "nope")
        refused = _send(tmp_path, url, *user, "--basic-auth-password-file", wrong)
        assert refused.returncode == 1 and refused.stderr.startswith("401 Unauthorized")


@pytest.mark.slow  # runs `gotk-relay send` per case
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--header", "X-Scope-OrgID"], "--header 'X-Scope-OrgID': expected NAME=VALUE"),
        (["--cert-file", "client.pem"], "cert_file and key_file must be configured together"),
        (["--bearer-token-file", "/nonexistent/token"], "unable to read secret file"),
        (
            ["--bearer-token-file", "t", "--basic-auth-username", "u"],
            "at most one of --bearer-token-file and --basic-auth-* can be given",
        ),
    ],
    ids=["header", "cert-without-key", "missing-token", "two-kinds-of-auth"],
)
def test_send_refuses_flags_that_do_not_fit_before_connecting(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    done = _send(tmp_path, f"http://127.0.0.1:{free_port()}/api/v1/write", *flags)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.slow  # runs `gotk-relay send`
async def test_send_passes_extra_headers(tmp_path: Path) -> None:
    """``--header`` sets what a remote_write ``headers:`` block sets, e.g. a Mimir tenant."""
    async with receivers(ScriptedReceiver()) as (receiver,):
        flags = ["--header", "X-Scope-OrgID=team-a", "--header", "X-Extra= spaced value"]
        done = await asyncio.to_thread(_send, tmp_path, receiver.url, *flags)
    assert done.returncode == 0, done.stderr
    (received,) = receiver.requests
    assert received.headers["X-Scope-OrgID"] == "team-a"
    assert received.headers["X-Extra"] == "spaced value"  # HTTP trims the leading space
    assert received.headers["User-Agent"].startswith("gotk-relay/")


StartError = Callable[[Pki, Path], tuple[dict[str, object], str]]


def _start_errors() -> list[tuple[str, StartError]]:
    def missing(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = str(d / "missing.pem")
        return _tls_config(pki, cert_file=path), f"receiver.tls.cert_file {path}"

    def missing_key(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = str(d / "missing.key")
        return _tls_config(pki, key_file=path), f"receiver.tls.key_file {path}"

    def missing_ca(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = str(d / "missing-ca.pem")
        return _tls_config(pki, client_ca_file=path), f"receiver.tls.client_ca_file {path}"

    def mismatched_key(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        config = _tls_config(pki, key_file=pki.client_key)
        return config, f"cannot use certificate {pki.server_cert} with key {pki.client_key}"

    def not_a_ca(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = d / "garbage.pem"
        path.write_text("not a certificate\n")
        return _tls_config(pki, client_ca_file=str(path)), f"client_ca_file {path}"

    def encrypted_key(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = str(d / "encrypted.key")
        subprocess.run(
            ["openssl", "ec", "-in", pki.server_key, "-aes256", "-passout", "pass:x", "-out", path],
            check=True,
            capture_output=True,
            timeout=60,
        )
        expected = f"receiver.tls.key_file {path}: the key is encrypted"
        return _tls_config(pki, key_file=path), expected

    def missing_token(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = str(d / "missing-token")
        auth = {"bearer_token_file": path}
        return (
            {"receiver": {"auth": auth}},
            f"receiver.auth.bearer_token_file: unable to read secret file {path}",
        )

    def empty_password(pki: Pki, d: Path) -> tuple[dict[str, object], str]:
        path = _secret(d, "empty-password", "")
        auth = {"basic_auth": {"username": USERNAME, "password_file": path}}
        return {"receiver": {"auth": auth}}, f"secret file {path} is empty"

    cases = [missing, missing_key, missing_ca, mismatched_key, not_a_ca, encrypted_key]
    cases += [missing_token, empty_password]
    return [(case.__name__.replace("_", "-"), case) for case in cases]


START_ERRORS = _start_errors()


@pytest.mark.slow  # starts the relay's process per case
@pytest.mark.parametrize("case", [c[1] for c in START_ERRORS], ids=[c[0] for c in START_ERRORS])
def test_an_unusable_certificate_or_secret_stops_the_start_with_one_line(
    tmp_path: Path, pki: Pki, case: StartError
) -> None:
    config, expected = case(pki, tmp_path)
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        _serve_command(path, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert expected in lines[0]
