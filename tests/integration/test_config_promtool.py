"""``remote_write`` and ``scrape_configs`` blocks judged by the relay and by ``promtool check
config`` (Prometheus 2.42): each key of a block pasted from prometheus.yml, with values Go takes
and values it refuses. The relay must accept what promtool accepts and refuse what it refuses,
except where it is stricter on purpose (a value Prometheus takes and then fails with, or that
asks for what the relay does not do): those are listed below with their reason, and the README
says each one. A key newer than Prometheus 2.42 is listed too (the relay follows Prometheus 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest

from gotk_relay.config import ConfigError, load_text
from tests.support.rig import promtool_check_config

REMOTE_WRITE: Final = "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n"
SCRAPE: Final = "scrape_configs:\n  - job_name: j\n    static_configs: [{targets: ['a:9']}]\n"

# Relabel rules, one at a time: every action with the fields it needs, lacks or must not have.
RELABEL_RULES: Final = [
    "{action: replace}",
    "{action: replace, target_label: ''}",
    "{action: replace, source_labels: [a], target_label: 'a b'}",
    "{action: replace, target_label: '${1}'}",
    "{action: replace, target_label: 'a-b'}",
    "{action: keep}",
    "{action: keep, source_labels: [a], regex: '(?i)a'}",
    "{action: keep, source_labels: [a], regex: 'a{1001}'}",
    "{action: keep, source_labels: [a], regex: '(?P<n>a)'}",
    "{action: keep, source_labels: [a], regex: 'a++'}",
    "{action: keep, source_labels: [a], regex: 'a(?=b)'}",
    "{action: keep, source_labels: [a], regex: '[[:alpha:]]'}",
    "{action: keep, source_labels: [a], regex: [a]}",
    "{action: hashmod, source_labels: [a], target_label: b}",
    "{action: hashmod, source_labels: [a], target_label: b, modulus: 18446744073709551615}",
    "{action: hashmod, source_labels: [a], target_label: b, modulus: -1}",
    "{action: labelmap, regex: '(.*)', replacement: '$1_x'}",
    "{action: labeldrop, regex: a, source_labels: [b]}",
    "{action: labeldrop, regex: a, replacement: b}",
    "{action: labelkeep, regex: a, separator: x}",
    "{action: lowercase, source_labels: [a], target_label: b}",
    "{action: lowercase, source_labels: [a]}",
    "{action: keepequal, source_labels: [a], target_label: b}",
    "{action: keepequal, source_labels: [a]}",
    "{action: dropequal, source_labels: [a], target_label: b, regex: x}",
    "{action: keepequal, source_labels: [a], target_label: b, replacement: z}",
    "{action: keepequal, source_labels: [a], target_label: b, regex: '(.*)'}",
    "{action: dropequal, source_labels: [a], target_label: b, separator: ';'}",
    "{action: Keep, source_labels: [a]}",
    "{action: ''}",
    "{source_labels: ['1a'], target_label: c}",
    "{source_labels: a, target_label: c}",
    "{target_label: a, replacement: 1.10}",
    "{target_label: a, nope: 1}",
    "{target_label: __name__, replacement: ''}",
    "{action: replace, target_label: a, replacement: 'é'}",
    "{action: replace, source_labels: [a], target_label: 'é'}",
]

# Each key with values as written in the YAML: valid, edge and invalid ones.
REMOTE_WRITE_VALUES: Final = {
    "remote_timeout": ["30s", "1m30s", "-1s", "10", "'30s'", "1.5s", "1d", ""],
    "name": ["a", "'a b'", "''", "1", "[a]"],
    "url": ["ftp://x/y", "'http://x:9/a'", "x", "''", "http://[::1]:9/a"],
    "send_exemplars": ["true", "false", "'true'", "yes", "on", "y", "N", "1", "TRUE", "null"],
    "send_native_histograms": ["true", "1", "'false'"],
    "follow_redirects": ["false", "0", "off"],
    "enable_http2": ["false", "no", "'no'"],
    "proxy_url": ["http://p:3128", "''"],
    "headers": [
        "{X-A: b}",
        "{x-a: [b]}",
        "{X-A: 1}",
        "{X-A: ''}",
        "{X-Scope-OrgID: 012}",
        "{Host: b}",
        "{User-Agent: a}",
        "{Authorization: a}",
        "{Content-Encoding: a}",
        "{X-Prometheus-Remote-Write-Version: a}",
    ],
    "queue_config": [
        "{capacity: 10}",
        "{capacity: '10'}",
        "{capacity: 1e3}",
        "{capacity: 0x10}",
        "{capacity: 1_000}",
        "{capacity: yes}",
        "{capacity: 9223372036854775807}",
        "{capacity: 9223372036854775808}",
        "{max_shards: 100000}",
        "{min_shards: 2, max_shards: 4}",
        "{max_samples_per_send: '5'}",
        "{batch_send_deadline: 5s}",
        "{min_backoff: 30ms, max_backoff: 5s}",
        "{min_backoff: 0s}",
        "{min_shards: 100}",
        "{retry_on_http_429: true}",
        "{retry_on_http_429: 'true'}",
        "{retry_on_http_429: x}",
        "{nope: 1}",
        "{}",
    ],
    "metadata_config": ["{send: false}", "{send: 'false'}", "{send_interval: 1m}", "{nope: 1}"],
    "basic_auth": [
        "{username: u, password: p}",
        "{username: u}",
        "{username: u, password: p, password_file: /etc/hostname}",
    ],
    "authorization": [
        "{credentials: c}",
        "{type: Basic, credentials: c}",
        "{credentials: c, credentials_file: /etc/hostname}",
    ],
    "tls_config": [
        "{insecure_skip_verify: true}",
        "{insecure_skip_verify: 'true'}",
        "{min_version: TLS13}",
        "{server_name: x}",
        "{nope: 1}",
    ],
    "write_relabel_configs": [
        "[{action: drop, regex: 'a.*', source_labels: [__name__]}]",
        "[{action: nope}]",
        "[{regex: '('}]",
        "[{action: hashmod, target_label: x, source_labels: [a], modulus: '3'}]",
        "[{action: labelmap, regex: '(.*)', replacement: 'x_$1'}]",
        "[{target_label: a, replacement: y}]",
        *(f"[{rule}]" for rule in RELABEL_RULES),
    ],
    "unknown_key": ["1"],
}
SCRAPE_VALUES: Final = {
    "honor_labels": ["true", "'true'", "1", "y"],
    "honor_timestamps": ["false", "'false'"],
    "scrape_interval": ["15s", "'15s'", "15", "0s"],
    "scrape_timeout": ["5s", "0s", "2m"],
    "sample_limit": ["10", "'10'", "-1", "true"],
    "label_limit": ["0", "'3'"],
    "body_size_limit": ["10MB", "'10MB'", "10", "10KiB", "-1"],
    "metrics_path": ["/m", "m", "''"],
    "scheme": ["http", "https"],
    "params": ["{a: [b]}", "{a: b}"],
    "metric_relabel_configs": ["[{action: drop, regex: x, source_labels: [__name__]}]"],
}

# Where the relay is stricter on purpose: (block, key, value) → why (the README says each).
STRICTER: Final = {
    ("remote_write", "remote_timeout", "0s"): "Prometheus takes it, then fails every request",
    ("remote_write", "queue_config", "{capacity: 0}"): "a queue that holds nothing",
    ("remote_write", "queue_config", "{capacity: 1.5}"): "Go's YAML drops the fraction",
    ("remote_write", "queue_config", "{min_shards: 0}"): "no stream to send on",
    ("remote_write", "queue_config", "{min_shards: 5, max_shards: 2}"): (
        "the relay runs min_shards streams, never fewer"
    ),
    ("remote_write", "queue_config", "{max_samples_per_send: 0}"): "a send of nothing",
    ("remote_write", "queue_config", "{batch_send_deadline: 0s}"): "a send that never waits",
    ("remote_write", "queue_config", "{min_backoff: 1s, max_backoff: 1ms}"): (
        "a backoff that shrinks"
    ),
    ("remote_write", "queue_config", "{min_backoff: 0s}"): "retries without pause",
    ("remote_write", "metadata_config", "{send_interval: 2m}"): (
        "metadata goes in the requests it came in; the relay has no interval of its own"
    ),
    ("remote_write", "bearer_token", "t"): "deprecated: authorization: {credentials: ...}",
    ("remote_write", "bearer_token_file", "/etc/hostname"): (
        "deprecated: authorization: {credentials_file: ...}"
    ),
    ("remote_write", "oauth2", "{client_id: a, client_secret: b, token_url: 'http://x/'}"): (
        "not supported yet, rather than requests sent unsigned"
    ),
    ("remote_write", "sigv4", "{region: us-east-1}"): "not supported yet",
    ("remote_write", "tls_config", "{cert_file: /etc/hostname}"): (
        "a client certificate without its key (Prometheus 2.42 finds out at the first send)"
    ),
    ("remote_write", "proxy_url", "'socks5://p:1080'"): "an http(s) proxy only",
    ("scrape_configs", "scheme", "HTTP"): "http or https, as written by Prometheus' docs",
    ("scrape_configs", "target_limit", "1"): "only meaningful with service discovery",
    ("remote_write", "write_relabel_configs", "[{action: uppercase, target_label: '$1'}]"): (
        "Prometheus 3 refuses it too: the case actions write one label, named as written"
    ),
}
# Keys Prometheus 2.42 does not know yet, which the relay takes as Prometheus 3 does.
NEWER: Final = {
    ("remote_write", "queue_config", "{sample_age_limit: 1m}"): "Prometheus 2.50",
    ("remote_write", "round_robin_dns", "true"): "Prometheus 3",
    ("remote_write", "protobuf_message", "io.prometheus.write.v2.Request"): "Prometheus 2.54",
    ("scrape_configs", "enable_compression", "false"): "Prometheus 2.49",
    ("scrape_configs", "scrape_protocols", "[PrometheusText0.0.4]"): "Prometheus 2.49",
    ("remote_write", "write_relabel_configs", "[{action: drop, regex: '(?<n>a)'}]"): (
        "Go 1.22's regexp syntax, which Prometheus 3 is built with"
    ),
}


def cases() -> Iterator[tuple[str, str, str, str]]:
    values = [
        *(("remote_write", k, v) for k, vs in REMOTE_WRITE_VALUES.items() for v in vs),
        *(("scrape_configs", k, v) for k, vs in SCRAPE_VALUES.items() for v in vs),
        *STRICTER,
        *NEWER,
    ]
    for block, key, value in values:
        base = REMOTE_WRITE if block == "remote_write" else SCRAPE
        yield block, key, value, f"{base}    {key}: {value}\n"


def promtool_takes(tmp: Path, index: int, text: str) -> tuple[bool, str]:
    path = tmp / f"prometheus-{index}.yml"
    path.write_text(text)
    return promtool_check_config(path)


def relay_takes(text: str) -> tuple[bool, str]:
    try:
        load_text(text, "<test>", environ={})
    except ConfigError as exc:
        return False, str(exc)
    return True, ""


@pytest.fixture(scope="module")
def verdicts(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[tuple[tuple[str, str, str], bool, str, bool, str]]:
    tmp = tmp_path_factory.mktemp("promtool")
    found = list(cases())
    with ThreadPoolExecutor(4) as pool:
        oracle = list(pool.map(lambda c: promtool_takes(tmp, c[0], c[1][3]), enumerate(found)))
    out = []
    for (block, key, value, text), (prom_ok, prom_says) in zip(found, oracle, strict=True):
        ok, says = relay_takes(text)
        out.append(((block, key, value), prom_ok, prom_says, ok, says))
    return out


def test_the_relay_takes_what_promtool_takes_and_refuses_what_it_refuses(
    verdicts: list[tuple[tuple[str, str, str], bool, str, bool, str]],
) -> None:
    differ = []
    for case, prom_ok, prom_says, ok, says in verdicts:
        if ok == prom_ok:
            continue
        if not ok and case in STRICTER:
            continue
        if ok and case in NEWER:
            continue
        differ.append(
            f"{case}: promtool {'takes' if prom_ok else prom_says!r}, relay {says or 'takes'}"
        )
    assert not differ, "\n".join(differ)
    assert sum(1 for _, prom_ok, *_ in verdicts if not prom_ok) >= 20  # both verdicts seen


def test_where_the_relay_is_stricter_it_says_why_and_promtool_still_takes_it(
    verdicts: list[tuple[tuple[str, str, str], bool, str, bool, str]],
) -> None:
    """Each listed difference is still one (promtool takes it, the relay refuses it naming the
    key and its line), so the list cannot outlive the behaviour it excuses."""
    seen = {case: (prom_ok, ok, says) for case, prom_ok, _, ok, says in verdicts}
    for case in STRICTER:
        prom_ok, ok, says = seen[case]
        assert prom_ok and not ok, case
        assert says.startswith("<test>:"), says
        assert case[1] in says, says
    for case in NEWER:
        prom_ok, ok, says = seen[case]
        assert ok and not prom_ok, case
