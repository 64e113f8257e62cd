"""What every section of the configuration shares: ``ConfigError``, whose message is ready to
print, and ``Strict``, the model that refuses unknown keys.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from ..units import go_scalar


class ConfigError(Exception):
    """A configuration that cannot be used; the message names where and what to fix."""


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently turn a feature off. A key left empty
    (``write_relabel_configs:`` as a Helm template renders it) is unset, as in Prometheus,
    unless it takes null."""

    # A number where a string is expected (a header's tenant id) is taken as written in the
    # file (config/yaml_text.py keeps its text), as Go's YAML gives a string field.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    @field_validator("*", mode="before")
    @classmethod
    def _go_scalar(cls, value: Any, info: ValidationInfo) -> Any:
        # A bool, int or float key refuses what Go's YAML refuses (a quoted 'true' or '10').
        return go_scalar(cls, info.field_name or "", value)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or _takes_null(cls, k)}
        return data


def _takes_null(model: type[BaseModel], key: object) -> bool:
    """Whether ``model``'s field ``key`` accepts None (an unknown key: left for the error)."""
    field = model.model_fields.get(key) if isinstance(key, str) else None
    if field is None:
        return True
    annotation = field.annotation
    return annotation is None or annotation is Any or type(None) in get_args(annotation)
