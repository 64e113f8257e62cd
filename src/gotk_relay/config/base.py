"""What every section of the configuration shares: ``ConfigError``, whose message is ready to
print, and ``Strict``, the model that refuses unknown keys.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """A configuration that cannot be used; the message names where and what to fix."""


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently turn a feature off."""

    model_config = ConfigDict(extra="forbid", frozen=True)
