"""PromQL series selectors (``up{job=~"a|b"}``) compiled into predicates over label sets.

Parsing is promql-parser's (the PromQL grammar, not a hand-written one); matching uses RE2 with
Prometheus' full anchoring, so ``{__name__=~"gotk_.*"}`` means what it means in Prometheus.

The federate store runs its selectors on every series it is sent, and re2's Python wrapper costs
microseconds a call, so answers are memoized per label value: a selector that only looks at one
label (``__name__``, as the default ``gotk_.*`` does) costs one lookup of that label's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import promql_parser
import re2

from . import caches
from .caches import Bounded
from .model import Labels

Predicate = Callable[[Labels], bool]
ValueTest = Callable[[str], bool]

# Values memoized per test (caches.FAMILIES["selectors"].limit for new ones), the oldest slice
# dropped when full: the keys are label values the relay was sent, so this is what bounds the
# memory one selector holds.
MEMOS = caches.family("selectors", 8_192)


class SelectorError(ValueError):
    pass


class _Check(NamedTuple):
    label: str
    test: ValueTest  # of the label's value, "" when absent
    regex: bool  # worth memoizing: a lookup costs less than a match, not than an ==


def _matcher(name: str, op: str, value: str) -> _Check:
    if op in ("MatchOp.Equal", "="):
        return _Check(name, lambda actual: actual == value, False)
    if op in ("MatchOp.NotEqual", "!="):
        return _Check(name, lambda actual: actual != value, False)
    try:
        regex = re2.compile(f"^(?:{value})$")
    except re2.error as exc:
        raise SelectorError(f"invalid regex {value!r} for label {name}: {exc}") from exc
    if op in ("MatchOp.Re", "=~"):
        return _Check(name, lambda actual: regex.match(actual) is not None, True)
    if op in ("MatchOp.NotRe", "!~"):
        return _Check(name, lambda actual: regex.match(actual) is None, True)
    raise SelectorError(f"unsupported match operator {op}")


def memoize(test: ValueTest, limit: int | None = None) -> ValueTest:
    """``test`` with its answers kept per value, at most ``limit`` (or the family's) at a time."""
    bounded: Bounded[str, bool] = MEMOS.new(limit)
    memo = bounded.entries

    def memoized(value: str) -> bool:
        answer = memo.get(value)
        if answer is None:
            answer = test(value)
            if len(memo) >= bounded.limit:
                bounded.make_room()
            memo[value] = answer
        return answer

    return memoized


def value_of(labels: Labels, name: str) -> str:
    """``dict(labels).get(name, "")`` (the last value when a name repeats) without the dict."""
    found = ""
    for key, value in labels:
        if key == name:
            found = value
    return found


def _checks(text: str) -> tuple[_Check, ...]:
    try:
        expr = promql_parser.parse(text)
    except ValueError as exc:
        raise SelectorError(f"invalid series selector {text!r}: {exc}") from exc
    if not isinstance(expr, promql_parser.VectorSelector):
        raise SelectorError(f'{text!r} is not a series selector (like up or {{job="x"}})')
    if expr.offset is not None or expr.at is not None:
        # Prometheus' series selector grammar has neither: its /federate refuses them.
        raise SelectorError(f"{text!r}: a series selector takes no offset or @ modifier")
    checks: list[_Check] = []
    if expr.name:
        checks.append(_matcher("__name__", "=", expr.name))
    for m in expr.matchers.matchers:
        checks.append(_matcher(m.name, str(m.op), m.value))
    if not checks or all(check.test("") for check in checks):
        raise SelectorError(
            f"{text!r}: a selector needs at least one matcher that does not match the empty string"
        )
    return tuple(checks)


def _one_label(checks: Sequence[_Check]) -> str | None:
    """The label all ``checks`` look at, when that is one label: their answer is its value's."""
    labels = {check.label for check in checks}
    return labels.pop() if len(labels) == 1 else None


def _all_of(checks: Sequence[_Check]) -> ValueTest:
    tests = tuple(check.test for check in checks)
    return lambda value: all(test(value) for test in tests)


def _on_value(label: str, test: ValueTest) -> Predicate:
    if label == "__name__":
        # Label sets in the relay are validated (sorted, no name twice) before any selector
        # sees them, so a leading __name__ is the only one: no walk over the other labels.
        def on_name(labels: Labels) -> bool:
            if labels and labels[0][0] == "__name__":
                return test(labels[0][1])
            return test(value_of(labels, "__name__"))

        return on_name

    def predicate(labels: Labels) -> bool:
        return test(value_of(labels, label))

    return predicate


def _predicate(checks: Sequence[_Check]) -> Predicate:
    label = _one_label(checks)
    if label is not None:
        return _on_value(label, memoize(_all_of(checks)))
    tests = tuple((c.label, memoize(c.test) if c.regex else c.test) for c in checks)

    def predicate(labels: Labels) -> bool:
        values = dict(labels)
        return all(test(values.get(label, "")) for label, test in tests)

    return predicate


def parse_selector(text: str) -> Predicate:
    """Compile one series selector; raises SelectorError with the parser's reason."""
    return _predicate(_checks(text))


_REGEX_META = frozenset("\\.^$*+?()[]{}|")


def _literal_prefix(op: str, value: str) -> str | None:
    """The literal text every name this matcher accepts starts with ('' when none)."""
    if op in ("MatchOp.Equal", "="):
        return value
    if op in ("MatchOp.Re", "=~"):
        prefix = ""
        for char in value:
            if char in _REGEX_META:
                # A quantifier or alternation after a literal makes that literal optional.
                if char in "?*{|" and prefix:
                    prefix = prefix[:-1]
                if "|" in value:
                    return ""
                break
            prefix += char
        return prefix
    return None  # != and !~ say nothing about what a name starts with


def name_prefixes(texts: Sequence[str]) -> set[str] | None:
    """For each selector, a literal prefix every metric name it matches starts with.

    None when some selector has no ``__name__`` matcher that constrains the name (it may match
    any series); a prefix of '' means the same for a regex without a literal start. Used to
    tell, without decoding a request, whether any of its series could matter to the selectors.
    """
    out: set[str] = set()
    for text in texts:
        expr = promql_parser.parse(text)
        if not isinstance(expr, promql_parser.VectorSelector):
            return None
        found: str | None = expr.name or None
        for m in expr.matchers.matchers:
            if m.name == "__name__":
                prefix = _literal_prefix(str(m.op), m.value)
                if prefix is not None and (found is None or len(prefix) > len(found)):
                    found = prefix
        if found is None:
            return None
        out.add(found)
    return out


def required_names(texts: Sequence[str]) -> frozenset[str] | None:
    """The metric names the selectors can match when each of them names its metric by an
    equality (``up``, ``{__name__="up"}``); None when some selector can match other names.

    A selector already accepted by ``parse_selectors`` is assumed (the /federate index uses
    this to visit only those names' series).
    """
    names: set[str] = set()
    for text in texts:
        expr = promql_parser.parse(text)
        if not isinstance(expr, promql_parser.VectorSelector):
            return None
        found: set[str] = {expr.name} if expr.name else set()
        for m in expr.matchers.matchers:
            if m.name == "__name__" and str(m.op) in ("MatchOp.Equal", "="):
                found.add(m.value)
        if not found:
            return None
        if len(found) > 1:
            continue  # two different names required at once: this selector matches nothing
        names |= found
    return frozenset(names)


def label_equalities(texts: Sequence[str]) -> list[list[tuple[str, str]]] | None:
    """Per selector, its equality matchers on labels other than ``__name__`` with a value
    (``{namespace="a"}``: only series with that label and value can match, so an index of
    that label's values finds them); None when some selector has none (it may match series
    without any such label)."""
    out: list[list[tuple[str, str]]] = []
    for text in texts:
        expr = promql_parser.parse(text)
        if not isinstance(expr, promql_parser.VectorSelector):
            return None
        found = [
            (m.name, m.value)
            for m in expr.matchers.matchers
            if m.name != "__name__" and m.value and str(m.op) in ("MatchOp.Equal", "=")
        ]
        if not found:
            return None
        out.append(found)
    return out


def parse_selectors(texts: Sequence[str]) -> Predicate:
    """A predicate true when any of the selectors matches (``match[]`` semantics)."""
    selectors = [_checks(t) for t in texts]
    looked_at = [_one_label(checks) for checks in selectors]
    label = looked_at[0] if looked_at else None
    if label is not None and all(other == label for other in looked_at):
        # Every selector looks at the same one label (metric-name selectors, like the default):
        # which of them match is a function of its value, so one memo answers for all of them.
        tests = tuple(_all_of(checks) for checks in selectors)
        return _on_value(label, memoize(lambda value: any(test(value) for test in tests)))
    predicates = [_predicate(checks) for checks in selectors]

    def any_of(labels: Labels) -> bool:
        return any(p(labels) for p in predicates)

    return any_of
