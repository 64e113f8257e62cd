"""``${VAR}`` in string values, expanded from the environment, and error messages that never
show a value that came from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..units import EnvText
from .base import ConfigError
from .client import sanitize_url

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")
# Relabel rules are left as written: their ``${name}`` is a regex group and ``$$`` a literal
# ``$`` (Go's regexp.Expand), as in the prometheus.yml they are pasted from.
RELABEL_KEYS = frozenset({"relabel_configs", "write_relabel_configs", "metric_relabel_configs"})


class Expanded(NamedTuple):
    """A string value that held ``${VAR}``: as written, as expanded, and the variables' values."""

    written: str
    value: str
    variables: tuple[tuple[str, str], ...]  # (name, value)


def expand_env(
    node: Any,
    environ: Mapping[str, str],
    where: str = "",
    found: dict[tuple[str | int, ...], Expanded] | None = None,
    path: tuple[str | int, ...] = (),
) -> Any:
    """Replace ``${VAR}`` in every string value but relabel rules'; ``$$`` is a literal ``$``.

    A variable that is not set is an error rather than an empty string, since an empty password
    or URL fails later and far from its cause. ``found`` collects, by location, every value that
    came from the environment, so that no error message shows it.
    """
    if isinstance(node, str):
        used: list[tuple[str, str]] = []

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in environ:
                raise ConfigError(
                    f"{where or 'config'}: environment variable ${{{name}}} is not set"
                )
            used.append((name, environ[name]))
            return environ[name]

        if "$" not in node:
            return node
        value = _ENV.sub(sub, node)
        if not used:
            return value
        if found is not None:
            found[path] = Expanded(node, value, tuple(used))
        return EnvText(value)  # a number or a boolean too, where the key takes one
    if isinstance(node, list):
        return [
            expand_env(item, environ, f"{where}[{i}]", found, (*path, i))
            for i, item in enumerate(node)
        ]
    if isinstance(node, dict):
        return {
            key: value
            if key in RELABEL_KEYS
            else expand_env(
                value, environ, f"{where}.{key}" if where else str(key), found, (*path, key)
            )
            for key, value in node.items()
        }
    return node


def related(loc: tuple[Any, ...], path: tuple[str | int, ...]) -> bool:
    """The error at ``loc`` is about the value at ``path``, or about a block holding it."""
    return loc[: len(path)] == path or path[: len(loc)] == loc


def redact(message: str, near: list[Expanded], everywhere: list[Expanded] | None = None) -> str:
    """``message`` with every value that came from ``${ENV}`` shown as written (``${VAR}``).

    Values are replaced whole, and as a URL without user info and query (how URLs are quoted);
    if a variable's value still shows in an error about its own location (a validator quoted
    a part of it), the message is replaced by one that names the variables only.
    """
    pairs: dict[str, str] = {}
    for item in (*near, *(everywhere or ())):
        for value, written in (
            (item.value, item.written),
            (item.value.strip(), item.written.strip()),
            (_safe_sanitize(item.value), _safe_sanitize(item.written)),
        ):
            if value and value != written:
                pairs.setdefault(value, written)
    for value in sorted(pairs, key=len, reverse=True):
        if len(value) >= 3:
            message = message.replace(value, pairs[value])
        else:  # "1" or "h" would also match inside other words: only where it is quoted
            message = message.replace(f'"{value}"', f'"{pairs[value]}"')
    for item in near:
        for _, value in item.variables:
            # Shorter values are not secrets worth a vaguer message ("1", "h").
            if len(value) >= 3 and value in message:
                names = ", ".join(sorted({f"${{{n}}}" for n, _ in item.variables}))
                return f"invalid value (from {names}; the value is not shown)"
    return message


def _safe_sanitize(url: str) -> str:
    try:
        return sanitize_url(url)
    except ValueError:
        return url
