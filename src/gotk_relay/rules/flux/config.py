"""The ``flux:`` section of the relay configuration, and its validation."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ...units import go_scalar, parse_seconds
from ..flux_kinds import BY_KIND, DEFAULT_VERSIONS, suggest

# Without an explicit stale_grace, a pending end waits one observed scrape interval of its
# object plus AUTO_MARGIN (remote write sends a scrape's series in several requests, up to its
# batch_send_deadline of 5 s apart), and AUTO_CAP when the interval is not known yet.
AUTO_MARGIN: Final = 5.0
AUTO_CAP: Final = 60.0
# Labels an object's identity is made of: never a replica's.
_IDENTITY_LABELS: Final = frozenset(
    ("__name__", "name", "kind", "customresource_kind", "exported_namespace", "namespace")
)
_VERSION: Final = re.compile(r"v\d+(?:(?:alpha|beta)\d+)?")


def _seconds(value: object, field: str) -> float:
    try:
        return parse_seconds(value)
    except ValueError:
        raise ValueError(
            f"flux.{field}: {value!r} is not a duration; write seconds (3600) or a Prometheus "
            "duration such as '1h' or '90s'"
        ) from None


class FluxConfig(BaseModel):
    """The ``flux:`` section of the relay configuration.

    Frozen, so a running rewriter's rules cannot change under it: a reload with an equal section
    keeps the old rewriter (and its state), any other builds a new one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["legacy", "resource_info", "both", "off"] = "legacy"
    keep_source: bool = True
    label_shape: Literal["stored", "raw"] = "stored"
    controller_namespace: str = "flux-system"
    set_job: bool = False
    emit_deleted: bool = False
    versions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VERSIONS))
    max_objects: int = 100_000
    idle_expiry: float = 3600.0
    # None: per object, one observed scrape interval + AUTO_MARGIN (see grace_cap).
    stale_grace: float | None = None
    # Labels telling replicas of one source apart (e.g. [instance, pod] for two KSM pods):
    # one output set per object, following one replica at a time. Empty: off.
    replica_labels: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _go_scalar(cls, value: object, info: ValidationInfo) -> object:
        # As every section: a bool or int key refuses a quoted 'true' or '10' (units.go_scalar).
        return go_scalar(cls, info.field_name or "", value)

    @field_validator("idle_expiry", mode="before")
    @classmethod
    def _duration(cls, value: object, info: ValidationInfo) -> float:
        return _seconds(value, info.field_name or "duration")

    @field_validator("stale_grace", mode="before")
    @classmethod
    def _grace(cls, value: object) -> float | None:
        if value is None or value == "auto":
            return None
        return _seconds(value, "stale_grace")

    @property
    def grace_cap(self) -> float:
        """The longest an automatic grace waits: AUTO_CAP, or half a shorter idle_expiry (an
        object must not be forgotten before its end is written)."""
        return min(AUTO_CAP, self.idle_expiry / 2)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_null(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, version in value.items():
            if kind not in BY_KIND:
                raise ValueError(f"flux.versions: unknown kind {kind!r}; {suggest(kind)}")
            if "/" in version:
                raise ValueError(
                    f"flux.versions.{kind}: {version!r} names a group; write the version only, "
                    f"e.g. {version.rsplit('/', 1)[1]!r}"
                )
            if not _VERSION.fullmatch(version):
                raise ValueError(
                    f"flux.versions.{kind}: {version!r} is not an API version; write one like "
                    "'v1' or 'v2beta1'"
                )
        return {**DEFAULT_VERSIONS, **value}

    @field_validator("replica_labels")
    @classmethod
    def _replica_labels(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in _IDENTITY_LABELS:
                raise ValueError(
                    f"flux.replica_labels: {name!r} names the object, not the replica that "
                    "reports it; list the scrape's labels that differ between replicas, such "
                    "as instance and pod"
                )
        if len(set(value)) != len(value):
            raise ValueError("flux.replica_labels: a label is listed twice")
        return value

    @field_validator("controller_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "flux.controller_namespace: must not be empty; set the namespace Flux's "
                "controllers run in (usually flux-system)"
            )
        return value

    @field_validator("max_objects")
    @classmethod
    def _max_objects(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"flux.max_objects: {value} tracks nothing; set at least 1 (the default is 100000)"
            )
        return value

    @model_validator(mode="after")
    def _durations(self) -> FluxConfig:
        if self.idle_expiry <= 0:
            raise ValueError("flux.idle_expiry: must be positive; the default is 3600 (1h)")
        if self.stale_grace is None:
            return self
        if self.stale_grace < 0:
            raise ValueError("flux.stale_grace: must not be negative; 0 ends objects at once")
        if self.stale_grace >= self.idle_expiry:
            raise ValueError(
                f"flux.stale_grace ({self.stale_grace:g}s) must be shorter than flux.idle_expiry "
                f"({self.idle_expiry:g}s), or objects would be forgotten before their end; "
                "lower stale_grace or raise idle_expiry"
            )
        return self
