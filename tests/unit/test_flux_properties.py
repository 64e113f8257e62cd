"""Properties of the Flux rewriter over random object histories delivered in random ways.

A history is what one Flux object went through: states (ready, suspended, revision) at strictly
increasing timestamps, maybe ended by deletion. It is rendered as KSM + Prometheus would send it
(each state change = a new input series plus a stale marker for the previous one, at the same
timestamp), then delivered as remote write can: cut into batches anywhere, with series
interleaved and samples moved within a bounded window, and old samples re-sent later. The relay
clock advances half a second per batch: a replacement is at most nine batches after its stale
marker (``WINDOW`` and three re-sends), so it arrives within the automatic ``stale_grace`` (one
scrape interval and 5 s), in time. Whatever the delivery, the legacy outputs must:

* never go back in time (strictly increasing timestamps per output series);
* never say anything untrue (a value written at t is the object's state at t);
* never be staled while the object exists, and be staled exactly at its deletion if deleted;
* end on the final state.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.model import (
    STALE_NAN,
    Batch,
    Labels,
    Sample,
    Series,
    is_stale,
    label_value,
    labels_from,
)
from gotk_relay.rules.flux import (
    RECONCILE_CONDITION,
    RESOURCE_INFO,
    SUSPEND_STATUS,
    FluxConfig,
    FluxRewriter,
)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
WINDOW = 6  # how far (in events) a sample may move from where Prometheus would send it


@dataclass(frozen=True)
class State:
    ready: str | None
    suspended: str | None
    revision: str

    def expected_ready(self) -> str:
        return self.ready if self.ready in ("True", "False", "Unknown") else "Unknown"


@dataclass(frozen=True)
class History:
    steps: tuple[tuple[int, State], ...]
    deleted_at: int | None


@dataclass(frozen=True)
class Event:
    labels: Labels
    ts: int
    stale: bool


states = st.builds(
    State,
    ready=st.sampled_from(["True", "False", "Unknown", None]),
    suspended=st.sampled_from(["true", "false", None]),
    revision=st.sampled_from(["r1", "r2"]),
)


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(1, 10))
    ts = draw(st.integers(1, 10_000))
    steps = []
    for _ in range(count):
        steps.append((ts, draw(states)))
        ts += draw(st.integers(1, 30_000))
    deleted_at = ts if draw(st.booleans()) else None
    return History(tuple(steps), deleted_at)


def ksm_labels(state: State) -> Labels:
    labels = {
        "__name__": RESOURCE_INFO,
        "customresource_group": "kustomize.toolkit.fluxcd.io",
        "customresource_kind": "Kustomization",
        "customresource_version": "v1",
        "exported_namespace": "apps",
        "name": "podinfo",
        "job": "kube-state-metrics",
        "revision": state.revision,
        "ready": state.ready or "",
        "suspended": state.suspended or "",
    }
    return labels_from(labels)


def rendered(history: History, lost: frozenset[int] = frozenset()) -> list[Event]:
    """The input samples in the order Prometheus appends them: values, then stale markers.

    ``lost``: steps whose stale marker for the superseded series never arrives (a Prometheus
    restart loses it), which must not keep the object alive.
    """
    events: list[Event] = []
    previous: Labels | None = None
    for step, (ts, state) in enumerate(history.steps):
        labels = ksm_labels(state)
        events.append(Event(labels, ts, False))
        if previous is not None and previous != labels and step not in lost:
            events.append(Event(previous, ts, True))
        previous = labels
    if history.deleted_at is not None and previous is not None:
        events.append(Event(previous, history.deleted_at, True))
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """Re-sends, bounded reordering (per-series order kept or not), then cuts into batches."""
    events = list(events)
    values = [i for i, e in enumerate(events) if not e.stale]
    for source in draw(st.lists(st.sampled_from(values), max_size=3)):
        at = draw(st.integers(source + 1, min(len(events), source + WINDOW)))
        events.insert(at, events[source])  # an old sample re-sent later (a retried request)
    offsets = draw(st.lists(st.integers(0, WINDOW), min_size=len(events), max_size=len(events)))
    order = sorted(range(len(events)), key=lambda i: (i + offsets[i], i))
    if draw(st.booleans()):  # remote write keeps each series' own samples in order
        slots: dict[Labels, list[int]] = {}
        for position, index in enumerate(order):
            slots.setdefault(events[index].labels, []).append(position)
        for positions in slots.values():
            for position, index in zip(positions, sorted(order[p] for p in positions), strict=True):
                order[position] = index
    shuffled = [events[i] for i in order]
    cuts = draw(st.lists(st.booleans(), min_size=len(shuffled), max_size=len(shuffled)))
    batches: list[list[Event]] = [[]]
    for event, cut in zip(shuffled, cuts, strict=True):
        batches[-1].append(event)
        if cut:
            batches.append([])
    return batches


def to_batch(events: list[Event]) -> Batch:
    series: dict[Labels, list[Sample]] = {}
    for event in events:
        series.setdefault(event.labels, []).append(
            Sample(STALE_NAN if event.stale else 1.0, event.ts)
        )
    return Batch(tuple(Series(labels, tuple(samples)) for labels, samples in series.items()))


def run(
    config: FluxConfig, batches: list[list[Event]]
) -> tuple[FluxRewriter, dict[Labels, list[Sample]]]:
    """Feed the batches (relay clock: one second per batch), then a late flush."""
    rewriter = FluxRewriter(config)
    outputs: dict[Labels, list[Sample]] = {}
    arrivals = [*batches, []]
    for number, events in enumerate(arrivals):
        now = 10**9 if number == len(arrivals) - 1 else 500 * number
        for series in rewriter.rewrite(to_batch(events), now_ms=now).series:
            if series.metadata is not None:  # synthesized
                outputs.setdefault(series.labels, []).extend(series.samples)
    return rewriter, outputs


def expected_value(series_labels: Labels, state: State) -> float:
    if label_value(series_labels, "__name__") == SUSPEND_STATUS:
        return 1.0 if state.suspended == "true" else 0.0
    return 1.0 if label_value(series_labels, "status") == state.expected_ready() else 0.0


Scenario = tuple[History, list[Event], list[list[Event]]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    history = draw(histories())
    lost = (
        draw(st.frozensets(st.integers(1, len(history.steps) - 1)))
        if len(history.steps) > 1
        else frozenset()
    )
    events = rendered(history, lost)
    return history, events, draw(deliveries(events))


@PROPERTY_SETTINGS
@given(scenarios())
def test_legacy_outputs_follow_the_object_whatever_the_delivery(scenario: Scenario) -> None:
    history, _, batches = scenario
    _, outputs = run(FluxConfig(), batches)
    truth = dict(history.steps)

    assert sorted(label_value(k, "status") or "suspend" for k in outputs) == [
        "False",
        "True",
        "Unknown",
        "suspend",
    ]
    for labels, samples in outputs.items():
        stamps = [s.timestamp for s in samples]
        assert stamps == sorted(set(stamps)), f"time went back on {labels}"
        for sample in samples:
            if is_stale(sample.value):
                continue
            assert sample.timestamp in truth, "a value at a time no input had"
            assert sample.value == expected_value(labels, truth[sample.timestamp])
        stale = [s for s in samples if is_stale(s.value)]
        if history.deleted_at is None:
            assert not stale, "staled while the object exists"
            last_ts, last_state = history.steps[-1]
            assert samples[-1].timestamp == last_ts
            assert samples[-1].value == expected_value(labels, last_state)
        else:
            assert stale == [samples[-1]], "staled before the deletion, or not at all"
            assert samples[-1].timestamp == history.deleted_at


@PROPERTY_SETTINGS
@given(scenarios())
def test_one_delivery_is_as_good_as_another_at_the_end(scenario: Scenario) -> None:
    _, events, batches = scenario
    finals = []
    for delivery in (batches, [[e for batch in batches for e in batch]], [events]):
        _, outputs = run(FluxConfig(), delivery)
        finals.append(
            {
                k: (v[-1].timestamp, "stale" if is_stale(v[-1].value) else v[-1].value)
                for k, v in outputs.items()
            }
        )
    assert finals[0] == finals[1] == finals[2]


# -- reverse ------------------------------------------------------------------------------------

LEGACY_BASE = {"kind": "Kustomization", "name": "podinfo", "namespace": "apps", "job": "flux"}


Values = dict[tuple[Labels, int], float]


@st.composite
def legacy_scenarios(draw: st.DrawFn) -> tuple[History, list[list[Event]], Values]:
    """The same histories as the old controllers exposed them: three conditions and suspend."""
    history = draw(histories())
    events: list[Event] = []
    values: Values = {}
    for ts, state in history.steps:
        ready = state.expected_ready()
        for status in ("True", "False", "Unknown"):
            labels = labels_from(
                {**LEGACY_BASE, "__name__": RECONCILE_CONDITION, "type": "Ready", "status": status}
            )
            values[(labels, ts)] = 1.0 if status == ready else 0.0
            events.append(Event(labels, ts, False))
        labels = labels_from({**LEGACY_BASE, "__name__": SUSPEND_STATUS})
        values[(labels, ts)] = 1.0 if state.suspended == "true" else 0.0
        events.append(Event(labels, ts, False))
    if history.deleted_at is not None:
        for labels in dict.fromkeys(e.labels for e in events):
            events.append(Event(labels, history.deleted_at, True))
    return history, draw(deliveries(events)), values


def to_legacy_batch(events: list[Event], values: Values) -> Batch:
    series: dict[Labels, list[Sample]] = {}
    for event in events:
        value = STALE_NAN if event.stale else values[(event.labels, event.ts)]
        series.setdefault(event.labels, []).append(Sample(value, event.ts))
    return Batch(tuple(Series(labels, tuple(samples)) for labels, samples in series.items()))


@PROPERTY_SETTINGS
@given(legacy_scenarios())
def test_info_series_never_go_back_and_end_on_the_final_state(
    scenario: tuple[History, list[list[Event]], Values],
) -> None:
    history, batches, values = scenario
    rewriter = FluxRewriter(FluxConfig(mode="resource_info"))
    outputs: dict[Labels, list[Sample]] = {}
    arrivals = [*batches, []]
    for number, events in enumerate(arrivals):
        now = 10**9 if number == len(arrivals) - 1 else 500 * number
        for series in rewriter.rewrite(to_legacy_batch(events, values), now_ms=now).series:
            if series.metadata is not None:
                outputs.setdefault(series.labels, []).extend(series.samples)

    for labels, samples in outputs.items():
        stamps = [s.timestamp for s in samples]
        assert stamps == sorted(set(stamps)), f"time went back on {labels}"
        assert all(is_stale(s.value) or s.value == 1.0 for s in samples)
    still_open = [k for k, v in outputs.items() if not is_stale(v[-1].value)]
    if history.deleted_at is not None:
        assert still_open == []
    else:
        final = history.steps[-1][1]
        assert len(still_open) == 1
        assert label_value(still_open[0], "ready") == final.expected_ready()
        assert label_value(still_open[0], "suspended") == (
            "true" if final.suspended == "true" else "false"
        )
