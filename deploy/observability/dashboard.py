"""Builds the relay's Grafana dashboard (gotk-relay-dashboard.json) with grafana-foundation-sdk.

    .venv/bin/python deploy/observability/dashboard.py          # write the JSON beside this file
    .venv/bin/python deploy/observability/dashboard.py --check  # exit 1 if the JSON is stale

Every query reads only metrics the relay's /metrics serves (README, "Operations");
tests/integration/test_observability.py parses each one and compares its metric names with a
running relay's /metrics. `$job`, `$instance` and `$destination` pick relays and destinations;
`$datasource` picks the Prometheus.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, prometheus, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent / "gotk-relay-dashboard.json"
UID = "gotk-relay"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query's selector: the relays picked, and the destinations picked where it has one.
RELAY = 'job=~"$job", instance=~"$instance"'
DEST = RELAY + ', destination=~"$destination"'
RATE = "[$__rate_interval]"


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref)
        .range()
        .datasource(DATASOURCE)
    )


def panel(
    title: str,
    description: str,
    unit: str,
    *queries: tuple[str, str],
    width: int = 8,
    min_zero: bool = True,
) -> timeseries.Panel:
    """A time series panel; ``queries`` are (expression, legend) pairs."""
    built = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
        )
    )
    if min_zero:
        built = built.min(0)
    for index, (expr, legend) in enumerate(queries):
        built = built.with_target(query(expr, legend, chr(ord("A") + index)))
    return built


def variable(name: str, label: str, expr: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .query(expr)
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def ingest(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Ingest"))
        .with_panel(
            panel(
                "Points received /s",
                "Samples, histograms and exemplars accepted from senders, by protocol.",
                "cps",
                (
                    "sum by (kind, protobuf_message) "
                    f"(rate(gotk_relay_received_total{{{RELAY}}}{RATE}))",
                    "{{kind}} {{protobuf_message}}",
                ),
            )
        )
        .with_panel(
            panel(
                "HTTP requests /s",
                "Requests answered, by handler and status code.",
                "reqps",
                (
                    "sum by (handler, code) "
                    f"(rate(gotk_relay_http_requests_total{{{RELAY}}}{RATE}))",
                    "{{handler}} {{code}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Refused write requests /s",
                "Write requests refused, by reason: the 4xx reasons are dropped by the sender, "
                "the 503 ones (too_many_requests, queue_full, shutting_down, spool_error) "
                "retried. README, Operations, lists each reason's status.",
                "reqps",
                (
                    f"sum by (reason) (rate(gotk_relay_rejected_requests_total{{{RELAY}}}{RATE}))",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Request latency",
                "Time to answer an HTTP request (for writes: receive, decode, rewrite, enqueue).",
                "s",
                (
                    "histogram_quantile(0.99, sum by (handler, le) "
                    f"(rate(gotk_relay_http_request_duration_seconds_bucket{{{RELAY}}}{RATE})))",
                    "p99 {{handler}}",
                ),
                (
                    "histogram_quantile(0.5, sum by (handler, le) "
                    f"(rate(gotk_relay_http_request_duration_seconds_bucket{{{RELAY}}}{RATE})))",
                    "p50 {{handler}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Client connections",
                "Open connections against the limit (receiver.max_connections or the fd "
                "limit), and those the relay closed to bound them, by reason.",
                "short",
                (f"sum by (instance) (gotk_relay_connections{{{RELAY}}})", "open {{instance}}"),
                (
                    f"sum by (instance) (gotk_relay_connections_limit{{{RELAY}}})",
                    "limit {{instance}}",
                ),
                (
                    "sum by (reason) (increase("
                    f"gotk_relay_connections_closed_total{{{RELAY}}}{RATE}))",
                    "closed: {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Request scanning",
                "Remote-write 1.0 requests admitted on the fast path by scanner (c: compiled, "
                "python: no compiled scanner installed), and series forwarded sorted.",
                "cps",
                (
                    f"sum by (scanner) (rate(gotk_relay_scanned_requests_total{{{RELAY}}}{RATE}))",
                    "requests: {{scanner}}",
                ),
                (
                    f"sum(rate(gotk_relay_sorted_series_total{{{RELAY}}}{RATE}))",
                    "series sorted",
                ),
            )
        )
        .with_panel(
            panel(
                "Own scrapes (scrape_configs)",
                "Targets the relay scrapes itself: up, failed scrapes and dropped samples by "
                "reason. The relay's job label shows as exported_job when Prometheus scrapes it "
                "without honor_labels.",
                "short",
                (
                    f"sum(gotk_relay_scrape_target_up{{{RELAY}}}) by (instance)",
                    "targets up {{instance}}",
                ),
                (
                    "sum by (reason) "
                    f"(increase(gotk_relay_scrape_failures_total{{{RELAY}}}{RATE}))",
                    "failed: {{reason}}",
                ),
                (
                    "sum by (reason) (increase("
                    f"gotk_relay_scrape_samples_dropped_total{{{RELAY}}}{RATE}))",
                    "samples dropped: {{reason}}",
                ),
                (
                    f"sum(increase(gotk_relay_scrape_task_failures_total{{{RELAY}}}{RATE}))",
                    "loop errors",
                ),
                width=16,
            )
        )
    )


def destinations(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Destinations"))
        .with_panel(
            panel(
                "Samples sent /s",
                "Samples and histograms each destination accepted.",
                "cps",
                (
                    "sum by (destination) "
                    f"(rate(gotk_relay_samples_forwarded_total{{{DEST}}}{RATE}))",
                    "{{destination}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Requests to destinations /s",
                "Requests sent, by outcome (ok, http_<status>, or the network error).",
                "reqps",
                (
                    "sum by (destination, reason) (rate("
                    f"gotk_relay_destination_request_duration_seconds_count{{{DEST}}}{RATE}))",
                    "{{destination}} {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Destination latency p99",
                "Duration of requests to each destination, by outcome.",
                "s",
                (
                    "histogram_quantile(0.99, sum by (destination, reason, le) (rate("
                    f"gotk_relay_destination_request_duration_seconds_bucket{{{DEST}}}{RATE})))",
                    "{{destination}} {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Retries /s",
                "Requests that will be retried, by reason. A destination failing for long "
                "stops progress: see the oldest unsent sample.",
                "reqps",
                (
                    "sum by (destination, reason) "
                    f"(rate(gotk_relay_retries_total{{{DEST}}}{RATE}))",
                    "{{destination}} {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Samples dropped and skipped",
                "Dropped: given up (a 4xx, poison, sample_age_limit, spool_full, no_tenant, "
                "shutdown), or dropped_series: what the destination's write_relabel_configs "
                "drop, by design; relabel_configs: what the global rules drop, for every "
                "destination. Skipped: what the destination's protocol cannot carry (counted "
                "as sent too).",
                "short",
                (
                    "sum by (destination, reason) "
                    f"(increase(gotk_relay_samples_dropped_total{{{DEST}}}{RATE}))",
                    "dropped {{destination}} {{reason}}",
                ),
                (
                    f"sum(increase(gotk_relay_relabel_dropped_samples_total{{{RELAY}}}{RATE}))",
                    "dropped by relabel_configs",
                ),
                (
                    "sum by (destination, reason) "
                    f"(increase(gotk_relay_samples_skipped_total{{{DEST}}}{RATE}))",
                    "skipped {{destination}} {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Failing",
                "destination_failing: 1 while its answers are retried. sender_up: 0 while "
                "its sender loop fails on an error (/-/ready is 503). Supervised task errors "
                "(flux-clock: the Flux rules' clock).",
                "short",
                (
                    f"max by (destination) (gotk_relay_destination_failing{{{DEST}}})",
                    "failing {{destination}}",
                ),
                (
                    f"min by (destination) (gotk_relay_sender_up{{{DEST}}})",
                    "sender up {{destination}}",
                ),
                (
                    "sum by (destination) "
                    f"(increase(gotk_relay_task_failures_total{{{RELAY}}}{RATE}))",
                    "task errors {{destination}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Queue fill",
                "Points queued or in flight over queue capacity (capacity × shards). With a "
                "spool, points past the capacity wait on disk, so it can pass 100%.",
                "percentunit",
                (
                    f"max by (destination) (gotk_relay_queue_samples{{{DEST}}} "
                    f"/ gotk_relay_queue_capacity_samples{{{DEST}}})",
                    "{{destination}}",
                ),
                (
                    f"max(gotk_relay_memory_queued_bytes{{{RELAY}}} "
                    f"/ gotk_relay_memory_budget_bytes{{{RELAY}}})",
                    "queues.memory_budget_bytes",
                ),
            )
        )
        .with_panel(
            panel(
                "Spool",
                "Bytes each destination holds in the spool (the relay does not export "
                "spool.max_bytes), and whether the spool cannot be written.",
                "bytes",
                (
                    f"sum by (destination) (gotk_relay_spool_bytes{{{DEST}}})",
                    "{{destination}}",
                ),
                (
                    f"max(gotk_relay_spool_write_failing{{{RELAY}}})",
                    "write failing",
                ),
            )
        )
        .with_panel(
            panel(
                "Oldest unsent sample",
                "Age of the newest sample of the oldest entry not yet delivered (0 when "
                "empty), and of the oldest spooled one: grows while a destination makes no "
                "progress.",
                "s",
                (
                    f"max by (destination) (gotk_relay_oldest_unsent_seconds{{{DEST}}})",
                    "{{destination}}",
                ),
                (
                    f"max by (destination) (gotk_relay_spool_oldest_sample_age_seconds{{{DEST}}})",
                    "spool {{destination}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Shards and protocol",
                "Ordered sender streams per destination, and the remote-write message each "
                "remote_write destination is sent.",
                "short",
                (f"max by (destination) (gotk_relay_shards{{{DEST}}})", "shards {{destination}}"),
                (
                    "max by (destination, protobuf_message) "
                    f"(gotk_relay_destination_protocol{{{DEST}}})",
                    "{{destination}} {{protobuf_message}}",
                ),
                width=16,
            )
        )
    )


def flux(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Flux rules"))
        .with_panel(
            panel(
                "Flux objects tracked",
                "Flux objects whose state the rules track (they restart when a reload "
                "replaces the rules).",
                "short",
                (f"sum by (instance) (gotk_relay_flux_objects{{{RELAY}}})", "{{instance}}"),
            )
        )
        .with_panel(
            panel(
                "Synthesized samples /s",
                "Samples the Flux rules wrote (stale markers included), and stale markers "
                "for ended objects.",
                "cps",
                (
                    f"sum(rate(gotk_relay_flux_samples_synthesized_total{{{RELAY}}}{RATE}))",
                    "synthesized",
                ),
                (
                    f"sum(rate(gotk_relay_flux_stale_markers_total{{{RELAY}}}{RATE}))",
                    "stale markers",
                ),
            )
        )
        .with_panel(
            panel(
                "Flux objects lost",
                "Out of order: synthesized samples not written. Rejected: new objects not "
                "tracked at flux.max_objects. Expired: forgotten after flux.idle_expiry.",
                "short",
                (
                    f"sum(increase(gotk_relay_flux_out_of_order_dropped_total{{{RELAY}}}{RATE}))",
                    "out of order",
                ),
                (
                    f"sum(increase(gotk_relay_flux_objects_rejected_total{{{RELAY}}}{RATE}))",
                    "rejected",
                ),
                (
                    f"sum(increase(gotk_relay_flux_objects_expired_total{{{RELAY}}}{RATE}))",
                    "expired",
                ),
            )
        )
    )


def resources(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Resources and configuration"))
        .with_panel(
            panel(
                "Resident memory",
                "The relay process's RSS (process_resident_memory_bytes). Sizing: about 62 MiB "
                "idle plus ~3.5 KiB per tracked Flux object (docs/performance.md).",
                "bytes",
                (
                    f"max by (instance) (process_resident_memory_bytes{{{RELAY}}})",
                    "{{instance}}",
                ),
            )
        )
        .with_panel(
            panel(
                "CPU",
                "CPU seconds per second of the relay process (one process uses at most one "
                "core; receiver.workers adds processes not counted here).",
                "percentunit",
                (
                    f"sum by (instance) (rate(process_cpu_seconds_total{{{RELAY}}}{RATE}))",
                    "{{instance}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Open file descriptors",
                "Open fds against the process limit (connections, the spool, sockets to "
                "destinations).",
                "short",
                (f"max by (instance) (process_open_fds{{{RELAY}}})", "open {{instance}}"),
                (f"max by (instance) (process_max_fds{{{RELAY}}})", "limit {{instance}}"),
            )
        )
        .with_panel(
            panel(
                "Memory queues",
                "Bytes held by in-memory queues against queues.memory_budget_bytes (relays "
                "without a spool).",
                "bytes",
                (
                    f"sum by (instance) (gotk_relay_memory_queued_bytes{{{RELAY}}})",
                    "queued {{instance}}",
                ),
                (
                    f"sum by (instance) (gotk_relay_memory_budget_bytes{{{RELAY}}})",
                    "budget {{instance}}",
                ),
            )
        )
        .with_panel(
            panel(
                "Federate store",
                "Series the federate store holds (latest sample of each, for /federate and "
                "the Flux pages).",
                "short",
                (f"sum by (instance) (gotk_relay_federate_series{{{RELAY}}})", "{{instance}}"),
            )
        )
        .with_panel(
            panel(
                "Configuration",
                "Whether the last reload succeeded (0: the relay runs the configuration "
                "before it), and the time since the last successful one.",
                "short",
                (
                    f"min by (instance) (gotk_relay_config_last_reload_successful{{{RELAY}}})",
                    "reload ok {{instance}}",
                ),
                (
                    "time() - max by (instance) "
                    f"(gotk_relay_config_last_reload_success_timestamp_seconds{{{RELAY}}})",
                    "seconds since reload {{instance}}",
                ),
            )
        )
    )


def caches(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Caches"))
        .with_panel(
            panel(
                "Cache fill",
                "Entries over limit of each kind of bounded cache; a cache is emptied when "
                "full, so a fill that keeps climbing to 100% means its keys churn.",
                "percentunit",
                (
                    f"sum by (cache) (gotk_relay_cache_entries{{{RELAY}}}) "
                    f"/ sum by (cache) (gotk_relay_cache_limit{{{RELAY}}})",
                    "{{cache}}",
                ),
                width=12,
            )
        )
        .with_panel(
            panel(
                "Cache entries",
                "Entries held by each kind of bounded cache, over its instances.",
                "short",
                (f"sum by (cache) (gotk_relay_cache_entries{{{RELAY}}})", "{{cache}}"),
                width=12,
            )
        )
    )


def build() -> dash.Dashboard:
    board = (
        dash.Dashboard("gotk-relay")
        .uid(UID)
        .description(
            "gotk-relay's own metrics: ingest, destinations, the Flux rules, resources and "
            "caches (deploy/observability/dashboard.py builds it)."
        )
        .tags(["gotk-relay", "prometheus", "flux"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            variable("job", "Job", "label_values(gotk_relay_config_last_reload_successful, job)")
        )
        .with_variable(
            variable(
                "instance",
                "Instance",
                'label_values(gotk_relay_config_last_reload_successful{job=~"$job"}, instance)',
            )
        )
        .with_variable(
            variable(
                "destination",
                "Destination",
                "label_values(gotk_relay_queue_capacity_samples"
                '{job=~"$job", instance=~"$instance"}, destination)',
            )
        )
    )
    for row in (ingest, destinations, flux, resources, caches):
        board = row(board)
    return board


def render() -> str:
    model = build().build()
    # Stable, unique panel ids (the builder leaves rows at 0 and panels unset).
    for number, item in enumerate(model.panels or [], start=1):
        item.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        OUTPUT.write_text(text)
        return 0
    if not OUTPUT.exists() or OUTPUT.read_text() != text:
        print(f"stale, run deploy/observability/dashboard.py: {OUTPUT}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
