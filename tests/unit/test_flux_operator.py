"""The Flux Operator's ``flux_resource_info`` as a source of the legacy series.

Flux's maintainers point users who lost ``gotk_reconcile_condition`` to the operator's report.
It describes the same object state as kube-state-metrics' ``gotk_resource_info``, spelled
otherwise (``kind`` instead of ``customresource_kind``, ``suspended="True"`` capitalised and
always present, ``Unknown`` for a kind without a Ready condition) and with labels of its own
(``uid``, ``reason``, ``revision``, ``url``, ...) that are no part of an object's identity. So the
legacy series the rules write for an object must be the same whichever of the two reported it,
and an object the operator reports with a new ``uid`` (deleted and re-created under its name)
or a new ``reason`` (a new series, the old one's stale marker after it) keeps its series with
no hole.
"""

from __future__ import annotations

import struct
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.model import STALE_NAN, Batch, Labels, Sample, Series, is_stale, labels_from
from gotk_relay.rules.flux import (
    OPERATOR_INFO,
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    SUSPEND_STATUS,
    FluxConfig,
    FluxRewriter,
)
from gotk_relay.rules.flux_kinds import BY_KIND

# Labels the scrape adds to each target's series (KSM's pod, or the operator's).
TARGET: Final = {"job": "monitoring/flux", "instance": "10.0.0.7:8080", "namespace": "monitoring"}
KINDS: Final = sorted(BY_KIND)
TS: Final = 1_700_000_000_000
STEP: Final = 30_000

CONFIGS: Final = {
    "stored": FluxConfig(),
    "raw": FluxConfig(label_shape="raw"),
    "deleted-job": FluxConfig(emit_deleted=True, set_job=True),
}


def ksm(kind: str, name: str, namespace: str, ready: str | None, suspended: bool | None) -> Labels:
    """As Prometheus stores KSM's series: KSM's ``namespace`` renamed by the scrape."""
    found = BY_KIND[kind]
    labels = {
        **TARGET,
        "__name__": RESOURCE_INFO,
        "customresource_group": found.group,
        "customresource_kind": kind,
        "customresource_version": found.version,
        "exported_namespace": namespace,
        "name": name,
    }
    if ready is not None:
        labels["ready"] = ready
    if suspended is not None:
        labels["suspended"] = "true" if suspended else "false"
    return labels_from(labels)


def operator(
    kind: str,
    name: str,
    namespace: str,
    ready: str | None,
    suspended: bool | None,
    uid: str = "9b2c",
    reason: str = "ReconciliationSucceeded",
) -> Labels:
    """As Prometheus stores the operator's series (empty labels dropped at ingestion)."""
    labels = {
        **TARGET,
        "__name__": OPERATOR_INFO,
        "kind": kind,
        "exported_namespace": namespace,
        "name": name,
        "ready": ready or "Unknown",
        "suspended": "True" if suspended else "False",
        "uid": uid,
        "reason": reason,
        "revision": "main@sha1:4f1c2a",
        "url": "https://github.com/example/fleet",
    }
    return labels_from(labels)


def outputs(rewriter: FluxRewriter, inputs: list[Labels], ts: int) -> list[tuple[Labels, float]]:
    batch = Batch(tuple(Series(labels, (Sample(1.0, ts),)) for labels in inputs))
    out = rewriter.rewrite(batch, ts)
    return sorted((s.labels, s.samples[-1].value) for s in out.series[len(inputs) :])


OBJECTS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        st.sampled_from(["apps", "staging", "flux-system"]),
        st.sampled_from([None, "True", "False", "Unknown"]),
        st.sampled_from([None, True, False]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda o: (o[0], o[1], o[2]),
)


@pytest.mark.parametrize("name", list(CONFIGS))
@given(objects=OBJECTS)
def test_the_operator_and_ksm_give_the_same_legacy_series(
    name: str, objects: list[tuple[str, str, str, str | None, bool | None]]
) -> None:
    config = CONFIGS[name]
    by_ksm = outputs(FluxRewriter(config), [ksm(*o) for o in objects], TS)
    by_operator = outputs(FluxRewriter(config), [operator(*o) for o in objects], TS)
    assert by_operator == by_ksm
    assert {dict(labels)["__name__"] for labels, _ in by_ksm} == {
        RECONCILE_CONDITION,
        SUSPEND_STATUS,
    }
    assert not any(
        key in dict(labels) for labels, _ in by_operator for key in ("uid", "reason", "revision")
    )


@pytest.mark.parametrize("change", ["uid", "reason"])
@pytest.mark.parametrize("stale_first", [False, True], ids=["new-first", "stale-first"])
def test_a_new_series_of_the_same_object_makes_no_hole(change: str, stale_first: bool) -> None:
    """Re-created (new ``uid``) or failing for another reason (new ``reason``): a new series,
    the old one's stale marker in the same request, either order."""
    rewriter = FluxRewriter(FluxConfig())
    old = operator("Kustomization", "podinfo", "apps", "True", False)
    new = operator("Kustomization", "podinfo", "apps", "False", False, **{change: "changed"})
    first = outputs(rewriter, [old], TS)
    assert len(first) == 4
    pair = [
        Series(new, (Sample(1.0, TS + STEP),)),
        Series(old, (Sample(STALE_NAN, TS + STEP),)),
    ]
    if stale_first:
        pair.reverse()
    out = rewriter.rewrite(Batch(tuple(pair)), TS + STEP)
    written = {s.labels: s.samples for s in out.series[2:]}
    assert len(written) == 4
    assert not any(is_stale(x.value) for samples in written.values() for x in samples)
    ready = {dict(k)["status"]: v[-1].value for k, v in written.items() if "status" in dict(k)}
    assert ready == {"True": 0.0, "False": 1.0, "Unknown": 0.0}


def test_the_operators_own_kinds_pass_through() -> None:
    rewriter = FluxRewriter(FluxConfig())
    labels = labels_from(
        {**TARGET, "__name__": OPERATOR_INFO, "kind": "FluxInstance", "name": "flux"}
    )
    batch = Batch((Series(labels, (Sample(1.0, TS),)),))
    assert rewriter.rewrite(batch, TS) is batch


def test_true_is_read_however_it_is_spelled() -> None:
    lower = outputs(
        FluxRewriter(FluxConfig()), [ksm("GitRepository", "a", "apps", "true", True)], TS
    )
    upper = outputs(
        FluxRewriter(FluxConfig()), [ksm("GitRepository", "a", "apps", "True", True)], TS
    )
    assert lower == upper
    assert sum(value for _, value in upper) == 2.0  # Ready True, and suspended


# -- the operator's report in kube-state-metrics' shape (modes resource_info and both) ------

SAMPLES = st.lists(
    st.sampled_from([1.0, STALE_NAN]) | st.floats(allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=3,
)


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


@pytest.mark.parametrize("mode", ["resource_info", "both"])
@given(objects=OBJECTS, values=SAMPLES)
def test_the_operators_report_is_also_written_in_ksm_shape_sample_for_sample(
    mode: str, objects: list[tuple[str, str, str, str | None, bool | None]], values: list[float]
) -> None:
    rewriter = FluxRewriter(FluxConfig(mode=mode))
    inputs = tuple(
        Series(operator(*o), tuple(Sample(v, TS + i) for i, v in enumerate(values)))
        for o in objects
    )
    out = rewriter.rewrite(Batch(inputs), TS)
    assert out.series[: len(inputs)] == inputs  # keep_source: the inputs as they came
    shaped = [s for s in out.series[len(inputs) :] if s.name == RESOURCE_INFO]
    assert len(shaped) == len(inputs)  # one KSM-shaped series per operator series
    for source, series in zip(inputs, shaped, strict=True):
        given_labels, got = dict(source.labels), dict(series.labels)
        kind = BY_KIND[given_labels["kind"]]
        assert got["customresource_kind"] == kind.kind
        assert got["customresource_group"] == kind.group
        assert got["customresource_version"] == kind.version
        assert got["suspended"] == given_labels["suspended"].lower()
        assert "kind" not in got
        assert {k: v for k, v in got.items() if not k.startswith("customresource_")} == {
            **{k: v for k, v in given_labels.items() if k != "kind"},
            "__name__": RESOURCE_INFO,
            "suspended": given_labels["suspended"].lower(),
        }
        assert [(_bits(x.value), x.timestamp) for x in series.samples] == [
            (_bits(x.value), x.timestamp) for x in source.samples
        ]
    assert len({s.labels for s in shaped}) == len(shaped)
    assert RESOURCE_INFO in {m.family for m in out.metadata}
    legacy = {s.name for s in out.series[len(inputs) :]} - {RESOURCE_INFO}
    assert bool(legacy) == (mode == "both" and any(not is_stale(v) for v in values))


def test_a_recreated_objects_two_series_stay_two_ksm_series() -> None:
    """A new ``uid`` at the same timestamp as the old series' stale marker: mapped apart."""
    rewriter = FluxRewriter(FluxConfig(mode="resource_info"))
    old = operator("HelmRelease", "podinfo", "apps", "True", False, uid="a1")
    new = operator("HelmRelease", "podinfo", "apps", "True", False, uid="b2")
    batch = Batch((Series(old, (Sample(STALE_NAN, TS),)), Series(new, (Sample(1.0, TS),))))
    out = rewriter.rewrite(batch, TS)
    shaped = out.series[2:]
    assert len({s.labels for s in shaped}) == 2
    assert sorted(dict(s.labels)["uid"] for s in shaped) == ["a1", "b2"]


def test_without_keep_source_only_the_ksm_shape_goes_on() -> None:
    rewriter = FluxRewriter(FluxConfig(mode="resource_info", keep_source=False))
    source = operator("GitRepository", "fleet", "flux-system", "False", True)
    other = labels_from({"__name__": "up", "job": "x"})
    out = rewriter.rewrite(
        Batch((Series(source, (Sample(1.0, TS),)), Series(other, (Sample(1.0, TS),)))), TS
    )
    assert [s.name for s in out.series] == ["up", RESOURCE_INFO]


def test_in_legacy_mode_the_operators_report_is_not_written_in_ksm_shape() -> None:
    rewriter = FluxRewriter(FluxConfig(mode="legacy"))
    out = rewriter.rewrite(
        Batch((Series(operator("Bucket", "b", "apps", "True", False), (Sample(1.0, TS),)),)), TS
    )
    assert RESOURCE_INFO not in {s.name for s in out.series}
