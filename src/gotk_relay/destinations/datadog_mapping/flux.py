"""``flux_integration``: the Flux families named and tagged as Datadog's Flux check sends them.

Datadog's Flux integration (``fluxcd`` in DataDog/integrations-core) is an OpenMetrics V2 check
with namespace ``fluxcd`` that scrapes each Flux controller's own ``/metrics`` (and, since mid-2026,
kube-state-metrics for ``gotk_resource_info``). Its dashboard and monitors query what that check
submits, so a destination with this option sends the same families under the same names, types
and tags, and the dashboard works without an Agent check.

Names (the check's metric map; OpenMetrics V2 naming)
    ``fluxcd.`` + the mapped name for a gauge; a counter's ``<family>_total`` becomes
    ``.count`` and a histogram's ``_bucket``/``_sum``/``_count`` become ``.bucket``/``.sum``/
    ``.count``, all three counts (the check's ``monotonic_count``, the relay's ``count``
    deltas). The check skips the ``le="+Inf"`` bucket (it is the ``.count`` again), and so does
    this mapping (counted as ``inf_bucket``). A family's type is the one its client library
    exposes (controller-runtime, client-go, the Go process collector), fixed here, so a series
    is named right before its metadata arrives.
Tags
    The check tags each sample with the labels of the target it scrapes, as that target
    exposes them, plus ``endpoint`` (the scraped URL, which the relay cannot know and does not
    invent) and the Agent's own host and container tags. What the relay receives went through
    a Prometheus scrape first, which added target labels and renamed clashing ones to
    ``exported_<name>``; this mapping undoes that:

    * ``gotk_reconcile_condition``, ``gotk_suspend_status``, ``gotk_reconcile_duration_seconds``
      (the object families): exactly the controller's labels, ``kind``, ``name``,
      ``namespace`` (the *object's* namespace: ``exported_namespace`` in Prometheus' stored
      shape, ``namespace`` in the raw one), ``type`` and ``status``, and ``upper_bound`` for a
      bucket (``le`` as the check writes it: ``str(float(le))``). The dashboard groups by
      ``kind,namespace,name`` and filters ``$namespace`` on the object's namespace, so
      ``apps/podinfo`` and ``staging/podinfo`` stay two rows. An allow-list: every other label
      (job, instance, pod, the controller's namespace, external labels) is one the check
      would not see.
    * ``gotk_resource_info``: kube-state-metrics' own labels for the object's kind
      (``customresource_*``, ``name``, ``exported_namespace``, ``ready``, ``suspended`` and
      the kind's extra labels, ``rules/flux_kinds.py``), the check's KSM scraper seeing KSM's
      exposition as it is.
    * the controller families (``controller_runtime_*``, ``workqueue_*``, ``process_*``,
      ``leader_election_master_status``): their labels are not a fixed set, so the scrape's
      target labels (``job``, ``instance``, ``pod``, ``container``, ``endpoint``, ``service``)
      are removed instead and the target's ``namespace`` becomes ``kube_namespace``, the tag
      the Agent puts on a pod's check metrics and the integration's monitors group by; as the
      Agent's tagger also does, ``pod`` gives ``kube_deployment`` (a Deployment's pod name
      without its two generated suffixes) and ``container`` ``kube_container_name``, so that
      each controller's ``process_*`` stay series of their own. Every
      Go program exposes ``process_*`` and every controller-runtime operator the others, and
      the check only ever scrapes Flux's controllers: so these families are the integration's
      only from targets whose ``namespace`` is one of the Flux controllers' namespaces
      (``flux_integration_namespaces``); from any other target (or one without a
      ``namespace`` label) they keep the default mapping.

    ``keep`` names labels kept on every family all the same (e.g. ``cluster``), and the
    ``host_label`` still becomes the host. Every other series keeps the default mapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ...model import Labels
from ...rules.flux_kinds import BY_KIND
from .kinds import Kind

NAMESPACE: Final = "fluxcd"

# The check's metric map (``fluxcd/datadog_checks/fluxcd/metrics.py``): Prometheus family →
# name under ``fluxcd.``, with the family's type as its library exposes it.
GAUGE: Final = "gauge"
COUNTER: Final = "counter"
HISTOGRAM: Final = "histogram"
CHECK_METRICS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "controller_runtime_active_workers": ("controller.runtime.active.workers", GAUGE),
        "controller_runtime_max_concurrent_reconciles": (
            "controller.runtime.max.concurrent.reconciles",
            GAUGE,
        ),
        "controller_runtime_reconcile": ("controller.runtime.reconcile", COUNTER),
        "controller_runtime_reconcile_errors": ("controller.runtime.reconcile.errors", COUNTER),
        "controller_runtime_reconcile_time_seconds": (
            "controller.runtime.reconcile.time.seconds",
            HISTOGRAM,
        ),
        "gotk_reconcile_condition": ("gotk.reconcile.condition", GAUGE),
        "gotk_reconcile_duration_seconds": ("gotk.reconcile.duration.seconds", HISTOGRAM),
        "gotk_suspend_status": ("gotk.suspend.status", GAUGE),
        "leader_election_master_status": ("leader_election_master_status", GAUGE),
        "process_cpu_seconds": ("process.cpu_seconds", COUNTER),
        "process_max_fds": ("process.max_fds", GAUGE),
        "process_open_fds": ("process.open_fds", GAUGE),
        "process_resident_memory_bytes": ("process.resident_memory.bytes", GAUGE),
        "process_start_time_seconds": ("process.start_time", GAUGE),
        "process_virtual_memory_bytes": ("process.virtual_memory.bytes", GAUGE),
        "process_virtual_memory_max_bytes": ("process.virtual_memory.max.bytes", GAUGE),
        "workqueue_adds": ("workqueue.adds", COUNTER),
        "workqueue_depth": ("workqueue.depth", GAUGE),
        "workqueue_longest_running_processor_seconds": (
            "workqueue.longest_running_processor",
            GAUGE,
        ),
        "workqueue_retries": ("workqueue.retries", COUNTER),
        "workqueue_unfinished_work_seconds": ("workqueue.unfinished_work", GAUGE),
    }
)
# Its second scraper's map, for kube-state-metrics (``kube_state_metrics_endpoint``).
KSM_METRICS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {"gotk_resource_info": ("gotk.resource.info", GAUGE)}
)

OBJECT_FAMILIES: Final = frozenset(
    ("gotk_reconcile_condition", "gotk_suspend_status", "gotk_reconcile_duration_seconds")
)
RESOURCE_INFO: Final = "gotk_resource_info"
OBJECT_LABELS: Final = frozenset(("kind", "name", "type", "status"))
# Labels a Prometheus scrape of a pod adds (kubernetes_sd, the Prometheus Operator's monitors).
SCRAPE_LABELS: Final = frozenset(("job", "instance", "pod", "container", "endpoint", "service"))
_EXPORTED: Final = "exported_"
# What ``series_info`` puts before the name of a series sent as the integration's, so that its
# name resolves apart from the same name's other series. Not the start of any metric name: a
# lone surrogate, which no label decoded from a request holds (see ``series.OMITTED``).
FLUX_KEY: Final = "\udc00fluxcd\udc00"
_KSM_COMMON: Final = frozenset(
    (
        "customresource_group",
        "customresource_kind",
        "customresource_version",
        "exported_namespace",
        "name",
        "ready",
        "suspended",
    )
)
_KSM_ANY: Final = _KSM_COMMON.union(*(kind.extra_label_names for kind in BY_KIND.values()))
_KSM_OWN: Final = {kind.kind: _KSM_COMMON | kind.extra_label_names for kind in BY_KIND.values()}


@dataclass(frozen=True, slots=True)
class FluxName:
    """What a series of a mapped family is sent as: its Datadog name and kind."""

    metric: str
    kind: Kind
    family: str
    part: str  # "", "_total", "_bucket", "_sum" or "_count"


def _series_names() -> dict[str, FluxName]:
    out: dict[str, FluxName] = {}
    for table in (CHECK_METRICS, KSM_METRICS):
        for family, (mapped, mtype) in table.items():
            metric = f"{NAMESPACE}.{mapped}"
            if mtype == GAUGE:
                out[family] = FluxName(metric, Kind.GAUGE, family, "")
            elif mtype == COUNTER:
                out[family + "_total"] = FluxName(metric + ".count", Kind.COUNTER, family, "_total")
            else:
                for part in ("_bucket", "_sum", "_count"):
                    out[family + part] = FluxName(
                        f"{metric}.{part[1:]}", Kind.COUNTER, family, part
                    )
    return out


SERIES_NAMES: Final[Mapping[str, FluxName]] = MappingProxyType(_series_names())


def flux_name(name: str) -> FluxName | None:
    """The integration's name and kind for a Prometheus series name; None: not a mapped family."""
    return SERIES_NAMES.get(name)


def upper_bound(le: str) -> str | None:
    """``le`` as the check tags a bucket (``str(float(le))``, ``-0`` as ``0``); None for
    ``±Inf`` (the check skips a bound ending in ``inf``) or a value that is not a number."""
    try:
        bound = float(le)
    except ValueError:
        return None
    if math.isinf(bound) or math.isnan(bound):
        return None
    return str(bound or 0)


def _own(labels: Mapping[str, str], key: str) -> str | None:
    """The target's own value of ``key``: the scrape renamed it ``exported_<key>`` if a target
    label took the plain name."""
    value = labels.get(_EXPORTED + key)
    return value if value is not None else labels.get(key)


def flux_applies(name: str, labels: Labels, namespaces: Collection[str]) -> bool:
    """Whether a series is sent as the integration's: always for the ``gotk_*`` families, for
    the controller families only from a target in one of ``namespaces``."""
    found = SERIES_NAMES.get(name)
    if found is None:
        return False
    if found.family in OBJECT_FAMILIES or found.family == RESOURCE_INFO:
        return True
    for key, value in labels:
        if key == "namespace":
            return value in namespaces
    return False


# A Deployment's pod: <deployment>-<pod-template-hash>-<5 characters>, both parts lowercase
# alphanumerics (Kubernetes' generated names).
_DEPLOYMENT_POD: Final = re.compile(r"(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}")


def _deployment(pod: str) -> str:
    """The Deployment a pod name says it belongs to ("" for any other pod name)."""
    found = _DEPLOYMENT_POD.fullmatch(pod)
    return found.group(1) if found else ""


def flux_labels(name: str, labels: Labels, keep: Collection[str] = ()) -> Labels | None:
    """The labels the check would tag a series of ``name`` with (see the module docstring),
    with ``__name__``, sorted; None for a series the check does not send (a ``+Inf`` bucket).
    ``labels`` of a name that is not a mapped family come back as they are."""
    found = SERIES_NAMES.get(name)
    if found is None:
        return labels
    given = dict(labels)
    out: dict[str, str] = {"__name__": name}
    family = found.family
    if family in OBJECT_FAMILIES:
        for key in OBJECT_LABELS:
            value = given.get(key)
            if value is not None:
                out[key] = value
        # Stored shape: the object's namespace is exported_namespace; raw: namespace.
        namespace = given.get("exported_namespace", given.get("namespace"))
        if namespace is not None:
            out["namespace"] = namespace
        if found.part == "_bucket" and "le" in given:
            bound = upper_bound(given["le"])
            if bound is None:
                return None
            out["upper_bound"] = bound
    elif family == RESOURCE_INFO:
        kind = _own(given, "customresource_kind") or ""
        for key in _KSM_OWN.get(kind, _KSM_ANY):
            value = _own(given, key)
            if value is not None:
                out[key] = value
    else:
        for key, value in labels:
            if key == "__name__" or key in SCRAPE_LABELS or key == "namespace":
                continue
            if key.startswith(_EXPORTED) and key[len(_EXPORTED) :] in given:
                out[key[len(_EXPORTED) :]] = value  # the target's own, renamed by the scrape
            elif key not in out:
                out[key] = value
        if "namespace" in given and "kube_namespace" not in out:
            out["kube_namespace"] = given["namespace"]
        # The Agent's tagger also names the pod's Deployment and container: without them the
        # process_* series of every Flux controller would be one series at Datadog.
        deployment = _deployment(given.get("pod", ""))
        if deployment and "kube_deployment" not in out:
            out["kube_deployment"] = deployment
        if given.get("container") and "kube_container_name" not in out:
            out["kube_container_name"] = given["container"]
        if found.part == "_bucket" and "le" in out:
            bound = upper_bound(out.pop("le"))
            if bound is None:
                return None
            out["upper_bound"] = bound
    for key in keep:
        value = given.get(key)
        if value is not None and key not in out:
            out[key] = value
    return tuple(sorted(out.items()))
