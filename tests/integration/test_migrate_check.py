"""`gotk-relay migrate --check URL FILE...` against a real Prometheus 2.42 and VictoriaMetrics:
the queries that read a Flux metric with no series there are listed (exit 3); a URL that does
not answer like Prometheus is an error (exit 1)."""

from __future__ import annotations

import http.server
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gotk_relay.cli import main
from gotk_relay.migrate import (
    Migrated,
    Shape,
    migrate_expr,
    migrate_template_query,
    referenced_metrics,
)
from gotk_relay.migrate.check import CheckError, Located, check, existing_metrics
from gotk_relay.migrate.files import FileFormat, Query, migrate_text, queries
from gotk_relay.migrate.templates import template_promql
from tests.support import rig
from tests.support.rig import (
    VM,
    Prom,
    free_port,
    start_prometheus_receiver,
    start_victoria_metrics,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrate" / "files"

# The KSM shape only: the legacy gauges are gone, as after the Flux 2.5 upgrade.
EXPOSITION = """\
# TYPE gotk_resource_info gauge
gotk_resource_info{customresource_kind="Kustomization",exported_namespace="apps",name="a",ready="True",suspended="false"} 1
gotk_resource_info{customresource_kind="HelmRelease",exported_namespace="apps",name="b",ready="False",suspended="true"} 1
# TYPE up gauge
up{job="kustomize-controller"} 1
"""


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def prom(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prom | VM]:
    """Prometheus 2.42, and VictoriaMetrics: two servers of the API --check asks."""
    tmp = tmp_path_factory.mktemp("check")
    start = start_prometheus_receiver if request.param == "prometheus" else start_victoria_metrics
    with start(tmp) as server:
        sample = tmp / "sample.prom"
        sample.write_text(EXPOSITION)
        assert main(["send", str(sample), "--url", server.write_url]) == 0
        if isinstance(server, VM):
            server.flush()
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["migrate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def migrated_copy(tmp_path: Path, name: str, to: Shape) -> Path:
    def rewrite(text: str, template: bool) -> Migrated:
        return (migrate_template_query if template else migrate_expr)(text, to)

    path = tmp_path / name
    path.write_text(migrate_text((FIXTURES / name).read_text(), rewrite, name=name).text)
    return path


@pytest.mark.slow
def test_legacy_queries_are_listed_where_only_the_info_shape_exists(
    prom: Prom | VM, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = FIXTURES / "flux-prometheusrule.yaml"
    code, out, err = run(capsys, "--check", prom.base_url, str(rule))
    assert code == 3
    assert out.splitlines() == [
        f'{rule}:15: group "flux" alert "FluxReconciliationFailure": '
        "no series for gotk_reconcile_condition",
        f'{rule}:22: group "flux" alert "FluxSuspended": no series for gotk_suspend_status',
    ]
    assert "checked 2 queries in 1 file(s)" in err


@pytest.mark.slow
def test_a_migrated_file_passes(
    prom: Prom | VM, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = migrated_copy(tmp_path, "flux-prometheusrule.yaml", Shape.RESOURCE_INFO)
    code, out, _ = run(capsys, "--check", prom.base_url, str(path))
    assert (code, out) == (0, "")


@pytest.mark.slow
def test_the_dashboard_lists_exactly_what_still_reads_legacy_metrics(
    prom: Prom | VM, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """After migration to the KSM shape, only the query the report called not migratable (the
    Deleted one) still reads a legacy metric, and --check names it; a query reading no Flux
    metric (the duration histogram) is not listed, even though it has no data either."""
    name = "flux-cluster-stats.json"
    path = migrated_copy(tmp_path, name, Shape.RESOURCE_INFO)
    code, out, _ = run(capsys, "--check", prom.base_url, str(path))
    assert code == 3
    assert out.splitlines() == [
        f'{path}:91: panel "Sources Ready \u2014 and deleted" target B: '
        "no series for gotk_reconcile_condition"
    ]
    original = FIXTURES / name
    code, out, _ = run(capsys, "--check", prom.base_url, str(original), str(path))
    listed = [line for line in out.splitlines() if line.startswith(str(original))]
    flux = [q for q in queries(original.read_text(), FileFormat.GRAFANA) if _reads_flux(q)]
    assert len(listed) == len(flux) == 8  # every Flux query of the legacy dashboard
    assert 'variable "operator_namespace": no series for gotk_reconcile_condition' in out


def _reads_flux(query: Query) -> bool:
    inner = template_promql(query.text) if query.template else query.text
    return bool(inner and referenced_metrics(inner))


@pytest.mark.slow
def test_the_window_bounds_what_counts_as_present(prom: Prom | VM) -> None:
    names = {"gotk_resource_info", "gotk_reconcile_condition"}
    assert existing_metrics(prom.base_url, names) == {"gotk_resource_info"}
    # a window that ended a day ago holds nothing the test wrote
    day_ago = time.time() - 86400
    assert existing_metrics(prom.base_url, names, now=day_ago, window_s=60) == frozenset()


def test_no_answer_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rule = FIXTURES / "flux-prometheusrule.yaml"
    code, out, err = run(capsys, "--check", url, "--timeout", "2", str(rule))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {url}: no answer:")


class _NotPrometheus(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "world"}' if self.path.startswith("/json") else b"<html>hi</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_prometheus() -> Iterator[str]:
    with rig.serve_http(_NotPrometheus) as url:
        yield url


@pytest.mark.parametrize("path", ["", "/json"], ids=["html", "json-not-prometheus"])
def test_a_url_that_is_not_prometheus_is_an_error(
    not_prometheus: str, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    url = not_prometheus + path
    code, out, err = run(capsys, "--check", url, str(FIXTURES / "flux-queries.promql"))
    assert (code, out) == (1, "")
    assert f"error: {url}: does not answer like a Prometheus API" in err


@pytest.mark.slow
def test_an_error_status_is_an_error(prom: Prom | VM, capsys: pytest.CaptureFixture[str]) -> None:
    url = prom.base_url + "/nowhere"
    code, out, err = run(capsys, "--check", url, str(FIXTURES / "flux-queries.promql"))
    assert (code, out) == (1, "")
    assert f"error: {url}: HTTP 4" in err  # Prometheus 404, VictoriaMetrics 400


def test_a_query_that_does_not_parse_is_named(
    not_prometheus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.promql"
    path.write_text("sum(gotk_suspend_status\n")
    code, out, err = run(capsys, "--check", not_prometheus, str(path))
    assert (code, out) == (1, "")
    assert f"error: {path}:1: expression #1: " in err


def test_queries_that_read_no_flux_metric_ask_nothing() -> None:
    query = Query("expression #1", 1, "rate(http_requests_total[5m])", False)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail
    assert check([Located("q.promql", query)], url, referenced_metrics) == []
    with pytest.raises(CheckError):
        existing_metrics(url, {"gotk_resource_info"}, timeout_s=2)


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ("label_values(gotk_reconcile_condition, namespace)", "gotk_reconcile_condition"),
        (
            'label_values(gotk_resource_info{a=",)"}, exported_namespace)',
            'gotk_resource_info{a=",)"}',
        ),
        ("label_values(namespace)", None),
        (
            "query_result(count(gotk_resource_info) by (name))",
            "count(gotk_resource_info) by (name)",
        ),
        ("metrics(gotk_.*)", None),
        ("sum(gotk_suspend_status)", "sum(gotk_suspend_status)"),
    ],
    ids=[
        "label-values",
        "label-values-quoted-comma",
        "label-values-label",
        "query-result",
        "metrics",
        "promql",
    ],
)
def test_template_queries_give_the_promql_they_read(text: str, inner: str | None) -> None:
    assert template_promql(text) == inner
