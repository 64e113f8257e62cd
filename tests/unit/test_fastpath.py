"""When a request may skip decoding: only when no rule, destination or store could need it."""

from __future__ import annotations

import pytest

from gotk_relay.config import load_text
from gotk_relay.fastpath import plan

BASE = "receiver: {validation: framing}\n"


@pytest.mark.parametrize(
    ("extra", "watched"),
    [
        ("", {b"gotk_resource_info", b"gotk_"}),
        ("flux: {mode: 'off'}\n", {b"gotk_"}),
        (
            "flux: {mode: both}\nfederate: {enabled: false}\n",
            {b"gotk_resource_info", b"gotk_reconcile_condition", b"gotk_suspend_status"},
        ),
        (
            "federate: {match: ['up', '{__name__=~\"kube_pod_.*\"}']}\n",
            {b"gotk_resource_info", b"up", b"kube_pod_"},
        ),
        (
            "remote_write: [{url: 'http://a/'}]\ndatadog: [{url: 'http://b/', api_key: k}]\n",
            {b"gotk_resource_info", b"gotk_"},
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
    "extra",
    [
        "receiver: {validation: full}\n",
        "relabel_configs: [{target_label: cluster, replacement: a}]\n",
        "remote_write: [{url: 'http://a/', queue_config: {min_shards: 2}}]\n",
        "remote_write: [{url: 'http://a/', write_relabel_configs: [{action: labeldrop, regex: pod}]}]\n",
        "remote_write: [{url: 'http://a/', tenant: {label: team}}]\n",
        "remote_write: [{url: 'http://a/', protobuf_message: io.prometheus.write.v2.Request}]\n",
        "federate: {match: ['{job=\"x\"}']}\n",
        "federate: {match: ['{__name__=~\"(?i)gotk.*\"}']}\n",
    ],
    ids=[
        "full-validation",
        "global-relabel",
        "shards",
        "write-relabel",
        "tenant",
        "v2-destination",
        "federate-any-name",
        "federate-regex-without-prefix",
    ],
)
def test_every_request_is_decoded_when_something_could_need_it(extra: str) -> None:
    text = extra if extra.startswith("receiver") else BASE + extra
    assert plan(load_text(text)) is None
