"""Routing: relabel rules, shards and tenants applied to a request's bytes.

Between the receiver and the queues, each destination needs its own view of a request: its
``write_relabel_configs`` applied, its series spread over its shards by a stable hash, and with
tenant routing, split by tenant. The global ``relabel_configs`` are the same step with one
shard. A ``Router`` does it for one such view on the *encoded* request (an uncompressed remote
write 1.0 WriteRequest, validated by the receiver): a series no rule changes is copied as it
came, a relabeled one is re-encoded with its new labels and its samples, exemplars and
histograms copied as they came. No Python object is made per series.

Two implementations, one interface (``Router.route``), switched in one place (``route =``
below, by ``NATIVE``); the tests run both by name:

* ``_route.c`` walks the request once and runs the rules over a compact label builder; every
  string function a rule needs (RE2 matches and replacements, hashmod, case mappings) is the
  reference's own, called through a bounded memo per rule, so the rules cannot drift apart;
* ``route_reference`` decodes the request into ``model`` objects and runs ``rules.relabel``,
  ``pipeline.split_by_tenant`` and ``split_by_shard``: the straightforward reference the tests
  compare with, and the path taken where the extension was not built.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import native
from ..config import TenantConfig
from ..model import Batch, Labels, Series, newest_timestamp
from ..pipeline import relabel_batch, split_by_tenant
from ..rules.relabel import RelabelConfig, RuleSet, compile_rules, go_lower, go_upper
from ..wire import rw1
from ..wire.errors import DecodeError

_PARTS = ("_bucket", "_count", "_sum")
_PART_LABELS = frozenset(("le", "quantile"))


def shard_key(labels: Labels) -> int:
    """Which shard a series belongs to, the same in every process and across restarts.

    Python's ``hash()`` of strings changes with each process, so a restarted relay would put a
    series' new samples on another shard than its spooled backlog and send them concurrently,
    out of order. The parts of one classic histogram or summary (``_bucket{le}``, ``_sum``,
    ``_count``, ``{quantile}``) share a key, so destinations that reassemble them (OTLP) get
    them in one request. ``_route.c`` computes the same key.
    """
    crc = 0
    for name, value in labels:
        if name in _PART_LABELS:
            continue
        if name == "__name__":
            for suffix in _PARTS:
                if value.endswith(suffix):
                    value = value[: -len(suffix)]
                    break
        crc = zlib.crc32(value.encode(), zlib.crc32(name.encode(), crc))
    return crc


def split_by_shard(batch: Batch, shards: int) -> list[Batch]:
    """One batch per shard (empty ones included); metadata travels with shard 0."""
    if shards == 1:
        return [batch]
    buckets: list[list[Series]] = [[] for _ in range(shards)]
    for series in batch.series:
        buckets[shard_key(series.labels) % shards].append(series)
    out = [Batch(tuple(b), ()) for b in buckets]
    out[0] = Batch(out[0].series, batch.metadata)
    return out


_native: Any = native.load(f"{__package__}._route")
NATIVE = _native is not None


class Group(NamedTuple):
    """What one (tenant, shard) of a destination gets from a request."""

    tenant: str  # "" without tenant routing
    shard: int
    # A WriteRequest: the series in request order, then the metadata; its snappy block when the
    # route was given a compressor (``Routed.compressed``), else uncompressed.
    body: bytes
    points: int  # samples + histograms
    newest_ms: int  # newest timestamp of each series' last sample/histogram (0 if none)
    series: int


class Routed(NamedTuple):
    """A request as one destination (or the global rules) sees it."""

    groups: tuple[Group, ...] | None  # None: unchanged, the request itself is its one group
    dropped: int = 0  # points of series the rules dropped
    orphaned: int = 0  # points of series without a tenant (tenant routing, no default)
    compressed: bool = False  # each group's body is a snappy block


_KINDS = {
    "replace": 0,
    "keep": 1,
    "drop": 2,
    "keepequal": 3,
    "dropequal": 4,
    "hashmod": 5,
    "labelmap": 6,
    "labeldrop": 7,
    "labelkeep": 8,
    "lowercase": 9,
    "uppercase": 10,
}


_METACHARACTERS = frozenset("\\.+*?()[]{}|^$")


def literal_form(regex: str) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
    """A regex that is an alternation of literals, each maybe followed by ``.*`` (as rules by
    name are written: ``gotk_.*``, ``go_gc_.*|up``), as (exact values, prefixes); None for any
    other. Prometheus anchors a rule's regex and lets ``.`` match a newline (``^(?s:re)$``), so
    such a regex matches exactly the values equal to one literal or starting with a prefix:
    ``_route.c`` tests those instead of calling the regex (through its memo) per series."""
    exact: list[bytes] = []
    prefixes: list[bytes] = []
    for alternative in regex.split("|"):
        literal, wildcard = alternative, False
        if alternative.endswith(".*"):
            literal, wildcard = alternative[:-2], True
        if any(c in _METACHARACTERS for c in literal):
            return None
        (prefixes if wildcard else exact).append(literal.encode())
    if len(exact) + len(prefixes) > 16:  # a long list: the memo is as fast
        return None
    return tuple(exact), tuple(prefixes)


def _text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:  # only reachable with receiver.validation: framing
        raise DecodeError(f"a label is not valid UTF-8: {value[:64]!r}") from None


def _callback(rule: Any) -> Callable[[bytes], object]:
    """The pure string function ``_route.c`` memoizes for one compiled rule (``_Rule``)."""
    action = rule.action
    if action == "replace":

        def rewrite(value: bytes) -> tuple[bytes, bytes] | None:
            result = rule.rewrite(_text(value))
            return None if result is None else (result[0].encode(), result[1].encode())

        return rewrite
    if action in ("keep", "drop", "labeldrop", "labelkeep"):
        return lambda value: rule.matches(_text(value))
    if action == "hashmod":

        def hashmod(value: bytes) -> bytes:
            digest = hashlib.md5(value, usedforsecurity=False).digest()
            return str(int.from_bytes(digest[8:], "big") % rule.modulus).encode()

        return hashmod
    if action == "lowercase":
        return lambda value: go_lower(_text(value)).encode()
    if action == "uppercase":
        return lambda value: go_upper(_text(value)).encode()
    if action == "labelmap":

        def rename(name: bytes) -> bytes | None:
            new = rule.rename(_text(name))
            return None if new is None else new.encode()

        return rename
    return lambda value: None  # keepequal / dropequal compare in C and call nothing


class Router:
    """One destination's view of requests (or the global rules'): rules, shards, tenants."""

    def __init__(
        self,
        rules: Sequence[RelabelConfig] | RuleSet = (),
        shards: int = 1,
        tenant: TenantConfig | None = None,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else compile_rules(rules)
        self.shards = max(1, shards)
        self.tenant = tenant
        # Per rule: (kind, source names, separator, target, memo, function, literal form); the
        # memos (hash tables in _route.c, by the bytes a function was called with) live as long
        # as the router (one configuration) and are bounded there; a keep or drop rule whose
        # regex is literals (literal_form) is decided without them. The reference reads none
        # of this.
        self._program: tuple[tuple[object, ...], ...] = tuple(
            (
                _KINDS[rule.action],
                tuple(name.encode() for name in rule.sources),
                rule.sep.encode(),
                rule.name.encode(),
                _native.memo() if NATIVE else None,
                _callback(rule),
                literal_form(rule.regex) if rule.action in ("keep", "drop") else None,
            )
            for rule in self.rules.compiled()
        )
        self._tenant_args = (
            (tenant.label.encode(), tenant.default.encode(), tenant.keep_label)
            if tenant is not None
            else (None, b"", False)
        )

    @property
    def name_only(self) -> bool:
        """Whether this view only keeps or drops series by their metric name (one shard, no
        tenants): the survey's series table then routes it (``route_compiled``)."""
        return (
            bool(self.rules)
            and self.shards == 1
            and self.tenant is None
            and all(
                rule.action in ("keep", "drop") and tuple(rule.sources) == ("__name__",)
                for rule in self.rules.compiled()
            )
        )

    @property
    def keeps_names(self) -> bool:
        """Whether no rule can give a series a metric name it did not have: then the series
        a request's rules leave with a name the relay watches are its watched series routed
        (keep and drop actions may remove them, a rule may remove ``__name__`` and so the
        series). A ``target_label`` with ``$`` may expand to ``__name__``, ``labelmap`` may map
        a label onto it."""
        for rule in self.rules.compiled():
            if rule.action == "labelmap":
                return False
            if rule.action in ("replace", "hashmod", "lowercase", "uppercase") and (
                rule.name == "__name__" or "$" in rule.name
            ):
                return False
        return True

    @property
    def trivial(self) -> bool:
        """Whether every request comes out as it came (no rules, one shard, no tenants)."""
        return not self.rules and self.shards == 1 and self.tenant is None

    def route_compiled(
        self,
        raw: bytes,
        presorted: bool = False,
        points: int = -1,
        table: bytes = b"",
        compress: Callable[[memoryview], bytes] | None = None,
    ) -> Routed:
        """``raw`` as this view sees it, walked in C (``_route.c``). ``presorted``: every label
        set of ``raw`` is sorted by name (strict validation sorts them), so the walk need not
        check. ``points``: ``raw``'s samples and histograms when known (the survey counted
        them): rules that keep or drop by name then leave a dropped series at its name.
        ``table``: the survey's series table of ``raw`` (``rw1_bytes.Survey.table``): with it
        and ``points``, rules on the name alone (``name_only``) read no label at all.
        ``compress``: a snappy compressor (``wire.snappy.compress``): each body comes as the
        block it makes of it, compressed 64 KiB at a time as the walk fills it (still in
        cache), not after."""
        if self.trivial:
            return Routed(None)
        found = _native.route(
            raw, self._program, self.shards, *self._tenant_args, presorted, points, table, compress
        )
        if found is None:
            return Routed(None)
        groups, dropped, orphaned = found
        return Routed(
            tuple(Group(t.decode(), *rest) for t, *rest in groups),
            dropped,
            orphaned,
            compress is not None,
        )

    def route_reference(
        self,
        raw: bytes,
        presorted: bool = False,
        points: int = -1,
        table: bytes = b"",
        compress: Callable[[memoryview], bytes] | None = None,
    ) -> Routed:
        """The same by decoding: ``model`` objects, ``RuleSet.apply``, the batch splitters
        (``presorted``, ``points`` and ``table`` are not needed: the decoder reads label sets in
        any order and counts every series), each body compressed after it is encoded."""
        batch = rw1.decode(raw, validate=False)
        out = relabel_batch(self.rules, batch)
        dropped = batch.point_count - out.point_count
        if out is batch and self.shards == 1 and self.tenant is None:
            return Routed(None)
        orphaned = 0
        parts: list[tuple[str, Batch]] = [("", out)]
        if self.tenant is not None:
            by_tenant, orphaned = split_by_tenant(out, self.tenant)
            parts = sorted(by_tenant.items())
        groups: list[Group] = []
        for tenant, part in parts:
            for shard, piece in enumerate(split_by_shard(part, self.shards)):
                if piece.series or piece.metadata:
                    body = rw1.encode(piece)
                    groups.append(
                        Group(
                            tenant,
                            shard,
                            compress(memoryview(body)) if compress else body,
                            piece.point_count,
                            newest_timestamp(piece),
                            len(piece.series),
                        )
                    )
        return Routed(tuple(groups), dropped, orphaned, compress is not None)

    # The one switch between the two (see the module docstring); tests call both by name.
    route = route_compiled if NATIVE else route_reference
