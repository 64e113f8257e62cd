"""PromQL text: Grafana macros protected around parsing, and an AST printed back on one line.

``promql_parser`` parses and its ``str()`` prints, but with quirks a dashboard should not get
(``foo{}``, doubled spaces, negative offsets it cannot print) and ``prettify()`` spreads long
expressions over lines; so the tree is printed here, one line, Prometheus' own spacing.

Grafana variables (``$var``, ``${var}``, ``${var:regex}``, ``[[var]]``, ``$__interval``) are
not PromQL. Inside string literals the parser keeps them as text; elsewhere each is replaced by
a placeholder that parses in its position (a duration inside ``[...]`` or after ``offset``, an
identifier otherwise, a number where an identifier does not parse) and put back on printing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import promql_parser as pp

# Operator precedence, lowest first, as Prometheus' grammar has it.
PREC_OR = 1
PREC_AND = 2
PREC_CMP = 3
PREC_ADD = 4
PREC_MUL = 5
PREC_UNARY = 6
PREC_POW = 7
PREC_ATOM = 9

_BIN_PREC = {
    "or": PREC_OR,
    "and": PREC_AND,
    "unless": PREC_AND,
    "==": PREC_CMP,
    "!=": PREC_CMP,
    "<": PREC_CMP,
    "<=": PREC_CMP,
    ">": PREC_CMP,
    ">=": PREC_CMP,
    "+": PREC_ADD,
    "-": PREC_ADD,
    "*": PREC_MUL,
    "/": PREC_MUL,
    "%": PREC_MUL,
    "atan2": PREC_MUL,
    "^": PREC_POW,
}
SET_OPS = frozenset({"and", "or", "unless"})
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})

_MATCH_OPS = (
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)


def binary_prec(op: str) -> int:
    return _BIN_PREC[op]


def match_op(op: pp.MatchOp) -> str:
    # The binding's enum members are not hashable: look them up by equality.
    for member, text in _MATCH_OPS:
        if op == member:
            return text
    raise ValueError(f"unknown match operator {op!r}")


def quote(value: str) -> str:
    """A PromQL double-quoted string (Go's escapes; ``$`` and non-ASCII kept as they are)."""
    return json.dumps(value, ensure_ascii=False)


def duration(delta: timedelta) -> str:
    """Prometheus' duration spelling (``1h30m``, ``1y2w``, ``500ms``), negative with ``-``."""
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    out = []
    for unit, size in (
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return sign + "".join(out)


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def matchers_text(matchers: Sequence[tuple[str, str, str]]) -> str:
    return ",".join(f"{name}{op}{quote(value)}" for name, op, value in matchers)


def selector_text(
    name: str | None,
    matchers: Sequence[tuple[str, str, str]],
    *,
    range_: timedelta | None = None,
    offset: timedelta | None = None,
    at: str | None = None,
) -> str:
    text = (name or "") + ("{" + matchers_text(matchers) + "}" if matchers or not name else "")
    if range_ is not None:
        text += f"[{duration(range_)}]"
    return text + modifiers_text(offset, at)


def modifiers_text(offset: timedelta | None, at: str | None) -> str:
    text = ""
    if offset is not None and offset != timedelta(0):
        text += f" offset {duration(offset)}"
    if at is not None:
        text += f" @ {at}"
    return text


def at_text(at: pp.AtModifier | None) -> str | None:
    if at is None:
        return None
    if at.type is pp.AtModifierType.Start:
        return "start()"
    if at.type is pp.AtModifierType.End:
        return "end()"
    assert at.at is not None
    return number(at.at.timestamp())


def grouping_text(prefix: str, labels: Sequence[str]) -> str:
    return f"{prefix} ({', '.join(labels)})"


def vector_matchers(node: pp.VectorSelector) -> list[tuple[str, str, str]]:
    """The selector's matchers, with its name as ``__name__`` when it has one."""
    if node.matchers.or_matchers:
        raise ValueError("selectors with `or` between matchers are not supported")
    return [(m.name, match_op(m.op), m.value) for m in node.matchers.matchers]


def paren(text: str, prec: int, need: int) -> str:
    return f"({text})" if prec < need else text


@dataclass(frozen=True)
class Printed:
    text: str
    prec: int


def render(node: pp.Expr) -> Printed:
    """Print a parsed expression back, one line, keeping its grouping."""
    return Printer(lambda child: None).print(node)


class Printer:
    """Prints a tree; ``override`` may print any subtree itself (the rewrite's hook)."""

    def __init__(self, override: Callable[[pp.Expr], Printed | None]) -> None:
        self.override = override

    def print(self, node: pp.Expr) -> Printed:
        done = self.override(node)
        if done is not None:
            return done
        return self.default(node)

    def default(self, node: pp.Expr) -> Printed:
        if isinstance(node, pp.NumberLiteral):
            return Printed(number(node.val), PREC_ATOM if node.val >= 0 else PREC_UNARY)
        if isinstance(node, pp.StringLiteral):
            return Printed(quote(node.val), PREC_ATOM)
        if isinstance(node, pp.VectorSelector):
            return Printed(
                selector_text(
                    node.name,
                    [m for m in vector_matchers(node) if node.name is None or m[0] != "__name__"],
                    offset=node.offset,
                    at=at_text(node.at),
                ),
                PREC_ATOM,
            )
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            return Printed(
                selector_text(
                    vs.name,
                    [m for m in vector_matchers(vs) if vs.name is None or m[0] != "__name__"],
                    range_=node.range,
                    offset=vs.offset,
                    at=at_text(vs.at),
                ),
                PREC_ATOM,
            )
        if isinstance(node, pp.ParenExpr):
            return Printed(f"({self.print(node.expr).text})", PREC_ATOM)
        if isinstance(node, pp.UnaryExpr):
            inner = self.print(node.expr)
            return Printed("-" + paren(inner.text, inner.prec, PREC_UNARY), PREC_UNARY)
        if isinstance(node, pp.SubqueryExpr):
            inner = self.print(node.expr)
            step = f"{duration(node.step)}" if node.step is not None else ""
            assert node.range is not None
            text = f"{paren(inner.text, inner.prec, PREC_ATOM)}[{duration(node.range)}:{step}]"
            return Printed(text + modifiers_text(node.offset, at_text(node.at)), PREC_ATOM)
        if isinstance(node, pp.Call):
            args = ", ".join(self.print(arg).text for arg in node.args)
            return Printed(f"{node.func.name}({args})", PREC_ATOM)
        if isinstance(node, pp.AggregateExpr):
            return Printed(
                aggregate_text(
                    str(node.op),
                    self.print(node.expr).text,
                    modifier=node.modifier,
                    param=self.print(node.param).text if node.param is not None else None,
                ),
                PREC_ATOM,
            )
        if isinstance(node, pp.BinaryExpr):
            op = str(node.op)
            lhs, rhs = self.print(node.lhs), self.print(node.rhs)
            return Printed(
                binary_text(op, lhs, rhs, binary_modifier_text(node.modifier)), binary_prec(op)
            )
        raise ValueError(f"unsupported PromQL node {type(node).__name__}")


def aggregate_text(
    op: str,
    inner: str,
    *,
    modifier: pp.AggModifier | None = None,
    param: str | None = None,
    by: Sequence[str] | None = None,
    without: Sequence[str] | None = None,
) -> str:
    grouping = ""
    if modifier is not None:
        kind = "by" if modifier.type is pp.AggModifierType.By else "without"
        grouping = " " + grouping_text(kind, modifier.labels)
    elif by is not None:
        grouping = " " + grouping_text("by", by)
    elif without is not None:
        grouping = " " + grouping_text("without", without)
    args = f"{param}, {inner}" if param is not None else inner
    return f"{op}{grouping} ({args})" if grouping else f"{op}({args})"


def binary_modifier_text(
    modifier: pp.BinModifier | None, rename: Callable[[str], str] = lambda label: label
) -> str:
    """`` bool on (a) group_left (b)`` (leading space) or ``""``."""
    if modifier is None:
        return ""
    text = " bool" if modifier.return_bool else ""
    if modifier.matching is not None:
        kind = "on" if modifier.matching.type is pp.LabelModifierType.Include else "ignoring"
        text += " " + grouping_text(kind, [rename(label) for label in modifier.matching.labels])
    card = modifier.card
    if card is pp.VectorMatchCardinality.ManyToOne:
        text += " " + grouping_text("group_left", [rename(g) for g in modifier.group_labels or []])
    elif card is pp.VectorMatchCardinality.OneToMany:
        text += " " + grouping_text("group_right", [rename(g) for g in modifier.group_labels or []])
    return text


def binary_text(op: str, lhs: Printed, rhs: Printed, modifier: str = "") -> str:
    prec = binary_prec(op)
    # Left-associative except ``^``: an equal-precedence operand needs parentheses on the
    # right (on the left for ``^``) to keep its grouping.
    # A unary minus on the right binds to its operand whatever the operator (``a ^ -b``).
    if op == "^":
        left, right = paren(lhs.text, lhs.prec, prec + 1), paren(rhs.text, rhs.prec, prec)
    else:
        left, right = paren(lhs.text, lhs.prec, prec), paren(rhs.text, rhs.prec, prec + 1)
    if rhs.prec == PREC_UNARY:
        right = rhs.text
    return f"{left} {op}{modifier} {right}"


# --- Grafana macros ------------------------------------------------------------------------

_IN_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$")
_PLACEHOLDER_BASE = 7919  # years: a range nobody writes, printed back verbatim


@dataclass
class Protected:
    text: str
    restore: Callable[[str], str]
    had_macros: bool
    tokens: frozenset[str] = frozenset()  # the placeholders, as printed


def _scan_macro(text: str, i: int) -> int:
    """End of the Grafana macro starting at ``text[i]``, or ``i`` when there is none."""
    if text.startswith("[[", i):
        end = text.find("]]", i + 2)
        return end + 2 if end > i + 2 else i
    if text[i] != "$":
        return i
    if text.startswith("${", i):
        end = text.find("}", i + 2)
        return end + 1 if end > i + 2 else i
    j = i + 1
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    return j if j > i + 1 else i


def protect(text: str, *, numbers: bool = False) -> Protected:
    """Replace Grafana macros outside string literals by placeholders that parse."""
    out: list[str] = []
    back: dict[str, str] = {}
    i, n, in_brackets, in_braces, quote_char = 0, len(text), 0, 0, ""
    count = 0
    while i < n:
        ch = text[i]
        if quote_char:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == quote_char:
                quote_char = ""
            i += 1
            continue
        if ch in "\"'`":
            quote_char = ch
            out.append(ch)
            i += 1
            continue
        end = _scan_macro(text, i)
        if end > i:
            macro = text[i:end]
            before = "".join(out).rstrip()
            if in_brackets or before.endswith("offset"):
                token = f"{_PLACEHOLDER_BASE + count}y"
            elif numbers and not in_braces and not _IN_LABEL_LIST.search(before):
                token = f"{_PLACEHOLDER_BASE + count}.0625"
            else:
                token = f"__grafana_macro_{count}__"
            count += 1
            back[token] = macro
            out.append(token)
            i = end
            continue
        if ch == "{":
            in_braces += 1
        elif ch == "}" and in_braces:
            in_braces -= 1
        elif ch == "[":
            in_brackets += 1
        elif ch == "]" and in_brackets:
            in_brackets -= 1
        out.append(ch)
        i += 1
    protected = "".join(out)
    for token in back:
        if token in text:
            raise ValueError(
                f"the expression already contains {token!r}, which macros are protected with"
            )

    def restore(printed: str) -> str:
        # Longest tokens first, so "__grafana_macro_1__" never eats part of "..._11__".
        for token in sorted(back, key=len, reverse=True):
            printed = printed.replace(token, back[token])
        return printed

    return Protected(protected, restore, bool(back), frozenset(back))


def parse(text: str) -> tuple[pp.Expr, Protected]:
    """Parse PromQL that may hold Grafana macros; ValueError names the parser's complaint."""
    protected = protect(text)
    try:
        return pp.parse(protected.text), protected
    except (ValueError, RuntimeError) as first:
        if protected.had_macros:
            # A macro where a number belongs (``> $threshold``, ``topk($n, ...)``).
            alt = protect(text, numbers=True)
            try:
                return pp.parse(alt.text), alt
            except (ValueError, RuntimeError):
                pass
        raise ValueError(f"cannot parse PromQL: {first}") from first
