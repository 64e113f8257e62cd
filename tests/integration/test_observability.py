"""The relay's own alerts and dashboard (deploy/observability): promtool checks and unit-tests
the rules, the PrometheusRule component and the dashboard JSON are what their scripts generate,
every dashboard query parses, every metric (and label) the queries and rules name is one that
running relays serve on /metrics, and a real Prometheus scraping those relays evaluates every
rule without error and has data for every dashboard query."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import rig
from tests.support.harness import gauge_batch, rw_body

OBS = rig.REPO_ROOT / "deploy" / "observability"
RULES = OBS / "gotk-relay.rules.yml"
RULE_TESTS = OBS / "gotk-relay.rules.test.yml"
DASHBOARD = OBS / "gotk-relay-dashboard.json"
COMPONENT = rig.REPO_ROOT / "deploy" / "kustomize" / "components" / "prometheusrule"
KSM_EXAMPLE = rig.REPO_ROOT / "docs" / "examples" / "ksm-flux.prom"

# Labels Prometheus adds to every series it scrapes from a relay (its target's), so a query may
# match or group on them whatever the relay's own series carry.
TARGET_LABELS = frozenset({"job", "instance"})
# Counters a relay creates a series of only after an event this test does not provoke; their
# families are on /metrics (HELP and TYPE) from the start, so their names are checked, their
# labels cannot be.
WITHOUT_SAMPLES_HERE = {
    "gotk_relay_task_failures_total": "a sender loop failing on an error (spool I/O, a bug)",
    "gotk_relay_samples_skipped_total": "a point the destination's protocol cannot carry",
    "gotk_relay_scrape_samples_dropped_total": "a scrape the relay cannot queue (queue_full)",
    "gotk_relay_scrape_task_failures_total": "an unexpected error in a scrape loop",
    "gotk_relay_listener_tls_files_unusable": "receiver.tls (the lab's relays serve HTTP)",
}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    # A skip would hide rules never checked: scripts/test installs Debian's prometheus.
    assert promtool, "promtool is needed (Debian's prometheus package; scripts/test installs it)"
    return promtool


def _run(*argv: str, cwd: Path = OBS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --------------------------------------------------------------------------------------------
# The rule file


def test_promtool_accepts_the_rule_file() -> None:
    result = _run(_promtool(), "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = _run(_promtool(), "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_with_its_labels_and_annotations() -> None:
    fired: dict[str, set[str]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                assert set(alert["exp_annotations"]) == {"summary", "description"}, test["name"]
                fired.setdefault(case["alertname"], set()).add(alert["exp_labels"]["severity"])
    expected: dict[str, set[str]] = {}
    for rule in _rules():
        assert rule["for"], rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        expected.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert fired == expected


# --------------------------------------------------------------------------------------------
# Generated files


def test_the_prometheusrule_component_carries_the_rule_file_unchanged(tmp_path: Path) -> None:
    script = _run(sys.executable, str(OBS / "prometheusrule.py"), "--check")
    assert script.returncode == 0, script.stdout + script.stderr
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed (scripts/test installs Debian's kubernetes-client)"
    # Rendered by kustomize as an overlay would use it.
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "monitoring",
                "components": [os.path.relpath(COMPONENT, tmp_path)],
            }
        )
    )
    rendered = _run(kubectl, "kustomize", str(tmp_path))
    assert rendered.returncode == 0, rendered.stderr
    objects = list(yaml.safe_load_all(rendered.stdout))
    assert [(o["apiVersion"], o["kind"]) for o in objects] == [
        ("monitoring.coreos.com/v1", "PrometheusRule")
    ]
    assert objects[0]["metadata"]["namespace"] == "monitoring"
    assert objects[0]["spec"] == {"groups": yaml.safe_load(RULES.read_text())["groups"]}


def test_the_dashboard_json_is_what_dashboard_py_builds() -> None:
    result = _run(sys.executable, str(OBS / "dashboard.py"), "--check")
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# The dashboard's queries


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    label: str | None = None  # label_values(selector, label): the label it lists


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_queries() -> list[Query]:
    board = json.loads(DASHBOARD.read_text())
    queries = [
        Query(f"{panel['title']} {target['refId']}", target["expr"])
        for panel in _panels(board["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
        assert found, variable["query"]
        queries.append(Query(f"${variable['name']}", found[1], found[2]))
    return queries


GRAFANA = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    """Grafana's macros as a range it would substitute; dashboard variables as "all"."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA.get(m[1], ".*"), expr)


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where)
def test_every_dashboard_query_parses(query: Query) -> None:
    expr = pp.parse(grafana_to_promql(query.expr))
    assert _selectors(expr), query.expr  # every query reads some metric


def test_dashboard_has_a_row_for_each_part_and_job_and_instance_variables() -> None:
    board = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Ingest", "Destinations", "Flux rules", "Resources and configuration", "Caches"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "destination"]
    ids = [p["id"] for p in _panels(board["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            assert 'job=~"$job", instance=~"$instance"' in target["expr"], panel["title"]


# --------------------------------------------------------------------------------------------
# The names they read against a running relay's /metrics


@dataclass
class Needs:
    """What an expression reads: metric names, and the labels it needs each metric to have."""

    labels: dict[str, set[str]] = field(default_factory=dict)

    def add(self, names: list[str], labels: set[str]) -> None:
        for name in names:
            self.labels.setdefault(name, set()).update(labels)


def _selectors(node: Any) -> list[Any]:
    """The vector selectors under ``node``."""
    if isinstance(node, pp.VectorSelector):
        return [node]
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr | pp.AggregateExpr):
        return _selectors(node.expr)
    if isinstance(node, pp.BinaryExpr):
        return _selectors(node.lhs) + _selectors(node.rhs)
    if isinstance(node, pp.Call):
        return [s for arg in node.args for s in _selectors(arg)]
    return []


def needs_of(node: Any, needs: Needs) -> Needs:
    """Each selector needs its matchers' labels; a `by` or `on` needs its labels of every
    selector beneath it."""
    for selector in _selectors(node):
        matchers = {m.name for m in selector.matchers.matchers if m.name != "__name__"}
        needs.add([selector.name], matchers)
    _grouping(node, needs)
    return needs


def _grouping(node: Any, needs: Needs) -> None:
    if isinstance(node, pp.AggregateExpr):
        modifier = node.modifier
        if modifier is not None and modifier.type is pp.AggModifierType.By:
            needs.add([s.name for s in _selectors(node.expr)], set(modifier.labels))
        _grouping(node.expr, needs)
    elif isinstance(node, pp.BinaryExpr):
        matching = node.modifier.matching if node.modifier is not None else None
        if matching is not None and matching.type is pp.LabelModifierType.Include:
            needs.add([s.name for s in _selectors(node)], set(matching.labels))
        _grouping(node.lhs, needs)
        _grouping(node.rhs, needs)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        _grouping(node.expr, needs)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            _grouping(arg, needs)


def test_needs_of_finds_names_and_labels_under_aggregations_and_joins() -> None:
    expr = pp.parse(
        'sum by (a, le) (rate(x_bucket{b="1"}[5m])) and on (c) max_over_time(y[1h]) > 0'
    )
    assert needs_of(expr, Needs()).labels == {"x_bucket": {"a", "b", "c", "le"}, "y": {"c"}}


@dataclass
class Exported:
    """What relays' /metrics serve: every series name a scraper stores, and each one's labels
    (for the names that had a series)."""

    names: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count"),
            }.get(family.type, ("",))
            self.names.update(family.name + suffix for suffix in suffixes)
            for sample in family.samples:
                self.names.add(sample.name)
                self.labels.setdefault(sample.name, set()).update(sample.labels)


class Destination:
    """A remote-write endpoint on 127.0.0.1 that answers each path its way: /ok 204, /refuse
    400 (dropped by the relay), /flaky 500 twice then 204 (retried, then delivered)."""

    def __init__(self) -> None:
        self.flaky_left = 2
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 204
                if self.path == "/refuse":
                    status = 400
                elif self.path == "/flaky":
                    with outer.lock:
                        if outer.flaky_left > 0:
                            outer.flaky_left -= 1
                            status = 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((rig.HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{rig.HOST}:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FAST = {"min_backoff": "20ms", "max_backoff": "100ms"}


def _push(relay: rig.Relay, job: str, flux: bool) -> None:
    """A write, one refused write, and the Flux objects of docs/examples/ksm-flux.prom."""
    body, headers = rw_body(gauge_batch(["up", "node_load1"], int(time.time() * 1000), job=job))
    status, _, answer = rig.http_request(relay.write_url, method="POST", data=body, headers=headers)
    assert status == 204, answer
    status, _, _ = rig.http_request(relay.write_url, method="POST", data=b"x", headers=headers)
    assert status == 400
    if not flux:
        return
    sent = _run(
        sys.executable,
        "-m",
        "gotk_relay",
        "send",
        str(KSM_EXAMPLE),
        "--url",
        relay.write_url,
        cwd=rig.REPO_ROOT,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr


def start_prometheus(tmp: Path) -> rig.Prom:
    """A Prometheus server (remote-write receiver, lifecycle API) with no targets yet."""
    workdir = tmp / "prometheus"
    workdir.mkdir()
    port = rig.free_port()
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}}))
    argv = [
        rig.require_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={rig.HOST}:{port}",
        "--web.enable-remote-write-receiver",
        "--web.enable-lifecycle",
    ]
    prom = rig.Prom(rig.Proc(f"prometheus-{port}", argv, workdir), port)
    try:
        rig.wait_http(f"{prom.base_url}/-/ready", 30.0, proc=prom.proc)
    except BaseException:
        prom.stop()
        raise
    return prom


def scrape_relays(prom: rig.Prom, relays: list[rig.Relay]) -> None:
    """Point Prometheus at the relays every second, with the rule file evaluated every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "gotk-relay",
                "static_configs": [{"targets": [f"{rig.HOST}:{r.port}" for r in relays]}],
            }
        ],
    }
    (prom.proc.log_path.parent / "prometheus.yml").write_text(json.dumps(config))
    status, _, body = rig.http_request(f"{prom.base_url}/-/reload", method="POST")
    assert status == 200, body


@dataclass
class Lab:
    exported: Exported
    prom: rig.Prom


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two relays and a Prometheus scraping them. One relay has a spool, three destinations (a
    real Prometheus, one refusing, one failing at first), Flux rules fed and a scrape job (one
    target up, one down); the other no spool (the memory-budget metrics are its own)."""
    tmp = tmp_path_factory.mktemp("observability")
    destination = Destination()
    exporter = rig.StaticExporter("node_load1 0.5\n")
    services: list[rig.Prom | rig.Relay] = []
    try:
        prom = start_prometheus(tmp)
        services.append(prom)
        spooled = {
            "spool": {"data_dir": str(tmp / "spool")},
            "remote_write": [
                {"name": "prometheus", "url": prom.write_url, "queue_config": FAST},
                *(
                    {"name": name, "url": destination.url(f"/{name}"), "queue_config": FAST}
                    for name in ("refuse", "flaky")
                ),
            ],
            "scrape_configs": [
                {
                    "job_name": "node",
                    "scrape_interval": "1s",
                    "static_configs": [
                        {"targets": [exporter.target, f"{rig.HOST}:{rig.free_port()}"]}
                    ],
                }
            ],
        }
        in_memory = {"remote_write": [{"name": "prometheus", "url": prom.write_url}]}
        relays = [
            rig.start_relay(tmp / name, json.dumps(config))
            for name, config in (("spooled", spooled), ("in-memory", in_memory))
        ]
        services.extend(relays)
        scrape_relays(prom, relays)
        # Each its own series: both write to the same Prometheus.
        _push(relays[0], "node-a", flux=True)
        _push(relays[1], "node-b", flux=False)

        def settled() -> bool:
            text = relays[0].metrics_text()
            seen = Exported()
            seen.add(text)
            wanted = (
                "gotk_relay_retries_total",
                "gotk_relay_samples_dropped_total",
                "gotk_relay_scrape_failures_total",
                "gotk_relay_destination_request_duration_seconds_bucket",
            )
            return all(name in seen.labels for name in wanted) and any(
                s.name == "gotk_relay_flux_objects" and s.value > 0
                for f in text_string_to_metric_families(text)
                for s in f.samples
            )

        rig.eventually(settled, 20.0, what="the spooled relay's lazily created series")
        found = Exported()
        for relay in relays:
            found.add(relay.metrics_text())
        # Rates need two scrapes of every series: wait for the last ones created.
        rig.eventually(
            lambda: prom.query("count(rate(gotk_relay_samples_dropped_total[1m])) > 0"),
            30.0,
            what="Prometheus' scrapes of the relays",
        )
        yield Lab(found, prom)
    finally:
        for service in reversed(services):
            service.stop()
        exporter.close()
        destination.close()


def rule_queries() -> list[Query]:
    return [Query(rule["alert"], rule["expr"]) for rule in _rules()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "query", dashboard_queries() + rule_queries(), ids=lambda q: q.where.replace(" ", "_")
)
def test_every_metric_and_label_read_is_one_a_relay_exports(query: Query, lab: Lab) -> None:
    exported = lab.exported
    needs = needs_of(pp.parse(grafana_to_promql(query.expr)), Needs())
    if query.label is not None:
        for name in needs.labels:
            needs.labels[name].add(query.label)
    for name, labels in needs.labels.items():
        assert name in exported.names, f"{name} is not on a relay's /metrics"
        if name in WITHOUT_SAMPLES_HERE:
            continue
        assert name in exported.labels, f"{name}: no series on /metrics to check its labels"
        missing = labels - exported.labels[name] - TARGET_LABELS
        assert not missing, f"{name} has no label {sorted(missing)}"


def _only_without_samples(query: Query) -> bool:
    needs = needs_of(pp.parse(grafana_to_promql(query.expr)), Needs())
    return set(needs.labels) <= set(WITHOUT_SAMPLES_HERE)


@pytest.mark.slow
@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where.replace(" ", "_"))
def test_every_dashboard_query_shows_data_from_relays_scraped_by_prometheus(
    query: Query, lab: Lab
) -> None:
    if query.label is not None:  # a variable: what Grafana's label_values() asks Prometheus
        values = lab.prom.api(
            f"label/{query.label}/values", [("match[]", grafana_to_promql(query.expr))]
        )
        assert values, query.expr
        return
    result = lab.prom.query(grafana_to_promql(query.expr))
    # Empty only where every metric read has no series yet (see WITHOUT_SAMPLES_HERE).
    assert bool(result) != _only_without_samples(query), (query.expr, result)


@pytest.mark.slow
def test_prometheus_loads_the_rules_and_evaluates_each_without_error(lab: Lab) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = lab.prom.api("rules", [])["groups"]
        rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["lastEvaluation"][:4] != "0001" for r in rules) else []

    rules = rig.eventually(evaluated, 20.0, what="one evaluation of every rule")
    assert len(rules) == len(_rules())
    assert sorted((r["name"], r["health"], r.get("lastError", "")) for r in rules) == sorted(
        (rule["alert"], "ok", "") for rule in _rules()
    )


@pytest.mark.slow
def test_alerts_become_active_on_what_the_relays_did(lab: Lab) -> None:
    """On the live relays: the refused write, the 400-refusing destination's drops and the
    scrape target that is down start their alerts (pending: their `for:` is minutes); no other
    alert starts but the failing-at-first destination's, which may."""
    expected = [
        {"alertname": "GotkRelayRequestsRefused", "reason": "malformed"},
        {"alertname": "GotkRelaySamplesDropped", "destination": "refuse", "reason": "http_400"},
        {"alertname": "GotkRelayScrapeTargetDown", "exported_job": "node"},
    ]
    optional = [{"alertname": "GotkRelayDestinationFailing", "destination": "flaky"}]

    def matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
        return wanted.items() <= labels.items()

    def active() -> list[dict[str, str]]:
        alerts = [a["labels"] for a in lab.prom.api("alerts", [])["alerts"]]
        seen = all(any(matches(a, w) for a in alerts) for w in expected)
        return alerts if seen else []

    alerts = rig.eventually(active, 20.0, what="the expected alerts")
    unexpected = [a for a in alerts if not any(matches(a, w) for w in expected + optional)]
    assert not unexpected
