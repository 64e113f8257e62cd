"""The benchmark still runs end to end: ``bench/run.py --smoke`` as a user would run it.

Correctness only, never speed: the machine is shared and a smoke run lasts a fraction of a
second per phase, so no number it prints is asserted except the ones that must be exact — every
sample the loader had acked reached the sink, with the right labels and values (the smoke run
verifies each sample, see ``bench/sink.py``). vmagent must be installed (``bench/run.py``
installs it when run as root): like the e2e suite, this test fails rather than skips without it,
since a skip would hide that the comparison never ran.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The smoke run drives load with the system and the loader pinned to a core each.
pytestmark = pytest.mark.alone

REPO = Path(__file__).resolve().parents[2]
SYSTEMS = ("gotk-relay", "vmagent", "vmagent-relabel")
WORKLOADS = ("cluster", "flux-heavy")
# Issue 17's configurations; vmagent runs the ones it has the same feature for.
VARIANTS = (
    "plain",
    "write-relabel-drop",
    "global-relabel-rewrite",
    "shards-4",
    "tenants",
    "rw2",
    "fanout-datadog",
    "datadog-all",
    "otlp-all",
)
VMAGENT_VARIANTS = ("write-relabel-drop", "global-relabel-rewrite", "shards-4")
RESULT_KEYS = {
    "system",
    "variant",
    "workload",
    "accepted_per_s",
    "samples_per_cpu_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_steal_ms",
    "latency_floor",
    "peak_rss_bytes",
    "latency_peak_rss_bytes",
    "delivered_samples",
    "expected_samples",
    "accepted_samples",
    "delivered_ok",
    "throughput",
    "latency",
    "verification",
}


def run_smoke(out: Path, *argv: str) -> tuple[str, dict[str, Any]]:
    """``bench/run.py --smoke`` with ``argv``, as a user runs it: (stdout, the JSON report)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", *argv, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One smoke run for all the tests here: (stdout, the JSON report)."""
    return run_smoke(tmp_path_factory.mktemp("bench") / "smoke.json")


def test_prints_the_table_with_every_system_and_workload(
    smoke: tuple[str, dict[str, Any]],
) -> None:
    stdout, _ = smoke
    header = next((line for line in stdout.splitlines() if line.startswith("system ")), "")
    columns = ("workload", "accepted/s", "samples/CPU-s", "p50 ms", "p99 ms", "peak RSS", "@50%")
    for column in columns:
        assert column in header, f"{column!r} missing from the table header {header!r}"
    for system in SYSTEMS:
        for workload in WORKLOADS:
            row = re.compile(rf"^{re.escape(system)}\s+{workload}\s", re.MULTILINE)
            assert row.search(stdout), f"no row for {system} on {workload}:\n{stdout}"
    assert re.search(r"^relay/vmagent\s+cluster\s", stdout, re.MULTILINE), "no ratio row"
    assert "gotk-relay memory vs distinct pass-through series" in stdout


def test_writes_json_with_the_expected_keys(smoke: tuple[str, dict[str, Any]]) -> None:
    _, report = smoke
    for key in ("date", "machine", "versions", "settings", "results", "ratios", "ok"):
        assert key in report
    assert report["machine"]["cores"] >= 1
    assert "cpu_model" in report["machine"]
    assert report["settings"]["smoke"] is True
    plain = {(r["system"], r["workload"]) for r in report["results"] if r["variant"] == "plain"}
    assert plain == {(s, w) for s in SYSTEMS for w in WORKLOADS}
    others = {(r["variant"], r["system"]) for r in report["results"] if r["variant"] != "plain"}
    assert others == {(v, "gotk-relay") for v in VARIANTS[1:]} | {
        (v, "vmagent") for v in VMAGENT_VARIANTS
    }
    for result in report["results"]:
        assert result.keys() >= RESULT_KEYS, RESULT_KEYS - result.keys()
    assert len(report["memory_scaling"]) == 2


def test_peak_rss_of_the_latency_phase_is_its_own(smoke: tuple[str, dict[str, Any]]) -> None:
    """The high-water mark is reset before the 50% phase: its peak is measured, not the run's,
    and the run's peak stays the larger of the two."""
    _, report = smoke
    for result in report["results"]:
        where = f"{result['system']} ({result['variant']}) on {result['workload']}"
        if result["variant"] != "plain":  # the throughput phase only
            assert result["latency_peak_rss_bytes"] is None, where
            assert result["peak_rss_bytes"] > 0, where
            continue
        assert 0 < result["latency_peak_rss_bytes"] <= result["peak_rss_bytes"], where


def test_latency_floor_is_measured_at_the_same_rate(smoke: tuple[str, dict[str, Any]]) -> None:
    """The latency phase alternates, slice by slice, between the system and a bare receiver
    pushed at the same rate, so a p99 comes with the machine's own floor of the same seconds;
    the table prints both and what the system adds."""
    stdout, report = smoke
    assert "a bare receiver on its core at the same rate in alternate slices" in stdout
    assert "added p99" in stdout
    for result in report["results"]:
        if result["variant"] != "plain":  # the latency phase is the plain rows' alone
            assert result["latency_floor"] is None and result["latency"] is None
            continue
        floor = result["latency_floor"]
        where = f"{result['system']} on {result['workload']}"
        assert floor["slices"] >= 2, where
        assert floor["target_rate_per_s"] == result["latency"]["target_rate_per_s"], where
        assert floor["accepted_requests"] == floor["requests"] > 0, where
        assert 0 < floor["p50_ms"] <= floor["p99_ms"] <= floor["max_ms"], where
        added = result["latency_p99_ms"] - floor["p99_ms"]
        assert abs(result["latency_added_p99_ms"] - added) < 0.002, where


def test_goals_are_judged_from_the_figures(smoke: tuple[str, dict[str, Any]]) -> None:
    """The run states each of the goals (issues 16, 6 and 17) with its figure and verdict; a
    verdict follows from its figure (the smoke run's figures themselves mean nothing)."""
    stdout, report = smoke
    goals = {row["goal"]: row for row in report["goals"]}
    expected = {
        "cluster: samples/CPU-s vs vmagent (x)",
        "flux-heavy: samples/CPU-s vs vmagent (x)",
        "cluster: added p99 at 50% (ms)",
        "flux-heavy: added p99 at 50% (ms)",
        "cluster: peak RSS at 50% vs vmagent (x)",
        "flux-heavy: peak RSS at 50% vs vmagent (x)",
    }
    for workload in WORKLOADS:
        expected |= {f"{workload}: {v} vs vmagent, same feature (x)" for v in VMAGENT_VARIANTS}
        expected |= {
            f"{workload}: {v} vs the relay's plain (x)"
            for v in ("tenants", "rw2", "fanout-datadog")
        }
        expected |= {f"{workload}: {v}: samples/CPU-s" for v in ("datadog-all", "otlp-all")}
    assert expected <= goals.keys(), expected - goals.keys()
    by = {(r["system"], r["workload"]): r for r in report["results"] if r["variant"] == "plain"}
    relay, peer = by[("gotk-relay", "cluster")], by[("vmagent", "cluster")]
    ratio = goals["cluster: samples/CPU-s vs vmagent (x)"]["figure"]
    # A smoke phase pushes three rounds: on a fast machine a system can spend less than one
    # clock tick of CPU on them, and then there is no figure and no verdict to draw from it.
    if relay["samples_per_cpu_s"] and peer["samples_per_cpu_s"]:
        assert ratio == pytest.approx(relay["samples_per_cpu_s"] / peer["samples_per_cpu_s"])
    else:
        assert ratio is None
    added = goals["flux-heavy: added p99 at 50% (ms)"]["figure"]
    assert added == by[("gotk-relay", "flux-heavy")]["latency_added_p99_ms"]
    for row in report["goals"]:
        if row["figure"] is None:
            assert row["met"] is False, row
            continue
        beyond = (
            row["figure"] >= row["target"] if row["at_least"] else row["figure"] <= row["target"]
        )
        assert row["met"] == beyond, row
    shards = goals["cluster: shards-4 vs vmagent, same feature (x)"]
    configs = {(c["variant"], c["workload"]): c for c in report["configurations"]}
    assert shards["figure"] == configs[("shards-4", "cluster")]["ratio"]
    datadog = goals["flux-heavy: datadog-all: samples/CPU-s"]
    assert datadog["target"] == 300_000
    assert datadog["figure"] == configs[("datadog-all", "flux-heavy")]["relay_samples_per_cpu_s"]
    heading = (
        "the goals in this run (issue 16: strict by default; issue 6; issue 17: configurations)"
    )
    assert heading in stdout
    assert ("all at once: yes" in stdout) == all(row["met"] for row in report["goals"])


@pytest.mark.parametrize("system", SYSTEMS)
def test_delivered_equals_accepted(smoke: tuple[str, dict[str, Any]], system: str) -> None:
    """Every acked sample arrived once, plus exactly what the system synthesizes."""
    _, report = smoke
    rows = ("plain", "shards-4", "rw2")  # the configurations that deliver every sample as is
    for result in (r for r in report["results"] if r["system"] == system):
        if result["variant"] not in rows:
            continue
        where = f"{system} on {result['workload']}"
        assert result["accepted_samples"] > 0, where
        assert result["delivered_samples"] == result["expected_samples"], where
        verification = result["verification"]
        assert verification["ok"], f"{where}: {verification}"
        assert verification["missing"] == verification["unexpected"] == 0, where
        if system == "gotk-relay" and result["accepted_flux_samples"]:
            # Four legacy series per gotk_resource_info sample came on top.
            assert result["expected_samples"] == (
                result["accepted_samples"] + 4 * result["accepted_flux_samples"]
            )
        else:
            assert result["expected_samples"] == result["accepted_samples"], where


def test_memory_scaling_delivered_everything(smoke: tuple[str, dict[str, Any]]) -> None:
    _, report = smoke
    for row in report["memory_scaling"]:
        assert row["delivered_ok"], row
        assert row["samples_pushed"] > 0
    assert report["ok"] is True


def test_the_in_process_benchmark_runs_the_write_path() -> None:
    """``bench/inprocess.py`` replays the benchmark's requests through the write path; every
    request must be admitted and every Flux object of the workload tracked and federated."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--rounds", "1", "--repeats", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    timing, counts = done.stdout.strip().splitlines()
    assert re.fullmatch(r"flux-heavy: [\d.]+ ms CPU per 2000-sample request .*", timing)
    found = re.fullmatch(r"flux objects (\d+) of (\d+), federate series (\d+)", counts)
    assert found is not None, counts
    objects, expected, federated = map(int, found.groups())
    assert objects == expected == 2500
    # Each object: its gotk_resource_info, three gotk_reconcile_condition, a gotk_suspend_status.
    assert federated == 5 * objects


def test_the_in_process_benchmark_reports_memory_per_flux_object() -> None:
    """``--memory`` is the sizing figure the docs quote: the state held for the workload's 2500
    Flux objects, and its share per object."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--memory", "--rounds", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(
        r"flux-heavy: the relay's state holds ([\d.]+) MiB after 2 rounds of 25 requests; "
        r"(\d+) Flux objects, ([\d.]+) KiB per Flux object",
        done.stdout.strip(),
    )
    assert found is not None, done.stdout
    held, objects, per_object = float(found[1]), int(found[2]), float(found[3])
    assert objects == 2500
    assert per_object > 0
    assert abs(held * 1024 / objects - per_object) < 0.01


def test_a_partial_run_does_not_claim_every_goal(tmp_path: Path) -> None:
    """A run of some systems, workloads or configurations judges the goals it measured and
    never says that every goal held at once, since the others were not measured."""
    argv = ("--systems", "gotk-relay", "--workloads", "cluster", "--skip-memory")
    stdout, report = run_smoke(tmp_path / "partial.json", *argv, "--variants", "plain")
    assert [row["goal"] for row in report["goals"]] == ["cluster: added p99 at 50% (ms)"]
    assert {r["variant"] for r in report["results"]} == {"plain"}
    assert "all at once: not judged (this run measured 1 of 23 goals)" in stdout
    assert "all at once: yes" not in stdout


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_every_configuration_is_verified_sample_by_sample(
    smoke: tuple[str, dict[str, Any]], variant: str
) -> None:
    """Each configuration's deliveries were checked one by one (remote write: every series,
    timestamp and value per destination; Datadog and OTLP: the points per metric name) against
    what the acked batches must give under its rules, with the strict default on."""
    _, report = smoke
    rows = [r for r in report["results"] if r["variant"] == variant]
    expected_systems = {"gotk-relay", "vmagent"} if variant in VMAGENT_VARIANTS else {"gotk-relay"}
    assert {r["system"] for r in rows} == expected_systems
    assert {r["workload"] for r in rows} == set(WORKLOADS)
    assert report["settings"]["relay_validation"] == ""  # the relay's default: full
    for result in rows:
        where = f"{result['system']} ({variant}) on {result['workload']}"
        verification = result["verification"]
        assert result["accepted_samples"] > 0, where
        assert verification["ok"], f"{where}: {verification}"
        assert result["delivered_by_destination"] == result["expected_by_destination"], where
        assert result["delivered_ok"], where


def _row(report: dict[str, Any], variant: str, workload: str = "flux-heavy") -> dict[str, Any]:
    return next(
        r
        for r in report["results"]
        if (r["variant"], r["system"], r["workload"]) == (variant, "gotk-relay", workload)
    )


def _legacy(result: dict[str, Any]) -> int:
    """What the relay's Flux rules make of a row's accepted samples: four series more per
    gotk_resource_info sample."""
    return int(result["accepted_samples"] + 4 * result["accepted_flux_samples"])


def test_each_configuration_reaches_its_destinations(smoke: tuple[str, dict[str, Any]]) -> None:
    """What each configuration changes shows at the sink: fewer series after a drop, one
    request stream per tenant, remote write 2.0 requests, the Datadog and OTLP intakes."""
    _, report = smoke
    dropped = _row(report, "write-relabel-drop")
    assert 0 < dropped["expected_samples"] < _legacy(dropped)
    rewritten = _row(report, "global-relabel-rewrite")["verification"]
    assert rewritten["received_samples"] == rewritten["expected_samples"] > 0
    tenants = _row(report, "tenants")["delivered_by_destination"]
    assert set(tenants) == {"remote_write@node-exporter", "remote_write@kube-state-metrics"}
    assert _row(report, "rw2")["sink"]["remote_write_requests"].keys() == {"2.0"}
    assert _row(report, "plain")["sink"]["remote_write_requests"].keys() == {"1.0"}
    fanout = _row(report, "fanout-datadog")
    assert fanout["delivered_by_destination"].keys() == {"remote_write", "datadog"}
    assert set(fanout["verification"]["datadog_points"]["names"]) == {
        "gotk_resource_info",
        "gotk_reconcile_condition",
        "gotk_suspend_status",
    }
    datadog = _row(report, "datadog-all")
    assert datadog["delivered_by_destination"].keys() == {"datadog"}
    # A Datadog count's first sample only sets its baseline: fewer points than samples.
    assert 0 < datadog["delivered_samples"] < _legacy(datadog)
    otlp = _row(report, "otlp-all")
    assert otlp["delivered_by_destination"].keys() == {"otlp"}
    assert otlp["delivered_samples"] == _legacy(otlp)


def test_prints_the_configurations_table(smoke: tuple[str, dict[str, Any]]) -> None:
    stdout, report = smoke
    assert "configurations (issue 17)" in stdout
    for variant in VARIANTS:
        for workload in WORKLOADS:
            row = re.compile(rf"^{re.escape(variant)}\s+{workload}\s.*\sok$", re.MULTILINE)
            assert row.search(stdout), f"no verified row for {variant} on {workload}:\n{stdout}"
    configs = {(c["variant"], c["workload"]): c for c in report["configurations"]}
    assert len(configs) == len(VARIANTS) * len(WORKLOADS)
    for (variant, _), row in configs.items():
        has_peer = variant == "plain" or variant in VMAGENT_VARIANTS
        assert (row["vmagent_verified"] is not None) == has_peer, row


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--variants", "plain,shards-9"), "unknown variant(s) ['shards-9']"),
        (("--variants", ","), "unknown variant(s) []"),
        (("--workloads", "cluster,huge"), "unknown workload(s) ['huge']"),
        (("--workloads", ","), "unknown workload(s) []"),
        (("--systems", "prometheus"), "unknown system(s) ['prometheus']"),
        (("--systems", " , "), "unknown system(s) []"),
    ],
    ids=[
        "variants-unknown",
        "variants-empty",
        "workloads-unknown",
        "workloads-empty",
        "systems-unknown",
        "systems-empty",
    ],
)
def test_selection_flags_refuse_what_they_do_not_know(argv: tuple[str, ...], message: str) -> None:
    """A selection naming nothing it knows is refused at once (exit 2, the name in the message),
    rather than a run that measures nothing or fails halfway."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
