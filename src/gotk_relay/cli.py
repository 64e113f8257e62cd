"""Command line: ``serve``, ``check-config``, ``send``, ``rewrite``, ``ksm-config``, ``--version``.

Flags and messages follow Prometheus' tools (``--config.file``-like names, promtool-like
``check-config`` output), so an operator reads them without a manual.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, logs
from .model import Protocol

if TYPE_CHECKING:
    from .config import TLSConfig

log = logging.getLogger("gotk_relay.cli")

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9201"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid listen address {value!r}; expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gotk-relay",
        description="Prometheus remote-write relay that rewrites Flux metrics and fans out.",
    )
    parser.add_argument("--version", action="version", version=f"gotk-relay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the relay")
    serve.add_argument(
        "--config",
        "--config.file",
        dest="config",
        help="configuration file (default: the embedded default config)",
    )
    serve.add_argument(
        "--listen-address",
        "--web.listen-address",
        dest="listen",
        type=_listen,
        default=None,
        help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN_ADDRESS})",
    )
    serve.add_argument(
        "--web.enable-lifecycle",
        dest="lifecycle",
        action="store_true",
        help="enable POST /-/reload (SIGHUP always reloads)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        dest="shutdown_timeout",
        type=float,
        default=30.0,
        help="seconds to drain queues on SIGTERM before giving up (default 30)",
    )
    serve.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    serve.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"]
    )

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("files", nargs="+", metavar="FILE")

    send = sub.add_parser(
        "send", help="send a Prometheus text-format file as one remote-write request"
    )
    send.add_argument("file", help="text exposition file, - for stdin")
    send.add_argument(
        "--url", required=True, help="remote-write URL, e.g. http://127.0.0.1:9201/api/v1/write"
    )
    send.add_argument(
        "--protobuf-message",
        default=Protocol.V1.value,
        choices=[message.value for message in Protocol],
    )
    send.add_argument(
        "--timestamp",
        type=int,
        default=None,
        help="milliseconds for lines without a timestamp (default: now)",
    )
    # The remote_write client settings a secured receiver needs; secrets come from files only,
    # so they never show in a process list or a shell history.
    send.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra request header (repeatable), e.g. X-Scope-OrgID=team-a",
    )
    send.add_argument(
        "--bearer-token-file", metavar="FILE", help="send Authorization: Bearer <file content>"
    )
    send.add_argument("--basic-auth-username", metavar="USER", help="basic auth user name")
    send.add_argument(
        "--basic-auth-password-file", metavar="FILE", help="basic auth password, from a file"
    )
    send.add_argument("--ca-file", metavar="FILE", help="CA to verify the server with")
    send.add_argument(
        "--cert-file", metavar="FILE", help="client certificate (mTLS), with --key-file"
    )
    send.add_argument("--key-file", metavar="FILE", help="client certificate key (mTLS)")
    send.add_argument("--server-name", help="server name to verify the certificate against")
    send.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify the server"
    )

    rewrite = sub.add_parser(
        "rewrite", help="print what the relay would forward for a text-format input"
    )
    rewrite.add_argument(
        "input", nargs="?", default="-", help="text exposition file (default: stdin)"
    )
    rewrite.add_argument(
        "--config", help="configuration file (default: the embedded default config)"
    )
    rewrite.add_argument(
        "--destination", help="also apply this remote_write destination's write_relabel_configs"
    )
    rewrite.add_argument(
        "--timestamp",
        type=int,
        default=None,
        help="milliseconds for lines without a timestamp (default: now)",
    )
    rewrite.add_argument(
        "--explain", action="store_true", help="show each relabel rule's effect on stderr"
    )

    ksm = sub.add_parser(
        "ksm-config", help="print the kube-state-metrics config that exposes gotk_resource_info"
    )
    ksm.add_argument("--kinds", help="comma-separated Flux kinds (default: all)")
    ksm.add_argument(
        "--format", dest="fmt", default="configmap", choices=["configmap", "helm-values"]
    )
    ksm.add_argument("--namespace", help="namespace of the ConfigMap")

    # Internal: an ingest worker, started by `serve` when receiver.workers > 1 (scan_worker.py).
    # Not listed in --help: no one types it.
    worker = sub.add_parser("worker")
    worker.add_argument("--socket", required=True, help="the core's Unix socket")
    worker.add_argument("--listen-address", dest="listen", type=_listen, required=True)
    worker.add_argument("--parent-fd", dest="parent_fd", type=int, default=None)
    worker.add_argument("--index", type=int, default=0)
    worker.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    worker.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"]
    )
    sub.metavar = "{serve,check-config,send,rewrite,ksm-config}"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "check-config":
        return check_config(args.files)
    if args.command == "send":
        return send(args)
    if args.command == "rewrite":
        return rewrite(args)
    if args.command == "ksm-config":
        return ksm_config(args)
    if args.command == "worker":
        return worker(args)
    parser.error(f"unknown command {args.command}")
    return 2


def check_config(files: list[str]) -> int:
    from .config import ConfigError, load_file, referenced_files

    failed = False
    for name in files:
        print(f"Checking {name}")
        try:
            config = load_file(name)
        except ConfigError as exc:
            failed = True
            print(f"  FAILED: {exc}")
            continue
        # As promtool does: every file the configuration names must be readable. Only the key,
        # the path and the reason are shown, never what a file holds.
        unreadable = []
        for key, path in referenced_files(config):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                unreadable.append(f"{name}: {key}: unable to read {path}: {exc.strerror}")
        if unreadable:
            failed = True
            print("  FAILED: " + "\n".join(unreadable))
            continue
        print(
            f"  SUCCESS: {len(config.remote_write)} remote_write destination(s), "
            f"{len(config.relabel_configs)} relabel rule(s), flux mode {config.flux.mode}, "
            f"federate {'on' if config.federate.enabled else 'off'}"
        )
    return 1 if failed else 0


def send(args: argparse.Namespace) -> int:
    from .wire import text
    from .wire.errors import DecodeError

    content = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    now_ms = args.timestamp if args.timestamp is not None else int(time.time() * 1000)
    try:
        batch = text.parse(content, now_ms)
    except DecodeError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_send(batch, args))


def _send_client(args: argparse.Namespace) -> tuple[dict[str, str], TLSConfig]:
    """The headers (auth included) and TLS settings of ``send``'s flags, as a ``remote_write``
    entry with the same settings would use them; ConfigError/ValueError when they do not fit."""
    from .config import Authorization, BasicAuth, ConfigError, TLSConfig
    from .destinations.http import auth_headers

    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--header {item!r}: expected NAME=VALUE")
        headers[name.strip()] = value
    if args.bearer_token_file and (args.basic_auth_username or args.basic_auth_password_file):
        raise ConfigError("at most one of --bearer-token-file and --basic-auth-* can be given")
    basic = None
    if args.basic_auth_username or args.basic_auth_password_file:
        basic = BasicAuth(
            username=args.basic_auth_username or "", password_file=args.basic_auth_password_file
        )
    bearer = (
        Authorization(credentials_file=args.bearer_token_file) if args.bearer_token_file else None
    )
    tls = TLSConfig(
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        server_name=args.server_name,
        insecure_skip_verify=args.insecure_skip_verify,
    )
    return {**headers, **auth_headers(basic, bearer)}, tls


async def _send(batch: object, args: argparse.Namespace) -> int:
    import ssl
    from http import HTTPStatus

    from pydantic import ValidationError

    from .config import ConfigError
    from .destinations.http import HTTPEndpoint, one_line
    from .destinations.remote_write import encode_request
    from .errors import SendError
    from .model import Batch

    assert isinstance(batch, Batch)
    try:
        extra, tls = _send_client(args)
        endpoint = HTTPEndpoint(args.url, tls, timeout=30.0)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1
    except (ConfigError, OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    body, headers = encode_request(batch, Protocol(args.protobuf_message))
    try:
        status, _, answer = await endpoint.post(body, {**extra, **headers}, read_limit=4096)
    except SendError as exc:
        print(f"error: {args.url}: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await endpoint.close()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    line = f"{status} {reason}: sent {len(batch.series)} series, {batch.sample_count} samples"
    if 200 <= status < 300:
        print(line)
        return 0
    print(f"{line}; {one_line(answer)}", file=sys.stderr)
    return 1


def rewrite(args: argparse.Namespace) -> int:
    """Run the pipeline offline: the same engine as ``serve``, with text in and text out."""
    from .config import ConfigError, destination_names, load
    from .model import iter_points, label_value
    from .pipeline import Pipeline
    from .wire import text
    from .wire.errors import DecodeError
    from .wire.labels import describe

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = destination_names(config)
    if args.destination and args.destination not in names:
        print(f"error: no remote_write destination named {args.destination!r}", file=sys.stderr)
        return 1
    content = sys.stdin.read() if args.input == "-" else Path(args.input).read_text("utf-8")
    now_ms = args.timestamp if args.timestamp is not None else int(time.time() * 1000)
    try:
        batch = text.parse(content, now_ms)
    except DecodeError as exc:
        print(f"error: {args.input}: {exc}", file=sys.stderr)
        return 1
    pipeline = Pipeline(config)
    if args.explain:
        for series in batch.series:
            for step in pipeline.relabel.explain(series.labels):
                after = "dropped" if step.after is None else describe(step.after)
                print(
                    f"relabel_configs[{step.rule_index}] {step.action}: "
                    f"{describe(step.before)} -> {after}",
                    file=sys.stderr,
                )
    out = pipeline.rewrite(batch, now_ms)
    if args.destination:
        out = pipeline.for_destination(args.destination, out)
    metadata = {m.family: m for m in out.metadata}
    points = []
    for labels, ts, value in iter_points(out):
        if isinstance(value, float):
            points.append((labels, value, ts))
        else:
            print(
                f"# native histogram {label_value(labels, '__name__')} at {ts} not shown",
                file=sys.stderr,
            )
    sys.stdout.write(text.render(points, metadata))
    return 0


def ksm_config(args: argparse.Namespace) -> int:
    from .rules import ksm_config as ksm

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    try:
        sys.stdout.write(ksm.render(kinds, args.fmt, namespace=args.namespace))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional: plain asyncio works, a little slower
        pass


def _tune_runtime() -> None:
    """uvloop, and glibc keeping freed request buffers for reuse (allocator.py)."""
    from .allocator import keep_freed_memory

    _install_uvloop()
    if not keep_freed_memory():
        log.debug("glibc allocator settings left as they are (not glibc, or MALLOC_* set)")


def worker(args: argparse.Namespace) -> int:
    from . import scan_worker

    logs.setup(args.log_level, args.log_format)
    _tune_runtime()
    return asyncio.run(scan_worker.run(args.socket, args.listen, args.parent_fd, args.index))


def serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load

    logs.setup(args.log_level, args.log_format)
    try:
        config = load(args.config)
    except ConfigError as exc:
        log.error("error loading config", extra={"err": str(exc)})
        return 1
    _tune_runtime()
    from .delivery.spool import SpoolError

    try:
        return asyncio.run(_serve(args, config))
    except SpoolError as exc:
        log.error("cannot start", extra={"err": str(exc)})
        return 1


async def _serve(args: argparse.Namespace, config: object) -> int:
    from aiohttp import web

    from .access import Authenticator, ServerTLS
    from .config import Config, ConfigError, load_file
    from .connections import GuardedRunner, raise_fd_limit
    from .relay import Relay
    from .server import STATE, make_app
    from .telemetry import Telemetry
    from .wire import rw1_bytes
    from .worker_pool import Generation, WorkerPool, add_internal_routes

    assert isinstance(config, Config)
    tls = config.receiver.tls
    try:  # before the relay opens its spool: an unusable secret or certificate stops here
        authenticator = Authenticator(config.receiver.auth)
        ssl_context = ServerTLS(tls).context if tls is not None else None
    except ConfigError as exc:
        log.error("cannot start", extra={"err": str(exc)})
        return 1
    telemetry = Telemetry()
    relay = Relay(config, telemetry)
    workers = config.receiver.workers  # fixed for the life of the process
    generation = Generation()  # the workers' view of the configuration (worker_pool.py)

    async def reload() -> None:
        if not args.config:
            log.info("no --config file; nothing to reload")
            return
        try:
            new = load_file(args.config)
            authenticator.configure(new.receiver.auth)  # re-reads the secret files
        except ConfigError as exc:
            telemetry.reload_success.set(0)
            log.error("failed to reload config; keeping the running one", extra={"err": str(exc)})
            raise
        if new.receiver.tls != tls:
            log.warning("receiver.tls changed; it takes effect when the relay restarts")
        if new.receiver.workers != workers:
            log.warning("receiver.workers changed; it takes effect when the relay restarts")
        relay.reload(new)
        generation.bump()  # no await since relay.reload: workers see it on their next request
        telemetry.reload_success.set(1)
        telemetry.reload_timestamp.set(time.time())
        log.info("completed loading of configuration file", extra={"file": args.config})

    app = make_app(
        relay, telemetry, reload, enable_lifecycle=args.lifecycle, authenticator=authenticator
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
    host, port = args.listen or _listen(DEFAULT_LISTEN_ADDRESS)
    # With workers every process listens on the address (SO_REUSEPORT, the kernel spreads the
    # connections); the core also listens on a Unix socket in a private (0700) directory, for
    # the workers only.
    site = web.TCPSite(
        runner, host, port, backlog=1024, ssl_context=ssl_context, reuse_port=workers > 1 or None
    )
    private_dir = tempfile.mkdtemp(prefix="gotk-relay-") if workers > 1 else None
    sites: list[web.BaseSite] = [site]
    if private_dir is not None:
        sites.append(web.UnixSite(runner, os.path.join(private_dir, "core.sock")))
    try:
        for each in sites:
            await each.start()
    except OSError as exc:
        log.error("failed to listen", extra={"address": f"{host}:{port}", "err": exc.strerror})
        await runner.cleanup()
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
        return 1
    relay.start()
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
            "tls": "off" if tls is None else ("mtls" if tls.client_ca_file else "on"),
            "auth": (authenticator.scheme or "none").lower(),
            "workers": workers,
            "fd_limits": f"(soft={fd_soft}, hard={fd_hard})",
            "max_connections": runner.max_connections,
            # False: installed without gcc/Python headers, or GOTK_RELAY_NO_EXTENSIONS set
            "scan_accelerator": rw1_bytes.NATIVE,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        task = loop.create_task(reload())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    log.info(
        "received shutdown signal; no longer accepting writes, draining queues",
        extra={"timeout_s": args.shutdown_timeout},
    )
    if pool is not None:
        # First the workers: they stop taking connections and finish the requests they hold,
        # which the core still admits; then the core stops accepting and drains as always.
        await pool.stop(min(10.0, args.shutdown_timeout))
    app[STATE]["accepting"] = False
    for each in sites:
        await each.stop()
    await relay.stop(args.shutdown_timeout)
    await runner.cleanup()
    if private_dir is not None:
        shutil.rmtree(private_dir, ignore_errors=True)
    log.info("see you next time!")
    return 0
