"""The Flux objects the rules track, read-only, for the status page (``status_page.py``).

``FluxRewriter.tracked()`` copies the references of its tracked objects (one C-level copy of
its two tables, bounded by ``flux.max_objects``); ``TrackedObjects.rows()`` (plain tuples) and
``describe()`` (``Tracked``) read each one's kind, namespace, name, Ready, suspended, source
shape and last seen. Describing is Python work
per object, so it may run in another thread: every attribute read is atomic, and an object's
inputs are copied whole before they are looked at (a row may mix two scrapes of one object,
which a status page can live with; nothing is written).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ...model import label_value
from .names import OPERATOR_INFO, RESOURCE_INFO
from .state import NEVER, FluxObject, InfoObject, LegacyObject

# Source shapes, as the status page shows them: where the object's state came from.
KSM: Final = "ksm"  # kube-state-metrics' gotk_resource_info
OPERATOR: Final = "operator"  # the Flux Operator's flux_resource_info
LEGACY: Final = "legacy"  # the Flux ≤ 2.1 controllers' gotk_reconcile_condition / suspend
SHAPES: Final = (KSM, OPERATOR, LEGACY)


@dataclass(frozen=True, slots=True)
class Tracked:
    """One tracked Flux object as the rules see it now."""

    kind: str
    namespace: str
    name: str
    ready: str  # True, False, Unknown, or "" when the object has not said (legacy, between)
    suspended: bool | None  # None: not said (a legacy object without gotk_suspend_status)
    shape: str  # KSM, OPERATOR or LEGACY; "ksm+operator" when both report it
    last_seen_ms: int  # the relay clock (ms) when an input of it was last seen; 0: never


Row = tuple[str, str, str, str, str, int, int]
"""A tracked object as one plain tuple: (kind, namespace, name, shape, ready, suspended as 1, 0
or -1 for not said, last_seen_ms). Plain tuples of strings and ints sort by kind, namespace and
name without a key, and the garbage collector stops tracking them: 100,000 ``Tracked`` rows
made at once triggered a full collection that held the GIL for 135 ms (measured)."""


def tracked_of(row: Row) -> Tracked:
    kind, namespace, name, shape, ready, suspended, last_seen_ms = row
    said = None if suspended < 0 else bool(suspended)
    return Tracked(kind, namespace, name, ready, said, shape, last_seen_ms)


def row_of(tracked: Tracked) -> Row:
    suspended = -1 if tracked.suspended is None else int(tracked.suspended)
    return (
        tracked.kind,
        tracked.namespace,
        tracked.name,
        tracked.shape,
        tracked.ready,
        suspended,
        tracked.last_seen_ms,
    )


class TrackedObjects:
    """A point-in-time list of tracked objects (references: described when read)."""

    __slots__ = ("_objects",)

    def __init__(self, objects: tuple[FluxObject, ...]) -> None:
        self._objects = objects

    def __len__(self) -> int:
        return len(self._objects)

    def rows(self) -> Iterator[Row]:
        """Each object's row, in no particular order."""
        for obj in self._objects:
            yield describe_row(obj)

    def describe(self) -> Iterator[Tracked]:
        """Each object, in no particular order."""
        for obj in self._objects:
            yield tracked_of(describe_row(obj))


def describe_row(obj: FluxObject) -> Row:
    """What the rules know of one object (see the module docstring on threads)."""
    key = obj.key
    # Forward objects keep the object's namespace in exported_namespace with label_shape
    # stored (namespace is then the controllers'), in namespace with raw; legacy ones in
    # exported_namespace.
    namespace = label_value(key, "exported_namespace") or label_value(key, "namespace")
    ready = ""
    suspended = -1
    if isinstance(obj, InfoObject):
        ready, suspended = obj.ready, int(obj.suspended)
        names = {label_value(entry.labels, "__name__") for entry in obj.inputs}
        shapes = [s for s, n in ((KSM, RESOURCE_INFO), (OPERATOR, OPERATOR_INFO)) if n in names]
        shape = "+".join(shapes) or KSM
    else:
        shape = LEGACY
        if isinstance(obj, LegacyObject):
            ready = obj.current_ready or ""
            suspend = obj.suspend
            suspended = -1 if suspend is None else int(suspend[1] != 0.0)
    last_seen = obj.last_seen
    return (
        obj.kind.kind,
        namespace,
        label_value(key, "name"),
        shape,
        ready,
        suspended,
        0 if last_seen == NEVER else last_seen,
    )
