"""Remote-write → OTLP mapping: every request is serialized and decoded again with
opentelemetry-proto, so what is asserted is what a receiver would read."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from gotk_relay import __version__
from gotk_relay.destinations.otlp import error_detail, partial_success
from gotk_relay.destinations.otlp_mapping import (
    NO_RECORDED_VALUE,
    SCOPE_NAME,
    Mapped,
    MappingState,
    Temporality,
    otel_unit,
    to_otlp,
)
from gotk_relay.destinations.otlp_mapping.native import MIN_SCALE, _downscale
from gotk_relay.destinations.rows import LOOPS
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    BucketSpan,
    Exemplar,
    FamilyMetadata,
    Histogram,
    Labels,
    Metadata,
    MetricType,
    Sample,
    Series,
)

NS = 1_000_000
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pb.AGGREGATION_TEMPORALITY_DELTA
TARGET = {"job": "api", "instance": "10.0.0.1:8080"}


def labels(name: str, **extra: str) -> Labels:
    return tuple(sorted({"__name__": name, **TARGET, **extra}.items()))


def series(
    name: str, *points: tuple[float, int], meta: Metadata | None = None, **extra: str
) -> Series:
    return Series(labels(name, **extra), tuple(Sample(v, t) for v, t in points), metadata=meta)


def histogram_series(
    name: str,
    ts: int,
    buckets: dict[str, float],
    count: float | None,
    sum_: float | None,
    **extra: str,
) -> list[Series]:
    out = [
        Series(labels(f"{name}_bucket", le=le, **extra), (Sample(v, ts),))
        for le, v in buckets.items()
    ]
    if sum_ is not None:
        out.append(Series(labels(f"{name}_sum", **extra), (Sample(sum_, ts),)))
    if count is not None:
        out.append(Series(labels(f"{name}_count", **extra), (Sample(count, ts),)))
    return out


def decode(mapped: Mapped) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(mapped.request.SerializeToString())
    return request


def metrics(mapped: Mapped) -> dict[str, pb.Metric]:
    out: dict[str, pb.Metric] = {}
    for rm in decode(mapped).resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert metric.name not in out, f"{metric.name} twice"
                out[metric.name] = metric
    return out


def attrs(kvs: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}  # type: ignore[attr-defined]


def run(
    *items: Series,
    state: MappingState | None = None,
    metadata: tuple[FamilyMetadata, ...] = (),
    temporality: Temporality = "cumulative",
    resource_labels: tuple[str, ...] = ("job", "instance"),
    commit: bool = True,
) -> Mapped:
    state = state if state is not None else MappingState()
    mapped = to_otlp(
        Batch(tuple(items), metadata),
        state,
        temporality=temporality,
        resource_labels=resource_labels,
    )
    if commit:
        state.commit(mapped.updates)
    return mapped


# -- types --------------------------------------------------------------------------------------

TYPE_CASES = [
    # (id, series, family metadata, expected data field, is_monotonic)
    ("untyped-name-is-gauge", series("up", (1, 1000)), (), "gauge", None),
    ("_total-is-counter", series("http_requests_total", (7, 1000)), (), "sum", True),
    (
        "v1-gauge-metadata-beats-suffix",
        series("queue_total", (7, 1000)),
        (FamilyMetadata("queue_total", MetricType.GAUGE),),
        "gauge",
        None,
    ),
    (
        "v1-counter-metadata-without-suffix",
        series("requests", (7, 1000)),
        (FamilyMetadata("requests", MetricType.COUNTER),),
        "sum",
        True,
    ),
    (
        "openmetrics-family-of-_total",
        series("jobs_total", (7, 1000)),
        (FamilyMetadata("jobs", MetricType.COUNTER),),
        "sum",
        True,
    ),
    (
        "v2-series-metadata",
        series("requests", (7, 1000), meta=Metadata(MetricType.COUNTER)),
        (),
        "sum",
        True,
    ),
    (
        "v2-unknown-falls-back-to-name",
        series("errors_total", (7, 1000), meta=Metadata(MetricType.UNKNOWN)),
        (),
        "sum",
        True,
    ),
    (
        "info-is-non-monotonic-sum",
        series("build_info", (1, 1000), version="1.2"),
        (FamilyMetadata("build", MetricType.INFO),),
        "sum",
        False,
    ),
    (
        "stateset-is-non-monotonic-sum",
        series("feature", (1, 1000), feature="a"),
        (FamilyMetadata("feature", MetricType.STATESET),),
        "sum",
        False,
    ),
    (
        "unknown-metadata-is-gauge",
        series("temperature", (21.5, 1000)),
        (FamilyMetadata("temperature", MetricType.UNKNOWN),),
        "gauge",
        None,
    ),
    (
        # The compatibility spec: an unknown-typed family is a Gauge, whatever its name.
        "unknown-family-metadata-wins-over-the-name",
        series("errors_total", (7, 1000)),
        (FamilyMetadata("errors_total", MetricType.UNKNOWN, "Errors seen."),),
        "gauge",
        None,
    ),
]


@pytest.mark.parametrize(
    ("one", "metadata", "field", "monotonic"),
    [case[1:] for case in TYPE_CASES],
    ids=[case[0] for case in TYPE_CASES],
)
def test_metric_type_from_metadata_or_name(
    one: Series, metadata: tuple[FamilyMetadata, ...], field: str, monotonic: bool | None
) -> None:
    mapped = run(one, metadata=metadata)
    metric = metrics(mapped)[one.name]
    assert metric.WhichOneof("data") == field
    if field == "sum":
        assert metric.sum.is_monotonic is monotonic
        assert metric.sum.aggregation_temporality == CUMULATIVE
    assert mapped.points == 1


def test_prometheus_type_metadata_is_set_only_when_the_type_came_from_metadata() -> None:
    mapped = run(
        series("requests", (1, 1000)),
        series("other_total", (1, 1000)),
        metadata=(FamilyMetadata("requests", MetricType.COUNTER, "Requests served.", "seconds"),),
    )
    found = metrics(mapped)
    assert attrs(found["requests"].metadata) == {"prometheus.type": "counter"}
    assert found["requests"].description == "Requests served."
    assert found["requests"].unit == "s"
    assert attrs(found["other_total"].metadata) == {}


def test_family_metadata_from_an_earlier_batch_is_remembered() -> None:
    state = MappingState()
    run(metadata=(FamilyMetadata("requests", MetricType.COUNTER),), state=state)  # metadata only
    mapped = run(series("requests", (3, 2000)), state=state)
    assert metrics(mapped)["requests"].WhichOneof("data") == "sum"


def test_family_metadata_cache_is_bounded() -> None:
    state = MappingState(max_families=2)
    state.learn(FamilyMetadata(f"f{i}", MetricType.COUNTER) for i in range(5))
    assert list(state.families) == ["f3", "f4"]


def test_gauge_histogram_is_dropped_and_counted() -> None:
    mapped = run(
        series("queue_bucket", (1, 1000), le="+Inf"),
        metadata=(FamilyMetadata("queue", MetricType.GAUGEHISTOGRAM),),
    )
    assert mapped.points == 0
    assert mapped.unmapped == 1


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("seconds", "s"),
        ("bytes", "By"),
        ("ratio", "1"),
        ("bytes_per_second", "By/s"),
        ("widgets", "widgets"),
        ("", ""),
    ],
)
def test_units_are_translated(unit: str, expected: str) -> None:
    assert otel_unit(unit) == expected


# -- resource, scope, attributes --------------------------------------------------------------


def test_series_are_grouped_into_resources_by_job_and_instance() -> None:
    a = Series(
        tuple(sorted({"__name__": "up", "job": "api", "instance": "a:1", "zone": "x"}.items())),
        (Sample(1, 1000),),
    )
    b = Series(
        tuple(sorted({"__name__": "up", "job": "api", "instance": "b:1"}.items())),
        (Sample(0, 1000),),
    )
    c = Series(
        tuple(sorted({"__name__": "load", "job": "api", "instance": "a:1"}.items())),
        (Sample(2, 1000),),
    )
    request = decode(run(a, b, c))
    assert len(request.resource_metrics) == 2
    by_instance = {
        attrs(rm.resource.attributes)["service.instance.id"]: rm for rm in request.resource_metrics
    }
    first = by_instance["a:1"]
    assert attrs(first.resource.attributes) == {"service.name": "api", "service.instance.id": "a:1"}
    (scope,) = first.scope_metrics
    assert scope.scope.name == SCOPE_NAME
    assert [m.name for m in scope.metrics] == ["up", "load"]
    # job, instance and __name__ are not data point attributes; other labels are.
    assert attrs(scope.metrics[0].gauge.data_points[0].attributes) == {"zone": "x"}
    assert attrs(scope.metrics[1].gauge.data_points[0].attributes) == {}


def test_configured_resource_labels_become_resource_attributes_by_their_own_name() -> None:
    one = Series(
        tuple(sorted({"__name__": "up", "job": "api", "instance": "a:1", "cluster": "eu"}.items())),
        (Sample(1, 1000),),
    )
    (rm,) = decode(run(one, resource_labels=("job", "cluster"))).resource_metrics
    assert attrs(rm.resource.attributes) == {"service.name": "api", "cluster": "eu"}
    point = rm.scope_metrics[0].metrics[0].gauge.data_points[0]
    assert attrs(point.attributes) == {"instance": "a:1"}


def test_series_without_resource_labels_get_an_empty_resource() -> None:
    one = Series((("__name__", "up"), ("x", "1")), (Sample(1, 1000),))
    (rm,) = decode(run(one)).resource_metrics
    assert list(rm.resource.attributes) == []


def test_otel_scope_labels_make_the_scope_and_are_not_attributes() -> None:
    """The compatibility spec's example: name, version, schema URL and the other
    ``otel_scope_`` labels as the scope's attributes (the prefix cut); a series with a scope
    label but no name is in that scope too, not the relay's; one with none in the relay's."""
    one = series(
        "up",
        (1, 1000),
        otel_scope_name="lib",
        otel_scope_version="2.0",
        otel_scope_schema_url="https://opentelemetry.io/schemas/1.31.0",
        otel_scope_library_mascot="gopher",
        path="/",
    )
    versioned = series("down", (1, 1000), otel_scope_version="3.0")
    plain = series("side", (1, 1000))
    (rm,) = decode(run(one, versioned, plain)).resource_metrics
    scopes = {(s.scope.name, s.scope.version): s for s in rm.scope_metrics}
    assert set(scopes) == {("lib", "2.0"), ("", "3.0"), ("gotk-relay", __version__)}
    lib = scopes["lib", "2.0"]
    assert lib.schema_url == "https://opentelemetry.io/schemas/1.31.0"
    assert attrs(lib.scope.attributes) == {"library_mascot": "gopher"}
    assert attrs(lib.metrics[0].gauge.data_points[0].attributes) == {"path": "/"}
    assert [m.name for m in scopes["", "3.0"].metrics] == ["down"]
    assert attrs(scopes["", "3.0"].metrics[0].gauge.data_points[0].attributes) == {}
    assert scopes["gotk-relay", __version__].schema_url == ""


def test_target_info_is_its_resources_attributes_not_a_metric() -> None:
    """The compatibility spec: the target info metric is dropped, its labels (as they are)
    become the resource attributes of its target's series, in its request and those after;
    a stale marker (the target gone) takes them away. Another target's series keep theirs."""
    state = MappingState()
    info = series("target_info", (1, 1000), k8s_cluster="prod", service_version="1.2")
    mine, other = series("up", (1, 1000)), series("up", (1, 1000), instance="other:9")

    def resources(mapped: Mapped) -> dict[str, dict[str, str]]:
        found = {}
        for rm in decode(mapped).resource_metrics:
            names = [m.name for sm in rm.scope_metrics for m in sm.metrics]
            for name in names:
                found[f"{name}@{attrs(rm.resource.attributes)['service.instance.id']}"] = attrs(
                    rm.resource.attributes
                )
        return found

    first = resources(run(mine, info, other, state=state))
    instance = dict(mine.labels)["instance"]
    assert set(first) == {f"up@{instance}", "up@other:9"}  # no target_info metric
    assert first[f"up@{instance}"] == {
        "service.name": dict(mine.labels)["job"],
        "service.instance.id": instance,
        "k8s_cluster": "prod",
        "service_version": "1.2",
    }
    assert set(first["up@other:9"]) == {"service.name", "service.instance.id"}
    later = resources(run(series("up", (1, 2000)), state=state))
    assert later[f"up@{instance}"]["k8s_cluster"] == "prod"
    gone = series("target_info", (STALE_NAN, 3000), k8s_cluster="prod", service_version="1.2")
    run(gone, state=state)
    after = resources(run(series("up", (1, 4000)), state=state))
    assert "k8s_cluster" not in after[f"up@{instance}"]


# -- classic histograms -------------------------------------------------------------------------

HISTOGRAM_CASES = [
    # (id, buckets {le: cumulative}, _count, _sum, bounds, bucket_counts, count, sum)
    (
        "complete",
        {"0.1": 1, "0.5": 3, "1": 6, "+Inf": 8},
        8,
        4.2,
        [0.1, 0.5, 1.0],
        [1, 2, 3, 2],
        8,
        4.2,
    ),
    (
        "arrival-order-does-not-matter",
        {"+Inf": 8, "1": 6, "0.1": 1, "0.5": 3},
        8,
        4.2,
        [0.1, 0.5, 1.0],
        [1, 2, 3, 2],
        8,
        4.2,
    ),
    ("no-_count-uses-+Inf", {"0.1": 1, "+Inf": 5}, None, 2.0, [0.1], [1, 4], 5, 2.0),
    ("no-_sum-leaves-sum-unset", {"0.1": 1, "+Inf": 5}, 5, None, [0.1], [1, 4], 5, None),
    (
        "missing-interior-bucket-merges",
        {"0.1": 1, "1": 6, "+Inf": 8},
        8,
        4.2,
        [0.1, 1.0],
        [1, 5, 2],
        8,
        4.2,
    ),
    ("only-+Inf", {"+Inf": 3}, 3, 1.0, [], [3], 3, 1.0),
    (
        "le-spelled-differently",
        {"1e-1": 2, "1.0": 2, "+Inf": 2},
        2,
        0.3,
        [0.1, 1.0],
        [2, 0, 0],
        2,
        0.3,
    ),
    (
        "inconsistent-buckets-clamped",
        {"0.1": 5, "1": 3, "+Inf": 4},
        4,
        1.0,
        [0.1, 1.0],
        [5, 0, 0],
        4,
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("buckets", "count", "sum_", "bounds", "counts", "total", "total_sum"),
    [case[1:] for case in HISTOGRAM_CASES],
    ids=[case[0] for case in HISTOGRAM_CASES],
)
def test_classic_histogram_assembles_into_one_point(
    buckets: dict[str, float],
    count: float | None,
    sum_: float | None,
    bounds: list[float],
    counts: list[int],
    total: int,
    total_sum: float | None,
) -> None:
    mapped = run(*histogram_series("latency", 5000, buckets, count, sum_, path="/"))
    found = metrics(mapped)
    assert list(found) == ["latency"]
    metric = found["latency"]
    assert metric.WhichOneof("data") == "histogram"
    assert metric.histogram.aggregation_temporality == CUMULATIVE
    (point,) = metric.histogram.data_points
    assert list(point.explicit_bounds) == bounds
    assert list(point.bucket_counts) == counts
    assert point.count == total
    assert point.HasField("sum") is (total_sum is not None)
    if total_sum is not None:
        assert point.sum == pytest.approx(total_sum)
    assert attrs(point.attributes) == {"path": "/"}  # no le
    assert point.time_unix_nano == 5000 * NS
    assert mapped.points == 1


def test_histogram_parts_of_different_label_sets_and_timestamps_stay_apart() -> None:
    items = [
        *histogram_series("lat", 1000, {"1": 1, "+Inf": 2}, 2, 1.0, path="/a"),
        *histogram_series("lat", 1000, {"1": 0, "+Inf": 1}, 1, 5.0, path="/b"),
        *histogram_series("lat", 2000, {"1": 3, "+Inf": 4}, 4, 3.0, path="/a"),
    ]
    points = metrics(run(*items))["lat"].histogram.data_points
    seen = {(attrs(p.attributes)["path"], p.time_unix_nano // NS): p.count for p in points}
    assert seen == {("/a", 1000): 2, ("/b", 1000): 1, ("/a", 2000): 4}


def test_histogram_metadata_makes_lone_count_and_sum_a_histogram() -> None:
    mapped = run(
        series("lat_sum", (1.5, 1000)),
        series("lat_count", (3, 1000)),
        metadata=(FamilyMetadata("lat", MetricType.HISTOGRAM),),
    )
    (point,) = metrics(mapped)["lat"].histogram.data_points
    assert (point.count, point.sum, list(point.bucket_counts)) == (3, 1.5, [])


def test_histogram_shape_seen_earlier_makes_a_later_count_a_histogram_part() -> None:
    state = MappingState()
    run(*histogram_series("lat", 1000, {"1": 1, "+Inf": 2}, 2, 1.0), state=state)
    mapped = run(series("lat_count", (3, 2000)), series("lat_sum", (2, 2000)), state=state)
    assert metrics(mapped)["lat"].WhichOneof("data") == "histogram"


def test_histogram_without_count_or_inf_bucket_is_unmapped() -> None:
    mapped = run(*histogram_series("lat", 1000, {"0.1": 1, "1": 2}, None, 3.0))
    assert mapped.points == 0
    assert mapped.unmapped == 3


def test_lone_sum_and_count_without_any_histogram_hint_are_gauges() -> None:
    found = metrics(run(series("x_sum", (1, 1000)), series("x_count", (2, 1000))))
    assert {name: m.WhichOneof("data") for name, m in found.items()} == {
        "x_sum": "gauge",
        "x_count": "gauge",
    }


# -- summaries ----------------------------------------------------------------------------------


def test_summary_assembles_quantiles_count_and_sum() -> None:
    items = [
        series("rpc", (0.9, 1000), quantile="0.9"),
        series("rpc", (0.5, 1000), quantile="0.5"),
        series("rpc", (0.99, 1000), quantile="0.99"),
        series("rpc_sum", (12.5, 1000)),
        series("rpc_count", (30, 1000)),
    ]
    metric = metrics(run(*items))["rpc"]
    assert metric.WhichOneof("data") == "summary"
    (point,) = metric.summary.data_points
    assert [(q.quantile, q.value) for q in point.quantile_values] == [
        (0.5, 0.5),
        (0.9, 0.9),
        (0.99, 0.99),
    ]
    assert (point.count, point.sum) == (30, 12.5)
    assert attrs(point.attributes) == {}


def test_summary_without_sum_has_sum_zero_and_without_count_is_dropped() -> None:
    with_count = run(series("rpc", (1, 1000), quantile="0.5"), series("rpc_count", (4, 1000)))
    (point,) = metrics(with_count)["rpc"].summary.data_points
    assert (point.count, point.sum) == (4, 0.0)
    without = run(series("rpc", (1, 1000), quantile="0.5"), series("rpc_sum", (4, 1000)))
    assert (without.points, without.unmapped) == (0, 2)


def test_summary_by_metadata() -> None:
    mapped = run(
        series("rpc", (1, 1000), quantile="0.5"),
        series("rpc_count", (2, 1000)),
        metadata=(FamilyMetadata("rpc", MetricType.SUMMARY),),
    )
    assert metrics(mapped)["rpc"].summary.data_points[0].count == 2


# -- stale markers ------------------------------------------------------------------------------


def test_stale_markers_become_no_recorded_value_points() -> None:
    items = [
        series("up", (STALE_NAN, 2000)),
        series("req_total", (STALE_NAN, 2000)),
        *histogram_series("lat", 2000, {"1": STALE_NAN, "+Inf": STALE_NAN}, STALE_NAN, STALE_NAN),
        series("rpc", (STALE_NAN, 2000), quantile="0.5"),
        series("rpc_count", (STALE_NAN, 2000)),
    ]
    found = metrics(run(*items))
    points = [
        found["up"].gauge.data_points[0],
        found["req_total"].sum.data_points[0],
        found["lat"].histogram.data_points[0],
        found["rpc"].summary.data_points[0],
    ]
    for point in points:
        assert point.flags & NO_RECORDED_VALUE == NO_RECORDED_VALUE
        assert point.time_unix_nano == 2000 * NS
    assert not found["up"].gauge.data_points[0].HasField("value")
    assert found["lat"].histogram.data_points[0].count == 0


def test_ordinary_nan_is_a_value_not_a_stale_marker() -> None:
    (point,) = metrics(run(series("ratio", (math.nan, 1000))))["ratio"].gauge.data_points
    assert point.flags == 0
    assert math.isnan(point.as_double)


# -- time ---------------------------------------------------------------------------------------


def test_cumulative_start_is_first_seen_and_moves_after_a_reset() -> None:
    state = MappingState()
    starts = []
    for value, ts in [(5, 1000), (8, 2000), (2, 3000), (4, 4000)]:
        (point,) = metrics(run(series("req_total", (value, ts)), state=state))[
            "req_total"
        ].sum.data_points
        assert point.time_unix_nano == ts * NS
        assert point.as_double == value  # cumulative: values as they are
        starts.append(point.start_time_unix_nano // NS)
    assert starts == [1000, 1000, 2001, 2001]


def test_start_comes_from_v2_start_timestamp_created_timestamp_or_created_series() -> None:
    v2_sample = Series(labels("a_total"), (Sample(5, 9000, start_timestamp=4000),))
    v2_series = Series(labels("b_total"), (Sample(5, 9000),), created_timestamp=3000)
    om = [series("c_total", (5, 9000)), series("c_created", (2.5, 9000))]
    found = metrics(run(v2_sample, v2_series, *om))
    assert found["a_total"].sum.data_points[0].start_time_unix_nano == 4000 * NS
    assert found["b_total"].sum.data_points[0].start_time_unix_nano == 3000 * NS
    assert found["c_total"].sum.data_points[0].start_time_unix_nano == 2500 * NS
    assert "c_created" not in found  # consumed as the start time


def test_a_created_series_gives_its_start_to_later_batches() -> None:
    """A ``_created`` series may come in another request (or shard) than its counter: its
    time is the counter's start in the batches after it, as in its own."""
    state = MappingState()
    family = (FamilyMetadata("c", MetricType.COUNTER),)  # OpenMetrics' family of c_total
    first = metrics(run(series("c_created", (2.5, 9000)), state=state, metadata=family))
    assert "c_created" not in first  # consumed as a start time
    (point,) = metrics(run(series("c_total", (5, 9000)), state=state))["c_total"].sum.data_points
    assert point.start_time_unix_nano == 2500 * NS


def test_uncommitted_updates_leave_the_state_unchanged() -> None:
    state = MappingState()
    first = run(series("req_total", (5, 1000)), state=state, temporality="delta", commit=False)
    assert first.points == 0 and state.streams == {}
    again = run(series("req_total", (5, 1000)), state=state, temporality="delta", commit=False)
    assert again.updates == first.updates


# -- delta --------------------------------------------------------------------------------------


def test_delta_counter_skips_the_first_observation_and_handles_a_reset() -> None:
    state = MappingState()
    seen = []
    for value, ts in [(10, 1000), (15, 2000), (3, 3000), (7, 4000)]:
        mapped = run(series("req_total", (value, ts)), state=state, temporality="delta")
        for point in metrics(mapped).get("req_total", pb.Metric()).sum.data_points:
            seen.append(
                (point.start_time_unix_nano // NS, point.time_unix_nano // NS, point.as_double)
            )
        if mapped.points:
            metric = metrics(mapped)["req_total"]
            assert metric.sum.aggregation_temporality == DELTA
            assert metric.sum.is_monotonic
    assert seen == [(1000, 2000, 5.0), (2000, 3000, 3.0), (3000, 4000, 4.0)]


def test_delta_within_one_batch_and_repeated_timestamps() -> None:
    mapped = run(
        series("req_total", (1, 1000), (4, 2000), (4, 2000), (9, 3000)),
        temporality="delta",
    )
    points = metrics(mapped)["req_total"].sum.data_points
    assert [(p.start_time_unix_nano // NS, p.as_double) for p in points] == [
        (1000, 3.0),
        (2000, 5.0),
    ]


def test_delta_dropped_request_leaves_the_baseline_so_the_next_delta_covers_it() -> None:
    state = MappingState()
    run(series("req_total", (10, 1000)), state=state, temporality="delta")
    lost = run(series("req_total", (15, 2000)), state=state, temporality="delta", commit=False)
    assert metrics(lost)["req_total"].sum.data_points[0].as_double == 5
    after = run(series("req_total", (18, 3000)), state=state, temporality="delta")
    (point,) = metrics(after)["req_total"].sum.data_points
    assert (point.start_time_unix_nano // NS, point.as_double) == (1000, 8.0)


def test_delta_histogram_per_bucket_and_across_a_reset() -> None:
    state = MappingState()
    first = run(
        *histogram_series("lat", 1000, {"0.1": 1, "1": 3, "+Inf": 4}, 4, 2.0),
        state=state,
        temporality="delta",
    )
    assert first.points == 0
    second = run(
        *histogram_series("lat", 2000, {"0.1": 2, "1": 6, "+Inf": 9}, 9, 5.5),
        state=state,
        temporality="delta",
    )
    metric = metrics(second)["lat"]
    assert metric.histogram.aggregation_temporality == DELTA
    (point,) = metric.histogram.data_points
    assert (point.start_time_unix_nano // NS, point.time_unix_nano // NS) == (1000, 2000)
    assert (list(point.explicit_bounds), list(point.bucket_counts)) == ([0.1, 1.0], [1, 2, 2])
    assert (point.count, point.sum) == (5, pytest.approx(3.5))
    reset = run(
        *histogram_series("lat", 3000, {"0.1": 1, "1": 1, "+Inf": 2}, 2, 0.5),
        state=state,
        temporality="delta",
    )
    (point,) = metrics(reset)["lat"].histogram.data_points
    assert (list(point.bucket_counts), point.count, point.sum) == ([1, 0, 1], 2, 0.5)


def test_delta_histogram_subtracts_only_bounds_both_points_have() -> None:
    state = MappingState()
    run(
        *histogram_series("lat", 1000, {"0.1": 1, "1": 3, "+Inf": 4}, 4, 2.0),
        state=state,
        temporality="delta",
    )
    mapped = run(
        *histogram_series("lat", 2000, {"1": 5, "+Inf": 7}, 7, 3.0),
        state=state,
        temporality="delta",
    )
    (point,) = metrics(mapped)["lat"].histogram.data_points
    assert (list(point.explicit_bounds), list(point.bucket_counts), point.count) == (
        [1.0],
        [2, 1],
        3,
    )


def test_summaries_and_gauges_are_not_made_delta() -> None:
    state = MappingState()
    for ts in (1000, 2000):
        mapped = run(
            series("temp", (20, ts)),
            series("rpc", (1, ts), quantile="0.5"),
            series("rpc_count", (ts / 1000, ts)),
            state=state,
            temporality="delta",
        )
    found = metrics(mapped)
    assert found["temp"].gauge.data_points[0].as_double == 20
    point = found["rpc"].summary.data_points[0]
    assert (point.count, point.start_time_unix_nano // NS) == (2, 1000)


def test_stream_state_is_bounded() -> None:
    state = MappingState(max_streams=3)
    run(*(series("req_total", (1, 1000), i=str(i)) for i in range(10)), state=state)
    assert len(state.streams) == 3


# -- native histograms and exemplars ------------------------------------------------------------


def test_native_histogram_becomes_an_exponential_histogram() -> None:
    native = Histogram(
        timestamp=1000,
        count_value=6,
        zero_count=1,
        sum=12.0,
        schema=0,
        zero_threshold=1e-128,
        positive_spans=(BucketSpan(1, 2), BucketSpan(1, 1)),
        positive_deltas=(2, -1, 1),  # absolute 2, 1, 2 at indexes 1, 2, 4
    )
    metric = metrics(run(Series(labels("rpc_seconds"), histograms=(native,))))["rpc_seconds"]
    assert metric.WhichOneof("data") == "exponential_histogram"
    (point,) = metric.exponential_histogram.data_points
    assert (point.scale, point.count, point.zero_count, point.sum) == (0, 6, 1, 12.0)
    assert point.positive.offset == 0  # Prometheus index 1 is OTLP index 0
    assert list(point.positive.bucket_counts) == [2, 1, 0, 2]
    assert list(point.negative.bucket_counts) == []


def test_native_histogram_with_custom_buckets_becomes_explicit() -> None:
    nhcb = Histogram(
        timestamp=1000,
        count_value=5,
        sum=3.0,
        schema=-53,
        positive_spans=(BucketSpan(0, 3),),
        positive_deltas=(1, 1, -1),  # 1, 2, 1
        custom_values=(0.1, 1.0),
    )
    (point,) = metrics(run(Series(labels("lat"), histograms=(nhcb,))))["lat"].histogram.data_points
    assert (list(point.explicit_bounds), list(point.bucket_counts), point.count) == (
        [0.1, 1.0],
        [1, 2, 1],
        5,
    )


def test_native_histogram_delta_aligns_schemas() -> None:
    state = MappingState()
    fine = Histogram(
        1000,
        count_value=4,
        sum=4.0,
        schema=1,
        positive_spans=(BucketSpan(1, 2),),
        positive_counts=(1.0, 3.0),
        is_float=True,
    )
    coarse = Histogram(
        2000,
        count_value=7,
        sum=9.0,
        schema=0,
        positive_spans=(BucketSpan(1, 1),),
        positive_counts=(7.0,),
        is_float=True,
    )
    run(Series(labels("rpc"), histograms=(fine,)), state=state, temporality="delta")
    mapped = run(Series(labels("rpc"), histograms=(coarse,)), state=state, temporality="delta")
    (point,) = metrics(mapped)["rpc"].exponential_histogram.data_points
    # Schema-1 buckets 1 and 2 are schema-0 bucket 1: 7 - (1 + 3) = 3.
    assert (point.scale, point.count, list(point.positive.bucket_counts), point.sum) == (
        0,
        3,
        [3],
        5.0,
    )


def test_native_buckets_far_apart_are_merged_to_a_coarser_scale() -> None:
    """OTLP's buckets are dense: two used buckets a million indexes apart would be a million
    counts. They are merged to the scale where they lie within MAX_DENSE_BUCKETS (index i goes
    to ceil(i / 2) a scale lower), the counts kept."""
    native = Histogram(
        timestamp=1000,
        count_value=5,
        sum=7.0,
        schema=0,
        positive_spans=(BucketSpan(1, 1), BucketSpan(1_000_000, 1)),
        positive_deltas=(2, 1),  # absolute 2 at index 1, 3 at index 1,000,002
        negative_spans=(BucketSpan(-3, 1),),
        negative_deltas=(4,),
    )
    (point,) = metrics(run(Series(labels("rpc"), histograms=(native,))))[
        "rpc"
    ].exponential_histogram.data_points
    # 6 scales lower: 1 -> 1 and 1,000,002 -> ceil(1,000,002 / 64) = 15,626 (5 lower is 31,251
    # buckets); -3 -> ceil(-3 / 64) = 0 on the negative side.
    assert point.scale == -6
    counts = list(point.positive.bucket_counts)
    assert (point.positive.offset, len(counts), counts[0], counts[-1], sum(counts)) == (
        0,
        15_626,
        2,
        3,
        5,
    )
    assert (point.negative.offset, list(point.negative.bucket_counts)) == (-1, [4])


def test_native_buckets_too_far_apart_for_any_scale_are_unmapped() -> None:
    far = Histogram(
        timestamp=1000,
        count_value=2,
        sum=2.0,
        schema=-4,
        positive_spans=(BucketSpan(1, 1), BucketSpan(2_000_000_000, 1)),
        positive_deltas=(1, 0),
    )
    mapped = run(Series(labels("rpc"), histograms=(far,)))
    assert (mapped.points, mapped.unmapped) == (0, 1)


@pytest.mark.parametrize(
    ("schema", "scale", "offset", "counts"),
    [
        (8, 8, 0, [1, 2, 3]),  # Prometheus' highest: as it is
        (20, 20, 0, [1, 2, 3]),  # OTLP's highest: as it is
        (21, 20, 0, [3, 3]),  # merged once: buckets 1, 2 → 1; 3 → 2
        (22, 20, 0, [6]),  # merged twice: 1, 2, 3 → 1
        (2**31 - 1, 20, 0, [6]),  # any drop: every positive index → 1
        (-10, -10, 0, [1, 2, 3]),  # OTLP's lowest
        (-11, None, None, None),  # below it: no OTLP point can hold it
        (-(2**31), None, None, None),
    ],
)
def test_native_schemas_past_otlp_scales_are_merged_down_or_unmapped(
    schema: int, scale: int | None, offset: int | None, counts: list[int] | None
) -> None:
    """OTLP's scales run from -10 to 20; Prometheus defines schemas -4 to 8 but the strict
    check takes any (Prometheus 3 reduces 9 to 52 to 8 on receipt): a higher one is merged
    down to 20 (exact: each bucket nests in one of the next lower schema), a lower one is
    unmapped, never sent as a scale receivers refuse."""
    native = Histogram(
        timestamp=1000,
        count_value=6,
        sum=1.0,
        schema=schema,
        positive_spans=(BucketSpan(1, 3),),
        positive_deltas=(1, 1, 1),
    )
    mapped = run(Series(labels("rpc"), histograms=(native,)))
    if scale is None:
        assert (mapped.points, mapped.unmapped) == (0, 1)
        return
    (point,) = metrics(mapped)["rpc"].exponential_histogram.data_points
    assert (point.scale, point.positive.offset, list(point.positive.bucket_counts)) == (
        scale,
        offset,
        counts,
    )


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
@pytest.mark.parametrize(
    ("spans", "offset"),
    [
        ((BucketSpan(-(2**31) + 1, 1),), -(2**31)),  # the lowest OTLP offset (a sint32)
        ((BucketSpan(2**31 - 1, 0), BucketSpan(1, 1)), 2**31 - 1),  # the highest
        ((BucketSpan(-(2**31), 1),), None),  # the lowest first offset (sint32): OTLP -2^31 - 1
        ((BucketSpan(2**31 - 1, 0), BucketSpan(2**31 - 1, 1)), None),  # offsets add up: 2^32 - 3
        ((BucketSpan(2**31 - 1, 1), BucketSpan(1, 1)), None),  # the last one's OTLP index 2^31
    ],
)
def test_native_buckets_otlp_cannot_number_are_unmapped(
    temporality: Temporality, spans: tuple[BucketSpan, ...], offset: int | None
) -> None:
    """OTLP numbers the exponential buckets by a sint32 (Prometheus bucket i is OTLP bucket
    i - 1): a point with a bucket past it is left out and counted in ``unmapped`` (it raised
    ValueError: Value out of range, the series lost as a conversion error)."""
    state = MappingState()
    got = []
    for at in range(2):  # delta: the first point is the baseline
        native = Histogram(
            timestamp=1000 * (at + 1),
            count_value=2 * (at + 1),
            sum=1.0,
            schema=0,
            positive_spans=spans,
            positive_deltas=(at + 1, 0)[: sum(span.length for span in spans)],
        )
        got.append(
            run(Series(labels("rpc"), histograms=(native,)), state=state, temporality=temporality)
        )
    mapped = got[-1]
    if offset is None:
        assert (mapped.points, mapped.unmapped) == (0, 1)
        return
    (point,) = metrics(mapped)["rpc"].exponential_histogram.data_points
    count = 1 if temporality == "delta" else 2
    assert (mapped.unmapped, point.positive.offset, list(point.positive.bucket_counts)) == (
        0,
        offset,
        [count],
    )


@pytest.mark.parametrize("by", [1, 31, 33, 64, 65, 100, 2**26])
def test_native_downscale_is_ceil_of_the_index_over_two_to_the_drop(by: int) -> None:
    """Merging buckets ``by`` schemas lower sends index i to ceil(i / 2^by), whatever ``by``
    (one past 64 and every index's bit length is cut, exactly: no ints of ``by`` bits)."""
    indexes = [-(2**70), -(2**64), -(2**33), -(2**31), -5, -1, 0, 1, 2, 2**31 - 1, 2**40, 2**70 + 3]
    want: dict[int, float] = {}
    for index in indexes:
        target = -(-index >> by)  # ceil(index / 2^by), shifting only down
        want[target] = want.get(target, 0.0) + 1.0
    assert _downscale(dict.fromkeys(indexes, 1.0), by) == want


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_native_schema_drop_of_any_size_costs_only_the_buckets(temporality: Temporality) -> None:
    """A stream whose schema drops from 2^31 - 1 to OTLP's lowest scale (the strict check takes
    any sint32): comparing its points merges the older one's buckets 2^31 + 9 schemas lower,
    which took seconds and a gigabyte per bucket (ints of that many bits)."""
    state = MappingState()
    points = (
        Histogram(
            1000,
            count_value=3,
            schema=2**31 - 1,
            positive_spans=(BucketSpan(1, 3),),
            positive_deltas=(1, 0, 0),
        ),
        Histogram(
            2000,
            count_value=7,
            schema=MIN_SCALE,
            positive_spans=(BucketSpan(1, 1),),
            positive_deltas=(7,),
        ),
    )
    tracemalloc.start()
    try:
        for native in points:
            mapped = run(
                Series(labels("rpc"), histograms=(native,)), state=state, temporality=temporality
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes at the peak"
    (point,) = metrics(mapped)["rpc"].exponential_histogram.data_points
    # The older point's buckets 1..3 are all bucket 1 at the lower schema: 7 - 3 = 4 more.
    want = 4 if temporality == "delta" else 7
    assert (
        point.scale,
        point.count,
        point.positive.offset,
        list(point.positive.bucket_counts),
    ) == (MIN_SCALE, want, 0, [want])


def test_native_spans_longer_than_their_buckets_cost_only_the_buckets() -> None:
    """Under framing-only validation a histogram may declare spans of 2^32 - 1 buckets and
    carry three: the buckets given are mapped (a span's length is not the work)."""
    odd = Histogram(
        timestamp=1000,
        count_value=6,
        sum=6.0,
        schema=0,
        positive_spans=(BucketSpan(1, 2**32 - 1), BucketSpan(5, 2**32 - 1)),
        positive_deltas=(1, 1, 0),
    )
    (point,) = metrics(run(Series(labels("rpc"), histograms=(odd,))))[
        "rpc"
    ].exponential_histogram.data_points
    assert (point.scale, point.positive.offset, list(point.positive.bucket_counts)) == (
        0,
        0,
        [1, 2, 2],
    )


def test_exemplars_carry_trace_and_span_ids() -> None:
    trace, span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    one = Series(
        labels("req_total"),
        (Sample(3, 1000),),
        exemplars=(Exemplar((("span_id", span), ("trace_id", trace), ("user", "u1")), 1.0, 990),),
    )
    (exemplar,) = metrics(run(one))["req_total"].sum.data_points[0].exemplars
    assert exemplar.trace_id.hex() == trace and exemplar.span_id.hex() == span
    assert attrs(exemplar.filtered_attributes) == {"user": "u1"}
    assert (exemplar.time_unix_nano, exemplar.as_double) == (990 * NS, 1.0)


def test_an_exemplar_at_a_time_otlp_cannot_hold_is_left_out() -> None:
    """Before 1970 (or past 2554) no OTLP time holds it: the exemplar is left out, the point
    stays (upb refused the whole request, and its sender retried it for ever)."""
    one = Series(
        labels("req_total"),
        (Sample(3, 1000),),
        exemplars=(Exemplar((), 1.0, -5), Exemplar((), 2.0, 990)),
    )
    (point,) = metrics(run(one))["req_total"].sum.data_points
    assert [e.time_unix_nano for e in point.exemplars] == [990 * NS]


# -- the client's answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b"", "application/x-protobuf", (0, "")),
        (
            ExportMetricsServiceResponse(
                partial_success=ExportMetricsPartialSuccess(
                    rejected_data_points=3, error_message="too old"
                )
            ).SerializeToString(),
            "application/x-protobuf",
            (3, "too old"),
        ),
        (
            b'{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"x"}}',
            "application/json",
            (2, "x"),
        ),
        (b"{}", "application/json", (0, "")),
        (b"not json", "application/json", (0, "")),
    ],
)
def test_partial_success_is_read_from_protobuf_or_json(
    raw: bytes, content_type: str, expected: tuple[int, str]
) -> None:
    assert partial_success(raw, content_type) == expected


def test_error_detail_reads_a_google_rpc_status() -> None:
    status = b"\x08\x03" + b"\x12\x0bbad request" + b"\x1a\x00"  # code=3, message, details
    assert error_detail(status, "application/x-protobuf") == "bad request"
    assert error_detail(b'{"code":3,"message":"nope"}', "application/json") == "nope"
    assert error_detail(b"plain\ntext", "text/plain") == "plain text"


def test_a_request_written_as_bytes_parses_to_its_points_in_the_order_they_came() -> None:
    """``Output.serialized``: a metric whose points came encoded (rows) is written from its
    header and the points' bytes, one given points field by field as a upb message; a metric
    given both holds them in the order they came, and the bytes parse to the request built
    field by field throughout."""
    from gotk_relay.destinations.otlp_mapping.encoder import number_bytes
    from gotk_relay.destinations.otlp_mapping.labelsets import RowInfo
    from gotk_relay.destinations.otlp_mapping.naming import Kind
    from gotk_relay.destinations.otlp_mapping.output import Output

    out = Output(("job", "instance"), "cumulative")

    def ctx_of(rest: tuple[tuple[str, str], ...]) -> Any:
        from gotk_relay.destinations.otlp_mapping.builder import Builder

        return Builder(MappingState(), "cumulative", ("job", "instance"))._ctx_of(rest)

    kind = Kind(MetricType.GAUGE, "g", "", help="a gauge", typed=True)
    infos = [
        RowInfo((("__name__", "g"), ("instance", i), ("job", "j"), ("pod", p)), ctx_of)
        for i, p in (("a", "0"), ("a", "1"), ("b", "0"))
    ]
    want = Output(("job", "instance"), "cumulative")  # every point field by field
    for step, (info, ts) in enumerate([(infos[0], 1), (infos[2], 1), (infos[1], 2), (infos[0], 3)]):
        if step == 2:  # a point given field by field, between encoded ones
            out.number(info.ctx, "g", "gauge", kind, ts, 0, 2.0)
        else:
            out.encoded(info, "gauge", kind).append(number_bytes(info.attrs, ts, 0, float(ts)))
        want.number(info.ctx, "g", "gauge", kind, ts, 0, 2.0 if step == 2 else float(ts))
    got = out.message()
    assert got == want.message()
    (first, second) = got.resource_metrics  # instance a, then b
    points = first.scope_metrics[0].metrics[0].gauge.data_points
    assert [(p.time_unix_nano // 1_000_000, p.as_double) for p in points] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
    ]
    assert len(second.scope_metrics[0].metrics[0].gauge.data_points) == 1


def _fields(buf: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a protobuf message, in order, as protobuf reads them
    (unknown to ``Empty``, each is kept as it came)."""
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    message = empty_pb2.Empty()
    message.ParseFromString(buf)
    return [(f.field_number, f.data) for f in UnknownFieldSet(message) if f.wire_type == 2]


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_each_metric_written_as_bytes_has_one_data_field(temporality: str) -> None:
    """A metric written from its headers and encoded points carries its Gauge or Sum once:
    a parser that replaces a repeated oneof member (gogo's, in the OpenTelemetry Collector)
    reads the same points and the same Sum temporality as one that merges (upb)."""
    from gotk_relay.destinations.otlp_mapping.builder import Builder
    from gotk_relay.destinations.otlp_mapping.encoder import number_bytes
    from gotk_relay.destinations.otlp_mapping.labelsets import RowInfo
    from gotk_relay.destinations.otlp_mapping.naming import Kind

    builder = Builder(MappingState(), temporality, ("job", "instance"))  # type: ignore[arg-type]
    out = builder.out
    rows = [
        (RowInfo((("__name__", "c_total"), ("job", "j"), ("pod", p)), builder._ctx_of), "sum")
        for p in "ab"
    ] + [(RowInfo((("__name__", "g"), ("job", "j")), builder._ctx_of), "gauge")]
    for info, data in rows:
        kind = Kind(MetricType.COUNTER if data == "sum" else MetricType.GAUGE, info.name, "")
        out.encoded(info, data, kind).append(number_bytes(info.attrs, 5, 1, 1.0))
    (resource,) = [body for number, body in _fields(out.serialized()) if number == 1]
    (scope,) = [body for number, body in _fields(resource) if number == 2]
    metrics = [body for number, body in _fields(scope) if number == 2]
    assert len(metrics) == 2
    for body in metrics:
        fields = [(number, payload) for number, payload in _fields(body) if number in (5, 7)]
        assert len(fields) == 1
        (number, payload) = fields[0]
        target: pb.Sum | pb.Gauge = pb.Sum() if number == 7 else pb.Gauge()
        target.ParseFromString(payload)
        assert len(target.data_points) == (2 if number == 7 else 1)
        if number == 7:
            want = (
                pb.AGGREGATION_TEMPORALITY_DELTA
                if temporality == "delta"
                else pb.AGGREGATION_TEMPORALITY_CUMULATIVE
            )
            assert target.aggregation_temporality == want and target.is_monotonic


def test_label_set_keys_are_the_plain_tuples_to_every_dict() -> None:
    """A RowInfo's keys (its labels without the name, its counter stream key, its metric key)
    hash and compare as the plain tuples the decoded-series path builds, in a dict either way
    round, whichever type keeps their hash (``_rows.c``'s HashedTuple reads it in C)."""
    from gotk_relay.destinations.otlp_mapping.builder import Builder
    from gotk_relay.destinations.otlp_mapping.labelsets import RowInfo

    labels = (("__name__", "c_total"), ("instance", "a:1"), ("job", "j"))
    info = RowInfo(labels, Builder(MappingState(), "cumulative", ("job", "instance"))._ctx_of)
    rest = (("instance", "a:1"), ("job", "j"))
    plain = {
        "rest": rest,
        "counter": ("counter", "c_total", rest),
        "metric": (info.ctx.resource, info.ctx.scope, "c_total", "sum"),
    }
    kept = {"rest": info.rest, "counter": info.counter_key, "metric": info.metric_key("sum")}
    for name, key in kept.items():
        assert isinstance(key, tuple) and key == plain[name] and plain[name] == key
        assert hash(key) == hash(plain[name]) == hash(tuple(key))
        assert {plain[name]: name}[key] == name and {key: name}[plain[name]] == name
    native = LOOPS.compiled
    if native is not None:  # kept by a subclass without a __dict__; any other hashes anew

        class Kept(native.HashedTuple):  # type: ignore[misc,name-defined]
            __slots__ = ()

        class WithDict(native.HashedTuple):  # type: ignore[misc,name-defined]
            pass

        with_dict = WithDict(rest)
        with_dict.note = "a __dict__ where Kept keeps its hash"
        made: list[Any] = [Kept(rest), with_dict, Kept(iter(rest)), Kept(list(rest))]
        for key in made:
            assert key == rest and hash(key) == hash(rest) and {rest: 1}[key] == 1
        assert Kept(()) == () and hash(Kept(())) == hash(())
        with pytest.raises(TypeError):
            Kept(rest, rest)
        with pytest.raises(TypeError):
            hash(Kept(([],)))
