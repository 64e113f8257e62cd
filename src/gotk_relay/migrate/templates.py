"""Grafana template-variable queries: ``label_values(...)``, ``query_result(...)``, PromQL."""

from __future__ import annotations

from .rewrite import Migrated, migrate_expr
from .shapes import LabelShape, Shape


def migrate_template_query(
    text: str,
    to: Shape,
    *,
    source: Shape | None = None,
    label_shape: LabelShape = LabelShape.STORED,
) -> Migrated:
    """Rewrite a Grafana Prometheus variable query (``label_values(sel, label)``,
    ``label_values(label)``, ``query_result(expr)``, ``metrics(re)``, or plain PromQL)."""
    return migrate_expr(text, to, source=source, label_shape=label_shape)
