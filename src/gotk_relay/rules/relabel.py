r"""Prometheus relabeling (``relabel_configs`` / ``write_relabel_configs``), bug for bug.

Users paste these rules straight out of prometheus.yml, so a near miss would silently rename,
route or drop the wrong series. Every choice below therefore follows ``model/relabel/relabel.go``
(Prometheus 3.x) and Go's ``regexp`` package rather than Python's habits:

* a regex is compiled by RE2 (Go's dialect) as ``"^(?s:" + regex + ")$"``: anchored by string
  concatenation, so ``a)|(b`` escapes the anchors exactly as it does in Prometheus, and with
  ``.`` matching newlines as in Prometheus 3. Matching always uses leftmost-first *search*, as Go's
  ``MatchString``/``FindStringSubmatchIndex`` do;
* ``$1``, ``${1}``, ``${name}`` and ``$$`` follow ``regexp.Expand`` (``$1x`` names group ``1x``);
* the label builder keeps ``labels.Builder``'s iteration order, which decides which label wins
  when ``labelmap`` maps two labels onto one name;
* label names are checked with the legacy ``[a-zA-Z_][a-zA-Z0-9_]*`` scheme that every remote-write
  receiver accepts (Prometheus 3 run with ``metric_name_validation_scheme: legacy``);
* what RE2 takes and Go's ``regexp`` refuses is refused at load: ``\C``, a group name other than
  ``[A-Za-z0-9_]+``; and what Go takes that overflows RE2's default memory budget (``\pL{1000}``)
  loads with a larger, still bounded one (``_BIG_MEM``). Both refuse a repeat count over 1000.

Where Prometheus 2.x and 3.x differ, the relay does what 3.x does (as ``relabel.go`` reads from
v3.0.0 to v3.14.0; the audit against 2.42 found these):

* ``replace`` whose replacement expands to nothing deletes the *expanded* ``target_label``
  (``target_label: $1`` deletes the label the match names; 2.x deleted the label literally
  named ``$1``, and did so too when the expansion was no valid name, where 3.x does nothing);
* ``labelmap`` walks the labels in ``labels.Builder.Range``'s order (the ones no earlier rule
  touched, by name, then those earlier rules set, in the order they set them), so when two map
  onto one name the later in that order wins; 2.x walked every label sorted by name;
* a templated ``target_label`` (one with ``$``) is refused for ``lowercase``, ``uppercase``,
  ``keepequal`` and ``dropequal``, which take it verbatim (2.x accepted it and used it verbatim);
* ``(?<name>...)`` is a named group, as ``(?P<name>...)`` is (Go 1.22 and later: Prometheus 3.0
  to 3.14 are built with Go 1.23 to 1.26, 2.42 with Go 1.19, which refused it).

Unicode tables are not Go's: ``lowercase`` and ``uppercase`` use the interpreter's (Unicode 14.0
on Python 3.11) and ``\pL``, ``\p{Script}`` and ``(?i)`` use RE2's (15.1 in google-re2 1.1), where
Prometheus 3 has Go's 15.0 (Go 1.21 to 1.26) and 2.42 had Go 1.19's 13.0. So 2.42 refuses
``\p{Kawi}`` or ``\p{Vithkuqi}`` and leaves U+2C2F as it is where the relay lowercases it; against
Prometheus 3 only characters added after Unicode 14.0 can differ.

The relay adds one rule Prometheus leaves to its callers: a series left without ``__name__`` is
dropped, because remote write cannot carry it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple, Protocol, Self, TypeVar, cast, get_args

import re2  # type: ignore[import-untyped, unused-ignore]  # no stubs; pyproject may ignore
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gotk_relay import caches
from gotk_relay.caches import Bounded
from gotk_relay.model import Labels
from gotk_relay.units import BoolText

Action = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]

ACTIONS: Final[frozenset[str]] = frozenset(get_args(Action))
DEFAULT_SEPARATOR: Final = ";"
DEFAULT_REGEX: Final = "(.*)"
DEFAULT_REPLACEMENT: Final = "$1"
_T = TypeVar("_T")
# Results kept per memo of a rule (see _memoize); caches.FAMILIES["relabel"].limit for new rules.
MEMOS: Final = caches.family("relabel", 4096)
NAMELESS: Final = "missing __name__"
"""``Step.action`` of the relay's own final check, which drops series left without a name."""

_NEEDS_TARGET: Final = frozenset(
    {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
)
_FIXED_TARGET: Final = frozenset({"lowercase", "uppercase", "keepequal", "dropequal"})
# yaml.v2 decodes null to the Go zero value without calling custom unmarshalers; a nil regex then
# becomes the empty one in Config.UnmarshalYAML. source_labels: null stays nil (i.e. unset).
_NULL_AS: Final[tuple[tuple[str, object], ...]] = (
    ("separator", ""),
    ("target_label", ""),
    ("regex", ""),
    ("modulus", 0),
    ("replacement", ""),
)
# RE2 refuses a regex whose compiled program would pass Options.max_mem (8 MiB by default); Go
# has no such budget. Go's matcher works on runes, so \pL is one instruction there, but RE2's
# works on UTF-8 bytes, where \pL is hundreds: \pL{1000}, [\pL\pN]{500} or (\pL|\pN|_){1,500}
# load in Prometheus and overflow RE2's default. Such a regex is compiled again with _BIG_MEM:
# one class repeated 1000 times (Go's and RE2's largest count; {1001} is refused by both) needs
# up to about 22 MiB (\pL{1000} 18, [\pL\pN_]{1000} 20), and 64 leaves room for a few such terms.
# It stays a bound: RE2 refuses a program over it and keeps its lazy DFA cache within what is
# left (searching more slowly rather than growing), so one rule holds at most about 100 MiB,
# program and parsed regex (measured: \pL{1000} 45 MiB, \pL{1000}\pN{1000}\pL{1000} 97 MiB).
# Every other regex keeps the 8 MiB default, and its DFA cache that smaller bound.
_DEFAULT_MEM: Final = 8 << 20
_BIG_MEM: Final = 64 << 20
_TOO_LARGE: Final = "pattern too large - compile failed"  # RE2's ErrorPatternTooLarge
_GROUP_NAME_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
)
# Prometheus' relabelTargetLegacy: what a templated target_label or labelmap replacement may be.
_RELABEL_TARGET: Final[Any] = re2.compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$")


class _Match(Protocol):
    def group(self, index: int, /) -> str | None: ...
    def span(self, index: int = 0, /) -> tuple[int, int]: ...


class _Pattern(Protocol):
    @property
    def groups(self) -> int: ...
    @property
    def groupindex(self) -> Mapping[str, int]: ...
    def search(self, text: str, pos: int = 0, /) -> _Match | None: ...


def _q(text: str) -> str:
    """Quote like Go's ``%q`` so error messages read exactly like Prometheus' own."""
    return json.dumps(text, ensure_ascii=False)


def _is_label_name(name: str) -> bool:
    # For ASCII text, isidentifier() is exactly [a-zA-Z_][a-zA-Z0-9_]*, without a regex call.
    return name.isascii() and name.isidentifier()


def _compile(regex: str) -> _Pattern:
    """``regex`` anchored as Prometheus anchors it, or a ValueError for what Go would refuse."""
    try:
        pattern = _re2_compile("^(?s:" + regex + ")$", _DEFAULT_MEM)
    except re2.error as err:
        detail = _detail(err)
        if detail != _TOO_LARGE:
            raise ValueError(f"invalid 'regex' {_q(regex)}: {detail}") from None
        try:  # a program over RE2's default budget that Go loads, e.g. \pL{1000}
            pattern = _re2_compile("^(?s:" + regex + ")$", _BIG_MEM)
        except re2.error as err:
            raise ValueError(f"invalid 'regex' {_q(regex)}: {_detail(err)}") from None
    refused = _go_refuses(regex)
    if refused is not None:
        raise ValueError(f"invalid 'regex' {_q(regex)}: {refused}")
    return pattern


def _re2_compile(anchored: str, max_mem: int) -> _Pattern:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller; RE2 would also log it
    options.max_mem = max_mem
    return cast(_Pattern, re2.compile(anchored, options))


def _detail(err: Exception) -> str:
    detail = err.args[0] if err.args else err
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)


def _go_refuses(regex: str) -> str | None:
    r"""What Go's ``regexp/syntax`` refuses in a regex RE2 has accepted, first one first.

    RE2 takes two things Go does not: ``\C`` (any byte) outside a character class (RE2
    refuses it inside one, as Go does), and a group name that is not ``[A-Za-z0-9_]+`` (Go's
    ``isValidCaptureName``, the same from 1.19 to 1.26; RE2 also takes Unicode letters, digits
    and marks). The scan follows the two parsers: an escape is a backslash and the character
    after it, ``\Q...\E`` is literal text (to the end when there is no ``\E``, as in Go), and a
    group opener inside ``[...]`` is only characters. RE2 accepted the regex: it is well formed.
    """
    end, at, in_class = len(regex), 0, False
    while at < end:
        char = regex[at]
        if char == "\\":
            escaped = regex[at + 1 : at + 2]
            if escaped == "C":
                return "invalid escape sequence: \\C (Go's regexp, which Prometheus uses, has none)"
            if escaped == "Q" and not in_class:  # RE2 refuses \Q inside a class, as Go does
                close = regex.find("\\E", at + 2)
                if close < 0:
                    return None
                at = close + 2
                continue
            at += 2
        elif in_class:
            if char == "]":
                in_class = False
            elif regex.startswith("[:", at) and (close := regex.find(":]", at + 2)) >= 0:
                at = close + 1  # [:alpha:]: its "]" does not close the class
            at += 1
        elif char == "[":
            at += 1
            at += regex.startswith("^", at)
            at += regex.startswith("]", at)  # a "]" first in a class is a literal
            in_class = True
        elif char == "(" and (regex.startswith("(?P<", at) or regex.startswith("(?<", at)):
            start = regex.index("<", at) + 1
            close = regex.find(">", start)
            name = regex[start:close]
            if close < 0 or not (name and all(c in _GROUP_NAME_CHARS for c in name)):
                opener = regex[at : close + 1] if close >= 0 else regex[at:]
                return (
                    f"invalid named capture group: {opener} "
                    "(Go's regexp, which Prometheus uses, takes only [A-Za-z0-9_] in a name)"
                )
            at = close + 1
        else:
            at += 1
    return None


class RelabelConfig(BaseModel):
    """One relabel rule with Prometheus' YAML keys, defaults and checks.

    Validation mirrors ``Config.UnmarshalYAML`` + ``Config.Validate`` (same order, same messages)
    so rules move between prometheus.yml and the relay unchanged; the YAML is read as Go's
    yaml.v2 reads it (config/yaml_text.py: an unquoted ``true`` as a replacement is the text
    ``true``, ``modulus: 1e3`` is 1000). ``modulus`` must be an integer, as in Prometheus
    (``"5"``, ``true`` and ``1:30`` are refused); a fraction, which yaml.v2 truncates, is
    refused. Known gap: an explicit ``regex: (.*)`` is allowed on keepequal/dropequal
    (Prometheus compares regex pointers).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    source_labels: tuple[str, ...] = ()
    separator: str = DEFAULT_SEPARATOR
    target_label: str = ""
    regex: str = DEFAULT_REGEX
    modulus: int = Field(default=0, ge=0, le=2**64 - 1)  # a Go uint64
    replacement: str = DEFAULT_REPLACEMENT
    action: Action = "replace"

    @model_validator(mode="before")
    @classmethod
    def _decode_like_yaml_v2(cls, data: Any) -> Any:
        """Nulls and action spelling, as Prometheus' YAML decoder treats them."""
        if not isinstance(data, Mapping):
            return data
        fields = dict(data)
        if "source_labels" in fields and fields["source_labels"] is None:
            del fields["source_labels"]
        for key, zero in _NULL_AS:
            if key in fields and fields[key] is None:
                fields[key] = zero
        if "action" in fields:
            raw = fields["action"]
            if raw is None:
                raise ValueError("relabel action cannot be empty")
            if isinstance(raw, str):
                if raw.lower() not in ACTIONS:
                    raise ValueError(f"unknown relabel action {_q(raw)}")
                fields["action"] = raw.lower()
        return fields

    @field_validator("source_labels")
    @classmethod
    def _check_source_labels(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _is_label_name(name):
                raise ValueError(f"{_q(name)} is not a valid label name")
        return names

    @field_validator("modulus", mode="before")
    @classmethod
    def _check_modulus(cls, value: Any) -> Any:
        """A YAML integer, as yaml.v2 decodes into Go's uint64: text and booleans are refused.

        yaml.v2 also takes a float, truncated (``5.5`` is 5); the relay takes a whole one
        (``5.0``) and refuses a fraction rather than guess that it was meant.
        """
        if isinstance(value, bool | BoolText):  # BoolText: the word as the YAML wrote it
            raise ValueError(f"'modulus' must be an integer, got the boolean {str(value).lower()}")
        if isinstance(value, str):
            raise ValueError(f"'modulus' must be an integer, got the string {_q(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                truncated = (
                    f" (Prometheus would truncate it to {int(value)})"
                    if math.isfinite(value)
                    else ""
                )
                raise ValueError(f"'modulus' must be an integer, got {value!r}{truncated}")
            return int(value)
        return value

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, regex: str) -> str:
        _compile(regex)
        return regex

    @model_validator(mode="after")
    def _validate(self) -> Self:
        """``Config.Validate``, check for check; the first failing one names the problem."""
        action, target, replacement = self.action, self.target_label, self.replacement
        if action == "hashmod" and self.modulus == 0:
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        if action in _NEEDS_TARGET and target == "":
            raise ValueError(
                f"relabel configuration for {action} action requires 'target_label' value"
            )
        invalid_target = f"{_q(target)} is invalid 'target_label' for {action} action"
        if action == "replace":
            templated = "$" in target
            if not (_RELABEL_TARGET.search(target) if templated else _is_label_name(target)):
                raise ValueError(invalid_target)
        if action in _FIXED_TARGET:
            if not _is_label_name(target):
                raise ValueError(invalid_target)
            if replacement != DEFAULT_REPLACEMENT:
                raise ValueError(f"'replacement' can not be set for {action} action")
        if action == "labelmap" and not _RELABEL_TARGET.search(replacement):
            raise ValueError(f"{_q(replacement)} is invalid 'replacement' for {action} action")
        if action == "hashmod" and not _is_label_name(target):
            raise ValueError(invalid_target)
        untouched = (
            self.modulus == 0
            and self.separator == DEFAULT_SEPARATOR
            and replacement == DEFAULT_REPLACEMENT
        )
        # Any regex written, "(.*)" too: Go compares the compiled pattern's pointer with the
        # default's, so only an absent regex passes.
        if action in ("keepequal", "dropequal") and not (
            untouched and "regex" not in self.model_fields_set
        ):
            raise ValueError(
                f"{action} action requires only 'source_labels' and `target_label`, "
                "and no other fields"
            )
        if action in ("labeldrop", "labelkeep") and (
            "source_labels" in self.model_fields_set or target != "" or not untouched
        ):
            raise ValueError(f"{action} action requires only 'regex', and no other fields")
        return self


class Step(NamedTuple):
    """One rule's effect, for ``rewrite --explain``; ``after`` is None when the rule dropped."""

    rule_index: int
    action: str
    before: Labels
    after: Labels | None


class _Whole:
    """The match of the default regex ``(.*)``: group 0 and group 1 are always the whole value.

    Skipping RE2 for it makes the commonest rules (copy or set a label) cost no regex call.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def group(self, index: int, /) -> str | None:
        return self._value

    def span(self, index: int = 0, /) -> tuple[int, int]:
        return 0, len(self._value)


class _Template:
    """A replacement template pre-parsed by ``regexp.Expand``'s rules.

    Parts are literals or group indexes; references to groups the regex lacks are dropped at
    parse time because Go expands them to nothing.
    """

    __slots__ = ("_parts", "literal")

    def __init__(self, template: str, pattern: _Pattern) -> None:
        parts: list[str | int] = []
        text: list[str] = []
        rest = template
        while True:
            before, dollar, rest = rest.partition("$")
            text.append(before)
            if not dollar:
                break
            if rest.startswith("$"):  # "$$" is a literal "$"
                text.append("$")
                rest = rest[1:]
                continue
            ref = _extract(rest)
            if ref is None:  # malformed: the "$" is kept as text
                text.append("$")
                continue
            name, num, rest = ref
            index = num if num >= 0 else pattern.groupindex.get(name, -1)
            if 0 <= index <= pattern.groups:
                parts.append("".join(text))
                parts.append(index)
                text = []
        parts.append("".join(text))
        self._parts = tuple(part for part in parts if part != "")
        self.literal: str | None = None
        if not any(isinstance(part, int) for part in self._parts):
            self.literal = "".join(part for part in self._parts if isinstance(part, str))

    def expand(self, match: _Match) -> str:
        if self.literal is not None:
            return self.literal
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in self._parts)


def _extract(text: str) -> tuple[str, int, str] | None:
    """Go's ``regexp.extract``: the ``name`` or ``{name}`` after a ``$``, and its number or -1."""
    brace = text.startswith("{")
    body = text[1:] if brace else text
    end = 0
    while end < len(body) and (body[end].isalpha() or body[end].isdecimal() or body[end] == "_"):
        end += 1  # unicode.IsLetter / unicode.IsDigit (Nd) / '_'
    if end == 0:
        return None
    name = body[:end]
    if brace:
        if end >= len(body) or body[end] != "}":
            return None
        end += 1
    num = 0
    for char in name:
        if char not in "0123456789" or num >= 100_000_000:
            num = -1
            break
        num = num * 10 + ord(char) - 48
    if name[0] == "0" and len(name) > 1:  # no leading zeros: "$01" is the group named "01"
        num = -1
    return name, num, body[end:]


def _replace_all(pattern: _Pattern, first: _Match, src: str, template: _Template) -> str:
    """Go's ``ReplaceAllString`` (what ``labelmap`` uses), continuing from its first match.

    An anchored match spans the whole name, so that is one expansion; the loop only runs for
    regexes whose own ``)`` breaks out of the anchors.
    """
    start, end = first.span(0)
    if start == 0 and end == len(src):
        return template.expand(first)
    out: list[str] = []
    last_end = pos = 0
    match: _Match | None = first
    while match is not None:
        start, end = match.span(0)
        out.append(src[last_end:start])
        if end > last_end or start == 0:  # no empty match right after the previous one
            out.append(template.expand(match))
        last_end = end
        pos = pos + 1 if pos + 1 > end else end
        match = pattern.search(src, pos) if pos <= len(src) else None
    out.append(src[last_end:])
    return "".join(out)


def go_lower(value: str) -> str:
    """``strings.ToLower``: per-rune simple mapping (``str.lower`` adds final sigma, "i̇")."""
    if value.isascii():
        return value.lower()
    # U+0130 is the only rune whose full lowercase is longer; its simple one is the first rune.
    return "".join(char.lower()[0] for char in value)


def go_upper(value: str) -> str:
    """``strings.ToUpper``: per-rune simple mapping, so "ß" stays "ß" rather than becoming "SS"."""
    if value.isascii():
        return value.upper()
    out: list[str] = []
    for char in value:
        upper = char.upper()
        if len(upper) != 1:  # only a special casing; the simple mapping, if any, is the title
            title = char.title()
            upper = title if len(title) == 1 else char
        out.append(upper)
    return "".join(out)


class _Builder:
    """``labels.Builder``: base labels plus ordered additions and deletions.

    Kept structurally identical because ``Range`` order (untouched base labels, then additions in
    insertion order) is observable through ``labelmap`` collisions.
    """

    __slots__ = ("_add", "_base", "_base_map", "_del")

    def __init__(self, base: Labels) -> None:
        self._base = base
        self._base_map = dict(base)
        self._add: dict[str, str] = {}
        self._del = {name for name, value in base if value == ""}

    def get(self, name: str) -> str:
        value = self._add.get(name)
        if value is not None:
            return value
        return "" if name in self._del else self._base_map.get(name, "")

    def set(self, name: str, value: str) -> None:
        if value == "":
            self.delete(name)
        else:
            self._add[name] = value

    def delete(self, name: str) -> None:
        self._add.pop(name, None)
        self._del.add(name)

    def snapshot(self) -> list[tuple[str, str]]:
        add, deleted = self._add, self._del
        out = [(n, v) for n, v in self._base if n not in deleted and n not in add]
        out.extend(add.items())
        return out

    def labels(self) -> Labels:
        if not self._add and not self._del:
            return self._base
        return tuple(sorted(self.snapshot()))


def _memoize(memo: Bounded[str, _T], key: str, compute: Callable[[str], _T]) -> _T:
    """Look up or compute a pure function of one string, keeping at most ``memo.limit`` results.

    Label names, metric names and most label values repeat from series to series, and an RE2 call
    through its Python wrapper costs microseconds; a full memo drops its oldest slice (never
    the whole), so a high-cardinality value costs one dict miss and never unbounded memory.
    """
    entries = memo.entries
    try:
        return entries[key]
    except KeyError:
        pass
    result = compute(key)
    if len(entries) >= memo.limit:
        memo.make_room()
    entries[key] = result
    return result


class _Rule:
    """A RelabelConfig with its regex compiled and templates parsed, so ``run`` does no setup.

    The memos hold only pure functions of their key, so they never change what a rule does.
    """

    __slots__ = (
        "_matches",
        "_renames",
        "_rewrites",
        "action",
        "modulus",
        "name",
        "pattern",
        "regex",
        "replacement",
        "sep",
        "sources",
        "target",
        "whole",
    )

    def __init__(self, config: RelabelConfig) -> None:
        self.action = config.action
        self.sources = config.source_labels
        self.sep = config.separator
        self.modulus = config.modulus
        self.regex = config.regex  # as written (the pattern adds Prometheus' anchors)
        self.pattern = _compile(config.regex)
        self.whole = config.regex == DEFAULT_REGEX
        self.name = config.target_label  # the actions other than replace take it verbatim
        self.target = _Template(config.target_label, self.pattern)
        self.replacement = _Template(config.replacement, self.pattern)
        self._matches: Bounded[str, bool] = MEMOS.new()
        self._rewrites: Bounded[str, tuple[str, str] | None] = MEMOS.new()
        self._renames: Bounded[str, str | None] = MEMOS.new()

    def _search(self, value: str) -> _Match | None:
        return _Whole(value) if self.whole else self.pattern.search(value)

    def _match(self, value: str) -> bool:
        return self._search(value) is not None

    def _rewrite(self, value: str) -> tuple[str, str] | None:
        """replace's (target, value) for a source value; None when nothing is written."""
        match = self._search(value)
        if match is None:
            return None
        target = self.target.expand(match)
        if not _is_label_name(target):
            return None
        return target, self.replacement.expand(match)

    def _rename(self, name: str) -> str | None:
        """labelmap's new name for a label name (not validated, as in Prometheus)."""
        match = self._search(name)
        return None if match is None else _replace_all(self.pattern, match, name, self.replacement)

    def matches(self, value: str) -> bool:
        return True if self.whole else _memoize(self._matches, value, self._match)

    def rewrite(self, value: str) -> tuple[str, str] | None:
        """replace's (target, value) for a source value (None: nothing is written)."""
        return self._rewrite(value)

    def rename(self, name: str) -> str | None:
        """labelmap's new name for a label name (None: the label is not mapped)."""
        return self._rename(name)

    def run(self, lb: _Builder) -> bool:
        """One rule, as ``relabel()`` in relabel.go; False means the series is dropped."""
        action = self.action
        value = self.sep.join([lb.get(name) for name in self.sources])
        if action == "replace":
            if self.whole:  # no regex call to save
                rewrite = self._rewrite(value)
            else:
                rewrite = _memoize(self._rewrites, value, self._rewrite)
            if rewrite is not None:
                lb.set(*rewrite)  # an empty value deletes the label
        elif action == "keep":
            return self.matches(value)
        elif action == "drop":
            return not self.matches(value)
        elif action == "keepequal":
            return lb.get(self.name) == value
        elif action == "dropequal":
            return lb.get(self.name) != value
        elif action == "hashmod":
            digest = hashlib.md5(value.encode("utf-8"), usedforsecurity=False).digest()
            shard = int.from_bytes(digest[8:], "big") % self.modulus
            lb.set(self.name, str(shard))
        elif action == "lowercase":
            lb.set(self.name, go_lower(value))
        elif action == "uppercase":
            lb.set(self.name, go_upper(value))
        elif action == "labelmap":
            for name, label_value in lb.snapshot():
                new_name = _memoize(self._renames, name, self._rename)
                if new_name is not None:
                    lb.set(new_name, label_value)
        else:  # labeldrop / labelkeep
            keep_matching = action == "labelkeep"
            for name, _ in lb.snapshot():
                if self.matches(name) != keep_matching:
                    lb.delete(name)
        return True


class RuleSet:
    """Compiled rules applied in order; an empty set is falsy and returns its input untouched."""

    __slots__ = ("_rules",)

    def __init__(self, configs: Sequence[RelabelConfig] = ()) -> None:
        self._rules = tuple(_Rule(config) for config in configs)

    def __len__(self) -> int:
        return len(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __repr__(self) -> str:
        return f"RuleSet({[rule.action for rule in self._rules]})"

    def compiled(self) -> tuple[_Rule, ...]:
        """The compiled rules, for ``routing``'s compiled twin (which calls their functions)."""
        return self._rules

    def apply(self, labels: Labels, keep_nameless: bool = False) -> Labels | None:
        """The relabeled, sorted labels, or None when a rule (or a missing name) drops the series.

        Unchanged labels come back as the same object, so callers can detect "no change" cheaply.
        ``keep_nameless``: a set the rules left without ``__name__`` comes back as it is, for a
        caller that refuses it (a scrape fails on it, as Prometheus' does).
        """
        if not self._rules:
            return labels
        lb = _Builder(labels)
        for rule in self._rules:
            if not rule.run(lb):
                return None
        if lb.get("__name__") == "" and not keep_nameless:
            return None
        return lb.labels()

    def explain(self, labels: Labels) -> list[Step]:
        """Every rule's before/after, ending like ``apply``.

        The last step's ``after`` always equals ``apply(labels)`` (for a non-empty set): when the
        rules leave no ``__name__``, a final step with ``rule_index == len(self)`` and action
        ``NAMELESS`` records the relay's own drop.
        """
        steps: list[Step] = []
        if not self._rules:
            return steps
        lb = _Builder(labels)
        before = lb.labels()
        for index, rule in enumerate(self._rules):
            if not rule.run(lb):
                steps.append(Step(index, rule.action, before, None))
                return steps
            after = lb.labels()
            steps.append(Step(index, rule.action, before, after))
            before = after
        if lb.get("__name__") == "":
            steps.append(Step(len(self._rules), NAMELESS, before, None))
        return steps


def compile_rules(configs: Sequence[RelabelConfig]) -> RuleSet:
    """Compile once at config load; ``RuleSet.apply`` then runs with no per-call setup."""
    return RuleSet(configs)
