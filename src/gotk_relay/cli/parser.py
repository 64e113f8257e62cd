"""The command line's flags: names and messages as Prometheus' tools have them
(``--config.file``-like names), so an operator reads them without a manual.
"""

from __future__ import annotations

import argparse
import re

from .. import __version__
from ..model import Protocol

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9201"
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?$")


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT as Go's net.Listen takes it: a port from 0 to 65535, the host optional (an
    empty one, like ``0.0.0.0``, is every address: connections.start_tcp_site)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid listen address {value!r}; expected HOST:PORT")
    if int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"invalid listen address {value!r}: port {port} is over 65535"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


def _seconds(value: str) -> float:
    """A Prometheus duration (``30s``, ``1m``) or a number of seconds."""
    from ..units import parse_seconds

    try:
        return parse_seconds(float(value) if _NUMBER.match(value) else value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        help="enable POST /-/reload and POST /-/quit (SIGHUP always reloads)",
    )
    serve.add_argument(
        "--shutdown-timeout",
        dest="shutdown_timeout",
        type=_seconds,
        default=30.0,
        help="how long to finish and drain on SIGTERM before giving up: a duration (30s, "
        "1m) or seconds (default 30s)",
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

    mig = sub.add_parser(
        "migrate",
        help="rewrite queries (dashboards, rules, .promql) to another Flux metric shape",
        description=(
            "Rewrite PromQL to read another Flux object-state shape: --expr, or FILEs (Grafana "
            "dashboard JSON, Prometheus rule files and PrometheusRule manifests, .promql). "
            "--check URL lists the queries reading a Flux metric with no series at URL. "
            "Exit 0: all migrated; 3: some could not be (--check: some read no data); 1: errors."
        ),
    )
    shapes = ["legacy", "resource_info", "flux_resource_info"]
    # The command checks its flags' combinations itself and reports them with its own usage.
    mig.set_defaults(migrate_parser=mig)
    mig.add_argument(
        "files", nargs="*", metavar="FILE", help="files to rewrite; - reads stdin (alone)"
    )
    mig.add_argument("--to", choices=shapes, help="the shape to rewrite to")
    mig.add_argument(
        "--from",
        dest="source",
        choices=shapes,
        default=None,
        help="the shape the queries read (default: detected per query)",
    )
    mig.add_argument(
        "--label-shape",
        dest="label_shape",
        choices=["stored", "raw"],
        default="stored",
        help="legacy labels as Prometheus stored them (exported_namespace) or raw (namespace); "
        "as flux.label_shape (default stored)",
    )
    mig.add_argument("--expr", metavar="PROMQL", help="one expression; the result on stdout")
    mig.add_argument(
        "--format",
        choices=["grafana", "rules", "promql"],
        default=None,
        help="the FILEs' format (default: by extension, else by content)",
    )
    mig.add_argument("--output", metavar="DIR", help="write each FILE to DIR/<its name>")
    mig.add_argument("--in-place", dest="in_place", action="store_true", help="rewrite FILEs")
    mig.add_argument(
        "--check",
        metavar="URL",
        default=None,
        help="Prometheus-compatible API base URL: list the queries reading a Flux metric that "
        "has no series there",
    )
    mig.add_argument(
        "--check-window",
        dest="check_window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="--check: a metric counts when it has a series in this window (default 3600)",
    )
    mig.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="--check: HTTP timeout (default 10)",
    )

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
    sub.metavar = "{serve,check-config,send,rewrite,ksm-config,migrate}"
    return parser
