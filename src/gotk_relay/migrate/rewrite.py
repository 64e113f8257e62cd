"""The semantic rewrite of one PromQL expression between Flux shapes (pure).

A Flux selector is read into a shape-neutral *term*: which objects it selects (neutral matchers:
``kind``, ``name``, ``exported_namespace`` for the object's namespace, everything else by its
own name), which Ready statuses and suspension it keeps, and what its values are:

- ``ONE``: one series per selected object, value 1 (an info series; ``legacy == 1``);
- ``ZERO``: one series per selected object, value 0 (``legacy == 0``): only counted, grouped or
  tested for absence, since the info shapes have no 0-valued series;
- ``INDICATOR``: the legacy gauges themselves, one 0/1 series per object and named status.

The term is written out for the target shape only once its context is known, because the same
legacy selector needs different info queries under ``sum`` (a count that is 0 for groups whose
objects are all in another state), ``count`` (every object) or ``== 1`` (a filter). Contexts
with no exact counterpart raise :class:`NotMigratable` with the reason; nothing is guessed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

import promql_parser as pp
import re2

from . import printer
from .printer import (
    PREC_ADD,
    PREC_AND,
    PREC_ATOM,
    PREC_CMP,
    PREC_OR,
    Printed,
    aggregate_text,
    binary_prec,
    quote,
    selector_text,
)
from .shapes import (
    CONDITION,
    DELETED,
    FLUX_METRICS,
    STATUSES,
    SUSPEND,
    LabelShape,
    Shape,
    info_metric,
    info_only_labels,
    kind_label,
    shape_of_metric,
)


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


ALL_STATUSES = frozenset(STATUSES)
DELETED_ONE = (
    'status="Deleted" (Flux before 2.1) at 1 selects deleted objects, which have no info '
    "series: alert on their absence instead. Where the Deleted series only leave deleted "
    "objects out (the old ReconciliationFailure alert, panels that subtract them), they are "
    "migrated"
)
# Labels that hold an object's state: one series per status on the legacy shape, the state of
# the object on the info shapes. Results are compared without them (docs/migrate.md).
STATE_LABELS = frozenset({"status", "type", "ready", "suspended"})
# Labels that name what exposed the series (the controllers, kube-state-metrics, the operator):
# a fixed value of one of them selects a different exposer on the other shape.
EXPOSER_LABELS = frozenset({"job", "instance", "pod", "container", "service", "namespace"})
# Aggregations whose result on a set of 1-valued series does not depend on how many there are
# beyond "any": kept as written.
_SET_AGGREGATIONS = frozenset({"sum", "count", "max", "min", "group"})
# Range functions whose result over a window of Flux series is defined per object here.
_WINDOW_FUNCTIONS = frozenset({"max_over_time", "present_over_time"})


class Value(enum.Enum):
    ONE = "one"
    ZERO = "zero"
    INDICATOR = "indicator"


Matcher = tuple[str, str, str]  # (neutral label, op, value)


@dataclass(frozen=True)
class Term:
    """A shape-neutral Flux selection (see the module docstring)."""

    matchers: tuple[Matcher, ...]
    value: Value
    ready: frozenset[str] = ALL_STATUSES  # statuses kept (ONE/ZERO) or named (INDICATOR)
    suspended: bool | None = None  # kept suspension (ONE/ZERO); for INDICATOR: the suspend gauge
    suspend_gauge: bool = False  # INDICATOR of gotk_suspend_status
    offset: timedelta | None = None
    at: str | None = None
    range_: timedelta | None = None  # a matrix selector
    window: str | None = None  # ONE over a window: the range function applied (max_over_time)
    # The result has one series per object and status (from gotk_reconcile_condition): keep
    # ``ready`` apart in windowed info results; from gotk_suspend_status it is one per object.
    per_status: bool = True
    # Equality matchers of the selector as written (target-independent, mapped later), for
    # absent(): None when the term no longer is a bare selector.
    absent_labels: tuple[tuple[str, str], ...] | None = None
    # INDICATOR: the selector also names status="Deleted" (Flux before 2.1, or gotk-relay's
    # flux.emit_deleted), one more series per live object, always 0 there.
    deleted: bool = False


@dataclass(frozen=True)
class Out:
    """A rewritten subexpression's text, with what its result's labels are."""

    text: str
    prec: int
    flux: bool = False  # its series carry Flux labels (renamed in by/on lists above it)
    labels: frozenset[str] | None = None  # known target label names (after by()); None: all
    scalar: bool = False
    vector_call: bool = False  # ``vector(...)``: one series without labels
    # The same result without its 0-valued series, for a comparison that drops them anyway
    # (``max by (...) (legacy) == 1``): the zero fill only serves unfiltered results.
    nonzero: Out | None = None
    ones: bool = False  # every value is 1


Node = Term | Out


def _fullmatch(op: str, pattern: str, value: str) -> bool:
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    hit = re2.fullmatch(pattern, value) is not None
    return hit if op == "=~" else not hit


def _has_macro(value: str) -> bool:
    return "$" in value or "[[" in value


def _matches_all(op: str, value: str) -> bool:
    return (op == "=~" and value in (".*", ".+")) or (op == "!~" and value == "")


@dataclass
class _Context:
    source: Shape
    to: Shape
    label_shape: LabelShape
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # --- label names -----------------------------------------------------------------------

    def neutral_label(self, label: str, *, where: str) -> str:
        """A source label name as the neutral one, refusing the ones with no counterpart."""
        src, to = self.source, self.to
        if src is Shape.LEGACY:
            if label in ("status", "type"):
                raise NotMigratable(
                    f"{where} uses `{label}`: the legacy shape has a series for every Ready "
                    "status (0 on all but the current one); the info shapes have one series per "
                    "object with the status in `ready`"
                )
            if self.label_shape is LabelShape.RAW and label == "namespace":
                return "exported_namespace"
            if self.label_shape is LabelShape.RAW and label == "exported_namespace":
                raise NotMigratable(
                    f"{where} uses `exported_namespace`, which the raw legacy shape does not have"
                )
            if label in ("customresource_kind", "ready", "suspended"):
                raise NotMigratable(f"{where} uses `{label}`, which the legacy shape does not have")
            return label
        if label in ("ready", "suspended"):
            raise NotMigratable(
                f"{where} uses `{label}`: "
                + (
                    "the legacy shape keeps it in the gauges' values, not in a label"
                    if to is Shape.LEGACY
                    else "its values are spelled differently in the other info shape"
                )
            )
        if label == kind_label(src):
            return "kind"
        if label == kind_label(to) and to is not Shape.LEGACY:
            raise NotMigratable(f"{where} uses `{label}`, which {src.value} series do not have")
        if label in info_only_labels(src) or label in (
            "customresource_group",
            "customresource_version",
        ):
            # Not even between the two info shapes: their sources differ (KSM's `revision` is
            # the last applied one, the operator's the last attempted).
            raise NotMigratable(f"{where} uses `{label}`, which only {src.value} series have")
        return label

    def target_label(self, neutral: str) -> str:
        if neutral == "kind":
            return "kind" if self.to is Shape.LEGACY else kind_label(self.to)
        if self.to is Shape.LEGACY and self.label_shape is LabelShape.RAW:
            if neutral == "exported_namespace":
                return "namespace"
            if neutral == "namespace":
                raise NotMigratable(
                    "`namespace` of the exposing pod has no counterpart in the raw legacy shape, "
                    "where `namespace` is the object's"
                )
        return neutral

    def rename(self, label: str, *, where: str) -> str:
        target = self.target_label(self.neutral_label(label, where=where))
        if (label in EXPOSER_LABELS and label != "namespace") or (
            label == "namespace" and target == "namespace"
        ):
            self.note(
                f"`{label}` names what exposed the series: the Flux controllers on the legacy "
                "shape, kube-state-metrics or the Flux Operator on the info shapes; its values "
                "differ unless gotk-relay made one shape from the other"
            )
        return target

    # --- selectors -------------------------------------------------------------------------

    def term_of(self, node: pp.VectorSelector, range_: timedelta | None = None) -> Term:
        name = node.name
        raw = printer.vector_matchers(node)
        if name is None:
            names = [m for m in raw if m[0] == "__name__"]
            if len(names) != 1 or names[0][1] != "=":
                raise NotMigratable("selects Flux metrics by a pattern on `__name__`")
            name = names[0][2]
        matchers = [m for m in raw if m[0] != "__name__"]
        shape = shape_of_metric(name)
        assert shape is self.source
        absent = tuple((label, value) for label, op, value in matchers if op == "=")
        common = {"offset": node.offset, "at": printer.at_text(node.at), "range_": range_}
        if shape is Shape.LEGACY:
            return self._legacy_term(name, matchers, absent, common)
        return self._info_term(matchers, absent, common)

    def _neutral_matcher(self, label: str, op: str, value: str) -> Matcher:
        neutral = self.neutral_label(label, where=f"the matcher {label}{op}{quote(value)}")
        if (
            label in EXPOSER_LABELS
            and not (
                self.source is Shape.LEGACY
                and self.label_shape is LabelShape.RAW
                and label == "namespace"
            )
            and not (_has_macro(value) or _matches_all(op, value))
        ):
            raise NotMigratable(
                f"the matcher {label}{op}{quote(value)} names what exposed the series (the "
                "Flux controllers on the legacy shape, kube-state-metrics or the Flux Operator "
                "on the info shapes): a fixed value selects something else on the other shape; "
                "use a template variable or drop it"
            )
        return (neutral, op, value)

    def _legacy_term(
        self,
        name: str,
        matchers: list[Matcher],
        absent: tuple[tuple[str, str], ...],
        common: Mapping[str, object],
    ) -> Term:
        neutral: list[Matcher] = []
        statuses = set(STATUSES)
        # The Deleted series count only where a status matcher names them (a store of Flux 2.1
        # or later has none; one of an older Flux has them for every object).
        deleted_named, deleted_kept = False, True
        for label, op, value in matchers:
            if label == "status" and name == CONDITION:
                if _has_macro(value):
                    raise NotMigratable(
                        "the Ready status comes from a template variable, whose values differ "
                        "between shapes"
                    )
                hit = _fullmatch(op, value, DELETED)
                deleted_named = deleted_named or (op in ("=", "=~") and hit)
                deleted_kept = deleted_kept and hit
                statuses = {s for s in statuses if _fullmatch(op, value, s)}
            elif label == "type" and name == CONDITION:
                if not _fullmatch(op, value, "Ready"):
                    raise NotMigratable(
                        f"type{op}{quote(value)} selects no series: only Ready exists"
                    )
            elif label in ("status", "type") and name == SUSPEND:
                if not _fullmatch(op, value, ""):
                    raise NotMigratable(f"{SUSPEND} has no `{label}` label: the selector is empty")
            else:
                neutral.append(self._neutral_matcher(label, op, value))
        deleted = deleted_named and deleted_kept
        if not statuses and not deleted:
            raise NotMigratable("the status matchers select no Ready status")
        if deleted:
            self.note(
                'status="Deleted" (Flux before 2.1) is written as the 0 each live object has '
                "there: a deleted object has no info series, where the legacy shape kept it "
                "with Deleted 1 until the controller dropped it"
            )
        return Term(
            matchers=tuple(neutral),
            value=Value.INDICATOR,
            ready=frozenset(statuses) if name == CONDITION else ALL_STATUSES,
            suspend_gauge=name == SUSPEND,
            absent_labels=absent,
            deleted=deleted,
            **common,  # type: ignore[arg-type]
        )

    def _info_term(
        self,
        matchers: list[Matcher],
        absent: tuple[tuple[str, str], ...],
        common: Mapping[str, object],
    ) -> Term:
        src = self.source
        ksm = src is Shape.RESOURCE_INFO
        statuses = set(STATUSES)
        suspended: set[bool] = {True, False}
        neutral: list[Matcher] = []
        for label, op, value in matchers:
            text = f"{label}{op}{quote(value)}"
            if label in ("ready", "suspended") and _has_macro(value):
                raise NotMigratable(
                    f"{text} takes the state from a template variable, whose values differ "
                    "between shapes"
                )
            if label == "ready":
                keep = set()
                for status in STATUSES:
                    hit = _fullmatch(op, value, status)
                    if ksm and status == "Unknown" and hit != _fullmatch(op, value, ""):
                        raise NotMigratable(
                            f"{text}: kube-state-metrics writes no `ready` for an object without "
                            "a Ready condition (and never for Alert and Provider), which the "
                            'legacy shape counts as Unknown; match both, e.g. ready=~"Unknown|"'
                        )
                    if hit:
                        keep.add(status)
                statuses &= keep
            elif label == "suspended":
                yes, no = ("true", "false") if ksm else ("True", "False")
                keep_s = set()
                if _fullmatch(op, value, yes):
                    keep_s.add(True)
                hit_no = _fullmatch(op, value, no)
                if ksm and hit_no != _fullmatch(op, value, ""):
                    raise NotMigratable(
                        f"{text}: kube-state-metrics writes no `suspended` for an object whose "
                        "spec does not set it, which is not suspended either; match both, e.g. "
                        'suspended!="true"'
                    )
                if hit_no:
                    keep_s.add(False)
                suspended &= keep_s
            elif label in ("customresource_group", "customresource_version") and ksm:
                if not _matches_all(op, value):
                    raise NotMigratable(
                        f"{text}: the legacy shape and the Flux Operator have no API group or "
                        "version label; filter on the kind instead"
                    )
            else:
                if label in info_only_labels(src) and _matches_all(op, value):
                    continue
                neutral.append(self._neutral_matcher(label, op, value))
        if not statuses:
            raise NotMigratable("the `ready` matchers select no Ready status")
        if not suspended:
            raise NotMigratable("the `suspended` matchers select nothing")
        return Term(
            matchers=tuple(neutral),
            value=Value.ONE,
            ready=frozenset(statuses),
            suspended=None if len(suspended) == 2 else suspended.pop(),
            absent_labels=absent,
            **common,  # type: ignore[arg-type]
        )

    # --- writing terms out -----------------------------------------------------------------

    def target_matchers(self, term: Term) -> list[tuple[str, str, str]]:
        return [(self.target_label(label), op, value) for label, op, value in term.matchers]

    def ready_matcher(self, statuses: frozenset[str]) -> list[tuple[str, str, str]]:
        if statuses == ALL_STATUSES:
            return []
        ksm = self.to is Shape.RESOURCE_INFO
        if len(statuses) == 1:
            (status,) = statuses
            if status == "Unknown" and ksm:
                return [("ready", "=~", "Unknown|")]
            return [("ready", "=", status)]
        (missing,) = ALL_STATUSES - statuses
        if missing == "Unknown":
            return [("ready", "=~", "True|False")]
        return [("ready", "!=", missing)]

    def suspended_matcher(self, suspended: bool | None) -> list[tuple[str, str, str]]:
        if suspended is None:
            return []
        if self.to is Shape.RESOURCE_INFO:
            return [("suspended", "=" if suspended else "!=", "true")]
        return [("suspended", "=", "True" if suspended else "False")]

    def info_selector(
        self, term: Term, statuses: frozenset[str], suspended: bool | None, *, window: bool = True
    ) -> str:
        matchers = (
            self.target_matchers(term)
            + self.ready_matcher(statuses)
            + self.suspended_matcher(suspended)
        )
        return selector_text(
            info_metric(self.to),
            matchers,
            range_=term.range_ if window else None,
            offset=term.offset,
            at=term.at,
        )

    def legacy_set(self, term: Term, statuses: frozenset[str], suspended: bool | None) -> Out:
        """The objects as 1-valued legacy series: ``gotk_reconcile_condition{...} == 1``."""
        status = sorted(statuses, key=STATUSES.index)
        status_m = (
            [("status", "=", status[0])]
            if len(status) == 1
            else [("status", "=~", "|".join(status))]
        )
        base = self.target_matchers(term)
        cond = selector_text(CONDITION, base + status_m, offset=term.offset, at=term.at)
        text = f"{cond} == 1"
        if term.window is not None:
            if suspended is not None:
                raise NotMigratable(
                    f"{term.window} over `suspended`: the legacy shape keeps suspension in another "
                    "gauge, whose window would be judged apart from the Ready one"
                )
            assert term.range_ is not None
            window = selector_text(
                CONDITION, base + status_m, range_=term.range_, offset=term.offset, at=term.at
            )
            text = f"max_over_time({window}) == 1"
        if suspended is None:
            return Out(text, PREC_CMP, flux=True)
        gauge = selector_text(SUSPEND, base, offset=term.offset, at=term.at)
        op = "and" if suspended else "unless"
        return Out(f"{text} {op} ignoring (status, type) {gauge} == 1", PREC_AND, flux=True)

    def objects(
        self,
        term: Term,
        statuses: frozenset[str],
        suspended: bool | None,
        *,
        dedupe: bool = False,
        keep: frozenset[str] = frozenset(),
    ) -> Out:
        """The selected objects as one 1-valued series each, on the target shape.

        On the info shapes an object's series changes with its state and with labels such as
        ``revision``, and the old and new series can both be there for up to a scrape (a stale
        marker late or lost): ``max without (...)`` those labels makes it one series per object,
        whose labels stay put while the object does, as the legacy series' did (an alert's
        ``for:`` is not restarted by a new revision). ``ready`` is kept where it is constant
        (one status selected), or per status in a window, where the legacy shape has one series
        per status too.
        """
        if self.to is Shape.LEGACY:
            return self.legacy_set(term, statuses, suspended)
        selector = self.info_selector(term, statuses, suspended)
        inner = f"{term.window}({selector})" if term.window is not None else selector
        if not dedupe:  # for group(), max(), min(), unless: how many series per object is moot
            return Out(inner, PREC_ATOM, flux=True, ones=True)
        if term.window is not None:
            keep_ready = term.per_status
        else:
            keep_ready = term.per_status and len(statuses) == 1
        varying = sorted(
            ({"suspended"} | info_only_labels(self.to) | (set() if keep_ready else {"ready"}))
            - {"customresource_group"}  # one per kind: it never changes
            - keep  # labels an aggregation above groups by
        )
        return Out(aggregate_text("max", inner, without=varying), PREC_ATOM, flux=True, ones=True)

    def materialize(self, node: Node, *, what: str) -> Out:
        if isinstance(node, Out):
            return node
        if node.range_ is not None and node.window is None:
            raise NotMigratable(
                f"{what} reads a range of Flux samples, which differ between shapes (the legacy "
                "gauges have a sample per status; an info series ends at each change): only "
                "max_over_time(...) == 1 and absent_over_time() have a counterpart"
            )
        if node.value is Value.ONE:
            return self.objects(node, node.ready, node.suspended, dedupe=True)
        if node.value is Value.ZERO:
            raise NotMigratable(
                f"{what} uses the value 0 of legacy series (`== 0`): the info shapes have no "
                "series for an object not in that state; only count(), group() and absent() of "
                "such a filter have a counterpart"
            )
        raise NotMigratable(
            f"{what} uses the legacy gauges' 0/1 values: an object in another state is 0 there "
            "and has no info series; filter with `== 1` or aggregate with sum/count/max/min by"
        )

    def absent_fixup(
        self, inner: str, original: Mapping[str, str], migrated: Mapping[str, str]
    ) -> str:
        """Make ``absent(...)``'s labels what the original's were, mapped to the target names."""
        want: dict[str, str] = {}
        for label, value in original.items():
            if label in STATE_LABELS or label in ("customresource_group", "customresource_version"):
                continue  # state labels are the object's state, not compared (docs/migrate.md)
            want[self.target_label(self.neutral_label(label, where="absent()"))] = value
        migrated = {label: value for label, value in migrated.items() if label not in STATE_LABELS}
        text = inner
        for label in sorted(set(want) | set(migrated)):
            if want.get(label) != migrated.get(label):
                text = (
                    f'label_replace({text}, {quote(label)}, {quote(want.get(label, ""))}, "", "")'
                )
        return text


def _compare_one(op: str, threshold: float) -> tuple[bool, bool]:
    """Does ``v <op> threshold`` keep 1, and keep 0?"""

    def keep(v: float) -> bool:
        return {
            "==": v == threshold,
            "!=": v != threshold,
            ">": v > threshold,
            ">=": v >= threshold,
            "<": v < threshold,
            "<=": v <= threshold,
        }[op]

    return keep(1.0), keep(0.0)


_FLIP = {"==": "==", "!=": "!=", ">": "<", "<": ">", ">=": "<=", "<=": ">="}


class _Rewriter:
    def __init__(self, ctx: _Context, macros: frozenset[str]) -> None:
        self.ctx = ctx
        self.macros = macros  # placeholder texts standing for Grafana macros

    def out(self, node: pp.Expr) -> Out:
        return self.ctx.materialize(self.visit(node), what="the expression")

    def visit(self, node: pp.Expr) -> Node:
        ctx = self.ctx
        if not _reads_flux(node):
            printed = printer.render(node)
            return Out(
                printed.text,
                printed.prec,
                scalar=_is_scalar(node),
                vector_call=_is_vector_call(node),
            )
        if isinstance(node, pp.VectorSelector):
            return ctx.term_of(node)
        if isinstance(node, pp.MatrixSelector):
            return ctx.term_of(node.vector_selector, node.range)
        if isinstance(node, pp.ParenExpr):
            inner = self.visit(node.expr)
            if isinstance(inner, Term):
                return replace(inner, absent_labels=None)
            return replace(inner, text=f"({inner.text})", prec=PREC_ATOM)
        if isinstance(node, pp.UnaryExpr):
            inner_out = ctx.materialize(self.visit(node.expr), what="unary minus")
            return Out(
                "-" + printer.paren(inner_out.text, inner_out.prec, printer.PREC_UNARY),
                printer.PREC_UNARY,
                flux=True,
                labels=inner_out.labels,
            )
        if isinstance(node, pp.BinaryExpr):
            return self.binary(node)
        if isinstance(node, pp.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, pp.Call):
            return self.call(node)
        if isinstance(node, pp.SubqueryExpr):
            inner_out = ctx.materialize(self.visit(node.expr), what="a subquery")
            assert node.range is not None
            step = printer.duration(node.step) if node.step is not None else ""
            text = (
                f"{printer.paren(inner_out.text, inner_out.prec, PREC_ATOM)}"
                f"[{printer.duration(node.range)}:{step}]"
                + printer.modifiers_text(node.offset, printer.at_text(node.at))
            )
            return Out(text, PREC_ATOM, flux=True, labels=inner_out.labels)
        raise NotMigratable(f"unsupported expression {type(node).__name__}")

    # --- binary operators ------------------------------------------------------------------

    def binary(self, node: pp.BinaryExpr) -> Node:
        ctx = self.ctx
        op = str(node.op)
        modifier = node.modifier
        return_bool = modifier is not None and modifier.return_bool
        lhs, rhs = self.visit(node.lhs), self.visit(node.rhs)
        if op in printer.COMPARISONS and not return_bool:
            filtered = self.filter(lhs, op, rhs) or self.filter(rhs, _FLIP[op], lhs)
            if filtered is not None:
                return filtered
            dropped = self.drop_zero_fill(lhs, op, rhs) or self.drop_zero_fill(rhs, _FLIP[op], lhs)
            if dropped is not None:
                return dropped
        if op in ("and", "unless"):
            merged = self.merge_suspend(lhs, op, rhs, modifier)
            if merged is not None:
                return merged
        left = ctx.materialize(lhs, what=f"`{op}`")
        right = ctx.materialize(rhs, what=f"`{op}`")
        both_flux = left.flux and right.flux

        def rename(label: str) -> str:
            new = (
                ctx.rename(label, where=f"`{op}` matching") if (left.flux or right.flux) else label
            )
            if new != label and not both_flux:
                raise NotMigratable(
                    f"`{op}` matches a Flux metric with another metric on `{label}`, which is "
                    f"`{new}` on the target shape; the other metric still has `{label}`"
                )
            return new

        matching = modifier.matching if modifier is not None else None
        if matching is None and left.flux != right.flux:
            flux_side, other = (left, right) if left.flux else (right, left)
            if not (other.scalar or other.vector_call):
                if flux_side.labels is None:
                    raise NotMigratable(
                        f"`{op}` matches Flux series with another metric on all labels, and the "
                        "Flux labels differ between shapes; add on(...)"
                    )
                for label in flux_side.labels:
                    rename(label)
        if matching is None and both_flux and (left.labels is None or right.labels is None):
            raise NotMigratable(
                f"`{op}` between Flux series matches on all their labels, which differ between "
                "shapes (the legacy gauges have `status` and `type`); add on(...)"
            )
        mod_text = printer.binary_modifier_text(modifier, rename)
        text = printer.binary_text(
            op, Printed(left.text, left.prec), Printed(right.text, right.prec), mod_text
        )
        labels: frozenset[str] | None
        if op in printer.SET_OPS or not (left.flux or right.flux):
            labels = left.labels if op != "or" else None
        elif left.scalar:
            labels = right.labels
        else:
            labels = left.labels
        return Out(
            text,
            binary_prec(op),
            flux=left.flux or right.flux,
            labels=labels,
            scalar=left.scalar and right.scalar,
        )

    def drop_zero_fill(self, agg: Node, op: str, number: Node) -> Out | None:
        if not (isinstance(agg, Out) and agg.nonzero is not None and isinstance(number, Out)):
            return None
        try:
            threshold = float(number.text)
        except ValueError:
            return None
        keeps_one, keeps_zero = _compare_one(op, threshold)
        if keeps_zero:
            return None
        part = agg.nonzero
        if part.ones and keeps_one:
            return part
        text = printer.binary_text(
            op, Printed(part.text, part.prec), Printed(number.text, PREC_ATOM)
        )
        return Out(text, PREC_CMP, flux=True, labels=part.labels)

    def filter(self, term: Node, op: str, number: Node) -> Term | None:
        if not isinstance(term, Term) or not isinstance(number, Out) or not number.scalar:
            return None
        if any(token in number.text for token in self.macros):
            raise NotMigratable(
                "compares Flux series with a template variable: which values it keeps cannot "
                "be known"
            )
        try:
            threshold = float(number.text)
        except ValueError:
            raise NotMigratable(
                f"compares Flux series with {number.text}, not a number: which values it keeps "
                "cannot be known"
            ) from None
        keeps_one, keeps_zero = _compare_one(op, threshold)
        if term.value is not Value.INDICATOR:
            if (term.value is Value.ONE and keeps_one) or (term.value is Value.ZERO and keeps_zero):
                return replace(term, absent_labels=None)
            raise NotMigratable(f"`{op} {number.text}` keeps none of these Flux series")
        if keeps_one == keeps_zero:
            raise NotMigratable(
                f"`{op} {number.text}` on the legacy 0/1 gauges keeps "
                + ("every value" if keeps_one else "no value")
                + "; the info shapes have no counterpart"
            )
        if term.range_ is not None and (term.window is None or not keeps_one):
            raise NotMigratable(
                "compares a range of Flux samples: only max_over_time(...) == 1 has a counterpart "
                "(never in a state over the window is not the same as some series of another)"
            )
        if term.deleted:
            if keeps_one:
                raise NotMigratable(DELETED_ONE)
            if term.ready:
                raise NotMigratable(
                    f"`{op} {number.text}` over a Ready status and Deleted keeps, per object, "
                    "two series or one: the info shapes have no counterpart"
                )
            # Deleted == 0: every live object, once.
            return replace(
                term,
                value=Value.ZERO,
                ready=ALL_STATUSES,
                deleted=False,
                absent_labels=None,
                per_status=False,
            )
        if term.suspend_gauge:
            return replace(
                term,
                value=Value.ONE if keeps_one else Value.ZERO,
                suspended=keeps_one,
                suspend_gauge=False,
                absent_labels=None,
                per_status=False,
            )
        if keeps_one:
            return replace(term, value=Value.ONE, absent_labels=None)
        if len(term.ready) != 1:
            raise NotMigratable(
                f"`{op} {number.text}` over several statuses keeps, per object, every status "
                "but its current one: the info shapes have no counterpart"
            )
        return replace(term, value=Value.ZERO, ready=ALL_STATUSES - term.ready, absent_labels=None)

    def merge_suspend(
        self, lhs: Node, op: str, rhs: Node, modifier: pp.BinModifier | None
    ) -> Term | None:
        """``ready-set and/unless on(identity) suspend-set``: one selection with both."""
        if not (isinstance(lhs, Term) and isinstance(rhs, Term)):
            return None
        if lhs.value is Value.INDICATOR or rhs.value is Value.INDICATOR:
            return None
        if lhs.suspended is not None or rhs.ready != ALL_STATUSES or rhs.suspended is None:
            return None
        if lhs.window or rhs.window or (lhs.offset, lhs.at) != (rhs.offset, rhs.at):
            return None
        matching = modifier.matching if modifier is not None else None
        identity = {"kind", "name", "exported_namespace"}
        if matching is None:
            return None
        labels = {
            self.ctx.neutral_label(label, where=f"`{op}` matching")
            for label in matching.labels
            if label not in ("status", "type")
        }
        if matching.type is pp.LabelModifierType.Include:
            if not identity <= labels:
                return None
        elif not set(matching.labels) <= {"status", "type"}:
            return None
        suspended = rhs.suspended if op == "and" else not rhs.suspended
        extra = tuple(m for m in rhs.matchers if m not in lhs.matchers)
        return replace(lhs, matchers=lhs.matchers + extra, suspended=suspended, absent_labels=None)

    # --- aggregations ----------------------------------------------------------------------

    def state_grouping(self, label: str, term: Term, op: str) -> str:
        """A by() label over a Flux selection: the Ready status too, where both shapes have it
        on exactly one series per object (a set of objects, neither side kube-state-metrics,
        whose ``ready`` is missing where the others say Unknown)."""
        ctx = self.ctx
        state = {Shape.LEGACY: "status"}.get(ctx.source, "ready")
        if label != state:
            return ctx.rename(label, where=f"{op} by")
        if term.value is not Value.ONE or not term.per_status or term.window is not None:
            ctx.rename(label, where=f"{op} by")  # raises with the reason
        if Shape.RESOURCE_INFO in (ctx.source, ctx.to):
            raise NotMigratable(
                f"{op} by ({label}): kube-state-metrics writes no `ready` for an object without a "
                "Ready condition (nor for Alert and Provider), which the other shapes call Unknown"
            )
        return "status" if ctx.to is Shape.LEGACY else "ready"

    def grouping(
        self, node: pp.AggregateExpr, inner_flux: bool
    ) -> tuple[list[str] | None, list[str] | None]:
        modifier = node.modifier
        if modifier is None:
            return None, None
        labels = list(modifier.labels)
        if inner_flux:
            labels = [self.ctx.rename(label, where=f"{node.op} by/without") for label in labels]
        if modifier.type is pp.AggModifierType.By:
            return labels, None
        return None, labels

    def aggregate(self, node: pp.AggregateExpr) -> Node:
        op = str(node.op)
        inner = self.visit(node.expr)
        param = self.out(node.param) if node.param is not None else None
        if isinstance(inner, Term):
            if node.modifier is not None and node.modifier.type is pp.AggModifierType.Without:
                raise NotMigratable(
                    f"{op} without(...) over Flux series keeps every other label, and the shapes' "
                    "labels differ; group with by(...)"
                )
            if op not in _SET_AGGREGATIONS:
                raise NotMigratable(
                    f"{op}() over Flux series depends on how many series each object has and "
                    "their values, which differ between shapes"
                )
            labels_by = node.modifier.labels if node.modifier is not None else []
            return self.aggregate_term(
                op, inner, [self.state_grouping(label, inner, op) for label in labels_by]
            )
        by, without = self.grouping(node, inner.flux)
        text = aggregate_text(
            op, inner.text, param=param.text if param else None, by=by, without=without
        )
        labels: frozenset[str] | None
        if op in ("topk", "bottomk"):
            labels = inner.labels  # a selection of the inner series, labels and all
        elif op == "count_values":
            labels = None  # adds the label named by its parameter
        elif by is not None:
            labels = frozenset(by)
        elif without is not None:
            labels = inner.labels - set(without) if inner.labels is not None else None
        else:
            labels = frozenset()
        return Out(text, PREC_ATOM, flux=inner.flux, labels=labels)

    def aggregate_term(self, op: str, term: Term, by: list[str]) -> Out:
        ctx = self.ctx
        labels = frozenset(by)

        def agg(name: str, out: Out) -> str:
            return aggregate_text(name, out.text, by=by if by else None)

        def done(text: str, prec: int = PREC_ATOM) -> Out:
            return Out(text, prec, flux=True, labels=labels)

        if term.range_ is not None and term.window is None:
            ctx.materialize(term, what=f"{op}()")
        # Counting needs one series per object (see ``objects``); group/max/min do not care.
        counting = op in ("count", "sum")
        if term.value is Value.ONE:
            return done(
                agg(op, ctx.objects(term, term.ready, term.suspended, dedupe=counting, keep=labels))
            )
        if term.value is Value.ZERO:
            if op not in ("count", "group"):
                raise NotMigratable(
                    f"{op}() of legacy series filtered to 0 (`== 0`) sums their 0 values; the info "
                    "shapes only have 1-valued series; count() and group() have a counterpart"
                )
            return done(agg(op, ctx.objects(term, term.ready, term.suspended, dedupe=counting)))
        # INDICATOR: every object has one 0/1 series per named status (or one suspend gauge);
        # in a window (max_over_time), one per status it was in.
        if term.window is not None and op == "min":
            raise NotMigratable(
                "min() over max_over_time() of the legacy gauges asks whether every object was "
                "in a state at some point of the window, which the info shapes cannot tell apart "
                "from an object that was in it all along"
            )
        if term.deleted and term.window is not None:
            raise NotMigratable(DELETED_ONE)
        whole = replace(term, per_status=False, deleted=False)  # one series per object
        everything = ctx.objects(whole, ALL_STATUSES, None)
        everything_grouped = agg("group", everything)
        zero_fill = f"{everything_grouped} * 0"
        per_object = 1 if term.suspend_gauge else len(term.ready) + term.deleted
        if op == "group":
            return done(everything_grouped)
        if op == "count":
            counted = agg("count", ctx.objects(whole, ALL_STATUSES, None, dedupe=True))
            if per_object != 1:
                return done(f"{counted} * {per_object}", PREC_ADD + 1)
            return done(counted)
        if term.deleted and (not term.ready or op == "min"):
            # The Deleted series are 0 on every live object: a group's sum or max of them
            # alone, or its min with them, is 0.
            return done(zero_fill, printer.binary_prec("*"))
        miss: Out | None
        if term.suspend_gauge:
            hit = ctx.objects(whole, ALL_STATUSES, True, dedupe=op == "sum")
            miss = ctx.objects(whole, ALL_STATUSES, False)
        else:
            plain = replace(term, deleted=False)
            hit = ctx.objects(plain, term.ready, None, dedupe=op == "sum")
            rest = ALL_STATUSES - term.ready
            miss = ctx.objects(plain, rest, None) if rest else None
        if miss is None and term.window is None:  # every status named: one 1 per object
            if op == "sum":
                return done(agg("count", ctx.objects(whole, ALL_STATUSES, None, dedupe=True)))
            return done(everything_grouped)
        if op == "sum":
            part = Out(agg("count", hit), PREC_ATOM, flux=True, labels=labels)
        elif op == "max":
            part = Out(agg("group", hit), PREC_ATOM, flux=True, labels=labels, ones=True)
        else:  # min: 1 where every object of the group is in a named state.
            assert miss is not None
            on = printer.grouping_text("on", by)
            part = Out(
                f"{everything_grouped} unless {on} {miss.text}",
                PREC_AND,
                flux=True,
                labels=labels,
                ones=True,
            )
        text = f"{printer.paren(part.text, part.prec, PREC_OR + 1)} or {zero_fill}"
        return replace(done(text, PREC_OR), nonzero=part)

    # --- functions -------------------------------------------------------------------------

    def call(self, node: pp.Call) -> Node:
        ctx = self.ctx
        name = node.func.name
        args = [self.visit(arg) for arg in node.args]
        if name in ("absent", "absent_over_time") and isinstance(args[0], Term):
            return self.absent(name, args[0])
        if name in _WINDOW_FUNCTIONS and isinstance(args[0], Term) and args[0].range_ is not None:
            term = args[0]
            if term.value is Value.ONE:
                return replace(term, window="max_over_time", absent_labels=None)
            if name == "max_over_time" and term.value is Value.INDICATOR:
                return replace(term, window="max_over_time", absent_labels=None)
            raise NotMigratable(
                f"{name}() over the legacy gauges is 1 for every object whose series existed; "
                "the info shapes have no counterpart"
            )
        outs = [ctx.materialize(arg, what=f"{name}()") for arg in args]
        flux = any(out.flux for out in outs)
        if name in ("label_replace", "label_join") and outs and outs[0].flux:
            strings = [arg for arg in node.args[1:] if isinstance(arg, pp.StringLiteral)]
            texts = [out.text for out in outs]
            dst = strings[0].val if strings else ""
            if dst in ("status", "type", "ready", "suspended", "kind", "customresource_kind"):
                raise NotMigratable(
                    f"{name}() writes `{dst}`, a label the shapes spell differently"
                )
            if name == "label_replace":
                src = node.args[3]
                assert isinstance(src, pp.StringLiteral)
                texts[3] = quote(ctx.rename(src.val, where=f"{name}()"))
            else:
                for i in range(3, len(node.args)):
                    src = node.args[i]
                    assert isinstance(src, pp.StringLiteral)
                    texts[i] = quote(ctx.rename(src.val, where=f"{name}()"))
            return Out(f"{name}({', '.join(texts)})", PREC_ATOM, flux=True, labels=None)
        if name in ("sort_by_label", "sort_by_label_desc") and flux:
            raise NotMigratable(f"{name}() names Flux labels")
        labels = outs[0].labels if outs else None
        return Out(
            f"{name}({', '.join(out.text for out in outs)})",
            PREC_ATOM,
            flux=flux,
            labels=labels,
            scalar=_returns_scalar(node),
            vector_call=name == "vector",
        )

    def absent(self, name: str, term: Term) -> Out:
        ctx = self.ctx
        if term.value is Value.INDICATOR:
            # Every object has all its legacy series whatever its state: absent means "no such
            # object", so the state matchers are dropped.
            objects = replace(
                term,
                value=Value.ONE,
                ready=ALL_STATUSES,
                suspended=None,
                suspend_gauge=False,
                window=None,
            )
        else:
            objects = replace(term, window=None)
        if term.range_ is None and name == "absent_over_time":
            raise NotMigratable("absent_over_time() needs a range")
        migrated: dict[str, str] = {}
        everything = objects.ready == ALL_STATUSES and objects.suspended is None
        if ctx.to is Shape.LEGACY and everything:
            # Any legacy series of the object will do: the bare selector, labels and all.
            matchers = ctx.target_matchers(objects)
            inner_text = selector_text(
                CONDITION, matchers, range_=objects.range_, offset=objects.offset, at=objects.at
            )
        elif ctx.to is Shape.LEGACY:
            inner_text = ctx.objects(objects, objects.ready, objects.suspended).text
            matchers = []  # absent() of a comparison has no labels
        else:
            matchers = (
                ctx.target_matchers(objects)
                + ctx.ready_matcher(objects.ready)
                + ctx.suspended_matcher(objects.suspended)
            )
            inner_text = ctx.info_selector(objects, objects.ready, objects.suspended)
        for label, op, value in matchers:
            if op == "=":
                migrated[label] = value
        original = dict(term.absent_labels or ())
        text = ctx.absent_fixup(f"{name}({inner_text})", original, migrated)
        return Out(text, PREC_ATOM, flux=True, labels=None)


def _walk_selectors(node: pp.Expr) -> Iterable[pp.VectorSelector]:
    found: list[pp.VectorSelector] = []

    def visit(n: pp.Expr) -> None:
        if isinstance(n, pp.VectorSelector):
            found.append(n)
        elif isinstance(n, pp.MatrixSelector):
            found.append(n.vector_selector)

    pp.walk(node, visit)
    return found


def _selector_metric(node: pp.VectorSelector) -> str | None:
    if node.name is not None:
        return node.name
    for m in node.matchers.matchers:
        if m.name == "__name__":
            op = printer.match_op(m.op)
            if op == "=":
                return m.value
            if any(_fullmatch(op, m.value, metric) for metric in FLUX_METRICS):
                raise NotMigratable("selects Flux metrics by a pattern on `__name__`")
    return None


def _reads_flux(node: pp.Expr) -> bool:
    return any(_selector_metric(sel) in FLUX_METRICS for sel in _walk_selectors(node))


def _is_scalar(node: pp.Expr) -> bool:
    if isinstance(node, pp.NumberLiteral):
        return True
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        return _is_scalar(node.expr)
    if isinstance(node, pp.Call):
        return _returns_scalar(node)
    if isinstance(node, pp.BinaryExpr):
        return _is_scalar(node.lhs) and _is_scalar(node.rhs)
    return False


def _returns_scalar(node: pp.Call) -> bool:
    return bool(node.func.return_type == pp.ValueType.Scalar)


def _is_vector_call(node: pp.Expr) -> bool:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return isinstance(node, pp.Call) and node.func.name == "vector"


def _source_of(tree: pp.Expr) -> Shape | None:
    shapes = {shape_of_metric(m) for sel in _walk_selectors(tree) if (m := _selector_metric(sel))}
    shapes.discard(None)
    if len(shapes) > 1:
        raise NotMigratable(
            "reads Flux metrics of several shapes ("
            + ", ".join(sorted(s.value for s in shapes if s is not None))
            + "): migrate each part on its own"
        )
    return shapes.pop() if shapes else None


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
    tree, protected = printer.parse(text)
    found = _source_of(tree)
    if found is None:
        return Migrated(text, None, False)
    if source is not None and source is not found:
        raise NotMigratable(f"reads {found.value} metrics, not {source.value}")
    if found is to:
        return Migrated(text, found, False)
    ctx = _Context(found, to, label_shape)
    out = _Rewriter(ctx, protected.tokens).out(tree)
    migrated = protected.restore(out.text)
    # What is printed must parse: a rewrite that built invalid PromQL is a bug, not output.
    printer.parse(migrated)
    return Migrated(migrated, found, True, tuple(ctx.notes))


def referenced_metrics(text: str) -> frozenset[str]:
    """The Flux metric names ``text`` reads (Grafana macros allowed)."""
    tree, _ = printer.parse(text)
    names: set[str] = set()
    for sel in _walk_selectors(tree):
        try:
            metric = _selector_metric(sel)
        except NotMigratable:
            names.update(
                metric
                for metric in FLUX_METRICS
                for m in sel.matchers.matchers
                if m.name == "__name__" and _fullmatch(printer.match_op(m.op), m.value, metric)
            )
            continue
        if metric in FLUX_METRICS:
            names.add(metric)
    return frozenset(names)


__all__ = [
    "Migrated",
    "NotMigratable",
    "migrate_expr",
    "referenced_metrics",
]


def migrate_series_selector(
    text: str,
    label: str | None,
    to: Shape,
    *,
    source: Shape | None = None,
    label_shape: LabelShape = LabelShape.STORED,
) -> tuple[str, str | None, Migrated]:
    """Rewrite a series selector read for which series *exist* (Grafana's ``label_values``),
    and the label read from them. Returns (selector, label, outcome)."""
    tree, protected = printer.parse(text)
    found = _source_of(tree)
    if not isinstance(tree, pp.VectorSelector):
        raise NotMigratable("label_values() takes a series selector")
    if found is None or found is to:
        return text, label, Migrated(text, found, False)
    if source is not None and source is not found:
        raise NotMigratable(f"reads {found.value} metrics, not {source.value}")
    ctx = _Context(found, to, label_shape)
    term = ctx.term_of(tree)
    if term.value is Value.INDICATOR:
        # The legacy gauges exist for every object whatever its state: the state matchers
        # select no object, only which series of it.
        term = replace(
            term, value=Value.ONE, ready=ALL_STATUSES, suspended=None, suspend_gauge=False
        )
    elif to is Shape.LEGACY and (term.ready != ALL_STATUSES or term.suspended is not None):
        raise NotMigratable(
            "label_values() selects series, not values: the legacy shape keeps the Ready and "
            "suspend state in values, so this filter has no selector counterpart; use "
            "query_result() with the migrated expression"
        )
    if to is Shape.LEGACY:
        status = [("status", "=", "True")] if term.ready == ALL_STATUSES else []
        selector = selector_text(CONDITION, ctx.target_matchers(term) + status)
    else:
        selector = ctx.info_selector(term, term.ready, term.suspended)
    new_label = None if label is None else ctx.rename(label, where="label_values()")
    selector = protected.restore(selector)
    return selector, new_label, Migrated(selector, found, True, tuple(ctx.notes))
