"""The scrape loops: one supervised task per target that scrapes it every ``scrape_interval``
and admits what it appends (samples, stale markers, report series) to the relay as one batch on
the decoded path: the same global rules, Flux rules, destinations and federate store as a
remote-written request.

A failed scrape (connection, timeout, HTTP status, body size, parse error, a limit) is logged
once when the target starts failing (and when its reason changes), ends every series of the
previous scrape with a stale marker and writes ``up 0``; the loop scrapes again at the next
interval. A target failing is not a reason for ``/-/ready`` to fail, as in Prometheus.

A batch the relay refuses (a queue full, the spool failing) is dropped and counted
(``gotk_relay_scrape_samples_dropped_total``), logged once per episode: Prometheus' agent would
keep it in its WAL and resend it; the relay does not. The series it would have ended stay due,
so the next accepted scrape writes their stale markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import Counter, Gauge
from yarl import URL

from .. import __version__
from ..config import FileStamp, ScrapeConfig, file_stamp
from ..delivery.spool import SpoolError
from ..destinations.http import auth_headers
from ..destinations.tls import client_ssl_context
from ..errors import SendError
from ..model import Batch, Labels
from ..relay import Relay
from ..rules.relabel import RuleSet, compile_rules
from ..telemetry import Telemetry
from .parse import Limits, Scraped, ScrapeError, parse
from .staleness import append, stale_markers
from .targets import Target, targets_of

log = logging.getLogger("gotk_relay.scrape")

_CHUNK = 64 * 1024
# A target's response head: one line (a header) up to 1 MiB, up to 1024 headers: within Go's
# 10 MB, far past what an exporter or a proxy in front of it sends.
MAX_HEAD_BYTES = 1 << 20
MAX_HEADERS = 1024


class ScrapeMetrics:
    """The scrapers' own metrics on the relay's ``/metrics``."""

    def __init__(self, telemetry: Telemetry) -> None:
        r = telemetry.registry
        self.up = Gauge(
            "gotk_relay_scrape_target_up",
            "Whether the last scrape of a target succeeded (the up series it writes).",
            ["job", "instance"],
            registry=r,
        )
        self.failures = Counter(
            "gotk_relay_scrape_failures",
            "Scrapes that failed, by job and reason (each target's first is logged).",
            ["job", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "gotk_relay_scrape_samples_dropped",
            "Scraped samples (stale markers and report series included) the relay could not "
            "queue and dropped, by job and reason (queue_full, spool_error; too_far_ahead: "
            "their own timestamp over 10 minutes ahead, left out as Prometheus does).",
            ["job", "reason"],
            registry=r,
        )
        self.task_failures = Counter(
            "gotk_relay_scrape_task_failures",
            "Unexpected errors in a scrape loop: logged, the loop goes on at the next interval.",
            ["job"],
            registry=r,
        )


@dataclass
class _State:
    """What a target's loop carries over between scrapes (and across a reload that keeps it)."""

    written: dict[Labels, None] = field(default_factory=dict)  # series whose last value is live
    last_ms: int = 0
    failing: str = ""  # the reason (token) of the failure logged, "" while it scrapes fine
    dropping: str = ""
    ahead: bool = False  # the last scrape left samples out for their timestamps (logged)
    broken: str = ""  # an unexpected error in the loop, logged once


class TargetLoop:
    """Scrapes one target until cancelled."""

    def __init__(
        self, target: Target, relay: Relay, metrics: ScrapeMetrics, state: _State | None = None
    ) -> None:
        self.target = target
        self.relay = relay
        self.metrics = metrics
        self.state = state or _State()
        job = target.job
        self.rules: RuleSet = compile_rules(job.metric_relabel_configs)
        self.limits = Limits(
            job.sample_limit,
            job.label_limit,
            job.label_name_length_limit,
            job.label_value_length_limit,
        )
        self.task: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None
        self._tls_stamps: tuple[FileStamp, ...] = ()  # of the files self._client was made with

    def start(self) -> None:
        name = f"scrape:{self.target.job.job_name}:{self.target.instance}"
        self.task = asyncio.get_running_loop().create_task(self._run(), name=name)

    async def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _session(self) -> aiohttp.ClientSession:
        """The target's HTTP client, made at the first scrape and again when a ``tls_config``
        file changed (Prometheus reads the CA, certificate and key again when they change: a
        rotated certificate is used from the next scrape, without a reload). TLS files that
        cannot be read fail the scrape, and are tried again at the next, as an unreachable
        target does. Scrapes of a target do not overlap, so no request uses the old client."""
        tls = self.target.job.tls_config
        stamps = tuple(file_stamp(f) for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        if self._client is not None and stamps == self._tls_stamps:
            return self._client
        try:
            context = client_ssl_context(self.target.url, tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ScrapeError("tls", f"tls_config: {exc}") from None
        if self._client is not None:
            await self._client.close()
        connector = aiohttp.TCPConnector(limit=1, ssl=context)
        self._client = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            trust_env=False,
            # Go's client takes response heads up to 10 MB (an auth proxy's big cookie, many
            # headers); aiohttp's defaults (8190-byte lines, 128 headers) would fail the scrape.
            max_line_size=MAX_HEAD_BYTES,
            max_field_size=MAX_HEAD_BYTES,
            max_headers=MAX_HEADERS,
        )
        self._tls_stamps = stamps
        return self._client

    async def _run(self) -> None:
        interval = self.target.interval
        # Prometheus' schedule: the first scrape at the target's offset within the interval,
        # then one every interval (a scrape that overran skips its missed ticks).
        loop = asyncio.get_running_loop()
        delay = (self.target.offset(interval) - time.time() % interval) % interval
        next_at = loop.time() + delay
        try:
            while True:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                try:
                    await self.scrape_once()
                    self._recovered()
                except Exception as exc:  # a bug, not a target's failure: the loop goes on
                    self._broken(exc)
                next_at += interval
                now = loop.time()
                if next_at <= now:
                    next_at += ((now - next_at) // interval + 1) * interval
        finally:
            if self._client is not None:
                await self._client.close()

    def _broken(self, exc: Exception) -> None:
        job = self.target.job
        self.metrics.task_failures.labels(job.job_name).inc()
        kind = type(exc).__name__
        reason = f"{kind}: {exc}"
        # Logged once, with its traceback, until it stops or its kind of error changes (not its
        # text, which may hold a changing detail); the newest text is /-/ready's.
        logged = self.state.broken.partition(":")[0] == kind
        self.state.broken = reason
        if not logged:
            log.exception(
                "scrape loop error; retrying at each interval, logged again if its kind changes",
                extra={"job": job.job_name, "instance": self.target.instance, "err": reason},
            )

    def _recovered(self) -> None:
        if self.state.broken:
            log.info(
                "scrape loop error: stopped",
                extra={"job": self.target.job.job_name, "instance": self.target.instance},
            )
            self.state.broken = ""

    def _timestamp(self) -> int:
        """The scrape's start in ms, after the last one (a clock step back keeps the order)."""
        ms = max(int(time.time() * 1000), self.state.last_ms + 1)
        self.state.last_ms = ms
        return ms

    async def scrape_once(self) -> None:
        """One scrape: fetch, parse, and admit what it appends (see the module docstring)."""
        job = self.target.job
        ts = self._timestamp()
        started = time.monotonic()
        try:
            body, content_type = await self._fetch(await self._session())
            scraped = await asyncio.to_thread(
                parse,
                body,
                content_type,
                ts,
                self.target.labels,
                honor_labels=job.honor_labels,
                honor_timestamps=job.honor_timestamps,
                rules=self.rules,
                limits=self.limits,
            )
        except ScrapeError as exc:
            self._failed(exc.reason, str(exc))
            scraped = None
        duration = time.monotonic() - started
        if scraped is not None:
            self._ahead(scraped.too_far_ahead)
        self._append(scraped, ts, duration)

    def _ahead(self, count: int) -> None:
        """Samples whose own timestamp is over 10 minutes ahead: left out of an otherwise good
        scrape, as Prometheus' appender refuses them; counted, logged once until a scrape has
        none."""
        if not count:
            self.state.ahead = False
            return
        job = self.target.job
        self.metrics.dropped.labels(job.job_name, "too_far_ahead").inc(count)
        if not self.state.ahead:
            self.state.ahead = True
            log.warning(
                "samples with timestamps over 10 minutes ahead of the scrape were left out; "
                "logged again after a scrape without any",
                extra={"job": job.job_name, "instance": self.target.instance, "count": count},
            )

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[bytes, str]:
        job = self.target.job
        headers = {
            "Accept": job.accept,
            "User-Agent": f"gotk-relay/{__version__}",
            "X-Prometheus-Scrape-Timeout-Seconds": f"{self.target.timeout:g}",
            # What Go's transport asks (aiohttp's default adds deflate).
            "Accept-Encoding": "gzip" if job.enable_compression else "identity",
        }
        try:  # secret files are re-read at each scrape, as Prometheus does
            headers.update(auth_headers(job.basic_auth, job.authorization))
        except SendError as exc:
            raise ScrapeError("secret", exc.detail) from None
        limit = job.body_size_limit
        try:
            async with asyncio.timeout(self.target.timeout):
                async with session.get(
                    URL(self.target.url, encoded=True),  # escaped as Go escapes it
                    headers=headers,
                    allow_redirects=job.follow_redirects,
                    server_hostname=job.tls_config.server_name,
                ) as response:
                    if response.status != 200:
                        raise ScrapeError(
                            "http_status",
                            f"server returned HTTP status {response.status} {response.reason}",
                        )
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        body += chunk
                        if len(body) >= limit:
                            # Prometheus reads at most the limit and fails when it read all
                            # of it: a body of exactly the limit fails too.
                            raise ScrapeError(
                                "body_size_limit",
                                f"body size limit exceeded: {limit} bytes or more "
                                "(body_size_limit)",
                            )
                    return bytes(body), response.headers.get("Content-Type", "")
        except TimeoutError:
            raise ScrapeError(
                "timeout", f"scrape timed out after {self.target.timeout:g}s (scrape_timeout)"
            ) from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise ScrapeError("connection", f"{type(exc).__name__}: {exc}") from None

    def _failed(self, reason: str, message: str) -> None:
        job = self.target.job
        self.metrics.failures.labels(job.job_name, reason).inc()
        if self.state.failing != reason:  # a message may vary from scrape to scrape
            self.state.failing = reason
            log.warning(
                "scrape failed; logged again when the reason changes or the target recovers",
                extra={
                    "job": job.job_name,
                    "instance": self.target.instance,
                    "reason": reason,
                    "err": message,
                },
            )

    def _append(self, scraped: Scraped | None, ts: int, duration: float) -> None:
        """Admit the scrape's samples, the stale markers and the report series as one batch."""
        job = self.target.job
        state = self.state
        up = scraped is not None
        if up and state.failing:
            log.info(
                "scrape succeeded again",
                extra={"job": job.job_name, "instance": self.target.instance},
            )
            state.failing = ""
        batch, written = append(state.written, scraped, self.target.labels, ts, duration)
        self.metrics.up.labels(job.job_name, self.target.instance).set(1 if up else 0)
        if self._admit(batch, ts):
            state.written = written

    def _admit(self, batch: Batch, ts: int) -> bool:
        """Queue ``batch`` for every destination; False (dropped, counted) if refused."""
        job = self.target.job
        try:
            admission = self.relay.admit(batch, now_ms=ts)
            reason = "" if admission.accepted else "queue_full"
            why = f"destination {admission.busy_destination} is full"
        except SpoolError as exc:
            reason, why = "spool_error", str(exc)
        if not reason:
            if self.state.dropping:
                log.info(
                    "scraped samples are queued again",
                    extra={"job": job.job_name, "instance": self.target.instance},
                )
                self.state.dropping = ""
            return True
        self.metrics.dropped.labels(job.job_name, reason).inc(batch.point_count)
        if not self.state.dropping:
            log.warning(
                "a scrape's samples were dropped: the relay could not queue them (Prometheus' "
                "agent would keep them in its WAL; gotk-relay does not); logged once until "
                "it stops",
                extra={
                    "job": job.job_name,
                    "instance": self.target.instance,
                    "reason": reason,
                    "err": why,
                },
            )
        self.state.dropping = reason
        return False

    def end(self) -> None:
        """The target is gone (a reload removed it): end every series it wrote."""
        with contextlib.suppress(KeyError):  # never scraped: no gauge to remove
            self.metrics.up.remove(self.target.job.job_name, self.target.instance)
        if not self.state.written:
            return
        ts = self._timestamp()
        stale = stale_markers(self.state.written, {}.keys(), ts)
        if self._admit(Batch(stale), ts):
            self.state.written = {}


class Scraper:
    """Every target's loop; ``apply`` starts, keeps, restarts or ends them for a configuration."""

    def __init__(self, relay: Relay, telemetry: Telemetry) -> None:
        self.relay = relay
        self.metrics = ScrapeMetrics(telemetry)
        self.loops: dict[tuple[str, Labels, str], TargetLoop] = {}
        self._applying = asyncio.Lock()  # a SIGHUP and a /-/reload at once: one after the other
        relay.problem_sources.append(self.problems)

    def problems(self) -> list[str]:
        """Scrape loops failing on an error (a bug, not a target's failure), for /-/ready."""
        return [
            f"scrape loop of job {loop.target.job.job_name} {loop.target.instance}: "
            f"{loop.state.broken}"
            for loop in self.loops.values()
            if loop.state.broken
        ]

    async def apply(self, jobs: list[ScrapeConfig]) -> None:
        """Scrape the targets of ``jobs``: an unchanged target keeps its loop; a changed one gets
        a new loop that carries on its series (no stale markers for a change of settings, also
        of ``metrics_path``, ``params`` or ``scheme``, which make it another URL with the same
        labels); a removed one is stopped and its series end with stale markers, as Prometheus
        does for a target removed from a job it keeps (at once here, about two intervals later
        there). A whole job removed ends its targets' series too, where Prometheus 2.42 writes
        no markers (cancelling a scrape pool cancels its loops before their end-of-run
        staleness) and leaves them to fade after the lookback. (Prometheus starts a new loop
        for a new URL and stops the old one, whose stale markers come after the new loop's
        samples and are dropped as out of order.)"""
        async with self._applying:
            wanted = targets_of(jobs)
            # A new URL for a running target's labels: the target it becomes.
            heirs: dict[tuple[str, Labels], Target] = {}
            for key, new in wanted.items():
                if key not in self.loops:
                    heirs.setdefault((key[0], key[1]), new)
            # Each target on its own: one that fails (a bug) leaves no other unstarted or
            # unstopped; the first error is raised once all are done, so the reload says so.
            failed: Exception | None = None
            for key, running in list(self.loops.items()):
                target = wanted.get(key)
                if target is not None and target == running.target:
                    continue
                try:
                    del self.loops[key]
                    await running.cancel()
                    if target is None:
                        target = heirs.pop((key[0], key[1]), None)
                    if target is None:
                        running.end()
                    else:
                        self._start(target, running.state)
                except Exception as exc:
                    log.exception(
                        "applying a scrape target failed",
                        extra={"job": key[0], "instance": running.target.instance},
                    )
                    failed = failed or exc
            for key, new in wanted.items():
                if key not in self.loops:
                    try:
                        self._start(new, None)
                    except Exception as exc:
                        log.exception(
                            "starting a scrape target failed",
                            extra={"job": key[0], "instance": new.instance},
                        )
                        failed = failed or exc
            if failed is not None:
                raise failed

    def _start(self, target: Target, state: _State | None) -> None:
        loop = TargetLoop(target, self.relay, self.metrics, state)
        self.loops[target.key] = loop
        loop.start()

    async def stop(self) -> None:
        """Stop every loop (shutdown: no stale markers, as Prometheus writes none at exit)."""
        for running in self.loops.values():
            await running.cancel()
        self.loops.clear()
