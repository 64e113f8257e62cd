"""Helpers of the status page's tests: Flux series as each source writes them, and the page's
HTML parsed back as a browser's parser sees it."""

from __future__ import annotations

from html.parser import HTMLParser

from gotk_relay.model import Sample, Series, labels_from

T = 1_764_900_000_000


def series(metric: str, value: float = 1.0, ts: int = T, /, **labels: str) -> Series:
    return Series(labels_from({"__name__": metric, **labels}), (Sample(value, ts),))


def ksm(
    name: str, namespace: str, ready: str = "True", suspended: str = "false", ts: int = T
) -> Series:
    return series(
        "gotk_resource_info",
        1.0,
        ts,
        customresource_group="kustomize.toolkit.fluxcd.io",
        customresource_kind="Kustomization",
        customresource_version="v1",
        exported_namespace=namespace,
        name=name,
        ready=ready,
        suspended=suspended,
        namespace="monitoring",
        job="kube-state-metrics",
    )


def operator(name: str, namespace: str, ready: str = "False") -> Series:
    return series(
        "flux_resource_info",
        kind="HelmRelease",
        exported_namespace=namespace,
        name=name,
        ready=ready,
        suspended="True",
        namespace="flux-system",
        job="flux-operator",
    )


def legacy(
    name: str, namespace: str, ready: str = "Unknown", suspended: float = 0.0
) -> list[Series]:
    common = {"kind": "GitRepository", "exported_namespace": namespace, "name": name}
    common |= {"namespace": "flux-system", "job": "source-controller"}
    conditions = [
        series(
            "gotk_reconcile_condition",
            1.0 if status == ready else 0.0,
            T,
            type="Ready",
            status=status,
            **common,
        )
        for status in ("True", "False", "Unknown")
    ]
    return [*conditions, series("gotk_suspend_status", suspended, T, **common)]


class Parsed(HTMLParser):
    """The elements and the text of each table cell, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.object_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []
        if tag == "tr" and dict(attrs).get("class") == "object":
            self.object_rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(body: str) -> Parsed:
    parsed = Parsed()
    parsed.feed(body)
    parsed.close()
    return parsed
