"""Command line: ``serve``, ``check-config``, ``send``, ``rewrite``, ``ksm-config``, ``migrate``,
``--version``.

Modules, in the order they build on each other: ``parser`` (the flags), ``tools`` (the one-shot
commands), ``serve`` (the relay's process, and an ingest worker's); ``main`` here picks one.
"""

from __future__ import annotations

from .parser import DEFAULT_LISTEN_ADDRESS, build_parser
from .serve import serve, worker
from .tools import check_config, ksm_config, rewrite, send

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "build_parser",
    "check_config",
    "ksm_config",
    "main",
    "rewrite",
    "send",
    "serve",
    "worker",
]


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
    if args.command == "migrate":
        from .migrate import migrate

        return migrate(args, args.migrate_parser)
    if args.command == "worker":
        return worker(args)
    parser.error(f"unknown command {args.command}")
    return 2
