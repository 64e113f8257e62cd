"""When a request may skip decoding: only when no rule, destination or store could need it."""

from __future__ import annotations

import pytest

from gotk_relay.config import load_text
from gotk_relay.relay import Relay
from gotk_relay.telemetry import Telemetry
from gotk_relay.wire import picked
from gotk_relay.write.views import LABEL_SET_BYTES, label_cache_bound, plan

BASE = ""  # the default configuration: strict validation (receiver.validation: full)


@pytest.mark.parametrize(
    ("extra", "watched"),
    [
        ("", {b"gotk_resource_info", b"flux_resource_info", b"gotk_"}),
        ("flux: {mode: 'off'}\n", {b"gotk_"}),
        (
            "flux: {mode: both}\nfederate: {enabled: false}\n",
            {
                b"gotk_resource_info",
                b"flux_resource_info",
                b"gotk_reconcile_condition",
                b"gotk_suspend_status",
            },
        ),
        (
            "federate: {match: ['up', '{__name__=~\"kube_pod_.*\"}']}\n",
            {b"gotk_resource_info", b"flux_resource_info", b"up", b"kube_pod_"},
        ),
        (
            "remote_write: [{url: 'http://a/'}]\ndatadog: [{url: 'http://b/', api_key: k}]\n",
            {b"gotk_resource_info", b"flux_resource_info", b"gotk_"},
        ),
    ],
    ids=["default", "flux-off", "flux-both-no-federate", "federate-selectors", "rw-and-datadog"],
)
def test_the_watched_names_are_what_rules_and_the_store_look_at(
    extra: str, watched: set[bytes]
) -> None:
    fast = plan(load_text(BASE + extra))
    assert fast is not None and fast.watched == watched


@pytest.mark.parametrize(
    "validation", [pytest.param("full", id="strict"), pytest.param("framing", id="framing")]
)
def test_both_validations_take_the_fast_path(validation: str) -> None:
    """Strictness is checked in the compiled scan itself: it costs no decode."""
    fast = plan(load_text(f"receiver: {{validation: {validation}}}\n"))
    assert fast is not None and fast.watched == {
        b"gotk_resource_info",
        b"flux_resource_info",
        b"gotk_",
    }


@pytest.mark.parametrize(
    ("extra", "as_received"),
    [
        ("relabel_configs: [{target_label: cluster, replacement: a}]\n", True),
        ("remote_write: [{url: 'http://a/', queue_config: {min_shards: 2}}]\n", False),
        (
            "remote_write: [{url: 'http://a/', write_relabel_configs: "
            "[{action: labeldrop, regex: pod}]}]\n",
            False,
        ),
        ("remote_write: [{url: 'http://a/', tenant: {label: team}}]\n", False),
        (
            "remote_write: [{url: 'http://a/', protobuf_message: io.prometheus.write.v2.Request}]\n",
            False,
        ),
        ("datadog: [{api_key: k}]\n", True),
    ],
    ids=["global-relabel", "shards", "write-relabel", "tenant", "v2-destination", "datadog"],
)
def test_every_configuration_takes_the_fast_path(extra: str, as_received: bool) -> None:
    """Rules, shards, tenants and other messages are applied on the bytes (routing.py): only the
    destinations that take the request as it came skip routing."""
    fast = plan(load_text(BASE + extra))
    assert fast is not None
    assert all(view.as_received == as_received for view in fast.views.values())
    assert (fast.relabel is not None) == extra.startswith("relabel_configs")


def test_destinations_that_see_alike_share_one_view() -> None:
    fast = plan(
        load_text(
            "remote_write:\n"
            "- {url: 'http://a/', queue_config: {min_shards: 4, max_shards: 4}}\n"
            "- {url: 'http://b/', queue_config: {min_shards: 4, max_shards: 4}}\n"
            "- {url: 'http://c/', queue_config: {min_shards: 2, max_shards: 2}}\n"
        )
    )
    assert fast is not None
    a, b, c = fast.views.values()
    assert a is b and a is not c


@pytest.mark.parametrize(
    "extra",
    [
        "federate: {match: ['{job=\"x\"}']}\n",
        "federate: {match: ['{__name__=~\"(?i)gotk.*\"}']}\n",
    ],
    ids=["federate-any-name", "federate-regex-without-prefix"],
)
def test_every_series_is_picked_when_the_federate_store_needs_every_series(extra: str) -> None:
    """A selector that may match any name: every series is picked for the store (through the
    decoder's label cache), and the request is still forwarded as it came."""
    fast = plan(load_text(BASE + extra))
    assert fast is not None
    assert fast.prefixes == frozenset({b""})
    assert all(view.as_received for view in fast.views.values())


@pytest.mark.parametrize("keep_source", [True, False])
def test_a_name_where_prometheus_would_not_put_it_is_scanned_the_exact_way(
    keep_source: bool,
) -> None:
    """A Flux name in another series' label value is not mistaken for a metric name."""
    from gotk_relay.model import Batch, Sample, Series, labels_from
    from gotk_relay.wire import rw1, snappy
    from gotk_relay.write import scan

    config = load_text(BASE + f"flux: {{keep_source: {str(keep_source).lower()}}}\n")
    fast = plan(config)
    assert fast is not None
    flux = Series(
        labels_from({"__name__": "gotk_resource_info", "name": "apps", "ready": "True"}),
        (Sample(1.0, 1000),),
    )
    hiding = Series(
        labels_from({"__name__": "up", "job": "gotk_resource_info"}), (Sample(1.0, 1000),)
    )
    raw = rw1.encode(Batch((hiding, flux, hiding)))
    scanned = scan.scan_request(snappy.compress(raw), raw, config.receiver, fast)
    assert scanned.picked == [rw1.encode(Batch((flux,)))[2:]]
    assert scanned.forward_points == (3 if keep_source else 2)


@pytest.mark.parametrize(
    ("extra", "entries"),
    [
        ("flux: {max_objects: 1000}\nfederate: {enabled: false}\n", 1000),
        ("flux: {mode: resource_info, max_objects: 1000}\nfederate: {enabled: false}\n", 5000),
        ("flux: {mode: both, max_objects: 1000}\nfederate: {max_series: 7}\n", 6007),
        ("flux: {mode: 'off'}\nfederate: {max_series: 7}\n", 7),
    ],
    ids=["legacy", "resource-info", "both-and-federate", "federate-only"],
)
def test_the_label_cache_bound_is_what_the_relay_tracks(extra: str, entries: int) -> None:
    """Every input of flux.max_objects objects, and every series the store may keep."""
    assert label_cache_bound(load_text(extra)) == (entries, entries * LABEL_SET_BYTES)


def test_the_default_label_cache_bound_fits_a_full_fleet() -> None:
    """100,000 objects' gotk_resource_info label sets (~555 B encoded each) fit at once."""
    config = load_text(BASE)
    entries, key_bytes = label_cache_bound(config)
    assert config.flux.max_objects == 100_000
    assert entries >= 100_000 and key_bytes >= 100_000 * 555


def test_the_relay_bounds_the_label_caches_from_its_config() -> None:
    saved = picked.LABEL_CACHES.limit, picked.BUDGET.key_bytes
    try:
        config = load_text("flux: {max_objects: 300000}\n")
        Relay(config, Telemetry())
        entries, key_bytes = label_cache_bound(config)
        assert (picked.LABEL_CACHES.limit, picked.BUDGET.key_bytes) == (entries, key_bytes)
    finally:
        picked.bound(*saved)
