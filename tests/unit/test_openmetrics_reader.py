"""OpenMetrics as Prometheus 2.42 reads it (``scrape/openmetrics.py``).

What Prometheus refuses and takes is checked against a real Prometheus in
``tests/e2e/test_scrape_formats_e2e.py``; here the reader is held to its own contract on
generated bodies, and to reading what kube-state-metrics writes when asked for OpenMetrics.
"""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.scrape.openmetrics import families
from gotk_relay.scrape.promtext import TextError, TextSample

NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n != "__name__"
)
VALUES = st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf])
# Seconds with at most ms precision, as int(ts * 1000) reads them back exactly.
TIMESTAMPS = st.none() | st.integers(0, 10**13)


def escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def written(sample: TextSample) -> str:
    labels = ",".join(f'{k}="{escaped(v)}"' for k, v in sample.labels.items())
    value = {math.inf: "+Inf", -math.inf: "-Inf"}.get(sample.value, repr(sample.value))
    text = sample.name + (f"{{{labels}}}" if sample.labels else "") + f" {value}"
    if sample.timestamp is not None:
        text += f" {sample.timestamp // 1000}.{sample.timestamp % 1000:03d}"
    return text + "\n"


def go_ms(ms: int | None) -> int | None:
    """What Prometheus makes of ``written``'s seconds: int64(ts * 1000), float rounding and all
    (1 ms less now and then)."""
    return None if ms is None else math.trunc(float(f"{ms // 1000}.{ms % 1000:03d}") * 1000)


samples = st.builds(
    TextSample,
    NAMES,
    st.dictionaries(LABEL_NAMES, st.text(max_size=12), max_size=4),
    VALUES,
    TIMESTAMPS,
)


def read(text: str) -> list[TextSample]:
    return [s for *_, found in families(text) for s in found]


@given(st.lists(samples, max_size=8))
def test_what_a_well_formed_body_says_is_read_back_exactly(found: list[TextSample]) -> None:
    back = read("".join(map(written, found)) + "# EOF\n")
    assert [(s.name, s.labels, s.timestamp) for s in back] == [
        (s.name, s.labels, go_ms(s.timestamp)) for s in found
    ]
    assert [struct.pack("<d", s.value) for s in back] == [struct.pack("<d", s.value) for s in found]


@given(
    st.text(alphabet=st.sampled_from(list('a_1 \n{}=,"#\\:+-.eEIinfNaEOFTYPEHL\r')), max_size=40)
)
def test_any_text_is_read_or_refused_with_a_text_error(text: str) -> None:
    with contextlib.suppress(TextError):
        read(text)


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
        for name, kind, help_text, _, found in families(body)
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


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a 1\n", "does not end with # EOF"),
        ("a 1\n# EOF\nb 2\n", "after # EOF"),
        ("\na 1\n# EOF\n", "not a valid start token"),
        ("# hello\n# EOF\n", "not a valid start token"),
        ("# HELP a\n# EOF\n", "not a valid start token"),
        ('a{x="1", y="2"} 1\n# EOF\n', "expected label name"),
        ('a{x="1",} 1\n# EOF\n', "expected label name"),
        ("a  1\n# EOF\n", "expected value"),
        ("a 1\r\n# EOF\n", "invalid syntax"),
        ("# TYPE a untyped\n# EOF\n", "invalid metric type"),
        ("# UNIT a seconds\n# EOF\n", "unit not a suffix"),
        ('g 1 # {t="1"} 2\n# EOF\n', "does not support exemplars"),
        ("a 1 NaN\n# EOF\n", "invalid timestamp"),
    ],
)
def test_what_prometheus_refuses_is_refused(text: str, why: str) -> None:
    with pytest.raises(TextError, match=why):
        read(text)


def test_timestamps_are_seconds_truncated_to_ms_and_exemplars_are_read_past() -> None:
    body = 'c_total 5 1700000000.1239 # {t="1"} 2 1700000000\nd 1 -1.5\n# EOF'
    assert [(s.name, s.timestamp) for s in read(body)] == [
        ("c_total", 1700000000123),
        ("d", -1500),
    ]
