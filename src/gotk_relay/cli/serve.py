"""``serve``: the relay's process from start to drain: configuration, runtime tuning, the HTTP
server and its sites, the ingest workers, the scrape loops (``scrape_configs``), reload on
SIGHUP and ``/-/reload``, and shutdown on SIGTERM. ``worker`` is one ingest worker, started by
``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable

from .. import __version__, logs
from .parser import DEFAULT_LISTEN_ADDRESS, listen_address

# Log lines say component=cli, as before the command line was a package.
log = logging.getLogger("gotk_relay.cli")


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional: plain asyncio works, a little slower
        pass


NO_CONFIG_FILE = "no --config file: the relay runs its embedded default config, nothing to reload"


def _tune_runtime() -> None:
    """uvloop, and glibc keeping freed request buffers for reuse (allocator.py)."""
    from ..allocator import keep_freed_memory

    _install_uvloop()
    if not keep_freed_memory():
        log.debug("glibc allocator settings left as they are (not glibc, or MALLOC_* set)")


def worker(args: argparse.Namespace) -> int:
    from .. import scan_worker

    logs.setup(args.log_level, args.log_format)
    _tune_runtime()
    return asyncio.run(scan_worker.run(args.socket, args.listen, args.parent_fd, args.index))


def serve(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load

    logs.setup(args.log_level, args.log_format)
    try:
        config = load(args.config)
    except ConfigError as exc:
        log.error("error loading config", extra={"err": str(exc)})
        return 1
    for warning in config.warnings():  # as check-config prints them
        log.warning(warning)
    _tune_runtime()
    from ..delivery.spool import SpoolError

    try:
        return asyncio.run(_serve(args, config))
    except SpoolError as exc:
        log.error("cannot start", extra={"err": str(exc)})
        return 1


async def _serve(args: argparse.Namespace, config: object) -> int:
    from aiohttp import web

    from ..access import Authenticator, ServerTLS, listener_tls_metric
    from ..config import Config, ConfigError, load_file
    from ..connections import GuardedRunner, raise_fd_limit, start_tcp_site
    from ..relay import Relay
    from ..scrape import Scraper
    from ..server import STATE, make_app
    from ..telemetry import Telemetry
    from ..wire import rw1_bytes, snappy
    from ..worker_pool import Generation, WorkerPool, add_internal_routes

    assert isinstance(config, Config)
    tls = config.receiver.tls
    try:  # before the relay opens its spool: an unusable secret or certificate stops here
        authenticator = Authenticator(config.receiver.auth)
        server_tls = ServerTLS(tls) if tls is not None else None
    except ConfigError as exc:
        log.error("cannot start", extra={"err": str(exc)})
        return 1
    ssl_context = server_tls.context if server_tls is not None else None
    telemetry = Telemetry()
    telemetry.add_state_collector(lambda: [listener_tls_metric(server_tls)])
    try:  # a destination's tls_config file that cannot be used
        relay = Relay(config, telemetry)
    except ConfigError as exc:
        log.error("cannot start", extra={"err": str(exc)})
        return 1
    scraper = Scraper(relay, telemetry)  # scrape_configs: started with the relay, reloaded
    workers = config.receiver.workers  # fixed for the life of the process
    generation = Generation()  # the workers' view of the configuration (worker_pool.py)

    async def reload() -> None:
        if not args.config:  # said, not ignored: a reloader beside it must not think it worked
            telemetry.reload_success.set(0)
            log.error("failed to reload config", extra={"err": NO_CONFIG_FILE})
            raise ConfigError(NO_CONFIG_FILE)
        started = time.monotonic()
        try:  # everything in it: an error is logged and in the gauge, whatever raised it
            log.info("loading configuration file", extra={"filename_": args.config})
            new = load_file(args.config)
            # The secret files read first, the rules and destinations swapped, then the
            # credentials: each step that can fail does before anything running changes.
            Authenticator(new.receiver.auth)
            await apply(new)
            authenticator.configure(new.receiver.auth)  # re-reads the secret files
            log.info(  # as Prometheus says it, once everything is in place
                "completed loading of configuration file",
                extra={
                    "filename_": args.config,
                    "totalDuration": f"{(time.monotonic() - started) * 1000:.3f}ms",
                },
            )
        except ConfigError as exc:
            telemetry.reload_success.set(0)
            log.error("failed to reload config; keeping the running one", extra={"err": str(exc)})
            raise
        except Exception as exc:  # a bug: seen in the log and the gauge, as a bad file is
            telemetry.reload_success.set(0)
            log.error("failed to reload config", extra={"err": repr(exc)}, exc_info=True)
            raise ConfigError(f"unexpected error while reloading: {exc!r}") from exc

    async def apply(new: Config) -> None:
        if new.receiver.tls != tls:
            log.warning("receiver.tls changed; it takes effect when the relay restarts")
        if new.receiver.workers != workers:
            log.warning("receiver.workers changed; it takes effect when the relay restarts")
        for warning in new.warnings():
            log.warning(warning)
        relay.reload(new)
        generation.bump()  # no await since relay.reload: workers see it on their next request
        await scraper.apply(relay.config.scrape_configs)
        telemetry.reload_success.set(1)
        telemetry.reload_timestamp.set(time.time())

    stop = asyncio.Event()
    stopped_by: list[str] = []  # what asked for the shutdown, for its log line

    def stopper(why: str) -> Callable[[], None]:
        def request_stop() -> None:
            stopped_by.append(why)
            stop.set()

        return request_stop

    app = make_app(
        relay,
        telemetry,
        reload,
        enable_lifecycle=args.lifecycle,
        authenticator=authenticator,
        quitter=stopper("a termination request via /-/quit"),  # as SIGTERM
    )
    if workers > 1:
        add_internal_routes(app, generation)
    fd_soft, fd_hard = raise_fd_limit()
    runner = GuardedRunner(
        app,
        receiver=lambda: relay.config.receiver,  # the current one: a reload applies
        registry=telemetry.registry,
        fds=fd_soft,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    host, port = args.listen or listen_address(DEFAULT_LISTEN_ADDRESS)
    # With workers every process listens on the address (SO_REUSEPORT, the kernel spreads the
    # connections); the core also listens on a Unix socket in a private (0700) directory, for
    # the workers only.
    private_dir = tempfile.mkdtemp(prefix="gotk-relay-") if workers > 1 else None
    sites: list[web.BaseSite] = []
    try:
        sites.append(
            await start_tcp_site(
                runner, host, port, ssl_context=ssl_context, reuse_port=workers > 1 or None
            )
        )
        if private_dir is not None:
            unix = web.UnixSite(runner, os.path.join(private_dir, "core.sock"))
            await unix.start()
            sites.append(unix)
    except OSError as exc:
        log.error("failed to listen", extra={"address": f"{host}:{port}", "err": exc.strerror})
        await runner.cleanup()
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
        return 1
    relay.start()
    await scraper.apply(config.scrape_configs)
    pool: WorkerPool | None = None
    if private_dir is not None:
        pool = WorkerPool(
            workers - 1,
            os.path.join(private_dir, "core.sock"),
            (host, port),
            args.log_level,
            args.log_format,
        )
        pool.start()
        relay.problem_sources.append(pool.problems)
        telemetry.add_state_collector(pool.metrics)
    telemetry.reload_success.set(1)
    telemetry.reload_timestamp.set(time.time())
    log.info(
        "gotk-relay started",
        extra={
            "version": __version__,
            "address": f"{host}:{port}",
            "config": args.config or "<embedded default>",
            "destinations": ",".join(relay.names) or "none",
            "federate": relay.federate is not None,
            "flux_mode": config.flux.mode,
            "scrape_targets": len(scraper.loops),
            "tls": "off" if tls is None else ("mtls" if tls.client_ca_file else "on"),
            "auth": (authenticator.scheme or "none").lower(),
            "workers": workers,
            "fd_limits": f"(soft={fd_soft}, hard={fd_hard})",
            "max_connections": runner.max_connections,
            # False: installed without gcc/Python headers, or GOTK_RELAY_NO_EXTENSIONS set
            "scan_accelerator": rw1_bytes.NATIVE,
            # cramjam: libsnappy.so.1 missing (or the extension not built)
            "compressor": snappy.COMPRESSOR,
        },
    )
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        task = loop.create_task(reload())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stopper("SIGTERM"))
    loop.add_signal_handler(signal.SIGINT, stopper("SIGINT"))
    await stop.wait()
    # At warn, as Prometheus logs "Received SIGTERM, exiting gracefully...".
    log.warning(
        f"received {stopped_by[0]}, exiting gracefully: no longer accepting writes, "
        "draining queues",
        extra={"timeout_s": args.shutdown_timeout},
    )
    # --shutdown-timeout bounds the whole shutdown, as the pod's termination grace counts on.
    deadline = loop.time() + args.shutdown_timeout
    await scraper.stop()  # no new scrapes while the queues drain
    if pool is not None:
        # First the workers: they stop taking connections and finish the requests they hold,
        # which the core still admits; then the core stops accepting and drains as always.
        await pool.stop(min(10.0, args.shutdown_timeout))
    app[STATE]["accepting"] = False
    for each in sites:
        await each.stop()
    await relay.stop(max(0.0, deadline - loop.time()))
    await runner.cleanup_within(deadline - loop.time())
    if private_dir is not None:
        shutil.rmtree(private_dir, ignore_errors=True)
    log.info("see you next time!")
    return 0
