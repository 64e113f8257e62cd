"""Label-set rules every remote-write series must follow (spec 1.0 and 2.0 alike)."""

from __future__ import annotations

from ..model import Labels


def label_problem(labels: Labels) -> str | None:
    """Why ``labels`` is not a valid remote-write label set, or None when it is.

    The rules are the spec's: a metric name, no empty names or values, sorted by name with no
    name twice. A receiver that stored such a series would corrupt the destination's index, so
    the request is refused (400) rather than forwarded.
    """
    previous = ""
    has_name = False
    for name, value in labels:
        if not name:
            return "empty label name"
        if not value:
            return f"empty value for label {name!r}"
        if name <= previous:
            if name == previous:
                return f"duplicate label name {name!r}"
            return f"labels not sorted by name ({previous!r} before {name!r})"
        if name == "__name__":
            has_name = True
        previous = name
    if not has_name:
        return "series without a metric name (__name__)"
    return None


def describe(labels: Labels) -> str:
    """``name{a="b"}`` for error messages; long sets are cut so a reason stays one line."""
    name = next((v for k, v in labels if k == "__name__"), "")
    rest = ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
    text = f"{name}{{{rest}}}"
    return text if len(text) <= 200 else text[:197] + "..."
