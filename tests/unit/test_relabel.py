"""Relabeling must do exactly what Prometheus does with the same rules.

Every expected output below is derived by hand from Prometheus' documented semantics
(model/relabel/relabel.go and Go's regexp.Expand), never by running this implementation. Cases
marked "Prometheus' own" are taken from prometheus/model/relabel/relabel_test.go.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gotk_relay.config.base import ConfigError
from gotk_relay.config.loading import load_text
from gotk_relay.model import Labels
from gotk_relay.rules import relabel
from gotk_relay.rules.relabel import (
    NAMELESS,
    RelabelConfig,
    RuleSet,
    Step,
    compile_rules,
)

# ---------------------------------------------------------------------------------------------
# Helpers


def parse_series(text: str) -> Labels:
    """``name{k="v",...}`` → sorted Labels; keeps empty values so tests can feed them in."""
    text = text.strip()
    brace = text.find("{")
    name, body = (text, "") if brace < 0 else (text[:brace], text[brace + 1 : text.rindex("}")])
    pairs: list[tuple[str, str]] = [("__name__", name.strip())] if name.strip() else []
    i = 0
    while i < len(body):
        if body[i] in ", ":
            i += 1
            continue
        eq = body.index("=", i)
        key = body[i:eq].strip()
        assert body[eq + 1] == '"', f"value of {key} must be quoted in {text!r}"
        i = eq + 2
        value: list[str] = []
        while body[i] != '"':
            if body[i] == "\\":
                i += 1
                value.append({"n": "\n", "\\": "\\", '"': '"'}[body[i]])
            else:
                value.append(body[i])
            i += 1
        pairs.append((key, "".join(value)))
        i += 1
    return tuple(sorted(pairs))


def rules_from(text: str) -> RuleSet:
    loaded = yaml.safe_load(text)
    return compile_rules([RelabelConfig.model_validate(item) for item in loaded])


def prom_hashmod(value: str, modulus: int) -> str:
    """Prometheus' hashmod: md5 of the joined source value; the LAST 8 bytes of the digest read
    as a big-endian uint64 (``binary.BigEndian.Uint64(sum[8:])``), modulo ``modulus``, in decimal.
    """
    digest = hashlib.md5(value.encode()).digest()
    return str(int.from_bytes(digest[8:16], byteorder="big", signed=False) % modulus)


S = 'up{job="a",instance="b:9100"}'
K8S = (
    'up{__meta_kubernetes_pod_label_app="web",__meta_kubernetes_pod_label_tier="fe",'
    '__meta_kubernetes_namespace="ns",job="k"}'
)
PORTS = 'up{__tmp_port="1234",__port1="1234",__port2="5678"}'
ABC = 'x{a="foo",b="bar",c="baz"}'

# ---------------------------------------------------------------------------------------------
# The table: (rules YAML, input series, expected series or None when dropped)

CASES = [
    # -- replace -------------------------------------------------------------------------------
    pytest.param(
        "- source_labels: [instance]\n  target_label: host",
        S,
        'up{job="a",instance="b:9100",host="b:9100"}',
        id="replace-defaults-copy-label",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: host
""",
        S,
        'up{job="a",instance="b:9100",host="b"}',
        id="replace-capture-group",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: host
""",
        'up{job="a",instance="b"}',
        'up{job="a",instance="b"}',
        id="replace-no-match-is-noop",
    ),
    pytest.param(
        "- source_labels: [instance]\n  regex: b\n  target_label: matched\n  replacement: yes_",
        S,
        S,
        id="replace-regex-is-anchored",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: host
  replacement: '${1}_host'
""",
        S,
        'up{job="a",instance="b:9100",host="b_host"}',
        id="replace-brace-group-before-text",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: job
  replacement: '$1x'
""",
        S,
        'up{instance="b:9100"}',
        id="replace-dollar-1x-names-missing-group-so-deletes",
    ),
    pytest.param(
        "- target_label: tmpl\n  replacement: '$$1'",
        S,
        'up{job="a",instance="b:9100",tmpl="$1"}',
        id="replace-double-dollar-is-literal",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(?P<host>[^:]+):(?P<port>\d+)'
  target_label: port
  replacement: '${port}'
""",
        S,
        'up{job="a",instance="b:9100",port="9100"}',
        id="replace-named-group-braced",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(?P<host>[^:]+):(?P<port>\d+)'
  target_label: addr
  replacement: '$host-$port'
""",
        S,
        'up{job="a",instance="b:9100",addr="b-9100"}',
        id="replace-named-group-bare-stops-at-punctuation",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: 'b:(\d+)'
  target_label: whole
  replacement: '<$0>'
""",
        S,
        'up{job="a",instance="b:9100",whole="<b:9100>"}',
        id="replace-dollar-zero-is-whole-match",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: host
  replacement: '$1$2'
""",
        S,
        'up{job="a",instance="b:9100",host="b"}',
        id="replace-group-beyond-count-expands-empty",
    ),
    pytest.param(
        """
- source_labels: [instance]
  regex: '(a)?(b.*)'
  target_label: out
  replacement: '[$1]$2'
""",
        S,
        'up{job="a",instance="b:9100",out="[]b:9100"}',
        id="replace-unmatched-optional-group-expands-empty",
    ),
    pytest.param(
        "- target_label: env\n  replacement: prod",
        S,
        'up{job="a",instance="b:9100",env="prod"}',
        id="replace-static-label",
    ),
    pytest.param(
        "- target_label: instance\n  replacement: ''",
        S,
        'up{job="a"}',
        id="replace-empty-replacement-deletes",
    ),
    pytest.param(
        "- source_labels: [zone]\n  regex: ''\n  target_label: zone\n  replacement: unknown",
        S,
        'up{job="a",instance="b:9100",zone="unknown"}',
        id="replace-missing-source-is-empty-string",
    ),
    pytest.param(
        "- source_labels: [zone]\n  target_label: instance",
        S,
        'up{job="a"}',
        id="replace-copying-missing-label-deletes-target",
    ),
    pytest.param(
        "- source_labels: [job, instance]\n  target_label: key",
        S,
        'up{job="a",instance="b:9100",key="a;b:9100"}',
        id="replace-sources-joined-with-default-semicolon",
    ),
    pytest.param(
        "- source_labels: [job, instance]\n  separator: /\n  target_label: key",
        S,
        'up{job="a",instance="b:9100",key="a/b:9100"}',
        id="replace-custom-separator",
    ),
    pytest.param(
        "- source_labels: [job, instance]\n  separator: ''\n  target_label: key",
        S,
        'up{job="a",instance="b:9100",key="ab:9100"}',
        id="replace-empty-separator",
    ),
    pytest.param(
        "- source_labels: [job, zone, instance]\n  target_label: key",
        S,
        'up{job="a",instance="b:9100",key="a;;b:9100"}',
        id="replace-missing-middle-source-keeps-separators",
    ),
    pytest.param(  # Prometheus' own: regexes over joined sources, chained.
        """
- source_labels: [a, b]
  regex: 'f(.*);(.*)r'
  target_label: a
  replacement: 'b${1}${2}m'
- source_labels: [c, a]
  regex: '(b).*b(.*)ba(.*)'
  target_label: d
  replacement: '$1$2$2$3'
""",
        ABC,
        'x{a="boobam",b="bar",c="baz",d="boooom"}',
        id="replace-prometheus-joined-sources-chain",
    ),
    pytest.param(
        r"""
- source_labels: [tag]
  regex: '(\w+)=(\w+)'
  target_label: '$1'
  replacement: '$2'
""",
        'up{tag="team=infra"}',
        'up{tag="team=infra",team="infra"}',
        id="replace-templated-target",
    ),
    pytest.param(
        """
- source_labels: [tag]
  regex: '([^=]+)=(.*)'
  target_label: '${1}'
  replacement: '$2'
""",
        'up{tag="te-am=infra"}',
        'up{tag="te-am=infra"}',
        id="replace-templated-target-invalid-name-skipped",
    ),
    pytest.param(
        """
- source_labels: [tag]
  regex: '([^=]+)=(.*)'
  target_label: '${3}'
  replacement: '$1'
""",
        'up{tag="team=infra"}',
        'up{tag="team=infra"}',
        id="replace-templated-target-empty-name-skipped",
    ),
    pytest.param(
        """
- source_labels: [__name__]
  regex: 'node_(.*)'
  target_label: __name__
  replacement: 'host_$1'
""",
        'node_cpu_seconds_total{cpu="0"}',
        'host_cpu_seconds_total{cpu="0"}',
        id="replace-renames-metric",
    ),
    pytest.param(
        "- source_labels: [metric]\n  target_label: __name__",
        '{metric="up",job="a"}',
        'up{job="a",metric="up"}',
        id="replace-sets-name-from-label",
    ),
    pytest.param(
        "- target_label: __name__\n  replacement: ''",
        S,
        None,
        id="replace-deleting-name-drops-series",
    ),
    pytest.param(  # Prometheus' own; Prometheus 3 compiles regexes with (?s), so . matches \n.
        """
- source_labels: [a]
  regex: 'line1.*line2'
  target_label: d
  replacement: 'match${1}'
""",
        r'x{a="line1\nline2",b="bar"}',
        r'x{a="line1\nline2",b="bar",d="match"}',
        id="replace-dot-matches-newline",
    ),
    # -- keep / drop ---------------------------------------------------------------------------
    pytest.param("- source_labels: [job]\n  regex: a\n  action: keep", S, S, id="keep-match"),
    pytest.param(
        "- source_labels: [job]\n  regex: z\n  action: keep", S, None, id="keep-no-match-drops"
    ),
    pytest.param(
        "- source_labels: [instance]\n  regex: b\n  action: keep",
        S,
        None,
        id="keep-regex-anchored-substring-is-not-a-match",
    ),
    pytest.param(
        "- source_labels: [job]\n  regex: foo|bar\n  action: keep",
        'up{job="foobar"}',
        None,
        id="keep-alternation-anchored-as-a-whole",
    ),
    pytest.param("- action: keep", S, S, id="keep-default-regex-keeps-everything"),
    pytest.param(
        "- source_labels: [zone]\n  regex: ''\n  action: keep",
        S,
        S,
        id="keep-missing-source-matches-empty-regex",
    ),
    pytest.param(
        "- source_labels: [job]\n  regex: '^a$'\n  action: keep",
        S,
        S,
        id="keep-explicit-anchors-are-harmless",
    ),
    pytest.param("- source_labels: [job]\n  regex: a\n  action: drop", S, None, id="drop-match"),
    pytest.param("- source_labels: [job]\n  regex: z\n  action: drop", S, S, id="drop-no-match"),
    pytest.param(
        "- source_labels: [job, instance]\n  regex: 'a;b:.*'\n  action: drop",
        S,
        None,
        id="drop-on-joined-sources",
    ),
    pytest.param(
        "- source_labels: [zone]\n  regex: ''\n  action: drop",
        S,
        None,
        id="drop-series-missing-a-label",
    ),
    pytest.param(
        "- source_labels: [job]\n  regex: '(?i)A'\n  action: drop",
        S,
        None,
        id="drop-with-go-inline-flag",
    ),
    # -- keepequal / dropequal (Prometheus' own) -----------------------------------------------
    pytest.param(
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: keepequal",
        PORTS,
        PORTS,
        id="keepequal-equal-keeps",
    ),
    pytest.param(
        "- source_labels: [__tmp_port]\n  target_label: __port2\n  action: keepequal",
        PORTS,
        None,
        id="keepequal-different-drops",
    ),
    pytest.param(
        "- source_labels: [nope]\n  target_label: nope2\n  action: keepequal",
        S,
        S,
        id="keepequal-both-missing-are-equal",
    ),
    pytest.param(
        "- source_labels: [__tmp_port]\n  target_label: __port1\n  action: dropequal",
        PORTS,
        None,
        id="dropequal-equal-drops",
    ),
    pytest.param(
        "- source_labels: [__tmp_port]\n  target_label: __port2\n  action: dropequal",
        PORTS,
        PORTS,
        id="dropequal-different-keeps",
    ),
    # -- hashmod -------------------------------------------------------------------------------
    pytest.param(  # Prometheus' own golden value.
        "- source_labels: [c]\n  target_label: d\n  modulus: 1000\n  action: hashmod",
        ABC,
        'x{a="foo",b="bar",c="baz",d="976"}',
        id="hashmod-prometheus-golden",
    ),
    pytest.param(  # Prometheus' own golden value.
        "- source_labels: [a]\n  target_label: b\n  modulus: 1000\n  action: hashmod",
        r'x{a="foo\nbar"}',
        r'x{a="foo\nbar",b="734"}',
        id="hashmod-prometheus-golden-newline",
    ),
    pytest.param(
        "- source_labels: [job, instance]\n  target_label: shard\n  modulus: 8\n  action: hashmod",
        S,
        f'up{{job="a",instance="b:9100",shard="{prom_hashmod("a;b:9100", 8)}"}}',
        id="hashmod-joined-sources",
    ),
    pytest.param(
        "- source_labels: [zone]\n  target_label: shard\n  modulus: 10\n  action: hashmod",
        S,
        f'up{{job="a",instance="b:9100",shard="{prom_hashmod("", 10)}"}}',
        id="hashmod-missing-source-hashes-empty-string",
    ),
    pytest.param(
        f"""
- source_labels: [instance]
  target_label: __tmp_shard
  modulus: 3
  action: hashmod
- source_labels: [__tmp_shard]
  regex: '{prom_hashmod("b:9100", 3)}'
  action: keep
- regex: __tmp_shard
  action: labeldrop
""",
        S,
        S,
        id="hashmod-shard-selection-chain",
    ),
    # -- labelmap ------------------------------------------------------------------------------
    pytest.param(
        "- regex: '__meta_kubernetes_pod_label_(.+)'\n  action: labelmap",
        K8S,
        K8S[:-1] + ',app="web",tier="fe"}',
        id="labelmap-meta-prefix-keeps-originals",
    ),
    pytest.param(  # Prometheus' own.
        "- regex: '(b.*)'\n  replacement: 'bar_${1}'\n  action: labelmap",
        'x{a="foo",b1="bar",b2="baz"}',
        'x{a="foo",b1="bar",b2="baz",bar_b1="bar",bar_b2="baz"}',
        id="labelmap-custom-replacement",
    ),
    pytest.param(
        "- regex: '__meta_(.+)'\n  action: labelmap",
        'up{env="old",__meta_env="new"}',
        'up{env="new",__meta_env="new"}',
        id="labelmap-overwrites-existing-label",
    ),
    pytest.param(  # labels.Builder.Range visits base labels in sorted order: y_a is set last.
        "- regex: '[xy]_(.+)'\n  action: labelmap",
        'up{x_a="1",y_a="2"}',
        'up{x_a="1",y_a="2",a="2"}',
        id="labelmap-collision-last-in-order-wins",
    ),
    pytest.param(  # Range visits untouched base labels first, then labels set by earlier rules.
        """
- target_label: a_x
  replacement: '1'
- regex: '[ab]_(x)'
  action: labelmap
""",
        'up{b_x="2"}',
        'up{a_x="1",b_x="2",x="1"}',
        id="labelmap-collision-added-labels-visited-last",
    ),
    pytest.param(
        "- regex: 'label_(.+)'\n  action: labelmap",
        K8S,
        K8S,
        id="labelmap-regex-anchored-to-whole-name",
    ),
    pytest.param(
        """
- regex: '__meta_kubernetes_pod_label_(.+)'
  action: labelmap
- regex: '__meta_.*'
  action: labeldrop
""",
        K8S,
        'up{job="k",app="web",tier="fe"}',
        id="labelmap-then-labeldrop-meta",
    ),
    # -- labeldrop / labelkeep -----------------------------------------------------------------
    pytest.param("- regex: instance\n  action: labeldrop", S, 'up{job="a"}', id="labeldrop-exact"),
    pytest.param("- regex: inst\n  action: labeldrop", S, S, id="labeldrop-anchored"),
    pytest.param(
        "- regex: '__meta_kubernetes_pod_.*'\n  action: labeldrop",
        K8S,
        'up{__meta_kubernetes_namespace="ns",job="k"}',
        id="labeldrop-pattern",
    ),
    pytest.param(
        "- regex: '__name__|job'\n  action: labelkeep", S, 'up{job="a"}', id="labelkeep-names"
    ),
    pytest.param(
        "- regex: 'job|instance'\n  action: labelkeep",
        S,
        None,
        id="labelkeep-without-name-drops-series",
    ),
    pytest.param("- regex: __name__\n  action: labeldrop", S, None, id="labeldrop-name-drops"),
    # -- lowercase / uppercase -----------------------------------------------------------------
    pytest.param(  # Prometheus' own.
        """
- source_labels: [foo]
  target_label: foo_uppercase
  action: uppercase
- source_labels: [foo]
  target_label: foo_lowercase
  action: lowercase
""",
        'x{foo="bAr123Foo"}',
        'x{foo="bAr123Foo",foo_lowercase="bar123foo",foo_uppercase="BAR123FOO"}',
        id="uppercase-and-lowercase",
    ),
    pytest.param(
        "- source_labels: [env]\n  target_label: env\n  action: lowercase",
        'up{env="PROD"}',
        'up{env="prod"}',
        id="lowercase-in-place",
    ),
    pytest.param(
        "- source_labels: [job, env]\n  separator: '-'\n  target_label: key\n  action: uppercase",
        'up{job="a",env="prod"}',
        'up{job="a",env="prod",key="A-PROD"}',
        id="uppercase-joined-sources",
    ),
    pytest.param(
        "- source_labels: [zone]\n  target_label: env\n  action: lowercase",
        'up{job="a",env="prod"}',
        'up{job="a"}',
        id="lowercase-missing-source-deletes-target",
    ),
    pytest.param(  # Go's strings.ToUpper maps rune by rune: ß has no single-rune upper case.
        "- source_labels: [city]\n  target_label: city\n  action: uppercase",
        'up{city="straße"}',
        'up{city="STRAßE"}',
        id="uppercase-go-simple-case-mapping",
    ),
    pytest.param(  # ...and strings.ToLower has no final-sigma rule.
        "- source_labels: [word]\n  target_label: word\n  action: lowercase",
        'up{word="ΟΔΟΣ"}',
        'up{word="οδοσ"}',
        id="lowercase-go-no-final-sigma",
    ),
    # -- general -------------------------------------------------------------------------------
    pytest.param(
        """
- target_label: env
  replacement: prod
- source_labels: [env]
  regex: prod
  action: keep
""",
        S,
        'up{job="a",instance="b:9100",env="prod"}',
        id="chain-later-rule-sees-earlier-label",
    ),
    pytest.param(
        """
- source_labels: [env]
  regex: prod
  action: keep
- target_label: env
  replacement: prod
""",
        S,
        None,
        id="chain-order-matters",
    ),
    pytest.param(
        r"""
- source_labels: [instance]
  regex: '(.*):\d+'
  target_label: host
- source_labels: [host]
  regex: b
  action: drop
- target_label: never
  replacement: reached
""",
        S,
        None,
        id="chain-drop-stops-processing",
    ),
    pytest.param(
        "- action: keep",
        'up{job="a",env=""}',
        'up{job="a"}',
        id="empty-input-values-are-removed",
    ),
    pytest.param("- action: keep", '{job="a"}', None, id="series-without-name-dropped"),
]


@pytest.mark.parametrize(("rules", "series", "expected"), CASES)
def test_relabel(rules: str, series: str, expected: str | None) -> None:
    result = rules_from(rules).apply(parse_series(series))
    assert result == (None if expected is None else parse_series(expected))


def test_case_count() -> None:
    assert len(CASES) >= 45


# ---------------------------------------------------------------------------------------------
# regexp.Expand, through a replace rule writing label "out" (an expansion of "" deletes it).

EXPAND = [
    ("(b):(\\d+)", "$1", "b"),
    ("(b):(\\d+)", "${1}", "b"),
    ("(b):(\\d+)", "${1}x", "bx"),
    ("(b):(\\d+)", "$1x", ""),  # group named "1x"
    ("(b):(\\d+)", "$1-$2", "b-9100"),
    ("(b):(\\d+)", "$$", "$"),
    ("(b):(\\d+)", "$$1", "$1"),
    ("(b):(\\d+)", "a$", "a$"),  # trailing "$" is kept
    ("(b):(\\d+)", "${", "${"),  # malformed: "$" kept as text
    ("(b):(\\d+)", "${1", "${1"),  # missing brace
    ("(b):(\\d+)", "$}", "$}"),
    ("(b):(\\d+)", "${ 1}", "${ 1}"),
    ("(b):(\\d+)", "$-", "$-"),
    ("(b):(\\d+)", "$0", "b:9100"),
    ("(b):(\\d+)", "$01", ""),  # leading zero: the group named "01"
    ("(b):(\\d+)", "$9", ""),  # no such group
    ("(b):(\\d+)", "$_", ""),  # "_" is a name character
    ("(b):(\\d+)", "$é", ""),  # so is any Unicode letter
    ("(b):(\\d+)", "$2.$1", "9100.b"),
    ("(?P<h>b):(?P<p>\\d+)", "$p", "9100"),
    ("(?P<h>b):(?P<p>\\d+)", "${p}$h", "9100b"),
    ("(?P<h>b):(?P<p>\\d+)", "$p_x", ""),  # group named "p_x"
    ("(?P<h>b):(?P<p>\\d+)", "$2", "9100"),  # named groups are numbered too
    ("(x)?(b):(\\d+)", "[$1]", "[]"),  # non-participating group
]


@pytest.mark.parametrize(("regex", "template", "expected"), EXPAND, ids=[t for _, t, _ in EXPAND])
def test_go_expand(regex: str, template: str, expected: str) -> None:
    config = {
        "source_labels": ["instance"],
        "regex": regex,
        "target_label": "out",
        "replacement": template,
    }
    rules = compile_rules([RelabelConfig.model_validate(config)])
    out = dict(rules.apply(parse_series(S)) or ())
    assert out.get("out", "") == expected


# ---------------------------------------------------------------------------------------------
# Config validation

INVALID = [
    pytest.param("action: foo", 'unknown relabel action "foo"', id="unknown-action"),
    pytest.param("action: ''", 'unknown relabel action ""', id="empty-string-action"),
    pytest.param("action:", "relabel action cannot be empty", id="null-action"),
    pytest.param(
        "source_labels: [a]",
        "relabel configuration for replace action requires 'target_label' value",
        id="replace-without-target",
    ),
    pytest.param(
        "source_labels: [a]\ntarget_label: b\naction: hashmod",
        "relabel configuration for hashmod requires non-zero modulus",
        id="hashmod-without-modulus",
    ),
    pytest.param(
        "source_labels: [a]\nmodulus: 4\naction: hashmod",
        "relabel configuration for hashmod action requires 'target_label' value",
        id="hashmod-without-target",
    ),
    pytest.param(
        "source_labels: [a]\nmodulus: -1\ntarget_label: b\naction: hashmod",
        "greater than or equal to 0",
        id="hashmod-negative-modulus",
    ),
    pytest.param("regex: '(abc'\naction: keep", "invalid 'regex' \"(abc\"", id="regex-unclosed"),
    pytest.param(
        "regex: 'a(?=b)'\naction: keep", "invalid 'regex' \"a(?=b)\"", id="regex-lookahead-not-re2"
    ),
    pytest.param(
        "target_label: foo-bar",
        "\"foo-bar\" is invalid 'target_label' for replace action",
        id="replace-invalid-target",
    ),
    pytest.param(
        "target_label: '-${1}'",
        "\"-${1}\" is invalid 'target_label' for replace action",
        id="replace-invalid-templated-target",
    ),
    pytest.param(
        "source_labels: [a]\ntarget_label: '${1}'\naction: lowercase",
        "\"${1}\" is invalid 'target_label' for lowercase action",
        id="lowercase-templated-target",
    ),
    pytest.param(
        "source_labels: [a]\ntarget_label: b\nreplacement: x\naction: uppercase",
        "'replacement' can not be set for uppercase action",
        id="uppercase-with-replacement",
    ),
    pytest.param(
        "source_labels: [a]\naction: keepequal",
        "relabel configuration for keepequal action requires 'target_label' value",
        id="keepequal-without-target",
    ),
    pytest.param(
        "source_labels: [a]\ntarget_label: b\nregex: x\naction: keepequal",
        "keepequal action requires only 'source_labels' and `target_label`, and no other fields",
        id="keepequal-with-regex",
    ),
    pytest.param(
        "source_labels: [a]\ntarget_label: b\nseparator: ','\naction: dropequal",
        "dropequal action requires only 'source_labels' and `target_label`, and no other fields",
        id="dropequal-with-separator",
    ),
    pytest.param(
        "source_labels: [a]\nregex: x\naction: labeldrop",
        "labeldrop action requires only 'regex', and no other fields",
        id="labeldrop-with-source-labels",
    ),
    pytest.param(
        "source_labels: []\nregex: x\naction: labeldrop",
        "labeldrop action requires only 'regex', and no other fields",
        id="labeldrop-with-empty-source-labels",
    ),
    pytest.param(
        "target_label: a\nregex: x\naction: labelkeep",
        "labelkeep action requires only 'regex', and no other fields",
        id="labelkeep-with-target",
    ),
    pytest.param(
        "replacement: a\nregex: x\naction: labelkeep",
        "labelkeep action requires only 'regex', and no other fields",
        id="labelkeep-with-replacement",
    ),
    pytest.param(
        "modulus: 2\nregex: x\naction: labeldrop",
        "labeldrop action requires only 'regex', and no other fields",
        id="labeldrop-with-modulus",
    ),
    pytest.param(
        "regex: '(.*)'\nreplacement: 'foo-$1'\naction: labelmap",
        "\"foo-$1\" is invalid 'replacement' for labelmap action",
        id="labelmap-invalid-replacement",
    ),
    pytest.param(
        "source_labels: [foo.bar]\naction: keep",
        '"foo.bar" is not a valid label name',
        id="invalid-source-label",
    ),
    pytest.param("regexp: x\naction: keep", "Extra inputs are not permitted", id="unknown-field"),
]


@pytest.mark.parametrize(("config", "message"), INVALID)
def test_invalid_config(config: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        RelabelConfig.model_validate(yaml.safe_load(config))
    assert message in str(info.value)


# What RE2 takes and Go's regexp (so Prometheus) refuses: found by the differential audit
# against Prometheus, whose messages are quoted in the ids' comments.
NO_C = r"invalid escape sequence: \C (Go's regexp, which Prometheus uses, has none)"
NAME = (
    "invalid named capture group: {} "
    "(Go's regexp, which Prometheus uses, takes only [A-Za-z0-9_] in a name)"
)
GO_REFUSES = [
    # error parsing regexp: invalid escape sequence: `\C`
    pytest.param(r"\C*", NO_C, id="backslash-C"),
    pytest.param(r"a|x\C", NO_C, id="backslash-C-late"),
    pytest.param(r"\\\C", NO_C, id="escaped-backslash-then-backslash-C"),
    pytest.param(r"\Qa\Eb\C", NO_C, id="backslash-C-after-quote"),
    pytest.param(r"[]a]\C", NO_C, id="backslash-C-after-class"),
    pytest.param(r"[[:alpha:]]\C", NO_C, id="backslash-C-after-posix"),
    pytest.param(r"[^\C]", r"invalid escape sequence: \C", id="backslash-C-in-class"),
    # error parsing regexp: invalid named capture: `(?P<é>`
    pytest.param("(?P<é>x)", NAME.format("(?P<é>"), id="non-ascii-name"),
    pytest.param("(?<é>x)", NAME.format("(?<é>"), id="non-ascii-angle-name"),
    pytest.param("a(?P<x٣>b)", NAME.format("(?P<x٣>"), id="non-ascii-digit"),
    pytest.param("(?P<a‿b>x)", NAME.format("(?P<a‿b>"), id="connector-name"),
    pytest.param(r"\C(?P<é>x)", NO_C, id="first-error-first"),
    pytest.param(r"(?P<é>x)\C", NAME.format("(?P<é>"), id="first-error-named"),
]


@pytest.mark.parametrize(("regex", "message"), GO_REFUSES)
def test_regex_go_refuses_is_refused_at_load(regex: str, message: str) -> None:
    text = "relabel_configs:\n  - action: keep\n  - regex: " + _yaml_quote(regex) + "\n"
    text += "    action: labeldrop\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "<t>")
    error = str(info.value)
    assert error == f"<t>:3: relabel_configs[1].regex: invalid 'regex' {_go_q(regex)}: {message}"


def _yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _go_q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


GO_TAKES = [
    pytest.param(r"\\C", "\\C", id="escaped-backslash-then-C"),
    pytest.param(r"\\\\C", "\\\\C", id="two-escaped-backslashes-then-C"),
    pytest.param(r"\Q\C\E", "\\C", id="quoted-backslash-C"),
    pytest.param(r"\Qa\\E", "a\\", id="quote-ends-at-first-backslash-E"),
    pytest.param(r"[\\C]+", "C\\", id="class-with-backslash-and-C"),
    pytest.param("[(?P<é>]+", "(?P<é>", id="group-opener-in-class"),
    pytest.param(r"\Q(?P<é>\E", "(?P<é>", id="group-opener-quoted"),
    pytest.param(r"\(?P<é>", "P<é>", id="escaped-paren"),
    pytest.param("(?P<1_a>.*)", "x", id="digit-first-name"),
    pytest.param("(?P<_>.*)", "x", id="underscore-name"),
    pytest.param("(?<n>.*)", "x", id="angle-name"),
]


@pytest.mark.parametrize(("regex", "value"), GO_TAKES)
def test_regex_go_takes_loads_and_matches(regex: str, value: str) -> None:
    rules = compile_rules([RelabelConfig(source_labels=("v",), regex=regex, action="keep")])
    assert rules.apply((("__name__", "m"), ("v", value))) is not None


@pytest.mark.parametrize(
    ("regex", "value"),
    [
        (r"\pL{1000}", "é" * 1000),
        (r"[\pL\pN]{500}", "٣é" * 250),
        (r"(\pL|\pN|_){1,500}", "_a1" * 100),
    ],
)
def test_regex_over_re2_default_memory_loads(regex: str, value: str) -> None:
    """Prometheus loads these; RE2 refuses them with its default 8 MiB max_mem."""
    rules = compile_rules([RelabelConfig(source_labels=("v",), regex=regex, action="keep")])
    assert rules.apply((("__name__", "m"), ("v", value))) is not None
    assert rules.apply((("__name__", "m"), ("v", value + "-"))) is None


@pytest.mark.parametrize(
    "regex", [r"a{1001}", r"a{1,1001}", r"a{1001,}", r"\pL{1001}", r"(?:\pL{1000}){2}"]
)
def test_repeat_count_over_1000_is_refused_as_in_go(regex: str) -> None:
    with pytest.raises(ValidationError, match="invalid repetition size"):
        RelabelConfig(regex=regex, action="keep")


@pytest.mark.parametrize(
    ("modulus", "message"),
    [
        ('"5"', "'modulus' must be an integer, got the string \"5\""),
        ("'5'", "'modulus' must be an integer, got the string \"5\""),
        ("true", "'modulus' must be an integer, got the boolean true"),
        ("false", "'modulus' must be an integer, got the boolean false"),
        ("5.5", "'modulus' must be an integer, got 5.5 (Prometheus would truncate it to 5)"),
        (".inf", "'modulus' must be an integer, got inf"),
    ],
)
def test_modulus_must_be_a_yaml_integer(modulus: str, message: str) -> None:
    # Prometheus: cannot unmarshal !!str `5` (!!bool `true`) into uint64
    text = "relabel_configs:\n  - source_labels: [a]\n    target_label: s\n    action: hashmod\n"
    with pytest.raises(ConfigError) as info:
        load_text(text + f"    modulus: {modulus}\n", "<t>")
    assert str(info.value) == f"<t>:5: relabel_configs[0].modulus: {message}"


@pytest.mark.parametrize(
    ("modulus", "value"), [("5", 5), ("5.0", 5), ("0x10", 16), ("1_000", 1000)]
)
def test_modulus_takes_yaml_integers(modulus: str, value: int) -> None:
    config = RelabelConfig.model_validate(
        yaml.safe_load(f"source_labels: [a]\ntarget_label: s\naction: hashmod\nmodulus: {modulus}")
    )
    assert config.modulus == value
    assert type(config.modulus) is int


def test_validation_error_carries_list_index() -> None:
    from pydantic import TypeAdapter

    configs = yaml.safe_load("- action: keep\n- action: nope")
    with pytest.raises(ValidationError) as info:
        TypeAdapter(list[RelabelConfig]).validate_python(configs)
    assert info.value.errors()[0]["loc"][0] == 1


VALID: list[tuple[str, dict[str, Any]]] = [
    ("action: Replace\ntarget_label: a", {"action": "replace"}),
    ("action: KEEP", {"action": "keep"}),
    ("action: keep", {"source_labels": (), "separator": ";", "regex": "(.*)", "modulus": 0}),
    ("target_label: a", {"replacement": "$1", "action": "replace"}),
    ("regex:\ntarget_label: abc\nreplacement: static", {"regex": ""}),  # null → empty regex
    ("separator:\ntarget_label: abc", {"separator": ""}),  # null → Go's zero value
    ("source_labels: [code]\nregex: 200\naction: keep", {"regex": "200"}),
    ("target_label: '${1}label'", {"target_label": "${1}label"}),
    ("target_label: 'foo${bar}foo'", {"target_label": "foo${bar}foo"}),
    ("source_labels: [a]\ntarget_label: b\nseparator: ;\nreplacement: $1\naction: keepequal", {}),
    ("regex: __tmp_.*\naction: labeldrop", {"action": "labeldrop"}),
    ("regex: 'a)|(b'\naction: keep", {"regex": "a)|(b"}),  # accepted as Prometheus does
]


@pytest.mark.parametrize(("config", "fields"), VALID, ids=[c for c, _ in VALID])
def test_valid_config(config: str, fields: dict[str, Any]) -> None:
    parsed = RelabelConfig.model_validate(yaml.safe_load(config))
    for key, value in fields.items():
        assert getattr(parsed, key) == value


def test_config_is_frozen() -> None:
    config = RelabelConfig(action="keep")
    with pytest.raises(ValidationError):
        config.regex = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# RuleSet behaviour


def test_empty_ruleset_returns_identical_object() -> None:
    rules = compile_rules([])
    labels = parse_series(S)
    assert not rules
    assert len(rules) == 0
    assert rules.apply(labels) is labels
    assert rules.explain(labels) == []


def test_nonempty_ruleset_is_truthy() -> None:
    rules = rules_from("- action: keep\n- regex: x\n  action: labeldrop")
    assert rules
    assert len(rules) == 2


def test_unchanged_labels_come_back_as_same_object() -> None:
    labels = parse_series(S)
    assert rules_from("- source_labels: [job]\n  regex: a\n  action: keep").apply(labels) is labels


def test_escaped_anchor_behaves_like_prometheus() -> None:
    # "^(?s:" + "a)|(b" + ")$" leaves "(b)$" unanchored at the start, in Prometheus as here.
    rules = rules_from("- source_labels: [job]\n  regex: 'a)|(b'\n  action: keep")
    assert rules.apply(parse_series('up{job="xab"}')) is not None
    assert rules.apply(parse_series('up{job="xa"}')) is None


def test_labelmap_with_escaped_anchor_replaces_only_the_match() -> None:
    # Go's ReplaceAllString replaces just the matched "b" in "__xb": the new name is "__xB".
    rules = rules_from("- regex: 'a)|(b'\n  replacement: B\n  action: labelmap")
    assert rules.apply(parse_series('up{__xb="v"}')) == parse_series('up{__xb="v",__xB="v"}')


def test_labelmap_skips_empty_match_right_after_a_match() -> None:
    # "^(?s:a)|(b*)$": in "zb" Go's ReplaceAllString replaces "b" and then ignores the empty
    # match at the end; "__name__" only has that empty match at its end, which is replaced.
    rules = rules_from("- regex: 'a)|(b*'\n  replacement: B\n  action: labelmap")
    assert rules.apply(parse_series('up{zb="v"}')) == parse_series(
        'up{zb="v",zB="v",__name__B="up"}'
    )


def test_explain_records_each_step() -> None:
    rules = rules_from(
        """
- target_label: env
  replacement: prod
- regex: instance
  action: labeldrop
- source_labels: [env]
  regex: dev
  action: keep
"""
    )
    labels = parse_series(S)
    steps = rules.explain(labels)
    assert steps == [
        Step(0, "replace", labels, parse_series('up{job="a",instance="b:9100",env="prod"}')),
        Step(
            1,
            "labeldrop",
            parse_series('up{job="a",instance="b:9100",env="prod"}'),
            parse_series('up{job="a",env="prod"}'),
        ),
        Step(2, "keep", parse_series('up{job="a",env="prod"}'), None),
    ]
    assert rules.apply(labels) is None


def test_explain_shows_the_nameless_drop() -> None:
    rules = rules_from("- regex: __name__\n  action: labeldrop")
    steps = rules.explain(parse_series(S))
    assert steps[-1] == Step(1, NAMELESS, parse_series('{job="a",instance="b:9100"}'), None)
    assert len(steps) == 2


# ---------------------------------------------------------------------------------------------
# Properties

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
VALUES = st.text(alphabet="ab;:\n-_é", max_size=6)


@st.composite
def label_sets(draw: st.DrawFn, empty_values: bool = True) -> Labels:
    values = VALUES if empty_values else VALUES.filter(bool)
    pairs = draw(st.dictionaries(NAMES, values, max_size=6))
    pairs["__name__"] = draw(st.sampled_from(["up", "a_b", "x"]))
    return tuple(sorted(pairs.items()))


RULE_SNIPPETS = [
    {"source_labels": ["a"], "target_label": "b"},
    {"source_labels": ["a", "b"], "regex": "(a*);(.*)", "target_label": "$2", "replacement": "$1"},
    {"target_label": "c", "replacement": ""},
    {"source_labels": ["a"], "regex": "a.*", "action": "drop"},
    {"source_labels": ["b"], "regex": ".*b", "action": "keep"},
    {"regex": "(.)(.*)", "replacement": "m_$1", "action": "labelmap"},
    {"regex": "a.*", "action": "labeldrop"},
    {"regex": "__name__|[a-c].*", "action": "labelkeep"},
    {"source_labels": ["a"], "target_label": "h", "modulus": 7, "action": "hashmod"},
    {"source_labels": ["a", "b"], "target_label": "u", "action": "uppercase"},
    {"source_labels": ["a"], "target_label": "b", "action": "keepequal"},
    {"source_labels": ["__name__"], "target_label": "__name__", "replacement": "", "regex": "x"},
]


@given(label_sets(empty_values=False))
def test_labelkeep_everything_is_identity(labels: Labels) -> None:
    assert rules_from("- regex: '.*'\n  action: labelkeep").apply(labels) == labels


@settings(max_examples=300)
@given(label_sets(), st.lists(st.sampled_from(RULE_SNIPPETS), max_size=5))
def test_output_is_sorted_unique_and_named(labels: Labels, snippets: list[dict[str, Any]]) -> None:
    rules = compile_rules([RelabelConfig.model_validate(s) for s in snippets])
    result = rules.apply(labels)
    if snippets:
        steps = rules.explain(labels)
        assert steps[-1].after == result
    if result is None or not snippets:
        return
    names = [name for name, _ in result]
    assert names == sorted(set(names))
    assert all(value != "" for _, value in result)
    assert dict(result).get("__name__")


@settings(max_examples=50)
@given(st.lists(label_sets(), min_size=2, max_size=8), st.lists(st.sampled_from(RULE_SNIPPETS)))
def test_reused_ruleset_matches_fresh_one(batch: list[Labels], snippets: list[Any]) -> None:
    # A rule set remembers regex results per string; reuse must not change any answer.
    configs = [RelabelConfig.model_validate(s) for s in snippets]
    shared = compile_rules(configs)
    for labels in batch + batch:
        assert shared.apply(labels) == compile_rules(configs).apply(labels)


def test_memo_overflow_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relabel.MEMOS, "limit", 2)  # for the rules compiled below
    rules = rules_from("- source_labels: [job]\n  regex: 'a|c'\n  action: keep")
    for job in "abcabcdd":
        kept = rules.apply(parse_series(f'up{{job="{job}"}}')) is not None
        assert kept == (job in "ac")
        small = [memo for memo in relabel.MEMOS.live() if memo.limit == 2]
        assert len(small) == 3  # the rule's three memos
        assert all(len(memo) <= 2 for memo in small) and any(small)


@given(label_sets(), st.sampled_from(["a.*", "", ".*;.*", "(?i)B", "up|x"]))
def test_keep_and_drop_partition(labels: Labels, regex: str) -> None:
    keep = compile_rules([RelabelConfig(source_labels=("a", "b"), regex=regex, action="keep")])
    drop = compile_rules([RelabelConfig(source_labels=("a", "b"), regex=regex, action="drop")])
    assert (keep.apply(labels) is None) != (drop.apply(labels) is None)


@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
    st.integers(min_value=1, max_value=2**64 - 1),
)
def test_hashmod_matches_formula(value: str, modulus: int) -> None:
    rules = compile_rules(
        [RelabelConfig(source_labels=("v",), target_label="h", modulus=modulus, action="hashmod")]
    )
    out = rules.apply((("__name__", "up"), ("v", value)))
    assert out is not None
    assert dict(out)["h"] == prom_hashmod(value, modulus)
