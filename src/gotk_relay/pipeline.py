"""The pure part of the data path: global relabel → Flux rules → per-destination relabel.

No I/O and no clock: the server hands in the decoded batch and gets back what each destination
must queue. An empty rule set returns its input object, so a relay without rules copies nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import Config, TenantConfig
from .model import Batch, Series, label_value
from .rules.flux import FluxRewriter, Rewritten
from .rules.relabel import RuleSet, compile_rules
from .wire import rw1


def relabel_batch(rules: RuleSet, batch: Batch) -> Batch:
    if not rules:
        return batch
    out: list[Series] = []
    changed = False
    for series in batch.series:
        labels = rules.apply(series.labels)
        if labels is None:
            changed = True
            continue
        if labels != series.labels:
            changed = True
            series = series._replace(labels=labels)
        out.append(series)
    if not changed:
        return batch
    return Batch(tuple(out), batch.metadata)


class Pipeline:
    def __init__(self, config: Config, flux: FluxRewriter | None = None) -> None:
        self.relabel = compile_rules(config.relabel_configs)
        self.flux = flux if flux is not None else FluxRewriter(config.flux, rw1)
        self.write_relabel: Mapping[str, RuleSet] = {
            name: compile_rules(cfg.write_relabel_configs) for _, name, cfg in config.destinations()
        }

    def relabeled(self, batch: Batch) -> Batch:
        """``batch`` after the global rules (the same object when they change nothing)."""
        return relabel_batch(self.relabel, batch)

    def apply(self, batch: Batch, now_ms: int | None, max_outputs: int | None = None) -> Rewritten:
        """The Flux rules' one result for an accepted request the global rules ran on already
        (``relabeled``; on the fast path, on its bytes); ``max_outputs`` allows their steady
        shortcut (``Rewritten``)."""
        return self.flux.apply(batch, now_ms, max_outputs)

    def rewrite(self, batch: Batch, now_ms: int | None = None) -> Batch:
        """Global rules then Flux synthesis; runs once per accepted request (Flux is stateful)."""
        return self.flux.rewrite(relabel_batch(self.relabel, batch), now_ms)

    def for_destination(self, name: str, batch: Batch) -> Batch:
        rules = self.write_relabel.get(name)
        return batch if rules is None else relabel_batch(rules, batch)


def split_by_tenant(batch: Batch, tenant: TenantConfig) -> tuple[dict[str, Batch], int]:
    """Per tenant, its series (in batch order); and the points of series that have no tenant.

    The tenant is the value of ``tenant.label`` (or ``tenant.default`` when absent); the label is
    removed unless ``keep_label``. Metadata goes to every tenant: it describes metric families,
    which any tenant may hold.
    """
    groups: dict[str, list[Series]] = {}
    orphaned = 0
    for series in batch.series:
        value = label_value(series.labels, tenant.label) or tenant.default
        if not value:
            orphaned += len(series.samples) + len(series.histograms)
            continue
        if not tenant.keep_label:
            series = series._replace(
                labels=tuple(kv for kv in series.labels if kv[0] != tenant.label)
            )
        groups.setdefault(value, []).append(series)
    return {t: Batch(tuple(s), batch.metadata) for t, s in groups.items()}, orphaned
