"""PromQL series selectors (``up{job=~"a|b"}``) compiled into predicates over label sets.

Parsing is promql-parser's (the PromQL grammar, not a hand-written one); matching uses RE2 with
Prometheus' full anchoring, so ``{__name__=~"gotk_.*"}`` means what it means in Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import promql_parser
import re2

from .model import Labels

Predicate = Callable[[Labels], bool]


class SelectorError(ValueError):
    pass


def _matcher(name: str, op: str, value: str) -> Callable[[str], bool]:
    if op in ("MatchOp.Equal", "="):
        return lambda actual: actual == value
    if op in ("MatchOp.NotEqual", "!="):
        return lambda actual: actual != value
    try:
        regex = re2.compile(f"^(?:{value})$")
    except re2.error as exc:
        raise SelectorError(f"invalid regex {value!r} for label {name}: {exc}") from exc
    if op in ("MatchOp.Re", "=~"):
        return lambda actual: regex.match(actual) is not None
    if op in ("MatchOp.NotRe", "!~"):
        return lambda actual: regex.match(actual) is None
    raise SelectorError(f"unsupported match operator {op}")


def parse_selector(text: str) -> Predicate:
    """Compile one series selector; raises SelectorError with the parser's reason."""
    try:
        expr = promql_parser.parse(text)
    except ValueError as exc:
        raise SelectorError(f"invalid series selector {text!r}: {exc}") from exc
    if not isinstance(expr, promql_parser.VectorSelector):
        raise SelectorError(f'{text!r} is not a series selector (like up or {{job="x"}})')
    checks: list[tuple[str, Callable[[str], bool]]] = []
    if expr.name:
        checks.append(("__name__", _matcher("__name__", "=", expr.name)))
    for m in expr.matchers.matchers:
        checks.append((m.name, _matcher(m.name, str(m.op), m.value)))
    if not checks or all(check("") for _, check in checks):
        raise SelectorError(
            f"{text!r}: a selector needs at least one matcher that does not match the empty string"
        )

    def predicate(labels: Labels) -> bool:
        values = dict(labels)
        return all(check(values.get(name, "")) for name, check in checks)

    return predicate


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


def parse_selectors(texts: Sequence[str]) -> Predicate:
    """A predicate true when any of the selectors matches (``match[]`` semantics)."""
    predicates = [parse_selector(t) for t in texts]

    def any_of(labels: Labels) -> bool:
        return any(p(labels) for p in predicates)

    return any_of
