"""`gotk-relay migrate`: --expr and FILE..., the real rewrite on realistic files, exit codes.

Most tests call the CLI's ``main`` in-process (argv in, exit code, stdout and stderr out); one
runs it as an operator does, in a process of its own."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gotk_relay.cli import main
from gotk_relay.migrate import (
    LabelShape,
    Migrated,
    NotMigratable,
    Shape,
    migrate_expr,
    migrate_template_query,
    referenced_metrics,
)
from gotk_relay.migrate.files import (
    FileFormat,
    Rewrite,
    Status,
    detect_format,
    migrate_text,
    queries,
)
from gotk_relay.migrate.templates import template_promql

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrate" / "files"
FILES = sorted(p.name for p in FIXTURES.iterdir())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["migrate", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def real(to: Shape, label_shape: LabelShape = LabelShape.STORED) -> Rewrite:
    def rewrite(text: str, template: bool) -> Migrated:
        fn = migrate_template_query if template else migrate_expr
        return fn(text, to, label_shape=label_shape)

    return rewrite


# --- --expr ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expr"),
    [
        ("resource_info", 'sum(gotk_reconcile_condition{type="Ready",status="False"})'),
        ("flux_resource_info", 'gotk_suspend_status{kind="HelmRelease"} == 1'),
        ("legacy", 'count(gotk_resource_info{ready="False"})'),
        ("resource_info", 'count(flux_resource_info{suspended="True"}) by (exported_namespace)'),
    ],
    ids=["legacy-to-ksm", "legacy-to-operator", "ksm-to-legacy", "operator-to-ksm"],
)
def test_expr_prints_the_migrated_expression(
    capsys: pytest.CaptureFixture[str], to: str, expr: str
) -> None:
    code, out, _ = run(capsys, "--to", to, "--expr", expr)
    expected = migrate_expr(expr, Shape(to))
    assert expected.changed
    assert (code, out) == (0, expected.text + "\n")
    assert (
        referenced_metrics(out)
        <= {
            "legacy": {"gotk_reconcile_condition", "gotk_suspend_status"},
            "resource_info": {"gotk_resource_info"},
            "flux_resource_info": {"flux_resource_info"},
        }[to]
    )


def test_expr_takes_a_grafana_variable_query(capsys: pytest.CaptureFixture[str]) -> None:
    query = "label_values(gotk_reconcile_condition, exported_namespace)"
    code, out, _ = run(capsys, "--to", "resource_info", "--expr", query)
    expected = migrate_template_query(query, Shape.RESOURCE_INFO)
    assert expected.changed
    assert (code, out) == (0, expected.text + "\n")


def test_expr_not_migratable_prints_it_unchanged_and_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    expr = (
        'max by (exported_namespace, name, kind) (gotk_reconcile_condition{status="Deleted"} == 1)'
    )
    with pytest.raises(NotMigratable) as refused:
        migrate_expr(expr, Shape.RESOURCE_INFO)
    code, out, err = run(capsys, "--to", "resource_info", "--expr", expr)
    assert (code, out) == (3, expr + "\n")
    assert expr in err and refused.value.reason in err


def test_expr_that_does_not_parse_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--to", "resource_info", "--expr", "sum(gotk_suspend_status")
    assert (code, out) == (1, "")
    assert err.startswith("error: ")


def test_label_shape_and_from_reach_the_rewrite(capsys: pytest.CaptureFixture[str]) -> None:
    expr = 'sum(gotk_reconcile_condition{namespace="apps",status="False"})'
    code, out, _ = run(capsys, "--to", "resource_info", "--label-shape", "raw", "--expr", expr)
    raw = migrate_expr(expr, Shape.RESOURCE_INFO, label_shape=LabelShape.RAW)
    assert (code, out) == (0, raw.text + "\n")
    assert 'exported_namespace="apps"' in out  # raw `namespace` is the object's
    # stored (the default): `namespace` is the controller's, no counterpart on the info shape
    code, out, err = run(capsys, "--to", "resource_info", "--expr", expr)
    assert (code, out) == (3, expr + "\n")
    assert 'namespace="apps"' in err
    plain = 'sum(gotk_reconcile_condition{status="False"})'
    code, out, _ = run(capsys, "--to", "resource_info", "--from", "legacy", "--expr", plain)
    assert (code, out) == (
        0,
        migrate_expr(plain, Shape.RESOURCE_INFO, source=Shape.LEGACY).text + "\n",
    )
    # --from names the shape the query reads: a legacy query said to read the KSM shape is refused
    code, out, err = run(capsys, "--to", "legacy", "--from", "resource_info", "--expr", plain)
    with pytest.raises(NotMigratable) as refused:
        migrate_expr(plain, Shape.LEGACY, source=Shape.RESOURCE_INFO)
    assert (code, out) == (3, plain + "\n")
    assert refused.value.reason in err


# --- FILE... --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_one_file_goes_to_stdout_with_a_summary_on_stderr(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = FIXTURES / name
    text = path.read_text()
    expected = migrate_text(text, real(Shape.RESOURCE_INFO), name=name)
    code, out, err = run(capsys, "--to", "resource_info", str(path))
    assert out == expected.text
    refused = [q for q in expected.queries if q.status is Status.NOT_MIGRATABLE]
    assert code == (3 if refused else 0)
    assert err.splitlines()[0].startswith(f"{path} ({expected.format.value}): ")
    for q in expected.queries:
        assert f"{path}:{q.line}: {q.location}: {q.status.value}" in err
    for q in refused:
        assert q.reason in err


def flux_queries(text: str, fmt: FileFormat) -> list[str]:
    found = []
    for q in queries(text, fmt):
        inner = template_promql(q.text) if q.template else q.text
        if inner and referenced_metrics(inner):
            found.append(inner)
    return found


@pytest.mark.parametrize("to", ["resource_info", "flux_resource_info"])
@pytest.mark.parametrize("name", FILES)
def test_migrated_files_read_only_the_new_metric_but_where_refused(name: str, to: str) -> None:
    """The real rewrite on the fixtures: every migrated query reads the target's info metric
    and nothing else, the structure around the queries is the same, and a query left on the
    legacy metrics is one the report says could not be migrated."""
    text = (FIXTURES / name).read_text()
    result = migrate_text(text, real(Shape(to)), name=name)
    wanted = {"resource_info": "gotk_resource_info", "flux_resource_info": "flux_resource_info"}
    refused = {q.original.strip() for q in result.queries if q.status is Status.NOT_MIGRATABLE}
    for query in flux_queries(result.text, result.format):
        if query.strip() in refused or template_promql(query) in refused:
            continue
        assert referenced_metrics(query) == {wanted[to]}, query
    migrated = [q for q in result.queries if q.status is Status.MIGRATED]
    assert migrated
    if result.format is FileFormat.GRAFANA:
        assert _shape(json.loads(result.text)) == _shape(json.loads(text))
    elif result.format is FileFormat.RULES:
        assert _shape(list(yaml.safe_load_all(result.text))) == _shape(
            list(yaml.safe_load_all(text))
        )


def _shape(value: object) -> object:
    """The structure with every string blanked: keys, order, numbers and nesting only."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return "" if isinstance(value, str) else value


def test_a_migrated_dashboard_migrates_back_to_legacy_queries(tmp_path: Path) -> None:
    text = (FIXTURES / "flux-cluster-stats.json").read_text()
    there = migrate_text(text, real(Shape.RESOURCE_INFO), name="d.json")
    back = migrate_text(there.text, real(Shape.LEGACY), name="d.json")
    for q in back.queries:
        if q.status is Status.MIGRATED:
            inner = template_promql(q.migrated) if q.query.template else q.migrated
            assert inner is not None
            assert referenced_metrics(inner) <= {"gotk_reconcile_condition", "gotk_suspend_status"}


def test_several_files_need_output_or_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(FIXTURES / n) for n in FILES]
    code, out, err = run(capsys, "--to", "resource_info", *files)
    assert (code, out) == (2, "")
    assert "--output DIR or --in-place" in err


def test_output_dir_gets_every_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outdir = tmp_path / "out" / "nested"
    code, out, err = run(
        capsys,
        "--to",
        "resource_info",
        "--output",
        str(outdir),
        *[str(FIXTURES / n) for n in FILES],
    )
    assert code == 3  # the panel counting deleted objects has no counterpart
    assert out == ""
    for name in FILES:
        text = (FIXTURES / name).read_text()
        expected = migrate_text(text, real(Shape.RESOURCE_INFO), name=name).text
        assert (outdir / name).read_text() == expected
        assert f"{FIXTURES / name} (" in err


def test_in_place_rewrites_changed_files_and_keeps_their_mode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    names = ["flux-prometheusrule.yaml", "flux-queries.promql"]
    for name in names:
        shutil.copy(FIXTURES / name, tmp_path / name)
    os.chmod(tmp_path / names[0], 0o640)
    untouched = tmp_path / "other.promql"
    untouched.write_text("rate(http_requests_total[5m])\n")
    code, out, _ = run(
        capsys,
        "--to",
        "flux_resource_info",
        "--in-place",
        *[str(tmp_path / n) for n in names],
        str(untouched),
    )
    assert (code, out) == (0, "")
    for name in names:
        expected = migrate_text(
            (FIXTURES / name).read_text(), real(Shape.FLUX_RESOURCE_INFO), name=name
        )
        assert (tmp_path / name).read_text() == expected.text != (FIXTURES / name).read_text()
    assert stat.S_IMODE(os.stat(tmp_path / names[0]).st_mode) == 0o640
    assert untouched.read_text() == "rate(http_requests_total[5m])\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "other.promql"])


def test_crlf_files_keep_their_line_endings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "r.yaml"
    text = (FIXTURES / "flux-prometheusrule.yaml").read_text().replace("\n", "\r\n")
    path.write_bytes(text.encode())
    code, _, _ = run(capsys, "--to", "resource_info", "--in-place", str(path))
    data = path.read_bytes()
    assert code == 0 and data != text.encode()
    assert data.count(b"\n") == data.count(b"\r\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"panels": [', "invalid JSON"),
        ("[]", "not a Grafana dashboard"),
    ],
    ids=["bad-json", "not-a-dashboard"],
)
def test_a_bad_file_is_an_error_and_the_others_still_go(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = tmp_path / "good.promql"
    good.write_text("sum(gotk_suspend_status)\n")
    code, _, err = run(capsys, "--to", "resource_info", "--in-place", str(bad), str(good))
    assert code == 1
    assert f"error: {bad}: {message}" in err
    assert bad.read_text() == content
    assert good.read_text() != "sum(gotk_suspend_status)\n"


def test_a_query_that_does_not_parse_stops_its_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "q.promql"
    text = "sum(gotk_suspend_status\n\nsum(gotk_suspend_status)\n"
    path.write_text(text)
    code, _, err = run(capsys, "--to", "resource_info", "--in-place", str(path))
    assert code == 1
    assert f"{path}:1: expression #1: invalid" in err
    assert path.read_text() == text  # not half-migrated


def test_a_missing_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "--to", "legacy", str(tmp_path / "nope.json"))
    assert (code, out) == (1, "")
    assert f"error: {tmp_path / 'nope.json'}: No such file or directory" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--expr", "up"],
        ["--to", "legacy"],
        ["--to", "legacy", "--expr", "up", "x.json"],
        ["--to", "legacy", "--output", "d", "--in-place", "x.json"],
        ["--to", "legacy", "--in-place", "-"],
        ["--to", "legacy", "-", "x.json"],
        ["--to", "legacy", "--check", "http://127.0.0.1:1", "x.json"],
        ["--check", "http://127.0.0.1:1"],
        ["--to", "nonsense", "--expr", "up"],
        ["--to", "legacy", "--label-shape", "other", "--expr", "up"],
    ],
    ids=[
        "no-to",
        "nothing-to-do",
        "expr-and-file",
        "output-and-in-place",
        "stdin-in-place",
        "stdin-and-file",
        "check-and-to",
        "check-without-files",
        "bad-shape",
        "bad-label-shape",
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert "usage: gotk-relay migrate" in err


def test_format_flag_overrides_detection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "rules.txt"
    path.write_text(
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: gotk_suspend_status == 1\n"
    )
    assert detect_format(path.name, path.read_text()) is FileFormat.RULES
    code, out, _ = run(capsys, "--to", "resource_info", "--format", "promql", str(path))
    assert code == 1  # as PromQL, "groups: ..." does not parse
    code, out, _ = run(capsys, "--to", "resource_info", "--format", "rules", str(path))
    assert code == 0 and "gotk_resource_info" in out


@pytest.mark.slow
def test_stdin_is_read_and_its_format_detected() -> None:
    text = (FIXTURES / "flux-prometheusrule.yaml").read_text().replace("\n", "\r\n")
    done = subprocess.run(
        [sys.executable, "-m", "gotk_relay", "migrate", "--to", "resource_info", "-"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = migrate_text(text, real(Shape.RESOURCE_INFO), name="-")
    assert expected.format is FileFormat.RULES and expected.changed
    assert done.stdout == expected.text.encode()
    assert b"- (rules): 2 migrated" in done.stderr


@pytest.mark.slow
def test_the_command_as_an_operator_types_it() -> None:
    expr = 'sum(gotk_reconcile_condition{type="Ready",status="False"})'
    done = subprocess.run(
        [sys.executable, "-m", "gotk_relay", "migrate", "--to", "resource_info", "--expr", expr],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (
        0,
        migrate_expr(expr, Shape.RESOURCE_INFO).text + "\n",
    )
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "gotk_relay",
            "migrate",
            "--to",
            "resource_info",
            "--expr",
            'gotk_reconcile_condition{status="Deleted"} == 1',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 3
    assert refused.stdout == 'gotk_reconcile_condition{status="Deleted"} == 1\n'
    assert "Deleted" in refused.stderr


@pytest.mark.parametrize("to", ["resource_info", "flux_resource_info"])
def test_migrated_rules_pass_promtool(tmp_path: Path, to: str) -> None:
    """Prometheus' own checker accepts the migrated rule file and the manifest's groups."""
    from tests.support.rig import require_binary

    promtool = require_binary("promtool")
    rules = migrate_text(
        (FIXTURES / "flux-alerts.rules.yaml").read_text(), real(Shape(to)), name="r.yaml"
    ).text
    manifest = migrate_text(
        (FIXTURES / "flux-prometheusrule.yaml").read_text(), real(Shape(to)), name="m.yaml"
    ).text
    (tmp_path / "rules.yaml").write_text(rules)
    spec = next(yaml.safe_load_all(manifest))["spec"]
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yaml"), str(tmp_path / "manifest.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout and "SUCCESS: 2 rules found" in done.stdout
