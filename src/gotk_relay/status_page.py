"""The status page (``GET /``, ``GET /status.json``): what the relay is doing, at a glance.

Four sections: each destination's state (healthy, failing, blocked), queue and spool fill,
oldest unsent sample and last error; the Flux objects the rules track (kind, namespace, name,
Ready, suspended, source shape, last seen), filtered and paginated on the server; the refused
write requests by reason with their last few examples; and the running configuration as YAML
with every secret shown as ``<secret>``.

Everything here is a pure function except ``relay_view`` (it reads the running relay, on the
event loop: cheap) and ``ObjectIndex``, which keeps the sorted rows of the tracked objects
between requests. At 100,000 objects describing
and sorting them costs a few hundred milliseconds of Python, so it is done in a thread (the
server's render thread), at most once per ``INDEX_MAX_AGE`` seconds however many pages are
asked for, and a request then only filters the rows (when it has a filter) and renders
``per_page`` of them. Every value printed is HTML-escaped: label values are the senders' to
choose.
"""

from __future__ import annotations

import asyncio
import heapq
import html
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, SecretStr

from . import __version__
from .config import Config, DatadogConfig, sanitize_url
from .delivery.sender import LastError
from .destinations.federate import SORT_RUN
from .relay import Relay
from .rules.flux import FluxRewriter, Row, Tracked, TrackedObjects
from .rules.flux.tracked import SHAPES, tracked_of
from .telemetry import Refused

SECRET: Final = "<secret>"
DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 1000
MAX_QUERY: Final = 256  # characters of ?q=
DEFAULT_REFRESH: Final = 10  # seconds between the page's own reloads
MAX_REFRESH: Final = 3600
INDEX_MAX_AGE: Final = 5.0  # seconds a sorted index of the tracked objects is reused
READY_VALUES: Final = ("True", "False", "Unknown")

# Configuration keys whose values are secrets wherever they appear (SecretStr fields dump as
# "**********", caught below too); header values may be vendor keys (otlp's, Datadog's).
_SECRET_KEYS: Final = frozenset(
    ("password", "credentials", "api_key", "bearer_token", "token", "secret", "app_key")
)
_URL_KEYS: Final = frozenset(("url", "proxy_url"))
_MASKED: Final = "**********"  # pydantic's SecretStr in a JSON dump


class QueryError(ValueError):
    """A query parameter of the status page that cannot be used (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ObjectQuery:
    """Which tracked objects to show: a filter and a page."""

    q: str = ""  # substring of kind, namespace or name (case-insensitive)
    ready: str = ""  # "", or one of READY_VALUES
    suspended: str = ""  # "", "true" or "false"
    shape: str = ""  # "", or one of tracked.SHAPES (an object reported by both matches both)
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.ready or self.suspended or self.shape)

    def params(self, **change: object) -> dict[str, str]:
        """The query string's parameters (defaults left out), with ``change`` applied."""
        values = {**asdict(self), **change}
        defaults = asdict(ObjectQuery())
        return {k: str(v) for k, v in values.items() if v != defaults[k]}

    def matches(self, row: Row, q: str) -> bool:
        """Whether a row (``tracked.Row``) passes; ``q``: ``self.q`` lower-cased."""
        kind, namespace, name, shape, ready, suspended, _ = row
        if self.ready and ready != self.ready:
            return False
        if self.suspended and suspended != (self.suspended == "true"):
            return False
        if self.shape and self.shape not in shape.split("+"):
            return False
        return not q or q in f"{kind}/{namespace}/{name}".lower()


def _integer(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{key}={raw[:32]!r}: not an integer") from None
    if not low <= value <= high:
        raise QueryError(f"{key}={value}: must be from {low} to {high}")
    return value


def _choice(params: Mapping[str, str], key: str, allowed: Sequence[str]) -> str:
    raw = params.get(key, "")
    if raw == "":
        return ""
    for value in allowed:
        if raw.lower() == value.lower():
            return value
    raise QueryError(f"{key}={raw[:32]!r}: must be one of {', '.join(allowed)}")


def parse_query(params: Mapping[str, str]) -> ObjectQuery:
    """The objects' filter and page from the request's query (``QueryError``: answer 400)."""
    q = params.get("q", "")
    if len(q) > MAX_QUERY:
        raise QueryError(f"q: {len(q)} characters; at most {MAX_QUERY}")
    return ObjectQuery(
        q=q,
        ready=_choice(params, "ready", READY_VALUES),
        suspended=_choice(params, "suspended", ("true", "false")),
        shape=_choice(params, "shape", SHAPES),
        page=_integer(params, "page", 1, 1, 1 << 31),
        per_page=_integer(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
    )


def parse_refresh(params: Mapping[str, str]) -> int:
    """``?refresh=`` seconds between the page's own reloads (0: none)."""
    return _integer(params, "refresh", DEFAULT_REFRESH, 0, MAX_REFRESH)


# -- the tracked objects ------------------------------------------------------------------


def sorted_rows(tracked: TrackedObjects) -> list[Row]:
    """Every tracked object's row, by kind, namespace and name (O(n log n): off the loop).

    Sorted in short runs, then merged, as /federate's render does: one sorted() over 100,000
    rows holds the GIL for its whole length (measured: a 49 ms stall of the event loop). Rows
    are plain tuples (``tracked.Row``), which sort as they are and which the garbage collector
    leaves alone.
    """
    rows = list(tracked.rows())
    runs = [sorted(rows[i : i + SORT_RUN]) for i in range(0, len(rows), SORT_RUN)]
    return runs[0] if len(runs) == 1 else list(heapq.merge(*runs))


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One page of the tracked objects that match a query."""

    query: ObjectQuery
    tracked: int  # objects tracked in all
    matching: int  # of them, those the filter lets through
    rows: tuple[Tracked, ...]  # at most query.per_page

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.matching / self.query.per_page))


def select(rows: Sequence[Row], query: ObjectQuery) -> ObjectPage:
    """The page of ``rows`` (sorted) that ``query`` asks for; only a filter walks them all."""
    start = (query.page - 1) * query.per_page
    stop = start + query.per_page
    if not query.filtered:
        shown, matching = rows[start:stop], len(rows)
    else:
        q = query.q.lower()
        found = [row for row in rows if query.matches(row, q)]
        shown, matching = found[start:stop], len(found)
    return ObjectPage(query, len(rows), matching, tuple(map(tracked_of, shown)))


class ObjectIndex:
    """The tracked objects' sorted rows, rebuilt in ``run`` (a thread) when older than
    ``max_age`` seconds; one build at a time, shared by the requests that wait for it."""

    def __init__(self, max_age: float = INDEX_MAX_AGE) -> None:
        self.max_age = max_age
        self.builds = 0  # how many times the rows were built (tests read it)
        self._rows: list[Row] = []
        self._source: FluxRewriter | None = None
        self._built_at = -math.inf
        self._building: asyncio.Future[list[Row]] | None = None

    async def rows(
        self, flux: FluxRewriter, run: Callable[[Callable[[], list[Row]]], Awaitable[Any]]
    ) -> list[Row]:
        now = time.monotonic()
        if self._source is flux and now - self._built_at < self.max_age:
            return self._rows
        if self._building is None:
            tracked = flux.tracked()  # references copied on the loop: the tables change here
            self._building = asyncio.ensure_future(run(lambda: sorted_rows(tracked)))
            self._building.add_done_callback(lambda done: self._built(flux, now, done))
        return await asyncio.shield(self._building)

    def _built(self, flux: FluxRewriter, at: float, done: asyncio.Future[list[Row]]) -> None:
        self._building = None
        if done.cancelled() or done.exception() is not None:
            return
        self._rows, self._source, self._built_at = done.result(), flux, at
        self.builds += 1


# -- destinations -------------------------------------------------------------------------


HEALTHY: Final = "healthy"
FAILING: Final = "failing"  # its requests are refused and retried: no progress
BLOCKED: Final = "blocked"  # its sender is stuck on an error, or its queue refuses writes


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    name: str
    where: str  # its place in the configuration: remote_write[0], datadog[1], ...
    endpoint: str  # its URL without user info or query
    state: str  # HEALTHY, FAILING or BLOCKED
    why: str  # what makes it failing or blocked ("" when healthy)
    queued_points: int
    queue_capacity: int
    spool_bytes: int | None  # None: no spool
    spool_max_bytes: int | None
    oldest_unsent_s: float | None  # None: nothing unsent
    last_error: LastError | None

    @property
    def queue_fill(self) -> float:
        return self.queued_points / self.queue_capacity if self.queue_capacity else 0.0

    @property
    def spool_fill(self) -> float | None:
        if self.spool_bytes is None or not self.spool_max_bytes:
            return None
        return self.spool_bytes / self.spool_max_bytes


def _endpoint(cfg: object) -> str:
    url = getattr(cfg, "url", None)
    if isinstance(cfg, DatadogConfig) and url is None:
        return f"https://api.{cfg.site}"
    try:
        return sanitize_url(url) if isinstance(url, str) else ""
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class RelayView:
    """What the page reads of the running relay (gathered on the event loop; all cheap)."""

    destinations: tuple[DestinationStatus, ...]
    memory_used: int
    memory_limit: int
    spool: bool
    flux_mode: str
    max_objects: int


def relay_view(relay: Relay, now: float) -> RelayView:
    """Each destination's state from the running relay."""
    config = relay.config
    places = {name: (where, cfg) for where, name, cfg in config.destinations()}
    spool = relay.spool is not None
    out = []
    for name, destination in relay.destinations.items():
        where, cfg = places.get(name, ("", None))
        queue = destination.queue
        oldest = destination.oldest_unsent_ms()
        problem = destination.problem()
        if spool:
            full = config.spool.when_full == "backpressure" and (
                queue.bytes >= config.spool.max_bytes
            )
        else:
            full = not queue.room_for(1)
        last = destination.last_error
        if problem:
            state, why = BLOCKED, f"sender failing: {problem}"
        elif full:
            state, why = BLOCKED, "queue full: writes are refused with 503 until it drains"
        elif destination.failing:
            state = FAILING
            why = f"requests refused and retried ({last.reason})" if last else "retrying"
        else:
            state, why = HEALTHY, ""
        out.append(
            DestinationStatus(
                name,
                where,
                _endpoint(cfg),
                state,
                why,
                queue.points,
                queue.capacity,
                queue.bytes if spool else None,
                config.spool.max_bytes if spool else None,
                None if oldest is None else max(0.0, now - oldest / 1000),
                last,
            )
        )
    return RelayView(
        tuple(out),
        relay.budget.used,
        relay.budget.limit,
        spool,
        config.flux.mode,
        config.flux.max_objects,
    )


# -- the configuration --------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A URL with its password and query values shown as ``<secret>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return SECRET
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{SECRET}@{host}" if ":" in user else f"{SECRET}@{host}"
    query = parts.query and "&".join(
        f"{pair.split('=', 1)[0]}={SECRET}" for pair in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redacted(node: Any, key: str = "") -> Any:
    """A JSON-like configuration with every secret as ``<secret>`` (see ``_SECRET_KEYS``).

    ``*_file`` keys keep their path: the file's content is the secret, and it is never read
    here.
    """
    if isinstance(node, BaseModel):
        return redacted(node.model_dump(mode="json"), key)
    if isinstance(node, SecretStr):
        return SECRET
    if isinstance(node, dict):
        if key == "headers":
            return {k: SECRET for k in node}
        return {k: redacted(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [redacted(item, key) for item in node]
    if node is None:
        return None
    if isinstance(node, str):
        if node == _MASKED or key.lower() in _SECRET_KEYS:
            return SECRET
        if key in _URL_KEYS:
            return redact_url(node)
    elif key.lower() in _SECRET_KEYS:
        return SECRET
    return node


def config_yaml(config: Config) -> str:
    """The running configuration as YAML, secrets redacted."""
    return yaml.safe_dump(redacted(config), sort_keys=False, allow_unicode=True)


# -- the page -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusPage:
    """Everything the page shows, gathered once per request."""

    now: float  # time.time()
    relay: RelayView
    objects: ObjectPage
    refusals: list[tuple[str, int, tuple[Refused, ...]]]
    config_yaml: str
    refresh: int = DEFAULT_REFRESH
    version: str = field(default=__version__)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _percent(fill: float | None) -> str:
    return "—" if fill is None else f"{100 * fill:.1f}%"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


_CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.3em 0}
th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.healthy{color:#1a7f37;font-weight:600}.failing{color:#bf8700;font-weight:600}
.blocked{color:#cf222e;font-weight:600}.muted{color:#57606a}
.bar{display:inline-block;width:6em;height:.7em;background:#eaeef2;vertical-align:middle}
.bar i{display:block;height:100%;background:#0969da}
pre{background:#fff;border:1px solid #d0d7de;padding:.8em;overflow:auto;max-height:40em}
form{margin:.4em 0}input,select{font:inherit}nav a{margin-right:.8em}
"""


def _bar(fill: float | None) -> str:
    if fill is None:
        return ""
    width = max(0.0, min(1.0, fill)) * 100
    return f'<span class="bar"><i style="width:{width:.1f}%"></i></span> '


def _destinations_html(page: StatusPage) -> list[str]:
    view = page.relay
    out = ['<h2 id="destinations">Destinations</h2>']
    if not view.spool:
        out.append(
            f'<p class="muted">In-memory queues use {_e(_bytes(view.memory_used))} of '
            f"{_e(_bytes(view.memory_limit))} (queues.memory_budget_bytes).</p>"
        )
    if not view.destinations:
        out.append("<p>No queued destination is configured.</p>")
        return out
    out.append(
        "<table><thead><tr><th>destination</th><th>state</th><th>queue</th><th>spool</th>"
        "<th>oldest unsent</th><th>last error</th></tr></thead><tbody>"
    )
    for d in view.destinations:
        why = f'<br><span class="muted">{_e(d.why)}</span>' if d.why else ""
        spool = (
            "off"
            if d.spool_bytes is None
            else f"{_bar(d.spool_fill)}{_e(_percent(d.spool_fill))} "
            f"({_e(_bytes(d.spool_bytes))} of {_e(_bytes(d.spool_max_bytes or 0))})"
        )
        last = "—"
        if d.last_error is not None:
            err = d.last_error
            detail = f": {_e(err.detail[:300])}" if err.detail else ""
            last = (
                f"{_e(err.reason)}{detail}<br><span class='muted'>{_e(_when(err.at))} "
                f"({_e(_age(page.now - err.at))} ago)</span>"
            )
        out.append(
            f'<tr data-destination="{_e(d.name)}"><td><b>{_e(d.name)}</b><br>'
            f'<span class="muted">{_e(d.where)} {_e(d.endpoint)}</span></td>'
            f'<td class="{_e(d.state)}">{_e(d.state)}{why}</td>'
            f"<td>{_bar(d.queue_fill)}{_e(_percent(d.queue_fill))} "
            f"({d.queued_points:,} of {d.queue_capacity:,} points)</td>"
            f"<td>{spool}</td><td class='n'>{_e(_age(d.oldest_unsent_s))}</td>"
            f"<td>{last}</td></tr>"
        )
    out.append("</tbody></table>")
    return out


def _option(value: str, chosen: str, label: str | None = None) -> str:
    selected = " selected" if value == chosen else ""
    return f'<option value="{_e(value)}"{selected}>{_e(label or value or "any")}</option>'


def _link(query: ObjectQuery, refresh: int, **change: object) -> str:
    params = query.params(**change)
    if refresh != DEFAULT_REFRESH:
        params["refresh"] = str(refresh)
    return _e("?" + urlencode(params) + "#objects") if params else "?#objects"


def _objects_html(page: StatusPage) -> list[str]:
    objects = page.objects
    query = objects.query
    view = page.relay
    out = [
        '<h2 id="objects">Flux objects</h2>',
        f'<p class="muted">{objects.tracked:,} tracked (flux.mode: {_e(view.flux_mode)}, '
        f"at most {view.max_objects:,}: flux.max_objects).</p>",
        '<form method="get" action="#objects">',
        f'<input type="search" name="q" value="{_e(query.q)}" '
        'placeholder="kind, namespace or name" size="30"> ',
        'Ready <select name="ready">',
        *(_option(v, query.ready) for v in ("", *READY_VALUES)),
        '</select> suspended <select name="suspended">',
        *(_option(v, query.suspended) for v in ("", "true", "false")),
        '</select> source <select name="shape">',
        *(_option(v, query.shape) for v in ("", *SHAPES)),
        "</select> ",
        f'<input type="hidden" name="per_page" value="{query.per_page}">',
    ]
    if page.refresh != DEFAULT_REFRESH:
        out.append(f'<input type="hidden" name="refresh" value="{page.refresh}">')
    out.append('<button type="submit">filter</button></form>')
    shown = len(objects.rows)
    first = (query.page - 1) * query.per_page + 1 if shown else 0
    out.append(
        f'<p id="objects-summary">{objects.matching:,} matching; showing {first:,}–'
        f"{first + shown - 1 if shown else 0:,} (page {query.page:,} of {objects.pages:,}).</p>"
    )
    nav = []
    if query.page > 1:
        nav.append(f'<a href="{_link(query, page.refresh, page=query.page - 1)}">← previous</a>')
    if query.page < objects.pages:
        nav.append(f'<a href="{_link(query, page.refresh, page=query.page + 1)}">next →</a>')
    if nav:
        out.append("<nav>" + "".join(nav) + "</nav>")
    if not objects.rows:
        return out
    out.append(
        '<table id="objects-table"><thead><tr><th>kind</th><th>namespace</th><th>name</th>'
        "<th>Ready</th><th>suspended</th><th>source</th><th>last seen</th></tr></thead><tbody>"
    )
    now_ms = page.now * 1000
    for row in objects.rows:
        suspended = "—" if row.suspended is None else ("true" if row.suspended else "false")
        seen = (
            "—"
            if not row.last_seen_ms
            else f"{_age(max(0.0, (now_ms - row.last_seen_ms) / 1000))} ago"
        )
        out.append(
            f'<tr class="object"><td>{_e(row.kind)}</td><td>{_e(row.namespace)}</td>'
            f"<td>{_e(row.name)}</td><td class='ready-{_e(row.ready or 'none')}'>"
            f"{_e(row.ready or '—')}</td><td>{suspended}</td><td>{_e(row.shape)}</td>"
            f"<td class='n'>{_e(seen)}</td></tr>"
        )
    out.append("</tbody></table>")
    return out


def _refusals_html(page: StatusPage) -> list[str]:
    out = ['<h2 id="refused">Refused write requests</h2>']
    if not page.refusals:
        out.append("<p>None since the relay started.</p>")
        return out
    out.append(
        "<table><thead><tr><th>reason</th><th>count</th><th>last examples (time, client, "
        "answer)</th></tr></thead><tbody>"
    )
    for reason, count, examples in page.refusals:
        shown = "<br>".join(
            f"{_e(_when(x.at))} · {_e(x.remote or 'unknown client')} · {_e(x.text)}"
            for x in examples
        )
        out.append(
            f'<tr data-reason="{_e(reason)}"><td>{_e(reason)}</td><td class="n">{count:,}</td>'
            f"<td>{shown}</td></tr>"
        )
    out.append("</tbody></table>")
    return out


def render_html(page: StatusPage) -> str:
    """The page (no external assets; it reloads itself every ``page.refresh`` seconds)."""
    refresh = f'<meta http-equiv="refresh" content="{page.refresh}">' if page.refresh else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        refresh,
        "<title>gotk-relay status</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>gotk-relay {_e(page.version)}</h1>",
        f'<p class="muted">As of {_e(_when(page.now))}'
        + (f"; reloads every {page.refresh}s" if page.refresh else "")
        + '. <a href="/status.json">status.json</a> · <a href="/metrics">/metrics</a> · '
        '<a href="/-/ready">/-/ready</a> · <a href="/federate">/federate</a></p>',
        '<nav><a href="#destinations">destinations</a><a href="#objects">Flux objects</a>'
        '<a href="#refused">refused requests</a><a href="#config">configuration</a></nav>',
        *_destinations_html(page),
        *_objects_html(page),
        *_refusals_html(page),
        '<h2 id="config">Configuration</h2>',
        f'<p class="muted">Running now; secrets are shown as {_e(SECRET)}.</p>',
        f"<pre>{_e(page.config_yaml)}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def render_json(page: StatusPage) -> str:
    """The same data as JSON, for machines (``GET /status.json``)."""
    objects = page.objects

    def destination(d: DestinationStatus) -> dict[str, Any]:
        out = asdict(d)
        out["queue_fill"] = d.queue_fill
        out["spool_fill"] = d.spool_fill
        return out

    body = {
        "time": page.now,
        "version": page.version,
        "destinations": [destination(d) for d in page.relay.destinations],
        "memory": {"used_bytes": page.relay.memory_used, "limit_bytes": page.relay.memory_limit},
        "flux_objects": {
            "tracked": objects.tracked,
            "matching": objects.matching,
            "page": objects.query.page,
            "per_page": objects.query.per_page,
            "pages": objects.pages,
            "rows": [asdict(row) for row in objects.rows],
        },
        "refused": [
            {"reason": reason, "count": count, "examples": [asdict(x) for x in examples]}
            for reason, count, examples in page.refusals
        ],
        "config": page.config_yaml,
    }
    return json.dumps(body, ensure_ascii=False)


def render_text(page: StatusPage) -> str:
    """A plain-text summary for ``Accept: text/plain`` clients (curl's scripts)."""
    lines = [
        "gotk-relay: POST /api/v1/write (remote write 1.0/2.0), GET /federate, "
        "/flux/controller/metrics, /flux/kube-state-metrics/metrics, /metrics, /-/healthy, "
        "/-/ready, POST /-/reload, GET /status.json",
    ]
    for d in page.relay.destinations:
        lines.append(
            f"destination {d.name}: {d.state}"
            + (f" ({d.why})" if d.why else "")
            + f"; queue {_percent(d.queue_fill)}; spool {_percent(d.spool_fill)}; "
            f"oldest unsent {_age(d.oldest_unsent_s)}"
        )
    lines.append(f"flux objects tracked: {page.objects.tracked}")
    for reason, count, _ in page.refusals:
        lines.append(f"refused {reason}: {count}")
    return "\n".join(lines)
