"""The two exposition formats as Prometheus 2.42 reads them (``scrape/promtext.py``,
``scrape/openmetrics.py``).

What Prometheus refuses and takes is checked against a real Prometheus in
``tests/e2e/test_scrape_formats_e2e.py``; here each reader is held to its own contract on
generated bodies: what a well-formed exposition says is read back exactly (names, label values
with every escape, float bits, timestamps), and no text raises anything but ``TextError``.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.scrape import openmetrics, promtext
from gotk_relay.scrape.promtext import TextError, TextSample, families, parse_float

NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n != "__name__"
)
VALUES = st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf])
# ms; OpenMetrics writes them as seconds with at most three decimals.
TIMESTAMPS = st.none() | st.integers(0, 10**13)


def escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def written(sample: TextSample, seconds: bool) -> str:
    """One sample line; its timestamp in ms (the text format) or in seconds (OpenMetrics)."""
    labels = ",".join(f'{k}="{escaped(v)}"' for k, v in sample.labels.items())
    value = {math.inf: "+Inf", -math.inf: "-Inf"}.get(sample.value, repr(sample.value))
    text = sample.name + (f"{{{labels}}}" if sample.labels else "") + f" {value}"
    ts = sample.timestamp
    if ts is not None:
        text += f" {ts // 1000}.{ts % 1000:03d}" if seconds else f" {ts}"
    return text + "\n"


def go_ms(ms: int | None) -> int | None:
    """What Prometheus makes of OpenMetrics' seconds: int64(ts * 1000), float rounding and all
    (1 ms less now and then)."""
    return None if ms is None else math.trunc(float(f"{ms // 1000}.{ms % 1000:03d}") * 1000)


samples = st.builds(
    TextSample,
    NAMES,
    st.dictionaries(LABEL_NAMES, st.text(max_size=12), max_size=4),
    VALUES,
    TIMESTAMPS,
)


def read_text(text: str) -> list[TextSample]:
    return [s for *_, found in promtext.families(text) for s in found]


def read_openmetrics(text: str) -> list[TextSample]:
    return [s for *_, found in openmetrics.families(text) for s in found]


# Per format: how a body is read, how samples are written to it, and how it ends.
FORMATS: dict[str, tuple[Callable[[str], list[TextSample]], bool, str]] = {
    "text": (read_text, False, ""),
    "openmetrics": (read_openmetrics, True, "# EOF\n"),
}


@pytest.mark.parametrize("kind", list(FORMATS))
@given(found=st.lists(samples, max_size=8))
def test_what_a_well_formed_body_says_is_read_back_exactly(
    kind: str, found: list[TextSample]
) -> None:
    read, seconds, end = FORMATS[kind]
    back = read("".join(written(s, seconds) for s in found) + end)
    expected_ts = go_ms if seconds else (lambda ms: ms)
    assert [(s.name, s.labels, s.timestamp) for s in back] == [
        (s.name, s.labels, expected_ts(s.timestamp)) for s in found
    ]
    bits = [struct.pack("<d", s.value) for s in back]
    assert bits == [struct.pack("<d", s.value) for s in found]


@pytest.mark.parametrize("kind", list(FORMATS))
@given(
    text=st.text(
        alphabet=st.sampled_from(list('a_1 \t\n{}=,"#\\:+-.eEIinfNaOFTYPHL\r')), max_size=40
    )
)
def test_any_text_is_read_or_refused_with_a_text_error(kind: str, text: str) -> None:
    with contextlib.suppress(TextError):
        FORMATS[kind][0](text)


@pytest.mark.parametrize(
    ("kind", "text", "why"),
    [
        ("text", "a 1\r\n", "invalid syntax"),  # the CR is part of the value
        ("text", "a 1 -5\n", "timestamp"),
        ("text", "a 1 1.5\n", "timestamp"),
        ("text", "a 1 99999999999999999999\n", "out of range"),
        ("text", "a 1e400\n", "out of range"),
        ("text", "a 0x1F\n", "invalid syntax"),
        ("text", "a 1_000\n", "invalid syntax"),
        ("text", "a +NaN\n", "invalid syntax"),
        ("text", "a infin\n", "invalid syntax"),
        ("text", "a \u0661\n", "invalid syntax"),
        ("text", " a 1\n", "invalid metric name"),
        ("text", '{__name__="a"} 1\n', "not a valid start token"),
        ("text", 'a{x="1",x="2"} 1\n', "not unique"),
        ("text", 'a{__name__="b"} 1\n', "not unique"),
        ("text", 'a{x="1"}{y="2"} 1\n', "expected value"),
        ("text", "a{x=1} 1\n", "expected label value"),
        ("text", "a\n", "expected value"),
        ("text", "# TYPE a  gauge\n", "invalid metric type"),
        ("text", "# TYPE a gauge \n", "invalid metric type"),
        ("text", "# HELP 1a x\n", "expected metric name"),
        ("openmetrics", "a 1\n", "does not end with # EOF"),
        ("openmetrics", "a 1\n# EOF\nb 2\n", "after # EOF"),
        ("openmetrics", "\na 1\n# EOF\n", "not a valid start token"),
        ("openmetrics", "# hello\n# EOF\n", "not a valid start token"),
        ("openmetrics", "# HELP a\n# EOF\n", "not a valid start token"),
        ("openmetrics", 'a{x="1", y="2"} 1\n# EOF\n', "expected label name"),
        ("openmetrics", 'a{x="1",} 1\n# EOF\n', "expected label name"),
        ("openmetrics", "a  1\n# EOF\n", "expected value"),
        ("openmetrics", "a 1\r\n# EOF\n", "invalid syntax"),
        ("openmetrics", "# TYPE a untyped\n# EOF\n", "invalid metric type"),
        ("openmetrics", "# UNIT a seconds\n# EOF\n", "unit not a suffix"),
        ("openmetrics", 'g 1 # {t="1"} 2\n# EOF\n', "does not support exemplars"),
        ("openmetrics", "a 1 NaN\n# EOF\n", "invalid timestamp"),
    ],
)
def test_what_prometheus_refuses_is_refused(kind: str, text: str, why: str) -> None:
    with pytest.raises(TextError, match=why):
        FORMATS[kind][0](text)


def test_what_prometheus_takes_that_a_laxer_or_stricter_reader_might_not() -> None:
    body = (
        '# HELP a x\\\\y\\nz\\tq\n# TYPE a gauge\na{__x="1",y="l1\nl2" z="\\t"} 1 123\n'
        "  # a comment after blanks\n#no blank\nb 2  \n\n   \nc{} .5e1\nd +Inf"
    )
    found = list(families(body))
    assert found[0][:3] == ("a", "gauge", "x\\y\nz\\tq")
    assert found[0][3] == [TextSample("a", {"__x": "1", "y": "l1\nl2", "z": "\\t"}, 1.0, 123)]
    assert [s for _, _, _, f in found[1:] for s in f] == [
        TextSample("b", {}, 2.0, None),
        TextSample("c", {}, 5.0, None),
        TextSample("d", {}, math.inf, None),
    ]


def test_samples_group_into_families_as_before() -> None:
    """As prometheus_client grouped them, so that metadata is unchanged: a family takes the
    names its type gives it; a counter's ``_total`` sample is a family of its own when the
    TYPE line names the counter without it."""
    body = (
        '# HELP s h\n# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 3\ns_count 2\nother 1\n'
        '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
        "# TYPE c counter\nc_total 5\n# TYPE g untyped\ng 1\n"
    )
    shape = [
        (name, kind, text, [s.name for s in found]) for name, kind, text, found in families(body)
    ]
    assert shape == [
        ("s", "summary", "h", ["s", "s_sum", "s_count"]),
        ("other", "unknown", "", ["other"]),
        ("h", "histogram", "", ["h_bucket", "h_sum", "h_count"]),
        ("c", "counter", "", []),
        ("c_total", "unknown", "", ["c_total"]),
        ("g", "unknown", "", ["g"]),
    ]


@pytest.mark.parametrize(
    ("token", "bits"),
    [("NaN", None), ("-Inf", -math.inf), ("Infinity", math.inf), ("5.", 5.0), (".5", 0.5)],
)
def test_go_float_words(token: str, bits: float | None) -> None:
    value = parse_float(token)
    assert math.isnan(value) if bits is None else value == bits


def test_what_kube_state_metrics_writes_when_asked_for_openmetrics() -> None:
    body = (
        "# HELP gotk_resource_info The current state of a Flux resource.\n"
        "# TYPE gotk_resource_info info\n"
        'gotk_resource_info{name="a",ready="True"} 1\n'
        "# HELP kube_pod_container_status_restarts_total Restarts.\n"
        "# TYPE kube_pod_container_status_restarts_total counter\n"
        'kube_pod_container_status_restarts_total{pod="p"} 3\n'
        "# TYPE kube_node_status_condition stateset\n"
        'kube_node_status_condition{condition="Ready",status="true"} 1\n'
        "# EOF\n"
    )
    shape = [
        (name, kind, help_text, [s.name for s in found])
        for name, kind, help_text, _, found in openmetrics.families(body)
    ]
    assert shape == [
        (
            "gotk_resource_info",
            "info",
            "The current state of a Flux resource.",
            ["gotk_resource_info"],
        ),
        (
            "kube_pod_container_status_restarts_total",
            "counter",
            "Restarts.",
            ["kube_pod_container_status_restarts_total"],
        ),
        ("kube_node_status_condition", "stateset", "", ["kube_node_status_condition"]),
    ]


def test_timestamps_are_seconds_truncated_to_ms_and_exemplars_are_read_past() -> None:
    body = 'c_total 5 1700000000.1239 # {t="1"} 2 1700000000\nd 1 -1.5\ne 1 1e20\n# EOF'
    assert [(s.name, s.timestamp) for s in read_openmetrics(body)] == [
        ("c_total", 1700000000123),
        ("d", -1500),
        ("e", -(1 << 63)),  # past int64: Go's int64() on amd64, a sample from long ago
    ]
