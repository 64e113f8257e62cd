"""The state every metric-type builder of a ``Mapper`` reads and writes (``Builder``), and the
resource, scope and attributes of a series' labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ... import __version__
from ...model import Exemplar, Labels
from .naming import SCOPE_NAME, SCOPE_PREFIX, Ctx, Kind, Scope, StreamKey, Temporality
from .output import Heads, Output
from .state import MappingState, StreamState

# The otel_scope_ labels that are the scope's fields; any other is one of its attributes.
_SCOPE_FIELDS: Final = ("name", "version", "schema_url")


@dataclass(slots=True)
class Group:
    """The parts of one classic histogram or summary point (one stream, one timestamp)."""

    ctx: Ctx
    kind: Kind
    buckets: dict[float, float] = field(default_factory=dict)
    quantiles: dict[float, float] = field(default_factory=dict)
    count: float | None = None
    sum: float | None = None
    stale: bool = False
    samples: int = 0

    def copy(self) -> Group:
        """A copy that parts added to this one do not change."""
        return Group(
            self.ctx,
            self.kind,
            dict(self.buckets),
            dict(self.quantiles),
            self.count,
            self.sum,
            self.stale,
            self.samples,
        )


class Builder:
    """What the builders of each metric type share while one request is mapped: the request
    (``out``), the stream updates it makes, the ``_created`` start times seen, the classic
    histogram and summary parts waiting for the rest of their point, and each label set's
    resource, scope and attributes."""

    def __init__(
        self,
        state: MappingState,
        temporality: Temporality,
        resource_labels: Sequence[str],
        native: Any = None,
    ) -> None:
        self.state = state
        self._native = native  # rows.LOOPS.compiled for Output, or None (its Python twin)
        self.delta = temporality == "delta"
        self.resource_labels = tuple(resource_labels)
        self._resource_set = frozenset(resource_labels)
        self.temporality: Temporality = temporality
        self.heads: Heads = {}  # the requests' metric, resource and scope headers
        self.out = self._output()
        self.updates: dict[StreamKey, StreamState] = {}
        self.unmapped = 0
        self.created = state.created  # shared by every batch (MappingState.created)
        self.groups: dict[StreamKey, dict[int, Group]] = {}
        self.group_exemplars: dict[StreamKey, list[Exemplar]] = {}
        self.grouped = 0  # samples held in ``groups``
        self._ctx: dict[Labels, Ctx] = {}

    def _output(self) -> Output:
        """A new request, sharing the headers of those before."""
        return Output(
            self.resource_labels,
            self.temporality,
            self.heads,
            self._native,
            self.state.target_info,
        )

    def prev(self, key: StreamKey) -> StreamState | None:
        found = self.updates.get(key)
        return found if found is not None else self.state.streams.get(key)

    def ctx(self, rest: Labels) -> Ctx:
        """Resource, scope and attributes of a series' labels (``__name__`` etc. removed)."""
        found = self._ctx.get(rest)
        if found is not None:
            return found
        found = self._ctx[rest] = self._ctx_of(rest)
        return found

    def _ctx_of(self, rest: Labels) -> Ctx:
        """As the compatibility spec asks: the resource labels make the resource; the
        ``otel_scope_*`` labels, when a series has any, its instrumentation scope (``name``,
        ``version``, ``schema_url``, and the others its attributes, the prefix cut), else the
        scope is the relay itself; neither is a point attribute."""
        values = dict(rest)
        resource = tuple(values.get(label, "") for label in self.resource_labels)
        scoped = {k[len(SCOPE_PREFIX) :]: v for k, v in rest if k.startswith(SCOPE_PREFIX)}
        if scoped:
            name, version, schema_url = (scoped.pop(key, "") for key in _SCOPE_FIELDS)
            scope: Scope = (name, version, schema_url, tuple(scoped.items()))
        else:
            scope = (SCOPE_NAME, __version__, "", ())
        attributes = tuple(
            pair
            for pair in rest
            if pair[0] not in self._resource_set and not pair[0].startswith(SCOPE_PREFIX)
        )
        return Ctx(resource, scope, attributes)
