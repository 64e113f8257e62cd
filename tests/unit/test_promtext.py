"""The text format as Prometheus 2.42 reads it (``scrape/promtext.py``).

What Prometheus refuses and takes is checked against a real Prometheus in
``tests/e2e/test_scrape_text_e2e.py``; here the reader is held to its own contract on generated
bodies: what a well-formed exposition says is read back exactly (names, label values with every
escape, float bits, timestamps), and no text raises anything but ``TextError``.
"""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.scrape.promtext import TextError, TextSample, families, parse_float

NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n != "__name__"
)
VALUES = st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf])
TIMESTAMPS = st.none() | st.integers(0, (1 << 63) - 1)


def escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def written(sample: TextSample) -> str:
    labels = ",".join(f'{k}="{escaped(v)}"' for k, v in sample.labels.items())
    text = sample.name + (f"{{{labels}}}" if sample.labels else "") + f" {sample.value!r}"
    text = text.replace(" inf", " +Inf").replace(" -inf", " -Inf")
    return text + ("" if sample.timestamp is None else f" {sample.timestamp}") + "\n"


samples = st.builds(
    TextSample,
    NAMES,
    st.dictionaries(LABEL_NAMES, st.text(max_size=12), max_size=4),
    VALUES,
    TIMESTAMPS,
)


def read(text: str) -> list[TextSample]:
    return [s for _, _, _, found in families(text) for s in found]


@given(st.lists(samples, max_size=8))
def test_what_a_well_formed_body_says_is_read_back_exactly(found: list[TextSample]) -> None:
    back = read("".join(map(written, found)))
    assert [(s.name, s.labels, s.timestamp) for s in back] == [
        (s.name, s.labels, s.timestamp) for s in found
    ]
    bits = [struct.pack("<d", s.value) for s in back]
    assert bits == [struct.pack("<d", s.value) for s in found]


@given(st.text(alphabet=st.sampled_from(list('a_1 \t\n{}=,"#\\:+-.eEIinfNa\r')), max_size=40))
def test_any_text_is_read_or_refused_with_a_text_error(text: str) -> None:
    with contextlib.suppress(TextError):
        read(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a 1\r\n", "invalid syntax"),  # the CR is part of the value
        ("a 1 -5\n", "timestamp"),
        ("a 1 1.5\n", "timestamp"),
        ("a 1 99999999999999999999\n", "out of range"),
        ("a 1e400\n", "out of range"),
        ("a 0x1F\n", "invalid syntax"),
        ("a 1_000\n", "invalid syntax"),
        ("a +NaN\n", "invalid syntax"),
        ("a infin\n", "invalid syntax"),
        ("a \u0661\n", "invalid syntax"),
        (" a 1\n", "invalid metric name"),
        ('{__name__="a"} 1\n', "not a valid start token"),
        ('a{x="1",x="2"} 1\n', "not unique"),
        ('a{__name__="b"} 1\n', "not unique"),
        ('a{x="1"}{y="2"} 1\n', "expected value"),
        ("a{x=1} 1\n", "expected label value"),
        ("a\n", "expected value"),
        ("# TYPE a  gauge\n", "invalid metric type"),
        ("# TYPE a gauge \n", "invalid metric type"),
        ("# HELP 1a x\n", "expected metric name"),
    ],
)
def test_what_prometheus_refuses_is_refused(text: str, why: str) -> None:
    with pytest.raises(TextError, match=why):
        read(text)


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
