"""wire.scan.survey (the C walk): the protobuf path's answers, or None, on every input.

The relay trusts ``survey`` for every request in the shape Prometheus writes, so these tests hold
it to the three calls it replaces (``frame``, ``count_points``, and ``select`` as the exact
oracle of ``pick``): on requests as Prometheus writes them it must answer, and answer the same;
on anything else, broken requests included, it may only answer the same or say None.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from bench_workload import loadgen
from google.protobuf.message import DecodeError as ProtoDecodeError
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import v1_batches
from test_scan import WATCHED, ld, prometheus_batches, selected, series_encodings, varint

from gotk_relay import config as config_module
from gotk_relay import fastpath, ingest
from gotk_relay.model import Batch, FamilyMetadata, MetricType, Sample, Series, labels_from
from gotk_relay.wire import rw1, scan
from gotk_relay.wire.errors import DecodeError

Oracle = tuple[int, int, list[bytes], list[bytes]]


def oracle(raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes]) -> Oracle:
    """The protobuf path: raises DecodeError where the relay answers 400."""
    request = scan.frame(raw)
    points = scan.count_points(raw)
    return len(request.timeseries), points, selected(raw, names, prefixes), list(request.metadata)


def surveyed(raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes]) -> Oracle | None:
    found = scan.survey(raw, names, prefixes)
    return None if found is None else (found.series, found.points, found.picked, found.metadata)


def same_or_none(raw: bytes, names: frozenset[bytes], prefixes: frozenset[bytes]) -> Oracle | None:
    """Asserts survey's contract on ``raw``; returns what it answered."""
    found = surveyed(raw, names, prefixes)
    try:
        expected = oracle(raw, names, prefixes)
    except (DecodeError, ProtoDecodeError):
        assert found is None, "survey accepted a request protobuf refuses"
        return None
    assert found in (None, expected)
    return found


def without_empty_values(batch: Batch) -> bool:
    """Prometheus drops empty label values; protobuf omits the field, which survey gives way to."""
    return all(value for item in batch.series for _, value in item.labels)


def test_the_accelerator_is_built() -> None:
    """The README's install builds it (gcc and the Python headers); without it every request
    takes the three-pass path, ~0.5 ms more per request, and only the start-up line and
    ``gotk_relay_scanned_requests_total`` would show it."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        pytest.skip("GOTK_RELAY_NO_EXTENSIONS is set: the protobuf path is under test")
    assert scan.NATIVE, f"gotk_relay.wire._survey is not built for {sys.executable}"


needs_native = pytest.mark.skipif(not scan.NATIVE, reason="the C accelerator is not built")


@needs_native
@settings(max_examples=700, deadline=None)
@given(st.one_of(prometheus_batches(), v1_batches()), WATCHED)
def test_survey_answers_for_requests_as_prometheus_writes_them(
    batch: Batch, watched: tuple[frozenset[bytes], frozenset[bytes]]
) -> None:
    """Watched names common, also inside values (``prometheus_batches``); histograms, which
    count as points, exemplars, which do not, and metadata, which comes back as it came
    (``v1_batches``)."""
    names, prefixes = watched
    raw = rw1.encode(batch)
    found = same_or_none(raw, names, prefixes)
    if without_empty_values(batch):
        assert found is not None


@needs_native
@settings(max_examples=500, deadline=None)
@given(st.lists(series_encodings(), max_size=8), WATCHED, st.binary(max_size=6))
def test_survey_is_protobuf_or_gives_way_on_any_encoding(
    encodings: list[bytes], watched: tuple[frozenset[bytes], frozenset[bytes]], tail: bytes
) -> None:
    """Labels in any order, repeated or missing fields, unknown fields, groups, padded varints."""
    names, prefixes = watched
    same_or_none(scan.rebuild(encodings) + ld(3, tail), names, prefixes)


@needs_native
@settings(max_examples=1000, deadline=None)
@given(prometheus_batches(), WATCHED, st.data())
def test_survey_of_a_damaged_request_is_protobuf_or_none(
    batch: Batch, watched: tuple[frozenset[bytes], frozenset[bytes]], data: st.DataObject
) -> None:
    """A byte changed, inserted or removed, or the request cut short, anywhere."""
    raw = bytearray(rw1.encode(batch))
    assume(raw)
    at = data.draw(st.integers(0, len(raw) - 1))
    how = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
    if how == "set":
        raw[at] = data.draw(st.integers(0, 255))
    elif how == "insert":
        raw.insert(at, data.draw(st.integers(0, 255)))
    elif how == "delete":
        del raw[at]
    else:
        del raw[at:]
    same_or_none(bytes(raw), *watched)


@needs_native
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), WATCHED)
def test_survey_of_random_bytes_is_protobuf_or_none(
    raw: bytes, watched: tuple[frozenset[bytes], frozenset[bytes]]
) -> None:
    same_or_none(raw, *watched)


def label(name: bytes, value: bytes) -> bytes:
    return ld(1, ld(1, name) + ld(2, value))


SAMPLE = ld(2, b"\x09" + b"\x00" * 8 + b"\x10\x05")
FLUX_NAMES = frozenset({b"gotk_resource_info"})
FLUX_LABEL = label(b"__name__", b"gotk_resource_info")


@needs_native
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(varint(2 << 3 | 0) + varint(1), id="a top-level varint field"),
        pytest.param(ld(2, b""), id="the reserved top-level field 2"),
        pytest.param(varint(4 << 3 | 3) + varint(4 << 3 | 4), id="a top-level group"),
        pytest.param(ld(1, FLUX_LABEL + varint(5 << 3 | 0) + varint(1)), id="an unknown field"),
        pytest.param(ld(1, FLUX_LABEL + SAMPLE, pad=4), id="a five-byte series length"),
        pytest.param(ld(1, ld(1, ld(2, b"v") + ld(1, b"a")) + FLUX_LABEL), id="value, then name"),
        pytest.param(ld(1, ld(1, ld(1, b"a")) + FLUX_LABEL), id="a label without its value"),
        pytest.param(ld(1, ld(1, ld(1, b"__name__"))), id="a series named by an empty value"),
        pytest.param(ld(1, label(b"a", b"b") + label(b"a", b"b"))[:-1], id="cut short"),
    ],
)
def test_survey_gives_way_outside_the_shape_prometheus_writes(raw: bytes) -> None:
    assert scan.survey(raw, FLUX_NAMES, frozenset({b"gotk_"})) is None
    same_or_none(raw, FLUX_NAMES, frozenset({b"gotk_"}))


@needs_native
def test_survey_reads_labels_only_up_to_the_series_name() -> None:
    """Labels after ``__name__`` may be in any shape; one sorted before it (an uppercase name)
    is read; a series with no name is forwarded, not picked; a name repeated later is ignored,
    as protobuf's first ``__name__`` wins."""
    odd_after = ld(1, ld(2, b"v") + ld(1, b"a"))  # value before name: fine after __name__
    series = [
        FLUX_LABEL + odd_after + SAMPLE,
        label(b"Zone", b"eu") + FLUX_LABEL + SAMPLE + SAMPLE,
        label(b"job", b"x") + SAMPLE,
        label(b"__name__", b"up") + FLUX_LABEL + SAMPLE,
        label(b"__name__", b"gotk_reconcile_duration_seconds_count") + ld(4, b"\x08\x01"),
    ]
    raw = scan.rebuild(series, [ld(1, b"gotk_resource_info")])
    found = scan.survey(raw, FLUX_NAMES, frozenset({b"gotk_"}))
    assert found is not None
    assert found.series == 5 and found.points == 6  # five samples, one histogram
    assert found.picked == [series[0], series[1], series[4]]
    assert found.metadata == [ld(1, b"gotk_resource_info")]
    assert (found.series, found.points, found.picked, found.metadata) == oracle(
        raw, FLUX_NAMES, frozenset({b"gotk_"})
    )


@needs_native
@pytest.mark.parametrize("pad", [1, 200, 20000])  # series lengths of one, two and three bytes
def test_survey_finds_flux_series_among_others(pad: int) -> None:
    def flux(name: str, ready: str) -> Series:
        labels = {"__name__": "gotk_resource_info", "name": name, "ready": ready, "p": "p" * pad}
        return Series(labels_from(labels), (Sample(1.0, 1000),))

    items = [flux("a", "True"), Series(labels_from({"__name__": "up"}), (Sample(1.0, 1),))]
    items += [flux("b", "False"), flux("b", "False")]  # a duplicate is picked twice
    family = (FamilyMetadata("gotk_resource_info", MetricType.GAUGE),)
    for batch in (Batch(tuple(items)), Batch(tuple(items), family), Batch((), family)):
        raw = rw1.encode(batch)
        found = scan.survey(raw, FLUX_NAMES)
        assert found is not None
        assert found.picked == selected(raw, FLUX_NAMES, frozenset())
        assert len(found.picked) == (3 if batch.series else 0)


@needs_native
def test_survey_takes_names_as_bytes_only() -> None:
    with pytest.raises(TypeError, match="bytes"):
        scan._native.survey(b"", ("gotk_resource_info",), ())


# -- the relay's scan, with and without the accelerator ---------------------------------------


def _fast_path(tmp_path: Path, keep_source: bool = True) -> fastpath.FastPath:
    text = config_module.default_config_text().replace(
        "remote_write: []", "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
    )
    if not keep_source:
        text = text.replace("keep_source: true", "keep_source: false")
    path = tmp_path / "relay.yml"
    path.write_text(text)
    plan = fastpath.plan(config_module.load_file(path))
    assert plan is not None and plan.keeps_inputs == keep_source and plan.prefixes
    return plan


@needs_native
@pytest.mark.parametrize("keep_source", [True, False])
@pytest.mark.parametrize("workload_name, flux_fraction", [("flux-heavy", 0.05), ("cluster", 0.001)])
def test_scan_request_is_the_same_with_and_without_the_accelerator(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keep_source: bool,
    workload_name: str,
    flux_fraction: float,
) -> None:
    """On the benchmark's own requests (node-exporter, kube-state-metrics and Flux series), with
    the rules' inputs forwarded in place (the default) or taken out and re-framed."""
    fast = _fast_path(tmp_path, keep_source)
    limits = config_module.ReceiverConfig()
    spec = loadgen.WorkloadSpec(name=workload_name, flux_fraction=flux_fraction)
    workload = loadgen.Workload(spec)
    bodies = [workload.body(i, 0) for i in range(len(workload.batches))]
    from gotk_relay.wire import snappy

    def scan_all() -> list[ingest.Scanned]:
        return [
            ingest.scan_request(body, snappy.decompress(body, 1 << 30), limits, fast)
            for body in bodies
        ]

    with_native = scan_all()
    monkeypatch.setattr(scan, "_native", None)
    assert scan.survey(b"", fast.names) is None
    without = scan_all()
    assert {s.scanner for s in with_native} == {"c"}
    assert {s.scanner for s in without} == {"protobuf"}
    assert [s._replace(scanner="") for s in with_native] == [
        s._replace(scanner="") for s in without
    ]
    picked = sum(len(s.picked) for s in with_native)
    assert picked == pytest.approx(flux_fraction * 2000 * len(bodies), 0.3)
    assert all(s.inputs_forwarded == (keep_source or not s.picked) for s in with_native)


@needs_native
def test_scan_request_refuses_too_many_series_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _fast_path(tmp_path)
    limits = config_module.ReceiverConfig(max_series_per_request=2)
    raw = scan.rebuild([label(b"__name__", b"up") + SAMPLE] * 3)
    assert scan.survey(raw, fast.names, fast.prefixes) is not None
    for native in (scan._native, None):
        monkeypatch.setattr(scan, "_native", native)
        with pytest.raises(Exception, match="request has 3 series, over receiver"):
            ingest.scan_request(b"", raw, limits, fast)
