"""logfmt and JSON log lines in Prometheus' style: ``ts=… caller=… level=info msg="…" key=value``.

Structured fields come from ``extra={...}`` (a trailing ``_`` is left out, for names the
``LogRecord`` keeps for itself, such as ``filename``); nothing here ever formats a secret, because
secrets never reach a log call (URLs are sanitised before they are logged).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "caller": f"{record.filename}:{record.lineno}",  # as promlog: file:line
        "level": record.levelname.lower().replace("warning", "warn"),
        "component": record.name.removeprefix("gotk_relay."),
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            # ``filename_``: a key LogRecord keeps for itself (``filename``), as Prometheus names it
            out[key.removesuffix("_")] = value
    if record.exc_info:
        out["err"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper().replace("WARN", "WARNING").replace("WARNINGING", "WARNING"))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
