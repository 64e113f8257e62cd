"""``gotk-relay migrate --check URL FILE...``: does a Prometheus still hold what the queries read?

Every query of the files is asked which Flux metrics it reads (``referenced_metrics``); the
Prometheus-compatible API at URL is asked, once, which of those metric names have series in a
recent window (``/api/v1/label/__name__/values`` with a ``match[]`` per name and a time range:
one small answer, however many objects there are); every query reading a name with no series
there is listed. Prometheus, VictoriaMetrics, Thanos and Mimir all answer that endpoint.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .files import Query

DEFAULT_WINDOW_S = 3600.0
DEFAULT_TIMEOUT_S = 10.0
_MAX_ANSWER = 16 << 20  # bytes; the answer lists at most a few names


class CheckError(Exception):
    """The URL cannot be asked (no answer, not a Prometheus API, an error status)."""


@dataclass(frozen=True)
class Located:
    file: str
    query: Query


@dataclass(frozen=True)
class Missing:
    file: str
    query: Query
    metrics: tuple[str, ...]  # the Flux metrics it reads that have no series at the URL


def template_inner(text: str) -> str | None:
    """The PromQL inside a Grafana variable query: ``label_values(SEL, label)`` gives SEL,
    ``query_result(EXPR)`` gives EXPR, ``label_values(label)`` and ``metrics(re)`` give None (they
    read no series of a given metric), anything else is PromQL itself."""
    stripped = text.strip()
    for name in ("label_values", "query_result", "metrics", "label_names"):
        if stripped.startswith(name) and stripped[len(name) :].lstrip().startswith("("):
            inner = stripped[stripped.index("(") + 1 :]
            if not inner.rstrip().endswith(")"):
                return stripped  # not Grafana's form: let the PromQL parser say what is wrong
            inner = inner.rstrip()[:-1]
            if name == "query_result":
                return inner
            if name != "label_values":
                return None
            cut = _last_top_level_comma(inner)
            return None if cut < 0 else inner[:cut]
    return stripped


def _last_top_level_comma(text: str) -> int:
    depth, quote, last, escaped = 0, "", -1, False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            last = i
    return last


def metrics_read(query: Query, referenced: Callable[[str], frozenset[str]]) -> frozenset[str]:
    """The Flux metrics ``query`` reads; ValueError when it does not parse."""
    text = template_inner(query.text) if query.template else query.text.strip()
    return referenced(text) if text else frozenset()


def existing_metrics(
    url: str,
    names: Iterable[str],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    now: float | None = None,
) -> frozenset[str]:
    """Which of ``names`` have at least one series at ``url`` in the last ``window_s``."""
    wanted = sorted(set(names))
    if not wanted:
        return frozenset()
    end = time.time() if now is None else now
    params = [("match[]", name) for name in wanted]
    params += [("start", f"{end - window_s:.3f}"), ("end", f"{end:.3f}")]
    base = url.rstrip("/")
    endpoint = f"{base}/api/v1/label/__name__/values?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(_MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", "replace").strip()
        raise CheckError(
            f"{base}: HTTP {exc.code} from /api/v1/label/__name__/values: {detail}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckError(f"{base}: no answer: {reason}") from exc
    if len(body) > _MAX_ANSWER:
        raise CheckError(f"{base}: answer larger than {_MAX_ANSWER} bytes")
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise CheckError(f"{base}: does not answer like a Prometheus API (not JSON)") from exc
    if (
        not isinstance(answer, dict)
        or answer.get("status") != "success"
        or not isinstance(answer.get("data"), list)
    ):
        raise CheckError(
            f"{base}: does not answer like a Prometheus API "
            f"(expected status success and a list of names): {body[:200]!r}"
        )
    return frozenset(name for name in answer["data"] if isinstance(name, str)) & set(wanted)


def check(
    queries: Iterable[Located],
    url: str,
    referenced: Callable[[str], frozenset[str]],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    now: float | None = None,
) -> list[Missing]:
    """Every query that reads a Flux metric with no series at ``url``, in the given order.

    ValueError (with the file and location) when a query does not parse; CheckError when the
    URL cannot be asked."""
    reads: list[tuple[Located, frozenset[str]]] = []
    for item in queries:
        try:
            reads.append((item, metrics_read(item.query, referenced)))
        except ValueError as exc:
            raise ValueError(
                f"{item.file}:{item.query.line}: {item.query.location}: {exc}"
            ) from exc
    names = frozenset().union(*(m for _, m in reads)) if reads else frozenset()
    present = existing_metrics(url, names, window_s=window_s, timeout_s=timeout_s, now=now)
    return [
        Missing(item.file, item.query, tuple(sorted(metrics - present)))
        for item, metrics in reads
        if metrics - present
    ]
