"""The semantic rewrite of one PromQL expression between Flux shapes (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from .shapes import LabelShape, Shape


class NotMigratable(ValueError):
    """The expression has no exact counterpart on the target shape; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Migrated:
    text: str  # the migrated expression; the input itself when nothing changed
    source: Shape | None  # the shape the input reads; None when it reads no Flux metric
    changed: bool
    notes: tuple[str, ...] = ()  # documented, visible differences that remain (never silent)


def migrate_expr(
    text: str,
    to: Shape,
    *,
    source: Shape | None = None,
    label_shape: LabelShape = LabelShape.STORED,
) -> Migrated:
    """Rewrite ``text`` (PromQL, Grafana macros allowed) to read ``to``.

    ``source`` None: detected from the metrics the expression reads. Raises ``NotMigratable``
    (with the reason) when no exact counterpart exists, ``ValueError`` when ``text`` does not parse.
    """
    raise NotMigratable("not built yet")


def referenced_metrics(text: str) -> frozenset[str]:
    """The Flux metric names ``text`` reads (Grafana macros allowed)."""
    raise NotMigratable("not built yet")
