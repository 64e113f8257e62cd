"""migrate.files: queries rewritten in dashboard JSON, rule YAML and .promql, all else kept byte
for byte. The query rewrite is injected; these tests use a plain textual double of it (the real
one is tested on the same files in tests/integration/test_migrate_cli.py)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.migrate import Migrated, NotMigratable, Shape
from gotk_relay.migrate.files import (
    FileFormat,
    FileFormatError,
    QueryReport,
    Status,
    detect_format,
    encode_json_string,
    migrate_text,
    queries,
    yaml_double_quoted,
    yaml_plain,
    yaml_single_quoted,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrate" / "files"
FILES = sorted(p.name for p in FIXTURES.iterdir())


def rename(text: str, template: bool) -> Migrated:
    """The double: legacy names to info names; Deleted refused; unbalanced text does not parse."""
    if "Deleted" in text:
        raise NotMigratable("status=Deleted has no counterpart")
    if text.count("(") != text.count(")"):
        raise ValueError("unbalanced parentheses")
    if "gotk_reconcile_condition" not in text and "gotk_suspend_status" not in text:
        return Migrated(text, None, False)
    new = text.replace("gotk_reconcile_condition", "gotk_resource_info").replace(
        "gotk_suspend_status", 'gotk_resource_info{suspended="true"}'
    )
    return Migrated(new, Shape.LEGACY, True, ("template",) if template else ())


def keep(text: str, template: bool) -> Migrated:
    return Migrated(text, Shape.RESOURCE_INFO, False)


def refuse(text: str, template: bool) -> Migrated:
    raise NotMigratable("no")


def constant(value: str) -> Any:
    def rewrite(text: str, template: bool) -> Migrated:
        if "gotk_" not in text:
            return Migrated(text, None, False)
        return Migrated(value, Shape.LEGACY, True)

    return rewrite


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def load(text: str, fmt: FileFormat) -> Any:
    if fmt is FileFormat.GRAFANA:
        return json.loads(text)
    if fmt is FileFormat.RULES:
        return list(yaml.safe_load_all(text))
    return text.splitlines()


def differing(a: Any, b: Any, path: str = "") -> list[tuple[str, str, str]]:
    """Paths where the two structures hold different strings; AssertionError on any other
    difference (keys, order of keys, types, non-string values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        return [d for k in a for d in differing(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differing(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, str) and isinstance(b, str):
        return [] if a == b else [(path, a, b)]
    assert type(a) is type(b) and a == b, path
    return []


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("rewrite", [keep, refuse], ids=["unchanged", "refused"])
def test_a_file_with_nothing_migrated_comes_back_byte_for_byte(name: str, rewrite: Any) -> None:
    text = fixture(name)
    result = migrate_text(text, rewrite, name=name)
    assert result.text == text
    assert not result.changed
    assert result.queries


@pytest.mark.parametrize("name", FILES)
def test_a_rewritten_file_reads_back_the_same_but_for_its_queries(name: str) -> None:
    text = fixture(name)
    result = migrate_text(text, rename, name=name)
    before, after = load(text, result.format), load(result.text, result.format)
    if result.format is FileFormat.PROMQL:
        # comment and blank lines stay where they were; only expression lines change
        kept = [
            (i, line) for i, line in enumerate(before) if not line.strip() or line.startswith("#")
        ]
        assert [(i, after[i]) for i, _ in kept] == kept
        return
    changes = differing(before, after)
    migrated = [q for q in result.queries if q.status is Status.MIGRATED]
    assert changes, "the double rewrites something in every fixture"
    for _, old, new in changes:
        assert new == rename(old, False).text
    # every migrated query is one changed string (two for a variable whose definition mirrors it)
    assert {new for _, _, new in changes} == {q.migrated for q in migrated}


@pytest.mark.parametrize("name", FILES)
def test_only_the_lines_of_migrated_queries_differ(name: str) -> None:
    text = fixture(name)
    result = migrate_text(text, rename, name=name)
    old_lines, new_lines = text.splitlines(), result.text.splitlines()
    migrated = [q for q in result.queries if q.status is Status.MIGRATED]
    allowed = {n for q in migrated for n in range(q.line, q.query.last_line + 1)}
    # a variable's definition mirrors its query on a line of its own
    allowed |= {
        i + 1
        for i, line in enumerate(old_lines)
        if any(json.dumps(q.original)[1:-1] in line for q in migrated)
    }
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for op, i1, i2, _, _ in matcher.get_opcodes():
        if op != "equal":
            assert set(range(i1 + 1, i2 + 1)) <= allowed, (op, old_lines[i1:i2])
    for line in old_lines:  # comments survive wherever the file can have them
        if "#" in line and "gotk_" not in line:
            assert line in new_lines


def locations(reports: tuple[QueryReport, ...]) -> list[tuple[str, str]]:
    return [(q.location, q.status.value) for q in reports]


def test_the_dashboard_report_names_panels_rows_and_variables() -> None:
    result = migrate_text(fixture("flux-cluster-stats.json"), rename, name="d.json")
    assert result.format is FileFormat.GRAFANA
    assert locations(result.queries) == [
        ('panel "Cluster Reconcilers" target A', "migrated"),
        ('panel "Failing Reconcilers" target A', "migrated"),
        ('panel "Sources Ready \u2014 and deleted" target A', "migrated"),
        ('panel "Sources Ready \u2014 and deleted" target B', "not migratable"),
        ('panel "Cluster reconciliation readiness" target A', "migrated"),
        ('row "Details" / panel "Suspended by kind" target A', "migrated"),
        ('row "Details" / panel "Reconciliations per second" target A', "unchanged"),
        ('variable "operator_namespace"', "migrated"),
        ('variable "namespace"', "migrated"),
    ]
    refused = [q for q in result.queries if q.status is Status.NOT_MIGRATABLE]
    assert refused[0].reason == "status=Deleted has no counterpart"
    assert refused[0].line == 91
    # the Loki panel's query names the legacy metric too, and is not PromQL: untouched
    assert (
        '"expr": "{namespace=\\"flux-system\\"} |= \\"gotk_reconcile_condition\\""' in result.text
    )


def test_a_variable_definition_follows_its_query() -> None:
    result = migrate_text(fixture("flux-cluster-stats.json"), rename, name="d.json")
    variables = {v["name"]: v for v in json.loads(result.text)["templating"]["list"]}
    ns = variables["namespace"]
    assert ns["query"]["query"] == ns["definition"]
    assert ns["query"]["refId"] == "PrometheusVariableQueryEditor-VariableQuery"
    assert ns["definition"].startswith("label_values(gotk_resource_info{")
    op = variables["operator_namespace"]
    assert op["query"] == op["definition"] == "label_values(gotk_resource_info, namespace)"
    assert variables["window"]["query"] == "1m,5m,1h"  # an interval variable: no query


def test_a_drifted_definition_is_migrated_on_its_own() -> None:
    dash = {
        "title": "t",
        "templating": {
            "list": [
                {
                    "name": "ns",
                    "type": "query",
                    "query": "label_values(gotk_suspend_status, exported_namespace)",
                    "definition": "label_values(gotk_reconcile_condition, exported_namespace)",
                }
            ]
        },
    }
    result = migrate_text(json.dumps(dash, indent=2), rename, name="d.json")
    assert locations(result.queries) == [
        ('variable "ns"', "migrated"),
        ('variable "ns" definition', "migrated"),
    ]
    var = json.loads(result.text)["templating"]["list"][0]
    assert var["definition"] == "label_values(gotk_resource_info, exported_namespace)"


OLD = "sum(gotk_reconcile_condition)"
NEW = "sum(gotk_resource_info)"


def target(expr: str, **extra: Any) -> dict[str, Any]:
    return {"expr": expr, "refId": "A", **extra}


@pytest.mark.parametrize(
    ("document", "path"),
    [
        pytest.param(
            {
                "dashboard": {"title": "x", "panels": [{"title": "p", "targets": [target(OLD)]}]},
                "meta": {},
            },
            ["dashboard", "panels", 0, "targets", 0, "expr"],
            id="http-api-wrapper",
        ),
        pytest.param(
            {
                "title": "x",
                "rows": [{"title": "r", "panels": [{"title": "p", "targets": [target(OLD)]}]}],
            },
            ["rows", 0, "panels", 0, "targets", 0, "expr"],
            id="old-schema-rows",
        ),
        pytest.param(
            {
                "title": "x",
                "panels": [
                    {"type": "row", "collapsed": True, "panels": [{"targets": [target(OLD)]}]}
                ],
            },
            ["panels", 0, "panels", 0, "targets", 0, "expr"],
            id="collapsed-row",
        ),
        pytest.param(
            {
                "uid": "lib",
                "name": "Failing",
                "kind": 1,
                "model": {"title": "p", "targets": [target(OLD)]},
            },
            ["model", "targets", 0, "expr"],
            id="library-panel",
        ),
        pytest.param(
            {
                "result": {
                    "uid": "lib",
                    "kind": 1,
                    "model": {"title": "p", "targets": [target(OLD)]},
                }
            },
            ["result", "model", "targets", 0, "expr"],
            id="library-panel-api",
        ),
        pytest.param(
            {
                "title": "x",
                "__elements": {
                    "lib": {"kind": 1, "model": {"title": "p", "targets": [target(OLD)]}}
                },
                "panels": [{"libraryPanel": {"uid": "lib"}}],
            },
            ["__elements", "lib", "model", "targets", 0, "expr"],
            id="library-panel-in-export",
        ),
        pytest.param(
            {
                "title": "x",
                "panels": [
                    {
                        "datasource": {"type": "datasource", "uid": "-- Mixed --"},
                        "targets": [
                            target(OLD, datasource={"type": "prometheus", "uid": "p"}),
                        ],
                    }
                ],
            },
            ["panels", 0, "targets", 0, "expr"],
            id="mixed-datasource",
        ),
        pytest.param(
            {
                "title": "x",
                "annotations": {"list": [{"name": "a", "datasource": "Prometheus", "expr": OLD}]},
            },
            ["annotations", "list", 0, "expr"],
            id="annotation",
        ),
    ],
)
def test_every_place_grafana_keeps_a_prometheus_query(
    document: dict[str, Any], path: list[Any]
) -> None:
    result = migrate_text(json.dumps(document, indent=4), rename, name="d.json")
    value: Any = json.loads(result.text)
    for key in path:
        value = value[key]
    assert value == NEW
    assert [q.status for q in result.queries] == [Status.MIGRATED]


@pytest.mark.parametrize(
    "datasource",
    [
        {"type": "loki", "uid": "l"},
        {"type": "datasource", "uid": "grafana"},
        "-- Grafana --",
        "${DS_LOKI}",
        "$logs",
    ],
    ids=["loki-ref", "grafana-builtin", "grafana-name", "input-loki", "variable-loki"],
)
def test_queries_of_other_datasources_are_left_alone(datasource: Any) -> None:
    dash = {
        "__inputs": [{"name": "DS_LOKI", "pluginId": "loki"}],
        "title": "x",
        "panels": [{"datasource": datasource, "targets": [target(OLD)]}],
        "templating": {"list": [{"name": "logs", "type": "datasource", "query": "loki"}]},
    }
    text = json.dumps(dash)
    result = migrate_text(text, rename, name="d.json")
    assert result.text == text and result.queries == ()


def test_json_spacing_and_escapes_stay_as_written() -> None:
    # compact, tabs, \u escapes, Go's HTML escaping, a duplicate key (the last one is read)
    text = (
        '{"title":"caf\\u00e9","panels":[{"title":"p","targets":[{"refId":"A",\t"expr":'
        '"sum(gotk_reconcile_condition) \\u003e 0","legendFormat":"\\u00e9"}]}],"x":1e3,"x":2}'
    )
    result = migrate_text(text, rename, name="d.json")
    assert result.text == text.replace(
        "sum(gotk_reconcile_condition) \\u003e 0", "sum(gotk_resource_info) \\u003e 0"
    )


def test_non_ascii_is_escaped_only_where_it_was() -> None:
    ascii_text = '{"title": "x", "panels": [{"targets": [{"expr": "gotk_suspend_status{n=\\"\\u00e9\\"}"}]}]}'
    raw_text = (
        '{"title": "x", "panels": [{"targets": [{"expr": "gotk_suspend_status{n=\\"\u00e9\\"}"}]}]}'
    )
    assert migrate_text(ascii_text, rename, name="a.json").text.isascii()
    assert "\u00e9" in migrate_text(raw_text, rename, name="a.json").text


RULE = """\
# head comment
groups:
  - name: g   # trailing comment
    rules:
      - alert: A
        expr: {expr}
        for: 5m  # five minutes
      - record: r
        expr: up == 0
"""


@pytest.mark.parametrize(
    ("written", "new", "expected"),
    [
        ("sum(gotk_suspend_status)", "sum(x)", "expr: sum(x)\n"),
        ("sum(gotk_suspend_status)", '{__name__="x"}', "expr: '{__name__=\"x\"}'\n"),
        ("sum(gotk_suspend_status)", "x # y", "expr: 'x # y'\n"),
        ("sum(gotk_suspend_status)", "a: b", "expr: 'a: b'\n"),
        ("sum(gotk_suspend_status)", "1", "expr: '1'\n"),
        ("sum(gotk_suspend_status)", "a\nb", 'expr: "a\\nb"\n'),
        ("'sum(gotk_suspend_status)'", "it's", "expr: 'it''s'\n"),
        ("'sum(gotk_suspend_status)'", "a\nb", 'expr: "a\\nb"\n'),
        ('"sum(gotk_suspend_status)"', 'a"b', 'expr: "a\\"b"\n'),
        (
            "|\n          sum(gotk_suspend_status)\n",
            "x\n  y",
            "expr: |\n          x\n            y\n",
        ),
        ("|-\n          sum(\n            gotk_suspend_status)", "x", "expr: |-\n          x\n"),
        ("|+\n          sum(gotk_suspend_status)\n\n", "x", "expr: |+\n          x\n\n"),
        (">\n          sum(\n          gotk_suspend_status)\n", "x y", "expr: >\n          x y\n"),
        (">-\n          sum(gotk_suspend_status)", "x\ny", "expr: |-\n          x\n          y\n"),
        (
            "&q |\n          sum(gotk_suspend_status)\n",
            "x\ny",
            "expr: &q |\n          x\n          y\n",
        ),
        ("!!str sum(gotk_suspend_status)", "x", "expr: !!str x\n"),
    ],
    ids=[
        "plain",
        "plain-to-quoted-brace",
        "plain-to-quoted-comment",
        "plain-to-quoted-colon",
        "plain-to-quoted-number",
        "plain-to-double-newline",
        "single",
        "single-to-double-newline",
        "double",
        "literal",
        "literal-strip",
        "literal-keep",
        "folded",
        "folded-to-literal-multiline",
        "anchored-literal",
        "tagged-plain",
    ],
)
def test_a_yaml_scalar_keeps_its_style_or_takes_the_nearest(
    written: str, new: str, expected: str
) -> None:
    text = RULE.format(expr=written)
    result = migrate_text(text, constant(new), name="r.yaml")
    before, after = yaml.safe_load(text), yaml.safe_load(result.text)
    old_value = before["groups"][0]["rules"][0]["expr"]
    lead, trail = (
        old_value[: len(old_value) - len(old_value.lstrip())],
        old_value[len(old_value.rstrip()) :],
    )
    assert after["groups"][0]["rules"][0]["expr"] == lead + new + trail
    assert expected in result.text
    head, _, tail = text.partition("expr: ")
    assert result.text.startswith(head)
    assert result.text.endswith(tail[tail.index("        for: 5m") :])


def test_a_prometheusrule_manifest_keeps_its_comments_and_other_documents() -> None:
    text = fixture("flux-prometheusrule.yaml")
    result = migrate_text(text, rename, name="m.yaml")
    assert locations(result.queries) == [
        ('group "flux" alert "FluxReconciliationFailure"', "migrated"),
        ('group "flux" alert "FluxSuspended"', "migrated"),
    ]
    assert result.text.partition("\n---\n")[2] == text.partition("\n---\n")[2]
    assert "        # Objects failing for ten minutes.\n" in result.text
    assert "    release: kube-prometheus-stack   # picked up by the operator\n" in result.text
    assert "expr: >-\n            max(gotk_resource_info{" in result.text


def test_the_rule_file_report_names_groups_and_rules() -> None:
    result = migrate_text(fixture("flux-alerts.rules.yaml"), rename, name="r.yaml")
    assert [(q.location, q.status.value, q.line) for q in result.queries] == [
        ('group "GitOpsToolkit" alert "ReconciliationFailure"', "not migratable", 6),
        ('group "flux-extra" alert "FluxObjectNotReady"', "migrated", 16),
        ('group "flux-extra" alert "FluxSuspendedTooLong"', "migrated", 23),
        ('group "flux-extra" record "flux:failing:count"', "migrated", 26),
        ('group "flux-extra" record "flux:ready:count"', "migrated", 28),
        ('group "flux-extra" alert "ControllerDown"', "unchanged", 32),
    ]
    assert result.queries[-1].reason == "reads no Flux metric"


def test_an_aliased_expression_is_rewritten_once_at_its_anchor() -> None:
    text = (
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: &e sum(gotk_suspend_status)\n"
        "  - alert: B\n    expr: *e\n"
    )
    result = migrate_text(text, rename, name="r.yml")
    assert result.text == text.replace(
        "gotk_suspend_status", 'gotk_resource_info{suspended="true"}'
    )
    assert len(result.queries) == 1


def test_crlf_line_endings_stay() -> None:
    text = RULE.format(expr="|\n          sum(\n            gotk_suspend_status)\n").replace(
        "\n", "\r\n"
    )
    result = migrate_text(text, constant("a\nb"), name="r.yaml")
    assert "\r\n          a\r\n          b\r\n" in result.text
    assert result.text.count("\n") == result.text.count("\r\n")
    assert yaml.safe_load(result.text)["groups"][0]["rules"][0]["expr"] == "a\nb\n"


def test_promql_files_keep_comments_and_blank_lines() -> None:
    text = fixture("flux-queries.promql")
    result = migrate_text(text, rename, name="q.promql")
    assert result.format is FileFormat.PROMQL
    assert [(q.location, q.line, q.status.value) for q in result.queries] == [
        ("expression #1", 2, "migrated"),
        ("expression #2", 5, "migrated"),
        ("expression #3", 10, "unchanged"),
    ]
    assert result.text == (
        "# Failing Kustomizations and HelmReleases\n"
        'sum(gotk_resource_info{type="Ready",status="False",kind=~"Kustomization|HelmRelease"})\n'
        "\n"
        "# Suspended objects, per namespace\n"
        "sum by (exported_namespace) (\n"
        '  gotk_resource_info{suspended="true"}\n'
        ")\n"
        "\n"
        "# not Flux\n"
        "rate(http_requests_total[5m])\n"
    )


def test_a_query_that_does_not_parse_is_reported_invalid_and_left_as_is() -> None:
    text = "sum(gotk_suspend_status\n\nsum(gotk_suspend_status)\n"
    result = migrate_text(text, rename, name="q.promql")
    assert [(q.status, q.reason) for q in result.queries] == [
        (Status.INVALID, "unbalanced parentheses"),
        (Status.MIGRATED, ""),
    ]
    assert result.text.startswith("sum(gotk_suspend_status\n\n")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("d.json", "", FileFormat.GRAFANA),
        ("r.yml", "", FileFormat.RULES),
        ("r.YAML", "", FileFormat.RULES),
        ("q.promql", "", FileFormat.PROMQL),
        ("dashboard", '  {"panels": []}', FileFormat.GRAFANA),
        ("rules", "groups: []\n", FileFormat.RULES),
        ("query", "sum(x)\n", FileFormat.PROMQL),
        ("query", 'sum(x{a="b"}) > 0\n', FileFormat.PROMQL),
    ],
    ids=[
        "json",
        "yml",
        "yaml-upper",
        "promql",
        "sniff-json",
        "sniff-yaml",
        "sniff-promql",
        "sniff-promql-2",
    ],
)
def test_the_format_is_detected(name: str, text: str, expected: FileFormat) -> None:
    assert detect_format(name, text) is expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("d.json", '{"panels": [', "invalid JSON"),
        ("d.json", "[1, 2]", "not a Grafana dashboard"),
        ("d.json", '{"apiVersion": "v1"}', "not a Grafana dashboard"),
        ("r.yaml", "groups: [\n", "invalid YAML"),
    ],
    ids=["bad-json", "json-array", "json-not-dashboard", "bad-yaml"],
)
def test_a_bad_file_is_refused_with_the_reason(name: str, text: str, message: str) -> None:
    with pytest.raises(FileFormatError, match=message):
        migrate_text(text, rename, name=name)


def test_queries_lists_every_query_in_file_order() -> None:
    found = queries(fixture("flux-cluster-stats.json"), FileFormat.GRAFANA)
    assert [q.line for q in found] == sorted(q.line for q in found)
    assert [q.template for q in found].count(True) == 2
    assert all('{namespace=\\"flux-system\\"}' not in q.text for q in found)


# --- encoders: any string survives ----------------------------------------------------------

any_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@given(any_text, st.sampled_from(['"x"', '"\\u00e9"', '"\\u003e"', '"\u00e9"']))
def test_any_string_round_trips_through_the_json_encoder(value: str, original: str) -> None:
    assert json.loads(encode_json_string(value, original)) == value


@given(any_text)
def test_any_string_round_trips_through_the_yaml_encoders(value: str) -> None:
    assert yaml.safe_load("k: " + yaml_double_quoted(value)) == {"k": value}
    single = yaml_single_quoted(value)
    if single is not None:
        assert yaml.safe_load("k: " + single) == {"k": value}
    plain = yaml_plain(value)
    if plain is not None:
        assert yaml.safe_load("k: " + plain) == {"k": value}


@settings(max_examples=60)
@given(
    any_text.filter(lambda s: s.strip() != ""),
    st.sampled_from(
        [
            "sum(gotk_suspend_status)",
            "'sum(gotk_suspend_status)'",
            '"sum(gotk_suspend_status)"',
            "|\n          sum(gotk_suspend_status)\n",
            "|-\n          sum(gotk_suspend_status)",
            ">\n          sum(gotk_suspend_status)\n",
        ]
    ),
)
def test_any_new_text_reads_back_from_a_rule_file(new: str, written: str) -> None:
    text = RULE.format(expr=written)
    result = migrate_text(text, constant(new), name="r.yaml")
    old_value = yaml.safe_load(text)["groups"][0]["rules"][0]["expr"]
    trail = old_value[len(old_value.rstrip()) :]  # a block scalar's final line break
    got = yaml.safe_load(result.text)["groups"][0]["rules"]
    assert got[0]["expr"] == new + trail
    assert got[1] == {"record": "r", "expr": "up == 0"}


@settings(max_examples=60)
@given(any_text.filter(lambda s: s.strip() != ""))
def test_any_new_text_reads_back_from_a_dashboard(new: str) -> None:
    text = json.dumps({"title": "x", "panels": [{"targets": [target(OLD)]}]}, indent=2)
    result = migrate_text(text, constant(new), name="d.json")
    assert json.loads(result.text)["panels"][0]["targets"][0]["expr"] == new


def test_a_datasource_known_by_name_only_is_migrated_when_its_query_is_promql() -> None:
    dash = {
        "title": "x",
        "panels": [
            {
                "title": "logs",
                "datasource": "Logs",
                "targets": [target('{app="x"} |= "gotk_reconcile_condition("')],
            },
            {"title": "thanos", "datasource": "Thanos", "targets": [target(OLD)]},
            {
                "title": "default",
                "datasource": None,
                "targets": [target("sum(gotk_suspend_status")],
            },
        ],
    }
    result = migrate_text(json.dumps(dash, indent=1), rename, name="d.json")
    logs, thanos, default = result.queries
    assert logs.status is Status.UNCHANGED and "not PromQL" in logs.reason
    assert thanos.status is Status.MIGRATED
    # the default datasource of a dashboard with Flux queries is Prometheus: a typo is an error
    assert default.status is Status.INVALID


def test_rule_groups_inside_chart_values_are_found() -> None:
    text = (
        "additionalPrometheusRulesMap:\n"
        "  flux:\n"
        "    groups:\n"
        "      - name: flux\n"
        "        rules:\n"
        "          - alert: Suspended\n"
        "            expr: gotk_suspend_status == 1\n"
        "grafana:\n"
        "  groups: [a, b]\n"
    )
    result = migrate_text(text, rename, name="values.yaml")
    assert [(q.location, q.status) for q in result.queries] == [
        ('group "flux" alert "Suspended"', Status.MIGRATED)
    ]
    assert result.text == text.replace(
        "gotk_suspend_status", 'gotk_resource_info{suspended="true"}'
    )


def test_a_blank_line_inside_a_rewritten_promql_expression_goes() -> None:
    text = "# c\nsum(gotk_suspend_status)\n\nup\n"
    result = migrate_text(text, constant("sum(\n\n  x)"), name="q.promql")
    assert result.text == "# c\nsum(\n  x)\n\nup\n"
    assert [q.status for q in result.queries] == [Status.MIGRATED, Status.UNCHANGED]


def test_a_plain_scalar_in_a_flow_mapping_is_quoted_when_it_must_be() -> None:
    text = "groups:\n- name: g\n  rules:\n  - {alert: A, expr: gotk_suspend_status == 1, for: 5m}\n"
    result = migrate_text(text, constant("sum by (a, b) (x)"), name="r.yaml")
    assert result.text == text.replace("gotk_suspend_status == 1", '"sum by (a, b) (x)"')
    assert yaml.safe_load(result.text)["groups"][0]["rules"][0]["for"] == "5m"


def test_a_block_header_comment_does_not_change_its_chomping() -> None:
    text = RULE.format(expr="| # a-b-c\n          sum(gotk_suspend_status)\n")
    result = migrate_text(text, constant("x\ny"), name="r.yaml")
    assert "expr: | # a-b-c\n          x\n          y\n" in result.text
    assert yaml.safe_load(result.text)["groups"][0]["rules"][0]["expr"] == "x\ny\n"


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
exprs = st.sampled_from(
    [OLD, 'gotk_suspend_status{name="\u00e9<&>"} == 1', "up", "sum(gotk_reconcile_condition"]
)


@settings(max_examples=80)
@given(
    st.lists(st.tuples(any_text, exprs, json_values), min_size=1, max_size=4),
    st.sampled_from([None, 0, 2, "\t"]),
    st.booleans(),
)
def test_any_dashboard_keeps_every_byte_but_its_rewritten_queries(
    panels: list[tuple[str, str, Any]], indent: int | str | None, ascii_only: bool
) -> None:
    def build(expr_of: Any) -> dict[str, Any]:
        return {
            "title": "generated",
            "panels": [
                {"title": title, "extra": extra, "targets": [{"refId": "A", "expr": expr_of(expr)}]}
                for title, expr, extra in panels
            ],
        }

    text = json.dumps(build(lambda e: e), indent=indent, ensure_ascii=ascii_only)
    assert migrate_text(text, keep, name="d.json").text == text
    result = migrate_text(text, rename, name="d.json")

    def expected(expr: str) -> str:
        try:
            return rename(expr, False).text
        except ValueError:
            return expr

    assert json.loads(result.text) == build(expected)
    if ascii_only:
        assert result.text.isascii()
    invalid = [q for q in result.queries if q.status is Status.INVALID]
    assert len(invalid) == sum(1 for _, e, _ in panels if e.endswith("condition"))
