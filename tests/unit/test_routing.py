"""Routing on the bytes (``routing.Router``): the compiled walk against the decoded reference.

Both implementations must give every destination the same series, in the same order, with the
same samples (float bits included), the same shards and tenants, and the same counts, for any
rules, shard count and tenant routing: the relay takes whichever is built.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay.config import TenantConfig
from gotk_relay.model import Batch, FamilyMetadata, MetricType, Sample, Series, labels_from
from gotk_relay.rules.relabel import RelabelConfig, compile_rules
from gotk_relay.wire import rw1, rw1_bytes, snappy
from gotk_relay.write import routing
from gotk_relay.write.routing import Routed, Router, shard_key
from tests.support.strategies import OddEncoder, canonical, series

# The compiled router against the reference; skipped only where GOTK_RELAY_NO_EXTENSIONS is set
# or the extension was not built (then test_the_router_is_built fails).
compiled = pytest.mark.skipif(not routing.NATIVE, reason="gotk_relay.write._route is not built")
BOTH = [
    pytest.param(Router.route_compiled, id="c", marks=compiled),
    pytest.param(Router.route_reference, id="python"),
]
Route = Callable[[Router, bytes], Routed]

NAMES = st.sampled_from(["__name__", "a", "b", "job", "instance", "le", "m_a", "zz"])
VALUES = st.text(alphabet="ab;:-_é.0", max_size=5)

RULES = [
    {"source_labels": ["a"], "target_label": "b"},
    {"source_labels": ["a", "b"], "regex": "(a*);(.*)", "target_label": "$2", "replacement": "$1"},
    {"target_label": "c", "replacement": ""},
    {"target_label": "cluster", "replacement": "prod"},
    {"source_labels": ["instance"], "regex": "(.+):.*", "target_label": "host"},
    {"source_labels": ["__name__"], "regex": "a.*", "action": "drop"},
    {"source_labels": ["b"], "regex": ".*b", "action": "keep"},
    {"source_labels": ["__name__"], "regex": "gotk_.*|a", "action": "keep"},
    {"regex": "(.)(.*)", "replacement": "m_$1", "action": "labelmap"},
    {"regex": "a.*", "action": "labeldrop"},
    {"regex": "__name__|[a-c].*", "action": "labelkeep"},
    {"source_labels": ["a"], "target_label": "h", "modulus": 7, "action": "hashmod"},
    {"source_labels": ["a", "b"], "target_label": "u", "action": "uppercase"},
    {"source_labels": ["job"], "target_label": "job", "action": "lowercase"},
    {"source_labels": ["a"], "target_label": "b", "action": "keepequal"},
    {"source_labels": ["a"], "target_label": "b", "action": "dropequal"},
    {"source_labels": ["__name__"], "target_label": "__name__", "replacement": "", "regex": "x"},
    {"source_labels": ["job"], "regex": "(.*)", "target_label": "job", "replacement": "$1"},
]


@st.composite
def label_sets(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
    pairs = draw(st.dictionaries(NAMES, VALUES, max_size=6))
    if draw(st.integers(0, 9)):  # mostly with a name, sometimes without one left after rules
        pairs["__name__"] = draw(st.sampled_from(["up", "a_b", "x", "gotk_x", "lat_bucket", "a"]))
    return tuple(sorted(pairs.items()))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    items = []
    for base in draw(st.lists(series(), max_size=8)):
        labels = draw(label_sets())
        if not any(name == "__name__" and value for name, value in labels):
            labels = tuple(sorted({**dict(labels), "__name__": "up"}.items()))
        items.append(base._replace(labels=labels))
    metadata = tuple(
        FamilyMetadata(name, MetricType.GAUGE, "h", "")
        for name in draw(st.lists(st.sampled_from(["up", "a"]), max_size=2))
    )
    return rw1.encode(Batch(tuple(items), metadata))


tenants = st.one_of(
    st.none(),
    st.builds(
        TenantConfig,
        label=st.sampled_from(["a", "job", "zz"]),
        default=st.sampled_from(["", "t0"]),
        keep_label=st.booleans(),
    ),
)


def routers() -> st.SearchStrategy[Router]:
    return st.builds(
        lambda rules, shards, tenant: Router(
            [RelabelConfig.model_validate(r) for r in rules], shards, tenant
        ),
        st.lists(st.sampled_from(RULES), max_size=4),
        st.sampled_from([1, 1, 2, 4]),
        tenants,
    )


def view(routed: Routed, raw: bytes) -> Any:
    """What a destination gets, comparable across implementations (floats by their bits)."""
    if routed.groups is None:
        return ("unchanged", canonical(rw1.decode(raw, validate=False)))
    return (
        [
            (g.tenant, g.shard, g.points, g.newest_ms, g.series, canonical(rw1.decode(g.body)))
            for g in routed.groups
        ],
        routed.dropped,
        routed.orphaned,
    )


def test_the_router_is_built() -> None:
    """The README's install builds it; without it every destination with rules, shards or
    tenants decodes every series (the reference below), tens of times slower."""
    if os.environ.get("GOTK_RELAY_NO_EXTENSIONS"):
        pytest.skip("GOTK_RELAY_NO_EXTENSIONS is set: the Python reference is under test")
    assert routing.NATIVE, f"gotk_relay.write._route is not built for {sys.executable}"


def test_no_extensions_switches_the_router_off() -> None:
    code = "from gotk_relay.write import routing; print(routing.NATIVE)"
    env = {**os.environ, "GOTK_RELAY_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False"]


@compiled
@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), routers())
def test_compiled_equals_reference(raw: bytes, router: Router) -> None:
    reference = router.route_reference(raw)
    compiled = router.route_compiled(raw)
    assert view(compiled, raw) == view(reference, raw)
    # The memos are warm now: a second pass must not answer differently; nor one told the
    # label sets come sorted (they do here, as strict validation leaves them).
    assert view(router.route_compiled(raw), raw) == view(reference, raw)
    assert view(router.route_compiled(raw, presorted=True), raw) == view(reference, raw)
    # Told the request's points (as the relay is), rules that keep or drop by name leave a
    # dropped series at its name and count what it dropped from what was kept.
    points = rw1.decode(raw, validate=False).point_count
    told = router.route_compiled(raw, presorted=True, points=points)
    assert view(told, raw) == view(reference, raw)


@st.composite
def odd_requests(draw: st.DrawFn) -> bytes:
    """A request of ``requests()`` as other valid encoders may write it: labels in any order,
    a series' labels after or among its samples, unknown fields, wide varints."""
    return OddEncoder(draw).request(rw1.decode(draw(requests()), validate=False))


@compiled
@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(odd_requests(), routers())
def test_compiled_equals_reference_for_any_encoding(raw: bytes, router: Router) -> None:
    """A series re-encoded by a rule keeps its samples, exemplars and histograms wherever they
    came among its labels (the walk copies them as one span when they follow the labels, and
    gathers them field by field when a label comes after one)."""
    reference = router.route_reference(raw)
    assert view(router.route_compiled(raw), raw) == view(reference, raw)
    points = rw1.decode(raw, validate=False).point_count
    assert view(router.route_compiled(raw, points=points), raw) == view(reference, raw)


@compiled
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), routers(), st.integers(0, 2))
def test_values_the_memo_finds_no_slot_for_are_computed_each_time(
    raw: bytes, router: Router, probes: int
) -> None:
    """A memo lookup gives up after a few slots (label values are anyone's input, and a run of
    colliding ones must not make each lookup walk the table): those values are computed per
    call and held until it ends, with the same result."""
    from gotk_relay.write import _route  # type: ignore[attr-defined]

    reference = router.route_reference(raw)
    _route.set_memo_probes(probes)
    try:
        for _ in range(2):
            assert view(router.route_compiled(raw), raw) == view(reference, raw)
    finally:
        _route.set_memo_probes(32)


@compiled
def test_a_rules_memo_is_emptied_between_requests_once_over_its_bound() -> None:
    from gotk_relay.write import _route  # type: ignore[attr-defined]

    router = Router(rules("- source_labels: [a]\n  target_label: b\n  replacement: x$1\n"))
    memo = router._program[0][4]
    many = [
        Series(labels_from({"__name__": "up", "a": str(i)}), (Sample(1.0, i),))
        for i in range(20_000)
    ]
    raw = rw1.encode(Batch(tuple(many)))
    routed = router.route_compiled(raw)
    # Within one request the values are kept past the bound (the builder points into the
    # results) ...
    assert _route.memo_size(memo) == 20_000
    assert routed.groups is not None
    decoded = rw1.decode(routed.groups[0].body).series
    assert [dict(s.labels)["b"] for s in decoded] == [f"x{i}" for i in range(20_000)]
    # ... and the next one starts from an empty memo: over 16384 entries it is not kept.
    small = rw1.encode(Batch(tuple(many[:3])))
    router.route_compiled(small)
    assert _route.memo_size(memo) == 3
    router.route_compiled(small)
    assert _route.memo_size(memo) == 3


def _series_bytes(a: bytes, ts: int) -> bytes:
    """A request's series ``up{a="<a>"} 1 <ts>`` as remote write 1.0 bytes, built by hand:
    encoding 60,000 ``Series`` objects takes seconds."""
    uv = rw1.uvarint
    labels = b"".join(
        b"\x0a" + uv(len(pair)) + pair
        for pair in (b"\x0a\x08__name__\x12\x02up", b"\x0a\x01a\x12" + uv(len(a)) + a)
    )
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + uv(ts)
    body = labels + b"\x12" + uv(len(sample)) + sample
    return b"\x0a" + uv(len(body)) + body


@compiled
def test_a_rules_memo_keeps_every_value_it_computes() -> None:
    """A value whose run of memo slots is full grows the table rather than being left out: one
    left out was computed again, by a Python call, every time a series held it. With 60,000
    values in a request, requests left some out in 3 to 5 of 8 (the hash's seed is the
    process's: a statistical check, as a property test is)."""
    from gotk_relay.write import _route  # type: ignore[attr-defined]

    for run in range(8):
        router = Router(rules("- source_labels: [a]\n  target_label: b\n  replacement: x$1\n"))
        memo = router._program[0][4]
        routed = router.route_compiled(
            b"".join(_series_bytes(b"%d-%d" % (run, i), i) for i in range(60_000))
        )
        assert _route.memo_size(memo) == 60_000
        assert routed.groups is not None
        if run:
            continue  # decoding 60,000 series takes most of a second
        decoded = rw1.decode(routed.groups[0].body).series
        assert [dict(s.labels)["b"] for s in decoded[::997]] == [
            f"x{run}-{i}" for i in range(0, 60_000, 997)
        ]


@pytest.mark.parametrize(
    ("regex", "form"),
    [
        ("gotk_.*", ((), (b"gotk_",))),
        ("go_gc_.*|up|node_load1", ((b"up", b"node_load1"), (b"go_gc_",))),
        (".*", ((), (b"",))),
        ("", ((b"",), ())),
        ("up|", ((b"up", b""), ())),
        (".*_total", None),
        ("gotk_(.*)", None),
        ("go\\.x", None),
        ("a+", None),
        ("(?i)up", None),
        ("[a-z]+", None),
    ],
)
def test_which_regexes_are_literals(
    regex: str, form: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None
) -> None:
    assert routing.literal_form(regex) == form


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.text(alphabet="ab_é\n", max_size=3), st.booleans()), min_size=1, max_size=4
    ),
    st.text(alphabet="ab_é\nc", max_size=6),
)
def test_a_literal_regex_matches_as_prometheus_anchors_it(
    alternatives: list[tuple[str, bool]], value: str
) -> None:
    """What ``_route.c`` tests (equal to a literal, or starting with a prefix) is what RE2
    answers for ``^(?s:regex)$``: ``.`` takes a newline too."""
    regex = "|".join(lit + (".*" if wild else "") for lit, wild in alternatives)
    form = routing.literal_form(regex)
    assert form is not None
    exact, prefixes = form
    encoded = value.encode()
    by_form = encoded in exact or any(encoded.startswith(p) for p in prefixes)
    rule = RelabelConfig.model_validate({"source_labels": ["a"], "regex": regex, "action": "keep"})
    assert by_form == compile_rules([rule]).compiled()[0].matches(value)


@pytest.mark.parametrize(
    ("text", "keeps"),
    [
        ("", True),
        ("- {source_labels: [__name__], regex: 'go_.*', action: drop}", True),
        ("- {source_labels: [instance], regex: '(.+):.*', target_label: host}", True),
        ("- {regex: pod, action: labeldrop}", True),
        ("- {source_labels: [a], target_label: h, modulus: 3, action: hashmod}", True),
        ("- {source_labels: [a], target_label: __name__}", False),
        ("- {source_labels: [a], regex: '(.*)', target_label: '$1', replacement: x}", False),
        ("- {source_labels: [a], target_label: __name__, action: lowercase}", False),
        ("- {regex: 'exported_(.*)', replacement: 'ns_$1', action: labelmap}", False),
    ],
)
def test_which_rules_keep_every_metric_name(text: str, keeps: bool) -> None:
    """Where they do, the relay finds the series its Flux rules read after the global rules
    by routing the ones it found before them (write/scan.py)."""
    assert Router(rules(text) if text else []).keeps_names is keeps


@pytest.mark.parametrize("route", BOTH)
def test_no_rules_one_shard_no_tenant_is_unchanged(route: Route) -> None:
    raw = rw1.encode(Batch((Series(labels_from({"__name__": "up"}), (Sample(1.0, 5),)),)))
    assert route(Router(), raw) == Routed(None)


def rules(text: str) -> list[RelabelConfig]:
    return [RelabelConfig.model_validate(r) for r in yaml.safe_load(text)]


def stream() -> bytes:
    items = tuple(
        Series(
            labels_from({"__name__": name, "instance": f"10.0.0.{i}:9100", "job": "node"}),
            (Sample(float(i), 1000 + i),),
        )
        for i, name in enumerate(["go_gc_duration_seconds", "up", "gotk_resource_info", "up"])
    )
    return rw1.encode(Batch(items))


@pytest.mark.parametrize("told", [False, True])
@pytest.mark.parametrize("route", BOTH)
def test_drop_by_name_keeps_the_others_as_they_came(route: Route, told: bool) -> None:
    raw = stream()
    router = Router(rules("- {source_labels: [__name__], regex: 'go_gc_.*', action: drop}"))
    routed = route(router, raw, points=4) if told else route(router, raw)  # type: ignore[call-arg]
    assert routed.groups is not None and routed.dropped == 1
    (group,) = routed.groups
    names = [dict(s.labels)["__name__"] for s in rw1.decode(group.body).series]
    assert names == ["up", "gotk_resource_info", "up"]
    assert (group.points, group.newest_ms, group.series) == (3, 1003, 3)


NAME_RULES: list[dict[str, Any]] = [
    {"source_labels": ["__name__"], "regex": "a.*", "action": "drop"},
    {"source_labels": ["__name__"], "regex": "gotk_.*|a", "action": "keep"},
    {"source_labels": ["__name__"], "regex": "up|x", "action": "drop"},
]


@compiled
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.lists(st.sampled_from(NAME_RULES), min_size=1, max_size=3))
def test_rules_on_the_name_alone_told_the_points_equal_the_reference(
    raw: bytes, chosen: list[dict[str, Any]]
) -> None:
    """Keep and drop by ``__name__`` with the request's points given (as the relay routes):
    a series dropped is left at its name, and what was dropped counted from what was kept."""
    router = Router([RelabelConfig.model_validate(r) for r in chosen])
    assert router.name_only
    points = rw1.decode(raw, validate=False).point_count
    reference = router.route_reference(raw)
    # And with the survey's series table, as the relay routes such a view (no label read;
    # the walk where a label value is empty).
    surveyed = rw1_bytes.survey(raw, frozenset(), table=True)
    assert isinstance(surveyed, rw1_bytes.Survey) and surveyed.raw is raw
    for _ in range(2):  # the memos cold, then warm
        assert view(router.route_compiled(raw, True, points), raw) == view(reference, raw)
        tabled = router.route_compiled(raw, True, points, surveyed.table)
        assert view(tabled, raw) == view(reference, raw)


@pytest.mark.parametrize("route", BOTH)
def test_shards_follow_the_stable_key(route: Route) -> None:
    raw = stream()
    routed = route(Router(shards=4), raw)
    assert routed.groups is not None
    for group in routed.groups:
        for s in rw1.decode(group.body).series:
            assert shard_key(s.labels) % 4 == group.shard


@compiled
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text(alphabet="abl_é", min_size=1, max_size=40),
        st.one_of(st.text(alphabet="xyzé_", min_size=1, max_size=40), st.just("v" * 5000)),
        max_size=8,
    ),
    st.sampled_from(["up", "lat_bucket", "lat_count", "lat_sum", "a" * 20]),
)
def test_every_label_set_goes_to_the_shard_of_its_key(pairs: dict[str, str], name: str) -> None:
    """Names and values of every length (the walk gathers them without a call below 17 bytes,
    and hashes a pair too long for its 4 KiB buffer on its own), histogram and summary parts
    shorn of their suffix and ``le``/``quantile`` left out as the Python key does."""
    labels = tuple(sorted({**pairs, "__name__": name}.items()))
    raw = rw1.encode(Batch((Series(labels, (Sample(1.0, 5),)),)))
    routed = Router(shards=7).route_compiled(raw, presorted=True)
    assert routed.groups is not None
    assert [g.shard for g in routed.groups] == [shard_key(labels) % 7]


@pytest.mark.parametrize("route", BOTH)
def test_tenant_label_routes_and_is_removed(route: Route) -> None:
    raw = stream()
    tenant = TenantConfig(label="instance")
    routed = route(Router(tenant=tenant), raw)
    assert routed.groups is not None
    assert [g.tenant for g in routed.groups] == [f"10.0.0.{i}:9100" for i in range(4)]
    for group in routed.groups:
        (only,) = rw1.decode(group.body).series
        assert "instance" not in dict(only.labels)


@pytest.mark.parametrize("route", BOTH)
def test_stale_marker_bits_survive_a_rewrite(route: Route) -> None:
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    raw = rw1.encode(Batch((Series(labels_from({"__name__": "up"}), (Sample(stale, 7),)),)))
    routed = route(Router(rules("- {target_label: cluster, replacement: prod}")), raw)
    assert routed.groups is not None
    (s,) = rw1.decode(routed.groups[0].body).series
    assert dict(s.labels) == {"__name__": "up", "cluster": "prod"}
    assert struct.pack("<d", s.samples[0].value) == struct.pack("<Q", 0x7FF0000000000002)


@compiled
@settings(max_examples=300)
@given(st.binary(max_size=700), st.integers(0, 2**32 - 1))
def test_the_shard_keys_crc_is_zlibs(data: bytes, crc: int) -> None:
    """The compiled CRC-32 (carry-less multiplication on 64 bytes and more, tables for the
    rest) is zlib's: shard keys must not change with the machine."""
    from gotk_relay.write import _route  # type: ignore[attr-defined]

    assert _route.crc32(data, crc) == zlib.crc32(data, crc)


@compiled
def test_the_table_crc_alone_is_zlibs_too() -> None:
    """Where the CPU lacks carry-less multiplication the tables do it all, the same."""
    code = (
        "import os, zlib, random\n"
        "from gotk_relay.write import _route\n"
        "rng = random.Random(3)\n"
        "for n in [*range(0, 200), 4096, 65537]:\n"
        "    data = rng.randbytes(n)\n"
        "    assert _route.crc32(data, n) == zlib.crc32(data, n), n\n"
        "print('ok')\n"
    )
    env = {**os.environ, "GOTK_RELAY_NO_CLMUL": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr


COMPRESSORS = [
    pytest.param(snappy.compress, id="switch"),
    pytest.param(snappy.compress_cramjam, id="cramjam"),
]


@compiled
@pytest.mark.parametrize("compress", COMPRESSORS)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), routers())
def test_bodies_compressed_by_the_walk_are_the_blocks_of_the_bodies(
    compress: Callable[[Any], bytes], raw: bytes, router: Router
) -> None:
    plain = router.route_compiled(raw)
    packed = router.route_compiled(raw, compress=compress)
    if plain.groups is None:
        assert packed.groups is None
        return
    assert packed.compressed and packed.groups is not None
    assert [g._replace(body=compress(g.body)) for g in plain.groups] == list(packed.groups)


@compiled
@pytest.mark.parametrize("compress", COMPRESSORS)
@pytest.mark.parametrize(
    "make",
    [
        lambda: Router(rules("- {source_labels: [__name__], regex: 'm_1.*|m_7', action: drop}")),
        lambda: Router(rules("- {source_labels: [pod], regex: '(.*)-3', target_label: x}")),
        lambda: Router((), 4),
        lambda: Router((), 1, TenantConfig(label="job")),
    ],
    ids=["drop-by-name", "rewrite", "shards", "tenants"],
)
def test_a_large_request_is_compressed_a_fragment_at_a_time(
    compress: Callable[[Any], bytes], make: Callable[[], Router]
) -> None:
    """Bodies of many 64 KiB fragments (and the table's runs, for the rule by name): the walk
    compresses each fragment as it fills and the result is the block of the whole body."""
    items = tuple(
        Series(
            labels_from(
                {
                    "__name__": f"m_{i % 23}",
                    "job": f"job-{i % 3}",
                    "pod": f"pod-{i % 97}-" + "x" * (i % 40) + f"-{i % 5}",
                }
            ),
            (Sample(float(i), 1_000 + i),),
        )
        for i in range(6000)
    )
    raw = rw1.encode(Batch(items, (FamilyMetadata("m_1", MetricType.GAUGE, "h", ""),)))
    assert len(raw) > 4 * 65536
    router = make()
    surveyed = rw1_bytes.survey(raw, frozenset(), table=True)
    assert isinstance(surveyed, rw1_bytes.Survey)
    points = surveyed.points
    plain = router.route_compiled(raw, True, points, surveyed.table)
    packed = router.route_compiled(raw, True, points, surveyed.table, compress)
    assert plain.groups is not None and packed.groups is not None
    assert sum(len(g.body) for g in plain.groups) > 2 * 65536
    assert [g._replace(body=compress(g.body)) for g in plain.groups] == list(packed.groups)
    assert view(
        packed._replace(
            groups=tuple(g._replace(body=snappy.decompress(g.body, 1 << 30)) for g in packed.groups)
        ),
        raw,
    ) == view(router.route_reference(raw), raw)
