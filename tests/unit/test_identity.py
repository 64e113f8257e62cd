"""``identity.IdentityMap``: a map keyed by an object's identity, compiled (``_identity.c``) and
its pure-Python twin, against a dict keyed by ``id()`` over any sequence of operations (growth
and removal in the middle of probe runs included)."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotk_relay import identity

KINDS: Final = [pytest.param(identity.PyIdentityMap, id="python")]
if identity._native is not None:
    KINDS.append(pytest.param(identity._native.IdentityMap, id="compiled"))


def test_the_switch_takes_the_compiled_map_when_built() -> None:
    want = identity.PyIdentityMap if identity._native is None else identity._native.IdentityMap
    assert identity.IdentityMap is want


class Key:
    """A key equal to every other and with one hash: only identity tells them apart."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


OPS: Final = st.lists(
    st.tuples(
        st.sampled_from(["set", "get", "pop", "take", "del", "in", "clear"]), st.integers(0, 300)
    ),
    max_size=600,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_any_sequence_of_operations_is_a_dict_by_id(kind: Any, ops: list[tuple[str, int]]) -> None:
    keys = [Key() for _ in range(301)]
    got = kind()
    want: dict[int, object] = {}
    for step, (op, i) in enumerate(ops):
        key = keys[i]
        if op == "set":
            value = (i, step)
            got[key] = value
            want[id(key)] = value
        elif op == "get":
            assert got.get(key) is want.get(id(key))
            assert got.get(key, "missing") is want.get(id(key), "missing")
        elif op == "pop":
            assert got.pop(key, None) is want.pop(id(key), None)
        elif op == "take":  # pop without a default: KeyError when missing
            if id(key) in want:
                assert got.pop(key) is want.pop(id(key))
            else:
                with pytest.raises(KeyError):
                    got.pop(key)
        elif op == "del":
            if id(key) in want:
                del got[key]
                del want[id(key)]
            else:
                with pytest.raises(KeyError):
                    del got[key]
        elif op == "in":
            assert (key in got) == (id(key) in want)
        else:
            got.clear()
            want.clear()
        assert len(got) == len(want)
    assert sorted(map(id, got.values())) == sorted(map(id, want.values()))
    for key in keys:
        if id(key) in want:
            assert got[key] is want[id(key)]
        else:
            with pytest.raises(KeyError):
                got[key]


@pytest.mark.parametrize("kind", KINDS)
def test_an_equal_object_is_another_key(kind: Any) -> None:
    first, second = tuple(["a", "1"]), tuple(["a", "1"])  # equal, not the same
    assert first == second and first is not second
    m = kind()
    m[first] = "first"
    assert m.get(second) is None and second not in m
    # The missing key itself, as a dict says it (a tuple key wrapped, not taken for args).
    with pytest.raises(KeyError) as raised:
        m.pop(second)
    assert raised.value.args == (second,)
    with pytest.raises(KeyError) as raised:
        m[second]
    assert raised.value.args == (second,)
    with pytest.raises(KeyError) as raised:
        del m[second]
    assert raised.value.args == (second,)
    assert m.pop(first) == "first" and len(m) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_values_are_owned_and_released(kind: Any) -> None:
    class Value:
        pass

    key = Key()
    m = kind()
    value = Value()
    gone = weakref.ref(value)
    m[key] = value
    del value
    gc.collect()
    assert gone() is not None  # the map holds it
    m[key] = "replaced"
    assert gone() is None
    held = Value()
    gone = weakref.ref(held)
    m[key] = held
    del held
    m.clear()
    assert gone() is None and len(m) == 0
    m[key] = 1  # usable after clear
    assert m[key] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_cycle_through_the_map_is_collected(kind: Any) -> None:
    class Holder:
        pass

    m = kind()
    holder = Holder()
    holder.map = m  # type: ignore[attr-defined]
    m[holder] = holder  # the value holds its key, and the map
    gone = weakref.ref(holder)
    del m, holder
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("kind", KINDS)
def test_many_keys_grow_the_table_and_every_one_is_found(kind: Any) -> None:
    keys = [(i,) for i in range(50_000)]
    m = kind()
    for i, key in enumerate(keys):
        m[key] = i
    assert len(m) == len(keys)
    assert all(m.get(key) == i for i, key in enumerate(keys))
    for key in keys[::2]:
        del m[key]
    assert len(m) == len(keys) // 2
    assert all(m.get(key) == (i if i % 2 else None) for i, key in enumerate(keys))


@pytest.mark.skipif(identity._native is None, reason="_identity.c is not built")
def test_the_compiled_map_takes_a_fraction_of_a_dict_by_id() -> None:
    """Why it exists: ~16-43 bytes an entry against ~85 for a dict keyed by ``id()``."""
    keys = [(i,) for i in range(50_000)]
    compiled = identity._native.IdentityMap()
    by_id: dict[int, None] = {}
    for key in keys:
        compiled[key] = None
        by_id[id(key)] = None
    dict_bytes = by_id.__sizeof__() + sum(sys.getsizeof(k) for k in by_id)
    assert compiled.__sizeof__() < dict_bytes / 2
    with pytest.raises(TypeError):
        identity._native.IdentityMap(1)
