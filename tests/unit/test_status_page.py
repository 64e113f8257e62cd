"""The status page's builders (``status_page.py``) and the accessors it reads.

The tracked objects come from a real ``FluxRewriter`` fed series as the three sources write
them; the page's HTML is parsed back with the standard library's parser, so "escaped" means
what a browser would see, not a string search.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay import status_page
from gotk_relay.config import load_text
from gotk_relay.delivery.sender import LastError
from gotk_relay.model import STALE_NAN, Batch, Sample, Series
from gotk_relay.rules.flux import FluxConfig, FluxRewriter, Row, Tracked
from gotk_relay.rules.flux.tracked import row_of, tracked_of
from gotk_relay.status_page import (
    DestinationStatus,
    ObjectIndex,
    ObjectQuery,
    QueryError,
    RelayView,
    StatusPage,
    parse_query,
    redact_url,
    render_html,
    render_json,
    select,
)
from gotk_relay.telemetry import REFUSED_EXAMPLES, REFUSED_REASONS, Refusals, Telemetry
from tests.support.status_page import T, ksm, legacy, operator, parse, series


def fed(mode: str, *batches: list[Series], **config: str) -> FluxRewriter:
    rewriter = FluxRewriter(FluxConfig.model_validate({"mode": mode, **config}))
    for batch in batches:
        rewriter.rewrite(Batch(tuple(batch)), T)
    return rewriter


@pytest.mark.parametrize(
    ("mode", "batch", "expected"),
    [
        (
            "legacy",
            [ksm("apps", "team-a", ready="False", suspended="true")],
            Tracked("Kustomization", "team-a", "apps", "False", True, "ksm", T),
        ),
        (
            "legacy",
            [operator("podinfo", "team-b")],
            Tracked("HelmRelease", "team-b", "podinfo", "False", True, "operator", T),
        ),
        (
            "resource_info",
            legacy("repo", "team-c", ready="True", suspended=1.0),
            Tracked("GitRepository", "team-c", "repo", "True", True, "legacy", T),
        ),
    ],
    ids=["kube-state-metrics", "flux-operator", "legacy-gauges"],
)
def test_tracked_objects_describe_each_source_shape(
    mode: str, batch: list[Series], expected: Tracked
) -> None:
    rows = list(fed(mode, batch).tracked().describe())
    assert rows == [expected]


@pytest.mark.parametrize("shape", ["stored", "raw"])
def test_the_namespace_is_the_objects_in_either_label_shape(shape: str) -> None:
    rewriter = fed("legacy", [ksm("apps", "team-a")], label_shape=shape)
    assert [r.namespace for r in rewriter.tracked().describe()] == ["team-a"]


def test_an_object_both_ksm_and_the_operator_report_shows_both_shapes() -> None:
    both = series(
        "flux_resource_info",
        kind="Kustomization",
        exported_namespace="team-a",
        name="apps",
        ready="True",
        suspended="False",
        namespace="monitoring",
        job="kube-state-metrics",
    )
    tracked = fed("legacy", [ksm("apps", "team-a"), both]).tracked()
    rows = list(tracked.describe())
    assert [(r.kind, r.name, r.shape) for r in rows] == [("Kustomization", "apps", "ksm+operator")]
    for shape in ("ksm", "operator"):
        assert select(list(tracked.rows()), parse_query({"shape": shape})).matching == 1
    assert select(list(tracked.rows()), parse_query({"shape": "legacy"})).matching == 0


def test_tracked_is_a_copy_the_rules_can_change_under() -> None:
    rewriter = fed("legacy", [ksm("a", "ns")])
    tracked = rewriter.tracked()
    rewriter.rewrite(Batch((ksm("b", "ns"),)), T + 1000)
    assert len(tracked) == 1
    assert len(rewriter.tracked()) == 2


def test_a_legacy_object_between_statuses_has_no_ready_yet() -> None:
    # The old status went to 0 and the new one's 1 has not come: the rules wait, and so does
    # the page (no Ready is shown rather than a guess).
    rows = list(fed("resource_info", legacy("repo", "ns", ready="none")).tracked().describe())
    assert [(r.ready, r.suspended) for r in rows] == [("", False)]


# -- the query ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ObjectQuery()),
        ({"page": "3", "per_page": "1000"}, ObjectQuery(page=3, per_page=1000)),
        ({"ready": "false", "shape": "KSM"}, ObjectQuery(ready="False", shape="ksm")),
        ({"q": "Team-A", "suspended": "TRUE"}, ObjectQuery(q="Team-A", suspended="true")),
        ({"page": "", "ready": ""}, ObjectQuery()),
    ],
    ids=["defaults", "page", "ready-and-shape-any-case", "q-and-suspended", "empty-values"],
)
def test_parse_query(params: dict[str, str], expected: ObjectQuery) -> None:
    assert parse_query(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"per_page": "1001"}, "per_page=1001: must be from 1 to 1000"),
        ({"per_page": "0"}, "per_page=0: must be from 1 to 1000"),
        ({"page": "0"}, "page=0: must be from 1"),
        ({"page": "two"}, "page='two': not an integer"),
        ({"ready": "yes"}, "ready='yes': must be one of True, False, Unknown"),
        ({"shape": "helm"}, "shape='helm': must be one of ksm, operator, legacy"),
        ({"q": "x" * 257}, "q: 257 characters; at most 256"),
    ],
    ids=["per-page-over-max", "per-page-zero", "page-zero", "page-text", "ready", "shape", "q"],
)
def test_parse_query_refuses_naming_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(params)
    assert str(info.value).startswith(message)


def row(kind: str, namespace: str, name: str, ready: str = "True", **more: Any) -> Row:
    values: dict[str, Any] = {"suspended": False, "shape": "ksm", "last_seen_ms": T} | more
    return row_of(Tracked(kind, namespace, name, ready, **values))


ROWS = [
    row("GitRepository", "flux-system", "flux-system"),
    row("HelmRelease", "team-a", "podinfo", "False", shape="operator"),
    row("Kustomization", "team-a", "apps", "False", suspended=True),
    row("Kustomization", "team-b", "Team-A-infra", "Unknown", shape="legacy", suspended=None),
]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"q": "team-a"}, ["podinfo", "apps", "Team-A-infra"]),
        ({"q": "KUSTOM"}, ["apps", "Team-A-infra"]),
        ({"q": "team-a/apps"}, ["apps"]),
        ({"ready": "False"}, ["podinfo", "apps"]),
        ({"ready": "False", "q": "kustomization"}, ["apps"]),
        ({"suspended": "true"}, ["apps"]),
        ({"shape": "legacy"}, ["Team-A-infra"]),
        ({"q": "nothing"}, []),
    ],
    ids=[
        "namespace-or-name",
        "kind-any-case",
        "namespace-slash-name",
        "ready-false-only",
        "ready-and-q",
        "suspended",
        "shape",
        "none",
    ],
)
def test_filter(params: dict[str, str], names: list[str]) -> None:
    page = select(ROWS, parse_query(params))
    assert [r.name for r in page.rows] == names
    assert page.matching == len(names) and page.tracked == len(ROWS)


@given(
    total=st.integers(0, 300),
    page=st.integers(1, 40),
    per_page=st.integers(1, 50),
    falses=st.sets(st.integers(0, 299)),
)
def test_pages_hold_per_page_rows_in_order_and_cover_every_match_once(
    total: int, page: int, per_page: int, falses: set[int]
) -> None:
    rows = [
        row("Kustomization", "ns", f"{i:04}", "False" if i in falses else "True")
        for i in range(total)
    ]
    for params in ({}, {"ready": "False"}):
        query = parse_query({"page": str(page), "per_page": str(per_page), **params})
        matching = [tracked_of(r) for r in rows if not params or r[4] == "False"]
        got = select(rows, query)
        assert got.matching == len(matching)
        assert got.rows == tuple(matching[(page - 1) * per_page : page * per_page])
        assert len(got.rows) <= per_page
        assert got.pages == max(1, -(-len(matching) // per_page))


def test_sorted_rows_are_by_kind_namespace_name() -> None:
    rewriter = fed("legacy", [ksm("b", "ns2"), ksm("a", "ns2"), ksm("z", "ns1")])
    rows = status_page.sorted_rows(rewriter.tracked())
    assert [(r[1], r[2]) for r in rows] == [("ns1", "z"), ("ns2", "a"), ("ns2", "b")]
    assert [tracked_of(r) for r in rows] == sorted(
        rewriter.tracked().describe(), key=lambda t: (t.kind, t.namespace, t.name)
    )


# -- the index ------------------------------------------------------------------------------

_R = TypeVar("_R")


async def _inline(make: Callable[[], _R]) -> _R:
    return make()


def test_index_is_reused_until_it_is_older_than_max_age() -> None:
    async def scenario() -> None:
        rewriter = fed("legacy", [ksm("a", "ns")])
        index = ObjectIndex(max_age=3600)
        run: Callable[[Callable[[], list[Row]]], Awaitable[Any]] = _inline
        first, second = await asyncio.gather(index.rows(rewriter, run), index.rows(rewriter, run))
        assert first is second and index.builds == 1  # one build for concurrent requests
        rewriter.rewrite(Batch((ksm("b", "ns"),)), T + 1000)
        assert len(await index.rows(rewriter, run)) == 1  # reused: not older than max_age
        index.max_age = 0
        assert len(await index.rows(rewriter, run)) == 2 and index.builds == 2
        other = fed("legacy", [])
        index.max_age = 3600
        assert await index.rows(other, run) == [] and index.builds == 3  # another rewriter

    asyncio.run(scenario())


# -- refusals -------------------------------------------------------------------------------


def test_refusals_keep_counts_and_the_last_examples_per_reason_bounded() -> None:
    refusals = Refusals()
    for i in range(REFUSED_EXAMPLES + 3):
        refusals.add("queue_full", f"10.0.0.{i}", f"full {i}", at=float(i))
    refusals.add("unauthorized", "10.0.1.1", "invalid bearer token " + "x" * 1000, at=99.0)
    summary = refusals.summary()
    assert [(reason, count) for reason, count, _ in summary] == [
        ("queue_full", REFUSED_EXAMPLES + 3),
        ("unauthorized", 1),
    ]
    examples = summary[0][2]
    assert [x.remote for x in examples] == [f"10.0.0.{i}" for i in range(7, 2, -1)]
    assert len(summary[1][2][0].text) == 300
    for i in range(REFUSED_REASONS * 2):
        refusals.add(f"reason_{i}", "", "")
    assert len(refusals.summary()) == REFUSED_REASONS + 1  # the rest count under "other"


def test_telemetry_refuse_counts_the_metric_and_keeps_the_example() -> None:
    telemetry = Telemetry()
    telemetry.refuse("too_large", "192.0.2.7", "request body of 9 bytes exceeds the limit")
    assert telemetry.rejected.labels("too_large")._value.get() == 1
    [(reason, count, (example,))] = telemetry.refusals.summary()
    assert (reason, count, example.remote) == ("too_large", 1, "192.0.2.7")


# -- redaction ------------------------------------------------------------------------------

SECRETS = {
    "rw_password": "pw-3f9c1b7e",
    "rw_credentials": "cred-5a2e8d41",
    "url_password": "urlpw-77c1d0",
    "url_token": "qtok-0b9e4c",
    "dd_api_key": "ddkey-6e1f2a93",
    "otlp_header": "hdrkey-2c8b5f",
    "scrape_password": "scrapepw-9d3a7c",
    "file_password": "filepw-4b6e0d",
    "file_bearer": "filebearer-1a5c9e",
}


def secret_config(tmp_path: Path) -> str:
    files = {}
    for name in ("file_password", "file_bearer"):
        path = tmp_path / name
        path.write_text(SECRETS[name] + "\n")
        files[name] = str(path)
    s = SECRETS
    return yaml.safe_dump(
        {
            "receiver": {"auth": {"bearer_token_file": files["file_bearer"]}},
            "remote_write": [
                {
                    "name": "basic",
                    "url": f"https://user:{s['url_password']}@mimir.example/api/v1/push"
                    f"?token={s['url_token']}",
                    "basic_auth": {"username": "relay", "password": s["rw_password"]},
                },
                {
                    "name": "bearer",
                    "url": "https://thanos.example/api/v1/receive",
                    "authorization": {"credentials": s["rw_credentials"]},
                },
                {
                    "name": "from-file",
                    "url": "https://vm.example/api/v1/write",
                    "basic_auth": {"username": "relay", "password_file": files["file_password"]},
                },
            ],
            "datadog": [{"name": "dd", "api_key": s["dd_api_key"]}],
            "otlp": [
                {
                    "name": "otel",
                    "url": "https://otel.example/v1/metrics",
                    "headers": {"X-Api-Key": s["otlp_header"]},
                }
            ],
            "scrape_configs": [
                {
                    "job_name": "ksm",
                    "basic_auth": {"username": "scraper", "password": s["scrape_password"]},
                    "static_configs": [{"targets": ["ksm:8080"]}],
                }
            ],
        }
    )


def test_config_yaml_shows_no_secret_and_keeps_the_file_paths(tmp_path: Path) -> None:
    config = load_text(secret_config(tmp_path))
    text = status_page.config_yaml(config)
    for name, value in SECRETS.items():
        assert value not in text, name
    shown = yaml.safe_load(text)
    rw = shown["remote_write"]
    assert rw[0]["basic_auth"] == {
        "username": "relay",
        "password": "<secret>",
        "password_file": None,
    }
    assert rw[0]["url"] == ("https://user:<secret>@mimir.example/api/v1/push?token=<secret>")
    assert rw[1]["authorization"]["credentials"] == "<secret>"
    assert rw[2]["basic_auth"]["password_file"] == str(tmp_path / "file_password")
    assert shown["receiver"]["auth"]["bearer_token_file"] == str(tmp_path / "file_bearer")
    assert shown["datadog"][0]["api_key"] == "<secret>"
    assert shown["otlp"][0]["headers"] == {"X-Api-Key": "<secret>"}
    assert shown["scrape_configs"][0]["basic_auth"]["password"] == "<secret>"
    assert shown["flux"]["mode"] == "legacy"  # the rest as it runs


def test_no_secret_reaches_the_html_or_the_json(tmp_path: Path) -> None:
    config = load_text(secret_config(tmp_path))
    page = make_page(config_yaml=status_page.config_yaml(config))
    for body in (render_html(page), render_json(page)):
        for name, value in SECRETS.items():
            assert value not in body, name


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://a.example/p", "https://a.example/p"),
        ("https://u:pw@a.example:8443/p", "https://u:<secret>@a.example:8443/p"),
        ("https://token@a.example/p", "https://<secret>@a.example/p"),
        ("https://a.example/p?api_key=k&x=1", "https://a.example/p?api_key=<secret>&x=<secret>"),
    ],
    ids=["plain", "user-password", "user-only", "query"],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- the HTML -------------------------------------------------------------------------------


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "nav", "table",
    "thead", "tbody", "tr", "th", "td", "b", "br", "span", "i", "form", "input", "select",
    "option", "button", "pre",
}  # fmt: skip


def destination(name: str = "vm", **more: Any) -> DestinationStatus:
    values: dict[str, Any] = {
        "where": "remote_write[0]",
        "endpoint": "https://vm.example/api/v1/write",
        "state": "failing",
        "why": "requests refused and retried (http_500)",
        "queued_points": 250,
        "queue_capacity": 1000,
        "spool_bytes": None,
        "spool_max_bytes": None,
        "oldest_unsent_s": 12.5,
        "last_error": LastError(time.time() - 3, "http_500", "internal error"),
    } | more
    return DestinationStatus(name, **values)


def make_page(
    rows: list[Row] | None = None,
    query: ObjectQuery | None = None,
    destinations: tuple[DestinationStatus, ...] | None = None,
    refusals: Refusals | None = None,
    config_yaml: str = "flux:\n  mode: legacy\n",
) -> StatusPage:
    view = RelayView(
        destinations if destinations is not None else (destination(),),
        1024,
        256 * 1024 * 1024,
        False,
        "legacy",
        100_000,
    )
    objects = select(rows if rows is not None else ROWS, query or ObjectQuery())
    return StatusPage(time.time(), view, objects, (refusals or Refusals()).summary(), config_yaml)


def test_page_shows_each_section() -> None:
    refusals = Refusals()
    refusals.add("unsupported_encoding", "127.0.0.1", "unsupported Content-Encoding 'gzip'")
    body = render_html(make_page(refusals=refusals))
    parsed = parse(body)
    assert ("meta", {"http-equiv": "refresh", "content": "10"}) in parsed.tags
    assert parsed.object_rows == len(ROWS)
    assert "vm" in parsed.cells[0] and parsed.cells[1].startswith("failing")
    assert "25.0%" in parsed.cells[2]  # queue fill
    assert "http_500: internal error" in parsed.cells[5]
    assert ["Kustomization", "team-a", "apps", "False", "true", "ksm"] in [
        parsed.cells[i : i + 6] for i in range(len(parsed.cells))
    ]
    refused = [c for c in parsed.cells if "gzip" in c]
    assert refused and "127.0.0.1" in refused[0]
    assert "mode: legacy" in body
    # No external asset: nothing is loaded from anywhere.
    assert not [t for t, attrs in parsed.tags if t in ("script", "link", "img", "iframe")]
    assert not [a for _, a in parsed.tags if (a.get("src") or "").strip()]


def test_page_renders_only_per_page_rows() -> None:
    rows = [row("Kustomization", "ns", f"app-{i:05}") for i in range(5000)]
    page = make_page(rows, parse_query({"per_page": "250", "page": "3"}))
    parsed = parse(render_html(page))
    assert parsed.object_rows == 250
    assert "app-00500" in parsed.cells and "app-00749" in parsed.cells
    assert "app-00499" not in parsed.cells and "app-00750" not in parsed.cells
    links = [a["href"] for t, a in parsed.tags if t == "a" and "page=" in (a.get("href") or "")]
    assert links == ["?page=2&per_page=250#objects", "?page=4&per_page=250#objects"]


def test_page_refresh_can_be_turned_off() -> None:
    page = make_page()
    off = StatusPage(page.now, page.relay, page.objects, page.refusals, page.config_yaml, 0)
    assert not [a for t, a in parse(render_html(off)).tags if a.get("http-equiv") == "refresh"]


HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</td></tr></table><script>x()</script>",
    "' onmouseover='alert(1)",
    "</pre><script>1</script>",
    "&lt;not-an-entity&gt;",
]


@given(
    value=st.one_of(
        st.sampled_from(HOSTILE),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40),
    ).filter(lambda v: v.strip() == v and v != "")
)
def test_every_printed_value_is_escaped(value: str) -> None:
    """Label values, destination names, error details, refusal texts and the configuration
    are the senders' and users' to choose: none can add an element or an attribute."""
    rows = [row(value, value, value, shape="ksm")]
    refusals = Refusals()
    refusals.add(value, value, value)
    destinations = (
        destination(value, endpoint=value, last_error=LastError(time.time(), value, value)),
    )
    query = ObjectQuery(q=value[:256])
    page = make_page(rows, query, destinations, refusals, config_yaml=value)
    body = render_html(page)
    parsed = parse(body)
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    assert parsed.object_rows == (1 if query.matches(rows[0], query.q.lower()) else 0)
    search = [a for t, a in parsed.tags if t == "input" and a.get("name") == "q"]
    assert search[0]["value"] == query.q  # the attribute holds the text, whole
    assert value in parsed.cells  # a cell holds it as text
    for _, attrs in parsed.tags:
        assert not [k for k in attrs if k.startswith("on")]


def test_json_holds_the_same_data() -> None:
    page = make_page(query=parse_query({"ready": "False"}))
    body = json.loads(render_json(page))
    assert [r["name"] for r in body["flux_objects"]["rows"]] == ["podinfo", "apps"]
    assert body["flux_objects"]["matching"] == 2 and body["flux_objects"]["tracked"] == 4
    assert body["destinations"][0]["state"] == "failing"
    assert body["destinations"][0]["queue_fill"] == 0.25


def test_stale_marker_ends_do_not_hide_an_object_still_tracked() -> None:
    # An object whose input went stale is still tracked until idle_expiry: the page lists it.
    stale = Series(ksm("gone", "ns").labels, (Sample(STALE_NAN, T + 1000),))
    rewriter = fed("legacy", [ksm("gone", "ns")], [stale])
    assert [r.name for r in rewriter.tracked().describe()] == ["gone"]


# A secret starts with "zQ" so that it cannot be a word the configuration holds anyway (the
# search found "queue_config").
_SECRET_TEXT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~",
    min_size=10,
    max_size=40,
).map(lambda text: "zQ" + text)


@given(
    password=_SECRET_TEXT,
    credentials=_SECRET_TEXT,
    url_password=_SECRET_TEXT,
    query=_SECRET_TEXT,
    api_key=_SECRET_TEXT,
    header=_SECRET_TEXT,
)
def test_no_secret_value_is_ever_shown(
    password: str, credentials: str, url_password: str, query: str, api_key: str, header: str
) -> None:
    text = yaml.safe_dump(
        {
            "remote_write": [
                {
                    "url": f"https://relay:{url_password}@a.example/push?key={query}",
                    "basic_auth": {"username": "relay", "password": password},
                    "headers": {"X-Scope-OrgID": header},
                },
                {"url": "https://b.example/push", "authorization": {"credentials": credentials}},
            ],
            "datadog": [{"api_key": api_key}],
        }
    )
    shown = status_page.config_yaml(load_text(text))
    for secret in (password, credentials, url_password, query, api_key, header):
        assert secret not in shown
