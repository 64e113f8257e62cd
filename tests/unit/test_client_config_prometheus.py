"""remote_write's HTTP client keys as Prometheus has them: the headers it reserves, the
authorization type it normalises, and the URL user info Go's HTTP client sends as Basic auth."""

from __future__ import annotations

import base64
import logging

import pytest

from gotk_relay.config import ConfigError, load_text
from tests.support.harness import (
    Reply,
    ScriptedReceiver,
    eventually,
    gauge_batch,
    receivers,
    relay_client,
    rw_body,
)


def _with_header(name: str) -> str:
    return f"remote_write:\n  - url: http://a/\n    headers: {{'{name}': v}}\n"


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "Accept-Encoding",
        "X-Prometheus-Remote-Read-Version",
        "X-Amz-Date",
        "x-amz-security-token",
        "X-Amz-Content-Sha256",
    ],
)
def test_headers_prometheus_reserves_are_refused_as_prometheus_words_it(name: str) -> None:
    # prometheus/prometheus config/config.go reservedHeaders, compared lowercased.
    with pytest.raises(ConfigError) as info:
        load_text(_with_header(name), "relay.yml", {})
    assert str(info.value) == (
        f"relay.yml:3: remote_write[0].headers: {name} is a reserved header. It must not be changed"
    )


def test_retry_after_header_is_not_reserved_by_prometheus_so_it_is_sent() -> None:
    config = load_text(_with_header("Retry-After"))
    assert config.remote_write[0].headers == {"Retry-After": "v"}


@pytest.mark.parametrize("name", ["Authorization", "authorization"])
def test_authorization_header_points_to_the_auth_parameters(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(_with_header(name), "relay.yml", {})
    assert str(info.value) == (
        "relay.yml:3: remote_write[0].headers: authorization header must be changed via the "
        "basic_auth or authorization parameter"
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [("''", "Bearer"), ("'   '", "Bearer"), ("' Token '", "Token")],
    ids=["empty", "spaces", "padded"],
)
def test_authorization_type_is_trimmed_and_empty_means_bearer(given: str, kept: str) -> None:
    # prometheus/common config/http_config.go HTTPClientConfig.Validate.
    config = load_text(
        f"remote_write:\n  - url: http://a/\n    authorization: {{type: {given}, credentials: t}}\n"
    )
    authorization = config.remote_write[0].authorization
    assert authorization is not None and authorization.type == kept


def _basic(userpass: str) -> str:
    return "Basic " + base64.b64encode(userpass.encode()).decode()


@pytest.mark.parametrize(
    ("userinfo", "auth", "expected"),
    [
        ("u:p@", {"basic_auth": {"username": "a", "password": "b"}}, _basic("u:p")),
        ("u:p@", {"authorization": {"credentials": "tok"}}, _basic("u:p")),
        ("u%C3%A4:p%40ss@", {}, _basic("u\u00e4:p@ss")),
        ("@", {}, _basic(":")),
        ("", {"authorization": {"type": "", "credentials": "tok"}}, "Bearer tok"),
    ],
    ids=[
        "userinfo-over-basic-auth",
        "userinfo-over-authorization",
        "userinfo-alone-utf8",
        "empty-userinfo",
        "empty-type-is-bearer",
    ],
)
async def test_authorization_sent_is_what_prometheus_sends(
    userinfo: str, auth: dict[str, object], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Go's http.Client (net/http client.go send) sets Basic auth from the URL's user info
    when the request has no Authorization yet, before the transport runs; prometheus/common's
    basic_auth and authorization round-trippers then leave that header alone. So in
    Prometheus the URL's user info wins, and alone it is sent, UTF-8 encoded."""
    caplog.set_level(logging.DEBUG)
    receiver = ScriptedReceiver(default=Reply(204))
    url = receiver.url.replace("http://", f"http://{userinfo}")
    config = {
        "flux": {"mode": "off"},
        "remote_write": [
            {
                "name": "d",
                "url": url,
                **auth,
                "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"},
            }
        ],
    }
    async with receivers(receiver), relay_client(config) as (client, _):
        body, headers = rw_body(gauge_batch(["m"], 1000))
        response = await client.post("/api/v1/write", data=body, headers=headers)
        assert response.status < 300
        await eventually(lambda: bool(receiver.requests), timeout=5.0)
    assert receiver.requests[0].headers.get("Authorization") == expected
    assert receiver.requests[0].status == 204
    if userinfo not in ("", "@"):
        assert userinfo.rstrip("@") not in caplog.text
