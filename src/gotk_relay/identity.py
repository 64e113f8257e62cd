"""Maps keyed by an object's identity: what the relay knows about a label set it was handed
before, found without hashing the label set.

Why: a decoder that caches label sets (``wire.picked``) hands the same tuple for the same series
every scrape, so the Flux rules and the federate store look a series up by the identity of its
tuple. As a dict keyed by ``id()``, each entry costs ~85 bytes (a 32-byte int, the entry and its
index), seven of them per Flux object; the compiled map (``_identity.c``) keeps a slot of 16
bytes in a table at most 2/3 full, and a lookup makes no int.

The contract, for both: the caller keeps every key alive while it is in the map (in practice
the value holds it), so an address is never reused while its entry is here.

Pure: it imports nothing of the relay but the switch (``native``), so any module can own one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from . import native

V = TypeVar("V")
D = TypeVar("D")
_MISSING: Final = object()


class PyIdentityMap(Generic[V]):
    """The pure-Python twin: a dict keyed by ``id(key)``."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, V] = {}

    @overload
    def get(self, key: object) -> V | None: ...
    @overload
    def get(self, key: object, default: D) -> V | D: ...
    def get(self, key: object, default: Any = None) -> Any:
        return self._by_id.get(id(key), default)

    @overload
    def pop(self, key: object) -> V: ...
    @overload
    def pop(self, key: object, default: D) -> V | D: ...
    def pop(self, key: object, default: Any = _MISSING) -> Any:
        value = self._by_id.pop(id(key), _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def __getitem__(self, key: object) -> V:
        try:
            return self._by_id[id(key)]
        except KeyError:
            raise KeyError(key) from None

    def __setitem__(self, key: object, value: V) -> None:
        self._by_id[id(key)] = value

    def __delitem__(self, key: object) -> None:
        try:
            del self._by_id[id(key)]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return id(key) in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def clear(self) -> None:
        self._by_id.clear()

    def values(self) -> list[V]:
        return list(self._by_id.values())


_native: Any = native.load(f"{__package__}._identity")

# The one switch (native.py says when the compiled map is not there).
if TYPE_CHECKING:
    IdentityMap = PyIdentityMap
else:
    IdentityMap = PyIdentityMap if _native is None else _native.IdentityMap
