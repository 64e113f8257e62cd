"""``gotk-relay migrate``: rewrite queries (``--expr`` or files) to another Flux shape, or
``--check`` that a Prometheus still holds the Flux metrics the files' queries read.

Exit codes: 0 all migrated (or nothing to do; ``--check``: every Flux query has data), 3 some
query could not be migrated exactly (``--check``: some query reads a Flux metric with no series),
1 errors (unreadable file, bad JSON/YAML, PromQL that does not parse, URL that does not answer
like Prometheus), 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..migrate.files import Rewrite

_GRAFANA_CALL = re.compile(r"\s*(label_values|query_result|label_names|metrics)\s*\(")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_MIGRATED = 3


def migrate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.check is not None:
        if args.to is not None or args.expr is not None or args.output or args.in_place:
            parser.error(
                "migrate --check URL FILE... only reads: drop --to/--expr/--output/--in-place"
            )
        if not args.files:
            parser.error("migrate --check needs at least one FILE")
        return _check(args)
    if args.to is None:
        parser.error("migrate needs --to (or --check URL)")
    if args.expr is not None:
        if args.files or args.output or args.in_place:
            parser.error("--expr takes no FILE, --output or --in-place")
        return _expr(args)
    if not args.files:
        parser.error("migrate needs --expr PROMQL or at least one FILE")
    if args.output and args.in_place:
        parser.error("--output and --in-place exclude each other")
    if "-" in args.files and (args.output or args.in_place or len(args.files) > 1):
        parser.error("FILE - (stdin) goes alone, to stdout: no --output or --in-place")
    if len(args.files) > 1 and not (args.output or args.in_place):
        parser.error("several FILEs need --output DIR or --in-place (stdout takes one file)")
    return _files(args)


def _rewrite(args: argparse.Namespace) -> Rewrite:
    from ..migrate import LabelShape, Migrated, Shape, migrate_expr, migrate_template_query

    to = Shape(args.to)
    source = Shape(args.source) if args.source else None
    label_shape = LabelShape(args.label_shape)

    def rewrite(text: str, template: bool) -> Migrated:
        fn = migrate_template_query if template else migrate_expr
        return fn(text, to, source=source, label_shape=label_shape)

    return rewrite


def _expr(args: argparse.Namespace) -> int:
    from ..migrate import NotMigratable

    rewrite = _rewrite(args)
    # A Grafana variable query (label_values(...), query_result(...)) is no PromQL: it goes
    # through the template rewrite, as it does in a dashboard.
    template = _GRAFANA_CALL.match(args.expr) is not None
    try:
        done = rewrite(args.expr, template)
    except NotMigratable as exc:
        # The wording, both ways it reads: the unchanged expression on stdout (a script
        # keeps a valid query) and, with the reason, on stderr.
        print(args.expr)
        print(f"not migratable: {args.expr}\n  reason: {exc.reason}", file=sys.stderr)
        return EXIT_NOT_MIGRATED
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(done.text)
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.buffer.read().decode("utf-8")  # bytes: \r\n stays as it is
    # newline="" keeps \r\n as it is: the rewritten file keeps its line endings.
    with open(name, encoding="utf-8", newline="") as f:
        return f.read()


def _files(args: argparse.Namespace) -> int:
    from ..migrate.files import FileFormat, FileFormatError, Status, migrate_text

    rewrite = _rewrite(args)
    fmt = FileFormat(args.format) if args.format else None
    outdir = Path(args.output) if args.output else None
    if outdir is not None:
        names = [Path(f).name for f in args.files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            print(f"error: --output: several FILEs named {', '.join(dupes)}", file=sys.stderr)
            return EXIT_ERROR
        try:
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --output {outdir}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    failed = not_migrated = False
    for name in args.files:
        try:
            text = _read(name)
            result = migrate_text(text, rewrite, name=name, fmt=fmt)
        except OSError as exc:
            print(f"error: {name}: {exc.strerror or exc}", file=sys.stderr)
            failed = True
            continue
        except (FileFormatError, UnicodeDecodeError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            failed = True
            continue
        counts = {s: sum(1 for q in result.queries if q.status is s) for s in Status}
        summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        print(f"{name} ({result.format.value}): {summary or 'no queries'}", file=sys.stderr)
        for q in result.queries:
            # a migrated query's reason is the rewrite's notes: differences it could not avoid
            reason = ("; note: " if q.status is Status.MIGRATED else ": ") + q.reason
            line = f"  {name}:{q.line}: {q.location}: {q.status.value}"
            print(line + (reason if q.reason else ""), file=sys.stderr)
        if counts[Status.INVALID]:
            # A file with a query that does not parse is not written: fix it, then run again.
            print(f"error: {name}: not written: a query does not parse", file=sys.stderr)
            failed = True
            continue
        not_migrated |= counts[Status.NOT_MIGRATABLE] > 0
        try:
            if outdir is not None:
                _write(outdir / Path(name).name, result.text, mode_from=None)
            elif args.in_place:
                if result.text != text:
                    _write(Path(name), result.text, mode_from=Path(name))
            else:
                sys.stdout.write(result.text)
                sys.stdout.flush()
        except OSError as exc:
            print(f"error: {name}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            failed = True
    if failed:
        return EXIT_ERROR
    return EXIT_NOT_MIGRATED if not_migrated else EXIT_OK


def _write(path: Path, text: str, *, mode_from: Path | None) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new one, never half)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if mode_from is not None:
            os.chmod(tmp, os.stat(mode_from).st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check(args: argparse.Namespace) -> int:
    from ..migrate import referenced_metrics
    from ..migrate.check import CheckError, Located, check
    from ..migrate.files import FileFormat, FileFormatError, detect_format, queries

    located: list[Located] = []
    for name in args.files:
        try:
            text = _read(name)
            fmt = FileFormat(args.format) if args.format else detect_format(name, text)
            located.extend(Located(name, q) for q in queries(text, fmt))
        except OSError as exc:
            print(f"error: {name}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
        except (FileFormatError, UnicodeDecodeError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    try:
        missing = check(
            located,
            args.check,
            referenced_metrics,
            window_s=args.check_window,
            timeout_s=args.timeout,
        )
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for item in missing:
        q = item.query
        print(f"{item.file}:{q.line}: {q.location}: no series for {', '.join(item.metrics)}")
    flux = sum(1 for _ in located)
    print(
        f"checked {flux} queries in {len(args.files)} file(s) against {args.check}: "
        f"{len(missing)} read a Flux metric with no series",
        file=sys.stderr,
    )
    return EXIT_NOT_MIGRATED if missing else EXIT_OK
