"""One path for every configuration: what the bytes path queues equals the decoded reference.

Two relays take the same generated requests under the same generated configuration (global
rules, destinations with their own rules, shards, tenants and messages, Flux rules keeping their
inputs or not): one through ``scan.scan_request`` + ``admission.queue_scanned`` (the relay's path, which
routes the bytes), one through ``Relay.admit`` with every series decoded (the straightforward
reference: ``pipeline``, ``split_by_tenant``, ``split_by_shard``). Every destination must hold
the same series on the same shard for the same tenant, each series' points in the same order,
float bits included, and the same metadata (see the test for tenants).
"""

from __future__ import annotations

import struct
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotk_relay import config as config_module
from gotk_relay.delivery.entry import Entry, decode_entry, request_body
from gotk_relay.model import (
    STALE_NAN,
    Batch,
    FamilyMetadata,
    Metadata,
    MetricType,
    Protocol,
    Sample,
    Series,
)
from gotk_relay.relay import Relay
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import rw1, rw2, snappy
from gotk_relay.write import admission, scan
from tests.support import loadgen

RULES = [
    {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"},
    {"source_labels": ["__name__"], "regex": "gotk_.*|up", "action": "keep"},
    {"source_labels": ["instance"], "regex": "(.+):.*", "target_label": "host"},
    {"target_label": "cluster", "replacement": "prod"},
    {"regex": "pod", "action": "labeldrop"},
    {"source_labels": ["job"], "target_label": "shard", "modulus": 3, "action": "hashmod"},
    {"source_labels": ["name"], "target_label": "name", "action": "uppercase"},
    {"regex": "exported_(.*)", "replacement": "ns_$1", "action": "labelmap"},
    # Names a series anew, into one the Flux rules read: the relay must look at what the
    # global rules made, not at what came (scan.py: Router.keeps_names).
    {
        "source_labels": ["__name__", "i"],
        "regex": "node_load1;0",
        "target_label": "__name__",
        "replacement": "gotk_resource_info",
    },
]
NAMES = ["up", "go_gc_duration_seconds", "node_load1", "gotk_x", "lat_bucket"]


@st.composite
def configurations(draw: st.DrawFn) -> str:
    def rules(most: int) -> list[dict[str, Any]]:
        return draw(st.lists(st.sampled_from(RULES), max_size=most))

    destinations = []
    for i in range(draw(st.integers(1, 3))):
        shards = draw(st.sampled_from([1, 2, 4]))
        destination: dict[str, Any] = {
            "name": f"d{i}",
            "url": f"http://127.0.0.1:9/{i}",
            "write_relabel_configs": rules(2),
            "queue_config": {"min_shards": shards, "max_shards": shards},
            "protobuf_message": draw(
                st.sampled_from(["prometheus.WriteRequest", "io.prometheus.write.v2.Request"])
            ),
        }
        if draw(st.integers(0, 2)) == 0:
            # As the request came (after the global rules): its block is queued as it is.
            destination = {"name": f"d{i}", "url": f"http://127.0.0.1:9/{i}"}
        elif draw(st.booleans()):
            destination["tenant"] = {
                "label": draw(st.sampled_from(["job", "namespace"])),
                "default": draw(st.sampled_from(["", "anonymous"])),
                "keep_label": draw(st.booleans()),
            }
        destinations.append(destination)
    config = {
        "receiver": {"validation": "full"},
        "flux": {"mode": "legacy", "keep_source": draw(st.booleans())},
        "relabel_configs": rules(2),
        "remote_write": destinations,
        # Selectors by name prefix pick those names; one that may match any name picks every
        # series (the store must see them all).
        "federate": draw(st.sampled_from(FEDERATE)),
    }
    return yaml.safe_dump(config)


FEDERATE: list[dict[str, Any]] = [
    {"enabled": True},  # the default: {__name__=~"gotk_.*"}
    {"enabled": False},
    {"enabled": True, "match": ['{job="api"}']},
    {"enabled": True, "match": ['{__name__=~"(?i)UP|node.*"}', "lat_bucket"]},
    {"enabled": True, "match": ['{namespace=~"a.*|web.*"}', '{__name__=~"gotk_.*"}']},
]


def _ksm(name: str, ready: str) -> dict[str, str]:
    return {
        "__name__": "gotk_resource_info",
        "customresource_group": "kustomize.toolkit.fluxcd.io",
        "customresource_kind": "Kustomization",
        "customresource_version": "v1",
        "exported_namespace": "flux-system",
        "name": name,
        "ready": ready,
    }


@st.composite
def traffic(draw: st.DrawFn) -> list[bytes]:
    """Requests over a few rounds: the same series again with later timestamps, some stale."""
    pool = []
    for i in range(draw(st.integers(1, 8))):
        labels = {"__name__": draw(st.sampled_from(NAMES)), "i": str(i)}
        for name in ("instance", "job", "namespace", "pod", "exported_job"):
            if draw(st.booleans()):
                labels[name] = draw(st.sampled_from(["a:1", "b", "api", "web:90"]))
        pool.append(labels)
    for k in range(draw(st.integers(0, 3))):
        pool.append(_ksm(f"app{k}", draw(st.sampled_from(["True", "False", "Unknown"]))))
    requests = []
    for round_ in range(draw(st.integers(1, 3))):
        items = []
        for labels in pool:
            value = draw(st.sampled_from([1.0, 0.0, STALE_NAN, 2.5]))
            items.append(
                Series(tuple(sorted(labels.items())), (Sample(value, 1000 + 10 * round_),))
            )
        metadata = (FamilyMetadata("up", MetricType.GAUGE, "help", ""),) if round_ == 0 else ()
        requests.append(rw1.encode(Batch(tuple(items), metadata)))
    if draw(st.booleans()):
        # Metadata in a request of its own, as Prometheus sends it every send_interval.
        alone = tuple(
            FamilyMetadata(name, MetricType.GAUGE, f"{name} help", "")
            for name in (*NAMES, "gotk_resource_info")
        )
        requests.insert(draw(st.integers(0, len(requests))), rw1.encode(Batch((), alone)))
    return requests


def _relay(text: str) -> Relay:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yml"
        path.write_text(text)
        return Relay(config_module.load_file(path), Telemetry())


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _held(relay: Relay) -> dict[str, Any]:
    """Per destination: per (shard, tenant), each series' points in order; and the metadata."""
    out: dict[str, Any] = {}
    for name, destination in relay.destinations.items():
        series: dict[tuple[int, str, Any], list[tuple[bytes, int]]] = defaultdict(list)
        metadata: set[Any] = set()
        protocol = destination.protocol
        for index, shard in enumerate(destination.queue.shards):
            by_tenant: dict[str, list[Entry]] = defaultdict(list)
            for entry in shard.entries:
                by_tenant[entry.tenant].append(entry)
            for tenant, entries in by_tenant.items():
                # What the destination is sent: its entries merged into one request.
                body = request_body(entries, protocol)
                batch = decode_entry(Entry(body, protocol, 0, 0, 0, tenant))
                for item in batch.series:
                    key = (index, tenant, item.labels)
                    series[key].extend((_bits(s.value), s.timestamp) for s in item.samples)
                metadata.update(batch.metadata)
                metadata.update(s.metadata for s in batch.series if s.metadata is not None)
        out[name] = (dict(series), metadata)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(), traffic(), st.booleans())
def test_the_bytes_path_queues_what_the_decoded_reference_queues(
    text: str, requests: list[bytes], as_v2: bool
) -> None:
    """``as_v2``: the requests come in remote write 2.0 (the metadata on each series), which
    the relay takes as 1.0 (``scan.scan_v2``), against the decoded 2.0 request admitted."""
    fast, reference = _relay(text), _relay(text)
    assert fast.fast is not None
    limits = fast.config.receiver
    for i, raw in enumerate(requests):
        now_ms = 2000 + i
        if as_v2 and rw2.to_v1 is not None:
            sent = rw2.from_v1(raw)
            found = scan.scan_v2(sent, limits, fast.fast)
            assert found is not None  # samples only: 1.0 carries them as the decoded path does
            scanned, held = found
            picked = scan.decode_picked(scanned, limits)
            assert admission.queue_scanned(fast, scanned, picked, now_ms).accepted
            decoded = rw2.decode(sent)
            assert held.samples == decoded.sample_count
            assert held.histograms == decoded.histogram_count
            assert reference.admit(decoded, now_ms, len(sent)).accepted
            continue
        scanned = scan.scan_request(snappy.compress(raw), raw, limits, fast.fast)
        picked = scan.decode_picked(scanned, limits)
        assert admission.queue_scanned(fast, scanned, picked, now_ms).accepted
        assert reference.admit(rw1.decode(raw), now_ms, len(raw)).accepted
    got, want = _held(fast), _held(reference)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}
    # What each destination's rules dropped and what had no tenant: counted alike.
    assert _dropped(fast) == _dropped(reference)
    # What /federate serves: the same series, values and metadata.
    assert (fast.federate is None) == (reference.federate is None)
    if fast.federate is not None and reference.federate is not None:
        assert fast.federate.render() == reference.federate.render()
    for name, destination in fast.destinations.items():
        tenant = getattr(destination.client, "tenant", None) is not None
        v2 = destination.protocol == Protocol.V2
        if not tenant and not v2:
            assert got[name][1] == want[name][1], name
        elif not v2:
            # The decoded path gives a request's metadata (the Flux rules' families included)
            # to every tenant of it; the bytes path gives the rules' families only to the
            # tenants of the rules' output, which is where the families are used.
            assert got[name][1] <= want[name][1], name
        else:
            # A 2.0 request holds metadata only on series: the reference encodes each entry as
            # 2.0 on its own, so a request of metadata alone leaves nothing; the bytes path
            # converts the merged send, whose series take their family's latest metadata in
            # it. Either way each is one the requests or the rules gave.
            assert got[name][1] <= want[name][1] | _sent_metadata(requests), name


def _dropped(relay: Relay) -> dict[tuple[str, str], float]:
    """Points dropped per (destination, reason), as /metrics shows them; those the global
    rules dropped under ("", "relabel_configs")."""
    registry = relay.telemetry.registry
    dropped = {
        (sample.labels["destination"], sample.labels["reason"]): sample.value
        for family in registry.collect()
        if family.name == "gotk_relay_samples_dropped"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value
    }
    dropped["", "relabel_configs"] = (
        registry.get_sample_value("gotk_relay_relabel_dropped_samples_total") or 0.0
    )
    return dropped


def _sent_metadata(requests: list[bytes]) -> set[Metadata | FamilyMetadata]:
    """Every family metadata the requests carry, as a 2.0 series carries it and as a decoded
    2.0 request gives it back (``rw2.decode``: each series' family's entry)."""
    sent = [m for raw in requests for m in rw1.decode(raw).metadata]
    return {Metadata(m.type, m.help, m.unit) for m in sent} | set(sent)


@pytest.mark.parametrize("keep_source", [True, False])
def test_a_flux_object_behind_rules_shards_and_tenants(keep_source: bool) -> None:
    """The synthesized series take the destination's rules, shards and tenants too."""
    text = yaml.safe_dump(
        {
            "flux": {"mode": "legacy", "keep_source": keep_source},
            "relabel_configs": [{"target_label": "cluster", "replacement": "prod"}],
            "remote_write": [
                {
                    "name": "d",
                    "url": "http://127.0.0.1:9/",
                    "queue_config": {"min_shards": 4, "max_shards": 4},
                    "tenant": {"label": "exported_namespace", "default": "other"},
                }
            ],
        }
    )
    fast = _relay(text)
    assert fast.fast is not None
    raw = rw1.encode(
        Batch(
            (
                Series(tuple(sorted(_ksm("apps", "False").items())), (Sample(1.0, 1000),)),
                Series((("__name__", "up"), ("job", "x")), (Sample(1.0, 1000),)),
            )
        )
    )
    scanned = scan.scan_request(snappy.compress(raw), raw, fast.config.receiver, fast.fast)
    picked = scan.decode_picked(scanned, fast.config.receiver)
    assert admission.queue_scanned(fast, scanned, picked, 2000).accepted
    (series, _), *_ = _held(fast).values()
    tenants = {(tenant, dict(labels)["__name__"]) for _, tenant, labels in series}
    assert ("flux-system", "gotk_reconcile_condition") in tenants
    assert ("other", "up") in tenants
    assert all(dict(labels)["cluster"] == "prod" for *_, labels in series)
    assert all("exported_namespace" not in dict(labels) for *_, labels in series)
    assert (("flux-system", "gotk_resource_info") in tenants) == keep_source


@pytest.mark.parametrize("rename", [True, False])
def test_a_series_the_global_rules_name_into_a_flux_input_is_read(rename: bool) -> None:
    """The Flux rules read what the global rules made: a series renamed into
    ``gotk_resource_info`` is an object's state, the one renamed out of it no longer is."""
    rule = (
        {"source_labels": ["__name__"], "regex": "ksm_alias", "target_label": "__name__",
         "replacement": "gotk_resource_info"}
        if rename
        else {"source_labels": ["__name__"], "regex": "gotk_(.*)", "target_label": "__name__",
              "replacement": "old_${1}"}
    )  # fmt: skip
    text = yaml.safe_dump(
        {
            "flux": {"mode": "legacy"},
            "relabel_configs": [rule, {"target_label": "cluster", "replacement": "prod"}],
            "remote_write": [{"name": "d", "url": "http://127.0.0.1:9/"}],
        }
    )
    fast, reference = _relay(text), _relay(text)
    assert fast.fast is not None and fast.fast.relabel is not None
    assert not fast.fast.relabel.keeps_names
    alias = {**_ksm("apps", "False"), "__name__": "ksm_alias"}
    raw = rw1.encode(
        Batch(
            (
                Series(tuple(sorted(alias.items())), (Sample(1.0, 1000),)),
                Series(tuple(sorted(_ksm("web", "True").items())), (Sample(1.0, 1000),)),
            )
        )
    )
    scanned = scan.scan_request(snappy.compress(raw), raw, fast.config.receiver, fast.fast)
    picked = scan.decode_picked(scanned, fast.config.receiver)
    assert admission.queue_scanned(fast, scanned, picked, 2000).accepted
    assert reference.admit(rw1.decode(raw), 2000, len(raw)).accepted
    got, want = _held(fast)["d"][0], _held(reference)["d"][0]
    assert got == want
    objects = {
        dict(labels)["name"]
        for _, _, labels in got
        if dict(labels)["__name__"] == "gotk_reconcile_condition"
    }
    assert objects == ({"apps", "web"} if rename else set())


STEADY_VIEWS = {
    "shards-tenants": {
        "queue_config": {"min_shards": 4, "max_shards": 4},
        "tenant": {"label": "exported_namespace", "default": "other"},
    },
    "keep-flux": {
        "write_relabel_configs": [
            {"source_labels": ["__name__"], "regex": "gotk_.*", "action": "keep"}
        ]
    },
    "remote-write-2": {"protobuf_message": "io.prometheus.write.v2.Request"},
}


@pytest.mark.parametrize("view", STEADY_VIEWS.values(), ids=STEADY_VIEWS.keys())
def test_the_rules_steady_state_is_routed_like_the_rest(view: dict[str, Any]) -> None:
    """Scrape after scrape of unchanged Flux objects, the rules write their output without
    building series (FluxRewriter.steady); a destination with its own view of requests gets
    that output routed on its bytes, and holds what the decoded reference holds."""
    text = yaml.safe_dump(
        {
            "flux": {"mode": "legacy"},
            "remote_write": [
                {"name": "plain", "url": "http://127.0.0.1:9/a"},
                {"name": "view", "url": "http://127.0.0.1:9/b", **view},
            ],
        }
    )
    fast, reference = _relay(text), _relay(text)
    assert fast.fast is not None
    limits = fast.config.receiver
    spec = loadgen.WorkloadSpec("steady", series=400, batch_size=200, flux_fraction=0.05)
    workload = loadgen.Workload(spec, precompress=False)
    for round_ in range(3):
        for index in range(len(workload.batches)):
            raw = workload.raw(index, round_)
            now_ms = spec.timestamp(round_) + 500
            scanned = scan.scan_request(snappy.compress(raw), raw, limits, fast.fast)
            picked = scan.decode_picked(scanned, limits)
            assert admission.queue_scanned(fast, scanned, picked, now_ms).accepted
            assert reference.admit(rw1.decode(raw), now_ms, len(raw)).accepted
    assert _held(fast) == _held(reference)


@pytest.mark.parametrize("with_metadata", [False, True])
def test_entries_say_whether_their_request_held_families(with_metadata: bool) -> None:
    """A converting destination skips reading an entry for families when it holds none: the
    flag comes from the survey of the request, for what is forwarded and for every view."""
    relay = _relay(
        yaml.safe_dump(
            {
                "remote_write": [
                    {"name": "plain", "url": "http://127.0.0.1:9/a"},
                    {
                        "name": "sharded",
                        "url": "http://127.0.0.1:9/b",
                        "queue_config": {"min_shards": 2, "max_shards": 2},
                    },
                ]
            }
        )
    )
    assert relay.fast is not None
    metadata = (FamilyMetadata("up", MetricType.GAUGE, "h", ""),) if with_metadata else ()
    series = tuple(
        Series((("__name__", "up"), ("i", str(i))), (Sample(1.0, 1000),)) for i in range(8)
    )
    raw = rw1.encode(Batch(series, metadata))
    limits = relay.config.receiver
    scanned = scan.scan_request(snappy.compress(raw), raw, limits, relay.fast)
    assert scanned.families is with_metadata
    picked = scan.decode_picked(scanned, limits)
    assert admission.queue_scanned(relay, scanned, picked, 2000).accepted
    queued = [e for d in relay.destinations.values() for s in d.queue.shards for e in s.entries]
    assert len(queued) == 3 and {e.families for e in queued} == {with_metadata}
