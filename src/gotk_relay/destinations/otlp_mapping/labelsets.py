"""What a label set read from a row maps to whatever its samples (``RowInfo``), kept across
requests by its encoded bytes, so a steady source's series are resolved once, not per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...model import Labels, Sample, Series
from ..rows import LOOPS
from .encoder import attributes_bytes
from .naming import Ctx, StreamKey, shape_of, without

if TYPE_CHECKING or LOOPS.compiled is None:

    class _RestKey(tuple):  # type: ignore[type-arg]
        """A tuple equal to (and hashing as) the plain one, its hash computed once: label sets
        and the keys holding them are looked up several times per sample."""

        def __init__(self, items: Iterable[object]) -> None:
            self._hash = tuple.__hash__(self)

        def __hash__(self) -> int:
            return self._hash

else:  # _rows.c's HashedTuple keeps the hash in the tuple itself, read in C (no dict, no call)

    class _RestKey(LOOPS.compiled.HashedTuple):
        __slots__ = ()


# The collector stops walking what a label set's info holds (``_rows.c``'s untrack; nothing
# without it): strings, numbers, bytes and tuples of them, never a cycle. With 50,000 label sets
# every full collection walked ~300,000 such objects, holding the event loop ~70-100 ms.
_untrack: Callable[[object], None] = (
    LOOPS.compiled.untrack if LOOPS.compiled is not None else lambda obj: None
)


class RowInfo:
    """What a label set (a ``rows`` key) maps to whatever its samples, kept across requests:
    its labels, name, the labels without ``__name__`` (``rest``, hash kept), its resource,
    scope and encoded attributes, its counter stream key, and what ``resolve``/``role`` read
    of it (a ``Series`` shell without samples, ``le``/``quantile`` presence)."""

    __slots__ = (
        "_metric_key",
        "_shared",
        "attrs",
        "counter_key",
        "ctx",
        "has_le",
        "has_quantile",
        "kind_key",
        "name",
        "rest",
        "shape",
        "shell",
    )

    def __init__(
        self,
        labels: Labels,
        ctx_of: Callable[[Labels], Ctx],
        shared: dict[object, Any] | None = None,
    ) -> None:
        # ``shared``: the keys the memo's infos share, one object per value (its owner empties
        # it with the memo), so that the dicts they are looked up in (a row's kind, its metric
        # in the request, the request's resources) find them by identity, not by comparing
        # tuples. None for an info the memo does not keep: nothing shared.
        self._shared = shared
        self.shell = Series(labels)
        self.name = self.shell.name
        self.rest = _RestKey(without(labels, "__name__"))
        ctx = ctx_of(self.rest)
        if shared is not None:
            resource, scope = ctx.resource, ctx.scope
            ctx = Ctx(
                shared.setdefault(resource, resource), shared.setdefault(scope, scope), ctx[2]
            )
        self.ctx = ctx
        self.attrs = attributes_bytes(self.ctx.attributes)
        # Its hash kept too: looked up three to five times per sample.
        self.counter_key: StreamKey = _RestKey(("counter", self.name, self.rest))
        keys = {k for k, _ in labels}
        self.has_le = "le" in keys
        self.has_quantile = "quantile" in keys
        self.shape = shape_of(self.name, keys)
        # What Mapper.feed finds a row's kind and role by, made once, not a tuple a row.
        kind_key = (self.name, self.has_le, self.has_quantile)
        self.kind_key = kind_key if shared is None else shared.setdefault(kind_key, kind_key)
        self._metric_key: tuple[object, ...] = ()  # of the last data asked for: one, in practice
        held_by = (self.shell, self.rest, self.ctx, self.counter_key, self.kind_key, self.shape)
        for held in (self, *held_by):
            _untrack(held)

    def metric_key(self, data: str) -> tuple[object, ...]:
        """``Output``'s key of this series' metric of ``data``, its hash computed once."""
        found = self._metric_key
        if not found or found[3] != data:
            ctx = self.ctx
            found = _RestKey((ctx.resource, ctx.scope, self.name, data))
            if self._shared is not None:
                found = self._shared.setdefault(found, found)
            self._metric_key = found
            _untrack(found)
        return found

    def series(self, samples: Sequence[tuple[float, int]]) -> Series:
        return Series(self.shell.labels, tuple(Sample(v, t) for v, t in samples))
