"""The scrape input's pure parts: an exposition → the series Prometheus 2.x would append (target
labels, honor_labels, honor_timestamps, metric relabeling, limits), stale markers and report
series, targets from ``scrape_configs``, and the config errors that name the key."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.config import ConfigError, load_text
from gotk_relay.model import (
    STALE_NAN_BITS,
    Labels,
    MetricType,
    Sample,
    Series,
    float_bits,
    is_stale,
)
from gotk_relay.rules.relabel import RelabelConfig, compile_rules
from gotk_relay.scrape.parse import Limits, Scraped, ScrapeError, merge_labels, parse
from gotk_relay.scrape.staleness import (
    Report,
    append,
    report_series,
    series_added,
    stale_markers,
)
from gotk_relay.scrape.targets import targets_of

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TARGET = (("instance", "ksm:8080"), ("job", "ksm"))
KSM_LINE = (
    'gotk_resource_info{customresource_group="kustomize.toolkit.fluxcd.io",'
    'customresource_kind="Kustomization",customresource_version="v1",'
    'exported_namespace="flux-system",name="flux-system",ready="True",suspended="false"} 1\n'
)


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


# --------------------------------------------------------------------------------------------
# Target labels


@pytest.mark.parametrize(
    ("scraped", "target", "honor", "expected"),
    [
        ({"a": "1"}, TARGET, False, {"a": "1", "instance": "ksm:8080", "job": "ksm"}),
        # KSM's own `namespace` clashes with a target label: it becomes exported_namespace.
        (
            {"namespace": "apps"},
            (*TARGET, ("namespace", "monitoring")),
            False,
            {
                "exported_namespace": "apps",
                "namespace": "monitoring",
                "instance": "ksm:8080",
                "job": "ksm",
            },
        ),
        (
            {"job": "inner", "exported_job": "taken"},
            TARGET,
            False,
            {
                "exported_exported_job": "inner",
                "exported_job": "taken",
                "job": "ksm",
                "instance": "ksm:8080",
            },
        ),
        ({"job": "inner"}, TARGET, True, {"job": "inner", "instance": "ksm:8080"}),
        # A label exposed empty is present to honor_labels (Prometheus 2.42's Has): the
        # target's value is not set, and the empty one is dropped: no job at all.
        ({"job": ""}, TARGET, True, {"instance": "ksm:8080"}),
        ({"job": "", "a": ""}, TARGET, False, {"job": "ksm", "instance": "ksm:8080"}),
    ],
    ids=["plain", "namespace_clash", "exported_taken", "honor_labels", "honor_empty", "empty"],
)
def test_target_labels_merge_as_prometheus(
    scraped: dict[str, str],
    target: tuple[tuple[str, str], ...],
    honor: bool,
    expected: dict[str, str],
) -> None:
    assert merge_labels(scraped, target, honor) == tuple(sorted(expected.items()))


# --------------------------------------------------------------------------------------------
# Parsing

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in ("job", "instance") and not n.startswith("exported_")
)
_values = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_floats = st.floats(allow_nan=False)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render(series: dict[str, tuple[dict[str, str], float]]) -> str:
    lines = []
    for name, (lbls, value) in series.items():
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in lbls.items())
        lines += [f"# TYPE {name} gauge", f"{name}{{{inner}}} {value!r}"]
    return "\n".join(lines) + "\n"


@given(
    st.dictionaries(
        _names.map(lambda n: f"m_{n}"),
        st.tuples(st.dictionaries(_names, _values, max_size=4), _floats),
        min_size=1,
        max_size=6,
    ),
    st.integers(min_value=0, max_value=2**42),
)
def test_every_sample_is_kept_with_its_exact_value_at_the_scrape_time(
    series: dict[str, tuple[dict[str, str], float]], scrape_ms: int
) -> None:
    scraped = parse(_render(series).encode(), TEXT, scrape_ms, TARGET)
    got = {s.labels: s.samples for s in scraped.series}
    assert scraped.samples_scraped == len(series)
    assert len(got) == len(series)
    for name, (lbls, value) in series.items():
        key = labels(__name__=name, **lbls, job="ksm", instance="ksm:8080")
        ((sample,),) = [got[key]]
        assert sample.timestamp == scrape_ms
        assert float_bits(sample.value) == float_bits(float(value))
    assert {(m.family, m.type) for m in scraped.metadata} == {(n, MetricType.GAUGE) for n in series}


def test_ksm_text_keeps_its_labels_and_metadata() -> None:
    body = (
        "# HELP gotk_resource_info The current state of a Flux resource.\n"
        "# TYPE gotk_resource_info gauge\n" + KSM_LINE
    ).encode()
    scraped = parse(body, TEXT, 1000, TARGET)
    (series,) = scraped.series
    assert dict(series.labels)["exported_namespace"] == "flux-system"
    assert dict(series.labels)["job"] == "ksm"
    (meta,) = scraped.metadata
    assert meta.family == "gotk_resource_info"
    assert meta.type == MetricType.GAUGE
    assert meta.help == "The current state of a Flux resource."


@pytest.mark.parametrize(
    ("body", "content_type", "names", "family"),
    [
        ("# TYPE foo counter\nfoo 1\n", TEXT, ["foo"], "foo"),
        ("# TYPE foo_total counter\nfoo_total 1\n", TEXT, ["foo_total"], "foo_total"),
        (
            "# TYPE foo counter\nfoo_total 1\nfoo_created 5\n# EOF\n",
            OM,
            ["foo_total", "foo_created"],
            "foo",
        ),
        (
            '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n',
            TEXT,
            ["h_bucket", "h_sum", "h_count"],
            "h",
        ),
    ],
    ids=["text_counter", "text_counter_total", "om_counter_created_kept", "histogram"],
)
def test_names_are_kept_as_exposed_and_metadata_under_the_family(
    body: str, content_type: str, names: list[str], family: str
) -> None:
    scraped = parse(body.encode(), content_type, 1000, TARGET)
    assert [s.name for s in scraped.series] == names
    assert [m.family for m in scraped.metadata] == [family]


def test_samples_without_comment_lines_have_no_metadata() -> None:
    """Prometheus' scrape cache holds metadata for what a HELP, TYPE or UNIT line describes:
    a family of bare samples has none to send (an ``unknown`` entry would tell a converter
    the family is untyped, when nothing was said). A HELP alone says something."""
    body = "# HELP helped Some help.\nhelped 1\nbare_total 2\n# TYPE x untyped\nx 3\n"
    scraped = parse(body.encode(), TEXT, 1000, TARGET)
    assert [s.name for s in scraped.series] == ["helped", "bare_total", "x"]
    assert [(m.family, m.type, m.help) for m in scraped.metadata] == [
        ("helped", MetricType.UNKNOWN, "Some help.")
    ]


NOW_MS = 1_700_000_060_000  # the scrape's start in the tests of timestamps


@pytest.mark.parametrize(
    ("honor", "content_type", "body", "timestamp"),
    [
        (True, TEXT, "a 1 1700000000123\n", 1700000000123),
        (False, TEXT, "a 1 1700000000123\n", NOW_MS),
        (True, OM, "a 1 1700000000.123\n# EOF\n", 1700000000123),
        (True, TEXT, "a 1\n", NOW_MS),
    ],
    ids=["text_honored", "text_ignored", "om_honored", "none_given"],
)
def test_timestamps_are_the_scrapes_unless_honored(
    honor: bool, content_type: str, body: str, timestamp: int
) -> None:
    scraped = parse(body.encode(), content_type, NOW_MS, TARGET, honor_timestamps=honor)
    (series,) = scraped.series
    assert series.samples[0].timestamp == timestamp
    # A series with its own timestamp is not tracked for staleness (Prometheus 2.x).
    assert (series.labels in scraped.timestamped) == (timestamp != NOW_MS)
    assert scraped.too_far_ahead == 0


@pytest.mark.parametrize("content_type", [TEXT, OM])
def test_a_timestamp_over_ten_minutes_ahead_is_left_out_not_the_scrape(content_type: str) -> None:
    """Prometheus' appender refuses a sample more than 10 minutes ahead of its clock (and
    takes a later line of the same series); the rest of the scrape is appended, and the
    sample still counts as scraped and as left by the rules."""
    ahead, edge = NOW_MS + 600_001, NOW_MS + 600_000
    if content_type == OM:
        body = f"a 1 {ahead / 1000}\nb 2 {edge / 1000}\nc 3\n# EOF\n"
    else:
        body = f"a 1 {ahead}\nb 2 {edge}\nc 3\na 4\n"
    scraped = parse(body.encode(), content_type, NOW_MS, TARGET)
    got = {s.name: (s.samples[0].value, s.samples[0].timestamp) for s in scraped.series}
    expected = {"b": (2.0, edge), "c": (3.0, NOW_MS)}
    if content_type == TEXT:
        expected["a"] = (4.0, NOW_MS)  # the second line of a: appended, as in Prometheus
    assert got == expected
    assert scraped.too_far_ahead == 1
    assert (
        scraped.samples_scraped
        == scraped.samples_post_relabeling
        == len(body.splitlines()) - (content_type == OM)
    )


def test_metric_relabeling_runs_after_the_target_labels() -> None:
    rules = compile_rules(
        [
            RelabelConfig(source_labels=("job", "__name__"), regex="ksm;drop_.*", action="drop"),
        ]
    )
    scraped = parse(b"keep_me 1\ndrop_me 2\n", TEXT, 1000, TARGET, rules=rules)
    assert [s.name for s in scraped.series] == ["keep_me"]
    assert scraped.samples_scraped == 2


@pytest.mark.parametrize(
    ("body", "content_type", "limits", "reason"),
    [
        (b"a 1\nb 1\nc 1\n", TEXT, Limits(sample_limit=2), "sample_limit"),
        (b'a{x="1",y="2"} 1\n', TEXT, Limits(label_limit=3), "label_limit"),
        (b'a{long_name="1"} 1\n', TEXT, Limits(label_name_length_limit=4), "label_limit"),
        (b'a{x="long value"} 1\n', TEXT, Limits(label_value_length_limit=4), "label_limit"),
        # Lengths in UTF-8 bytes, as Go counts them: 3 characters, 6 bytes.
        ('a{x="ééé"} 1\n'.encode(), TEXT, Limits(label_value_length_limit=5), "label_limit"),
        # Every line appended counts, a duplicate too (Prometheus' limit appender).
        (b"a 1\na 2\n", TEXT, Limits(sample_limit=1), "sample_limit"),
        (b"a{x=1} 1\n", TEXT, Limits(), "parse"),
        (b"\xff\xfe 1\n", TEXT, Limits(), "parse"),
        (b"a 1\n", OM, Limits(), "parse"),  # no # EOF
        # A sample too far ahead is not appended, but its labels are judged first.
        (
            b'a{toolongname="v"} 1 99999999999999\nb 2\n',
            TEXT,
            Limits(label_name_length_limit=8),
            "label_limit",
        ),
    ],
    ids=[
        "sample_limit",
        "label_limit",
        "name_length",
        "value_length",
        "value_length_bytes",
        "sample_limit_duplicates",
        "syntax",
        "utf8",
        "om_eof",
        "too_far_ahead",
    ],
)
def test_a_breach_fails_the_whole_scrape(
    body: bytes, content_type: str, limits: Limits, reason: str
) -> None:
    with pytest.raises(ScrapeError) as caught:
        parse(body, content_type, 1000, TARGET, limits=limits)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_a_duplicate_series_keeps_the_first_sample() -> None:
    scraped = parse(b"a 1\na 2\nb 3\n", TEXT, 1000, TARGET)
    assert [s.samples[0].value for s in scraped.series] == [1.0, 3.0]
    # Reported as Prometheus counts appends: every line after relabeling.
    assert (scraped.samples_scraped, scraped.samples_post_relabeling) == (3, 3)


def test_relabeling_that_leaves_no_name_fails_the_scrape() -> None:
    """Prometheus fails the scrape ("missing metric name"); a series silently dropped would
    leave up at 1 with nothing scraped."""
    rules = compile_rules([RelabelConfig(regex="__name__", action="labeldrop")])
    with pytest.raises(ScrapeError, match="without __name__") as caught:
        parse(b"a 1\n", TEXT, 1000, TARGET, rules=rules)
    assert caught.value.reason == "parse"
    dropped = compile_rules([RelabelConfig(source_labels=["__name__"], regex="a", action="drop")])
    assert parse(b"a 1\nb 2\n", TEXT, 1000, TARGET, rules=dropped).samples_post_relabeling == 1
    # No label left at all is how Prometheus' relabeling says "dropped": the series goes,
    # the scrape does not fail.
    emptied = compile_rules([RelabelConfig(regex=".+", action="labeldrop")])
    scraped = parse(b"a 1\nb 2\n", TEXT, 1000, TARGET, rules=emptied)
    assert (scraped.series, scraped.samples_scraped, scraped.samples_post_relabeling) == ((), 2, 0)


def test_nan_is_gos_nan() -> None:
    """``NaN`` in an exposition is the value Go's ParseFloat gives (0x7ff8000000000001), as
    Prometheus stores it; never a stale marker."""
    (series,) = parse(b"a NaN\n", TEXT, 1000, TARGET).series
    assert float_bits(series.samples[0].value) == 0x7FF8000000000001


# --------------------------------------------------------------------------------------------
# Staleness and report series

_label_sets = st.frozensets(
    st.lists(st.tuples(_names, _names), max_size=3).map(lambda kv: tuple(sorted(set(kv)))),
    max_size=8,
)


@given(_label_sets, _label_sets, st.integers(min_value=0, max_value=2**42))
def test_stale_markers_end_exactly_the_series_that_went_away(
    previous: frozenset[tuple[tuple[str, str], ...]],
    current: frozenset[tuple[tuple[str, str], ...]],
    ts: int,
) -> None:
    markers = stale_markers(sorted(previous), current, ts)
    assert {m.labels for m in markers} == previous - current
    assert len(markers) == len(previous - current)
    for marker in markers:
        ((sample,),) = [marker.samples]
        assert sample.timestamp == ts
        assert float_bits(sample.value) == STALE_NAN_BITS
    assert series_added(previous, current) == len(current - previous)


@pytest.mark.parametrize(
    ("report", "values"),
    [
        (Report(True, 0.25, 10, 8, 3), [1.0, 0.25, 10.0, 8.0, 3.0]),
        (Report(False, 1.5), [0.0, 1.5, 0.0, 0.0, 0.0]),
    ],
    ids=["up", "down"],
)
def test_each_scrape_writes_the_five_report_series(report: Report, values: list[float]) -> None:
    series = report_series(TARGET, report, 7000)
    assert [s.name for s in series] == [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ]
    assert [s.samples[0].value for s in series] == values
    assert {s.samples[0].timestamp for s in series} == {7000}
    assert all(dict(s.labels).keys() == {"__name__", "job", "instance"} for s in series)


_scrapes = st.lists(
    st.tuples(
        st.none() | st.frozensets(st.sampled_from(["a", "b", "c", "d"])),  # None: it failed
        st.booleans(),  # whether the relay took the batch (False: dropped, queue full)
    ),
    min_size=1,
    max_size=12,
)


@given(_scrapes)
def test_after_each_scrape_taken_the_receiver_sees_exactly_that_scrape(
    scrapes: list[tuple[frozenset[str] | None, bool]],
) -> None:
    """Whatever the sequence of scrapes, failures and dropped batches: after each batch the relay
    takes, a series' last value is live exactly when that scrape has it (samples and report
    series), and no series gets a stale marker it did not need (two in a row)."""
    written: dict[Labels, None] = {}
    stream: dict[Labels, list[float]] = {}
    for step, (names, taken) in enumerate(scrapes):
        ts = 1000 * (step + 1)
        scraped = None
        if names is not None:
            series = tuple(
                Series(labels(__name__=n, job="ksm", instance="ksm:8080"), (Sample(1.0, ts),))
                for n in sorted(names)
            )
            scraped = Scraped(series, (), len(series), frozenset())
        batch, now_written = append(written, scraped, TARGET, ts, 0.01)
        if not taken:
            continue
        written = now_written
        for s in batch.series:
            ((sample,),) = [s.samples]
            assert sample.timestamp == ts
            stream.setdefault(s.labels, []).append(sample.value)
        present = {s.labels for s in batch.series if not is_stale(s.samples[0].value)}
        live = {key for key, values in stream.items() if not is_stale(values[-1])}
        assert live == present
        up = labels(__name__="up", job="ksm", instance="ksm:8080")
        assert stream[up][-1] == (0.0 if names is None else 1.0)
    for values in stream.values():
        kinds = [is_stale(v) for v in values]
        assert not any(a and b for a, b in itertools.pairwise(kinds))


# --------------------------------------------------------------------------------------------
# Targets and configuration

JOBS = """
scrape_configs:
  - job_name: ksm
    scrape_interval: 15s
    metrics_path: /metrics
    params: {{collect: [a, b]}}
    static_configs:
      - targets: [ksm.monitoring:8080, "10.0.0.2:8080"]
        labels: {{namespace: monitoring{extra}}}
"""


def test_targets_have_job_instance_and_static_labels() -> None:
    config = load_text(JOBS.format(extra=""))
    targets = sorted(targets_of(config.scrape_configs).values(), key=lambda t: t.address)
    assert [t.url for t in targets] == [
        "http://10.0.0.2:8080/metrics?collect=a&collect=b",
        "http://ksm.monitoring:8080/metrics?collect=a&collect=b",
    ]
    assert dict(targets[1].labels) == {
        "job": "ksm",
        "instance": "ksm.monitoring:8080",
        "namespace": "monitoring",
    }
    offsets = {t.offset(15.0) for t in targets}
    assert all(0 <= o < 15.0 for o in offsets)
    assert len(offsets) == 2  # spread, not all at once


def test_static_labels_override_scheme_path_and_instance_and_add_params() -> None:
    """As Prometheus 2.42 builds the URL: ``__scheme__`` and ``__metrics_path__`` override the
    job's; the job's ``params`` win over a static ``__param_`` of the same name (2.42 sets the
    label from them), and a static one the job does not set is added; names sorted, as Go's
    ``url.Values`` encodes them."""
    extra = (
        ", __scheme__: https, __metrics_path__: /x, __param_collect: c, __param_a: z, instance: ksm"
    )
    config = load_text(JOBS.format(extra=extra))
    target = sorted(targets_of(config.scrape_configs).values(), key=lambda t: t.address)[0]
    assert target.url == "https://10.0.0.2:8080/x?a=z&collect=a&collect=b"
    assert dict(target.labels) == {"job": "ksm", "instance": "ksm", "namespace": "monitoring"}


def test_a_static_metrics_path_without_its_slash_gets_one() -> None:
    """Go's url.URL writes a path that lacks its leading ``/`` with one: Prometheus scrapes
    ``/x`` for ``__metrics_path__: x``."""
    config = load_text(JOBS.format(extra=", __metrics_path__: x"))
    urls = sorted(t.url for t in targets_of(config.scrape_configs).values())
    assert urls[0].split("?")[0] == "http://10.0.0.2:8080/x"


def test_empty_special_labels_leave_the_jobs_values() -> None:
    """An empty label is no label in Prometheus' builder, so ``PopulateLabels`` fills in the
    job's scheme, path, interval and timeout, and an empty ``__param_`` adds nothing."""
    extra = (
        ', __scheme__: "", __metrics_path__: "", __param_x: "", __scrape_interval__: "",'
        ' __scrape_timeout__: ""'
    )
    config = load_text(JOBS.format(extra=extra))
    target = sorted(targets_of(config.scrape_configs).values(), key=lambda t: t.address)[0]
    assert target.url == "http://10.0.0.2:8080/metrics?collect=a&collect=b"
    assert (target.interval, target.timeout) == (15.0, 10.0)


def test_the_path_is_escaped_as_go_writes_a_url() -> None:
    """``metrics_path`` is a path: Go's url.URL escapes ``?``, ``%``, ``#`` and blanks in it
    and leaves ``$&+,/:;=@`` and ``-_.~`` as they are."""
    extra = ', __metrics_path__: "/a b/c?d=1#e%41/$&+,:;=@-_.~"'
    config = load_text(JOBS.format(extra=extra))
    target = sorted(targets_of(config.scrape_configs).values(), key=lambda t: t.address)[0]
    assert target.url == (
        "http://10.0.0.2:8080/a%20b/c%3Fd=1%23e%2541/$&+,:;=@-_.~?collect=a&collect=b"
    )


def test_scrape_interval_and_timeout_labels_set_a_targets_own() -> None:
    """``__scrape_interval__`` and ``__scrape_timeout__`` in a group's labels are the
    target's interval and timeout, as Prometheus reads them (not labels of its series)."""
    config = load_text(JOBS.format(extra=", __scrape_interval__: 1m30s, __scrape_timeout__: 20s"))
    found = {t.address: t for t in targets_of(config.scrape_configs).values()}
    target = found["10.0.0.2:8080"]
    assert (target.interval, target.timeout) == (90.0, 20.0)
    assert "__scrape_interval__" not in dict(target.labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # The job's timeout (10s) is more than this target's interval.
        (
            "{__scrape_interval__: 5s}",
            r"timeout cannot be greater than scrape interval \(10s > 5s\)",
        ),
        (
            "{__scrape_timeout__: 31s}",
            r"timeout cannot be greater than scrape interval \(31s > 30s\)",
        ),
        ("{__scrape_interval__: 0s}", "scrape interval cannot be 0"),
        ("{__scrape_timeout__: 0}", "scrape timeout cannot be 0"),
        ("{__scrape_interval__: 15}", "error parsing scrape interval: not a valid duration"),
        ("{__scrape_timeout__: 1.5s}", "error parsing scrape timeout: not a valid duration"),
        ("{__scheme__: ftp}", 'invalid scheme: "ftp"'),
    ],
)
def test_a_target_prometheus_would_drop_refuses_the_config(labels: str, message: str) -> None:
    """Prometheus drops such a target with this error at every discovery; the relay, whose
    targets are all static, refuses the configuration instead, naming the job."""
    text = f"""
scrape_configs:
  - job_name: other
    scrape_interval: 30s
    static_configs:
      - targets: [a:1]
        labels: {labels}
"""
    with pytest.raises(ConfigError, match=message):
        load_text(text)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "scrape_configs: [{job_name: a, kubernetes_sd_configs: [{role: pod}]}]",
            "scrape_configs[0]: kubernetes_sd_configs: only static_configs are supported",
        ),
        (
            "scrape_configs: [{job_name: a, relabel_configs: []}]",
            "scrape_configs[0]: relabel_configs: target relabeling is not supported",
        ),
        (
            "scrape_configs: [{job_name: a, bearer_token: x}]",
            "bearer_token: use authorization: {credentials: ...} instead",
        ),
        (
            "scrape_configs: [{job_name: a, scrape_interval: 1s, scrape_timeout: 2s}]",
            'scrape timeout greater than scrape interval for scrape config with job name "a"',
        ),
        (
            "scrape_configs: [{job_name: a}, {job_name: a}]",
            'found multiple scrape configs with job name "a"',
        ),
        (
            "scrape_configs: [{job_name: a, static_configs: [{targets: ['http://h:1/m']}]}]",
            'scrape_configs[0].static_configs[0].targets: "http://h:1/m" is not a valid target',
        ),
        (
            "scrape_configs: [{job_name: a, basic_auth: {username: u}, "
            "authorization: {credentials: c}}]",
            "at most one of basic_auth & authorization must be configured",
        ),
        (
            "scrape_configs: [{job_name: a, scrape_intervall: 1s}]",
            "scrape_configs[0].scrape_intervall: field scrape_intervall not found",
        ),
        (
            "global: {scrape_interval: 1s}",
            "global: field global not found in type config (gotk-relay has no global section",
        ),
    ],
    ids=[
        "kubernetes_sd",
        "relabel_configs",
        "bearer_token",
        "timeout_over_interval",
        "duplicate_job",
        "target_with_scheme",
        "two_auths",
        "typo",
        "global",
    ],
)
def test_what_the_relay_cannot_honour_is_refused_naming_the_key(
    yaml_text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(yaml_text, "relay.yml")
    assert message in str(caught.value)


def test_prometheus_defaults() -> None:
    (job,) = load_text("scrape_configs: [{job_name: a}]").scrape_configs
    assert (job.scrape_interval, job.timeout, job.metrics_path, job.scheme) == (
        60.0,
        10.0,
        "/metrics",
        "http",
    )
    assert (job.honor_labels, job.honor_timestamps, job.sample_limit) == (False, True, 0)
    (short,) = load_text("scrape_configs: [{job_name: a, scrape_interval: 2s}]").scrape_configs
    assert short.timeout == 2.0
    assert math.isclose(
        load_text("scrape_configs: [{job_name: a, scrape_interval: 200ms}]")
        .scrape_configs[0]
        .scrape_interval,
        0.2,
    )


# Prometheus' own expected header for its default protocols with underscore escaping
# (scrape/scrape_test.go, TestAcceptHeader): the relay validates names with the legacy scheme.
PROMETHEUS_3_DEFAULT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=underscores;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("protocols", "accept"),
    [
        (
            None,
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
        (
            "[]",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
        (
            "[OpenMetricsText1.0.0, OpenMetricsText0.0.1, PrometheusText1.0.0, "
            "PrometheusText0.0.4]",
            PROMETHEUS_3_DEFAULT,
        ),
        ("[PrometheusText0.0.4]", "text/plain;version=0.0.4;q=0.6,*/*;q=0.5"),
    ],
    ids=["unset: 2.42's", "empty: 2.42's", "prometheus-3-default", "text-only"],
)
def test_scrape_protocols_make_prometheus_accept_header(protocols: str | None, accept: str) -> None:
    keys = "" if protocols is None else f", scrape_protocols: {protocols}"
    (job,) = load_text(f"scrape_configs: [{{job_name: a{keys}}}]").scrape_configs
    assert job.accept == accept


@pytest.mark.parametrize(
    ("protocols", "message"),
    [
        (
            "[PrometheusProto, PrometheusText0.0.4]",
            "PrometheusProto: the protobuf format is not supported by gotk-relay",
        ),
        ("[PrometheusText9]", "unknown scrape protocol PrometheusText9, supported: ["),
        (
            "[PrometheusText0.0.4, PrometheusText0.0.4]",
            "duplicated protocol in scrape_protocols, got [PrometheusText0.0.4 "
            "PrometheusText0.0.4]",
        ),
    ],
    ids=["protobuf", "unknown", "duplicated"],
)
def test_scrape_protocols_are_checked_as_prometheus_checks_them(
    protocols: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(f"scrape_configs: [{{job_name: a, scrape_protocols: {protocols}}}]", "r.yml")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("body", "fails"),
    [
        (b"# built by J\xe9r\xf4me\nx 1\n", False),  # a plain comment: skipped unread
        (b"# HELP x caf\xe9\n# TYPE x gauge\nx 1\n", True),
        (b'x{a="caf\xe9"} 1\n', True),
    ],
    ids=["comment", "help", "label-value"],
)
def test_bytes_that_are_not_utf8_fail_a_scrape_only_where_prometheus_reads_text(
    body: bytes, fails: bool
) -> None:
    if fails:
        with pytest.raises(ScrapeError, match="not valid UTF-8") as caught:
            parse(body, TEXT, 1000, TARGET)
        assert caught.value.reason == "parse"
    else:
        scraped = parse(body, TEXT, 1000, TARGET)
        assert [(s.name, s.samples[0].value) for s in scraped.series] == [("x", 1.0)]
