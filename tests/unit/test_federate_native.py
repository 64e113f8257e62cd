"""The federate store's compiled order and text heads (``destinations/_federate.c``) give what
their pure-Python twins in ``destinations/federate.py`` give, for any label sets (NUL, quotes,
non-ASCII, one a prefix of another); and the stream is the reference text through both, when
new series come in runs and are merged (the path the first render of a large store takes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay.destinations import federate
from gotk_relay.model import STALE_NAN, Batch, Labels, Metadata, MetricType, Sample, Series
from gotk_relay.selectors import parse_selectors

native: Any = federate._native
needs_native = pytest.mark.skipif(native is None, reason="destinations/_federate.c is not built")

# Characters that matter to an order or a line: NUL (below every other), the escaped ones, a
# latin-1 one, one of the BMP and one beyond it (str kinds 1, 2 and 4 compare as code points).
TEXT: Final = st.text(alphabet=["\x00", "a", "b", "_", '"', "\\", "\n", "é", "Ж", "😀"], max_size=4)
NAME: Final = st.one_of(st.just("__name__"), st.just("a"), TEXT)
LABELS: Final = st.lists(st.tuples(NAME, TEXT), max_size=4).map(tuple)


def _entries(labels: list[Labels], alive: list[bool]) -> list[list[Any]]:
    return [
        federate._new_entry(1.0, 0, live, None, False, ls)
        for ls, live in zip(labels, alive, strict=True)
    ]


@needs_native
@settings(max_examples=300, deadline=None)
@given(labels=st.lists(LABELS, max_size=60))
def test_the_compiled_sort_is_pythons_order(labels: list[Labels]) -> None:
    entries = _entries(labels, [True] * len(labels))
    got, want = list(entries), list(entries)
    native.sort(got, federate.LABELS)
    federate._py_sort(want, federate.LABELS)
    assert [id(e) for e in got] == [id(e) for e in want]  # stable, as list.sort is


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(st.lists(st.tuples(LABELS, st.booleans()), max_size=12), max_size=6),
    limit=st.integers(1, 7),
)
def test_the_compiled_merge_is_its_twin(runs: list[list[tuple[Labels, bool]]], limit: int) -> None:
    """Step by step (``limit`` at a time), equal labels in several runs included: the same
    entries out, in the same order, removed ones dropped, the same positions after each step."""
    sorted_runs = []
    for run in runs:
        entries = _entries([ls for ls, _ in run], [live for _, live in run])
        federate._py_sort(entries, federate.LABELS)
        sorted_runs.append(entries)
    got: list[list[Any]] = []
    want: list[list[Any]] = []
    at_got, at_want = [0] * len(runs), [0] * len(runs)
    for _ in range(200):
        more = native.merge(got, sorted_runs, at_got, federate.LABELS, federate.STORED, limit)
        assert (
            federate._py_merge(want, sorted_runs, at_want, federate.LABELS, federate.STORED, limit)
            is more
        )
        assert at_got == at_want
        assert [id(e) for e in got] == [id(e) for e in want]
        if not more:
            break
    assert at_got == [len(run) for run in sorted_runs]
    assert len(got) == sum(live for run in runs for _, live in run)


@needs_native
@settings(max_examples=300, deadline=None)
@given(labels=LABELS, named=st.booleans())
def test_the_compiled_head_is_the_text_modules(labels: Labels, named: bool) -> None:
    if named:
        labels = (("__name__", "m"), *labels)
    assert native.sample_head(labels) == federate._py_sample_head(labels)


SAMPLE: Final = st.tuples(
    st.sampled_from([1.0, 0.0, -0.0, 2.0, 0.5, 1e21, float("inf"), float("nan"), STALE_NAN, 1]),
    st.sampled_from([0, -1, 1_700_000_000_000, 2**63 - 1, 2**63, -(2**70)]),
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(LABELS, SAMPLE, st.booleans(), st.booleans(), st.booleans(), SAMPLE),
        max_size=12,
    ),
    oldest=st.one_of(st.none(), SAMPLE.map(lambda sample: sample[1]), st.just(2**70)),
)
def test_the_compiled_lines_are_the_twins(
    rows: list[tuple[Labels, tuple[float, int], bool, bool, bool, tuple[float, int]]],
    oldest: int | None,
) -> None:
    """Lines made for the first time, made again from a kept line after a new sample, kept
    as they are; removed entries skipped, and those timestamped before ``oldest`` (the
    lookback); the values that need Go's formatting made by the reference (``_refresh``): the
    same lines, and the entries left the same."""

    def entries() -> list[list[Any]]:
        made = []
        for labels, (value, ts), stored, rendered, fresh, (new_value, new_ts) in rows:
            entry = federate._new_entry(value, ts, stored, None, False, labels)
            if rendered:
                federate._refresh(entry)  # a kept line from an earlier sample
                entry[0], entry[1], entry[4] = new_value, new_ts, fresh
            made.append(entry)
        return made

    got, want = entries(), entries()
    assert native.lines(got, federate._refresh, oldest) == federate._py_lines(
        want, federate._refresh, oldest
    )
    assert repr(got) == repr(want)  # NaN != NaN: compared as text


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(LABELS, st.booleans()), max_size=20),
    label=NAME,
    bounds=st.tuples(st.integers(0, 22), st.integers(0, 22)),
)
def test_the_compiled_index_is_its_twin(
    rows: list[tuple[Labels, bool]], label: str, bounds: tuple[int, int]
) -> None:
    """Any slice of the entries (past the end, or empty, included), a label repeated in a set
    (its last value counts), empty values left out, removed entries skipped."""
    entries = _entries([ls for ls, _ in rows], [live for _, live in rows])
    # A value held before the build, by one entry (as an index holds it: no list).
    got: dict[str, list[Any]] = {"": entries[0]} if entries else {}
    want = dict(got)
    start, stop = bounds
    native.index(entries, start, stop, label, got)
    federate._py_index(entries, start, stop, label, want)
    assert {k: [id(e) for e in federate._entries_of(v)] for k, v in got.items()} == {
        k: [id(e) for e in federate._entries_of(v)] for k, v in want.items()
    }
    for posting in got.values():  # one entry stands for itself, two or more are a list
        held = federate._entries_of(posting)
        assert (held[0] is posting) is (len(held) == 1)


TIMESTAMPS: Final = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**70), st.just(math.inf)
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(TIMESTAMPS, st.floats(allow_nan=True), st.booleans(), st.booleans()),
        max_size=12,
    ),
    timestamp=st.integers(-(2**63), 2**70),
)
def test_the_compiled_stamp_is_its_twin(
    rows: list[tuple[int | float, float, bool, bool]], timestamp: int
) -> None:
    """Entries older, equal and newer (the refused entry's inf, ints past 64 bits, fresh or
    not) take the new value and timestamp exactly where the twin's do (the older ones), the
    same objects."""

    def entries() -> list[list[Any]]:
        return [
            federate._new_entry(1.5, ts, stored, b"x 1.5 7\n", fresh, (("a", "b"),))
            for ts, _, stored, fresh in rows
        ]

    values = tuple(value for _, value, _, _ in rows)
    got, want = entries(), entries()
    native.stamp(got, values, timestamp)
    federate._py_stamp(want, values, timestamp)
    for a, b in zip(got, want, strict=True):
        assert [a[k] is b[k] or a[k] == b[k] for k in range(6)] == [True] * 6
    # Stamped: the entries older than the timestamp (the first sample at one stays).
    assert [e[federate.VALUE] is v for e, v in zip(got, values, strict=True)] == [
        ts < timestamp for ts, _, _, _ in rows
    ]


@needs_native
def test_the_compiled_stamp_refuses_mismatched_or_foreign_entries() -> None:
    entry = federate._new_entry(1.0, 0, True, None, False, ())
    with pytest.raises(ValueError, match="as many values"):
        native.stamp([entry], (1.0, 2.0), 5)
    with pytest.raises(TypeError, match="entry must be"):
        native.stamp([[1.0, 0, True, None, False, ()]], (1.0,), 5)
    assert entry[federate.TIMESTAMP] == 0  # nothing written before the refusal


@needs_native
@pytest.mark.parametrize(
    "call",
    [
        lambda: native.sample_head([("a", "b")]),
        lambda: native.sample_head((("a", 1),)),
        lambda: native.sample_head((("a",),)),
        lambda: native.sort([native.Entry(1.0, 0, True, None, False, "x")] * 2, federate.LABELS),
        lambda: native.sort([(1.0, 0, True, None, False, ())] * 2, federate.LABELS),
        lambda: native.merge([], [[[0, 0, True]]], [0], federate.LABELS, federate.STORED, 1),
        lambda: native.lines([[1.0, 0, True, None, False, ()]], federate._refresh),
        lambda: native.lines([native.Entry(1.0, 0, True, None, False, "x")], federate._refresh),
        lambda: native.Entry(1.0, 0, True, None, False),
    ],
    ids=[
        "list-labels",
        "int-value",
        "one-item-pair",
        "str-labels",
        "tuple-entry",
        "short-entry",
        "list-entry",
        "lines-str-labels",
        "five-fields",
    ],
)
def test_the_compiled_functions_refuse_what_is_not_entries_of_label_sets(call: Any) -> None:
    with pytest.raises(TypeError, match=r"labels must be|entry must be"):
        call()


@needs_native
@pytest.mark.parametrize(
    ("positions", "alive"),
    [([0, 0], federate.STORED), ([2], federate.STORED), ([0], federate.LABELS)],
    ids=["one-position-per-run", "past-the-end", "alive-after-labels"],
)
def test_the_compiled_merge_refuses_bad_positions(positions: list[int], alive: int) -> None:
    runs = [_entries([(("a", "b"),)], [True])]
    with pytest.raises(ValueError):
        native.merge([], runs, positions, federate.LABELS, alive, 1)


@contextmanager
def _small_steps(compiled: bool) -> Iterator[None]:
    """Runs of 3 and merge steps of 2 (every path of the first render's ordering taken with a
    few series), through the compiled functions or their twins."""
    saved = {
        name: getattr(federate, name)
        for name in (
            "SORT_RUN",
            "INSERT_MAX",
            "_merge_step",
            "_sort",
            "_merge",
            "_sample_head",
            "_all_lines",
        )
    }
    federate.SORT_RUN, federate.INSERT_MAX, federate._merge_step = 3, 0, 2
    if not compiled:
        federate._sort = federate._py_sort
        federate._merge = federate._py_merge
        federate._sample_head = federate._py_sample_head
        federate._all_lines = federate._py_lines
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(federate, name, value)


NAMES: Final = ["a", "b_total", "h_bucket", "gotk_x"]
ROW: Final = st.tuples(
    st.sampled_from(NAMES), st.sampled_from(["0", "1", "é", 'q"', ""]), TEXT, st.booleans()
)


@settings(max_examples=100, deadline=None)
@given(
    rounds=st.lists(st.lists(ROW, max_size=30), min_size=1, max_size=5),
    compiled=st.booleans() if native is not None else st.just(False),
)
def test_runs_merged_give_the_reference_text(
    rounds: list[list[tuple[str, str, str, bool]]], compiled: bool
) -> None:
    """Series added (many at once: sorted in runs and merged with those in order) and removed
    between renders, whole and by a label index: each stream is the reference render."""

    async def run() -> None:
        store = federate.FederateStore(['{__name__=~".+"}'], 1000)
        for ts, rows in enumerate(rounds, 1):
            series = []
            for name, value, other, stale in rows:
                labels: Labels = (("__name__", name), ("l", value), ("o", other))
                sample = Sample(STALE_NAN if stale else float(ts), ts)
                series.append(Series(labels, (sample,)))
            store.update(Batch(tuple(series)))
            for matches in ([], ['{l="1"}'], ["a", "gotk_x"]):
                want = store.render(parse_selectors(matches) if matches else None)
                pieces = [piece async for piece in store.stream(store.query(matches), 4)]
                assert b"".join(pieces).decode() == want, matches

    with _small_steps(compiled):
        asyncio.run(run())


# A series of update_known's test: which of four label sets, a fresh tuple of it or the one
# the store saw, its samples (none, one, or two: value kind and timestamp offset), metadata.
UPDATE_ROW: Final = st.tuples(
    st.integers(0, 3),
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from(["one", "nan", "stale", "int"]), st.integers(-2, 2)),
        max_size=2,
    ),
    st.booleans(),
)


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(st.lists(UPDATE_ROW, max_size=8), min_size=1, max_size=6),
    max_series=st.integers(1, 5),
)
def test_the_compiled_update_is_the_python_loops(
    rounds: list[list[tuple[int, bool, list[tuple[str, int]], bool]]], max_series: int
) -> None:
    """Two stores fed the same batches, one through ``update_known`` and one through the
    Python loop alone: the same refusals counted, entries (value bits, timestamp, freshness)
    and text, whatever mix of known and new tuples, stale markers, older samples, several
    samples, metadata and a full store (``max_series`` below the four label sets)."""
    sets = [(("__name__", f"m{i}"), ("job", "j")) for i in range(4)]
    values = {"one": 1.5, "nan": math.nan, "stale": STALE_NAN, "int": 7}
    meta = Metadata(MetricType.GAUGE, "h")

    def feed(compiled: bool) -> list[Any]:
        store = federate.FederateStore(['{__name__=~"m[0-2]"}'], max_series)
        seen: list[Labels] = list(sets)
        out: list[Any] = []
        saved = federate._update_known
        federate._update_known = saved if compiled else None
        try:
            for ts, rows in enumerate(rounds, 10):
                series = []
                for which, fresh_tuple, samples, with_meta in rows:
                    labels = tuple(sets[which]) if fresh_tuple else seen[which]
                    seen[which] = labels
                    points = tuple(Sample(values[kind], ts + delta) for kind, delta in samples)
                    series.append(Series(labels, points, metadata=meta if with_meta else None))
                out.append(store.update(Batch(tuple(series))))
                out.append(store.render())
        finally:
            federate._update_known = saved
        entries = sorted(store._latest.items())
        out.append([(k, repr(e[0]), e[1], e[2], e[4]) for k, e in entries])
        out.append((store.refused, store.selector_checks, dict(store._applied)))
        return out

    assert feed(True) == feed(False)


@needs_native
def test_the_compiled_update_takes_the_usual_series_and_leaves_the_rest() -> None:
    """What the Flux inputs are every scrape (one float sample, a stored entry for the very
    tuple) is updated in C; a new tuple stops it there, with nothing after it touched."""
    store = federate.FederateStore(['{__name__=~".+"}'], 10)
    known = (("__name__", "a"),)
    store.update(Batch((Series(known, (Sample(1.0, 5),)),)))
    new = (("__name__", "b"),)
    batch = (
        Series((("__name__", "c"),), ()),
        Series(known, (Sample(2.0, 6),)),
        Series(new, (Sample(3.0, 6),)),
        Series(known, (Sample(4.0, 7),)),
    )
    assert native.update_known(batch, 0, store._by_id.get) == 2
    assert store._latest[known][federate.VALUE] == 2.0
    assert store._latest[known][federate.TIMESTAMP] == 6
    assert new not in store._latest
    assert native.update_known(batch, 3, store._by_id.get) == 4
    assert store._latest[known][federate.VALUE] == 4.0


ENTRY_KINDS: Final = [pytest.param(federate._PyEntry, id="python")]
if native is not None:
    ENTRY_KINDS.append(pytest.param(lambda fields: native.Entry(*fields), id="compiled"))


@pytest.mark.parametrize("make", ENTRY_KINDS)
def test_an_entry_is_read_and_written_as_its_six_fields(make: Any) -> None:
    """What federate.py does with an entry, on the compiled one and its twin alike."""
    labels = (("__name__", "x"),)
    entry = make((1.0, 5, True, None, False, labels))
    assert len(entry) == 6 and list(entry) == [1.0, 5, True, None, False, labels]
    entry[federate.VALUE], entry[federate.TIMESTAMP] = 0.0, 6
    entry[federate.FRESH] = True
    value, timestamp, stored, line, fresh, held = entry
    assert (value, timestamp, stored, line, fresh) == (0.0, 6, True, None, True)
    assert held is labels and entry[-1] is labels and federate._labels_of(entry) is labels
    federate._refresh(entry)
    assert entry[federate.LINE] == b"x 0.0 6\n"
    with pytest.raises(IndexError):
        entry[6]
    assert entry.__class__ is not list  # an index tells an entry from a list of them by this


@needs_native
def test_a_compiled_entry_is_smaller_than_a_list_and_collected_in_a_cycle() -> None:
    import gc
    import sys
    import weakref

    class Marker:
        pass

    entry = native.Entry(1.0, 0, True, None, False, ())
    assert sys.getsizeof(entry) < sys.getsizeof([1.0, 0, True, None, False, ()])
    labels = Marker()
    entry[federate.LINE] = [entry]  # a cycle through the entry
    probe = weakref.ref(labels)
    entry[federate.LABELS] = labels
    del entry, labels
    gc.collect()
    assert probe() is None
