"""Names, tags and host of a Datadog series, from a Prometheus series' labels.

Names
    A metric name may hold ASCII letters, digits, ``_`` and ``.`` and must start with a letter;
    anything else (Prometheus' ``:`` of recording rules included) becomes ``_``, leading
    characters that are not letters are removed, and the result is cut to 200 characters.
    Nothing is lowercased or collapsed: metric names are case-sensitive in Datadog and an
    unchanged ``http_requests_total`` is what users search for.
Tags
    Each label but ``__name__`` (and the ``host_label``) becomes ``name:value``, normalised the way
    Datadog itself would store it, so what the relay sends is what the UI shows: lowercased,
    letters (Unicode ones too, as Datadog allows), digits and ``_ - : . /`` kept, every other
    character ``_``, leading non-letters removed (a tag starts with a letter), cut to 200
    characters, trailing ``:`` removed (a tag cannot end with one). So ``kind="HelmRelease"``
    arrives as ``kind:helmrelease`` and ``le="+Inf"`` as ``le:_inf``. The key is what precedes
    the first ``:``; a value may contain more (``instance:10.0.0.1:8080``).
Host
    The ``host_label``'s value becomes the series' ``resources: [{"type": "host", ...}]`` and
    is not also a tag, as the Datadog Agent reports hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ...model import Labels
from ..rows import LOOPS, Loops
from .intake import MAX_NAME_LENGTH, MAX_TAG_LENGTH

_NAME_FAST = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,199}")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")
_TAG_FAST = re.compile(r"[a-z][a-z0-9_\-:./]{0,199}")
_TAG_BAD = re.compile(r"[^\w\-:./]")  # \w: Unicode letters and digits, and _


def normalize_metric_name(name: str) -> str:
    """Datadog's metric-name rules (see the module docstring); "" when nothing usable is left."""
    if _NAME_FAST.fullmatch(name):
        return name
    out = _NAME_BAD.sub("_", name)
    start = 0
    while start < len(out) and not ("a" <= out[start].lower() <= "z"):
        start += 1
    return out[start : start + MAX_NAME_LENGTH]


def normalize_tag(tag: str) -> str:
    """Datadog's tag rules (see the module docstring); "" when nothing usable is left."""
    lowered = tag.lower()
    if _TAG_FAST.fullmatch(lowered) and not lowered.endswith(":"):
        return lowered  # the common case: nothing to replace, cut or strip
    out = _TAG_BAD.sub("_", lowered)
    start = 0
    while start < len(out) and not out[start].isalpha():
        start += 1
    return out[start : start + MAX_TAG_LENGTH].rstrip(":")


def series_tags(
    labels: Labels, host_label: str | None, static_tags: Iterable[str] = (), loops: Loops = LOOPS
) -> tuple[list[str], str]:
    """The tags of a series (label order, then ``static_tags``, duplicates removed) and its host
    ("" when there is none). Compiled where built (``_rows.c``: a tag that is one as it stands
    is lowercased there, any other goes through ``normalize_tag``): every series a destination
    sees first costs this, ~0.5 us a label here."""
    if loops.compiled is not None and isinstance(labels, tuple):
        found: tuple[list[str], str] = loops.compiled.series_tags(
            labels, host_label, static_tags, normalize_tag
        )
        return found
    tags: list[str] = []
    seen: set[str] = set()
    host = ""
    for key, value in labels:
        if key == "__name__":
            continue
        if host_label is not None and key == host_label:
            host = value
            continue
        tag = normalize_tag(f"{key}:{value}")
        if tag and tag not in seen:
            seen.add(tag)
            tags.append(tag)
    for tag in static_tags:
        if tag and tag not in seen:
            seen.add(tag)
            tags.append(tag)
    return tags, host
