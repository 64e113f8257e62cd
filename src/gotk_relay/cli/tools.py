"""The one-shot commands: ``check-config`` (promtool-like output), ``send`` (a text file as one
remote-write request), ``rewrite`` (the pipeline offline, text in and text out) and
``ksm-config``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import TLSConfig


def check_config(files: list[str]) -> int:
    from ..access import Authenticator, ServerTLS
    from ..config import ConfigError, load_file, referenced_files

    failed = False
    for name in files:
        print(f"Checking {name}")
        try:
            config = load_file(name)
        except ConfigError as exc:
            failed = True
            print(f"  FAILED: {exc}", file=sys.stderr)  # as promtool writes it
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
            print("  FAILED: " + "\n".join(unreadable), file=sys.stderr)
            continue
        try:  # what serve refuses at start: an empty secret, a certificate that does not load
            Authenticator(config.receiver.auth)
            if config.receiver.tls is not None:
                ServerTLS(config.receiver.tls)
        except ConfigError as exc:
            failed = True
            print(f"  FAILED: {exc}", file=sys.stderr)  # as promtool writes it
            continue
        for warning in config.warnings():  # valid, so not a failure: exit 0
            print(f"  WARNING: {warning}")
        destinations = ", ".join(
            f"{len(found)} {kind}"
            for kind, found in (
                ("remote_write", config.remote_write),
                ("datadog", config.datadog),
                ("otlp", config.otlp),
            )
            if found
        )
        print(
            f"  SUCCESS: destinations: {destinations or 'none'}; "
            f"{len(config.relabel_configs)} relabel rule(s), "
            f"{len(config.scrape_configs)} scrape job(s), flux mode {config.flux.mode}, "
            f"federate {'on' if config.federate.enabled else 'off'}"
        )
    return 1 if failed else 0


def send(args: argparse.Namespace) -> int:
    from ..wire import text
    from ..wire.errors import DecodeError

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
    from ..config import Authorization, BasicAuth, ConfigError, TLSConfig
    from ..destinations.http import auth_headers
    from ..errors import SendError

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
    try:
        return {**headers, **auth_headers(basic, bearer)}, tls
    except SendError as exc:  # a secret file that cannot be read: a usage error here
        raise ConfigError(exc.detail) from None


async def _send(batch: object, args: argparse.Namespace) -> int:
    import ssl
    from http import HTTPStatus

    from pydantic import ValidationError

    from ..config import ConfigError
    from ..destinations.http import HTTPEndpoint, one_line
    from ..destinations.remote_write import encode_request
    from ..errors import SendError
    from ..model import Batch, Protocol

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
    from ..config import ConfigError, destination_names, load
    from ..model import iter_points, label_value
    from ..pipeline import Pipeline
    from ..wire import text
    from ..wire.errors import DecodeError
    from ..wire.labels import describe

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
    from ..rules import ksm_config as ksm

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    try:
        sys.stdout.write(ksm.render(kinds, args.fmt, namespace=args.namespace))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
