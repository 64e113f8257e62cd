"""The text exposition /federate and ``gotk-relay rewrite`` print: what a scraper reads back.

Every point comes back from prometheus-client's parser (the one the Datadog Agent's OpenMetrics
checks build on) with its labels, value and timestamp; each family is written once, under the
name the text format wants on its ``# TYPE`` line, with the type and HELP its metadata give,
whether remote write named the family as the text format does (``x_total`` counters) or as
OpenMetrics does (``x``), and whether the series came sorted or not.
"""

from __future__ import annotations

import math
import random
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gotk_relay.model import FamilyMetadata, Labels, MetricType, family_name
from gotk_relay.wire import text
from tests.support.rig import require_binary

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
VALUES = st.text(st.characters(codec="utf-8"), max_size=12)
FLOATS = st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf, -0.0])


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


@st.composite
def points(draw: st.DrawFn) -> list[tuple[Labels, float, int | None]]:
    out: dict[Labels, tuple[float, int | None]] = {}
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(["up", "x_total", "h_bucket", "h_sum", "h_count", "s"]))
        extra = draw(st.dictionaries(NAMES.filter(lambda k: k != "__name__"), VALUES, max_size=3))
        if name == "h_bucket":
            extra["le"] = draw(st.sampled_from(["0.5", "1", "+Inf"]))
        labels = tuple(sorted({**extra, "__name__": name}.items()))
        ts = draw(st.none() | st.integers(0, 2**45))
        out[labels] = (draw(FLOATS), ts)
    return [(labels, value, ts) for labels, (value, ts) in out.items()]


METADATA = st.fixed_dictionaries(
    {},
    optional={
        "x_total": st.just(FamilyMetadata("x_total", MetricType.COUNTER, "a counter")),
        "h": st.just(FamilyMetadata("h", MetricType.HISTOGRAM, 'a "histogram"\nhelp \\')),
        "s": st.just(FamilyMetadata("s", MetricType.GAUGE, "")),
        "up": st.just(FamilyMetadata("up", MetricType.GAUGE, "up")),
    },
)


@given(points(), METADATA, st.randoms())
def test_a_scraper_reads_back_every_point_and_each_family_once(
    given_points: list[tuple[Labels, float, int | None]],
    metadata: dict[str, FamilyMetadata],
    rng: random.Random,
) -> None:
    rng.shuffle(given_points)
    rendered = text.render(given_points, metadata)
    families = list(text_string_to_metric_families(rendered))
    assert len({f.name for f in families}) == len(families), rendered
    got = {
        (s.name, tuple(sorted(s.labels.items()))): (
            _bits(s.value),
            None if s.timestamp is None else round(float(s.timestamp) * 1000),
            family.type,
            family.documentation,
        )
        for family in families
        for s in family.samples
    }
    want = {}
    for labels, value, ts in given_points:
        name = dict(labels)["__name__"]
        info = text.family_of(name, metadata)
        kind = {
            MetricType.COUNTER: "counter",
            MetricType.HISTOGRAM: "histogram",
            MetricType.GAUGE: "gauge",
        }.get(info.type if info else MetricType.UNKNOWN, "unknown")
        key = (name, tuple((k, v) for k, v in labels if k != "__name__"))
        want[key] = (_bits(value), ts, kind, info.help if info else "")
    assert got == want, rendered


@pytest.mark.parametrize(
    ("family", "series", "mtype"),
    [
        ("x", "x_total", MetricType.COUNTER),  # OpenMetrics names a counter family without it
        ("x_total", "x_total", MetricType.COUNTER),  # the text format with it
        ("h", "h_bucket", MetricType.HISTOGRAM),
        ("h", "h_count", MetricType.HISTOGRAM),
        ("s", "s", MetricType.SUMMARY),
        ("s", "s_sum", MetricType.SUMMARY),
        ("g_count", "g_count", MetricType.GAUGE),
        ("i", "i_info", MetricType.INFO),  # OpenMetrics names an info family without it
        # kube-state-metrics, asked for OpenMetrics, types its info families by the series'
        # own name (# TYPE gotk_resource_info info).
        ("gotk_resource_info", "gotk_resource_info", MetricType.INFO),
    ],
)
def test_a_series_finds_its_family(family: str, series: str, mtype: MetricType) -> None:
    meta = FamilyMetadata(family, mtype, "help")
    assert text.family_of(series, {family: meta}) == meta
    if mtype not in (MetricType.COUNTER, MetricType.INFO):
        assert family_name(series, mtype) == family


def test_a_series_named_as_no_family_of_its_type_has_none() -> None:
    histogram = {"h": FamilyMetadata("h", MetricType.HISTOGRAM)}
    assert text.family_of("h", histogram) is None
    assert text.family_of("h_total", histogram) is None
    assert text.family_of("up", histogram) is None


def test_promtool_reads_a_histogram_a_summary_and_counters_named_both_ways() -> None:
    metadata = {
        "h_seconds": FamilyMetadata("h_seconds", MetricType.HISTOGRAM, "h."),
        "q_seconds": FamilyMetadata("q_seconds", MetricType.SUMMARY, "q."),
        "a": FamilyMetadata("a", MetricType.COUNTER, "a, OpenMetrics-named."),
        "b_total": FamilyMetadata("b_total", MetricType.COUNTER, "b, text-named."),
    }
    rendered = text.render(
        [
            ((("__name__", "h_seconds_bucket"), ("le", "+Inf")), 2.0, 1),
            ((("__name__", "a_total"),), 1.0, 1),
            ((("__name__", "q_seconds"), ("quantile", "0.9")), 0.5, 1),
            ((("__name__", "h_seconds_count"),), 2.0, 1),
            ((("__name__", "b_total"),), 3.0, 1),
            ((("__name__", "q_seconds_count"),), 4.0, 1),
            ((("__name__", "h_seconds_sum"),), 0.25, 1),
            ((("__name__", "q_seconds_sum"),), 1.5, 1),
        ],
        metadata,
    )
    done = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr + rendered
    assert rendered.count("# TYPE") == 4


def test_an_info_family_named_as_its_series_is_served_as_a_gauge() -> None:
    """What kube-state-metrics types ``info`` (asked for OpenMetrics, as Prometheus and the
    relay ask) is a gauge in the text format, with its help: served ``untyped``, the Datadog
    Agent's OpenMetrics check would skip the family."""
    info = FamilyMetadata("gotk_resource_info", MetricType.INFO, "The state of a Flux object.")
    rendered = text.render(
        [((("__name__", "gotk_resource_info"), ("name", "a")), 1.0, None)],
        {"gotk_resource_info": info},
    )
    assert rendered == (
        "# HELP gotk_resource_info The state of a Flux object.\n"
        "# TYPE gotk_resource_info gauge\n"
        'gotk_resource_info{name="a"} 1.0\n'
    )
