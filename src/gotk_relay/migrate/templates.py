"""Grafana template-variable queries: ``label_values(...)``, ``query_result(...)``, PromQL.

These are Grafana's own functions around PromQL, not PromQL: the call is taken apart here (a
split at the top-level comma, strings and brackets respected) and what is inside goes through
the PromQL rewrite.
"""

from __future__ import annotations

from .rewrite import Migrated, migrate_expr, migrate_series_selector
from .shapes import LabelShape, Shape


def _call(text: str, name: str) -> str | None:
    body = text.strip()
    if body.startswith(name) and body[len(name) :].lstrip().startswith("(") and body.endswith(")"):
        inner = body[len(name) :].lstrip()[1:-1]
        return inner
    return None


def _split_last_comma(text: str) -> tuple[str, str] | None:
    depth, quote_char, cut = 0, "", -1
    i = 0
    while i < len(text):
        ch = text[i]
        if quote_char:
            if ch == "\\":
                i += 2
                continue
            if ch == quote_char:
                quote_char = ""
        elif ch in "\"'`":
            quote_char = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            cut = i
        i += 1
    if cut < 0:
        return None
    return text[:cut], text[cut + 1 :]


def migrate_template_query(
    text: str,
    to: Shape,
    *,
    source: Shape | None = None,
    label_shape: LabelShape = LabelShape.STORED,
) -> Migrated:
    """Rewrite a Grafana Prometheus variable query (``label_values(sel, label)``,
    ``label_values(label)``, ``query_result(expr)``, ``metrics(re)``, or plain PromQL)."""
    inner = _call(text, "label_values")
    if inner is not None:
        parts = _split_last_comma(inner)
        if parts is None:  # label_values(label): every series' values, no Flux metric named
            return Migrated(text, None, False)
        selector, label = parts[0].strip(), parts[1].strip()
        new_selector, new_label, outcome = migrate_series_selector(
            selector, label, to, source=source, label_shape=label_shape
        )
        if not outcome.changed:
            return Migrated(text, outcome.source, False)
        rewritten = f"label_values({new_selector}, {new_label})"
        return Migrated(rewritten, outcome.source, True, outcome.notes)
    inner = _call(text, "query_result")
    if inner is not None:
        outcome = migrate_expr(inner, to, source=source, label_shape=label_shape)
        if not outcome.changed:
            return Migrated(text, outcome.source, False)
        return Migrated(f"query_result({outcome.text})", outcome.source, True, outcome.notes)
    for name in ("metrics", "label_names"):
        if _call(text, name) is not None:
            return Migrated(text, None, False)
    return migrate_expr(text, to, source=source, label_shape=label_shape)
