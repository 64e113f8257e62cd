"""The command line's flags: names and messages as Prometheus' tools have them
(``--config.file``-like names), so an operator reads them without a manual.
"""

from __future__ import annotations

import argparse

from .. import __version__
from ..model import Protocol

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9201"


def listen_address(value: str) -> tuple[str, int]:
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
        type=listen_address,
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
    worker.add_argument("--listen-address", dest="listen", type=listen_address, required=True)
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
