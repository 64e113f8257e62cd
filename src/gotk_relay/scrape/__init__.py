"""The scrape input (``scrape_configs:``): the relay scrapes kube-state-metrics or the Flux
Operator itself, with Prometheus 2.x's semantics for what the pipeline sees, and admits each
scrape to the relay like a remote-written request. A stage before the rules, beside the write
path (docs/scrape.md).

Modules, in the order they build on each other: ``targets`` (jobs → targets, labels, offsets),
``parse`` (an exposition → series, pure), ``staleness`` (stale markers and report series,
pure), ``loop`` (the I/O: one supervised loop per target, ``Scraper`` over all of them).
"""

from __future__ import annotations

from .loop import Scraper

__all__ = ["Scraper"]
