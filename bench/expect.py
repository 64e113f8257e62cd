"""What each system under test should deliver for what the loader sent, derived independently.

The sink's full check compares what arrived against these functions, which are written from
the reference (``/work/shared/reference/flux-metrics.md``) rather than imported from the relay:
a benchmark that computed its expectations with the code under test would only prove that the
code agrees with itself.

* ``identity``: vmagent pass-through; every sample arrives unchanged.
* ``vmagent-rename``: vmagent with :data:`VMAGENT_RELABEL`, the best a relabeling can do. It maps
  each ``gotk_resource_info`` series 1:1 onto the ``gotk_reconcile_condition`` series whose
  status is the object's Ready status (value 1), in the stored label shape. It cannot make the
  two 0-valued status series nor ``gotk_suspend_status``: relabeling never adds series.
* ``relay-legacy``: gotk-relay's default config (``flux: {mode: legacy, keep_source: true}``):
  every sample unchanged, plus for each ``gotk_resource_info`` sample, at its timestamp, three
  ``gotk_reconcile_condition`` samples (True/False/Unknown; 1 for the Ready status, 0 for the
  others; no ``ready`` label means Unknown) and one ``gotk_suspend_status`` (1 iff
  ``suspended="true"``).

:mod:`variants` builds each configuration's expectation (per destination) on these.
"""

from __future__ import annotations

from typing import Final

from tests.support.loadgen import FLUX_KINDS, Labels

RESOURCE_INFO: Final = "gotk_resource_info"
CONTROLLER_NAMESPACE: Final = "flux-system"
STATUSES: Final = ("True", "False", "Unknown")

_KSM_COMMON: Final = frozenset(
    (
        "__name__",
        "customresource_group",
        "customresource_kind",
        "customresource_version",
        "ready",
        "suspended",
    )
)
#: Labels KSM's Flux config writes, per kind (the legacy series do not have them).
KSM_OWN: Final = {k.kind: _KSM_COMMON | set(k.extras) for k in FLUX_KINDS}

_KSM_LABELS: Final = sorted(set().union(*KSM_OWN.values()) - {"__name__"})


def _vmagent_relabel() -> str:
    """One ``replace`` per step, each conditioned on the metric name by ``source_labels``.

    Not ``if:`` selectors: vmagent 1.79 evaluates those ~10x slower (measured here, 30k vs 300k
    samples/s), and an operator tuning for speed would not use them either. KSM's labels are
    removed by setting them empty (an empty label is an absent one), since a ``labeldrop``
    cannot be limited to one metric without ``if:``. The ready-less kinds (Alert, Provider) get
    status Unknown, as the legacy recorder wrote for objects without a Ready condition.
    """
    name = f"[__name__]\n  regex: {RESOURCE_INFO}"
    rules = [
        f"- source_labels: {name}\n  target_label: status\n  replacement: Unknown",
        f"- source_labels: [__name__, ready]\n  regex: '{RESOURCE_INFO};(.+)'\n"
        "  target_label: status",
        f"- source_labels: [__name__, customresource_kind]\n  regex: '{RESOURCE_INFO};(.+)'\n"
        "  target_label: kind",
        f"- source_labels: {name}\n  target_label: type\n  replacement: Ready",
        f"- source_labels: {name}\n  target_label: namespace\n"
        f"  replacement: {CONTROLLER_NAMESPACE}",
        *(
            f"- source_labels: {name}\n  target_label: {label}\n  replacement: ''"
            for label in _KSM_LABELS
        ),
        f"- source_labels: {name}\n  target_label: __name__\n"
        "  replacement: gotk_reconcile_condition",
    ]
    return "\n".join(rules) + "\n"


#: vmagent's relabeling (``-remoteWrite.relabelConfig``): gotk_resource_info renamed 1:1.
VMAGENT_RELABEL: Final = _vmagent_relabel()

Expected = list[tuple[Labels, float]]


def _name(labels: Labels) -> str:
    for key, value in labels:
        if key == "__name__":
            return value
    return ""


def _object_labels(labels: Labels) -> tuple[dict[str, str], str, str]:
    """The labels an object's legacy series share (stored shape), its Ready and suspend."""
    given = dict(labels)
    kind = given["customresource_kind"]
    own = KSM_OWN[kind]
    out = {k: v for k, v in labels if k not in own}
    out["namespace"] = CONTROLLER_NAMESPACE
    out["kind"] = kind
    ready = given.get("ready", "Unknown")
    return out, ready if ready in STATUSES else "Unknown", given.get("suspended", "")


def identity(labels: Labels, value: float) -> Expected:
    return [(labels, value)]


def relay_legacy(labels: Labels, value: float) -> Expected:
    if _name(labels) != RESOURCE_INFO:
        return [(labels, value)]
    common, ready, suspended = _object_labels(labels)
    out: Expected = [(labels, value)]
    for status in STATUSES:
        series = {
            **common,
            "__name__": "gotk_reconcile_condition",
            "type": "Ready",
            "status": status,
        }
        out.append((tuple(sorted(series.items())), 1.0 if status == ready else 0.0))
    series = {**common, "__name__": "gotk_suspend_status"}
    out.append((tuple(sorted(series.items())), 1.0 if suspended == "true" else 0.0))
    return out


def vmagent_rename(labels: Labels, value: float) -> Expected:
    if _name(labels) != RESOURCE_INFO:
        return [(labels, value)]
    common, ready, _ = _object_labels(labels)
    series = {**common, "__name__": "gotk_reconcile_condition", "type": "Ready", "status": ready}
    return [(tuple(sorted(series.items())), value)]
