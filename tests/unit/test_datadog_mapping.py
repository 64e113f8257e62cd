"""Prometheus → Datadog mapping rules as tables (names, tags, types, counter deltas, skips)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.destinations.datadog import Piece, group
from gotk_relay.destinations.datadog_mapping import (
    COUNTER_FIRST,
    OUT_OF_ORDER,
    TYPE_COUNT,
    TYPE_GAUGE,
    CounterStore,
    Kind,
    MappedSeries,
    MappingOptions,
    TypeCache,
    counter_key,
    map_batch,
    normalize_metric_name,
    normalize_tag,
    resolve_kind,
    series_tags,
)
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Histogram,
    Labels,
    Metadata,
    MetricType,
    Sample,
    Series,
)

NOW_MS = 1_750_000_000_000
NOW_S = NOW_MS // 1000


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("http_requests_total", "http_requests_total"),
        ("job:http_requests:rate5m", "job_http_requests_rate5m"),  # recording rule colons
        ("fluxcd.gotk.reconcile", "fluxcd.gotk.reconcile"),  # dots are Datadog's separator
        ("CamelCase_Name", "CamelCase_Name"),  # names keep their case
        ("_private_metric", "private_metric"),  # must start with a letter
        ("__9lives", "lives"),
        (":::", ""),  # nothing usable left: the series is skipped
        ("métrique-été", "m_trique__t_"),  # ASCII only in names
        ("a" * 250, "a" * 200),
        ("x" + "_" * 250, "x" + "_" * 199),
    ],
)
def test_metric_names_follow_datadogs_rules(name: str, expected: str) -> None:
    assert normalize_metric_name(name) == expected


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("kind:HelmRelease", "kind:helmrelease"),  # lowercased, as Datadog stores it
        ("instance:10.244.1.17:8080", "instance:10.244.1.17:8080"),  # colons after the key stay
        ("url:ssh://git@github.com/acme/fleet", "url:ssh://git_github.com/acme/fleet"),
        ("le:+Inf", "le:_inf"),
        ("path:/a b?c=d", "path:/a_b_c_d"),
        ("_meta:x", "meta:x"),  # starts with a letter
        ("9key:v", "key:v"),
        ("region:zürich", "region:zürich"),  # Unicode letters are allowed
        ("emoji:🚀", "emoji:_"),
        ("key::", "key"),  # cannot end with a colon
        ("key:" + "v" * 300, "key:" + "v" * 196),  # 200 characters in all
        ("k:" + "v" * 197 + ":::", "k:" + "v" * 197),  # cut first, then no trailing colon
        ("---", ""),
    ],
)
def test_tags_follow_datadogs_rules(tag: str, expected: str) -> None:
    assert normalize_tag(tag) == expected


def test_series_tags_skip_the_name_take_the_host_and_append_static_tags() -> None:
    labels: Labels = (
        ("__name__", "up"),
        ("instance", "10.0.0.1:9100"),
        ("job", "Node"),
        ("node", "worker-1"),
        ("zone", "eu"),
    )
    tags, host = series_tags(labels, "node", ("env:prod", "zone:eu"))
    assert host == "worker-1"
    assert tags == ["instance:10.0.0.1:9100", "job:node", "zone:eu", "env:prod"]  # deduplicated
    assert series_tags(labels, None) == (
        ["instance:10.0.0.1:9100", "job:node", "node:worker-1", "zone:eu"],
        "",
    )


C, G, H, S, GH, U = (
    MetricType.COUNTER,
    MetricType.GAUGE,
    MetricType.HISTOGRAM,
    MetricType.SUMMARY,
    MetricType.GAUGEHISTOGRAM,
    MetricType.UNKNOWN,
)


@pytest.mark.parametrize(
    ("name", "series_type", "families", "expected"),
    [
        # name suffixes only
        ("http_requests_total", None, {}, Kind.COUNTER),
        ("rpc_duration_seconds_count", None, {}, Kind.COUNTER),
        ("rpc_duration_seconds_sum", None, {}, Kind.COUNTER),
        ("rpc_duration_seconds_bucket", None, {}, Kind.COUNTER),
        (
            "http_requests_created",
            None,
            {},
            Kind.GAUGE,
        ),  # by name alone: kube_pod_created is a gauge
        ("kube_pod_created", None, {}, Kind.GAUGE),
        ("gotk_reconcile_condition", None, {}, Kind.GAUGE),
        ("node_memory_MemTotal_bytes", None, {}, Kind.GAUGE),
        # v1 family metadata, exact and by part
        ("process_restarts", None, {"process_restarts": C}, Kind.COUNTER),  # no _total
        ("queue_count", None, {"queue_count": G}, Kind.GAUGE),  # a gauge despite _count
        ("kube_pod_created", None, {"kube_pod_created": G}, Kind.GAUGE),  # KSM's gauge
        ("http_requests_total", None, {"http_requests": C}, Kind.COUNTER),
        ("http_requests_created", None, {"http_requests": C}, Kind.DROP),
        ("latency_bucket", None, {"latency": H}, Kind.COUNTER),
        ("latency_sum", None, {"latency": H}, Kind.COUNTER),
        ("latency_created", None, {"latency": H}, Kind.DROP),
        ("rpc_seconds", None, {"rpc_seconds": S}, Kind.GAUGE),  # summary quantiles
        ("rpc_seconds_count", None, {"rpc_seconds": S}, Kind.COUNTER),
        ("queue_bucket", None, {"queue": GH}, Kind.GAUGE),  # gauge histogram parts
        ("queue_gcount", None, {"queue": GH}, Kind.GAUGE),
        ("odd_total", None, {"odd": G}, Kind.COUNTER),  # a gauge family owns no _total part
        ("mystery_total", None, {"mystery_total": U}, Kind.COUNTER),  # unknown: suffixes
        # v2 per-series metadata wins
        ("restarts", C, {}, Kind.COUNTER),
        ("temperature_total", G, {}, Kind.GAUGE),
        ("latency_bucket", H, {}, Kind.COUNTER),
        ("rpc_seconds", S, {"rpc_seconds": C}, Kind.GAUGE),
        ("weird_total", U, {}, Kind.COUNTER),
    ],
)
def test_kind_resolution(
    name: str,
    series_type: MetricType | None,
    families: dict[str, MetricType],
    expected: Kind,
) -> None:
    assert resolve_kind(name, series_type, families) is expected


_NOW = 1_764_000_000_000


@pytest.mark.parametrize(
    ("last", "ts", "value", "expected"),
    [
        (None, _NOW, 5.0, (None, COUNTER_FIRST)),  # nothing to subtract from yet
        ((_NOW - 1000, 5.0), _NOW, 8.0, (3.0, "")),
        ((_NOW - 1000, 5.0), _NOW, 5.0, (0.0, "")),  # no increase is a zero count, a point
        ((_NOW - 1000, 5.0), _NOW, 2.0, (2.0, "")),  # a reset: the value is the increase
        ((_NOW - 1000, 5.0), _NOW, 0.0, (0.0, "")),
        ((_NOW, 5.0), _NOW, 9.0, (None, OUT_OF_ORDER)),  # same timestamp: a resend
        ((_NOW, 5.0), _NOW - 1000, 1.0, (None, OUT_OF_ORDER)),  # older than the last one seen
    ],
)
def test_a_counter_sample_is_sent_as_its_increase_since_the_last_one(
    last: tuple[int, float] | None, ts: int, value: float, expected: tuple[float | None, str]
) -> None:
    labels: Labels = (("__name__", "req_total"),)
    counters = CounterStore()
    if last is not None:
        counters.commit(labels, last, 0.0)
    item = Series(labels, (Sample(value, ts),), metadata=Metadata(MetricType.COUNTER))
    mapped = map_batch(Batch((item,)), MappingOptions(), TypeCache(), counters, _NOW)
    delta, reason = expected
    if delta is None:
        assert [s.points for s in mapped.series] in ([], [[]])
        assert mapped.skipped == {reason: 1}
    else:
        (only,) = mapped.series
        assert only.points == [(ts // 1000, delta)] and only.type == TYPE_COUNT
        assert not mapped.skipped


def _series(name: str, samples: list[tuple[float, int]], **labels: str) -> Series:
    return Series(
        tuple(sorted({"__name__": name, **labels}.items())),
        tuple(Sample(v, t) for v, t in samples),
    )


def _map(
    batch: Batch,
    counters: CounterStore | None = None,
    types: TypeCache | None = None,
    options: MappingOptions | None = None,
) -> tuple[list[dict[str, object]], dict[bytes, tuple[int, float]], dict[str, int]]:
    mapped = map_batch(
        batch, options or MappingOptions(), types or TypeCache(), counters or CounterStore(), NOW_MS
    )
    return [s.to_dict() for s in mapped.series], mapped.updates, dict(mapped.skipped)


def test_a_gauge_becomes_a_type_3_series_with_seconds_tags_and_a_host() -> None:
    batch = Batch(
        (
            _series(
                "gotk_reconcile_condition",
                [(1.0, NOW_MS - 1500), (0.0, NOW_MS)],
                kind="HelmRelease",
                node="n1",
            ),
        )
    )
    series, updates, skipped = _map(
        batch, options=MappingOptions(host_label="node", static_tags=("env:test",))
    )
    assert series == [
        {
            "metric": "gotk_reconcile_condition",
            "type": TYPE_GAUGE,
            "points": [
                {"timestamp": NOW_S - 2, "value": 1.0},  # milliseconds floored to seconds
                {"timestamp": NOW_S, "value": 0.0},
            ],
            "tags": ["kind:helmrelease", "env:test"],
            "resources": [{"name": "n1", "type": "host"}],
        }
    ]
    assert updates == {} and skipped == {}


def test_counter_deltas_across_batches_with_a_reset_once_committed() -> None:
    counters = CounterStore()
    values = [(10.0, NOW_MS - 60_000), (15.0, NOW_MS - 45_000)]
    series, _, skipped = _map(Batch((_series("req_total", values),)), counters)
    # The first sample only sets the baseline.
    assert series[0]["points"] == [{"timestamp": NOW_S - 45, "value": 5.0}]
    assert series[0]["type"] == TYPE_COUNT and series[0]["interval"] == 15
    assert skipped == {COUNTER_FIRST: 1}
    assert len(counters) == 0  # mapping commits nothing
    # Mapped again (a retry without the client's plan cache) gives the same deltas.
    assert _map(Batch((_series("req_total", values),)), counters)[0] == series
    counters.commit((("__name__", "req_total"),), (NOW_MS - 45_000, 15.0), NOW_S)
    later = [(18.0, NOW_MS - 30_000), (3.0, NOW_MS - 15_000), (7.0, NOW_MS)]  # reset in between
    series, _, skipped = _map(Batch((_series("req_total", later),)), counters)
    points = series[0]["points"]
    assert isinstance(points, list)
    assert [p["value"] for p in points] == [3.0, 3.0, 4.0]
    assert skipped == {}


def test_counters_as_gauges_send_the_cumulative_value() -> None:
    batch = Batch((_series("req_total", [(10.0, NOW_MS)]),))
    series, _, _ = _map(batch, options=MappingOptions(counters_as_count=False))
    assert series == [
        {"metric": "req_total", "type": TYPE_GAUGE, "points": [{"timestamp": NOW_S, "value": 10.0}]}
    ]


def test_skipped_samples_are_counted_by_reason() -> None:
    hour = 3600 * 1000
    batch = Batch(
        (
            _series("g", [(STALE_NAN, NOW_MS - 3000), (math.nan, NOW_MS - 2000)]),
            _series("g2", [(math.inf, NOW_MS - 1000), (1.0, NOW_MS - hour - 1)]),
            _series("g3", [(1.0, NOW_MS + 601_000), (2.0, NOW_MS + 599_000)]),
            _series("req_created", [(1.7e9, NOW_MS)]),
            _series(":::", [(1.0, NOW_MS)]),
            Series((("__name__", "lat"),), histograms=(Histogram(NOW_MS, count_value=3),)),
        ),
        (FamilyMetadata("req", MetricType.COUNTER),),  # req_created: a counter's creation time
    )
    series, _, skipped = _map(batch)
    assert [(s["metric"], s["points"]) for s in series] == [
        ("g3", [{"timestamp": NOW_S + 599, "value": 2.0}])
    ]
    assert skipped == {
        "stale": 1,
        "not_finite": 2,
        "too_old": 1,
        "too_new": 1,
        "created": 1,
        "invalid_name": 1,
        "native_histogram": 1,
    }


def test_a_counter_too_old_to_send_still_moves_its_baseline() -> None:
    hour = 3600 * 1000
    counters = CounterStore()
    counters.commit((("__name__", "c_total"),), (NOW_MS - 2 * hour, 1.0), NOW_S)
    batch = Batch((_series("c_total", [(50.0, NOW_MS - hour - 5000), (52.0, NOW_MS)]),))
    series, updates, skipped = _map(batch, counters)
    # Not a spike of 51 at the first sendable point: the increase since the last one seen.
    assert series[0]["points"] == [{"timestamp": NOW_S, "value": 2.0}]
    assert skipped == {"too_old": 1}
    assert updates == {}


def test_observations_without_points_are_returned_as_updates() -> None:
    batch = Batch((_series("c_total", [(5.0, NOW_MS)], pod="a"),))
    series, updates, skipped = _map(batch)
    assert series == []
    assert updates == {counter_key((("__name__", "c_total"), ("pod", "a"))): (NOW_MS, 5.0)}
    assert skipped == {COUNTER_FIRST: 1}


def test_types_come_from_v1_family_metadata_and_v2_series_metadata() -> None:
    types = TypeCache()
    counters = CounterStore()
    for key in ((("__name__", "restarts"),), (("__name__", "temp_total"),)):
        counters.commit(key, (NOW_MS - 1000, 1.0), NOW_S)
    batch = Batch(
        (
            _series("restarts", [(3.0, NOW_MS)]),  # typed by the batch's own metadata
            Series(
                (("__name__", "temp_total"),),
                (Sample(3.0, NOW_MS),),
                metadata=Metadata(MetricType.GAUGE),
            ),
        ),
        (FamilyMetadata("restarts", MetricType.COUNTER),),
    )
    series, _, _ = _map(batch, counters, types)
    assert [(s["metric"], s["type"], s["points"][0]["value"]) for s in series] == [  # type: ignore[index]
        ("restarts", TYPE_COUNT, 2.0),
        ("temp_total", TYPE_GAUGE, 3.0),
    ]
    assert types.types == {"restarts": MetricType.COUNTER}  # kept for later batches


def test_classic_histogram_and_summary_parts() -> None:
    counters = CounterStore()
    names = ["lat_bucket", "lat_sum", "lat_count", "rpc", "rpc_sum"]
    for name in names:
        counters.commit((("__name__", name),), (NOW_MS - 1000, 1.0), NOW_S)
    batch = Batch(
        tuple(_series(n, [(4.0, NOW_MS)]) for n in names),
        (FamilyMetadata("lat", MetricType.HISTOGRAM), FamilyMetadata("rpc", MetricType.SUMMARY)),
    )
    series, _, _ = _map(batch, counters)
    assert {s["metric"]: (s["type"], s["points"][0]["value"]) for s in series} == {  # type: ignore[index]
        "lat_bucket": (TYPE_COUNT, 3.0),
        "lat_sum": (TYPE_COUNT, 3.0),
        "lat_count": (TYPE_COUNT, 3.0),
        "rpc": (TYPE_GAUGE, 4.0),  # a quantile
        "rpc_sum": (TYPE_COUNT, 3.0),
    }


def test_a_series_met_twice_in_merged_entries_is_one_datadog_series() -> None:
    counters = CounterStore()
    counters.commit((("__name__", "c_total"),), (NOW_MS - 3000, 1.0), NOW_S)
    batch = Batch(
        (
            _series("c_total", [(2.0, NOW_MS - 2000)]),
            _series("other", [(1.0, NOW_MS)]),
            _series("c_total", [(4.0, NOW_MS - 1000), (3.0, NOW_MS - 1500)]),  # one late
        )
    )
    series, _, skipped = _map(batch, counters)
    assert series[0]["points"] == [
        {"timestamp": NOW_S - 2, "value": 1.0},
        {"timestamp": NOW_S - 1, "value": 2.0},
    ]
    assert skipped == {OUT_OF_ORDER: 1}


def test_counter_store_is_bounded_in_size_and_time_and_never_goes_back() -> None:
    store = CounterStore(max_series=2, ttl=60)
    a, b, c = ((("__name__", n),) for n in "abc")
    store.commit(a, (1000, 1.0), 0)
    store.commit(b, (1000, 1.0), 30)
    store.commit(c, (1000, 1.0), 40)  # beyond max_series: a (least recently committed) goes
    assert store.get(a) is None and len(store) == 2
    store.commit(b, (500, 9.0), 50)  # older than what is kept: kept value stays, seen refreshed
    assert store.get(b) == (1000, 1.0)
    assert store.expire(105) == 1  # c not committed for more than 60 s
    assert store.get(c) is None and store.get(b) == (1000, 1.0)


def test_type_cache_is_bounded() -> None:
    cache = TypeCache(max_families=2)
    cache.observe(FamilyMetadata(n, MetricType.COUNTER) for n in ("a", "b", "c"))
    cache.observe([FamilyMetadata("u", MetricType.UNKNOWN)])
    assert dict(cache.types) == {"b": MetricType.COUNTER, "c": MetricType.COUNTER}


def test_splitting_a_counter_series_keeps_each_halfs_state() -> None:
    s = MappedSeries(
        counter_key((("__name__", "c"),)),
        "c",
        TYPE_COUNT,
        [],
        "",
        points=[(1, 1.0), (2, 1.0), (3, 1.0)],
        marks=[(1000, 2.0), (2000, 3.0), (3000, 4.0)],
        final=(4000, 4.0),
    )
    first, second = s.split()
    assert (first.points, first.final) == ([(1, 1.0)], (1000, 2.0))
    assert (second.points, second.final) == ([(2, 1.0), (3, 1.0)], (4000, 4.0))


@given(st.lists(st.integers(0, 90), max_size=40), st.integers(20, 300))
def test_grouping_takes_as_many_parts_as_fit(sizes: list[int], limit: int) -> None:
    """Each range is the longest run from where the previous ended whose request fits the
    limit (one part alone when it does not fit by itself), and the ranges cover every part."""
    parts = [b"x" * size for size in sizes]
    ranges = group(parts, limit)
    assert [index for start, end in ranges for index in range(start, end)] == list(
        range(len(parts))
    )
    for start, end in ranges:
        size = Piece([], parts[start:end]).raw_size
        assert size == len(Piece([], parts[start:end]).raw())
        assert size <= limit or end == start + 1
        if end < len(parts):  # one part more would not fit
            assert Piece([], parts[start : end + 1]).raw_size > limit


def test_grouping_respects_the_uncompressed_limit() -> None:
    parts = [b"x" * 40, b"y" * 40, b"z" * 40, b"w" * 200]
    ranges = group(parts, 100)
    assert ranges == [(0, 2), (2, 3), (3, 4)]  # a part too big alone still gets a range
    for start, end in ranges[:2]:
        assert Piece([], parts[start:end]).raw_size <= 100
    assert Piece([], parts[0:2]).raw_size == len(Piece([], parts[0:2]).raw())
