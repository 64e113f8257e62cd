"""The PromQL printer and the Grafana macro protection behind ``gotk-relay migrate``.

What users rely on: an expression the migration does not touch comes back meaning the same
(same tree), printed on one line, and Grafana's variables and macros come back verbatim.
"""

from __future__ import annotations

import promql_parser as pp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotk_relay.migrate import printer


def _printed(text: str) -> str:
    tree, protected = printer.parse(text)
    return protected.restore(printer.render(tree).text)


def _same_tree(a: str, b: str) -> None:
    # promql_parser's own rendering of two trees is equal only when the trees are.
    assert str(pp.parse(a)) == str(pp.parse(b))


ROUND_TRIPS = {
    "aggregation": ("sum(x) by (a)", "sum by (a) (x)"),
    "no-grouping": ("sum (x)", "sum(x)"),
    "param": ("topk(3, sum without(instance) (x))", "topk(3, sum without (instance) (x))"),
    "bool": ("count by (kind) (rate(foo[5m] offset 1m)) > bool 3", None),
    "matching": ("a * on(x) group_left(y) b", "a * on (x) group_left (y) b"),
    "ignoring": ("a unless ignoring(x) b", "a unless ignoring (x) b"),
    "subquery-at": ('max_over_time(x{a="b"}[5m:1m] @ 100)', None),
    "negative-offset": ("x offset -5m", None),
    "left-assoc": ("a - (b - c)", None),
    "left-assoc-plain": ("a - b - c", None),
    "pow-right": ("(a ^ b) ^ c", None),
    "unary-pow": ("-x ^ 2", None),
    "unary-paren": ("(-x) ^ 2", None),
    "precedence": ("a or b and c", None),
    "precedence-paren": ("(a or b) and c", None),
    "string-escapes": ('label_replace(x, "a", "$1", "b", "(\\\\d+)\\n")', None),
    "name-matcher": ('{__name__=~"gotk_.*"}', None),
    "number": ("x > 1.5", None),
    "inf": ("clamp_max(x, Inf)", None),
    "at-end": ("x @ end()", None),
    "count-values": ('count_values("v", x)', None),
    "empty-grouping": ("sum without () (x)", "sum without () (x)"),
}


@pytest.mark.parametrize(("text", "expected"), ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_an_expression_prints_back_to_the_same_tree_on_one_line(
    text: str, expected: str | None
) -> None:
    out = _printed(text)
    assert out == (expected or text)
    assert "\n" not in out
    _same_tree(text, out)


MACROS = {
    "regex-variable": 'count(x{ns=~"$namespace"})',
    "braced-variable": 'count(x{ns=~"${namespace:regex}"})',
    "old-variable": 'count(x{ns=~"[[namespace]]"})',
    "interval": "rate(x[$__rate_interval])",
    "subquery-macros": "max_over_time(x[$__range:$__interval])",
    "offset-variable": "x offset $shift",
    "label-variable": "sum by ($group) (x)",
    "threshold-variable": "x > $threshold",
    "topk-variable": "topk($n, x)",
    "braced-range": "rate(x[${window}])",
    "label-name-variable": 'x{$label="v"}',
}


@pytest.mark.parametrize("text", MACROS.values(), ids=MACROS.keys())
def test_grafana_macros_survive_parsing_and_printing(text: str) -> None:
    assert _printed(text) == text


def test_text_that_is_not_promql_is_refused_with_the_parsers_reason() -> None:
    with pytest.raises(ValueError, match="cannot parse PromQL"):
        printer.parse("sum(x")


# A small PromQL grammar: enough shapes (precedence, modifiers, calls, subqueries) for the
# printer to get wrong if it dropped a needed parenthesis or a modifier.
_names = st.sampled_from(["x", "gotk_reconcile_condition", "up", "gotk_resource_info"])
_labels = st.sampled_from(["a", "kind", "name", "exported_namespace"])
_values = st.text(alphabet='ab$.*|\\"\n', max_size=4)
_matcher = st.tuples(_labels, st.sampled_from(["=", "!=", "=~", "!~"]), _values).filter(
    lambda m: m[1] in ("=", "!=") or m[2] in ("a", "b", ".*", "a|b")
)
_selector = st.builds(
    lambda n, ms: n + ("{" + ",".join(f"{lbl}{op}{printer.quote(v)}" for lbl, op, v in ms) + "}"),
    _names,
    st.lists(_matcher, max_size=2, unique_by=lambda m: m[0]),
)


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    grouping = st.lists(_labels, max_size=2, unique=True).map(", ".join)
    return st.one_of(
        st.builds(
            lambda a, b, op: f"{a} {op} {b}",
            children,
            children,
            st.sampled_from(["+", "-", "*", "/", "^", "and", "or", "unless", "==", ">"]),
        ),
        st.builds(lambda a: f"({a})", children),
        st.builds(lambda a: f"-{a}", children),
        st.builds(
            lambda a, g, op: f"{op} by ({g}) ({a})",
            children,
            grouping,
            st.sampled_from(["sum", "count", "max", "group"]),
        ),
        st.builds(lambda a, g: f"{a} * on ({g}) group_left () {a}", children, grouping),
        st.builds(lambda a: f"abs({a})", children),
        st.builds(lambda a: f"max_over_time(({a})[5m:1m])", children),
        st.builds(lambda s: f"max_over_time({s}[5m])", _selector),
    )


_expressions = st.recursive(
    st.one_of(_selector, st.sampled_from(["1", "2.5", "0"])), _extend, max_leaves=6
)


@given(_expressions)
def test_any_expression_prints_back_to_the_same_tree(text: str) -> None:
    try:
        pp.parse(text)
    except ValueError:
        return  # the grammar above also makes invalid PromQL (e.g. a scalar in `and`)
    out = _printed(text)
    _same_tree(text, out)
    assert _printed(out) == out
