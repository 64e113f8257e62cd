"""Configuration: Prometheus-compatible keys and defaults, and errors that say where and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from gotk_relay.config import ConfigError, default_config_text, load_file, load_text
from gotk_relay.units import parse_bytes, parse_duration
from tests.support.rig import promtool_check_config

PASTED_FROM_PROMETHEUS = """
remote_write:
  - url: https://prometheus-prod-01.grafana.net/api/prom/push
    name: grafana-cloud
    remote_timeout: 30s
    headers:
      X-Scope-OrgID: team-a
    basic_auth:
      username: "123456"
      password_file: {secret}
    tls_config:
      insecure_skip_verify: false
    write_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop
    queue_config:
      capacity: 20000
      max_shards: 30
      min_shards: 2
      max_samples_per_send: 5000
      batch_send_deadline: 10s
      min_backoff: 100ms
      max_backoff: 10s
      retry_on_http_429: true
    metadata_config:
      send: true
      send_interval: 1m
    send_exemplars: true
  - url: http://vm:8428/api/v1/write
    authorization:
      credentials: ${{VM_TOKEN}}
"""


def test_a_block_pasted_from_prometheus_yml_loads(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = load_text(
        PASTED_FROM_PROMETHEUS.format(secret=secret), "relay.yml", {"VM_TOKEN": "tok"}
    )
    grafana, vm = config.remote_write
    assert grafana.queue_config.min_backoff == 0.1
    assert grafana.queue_config.batch_send_deadline == 10.0
    assert grafana.basic_auth is not None and grafana.basic_auth.resolve_password() == "s3cret"
    assert vm.authorization is not None and vm.authorization.resolve_credentials() == "tok"
    assert (
        vm.queue_config.capacity == 100_000
    )  # ten times Prometheus' per-shard default: no resharding
    assert vm.protobuf_message == "prometheus.WriteRequest"


def test_secrets_do_not_show_in_the_config_repr() -> None:
    config = load_text(
        "remote_write: [{url: 'http://a/', basic_auth: {username: u, password: hunter2}}]"
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.model_dump())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "remote_write:\n  - url: http://a/\n    queue_config:\n      capacty: 5\n",
            "relay.yml:4: remote_write[0].queue_config.capacty: field capacty not found in type queue_config",
        ),
        ("remote_write:\n  - url: ftp://a/\n", "relay.yml:2: remote_write[0].url: "),
        (
            "remote_write:\n  - url: http://a/\n    remote_timeout: 5 minutes\n",
            'not a valid duration string: "5 minutes"',
        ),
        (
            "remote_write:\n  - url: http://a/\n    headers: {Content-Type: text/plain}\n",
            "Content-Type is a reserved header",
        ),
        (
            "remote_write:\n  - url: http://a/\n    bearer_token_file: /t\n",
            "remote_write[0].bearer_token_file: field bearer_token_file not found in type "
            "remote_write (use authorization: {credentials_file: ...} instead)",
        ),
        (
            "remote_write:\n  - url: http://a/\n    sigv4: {region: eu-west-1}\n",
            "sigv4 is not supported by gotk-relay yet",
        ),
        (
            "remote_write:\n  - url: http://a/\n    protobuf_message: foo\n",
            "remote_write[0].protobuf_message",
        ),
        (
            "remote_write:\n  - {url: 'http://a/', name: x}\n  - {url: 'http://b/', name: x}\n",
            "duplicate destination name 'x'",
        ),
        (
            "remote_write:\n  - url: http://a/\n    headers: {'X A': v}\n",
            "remote_write[0].headers: invalid header name 'X A'",
        ),
        (
            "remote_write:\n  - url: http://a/\n  - url: http://a/\n",
            "remote_write[1]: duplicate remote write configs are not allowed, found duplicate "
            "for URL: http://a/",
        ),
        (
            "remote_write:\n  - url: http://a/\n    basic_auth: {password: a, password_file: /b}\n",
            "at most one of basic_auth password & password_file",
        ),
        (
            "remote_write:\n  - url: http://a/\n    queue_config: {min_shards: 5, max_shards: 2}\n",
            "min_shards (5) must not be greater than max_shards (2)",
        ),
        ("federate:\n  match: ['up{']\n", "federate.match"),
        ("remote_write: [\n", "relay.yml:2: invalid YAML"),
        ("- 1\n", "must be a YAML mapping"),
        (
            "remote_write:\n  - url: http://a/\n    headers: {X-Token: '${NOPE}'}\n",
            "remote_write[0].headers.X-Token: environment variable ${NOPE} is not set",
        ),
    ],
    ids=[
        "unknown-key-with-line",
        "bad-url",
        "bad-duration",
        "reserved-header",
        "bearer-token-file",
        "sigv4",
        "bad-protobuf-message",
        "duplicate-name",
        "bad-header-name",
        "twin-remote-write",
        "two-passwords",
        "shards",
        "bad-selector",
        "bad-yaml",
        "not-a-mapping",
        "missing-env",
    ],
)
def test_errors_name_the_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "relay.yml", {})
    assert expected in str(info.value)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"/nonexistent\.yml"):
        load_file("/nonexistent.yml")


def test_dollar_dollar_is_a_literal_dollar() -> None:
    config = load_text("remote_write: [{url: 'http://a/', headers: {X-A: 'a$$b'}}]", environ={})
    assert config.remote_write[0].headers == {"X-A": "a$b"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("1m30s", 90),
        ("100ms", 0.1),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        ("1y", 31536000),
        ("1m", 60),
        ("1h30m", 5400),
        (0, 0),
        ("0", 0),
    ],
    ids=["s", "m-s", "ms", "h", "d", "w", "y", "m", "h-m", "zero", "zero-text"],
)
def test_durations_parse_like_prometheus(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "written",
    ["30", "1.5", "-5", "nan", ".inf", "1e3", "' 30s'", "1.5s", "''", "1000000y", "true"],
)
def test_durations_prometheus_refuses_are_refused(written: str) -> None:
    """promtool 2.42 refuses each of these (``not a valid duration string``); read as seconds
    they meant no timeout (-5, nan), a crashing sender (.inf) or retries without backoff."""
    with pytest.raises(
        ConfigError,
        match=r"remote_write\[0\]\.remote_timeout: (not a valid "
        r"duration string|duration out of range)",
    ):
        load_text(f"remote_write: [{{url: 'http://a/', remote_timeout: {written}}}]", "relay.yml")


def test_a_zero_remote_timeout_is_refused() -> None:
    """Prometheus takes 0s and fails every request at once: refused, not read as no timeout."""
    with pytest.raises(ConfigError, match=r"remote_timeout: Input should be greater than 0"):
        load_text("remote_write: [{url: 'http://a/', remote_timeout: 0s}]")


def test_flux_keys_also_take_seconds_but_not_negative_or_endless() -> None:
    assert load_text("flux: {idle_expiry: 3600}").flux.idle_expiry == 3600
    assert load_text("flux: {idle_expiry: 2h}").flux.idle_expiry == 7200
    for written in ("-1", ".nan", ".inf"):
        with pytest.raises(ConfigError, match=r"flux\.idle_expiry"):
            load_text(f"flux: {{idle_expiry: {written}}}")


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("1KB", 1024),
        ("10MB", 10 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1MB512KB", 1024**2 + 512 * 1024),
    ],
)
def test_body_size_limit_reads_sizes_as_prometheus_does(written: str, size: int) -> None:
    """alecthomas/units' base-2 bytes, as Prometheus reads ``body_size_limit``: KB is 1024."""
    config = load_text(
        f"scrape_configs: [{{job_name: j, body_size_limit: {written}, "
        "static_configs: [{targets: ['h:1']}]}]"
    )
    assert config.scrape_configs[0].body_size_limit == size


@pytest.mark.parametrize("written", ["1000", "10mb", "'10 MB'", "-1KB", "1.5"])
def test_body_size_limit_prometheus_refuses_are_refused(written: str) -> None:
    with pytest.raises(ConfigError, match="body_size_limit: not a valid size"):
        load_text(
            f"scrape_configs: [{{job_name: j, body_size_limit: {written}, "
            "static_configs: [{targets: ['h:1']}]}]"
        )


def test_numbers_are_taken_as_written_where_a_string_is_expected() -> None:
    """Go's YAML gives a string key the text as written; PyYAML's YAML 1.1 numbers would have
    turned a version 1.10 into 1.1, 010 into 8, 12:30 into 750."""
    config = load_text(
        "remote_write: [{url: 'http://a/', headers: {X-Scope-OrgID: 012345}}]\n"
        "relabel_configs:\n"
        "  - {target_label: version, replacement: 1.10}\n"
        "  - {target_label: octal, replacement: 010}\n"
        "  - {target_label: clock, replacement: 12:30}\n"
        "  - {source_labels: [a, b], separator: 1.50, target_label: joined}\n"
    )
    assert config.remote_write[0].headers == {"X-Scope-OrgID": "012345"}
    rules = config.relabel_configs
    assert [r.replacement for r in rules[:3]] == ["1.10", "010", "12:30"]
    assert rules[3].separator == "1.50"
    assert config.remote_write[0].queue_config.capacity == 100_000  # numbers stay numbers


def test_a_key_given_twice_is_refused() -> None:
    """Go refuses it ("already set"); the last one silently winning could turn keep into drop."""
    text = "relabel_configs:\n  - source_labels: [a]\n    action: keep\n    action: drop\n"
    with pytest.raises(ConfigError, match=r"relay.yml:4: invalid YAML: key 'action' already set"):
        load_text(text, "relay.yml")


def test_an_empty_section_is_unset() -> None:
    """``key:`` with nothing after it, as Helm templates render an empty block: Prometheus
    reads it as unset."""
    config = load_text(
        "remote_write:\n"
        "  - url: http://a/\n"
        "    write_relabel_configs:\n"
        "    queue_config:\n"
        "    tls_config:\n"
        "scrape_configs:\n"
        "  - job_name: j\n"
        "    static_configs:\n"
        "      - targets: ['h:1']\n"
        "        labels:\n"
        "relabel_configs:\n"
    )
    destination = config.remote_write[0]
    assert destination.write_relabel_configs == []
    assert destination.queue_config.capacity == 100_000
    assert config.relabel_configs == []
    assert config.scrape_configs[0].static_configs[0].labels == {}


def test_relabel_rules_are_not_expanded_from_the_environment() -> None:
    """``${name}`` in a relabel rule is a regex group and ``$$`` a literal ``$``, as in the
    prometheus.yml it is pasted from; the rest of the file is expanded."""
    config = load_text(
        "remote_write:\n"
        "  - url: '${URL}'\n"
        "    write_relabel_configs:\n"
        "      - {source_labels: [a], regex: '(?P<HOME>.*)', target_label: b, "
        "replacement: '${HOME}'}\n"
        "relabel_configs:\n"
        "  - {target_label: price, replacement: 'USD$$1'}\n",
        environ={"URL": "http://a/", "HOME": "/root"},
    )
    assert config.remote_write[0].write_relabel_configs[0].replacement == "${HOME}"
    assert config.relabel_configs[0].replacement == "USD$$1"


def test_retry_on_http_429_is_refused_where_429_is_always_retried() -> None:
    for section in ("datadog: [{api_key: k", "otlp: [{url: 'http://a/v1/metrics'"):
        with pytest.raises(ConfigError, match="retry_on_http_429 is remote write's"):
            load_text(f"{section}, queue_config: {{retry_on_http_429: false}}}}]")


def test_the_embedded_default_config_is_valid_and_has_federate_on() -> None:
    config = load_text(default_config_text(), "<embedded default>")
    assert config.federate.enabled
    assert config.federate.match == ['{__name__=~"gotk_.*"}']
    assert config.remote_write == []
    assert config.flux.mode == "legacy"


def test_config_dir_default_is_the_embedded_one() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert (repo / "config" / "default.yml").read_text() == default_config_text()


def test_example_configs_are_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    examples = sorted((repo / "config" / "examples").glob("*.yml"))
    assert examples, "config/examples/ must hold commented examples"
    for path in examples:
        load_file(path, {"GRAFANA_CLOUD_TOKEN": "x", "MIMIR_TENANT": "t"})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1048576, 1048576),
        ("512KiB", 524288),
        ("256MiB", 268435456),
        ("1GB", 10**9),
        ("2 GiB", 2 * 1024**3),
        ("100B", 100),
    ],
    ids=["int", "KiB", "MiB", "GB", "spaced", "B"],
)
def test_sizes_parse_si_and_iec(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


def test_a_bad_size_is_named() -> None:
    with pytest.raises(ConfigError, match=r"spool.max_bytes: not a valid size: \"lots\""):
        load_text("spool: {max_bytes: lots}", "relay.yml")


@pytest.mark.parametrize(
    "url",
    [
        "http://h:notaport/",
        "http://h:0/",
        "http://h:65536/",
        "http://h:-1/",
        "http:///api/v1/write",
        "ftp://h/",
        "h:9201/api/v1/write",
        "http://h x/",
        "http://[::1/",
    ],
    ids=[
        "port-word",
        "port-0",
        "port-too-big",
        "port-negative",
        "no-host",
        "scheme",
        "no-scheme",
        "space",
        "ipv6-unclosed",
    ],
)
def test_urls_are_checked_fully(url: str) -> None:
    for key in ("url", "proxy_url"):
        text = f"remote_write:\n  - url: http://a/\n    {key}: '{url}'\n".replace(
            "url: http://a/\n    url:", "url:"
        )
        with pytest.raises(ConfigError, match=rf"relay\.yml:\d+: remote_write\[0\]\.{key}: "):
            load_text(text, "relay.yml", {})


@pytest.mark.parametrize(
    "url",
    ["http://h/", "https://h:443/x", "http://[::1]:9201/api/v1/write", "http://u:p@h:1/?a=b"],
    ids=["plain", "port", "ipv6", "userinfo-query"],
)
def test_valid_urls_load(url: str) -> None:
    assert load_text(f"remote_write: [{{url: '{url}'}}]").remote_write[0].url == url


SECRET = "Sup3rSecretValue"


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ("remote_write: [{url: 'http://a/', remote_timeout: '${D}'}]", {"D": SECRET}),
        ("remote_write: [{url: '${U}'}]", {"U": f"http://{SECRET}:notaport/"}),
        ("remote_write: [{url: '${U}'}]", {"U": f"http://u:{SECRET}@h:99999/?k={SECRET}"}),
        ("remote_write: [{url: 'http://h:${P}/'}]", {"P": SECRET}),
        ("remote_write: [{url: 'http://a/', proxy_url: '${P}'}]", {"P": f"socks5://{SECRET}/"}),
        ("queues: {memory_budget_bytes: '${B}'}", {"B": SECRET}),
        (
            "remote_write: [{url: 'http://a/', tenant: {label: t, header: '${H}'}}]",
            {"H": "Authorization"},
        ),
        ("remote_write: [{url: 'http://a/', protobuf_message: '${M}'}]", {"M": SECRET}),
        (
            "remote_write: [{url: 'http://a/', tls_config: {server_name: '${S}', min_version: "
            "'${V}'}}]",
            {"S": "h", "V": SECRET},
        ),
        (
            "remote_write: [{url: 'http://a/', headers: {'${H}': v}, queue_config: "
            "{capacity: '${C}'}}]",
            {"C": SECRET, "H": "x"},
        ),
    ],
    ids=[
        "duration",
        "url-host",
        "url-userinfo",
        "url-port-part",
        "proxy",
        "size",
        "tenant-header",
        "literal",
        "tls-version",
        "int",
    ],
)
def test_errors_never_show_a_value_from_env(text: str, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "relay.yml", environ)
    message = str(info.value)
    assert message.startswith("relay.yml:1: ")
    for value in environ.values():
        if len(value) >= 3:
            assert value not in message
    assert "${" in message or "Input should be" in message


def test_metadata_config_accepts_prometheus_defaults_and_refuses_others() -> None:
    ok = load_text(
        "remote_write: [{url: 'http://a/', metadata_config: "
        "{send: false, send_interval: 1m, max_samples_per_send: 500}}]"
    )
    assert not ok.remote_write[0].metadata_config.send
    newer = load_text(
        "remote_write: [{url: 'http://a/', metadata_config: {max_samples_per_send: 2000}}]"
    )
    assert newer.remote_write[0].metadata_config.max_samples_per_send == 2000  # 2.44 and later
    for key, value in (("send_interval", "30s"), ("max_samples_per_send", "1000")):
        with pytest.raises(ConfigError, match=rf"metadata_config\.{key}: only Prometheus' default"):
            load_text(f"remote_write: [{{url: 'http://a/', metadata_config: {{{key}: {value}}}}}]")


def test_metadata_send_false_is_ignored_for_remote_write_2_with_a_warning() -> None:
    v2 = "protobuf_message: io.prometheus.write.v2.Request"
    text = f"remote_write: [{{url: 'http://a/', {v2}, metadata_config: {{send: false}}}}]"
    assert load_text(text, "<test>").warnings() == [
        "remote_write[0].metadata_config.send: false is ignored with protobuf_message: "
        "io.prometheus.write.v2.Request: metadata is always sent in remote write 2.0, on each "
        "series"
    ]
    v1 = "remote_write: [{url: 'http://a/', metadata_config: {send: false}}]"
    assert load_text(v1, "<test>").warnings() == []


def test_a_max_shards_above_min_shards_is_named_as_unused() -> None:
    """Prometheus adds shards up to max_shards under load; the relay runs min_shards, so a
    block tuned for the first (one stream of 500-sample requests here) is warned about."""
    queue = "{capacity: 2500, max_shards: 200, max_samples_per_send: 500}"
    warnings = load_text(f"remote_write: [{{url: 'http://a/', queue_config: {queue}}}]").warnings()
    assert warnings == [
        "remote_write[0].queue_config.max_shards: 200 is a bound only: gotk-relay sends on "
        "min_shards (1) ordered streams, one request of up to max_samples_per_send (500) points "
        "in flight each, and does not add shards under load; set min_shards to the streams the "
        "destination needs"
    ]
    for quiet in ("{min_shards: 4, max_shards: 4}", "{min_shards: 4}", "{}"):
        text = f"remote_write: [{{url: 'http://a/', queue_config: {quiet}}}]"
        assert load_text(text).warnings() == [], quiet


def test_batch_send_deadline_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="batch_send_deadline must be greater than 0"):
        load_text("remote_write: [{url: 'http://a/', queue_config: {batch_send_deadline: 0s}}]")


def test_defaults_follow_prometheus_where_the_relay_does_the_same() -> None:
    rw = load_text("remote_write: [{url: 'http://a/'}]").remote_write[0]
    assert rw.enable_http2 is False  # Prometheus 3's remote-write default
    assert rw.metadata_config.send_interval == 60.0
    assert rw.metadata_config.max_samples_per_send == 2000  # Prometheus 2.44 and later
    # Forwarded as received unless switched off (see the comment in config.py).
    assert rw.send_exemplars and rw.send_native_histograms and not rw.strips


README = Path(__file__).resolve().parents[2] / "README.md"
# Each table of README's configuration reference, by its header, and where its keys live.
_TABLES = {
    "| key | default | meaning |": "",
    "| key | default | in gotk-relay |": "remote_write[]",
    "| `queue_config` key | default | in gotk-relay |": "remote_write[].queue_config",
}


def _readme_defaults() -> list[tuple[str, str]]:
    """(dotted key, default as written) for every row of the configuration reference tables."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration reference") : text.index("### Delivery rules")]
    rows: list[tuple[str, str]] = []
    prefix: str | None = None
    for line in section.splitlines():
        if line in _TABLES:
            prefix = _TABLES[line]
            continue
        if prefix is None or not line.startswith("| ") or line.startswith("|---"):
            if not line.startswith("|"):
                prefix = None
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        keys = [k.strip().strip("`") for k in cells[0].split(" / ")]
        defaults = [d.strip() for d in cells[1].split(" / ")] if len(keys) > 1 else [cells[1]]
        assert len(keys) == len(defaults), line
        for key, default in zip(keys, defaults, strict=True):
            rows.append((f"{prefix}.{key}" if prefix else key, default))
    return rows


def _model_value(key: str, written: str | None) -> object:
    """The configuration value at ``key``: its default (``written`` None) or as written."""
    from gotk_relay.config import Config

    parts = key.split(".")
    node: dict[str, object] = {}
    root: dict[str, object] = node
    if parts[0] == "remote_write[]":
        item: dict[str, object] = {"url": "http://a/"}
        root = {"remote_write": [item]}
        node, parts = item, parts[1:]
    if written is not None:
        leaf = node
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})  # type: ignore[assignment]
        leaf[parts[-1]] = yaml.safe_load(written)
    value: object = Config.model_validate(root)
    if key.startswith("remote_write[]"):
        value = value.remote_write[0]  # type: ignore[attr-defined]
    for part in parts:
        if value is None:
            return None
        value = getattr(value, part)
    return value


def test_readme_config_reference_defaults_are_the_code_defaults() -> None:
    rows = _readme_defaults()
    assert len(rows) > 30  # the tables were found
    wrong = []
    for key, written in rows:
        text = written.strip("`")
        expected = None if text.startswith("unset") else text
        default = _model_value(key, None)
        documented = None if expected is None else _model_value(key, expected)
        if documented != default:
            wrong.append(f"{key}: README says {written}, the code's default is {default!r}")
    assert wrong == []


_TEMPLATES = [
    "remote_write: [{url: 'http://a/', remote_timeout: '${V}'}]",
    "remote_write: [{url: '${V}'}]",
    "remote_write: [{url: 'http://${V}:x/'}]",
    "remote_write: [{url: 'http://h:${V}/'}]",
    "remote_write: [{url: 'http://a/', proxy_url: 'ftp://${V}/'}]",
    "queues: {memory_budget_bytes: '${V}'}",
    "remote_write: [{url: 'http://a/', tenant: {label: t, header: '${V}'}}]",
    "relabel_configs: [{source_labels: [a], regex: '(${V}'}]",
]


@given(
    template=st.sampled_from(_TEMPLATES),
    value=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")), min_size=3
    ).filter(lambda v: "$" not in v and "'" not in v),
)
def test_no_config_error_shows_a_value_from_env(template: str, value: str) -> None:
    # A value that is part of the config's own text ("mem" of memory_budget_bytes), of the
    # file's name (".ym") or of the message's own words ("val" of "not a valid") shows in the
    # message through that text, not from the environment: it proves nothing either way.
    assume(value not in template)
    try:
        load_text(template, "relay.yml", {"V": value})
    except ConfigError as exc:
        assume(value not in _message_without_env(template))
        assert value not in str(exc)


def _message_without_env(template: str) -> str:
    """The file's name and what the relay says of ``template`` with a value that cannot be
    anywhere in its text (the words every such message has)."""
    try:
        load_text(template, "relay.yml", {"V": "\u2603\u2603\u2603"})
    except ConfigError as exc:
        return f"relay.yml {exc}"
    return "relay.yml"


def test_tls_versions_take_prometheus_names_both_ways() -> None:
    """``min_version`` and ``max_version`` as Prometheus names them, TLS10 to TLS13, set on the
    destination's context; a maximum below the minimum is refused."""
    import ssl

    from gotk_relay.destinations.tls import client_ssl_context

    config = load_text(
        "remote_write: [{url: 'https://a/', tls_config: {min_version: TLS12, max_version: TLS12}}]"
    )
    context = client_ssl_context("https://a/", config.remote_write[0].tls_config)
    assert isinstance(context, ssl.SSLContext)
    assert (context.minimum_version, context.maximum_version) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_2,
    )
    assert load_text("otlp: [{url: 'https://a/', tls_config: {min_version: TLS10}}]")
    with pytest.raises(ConfigError, match="max_version TLS12 is lower than min_version TLS13"):
        load_text(
            "remote_write: [{url: 'https://a/', "
            "tls_config: {min_version: TLS13, max_version: TLS12}}]"
        )


def test_yaml_boolean_words_are_text_where_a_string_is_expected() -> None:
    """YAML 1.1's ``yes``/``no``/``on``/``off``: Go's YAML gives a string key the word and a
    bool key the truth value; PyYAML made them booleans, which string keys refused."""
    config = load_text(
        "remote_write: [{url: 'http://a/', send_exemplars: no, headers: {X-On: on}}]\n"
        "relabel_configs: [{target_label: enabled, replacement: yes}]\n"
        "scrape_configs: [{job_name: j, honor_labels: yes, "
        "static_configs: [{targets: ['h:1'], labels: {x: off}}]}]\n"
    )
    assert config.remote_write[0].send_exemplars is False
    assert config.remote_write[0].headers == {"X-On": "on"}
    assert config.relabel_configs[0].replacement == "yes"
    assert config.scrape_configs[0].honor_labels is True
    assert config.scrape_configs[0].static_configs[0].labels == {"x": "off"}


def _promtool_takes(tmp_path: Path, text: str) -> None:
    """``promtool check config`` (Prometheus 2.42) accepts ``text``."""
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    takes, said = promtool_check_config(path)
    assert takes, said


BOOLEAN_WORDS = """\
scrape_configs:
  - job_name: j
    honor_labels: TRUE
    static_configs: [{targets: ['h:1'], labels: {x: false, y: True}}]
    metric_relabel_configs: [{target_label: flux_managed, replacement: true}]
remote_write:
  - url: http://a/
    send_exemplars: False
    headers: {X-Flag: true}
    write_relabel_configs: [{target_label: enabled, replacement: FALSE}]
"""


def test_true_and_false_are_text_where_a_string_is_expected(tmp_path: Path) -> None:
    """``true`` and ``false`` too, in any case: Go's YAML gives a string key the word as
    written. promtool 2.42 takes this file; so does the relay, reading each word as Go does."""
    _promtool_takes(tmp_path, BOOLEAN_WORDS)
    config = load_text(BOOLEAN_WORDS)
    job = config.scrape_configs[0]
    assert job.honor_labels is True
    assert job.static_configs[0].labels == {"x": "false", "y": "True"}
    assert job.metric_relabel_configs[0].replacement == "true"
    destination = config.remote_write[0]
    assert destination.send_exemplars is False
    assert destination.headers == {"X-Flag": "true"}
    assert destination.write_relabel_configs[0].replacement == "FALSE"


EXPONENTS = """\
scrape_configs:
  - job_name: j
    static_configs: [{targets: ['h:1'], labels: {v: 1e3, w: 2.5E-2}}]
    metric_relabel_configs:
      - {source_labels: [a], target_label: s, action: hashmod, modulus: 1e3}
      - {source_labels: [b], target_label: t, action: hashmod, modulus: 2.5e2}
"""


def test_a_number_with_a_bare_exponent_is_a_number(tmp_path: Path) -> None:
    """``1e3`` is text to YAML 1.1 (PyYAML) and a number to Go's YAML: promtool takes it as a
    modulus, and so does the relay; a string key still gets the text as written."""
    _promtool_takes(tmp_path, EXPONENTS)
    job = load_text(EXPONENTS).scrape_configs[0]
    assert [rule.modulus for rule in job.metric_relabel_configs] == [1000, 250]
    assert job.static_configs[0].labels == {"v": "1e3", "w": "2.5E-2"}


def test_a_bool_or_number_key_refuses_a_quoted_value_as_go_does() -> None:
    """Go's YAML refuses a string into a bool or an int (``cannot unmarshal !!str``), a number
    into a bool, and an int over 64 bits; so does the relay, with Go's words."""
    base = "remote_write:\n  - url: http://a:9/w\n"
    refused = {
        "    send_exemplars: 'true'\n": "cannot unmarshal !!str `true` into bool (a quoted",
        "    follow_redirects: 0\n": "cannot unmarshal !!int `0` into bool",
        "    queue_config: {capacity: '10'}\n": "cannot unmarshal !!str `10` into int",
        "    queue_config: {capacity: on}\n": "cannot unmarshal !!bool `on` into int",
        "    queue_config: {capacity: 9223372036854775808}\n": "!!int `9223372...` into int",
    }
    for line, message in refused.items():
        with pytest.raises(ConfigError, match=r"^<config>:3: remote_write") as caught:
            load_text(base + line)
        assert message in str(caught.value)
    with pytest.raises(ConfigError, match=r"flux\.max_objects: cannot unmarshal !!str `5`"):
        load_text("flux: {max_objects: '5'}\n")


def test_a_value_from_the_environment_is_read_as_its_key_takes_it() -> None:
    """``${VAR}`` is the relay's, not Prometheus': its text is read as if written in place, so
    a number or a boolean can come from the environment, quoted or not."""
    text = (
        "remote_write:\n  - url: http://a:9/w\n    send_exemplars: ${EXEMPLARS}\n"
        "    queue_config:\n      capacity: '${CAPACITY}'\n      max_shards: ${SHARDS}\n"
    )
    env = {"EXEMPLARS": "false", "CAPACITY": "123", "SHARDS": "7"}
    destination = load_text(text, environ=env).remote_write[0]
    assert destination.send_exemplars is False
    assert (destination.queue_config.capacity, destination.queue_config.max_shards) == (123, 7)
    with pytest.raises(ConfigError, match="max_shards"):
        load_text(text, environ={**env, "SHARDS": "many"})


def test_y_and_n_are_yaml_v2_boolean_words() -> None:
    """yaml.v2 (Prometheus') reads ``y`` and ``n`` as booleans, which PyYAML does not: a bool
    key takes them, a string key keeps the letter."""
    text = (
        "remote_write:\n  - url: http://a:9/w\n    send_exemplars: n\n    enable_http2: Y\n"
        "    write_relabel_configs: [{target_label: a, replacement: y}]\n"
    )
    destination = load_text(text).remote_write[0]
    assert (destination.send_exemplars, destination.enable_http2) == (False, True)
    assert destination.write_relabel_configs[0].replacement == "y"


def test_scrape_zero_durations_and_a_path_without_its_slash_read_as_prometheus_reads_them() -> None:
    """``scrape_interval: 0s`` and ``scrape_timeout: 0s`` are Prometheus' defaults (the global
    ones, which the relay does not have: 1m and 10s), and a ``metrics_path`` without its
    leading ``/`` gets one, as Go's url.URL writes it."""
    text = (
        "scrape_configs:\n  - job_name: j\n    scrape_interval: 0s\n    scrape_timeout: 0s\n"
        "    metrics_path: stats/prometheus\n    static_configs: [{targets: ['a:9']}]\n"
    )
    job = load_text(text).scrape_configs[0]
    assert (job.scrape_interval, job.timeout, job.metrics_path) == (60.0, 10.0, "/stats/prometheus")
    short = text.replace("scrape_interval: 0s", "scrape_interval: 4s").replace("stats/", "")
    job = load_text(short).scrape_configs[0]
    assert (job.scrape_interval, job.timeout, job.metrics_path) == (4.0, 4.0, "/prometheus")


def test_an_empty_proxy_url_is_no_proxy() -> None:
    text = "remote_write:\n  - url: http://a:9/w\n    proxy_url: ''\n"
    assert load_text(text).remote_write[0].proxy_url is None


def test_one_url_twice_is_fine_when_the_blocks_differ() -> None:
    """Prometheus refuses only blocks alike in every key: the same URL with another name (or
    other rules, headers, ...) is another destination."""
    config = load_text(
        "remote_write:\n  - url: http://a/\n  - {url: 'http://a/', name: copy}\n", environ={}
    )
    assert len(config.destinations()) == 2
