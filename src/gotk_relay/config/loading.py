"""Loading: YAML to a validated ``Config``, or a ``ConfigError`` whose lines name the file, the
line and the key. Loading never exits the process (``check-config`` and ``/-/reload`` both show
the message as is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError

from . import yaml_text
from .base import ConfigError
from .document import Config
from .env import Expanded, expand_env, redact, related


def referenced_files(node: object, where: str = "") -> list[tuple[str, str]]:
    """(key, path) of every ``*_file`` the configuration names (secrets, TLS files), in order."""
    found: list[tuple[str, str]] = []
    if isinstance(node, BaseModel):
        for key in type(node).model_fields:
            value = getattr(node, key)
            at = f"{where}.{key}" if where else key
            if key.endswith("_file") and isinstance(value, str) and value:
                found.append((at, value))
            else:
                found.extend(referenced_files(value, at))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(referenced_files(item, f"{where}[{index}]"))
    return found


def load(path: str | Path | None) -> Config:
    """The configuration in ``path``, or the embedded default when there is none."""
    if path:
        return load_file(path)
    return load_text(default_config_text(), "<embedded default>")


def default_config_text() -> str:
    return resources.files("gotk_relay").joinpath("default.yml").read_text(encoding="utf-8")


def load_file(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"couldn't load configuration (--config={path}): {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"couldn't load configuration (--config={path}): not UTF-8 "
            f"(byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from exc
    return load_text(text, str(path), environ)


def load_text(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate; every error message starts with ``source`` and, when known, the line."""
    try:
        raw = yaml_text.load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: invalid YAML: {problem}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the configuration must be a YAML mapping, got {type(raw).__name__}"
        )
    from_env: dict[tuple[str | int, ...], Expanded] = {}
    try:
        expanded = expand_env(raw, os.environ if environ is None else environ, found=from_env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, root, from_env)) from exc
    except ConfigError as exc:  # a validator that reads something (e.g. a rules file)
        raise ConfigError(redact(f"{source}: {exc}", list(from_env.values()))) from exc


def _describe(
    exc: ValidationError,
    source: str,
    root: yaml.Node | None,
    from_env: Mapping[tuple[str | int, ...], Expanded] | None = None,
) -> str:
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_pydantic_tag(part)]
        key = _format_loc(loc)
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            hint = _PROMETHEUS_KEYS.get(str(loc[-1]), "check its spelling")
            message = f"field {loc[-1]} not found in type {_parent_name(loc)} ({hint})"
        if from_env:
            # A validator may quote the value it refuses: never one that came from ${ENV}.
            near = [e for path, e in from_env.items() if related(tuple(loc), path)]
            message = redact(message, near, list(from_env.values()))
        lines.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
    return "\n".join(lines)


# Keys of Prometheus' remote_write (http_config) that gotk-relay does not take, with what to
# write instead: refused rather than accepted and ignored.
_PROMETHEUS_KEYS: Final = {
    "bearer_token": "use authorization: {credentials: ...} instead",
    "bearer_token_file": "use authorization: {credentials_file: ...} instead",
    "http_headers": "use headers: {Name: value} instead",
    "no_proxy": "not supported by gotk-relay: only proxy_url",
    "proxy_from_environment": "not supported by gotk-relay: set proxy_url",
    "proxy_connect_header": "not supported by gotk-relay",
    "username_file": "not supported by gotk-relay: set username",
    # prometheus.yml's top level: the relay takes scrape_configs, each with its own settings.
    "global": "gotk-relay has no global section: set scrape_interval and scrape_timeout on "
    "each scrape_configs entry (Prometheus' defaults, 1m and 10s, apply otherwise); "
    "for each of its external_labels, a relabel_configs rule {source_labels: [NAME], "
    "regex: '', target_label: NAME, replacement: VALUE} sets it on every series that lacks "
    "it, received or scraped, as Prometheus does",
}


def _is_pydantic_tag(part: object) -> bool:
    # Literal / union branches show up in locations as e.g. 'literal[...]'; they name no key.
    return isinstance(part, str) and ("[" in part and part.endswith("]") and not part[0].isdigit())


def _parent_name(loc: list[Any]) -> str:
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    return parents[-1] if parents else "config"


def _format_loc(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """Line (1-based) of the deepest YAML node the error location reaches."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if node is None:
                break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line
