"""The scrape input against real HTTP on loopback: a target served by aiohttp whose text, status
and credentials the test controls, the relay in-process with its scrape loops, and real
receivers (a remote-write receiver, the Datadog intake double) on the other side.

What is checked is what Prometheus 2.x would write: samples at the scrape's time with the
target's labels, a stale marker when a series disappears or the target fails, ``up`` and the
``scrape_*`` series every scrape, stale markers when a reload removes the target; over HTTPS with
a bearer token or basic auth; and KSM's ``gotk_resource_info`` through the Flux rules to Datadog.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gotk_relay.config import load_text
from gotk_relay.model import Labels, MetricType, is_stale
from gotk_relay.relay import Relay
from gotk_relay.scrape import Scraper
from gotk_relay.scrape import loop as loop_module
from gotk_relay.scrape.loop import TargetLoop
from gotk_relay.telemetry import Telemetry
from tests.support.datadog_intake import DatadogIntake
from tests.support.harness import Reply, ScriptedReceiver, eventually, receivers
from tests.support.rig import free_port

# Each runs several 200 ms scrape intervals, with 150-200 ms scrape timeouts.
pytestmark = [pytest.mark.slow, pytest.mark.alone]

INTERVAL = "200ms"
WAIT_S = 10.0


class Exporter:
    """A scrape target on 127.0.0.1: text, status and the Authorization it wants, settable."""

    def __init__(self, text: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        self.text = text
        self.status = 200
        self.authorization: str | None = None
        self.content_type = "text/plain; version=0.0.4; charset=utf-8"
        self.headers: dict[str, str] = {}  # more headers on every answer
        self.accepts: list[str] = []
        self.encodings: list[str] = []  # the Accept-Encoding of each scrape
        self.queries: list[str] = []
        self.port = free_port()
        self.ssl_context = ssl_context
        self.runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.accepts.append(request.headers.get("Accept", ""))
        self.encodings.append(request.headers.get("Accept-Encoding", ""))
        self.queries.append(request.query_string)
        if (
            self.authorization is not None
            and request.headers.get("Authorization") != self.authorization
        ):
            return web.Response(status=401, text="unauthorized")
        if self.status != 200:
            return web.Response(status=self.status, text="broken")
        return web.Response(
            body=self.text.encode(), headers={"Content-Type": self.content_type, **self.headers}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@asynccontextmanager
async def scraping(config: dict[str, object], *exporters: Exporter) -> AsyncIterator[Scraper]:
    """The relay of ``config`` with its scrape loops running (as ``serve`` starts them)."""
    for exporter in exporters:
        await exporter.start()
    relay = Relay(load_text(yaml.safe_dump(config), "<test>"), Telemetry())
    scraper = Scraper(relay, relay.telemetry)
    relay.start()
    try:
        await scraper.apply(relay.config.scrape_configs)
        yield scraper
    finally:
        await scraper.stop()
        await relay.stop(0.5)
        for exporter in exporters:
            await exporter.close()


def job(name: str, exporter: Exporter, **keys: object) -> dict[str, object]:
    return {
        "job_name": name,
        "scrape_interval": INTERVAL,
        "static_configs": [{"targets": [exporter.address], "labels": {"namespace": "monitoring"}}],
        **keys,
    }


def rw_config(receiver: ScriptedReceiver, *jobs: dict[str, object]) -> dict[str, object]:
    return {
        "flux": {"mode": "off"},
        "remote_write": [
            {"url": receiver.url, "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"}}
        ],
        "scrape_configs": list(jobs),
    }


def points(receiver: ScriptedReceiver) -> list[tuple[Labels, int, float]]:
    """Every delivered sample as (labels, timestamp, value), in delivery order."""
    return [
        (s.labels, p.timestamp, p.value)
        for batch in receiver.delivered()
        for s in batch.series
        for p in s.samples
    ]


def named(name: str, **labels: str) -> Callable[[Labels], bool]:
    def match(series: Labels) -> bool:
        got = dict(series)
        return got.get("__name__") == name and all(got.get(k) == v for k, v in labels.items())

    return match


def last(receiver: ScriptedReceiver, match: Callable[[Labels], bool]) -> float | None:
    values = [value for labels, _, value in points(receiver) if match(labels)]
    return values[-1] if values else None


def stale(value: float | None) -> bool:
    return value is not None and is_stale(value)


TEXT = """\
# HELP a_metric A gauge.
# TYPE a_metric gauge
a_metric{namespace="apps"} 1.5
# TYPE b_metric gauge
b_metric 2
"""


async def test_scrape_protocols_are_what_the_target_is_asked_for() -> None:
    """Prometheus 3's ``scrape_protocols``: the target is asked for the formats listed, in
    that order, and its text is read whichever it answers."""
    exporter = Exporter(TEXT)
    protocols = ["PrometheusText1.0.0", "OpenMetricsText1.0.0"]
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter, scrape_protocols=protocols)), exporter),
    ):
        a = named("a_metric", job="t", exported_namespace="apps", namespace="monitoring")
        await eventually(lambda: last(receiver, a) == 1.5)
    assert exporter.accepts[0] == (
        "text/plain;version=1.0.0;escaping=underscores;q=0.6,"
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,*/*;q=0.4"
    )


async def test_samples_stale_markers_and_up_as_prometheus_writes_them() -> None:
    exporter = Exporter(TEXT)
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter)), exporter) as scraper,
    ):
        a = named("a_metric", job="t", exported_namespace="apps", namespace="monitoring")
        b = named("b_metric", job="t", instance=exporter.address)
        up = named("up", job="t", instance=exporter.address, namespace="monitoring")
        await eventually(lambda: last(receiver, a) == 1.5 and last(receiver, b) == 2.0)
        assert last(receiver, up) == 1.0
        for name in ("scrape_duration_seconds", "scrape_samples_scraped"):
            assert last(receiver, named(name, job="t")) is not None
        assert exporter.accepts[0].startswith("application/openmetrics-text;version=1.0.0")
        families = {m.family for batch in receiver.delivered() for m in batch.metadata}
        assert {"a_metric", "b_metric"} <= families

        exporter.text = TEXT.replace("b_metric 2\n", "")  # b goes away: a stale marker
        await eventually(lambda: stale(last(receiver, b)))
        assert last(receiver, a) == 1.5

        exporter.status = 500  # the target fails: everything it wrote ends, up 0
        await eventually(lambda: stale(last(receiver, a)) and last(receiver, up) == 0.0)
        assert not stale(last(receiver, up))

        exporter.status = 200
        await eventually(lambda: last(receiver, a) == 1.5 and last(receiver, up) == 1.0)

        await scraper.apply([])  # a reload removes the target: its series end too
        await eventually(lambda: stale(last(receiver, up)))
        assert stale(last(receiver, a))
    # Each series' samples arrive in time order, never two at one timestamp.
    seen: dict[Labels, int] = {}
    for labels, ts, _ in points(receiver):
        assert ts > seen.get(labels, -1), dict(labels)
        seen[labels] = ts


async def test_a_body_of_exactly_body_size_limit_fails_as_in_prometheus() -> None:
    """Prometheus reads at most ``body_size_limit`` bytes and fails the scrape when it read
    them all: a body of exactly the limit fails, one byte more of limit passes."""
    exporter = Exporter("bs_a 1\nbs_b 2\n")  # 14 bytes
    size = len(exporter.text.encode())
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(
            rw_config(
                receiver,
                job("at", exporter, body_size_limit=f"{size}B"),
                job("over", exporter, body_size_limit=f"{size + 1}B"),
            ),
            exporter,
        ),
    ):
        await eventually(
            lambda: (
                last(receiver, named("up", job="at")) == 0.0
                and last(receiver, named("up", job="over")) == 1.0
            )
        )
        assert last(receiver, named("bs_a", job="over")) == 1.0
        assert last(receiver, named("bs_a", job="at")) is None


async def test_a_large_response_head_and_body_size_limit_0_scrape_as_in_prometheus() -> None:
    """Go's client takes a response head far larger than aiohttp's defaults (a 20 KB cookie
    from an auth proxy, 200 headers), and ``body_size_limit: 0`` is Prometheus' "no limit",
    here the relay's own bound: both jobs scrape, as a pasted prometheus.yml does."""
    exporter = Exporter("hd_a 1\n")
    exporter.headers = {"Set-Cookie": "s=" + "x" * 20_000}
    exporter.headers.update({f"X-Extra-{i}": str(i) for i in range(200)})
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(
            rw_config(receiver, job("big_head", exporter, body_size_limit=0)), exporter
        ) as scraper,
    ):
        await eventually(lambda: last(receiver, named("up", job="big_head")) == 1.0)
        assert last(receiver, named("hd_a", job="big_head")) == 1.0
        assert scraper.relay.config.scrape_configs[0].body_size_limit == 64 << 20


async def test_a_failing_target_is_logged_once_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = Exporter(TEXT)
    exporter.status = 503
    caplog.set_level(logging.INFO, logger="gotk_relay.scrape")
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter)), exporter) as scraper,
    ):
        failures = scraper.metrics.failures.labels("t", "http_status")
        await eventually(lambda: failures._value.get() >= 3)
        exporter.status = 200
        await eventually(lambda: last(receiver, named("up", job="t")) == 1.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "gotk_relay.scrape"]
    assert [m for m in messages if m.startswith("scrape failed")] == [
        "scrape failed; logged again when the reason changes or the target recovers"
    ]
    assert messages.count("scrape succeeded again") == 1


async def test_an_error_in_a_scrape_loop_shows_in_ready_and_is_logged_once_per_kind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a loop (not a target's failure): logged once however its text varies, shown in
    /-/ready's problems until a scrape succeeds, and counted."""
    exporter = Exporter(TEXT)
    calls = {"n": 0}
    real = TargetLoop.scrape_once

    async def failing(self: TargetLoop) -> None:
        calls["n"] += 1
        if calls["n"] <= 4:
            raise RuntimeError(f"a bug, call {calls['n']}")  # its text changes every time
        await real(self)

    monkeypatch.setattr(TargetLoop, "scrape_once", failing)
    caplog.set_level(logging.INFO, logger="gotk_relay.scrape")
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter)), exporter) as scraper,
    ):
        task_failures = scraper.metrics.task_failures.labels("t")
        await eventually(lambda: task_failures._value.get() >= 2)
        (problem,) = scraper.relay.problems()
        assert problem.startswith(f"scrape loop of job t {exporter.address}: RuntimeError: a bug")
        await eventually(lambda: last(receiver, named("up", job="t")) == 1.0)
        assert scraper.relay.problems() == []
    messages = [r.getMessage() for r in caplog.records if r.name == "gotk_relay.scrape"]
    assert sum(m.startswith("scrape loop error; retrying") for m in messages) == 1
    assert messages.count("scrape loop error: stopped") == 1


OPENMETRICS = """\
# TYPE jobs counter
# HELP jobs Jobs run.
jobs_total{kind="sync"} 3
jobs_created{kind="sync"} 1700000000
# EOF
"""


async def test_an_openmetrics_answer_is_parsed_as_openmetrics() -> None:
    exporter = Exporter(OPENMETRICS)
    exporter.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("om", exporter)), exporter),
    ):
        await eventually(lambda: last(receiver, named("jobs_total", kind="sync")) == 3.0)
        # A series of its own, as Prometheus appends it (without created-timestamp ingestion).
        await eventually(lambda: last(receiver, named("jobs_created")) == 1700000000.0)
        assert last(receiver, named("up", job="om")) == 1.0
    metadata = {(m.family, m.type, m.help) for b in receiver.delivered() for m in b.metadata}
    assert ("jobs", MetricType.COUNTER, "Jobs run.") in metadata


@pytest.mark.parametrize(
    "change",
    [{"scrape_timeout": "150ms"}, {"params": {"x": ["1"]}}],
    ids=["settings", "url"],
)
async def test_a_reload_that_changes_a_target_keeps_its_series_going(
    change: dict[str, object],
) -> None:
    """A new timeout, or new params (another URL for the same labels, as a new
    ``metrics_path`` or ``scheme`` would be): the series go on, no stale marker between, as a
    Prometheus reload leaves them."""
    exporter = Exporter(TEXT)
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter)), exporter) as scraper,
    ):
        a = named("a_metric", job="t")
        await eventually(lambda: last(receiver, a) == 1.5)
        changed = load_text(yaml.safe_dump(rw_config(receiver, job("t", exporter, **change))))
        await scraper.apply(changed.scrape_configs)
        before = len(receiver.delivered())
        await eventually(lambda: len(receiver.delivered()) > before + 2)
        if "params" in change:
            assert exporter.queries[-1] == "x=1"
    assert not any(is_stale(value) for labels, _, value in points(receiver) if a(labels))
    assert not any(is_stale(value) for labels, _, value in points(receiver) if named("up")(labels))


async def test_a_targets_own_interval_label_sets_its_schedule_and_gzip_is_asked() -> None:
    """``__scrape_interval__`` in the group's labels: scraped every 200 ms under a job of one
    minute (at the job's interval the first scrape could come a minute later); asked for
    ``gzip`` only, as Go's transport asks."""
    exporter = Exporter(TEXT)
    scraped = job("t", exporter, scrape_interval="1m", scrape_timeout="150ms")
    scraped["static_configs"][0]["labels"]["__scrape_interval__"] = INTERVAL  # type: ignore[index]
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, scraped), exporter),
    ):
        await eventually(lambda: len(exporter.accepts) >= 4)
    assert set(exporter.encodings) == {"gzip"}


async def test_samples_too_far_ahead_are_left_out_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sample whose own timestamp is over 10 minutes ahead is left out, as Prometheus'
    appender refuses it; the scrape succeeds and its other samples go."""
    ahead_ms = int(time.time() * 1000) + 3_600_000
    exporter = Exporter(f"ahead 1 {ahead_ms}\nnow 2\n")
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, job("t", exporter)), exporter) as scraper,
    ):
        dropped = scraper.metrics.dropped.labels("t", "too_far_ahead")
        with caplog.at_level(logging.WARNING, logger="gotk_relay.scrape"):
            await eventually(lambda: dropped._value.get() >= 3)
        assert last(receiver, named("now", job="t")) == 2.0
        assert last(receiver, named("up", job="t")) == 1.0
    assert last(receiver, named("ahead")) is None
    logged = [r for r in caplog.records if "10 minutes ahead" in r.getMessage()]
    assert len(logged) == 1


async def test_a_scrape_the_queues_cannot_take_is_dropped_and_its_stale_markers_stay_due() -> None:
    """No WAL: a refused scrape is dropped and counted; a series that disappeared meanwhile
    still gets its stale marker from the next scrape the relay takes."""
    exporter = Exporter(TEXT)
    receiver = ScriptedReceiver([Reply(hang=True)])  # the first request waits for release()
    config = rw_config(receiver, job("t", exporter))
    config["remote_write"][0]["queue_config"]["capacity"] = 10  # type: ignore[index]
    async with receivers(receiver), scraping(config, exporter) as scraper:
        dropped = scraper.metrics.dropped.labels("t", "queue_full")
        b = named("b_metric", job="t")
        await eventually(lambda: dropped._value.get() > 0)
        assert last(receiver, b) == 2.0  # the first scrape, held by the receiver
        exporter.text = TEXT.replace("b_metric 2\n", "")
        count = dropped._value.get()
        await eventually(lambda: dropped._value.get() > count + 1)  # a scrape without b, dropped
        receiver.release()
        await eventually(lambda: stale(last(receiver, b)))
    a = named("a_metric", job="t")
    assert not any(is_stale(value) for labels, _, value in points(receiver) if a(labels))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1, made by openssl."""
    d = tmp_path_factory.mktemp("scrape-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=scrape target", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("scheme", ["bearer_file", "basic_auth"])
async def test_https_with_credentials(
    certificate: tuple[Path, Path], tmp_path: Path, scheme: str
) -> None:
    cert, key = certificate
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    auth: dict[str, object] = {"authorization": {"credentials_file": str(token)}}
    header = "Bearer s3cret"
    if scheme == "basic_auth":
        auth = {"basic_auth": {"username": "relay", "password": "s3cret"}}
        header = "Basic " + base64.b64encode(b"relay:s3cret").decode()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    exporter = Exporter(TEXT, context)
    exporter.authorization = header
    secure = job("tls", exporter, scheme="https", tls_config={"ca_file": str(cert)}, **auth)
    untrusting = job("untrusting", exporter, scheme="https", **auth)
    anonymous = job("anonymous", exporter, scheme="https", tls_config={"ca_file": str(cert)})
    no_ca = job("no_ca", exporter, scheme="https", tls_config={"ca_file": str(tmp_path / "gone")})
    async with receivers(ScriptedReceiver()) as (receiver,):
        config = rw_config(receiver, secure, untrusting, anonymous, no_ca)
        async with scraping(config, exporter) as scraper:
            await eventually(lambda: last(receiver, named("a_metric", job="tls")) == 1.5)
            for failing in ("untrusting", "anonymous", "no_ca"):
                await eventually(lambda f=failing: last(receiver, named("up", job=f)) == 0.0)  # type: ignore[misc]
                assert last(receiver, named("a_metric", job=failing)) is None
            assert last(receiver, named("up", job="tls")) == 1.0
            failures = scraper.metrics.failures
            assert failures.labels("untrusting", "connection")._value.get() >= 1
            assert failures.labels("anonymous", "http_status")._value.get() >= 1
            # An unreadable CA file fails each scrape (tried again each time), not the relay.
            assert failures.labels("no_ca", "tls")._value.get() >= 1


async def test_a_rotated_ca_file_is_used_from_the_next_scrape(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """As Prometheus: a ``tls_config`` file rewritten (cert-manager renewing a CA, a Secret
    volume updated) is read again when it changes, without a reload. The CA file first holds
    another certificate, so scrapes fail verification; once it holds the target's, they pass."""
    cert, key = certificate
    other = tmp_path / "other.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-days", "1",
            "-subj", "/CN=another", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ca = tmp_path / "ca.pem"
    ca.write_bytes(other.read_bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    exporter = Exporter(TEXT, context)
    rotated = job("rotated", exporter, scheme="https", tls_config={"ca_file": str(ca)})
    async with (
        receivers(ScriptedReceiver()) as (receiver,),
        scraping(rw_config(receiver, rotated), exporter) as scraper,
    ):
        await eventually(lambda: last(receiver, named("up", job="rotated")) == 0.0)
        failed = scraper.metrics.failures.labels("rotated", "connection")
        await eventually(lambda: failed._value.get() >= 2)  # the old CA, kept while unchanged
        ca.write_bytes(cert.read_bytes())
        await eventually(lambda: last(receiver, named("a_metric", job="rotated")) == 1.5)
        assert last(receiver, named("up", job="rotated")) == 1.0


KSM = """\
# HELP gotk_resource_info The current state of a Flux resource.
# TYPE gotk_resource_info gauge
gotk_resource_info{{customresource_group="helm.toolkit.fluxcd.io",customresource_kind="HelmRelease",\
customresource_version="v2",exported_namespace="apps",name="podinfo",ready="{ready}"}} 1
"""


async def test_ksm_scraped_reaches_datadog_as_the_legacy_series() -> None:
    """kube-state-metrics → gotk-relay → Datadog API, no Prometheus anywhere: an object
    created, its Ready flipped, then deleted."""
    exporter = Exporter(KSM.format(ready="True"))
    async with DatadogIntake() as intake:
        config: dict[str, object] = {
            "flux": {"mode": "legacy"},
            "datadog": [
                {
                    "url": intake.url,
                    "api_key": intake.api_key,
                    "queue_config": {"min_backoff": "10ms", "max_backoff": "50ms"},
                }
            ],
            "scrape_configs": [job("kube-state-metrics", exporter)],
        }

        # The stored legacy shape, as Datadog's tag normalisation lowercases it; namespace is
        # the controllers' (flux.controller_namespace), not the scrape's static label.
        identity = (
            "exported_namespace:apps",
            f"instance:{exporter.address}",
            "job:kube-state-metrics",
            "kind:helmrelease",
            "name:podinfo",
            "namespace:flux-system",
        )

        def condition(status: str) -> float | None:
            want = tuple(sorted((*identity, f"status:{status}", "type:ready")))
            found = [
                v for tags, _, v, _ in intake.points("gotk_reconcile_condition") if tags == want
            ]
            return found[-1] if found else None

        def table() -> list[float | None]:
            return [condition(status) for status in ("true", "false", "unknown")]

        async with scraping(config, exporter) as scraper:
            await eventually(lambda: table() == [1.0, 0.0, 0.0], WAIT_S)
            exporter.text = KSM.format(ready="False")
            await eventually(lambda: table() == [0.0, 1.0, 0.0], WAIT_S)
            # Deleted: the KSM series ends, then (one scrape interval and 5 s later) the four
            # legacy series; Datadog has no stale marker, so their points just stop.
            exporter.text = ""
            (client,) = [d.client for d in scraper.relay.destinations.values()]

            def ended() -> bool:
                return client.skipped.get("stale", 0) >= 1 + 4  # the input and its outputs

            await eventually(ended, WAIT_S)
            written = len(intake.points("gotk_reconcile_condition"))
            await asyncio.sleep(1.0)  # five more scrapes of the emptied target
            assert len(intake.points("gotk_reconcile_condition")) == written
        assert intake.problems == []
        # One object, one row per status: no tag set the legacy controllers did not have.
        rows = {tags for tags, _, _, _ in intake.points("gotk_reconcile_condition")}
        assert len(rows) == 3
        suspend = {(tags, v) for tags, _, v, _ in intake.points("gotk_suspend_status")}
        assert suspend == {(identity, 0.0)}


async def test_a_target_that_fails_to_apply_leaves_no_other_undone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload's scrape changes, target by target: one that raises (a bug) is reported by
    the reload, and every other target is still stopped or started as the file says."""
    first, second, third = Exporter(TEXT), Exporter(TEXT), Exporter(TEXT)
    async with receivers(ScriptedReceiver()) as (receiver,):
        config = rw_config(receiver, job("a", first), job("b", second))
        async with scraping(config, first, second, third) as scraper:
            for name in ("a", "b"):
                await eventually(lambda n=name: last(receiver, named("up", job=n)) == 1.0)  # type: ignore[misc]
            real_end = loop_module.TargetLoop.end

            def end(self: loop_module.TargetLoop) -> None:
                if self.target.job.job_name == "a":
                    raise RuntimeError("a bug ending a")
                real_end(self)

            monkeypatch.setattr(loop_module.TargetLoop, "end", end)
            reloaded = load_text(yaml.safe_dump(rw_config(receiver, job("c", third))), "<t>")
            with pytest.raises(RuntimeError, match="a bug ending a"):
                await scraper.apply(reloaded.scrape_configs)
            assert sorted(key[0] for key in scraper.loops) == ["c"]
            await eventually(lambda: last(receiver, named("up", job="c")) == 1.0)
            await eventually(lambda: stale(last(receiver, named("up", job="b"))))
