"""The Flux kinds: API group, current version, owning controller and kube-state-metrics labels.

One table feeds every consumer, so adding or moving a kind is one edit:

* matching (``rules/flux/classify.py``): a ``gotk_resource_info`` series is a Flux object when its
  ``customresource_group`` and ``customresource_kind`` are a row here. The version is *not*
  matched: Flux's published KSM config moved HelmRelease v2beta1 → v2beta2 → v2 and the source
  kinds v1beta2 → v1, and every cluster upgrades at its own pace;
* legacy synthesis: which controller's name goes into ``job`` (``set_job``), and which labels are
  KSM's own (``extra_labels``) and so dropped from the legacy series;
* reverse synthesis: the ``customresource_version`` to write by default;
* ``ksm_config.py``: the custom-resource-state config, with the same label paths.

Versions and label paths are those of Flux's config in ``fluxcd/flux2-monitoring-example``
(``kube-state-metrics-config.yaml``) as of 2025. Alert and Provider have no ``ready`` label there:
since notification.toolkit.fluxcd.io/v1beta3 they are static objects without status conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class KsmLabel:
    """A label KSM reads from the object: ``name: [path, ...]`` in ``labelsFromPath``."""

    name: str
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FluxKind:
    kind: str
    group: str
    version: str  # the version Flux's KSM config names today
    plural: str  # the API resource, for RBAC rules
    controller: str  # the controller that exposed the legacy gauges (its `job` before 2.2–2.5)
    extra_labels: tuple[KsmLabel, ...] = ()
    has_ready: bool = True

    @property
    def extra_label_names(self) -> frozenset[str]:
        return frozenset(label.name for label in self.extra_labels)


SOURCE_GROUP: Final = "source.toolkit.fluxcd.io"
KUSTOMIZE_GROUP: Final = "kustomize.toolkit.fluxcd.io"
HELM_GROUP: Final = "helm.toolkit.fluxcd.io"
NOTIFICATION_GROUP: Final = "notification.toolkit.fluxcd.io"
IMAGE_GROUP: Final = "image.toolkit.fluxcd.io"

NAME_LABEL: Final = KsmLabel("name", ("metadata", "name"))
NAMESPACE_LABEL: Final = KsmLabel("exported_namespace", ("metadata", "namespace"))
READY_LABEL: Final = KsmLabel("ready", ("status", "conditions", "[type=Ready]", "status"))
SUSPENDED_LABEL: Final = KsmLabel("suspended", ("spec", "suspend"))

_ARTIFACT_REVISION: Final = KsmLabel("revision", ("status", "artifact", "revision"))
_URL: Final = KsmLabel("url", ("spec", "url"))


def _kind(
    kind: str,
    group: str,
    version: str,
    plural: str,
    controller: str,
    *extra: KsmLabel,
    has_ready: bool = True,
) -> FluxKind:
    return FluxKind(kind, group, version, plural, controller, tuple(extra), has_ready)


KINDS: Final[tuple[FluxKind, ...]] = (
    _kind(
        "GitRepository", SOURCE_GROUP, "v1", "gitrepositories", "source-controller",
        _ARTIFACT_REVISION, _URL,
    ),
    _kind(
        "OCIRepository", SOURCE_GROUP, "v1", "ocirepositories", "source-controller",
        _ARTIFACT_REVISION, _URL,
    ),
    _kind(
        "HelmRepository", SOURCE_GROUP, "v1", "helmrepositories", "source-controller",
        _ARTIFACT_REVISION, _URL,
    ),
    _kind(
        "HelmChart", SOURCE_GROUP, "v1", "helmcharts", "source-controller",
        _ARTIFACT_REVISION,
        KsmLabel("chart_name", ("spec", "chart")),
        KsmLabel("chart_version", ("spec", "version")),
    ),
    _kind(
        "Bucket", SOURCE_GROUP, "v1", "buckets", "source-controller",
        _ARTIFACT_REVISION,
        KsmLabel("endpoint", ("spec", "endpoint")),
        KsmLabel("bucket_name", ("spec", "bucketName")),
    ),
    _kind(
        "Kustomization", KUSTOMIZE_GROUP, "v1", "kustomizations", "kustomize-controller",
        KsmLabel("revision", ("status", "lastAppliedRevision")),
        KsmLabel("source_name", ("spec", "sourceRef", "name")),
    ),
    _kind(
        "HelmRelease", HELM_GROUP, "v2", "helmreleases", "helm-controller",
        KsmLabel("revision", ("status", "history", "0", "chartVersion")),
        KsmLabel("chart_name", ("status", "history", "0", "chartName")),
        KsmLabel("chart_app_version", ("status", "history", "0", "appVersion")),
        KsmLabel("chart_ref_name", ("spec", "chartRef", "name")),
        KsmLabel("chart_source_name", ("spec", "chart", "spec", "sourceRef", "name")),
    ),
    _kind(
        "Alert", NOTIFICATION_GROUP, "v1beta3", "alerts", "notification-controller",
        has_ready=False,
    ),
    _kind(
        "Provider", NOTIFICATION_GROUP, "v1beta3", "providers", "notification-controller",
        has_ready=False,
    ),
    _kind(
        "Receiver", NOTIFICATION_GROUP, "v1", "receivers", "notification-controller",
        KsmLabel("webhook_path", ("status", "webhookPath")),
    ),
    _kind(
        "ImageRepository", IMAGE_GROUP, "v1", "imagerepositories", "image-reflector-controller",
        KsmLabel("image", ("spec", "image")),
    ),
    _kind(
        "ImagePolicy", IMAGE_GROUP, "v1", "imagepolicies", "image-reflector-controller",
        KsmLabel("source_name", ("spec", "imageRepositoryRef", "name")),
    ),
    _kind(
        "ImageUpdateAutomation", IMAGE_GROUP, "v1", "imageupdateautomations",
        "image-automation-controller",
        KsmLabel("source_name", ("spec", "sourceRef", "name")),
    ),
)  # fmt: skip

BY_KIND: Final[Mapping[str, FluxKind]] = MappingProxyType({k.kind: k for k in KINDS})
KIND_NAMES: Final[tuple[str, ...]] = tuple(k.kind for k in KINDS)
DEFAULT_VERSIONS: Final[Mapping[str, str]] = MappingProxyType({k.kind: k.version for k in KINDS})


def suggest(kind: str) -> str:
    """An error-message hint for a kind that is not in the table (kinds are case-sensitive)."""
    folded = {k.lower(): k for k in KIND_NAMES}
    close = folded.get(kind.lower()) or folded.get(kind.lower().rstrip("s"))
    if close is not None:
        return f"did you mean {close!r}? (kinds are case-sensitive)"
    return "Flux kinds are " + ", ".join(KIND_NAMES)
