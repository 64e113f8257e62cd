"""The configuration's YAML read as Prometheus' Go YAML reads it, where PyYAML would differ.

- A number keeps the text it was written with: a key that takes a string (a relabel
  ``replacement: 1.10``, a header ``X-Scope-OrgID: 012``) gets that text, as Go gives a string
  field, not PyYAML's YAML 1.1 number written back (``1.1``, ``10``). A key that takes a number
  gets the number. (``NumberText``; the models coerce numbers to strings with ``str()``.)
  YAML 1.1's base-60 numbers (``1:30``) are text, as Go's YAML has none. Its boolean words
  (``true``, ``false``, ``yes``, ``on``..., and yaml.v2's ``y`` and ``n``) stay text too
  (``units.BoolText``): a label ``enabled: true`` or a ``replacement: yes`` is that word, as
  Go gives a string field, and ``send_exemplars: false`` still false (pydantic reads the word).
  A key that takes a bool, an int or a float refuses a quoted value, as Go does
  (``units.go_scalar``).
- A number with an exponent but no dot or no exponent sign (``1e3``, ``2.5E2``) is a number,
  as Go's YAML reads it (YAML 1.1, so PyYAML, reads it as text): ``modulus: 1e3`` is 1000.
- A key given twice in one mapping is an error, as in Go ("already set"), rather than the last
  one silently winning.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..units import BoolText


class IntText(int):
    """A YAML integer that remembers how it was written (``str()`` gives that text)."""

    text: str

    def __new__(cls, value: int, text: str) -> IntText:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles as a plain int
        return (int, (int(self),))


class FloatText(float):
    """A YAML float that remembers how it was written (``str()`` gives that text)."""

    text: str

    def __new__(cls, value: float, text: str) -> FloatText:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:
        return (float, (float(self),))


class _Loader(yaml.SafeLoader):
    def number_int(self, node: yaml.ScalarNode) -> int | str:
        if ":" in node.value:  # YAML 1.1's base 60 (1:30 = 90): Go's YAML reads it as text
            return str(node.value)
        value = super().construct_yaml_int(node)
        return IntText(value, node.value) if node.style is None else value

    def number_float(self, node: yaml.ScalarNode) -> float | str:
        if ":" in node.value:
            return str(node.value)
        value = super().construct_yaml_float(node)
        return FloatText(value, node.value) if node.style is None else value

    def word_bool(self, node: yaml.ScalarNode) -> BoolText:
        # Every boolean word stays text: a key that takes a string gets the word (Go's YAML
        # does), one that takes a bool reads the word as pydantic does.
        return BoolText(node.value)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping words the error
                break
            if earlier is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"key {key!r} already set in this mapping (line {earlier.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:bool", _Loader.word_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.number_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.number_float)
# yaml.v2's boolean words that PyYAML's YAML 1.1 resolver leaves out.
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
# yaml.v2's float pattern for what YAML 1.1's misses: an exponent without a dot or a sign.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load(text: str) -> Any:
    """``yaml.safe_load`` with the two differences above."""
    return yaml.load(text, Loader=_Loader)
