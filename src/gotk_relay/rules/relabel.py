"""Prometheus relabeling (``relabel_configs`` / ``write_relabel_configs``), bug for bug.

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
  receiver accepts (Prometheus 3 run with ``metric_name_validation_scheme: legacy``).

The relay adds one rule Prometheus leaves to its callers: a series left without ``__name__`` is
dropped, because remote write cannot carry it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple, Protocol, Self, TypeVar, cast, get_args

import re2  # type: ignore[import-untyped, unused-ignore]  # no stubs; pyproject may ignore
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gotk_relay import caches
from gotk_relay.caches import Bounded
from gotk_relay.model import Labels

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
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller; RE2 would also log it
    try:
        return cast(_Pattern, re2.compile("^(?s:" + regex + ")$", options))
    except re2.error as err:
        detail = err.args[0] if err.args else err
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(f"invalid 'regex' {_q(regex)}: {detail}") from None


class RelabelConfig(BaseModel):
    """One relabel rule with Prometheus' YAML keys, defaults and checks.

    Validation mirrors ``Config.UnmarshalYAML`` + ``Config.Validate`` (same order, same messages)
    so rules move between prometheus.yml and the relay unchanged. Known gaps: PyYAML turns
    ``yes``/``true`` into booleans (rejected here, read as text by Go), and an explicit
    ``regex: (.*)`` is allowed on keepequal/dropequal (Prometheus compares regex pointers).
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
        if action in ("keepequal", "dropequal") and not (untouched and self.regex == DEFAULT_REGEX):
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
