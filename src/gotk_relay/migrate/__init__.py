"""``gotk-relay migrate``: rewrite PromQL from one Flux object-state shape to another.

The relay keeps old queries working during a migration; this package finishes the migration:
it rewrites the queries themselves (dashboards, alert rules, plain PromQL files) so that the
migrated query returns, at every instant, what the original returned on the other shape of the
same objects, or refuses with the reason when no exact counterpart exists.

Stages, each a module: ``shapes`` (the three shapes and how their labels correspond),
``printer`` (PromQL AST to text, Grafana macros protected around parsing), ``rewrite`` (the
semantic rewrite, pure), ``templates`` (Grafana variable queries), ``files`` (dashboard JSON,
rule YAML, ``.promql``), ``check`` (does a Prometheus still hold what the queries read).
"""

from __future__ import annotations

from .rewrite import (
    Migrated,
    NotMigratable,
    migrate_expr,
    migrate_series_selector,
    referenced_metrics,
)
from .shapes import FLUX_METRICS, LabelShape, Shape
from .templates import migrate_template_query

__all__ = [
    "FLUX_METRICS",
    "LabelShape",
    "Migrated",
    "NotMigratable",
    "Shape",
    "migrate_expr",
    "migrate_series_selector",
    "migrate_template_query",
    "referenced_metrics",
]
