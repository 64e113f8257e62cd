"""Rewriting the queries of whole files, pure: text in, text and a per-query report out.

Formats: Grafana dashboard JSON (the HTTP API's ``{"dashboard": ...}`` wrapper and library panel
exports included), Prometheus rule files and ``PrometheusRule`` manifests (YAML, several
documents), and plain ``.promql`` files.

Nothing is re-serialized: each query string's exact span in the source text is found with the
parsers' own positions, and only that span is replaced, encoded the way it was (a JSON string
literal; a YAML scalar in its style, or the nearest style that can hold the new text). So every
byte that is not a rewritten query (key order, indentation, comments, other documents) stays.
After splicing, the result is parsed again and every query is checked to hold exactly the new
text; a mismatch is a bug and raises, never a silently different file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import yaml

from .rewrite import Migrated, NotMigratable

# (query text, is a Grafana template-variable query) -> the migration; raises NotMigratable when
# there is no exact counterpart, ValueError when the text does not parse.
Rewrite = Callable[[str, bool], Migrated]


class FileFormat(StrEnum):
    GRAFANA = "grafana"
    RULES = "rules"  # rule files and PrometheusRule manifests
    PROMQL = "promql"


class Status(StrEnum):
    MIGRATED = "migrated"
    UNCHANGED = "unchanged"
    NOT_MIGRATABLE = "not migratable"
    INVALID = "invalid"  # the query does not parse


class FileFormatError(ValueError):
    """The file is not valid JSON/YAML, or not one of the formats handled."""


@dataclass(frozen=True)
class Query:
    """One query of a file: where it is and what it says (the decoded string, whitespace
    around it included)."""

    location: str  # e.g. 'panel "Ready" target A', 'group "flux" alert "ReconciliationFailure"'
    line: int  # 1-based line of the query's start in the file
    text: str
    template: bool  # a Grafana template-variable query (label_values(...), query_result(...))
    last_line: int = 0  # its last line in the file (a YAML block scalar, a .promql expression)
    # False when the query may be another language (a Grafana datasource known by name only):
    # then text that does not parse as PromQL is left unchanged, reported, not an error.
    strict: bool = True


@dataclass(frozen=True)
class QueryReport:
    query: Query
    status: Status
    migrated: str  # the original when not migrated
    reason: str = ""  # why not migratable / invalid; the rewrite's notes when migrated

    @property
    def location(self) -> str:
        return self.query.location

    @property
    def line(self) -> int:
        return self.query.line

    @property
    def original(self) -> str:
        return self.query.text


@dataclass(frozen=True)
class FileResult:
    format: FileFormat
    text: str
    queries: tuple[QueryReport, ...]

    @property
    def changed(self) -> bool:
        return any(q.status is Status.MIGRATED for q in self.queries)


# --------------------------------------------------------------------------------------------
# Detection


def detect_format(name: str, text: str) -> FileFormat:
    """By extension (``.json``, ``.yaml``/``.yml``, ``.promql``), else by content."""
    lower = name.lower()
    if lower.endswith(".json"):
        return FileFormat.GRAFANA
    if lower.endswith((".yaml", ".yml")):
        return FileFormat.RULES
    if lower.endswith(".promql"):
        return FileFormat.PROMQL
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        return FileFormat.GRAFANA
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return FileFormat.PROMQL
    if any(isinstance(doc, yaml.MappingNode) for doc in docs):
        return FileFormat.RULES
    return FileFormat.PROMQL


# --------------------------------------------------------------------------------------------
# Sites: a query plus how to write a new value back in its place


@dataclass
class _Site:
    query: Query
    start: int  # span of the encoded value in the source text
    end: int
    encode: Callable[[str], str]  # new decoded value -> its encoding for [start, end)
    fallback: Callable[[str], str] | None = None  # a plainer style, when encode's reparses wrong
    extra: list[_Site] = field(default_factory=list)  # spans that mirror this one (definition)
    # A YAML block scalar's whole node (header and content): the span its fallbacks replace.
    node_span: tuple[int, int] | None = None


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


# --------------------------------------------------------------------------------------------
# JSON
#
# Positions come from a walk that uses the json module's own pieces: json.loads first (its
# errors, with line and column, are the ones users know), then a small recursive descent whose
# strings are decoded by json.decoder.scanstring and scalars by JSONDecoder.raw_decode, so every
# value equals what json.loads returns. No extra dependency for what is ~40 lines, and no third
# party JSON parser whose string decoding might differ from the json module's.


@dataclass
class _J:
    value: Any  # dict[str, _J] | list[_J] | str | int | float | bool | None
    start: int
    end: int


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _jparse(text: str) -> _J:
    def skip(i: int) -> int:
        m = _WS.match(text, i)
        return m.end() if m else i

    def node(i: int) -> _J:
        i = skip(i)
        ch = text[i]
        if ch == '"':
            value, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            return _J(value, i, end)
        if ch == "{":
            obj: dict[str, _J] = {}
            j = skip(i + 1)
            if text[j] == "}":
                return _J(obj, i, j + 1)
            while True:
                key, j = json.decoder.scanstring(text, skip(j) + 1)  # type: ignore[attr-defined]
                j = skip(j) + 1  # the ':'
                child = node(j)
                obj[key] = child  # the last duplicate wins, as in json.loads
                j = skip(child.end)
                if text[j] == "}":
                    return _J(obj, i, j + 1)
                j += 1  # the ','
        if ch == "[":
            items: list[_J] = []
            j = skip(i + 1)
            if text[j] == "]":
                return _J(items, i, j + 1)
            while True:
                child = node(j)
                items.append(child)
                j = skip(child.end)
                if text[j] == "]":
                    return _J(items, i, j + 1)
                j += 1
        value, end = _DECODER.raw_decode(text, i)
        return _J(value, i, end)

    return node(0)


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def encode_json_string(value: str, original: str) -> str:
    """``value`` as a JSON string literal, in the manner of ``original`` (the literal it
    replaces): ASCII-only when that one escaped non-ASCII, ``<``/``>``/``&`` escaped as Go's
    encoder does when that one did, else as Grafana's own export writes strings."""
    ascii_only = original.isascii() and not json.loads(original).isascii()
    out = json.dumps(value, ensure_ascii=ascii_only)
    if re.search(r"\\u00(3[ce]|26)", original, re.IGNORECASE):
        upper = "\\u003E" in original or "\\u003C" in original or "\\u0026" in original
        for ch, esc in _HTML_ESCAPES.items():
            out = out.replace(ch, esc.upper().replace("\\U", "\\u") if upper else esc)
    return out


def _json_site(text: str, node: _J, location: str, template: bool, strict: bool = True) -> _Site:
    original = text[node.start : node.end]
    line = _line_of(text, node.start)
    return _Site(
        Query(location, line, node.value, template, line, strict),
        node.start,
        node.end,
        lambda new: encode_json_string(new, original),
    )


def _jget(node: _J | None, key: str) -> _J | None:
    if node is not None and isinstance(node.value, dict):
        child: _J | None = node.value.get(key)
        return child
    return None


def _jstr(node: _J | None, key: str) -> str | None:
    child = _jget(node, key)
    return child.value if child is not None and isinstance(child.value, str) else None


def _jlist(node: _J | None, key: str) -> list[_J]:
    child = _jget(node, key)
    if child is not None and isinstance(child.value, list):
        return [c for c in child.value if isinstance(c.value, dict)]
    return []


_NOT_PROMETHEUS_NAMES = frozenset({"-- Grafana --", "-- Dashboard --", "grafana", "dashboard"})
_MIXED = "-- Mixed --"


class _Datasources:
    """Which datasource a query goes to, as far as the file says: a reference's ``type``, the
    dashboard's ``__inputs`` (``${DS_X}`` with its pluginId), datasource variables (``$ds``
    whose ``query`` names the plugin). No reference (the default datasource) counts as
    Prometheus; a bare name that nothing resolves is 'unknown': its query is migrated when it
    parses as PromQL and otherwise left as is, with the reason in the report."""

    def __init__(self, root: _J, dashboard: _J) -> None:
        self.plugin_of: dict[str, str] = {}
        for item in _jlist(root, "__inputs"):
            name, plugin = _jstr(item, "name"), _jstr(item, "pluginId")
            if name and plugin:
                self.plugin_of[name] = plugin
        for var in _jlist(_jget(dashboard, "templating"), "list"):
            name, plugin = _jstr(var, "name"), _jstr(var, "query")
            if _jstr(var, "type") == "datasource" and name and plugin:
                self.plugin_of[name] = plugin

    def _plugin(self, ref: str) -> str | None:
        name = ref
        for prefix, suffix in (("${", "}"), ("$", ""), ("[[", "]]")):
            if ref.startswith(prefix) and ref.endswith(suffix):
                name = ref[len(prefix) : len(ref) - len(suffix)]
                break
        return self.plugin_of.get(name)

    def kind(self, ref: _J | None) -> str:
        """'prometheus', 'mixed' (decided per target), 'other', or 'unknown' (a name only
        Grafana can resolve: its queries are migrated when they parse as PromQL)."""
        if ref is None or ref.value is None:
            return "prometheus"
        value = ref.value
        if isinstance(value, dict):
            uid, dtype = _jstr(ref, "uid"), _jstr(ref, "type")
            if uid == _MIXED:
                return "mixed"
            if dtype == "datasource":  # Grafana's built-in ones: -- Grafana --, -- Dashboard --
                return "other"
            if dtype is not None:
                plugin = self._plugin(dtype) if dtype.startswith(("$", "[[")) else dtype
                return "prometheus" if plugin in (None, "prometheus") else "other"
            return self._by_name(uid or "")
        if isinstance(value, str):
            if value == _MIXED:
                return "mixed"
            return self._by_name(value)
        return "prometheus"

    def _by_name(self, name: str) -> str:
        if name in _NOT_PROMETHEUS_NAMES:
            return "other"
        plugin = self._plugin(name)
        if plugin is None:
            # A datasource's name as configured in Grafana: its type is not in the file.
            return "prometheus" if name.lower().startswith("prometheus") else "unknown"
        return "prometheus" if plugin == "prometheus" else "other"


def _title(node: _J, fallback: str) -> str:
    title = _jstr(node, "title")
    return f'"{title}"' if title else fallback


def _grafana_sites(text: str, root: _J) -> list[_Site]:
    if not isinstance(root.value, dict):
        raise FileFormatError("not a Grafana dashboard: the JSON is not an object")
    sites: list[_Site] = []
    wrapped = _jget(root, "dashboard")
    dashboard = wrapped if wrapped is not None and isinstance(wrapped.value, dict) else root
    # A library panel export: the element itself, or the API's {"result": element}.
    result = _jget(root, "result")
    element = result if result is not None and isinstance(result.value, dict) else root
    model = _jget(element, "model")
    is_library = model is not None and isinstance(model.value, dict) and wrapped is None
    keys = dashboard.value.keys()
    if not is_library and not keys & {"panels", "rows", "templating", "annotations", "title"}:
        raise FileFormatError(
            "not a Grafana dashboard: no panels, rows, templating or title "
            "(nor a library panel's model)"
        )
    ds = _Datasources(root, dashboard)

    def panel(node: _J, where: str, inherited: _J | None) -> None:
        name = f"{where}panel {_title(node, '(untitled)')}"
        if _jstr(node, "type") == "row":
            for child in _jlist(node, "panels"):  # a collapsed row keeps its panels here
                panel(child, f"row {_title(node, '(untitled)')} / ", None)
            return
        own = _jget(node, "datasource")
        panel_ds = own if own is not None else inherited
        panel_kind = ds.kind(panel_ds)
        for i, target in enumerate(_jlist(node, "targets")):
            target_ds = _jget(target, "datasource")
            kind = panel_kind
            if target_ds is not None and target_ds.value is not None:
                kind = ds.kind(target_ds)
            if kind not in ("prometheus", "unknown"):
                continue
            expr = _jget(target, "expr")
            if expr is None or not isinstance(expr.value, str) or not expr.value.strip():
                continue
            ref = _jstr(target, "refId") or str(i)
            where = f"{name} target {ref}"
            sites.append(_json_site(text, expr, where, False, kind == "prometheus"))
        for child in _jlist(node, "panels"):
            panel(child, f"{name} / ", panel_ds)

    if is_library:
        assert model is not None
        panel(model, "library ", None)
    for node in _jlist(dashboard, "panels"):
        panel(node, "", None)
    for row in _jlist(dashboard, "rows"):  # the schema before Grafana 5
        for node in _jlist(row, "panels"):
            panel(node, f"row {_title(row, '(untitled)')} / ", None)
    elements = _jget(root, "__elements")  # library panels inside an export for sharing
    if elements is not None and isinstance(elements.value, dict):
        for element_node in elements.value.values():
            inner = _jget(element_node, "model")
            if inner is not None and isinstance(inner.value, dict):
                panel(inner, "library ", None)
    for ann in _jlist(_jget(dashboard, "annotations"), "list"):
        expr = _jget(ann, "expr")
        kind = ds.kind(_jget(ann, "datasource"))
        if kind not in ("prometheus", "unknown") or expr is None:
            continue
        if isinstance(expr.value, str) and expr.value.strip():
            label = f'annotation "{_jstr(ann, "name") or "(unnamed)"}"'
            sites.append(_json_site(text, expr, label, False, kind == "prometheus"))
    for var in _jlist(_jget(dashboard, "templating"), "list"):
        kind = ds.kind(_jget(var, "datasource"))
        if _jstr(var, "type") != "query" or kind not in ("prometheus", "unknown"):
            continue
        strict = kind == "prometheus"
        label = f'variable "{_jstr(var, "name") or "(unnamed)"}"'
        query = _jget(var, "query")
        if query is not None and isinstance(query.value, dict):
            query = _jget(query, "query")  # {"query": "...", "refId": ...} (Grafana 10+)
        if query is None or not isinstance(query.value, str) or not query.value.strip():
            continue
        site = _json_site(text, query, label, True, strict)
        definition = _jget(var, "definition")
        if definition is not None and isinstance(definition.value, str):
            if definition.value == query.value:
                site.extra.append(_json_site(text, definition, label, True, strict))
            elif definition.value.strip():
                # A definition that drifted from its query is migrated on its own: Grafana
                # shows it, so it must not keep reading the old metrics either.
                sites.append(_json_site(text, definition, f"{label} definition", True, strict))
        sites.append(site)
    return sites


# --------------------------------------------------------------------------------------------
# YAML

_YAML_BREAKS = "\x85\u2028\u2029"


def _yaml_printable(ch: str) -> bool:
    o = ord(ch)
    return (
        ch in "\t\n"
        or 0x20 <= o <= 0x7E
        or (0xA0 <= o <= 0xFFFD and not 0xD800 <= o <= 0xDFFF and ch not in "\u2028\u2029\ufeff")
        or o >= 0x10000
    )


def yaml_double_quoted(value: str) -> str:
    """``value`` as a single-line YAML double-quoted scalar (exact for any string)."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not _yaml_printable(ch) or ch in _YAML_BREAKS:
            o = ord(ch)
            out.append(
                f"\\x{o:02X}" if o <= 0xFF else f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}"
            )
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def yaml_single_quoted(value: str) -> str | None:
    if "\n" in value or "\r" in value or not all(_yaml_printable(c) for c in value):
        return None
    if value.startswith(" ") or value.endswith(" ") or "\t" in value:
        return None  # kept exactly only double-quoted (folding trims them at line ends)
    return "'" + value.replace("'", "''") + "'"


def yaml_plain(value: str) -> str | None:
    """``value`` as a plain scalar when one can hold it (it must read back as this very
    string: not a number, not a comment, no indicator at its start)."""
    if not value or value != value.strip() or "\n" in value or "\r" in value:
        return None
    if not all(_yaml_printable(c) for c in value) or "\t" in value:
        return None
    try:
        back = yaml.safe_load("k: " + value + "\n")
    except yaml.YAMLError:
        return None
    return value if back == {"k": value} else None


def _newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _block_span(text: str, node: yaml.ScalarNode, start: int) -> tuple[int, int, int, str]:
    """A block scalar's header end (just after its line break), the end of its last non-blank
    content line, the content's indentation, and the header itself (from ``start``)."""
    header_end = text.index("\n", start) + 1
    header = text[start:header_end].rstrip("\r\n")
    limit = node.end_mark.index
    content_end = header_end
    indent: int | None = None
    pos = header_end
    while pos < limit:
        nl = text.find("\n", pos)
        line_end = limit if nl < 0 or nl >= limit else nl
        line = text[pos:line_end].rstrip("\r")
        if line.strip():
            if indent is None:
                indent = len(line) - len(line.lstrip(" "))
            content_end = pos + len(line)
        pos = line_end + 1
    return header_end, content_end, indent if indent is not None else 2, header


_PROPERTY = re.compile(r"(?:[&!][^ \t\r\n]*[ \t]+)+")


def _yaml_site(text: str, node: yaml.ScalarNode, location: str) -> _Site:
    start, end = node.start_mark.index, node.end_mark.index
    # A node's marks start at its properties (&anchor, !tag): they stay, the value follows them.
    prop = _PROPERTY.match(text, start)
    if prop is not None:
        start = prop.end()
    query = Query(location, node.start_mark.line + 1, node.value, False, _line_of(text, end))
    if node.style in ("|", ">"):
        header_end, content_end, indent, header = _block_span(text, node, start)
        query = Query(location, query.line, node.value, False, _line_of(text, content_end))
        newline = _newline_of(text)
        indicators = re.match(r"[|>]([-+0-9]*)", header)
        chomp = "".join(c for c in (indicators.group(1) if indicators else "") if c in "+-")
        # The value's whitespace around the query is kept by leaving the trailing line breaks
        # (chomping decides them) untouched: only the content lines are replaced.
        lead = _split_ws(node.value)[0]

        def block(new: str) -> str:
            n_lead, n_core, _ = _split_ws(new)
            if n_lead != lead or not n_core or not all(_yaml_printable(c) for c in n_core):
                raise ValueError("not writable in block style")
            lines = n_core.split("\n")
            if node.style == ">" and len(lines) > 1:
                raise ValueError("folded style holds one line only")  # then the literal below
            pad = " " * indent
            return newline.join(pad + line if line else "" for line in lines)

        def literal(new: str) -> str:
            n_core = _split_ws(new)[1]
            pad = " " * indent
            body = newline.join(pad + line if line else "" for line in n_core.split("\n"))
            return f"|{chomp}{newline}{body}"

        return _Site(
            query,
            header_end,
            content_end,
            block,
            fallback=literal if node.style == ">" else None,
            node_span=(start, content_end),
        )
    if node.style == "'":
        return _Site(
            query,
            start,
            end,
            lambda new: yaml_single_quoted(new) or yaml_double_quoted(new),
            fallback=yaml_double_quoted,
        )
    if node.style == '"':
        return _Site(query, start, end, yaml_double_quoted, fallback=yaml_double_quoted)
    # Plain: checked alone, in a block mapping; in a flow collection (',', '}' end a plain
    # scalar there) the read-back check finds the difference and the fallback quotes it.
    return _Site(
        query,
        start,
        end,
        lambda new: yaml_plain(new) or yaml_single_quoted(new) or yaml_double_quoted(new),
        fallback=yaml_double_quoted,
    )


def _split_ws(value: str) -> tuple[str, str, str]:
    core = value.strip()
    if not core:
        return value, "", ""
    head = value.index(core)
    return value[:head], core, value[head + len(core) :]


def _ymap(node: yaml.Node | None) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            out[key.value] = value
    return out


def _yscalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _is_groups(node: yaml.Node) -> bool:
    return (
        isinstance(node, yaml.SequenceNode)
        and bool(node.value)
        and all(isinstance(_ymap(g).get("rules"), yaml.SequenceNode) for g in node.value)
    )


def _rule_groups(node: yaml.Node, depth: int = 0) -> Iterator[yaml.SequenceNode]:
    """Rule groups wherever they sit: a rule file's top level, a PrometheusRule's ``spec``, a
    chart's values (kube-prometheus-stack's ``additionalPrometheusRulesMap``, the prometheus
    chart's ``serverFiles``): a ``groups`` key whose items all have a ``rules`` list."""
    if depth > 32:
        return
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if _yscalar(key) == "groups" and _is_groups(value):
                yield value
            else:
                yield from _rule_groups(value, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _rule_groups(item, depth + 1)


def _yaml_sites(text: str) -> list[_Site]:
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise FileFormatError(f"invalid YAML: {exc}") from exc
    sites: list[_Site] = []
    seen: set[int] = set()  # an aliased expr is one node: rewritten once, at its anchor
    # Documents without rule groups are left untouched.
    for groups in (g for doc in docs for g in _rule_groups(doc)):
        for gi, group in enumerate(groups.value):
            gmap = _ymap(group)
            gname = _yscalar(gmap.get("name")) or f"#{gi}"
            rules = gmap.get("rules")
            if not isinstance(rules, yaml.SequenceNode):
                continue
            for ri, rule in enumerate(rules.value):
                rmap = _ymap(rule)
                expr = rmap.get("expr")
                if not isinstance(expr, yaml.ScalarNode) or id(expr) in seen:
                    continue
                if expr.tag != "tag:yaml.org,2002:str" or not expr.value.strip():
                    continue
                seen.add(id(expr))
                if "alert" in rmap:
                    what = f'alert "{_yscalar(rmap["alert"])}"'
                elif "record" in rmap:
                    what = f'record "{_yscalar(rmap["record"])}"'
                else:
                    what = f"rule #{ri}"
                sites.append(_yaml_site(text, expr, f'group "{gname}" {what}'))
    return sites


# --------------------------------------------------------------------------------------------
# .promql: expressions separated by blank lines; '#' comment lines kept


def _promql_sites(text: str) -> list[_Site]:
    sites: list[_Site] = []
    newline = _newline_of(text)
    lines = text.splitlines(keepends=True)
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block = i
        while i < len(lines) and lines[i].strip():
            i += 1
        body = [j for j in range(block, i) if not lines[j].lstrip().startswith("#")]
        if not body:
            continue
        first, last = body[0], body[-1]
        start = offsets[first]
        end = offsets[last] + len(lines[last].rstrip("\r\n"))
        value = text[start:end]

        def encode(new: str) -> str:
            return newline.join(new.split("\n"))

        where = f"expression #{len(sites) + 1}"
        query = Query(where, first + 1, value, False, last + 1)
        sites.append(_Site(query, start, end, encode))
    return sites


# --------------------------------------------------------------------------------------------
# The file as a whole


def _sites(text: str, fmt: FileFormat) -> list[_Site]:
    if fmt is FileFormat.GRAFANA:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"invalid JSON: {exc}") from exc
        return _grafana_sites(text, _jparse(text))
    if fmt is FileFormat.RULES:
        return _yaml_sites(text)
    return _promql_sites(text)


def queries(text: str, fmt: FileFormat) -> list[Query]:
    """Every query of the file, in file order (for ``--check``)."""
    return sorted((s.query for s in _sites(text, fmt)), key=lambda q: q.line)


def _migrate_one(query: Query, rewrite: Rewrite) -> QueryReport:
    lead, core, trail = _split_ws(query.text)
    try:
        done = rewrite(core, query.template)
    except NotMigratable as exc:
        return QueryReport(query, Status.NOT_MIGRATABLE, query.text, exc.reason)
    except ValueError as exc:
        if not query.strict:
            reason = f"not PromQL, left as is (its datasource is known by name only): {exc}"
            return QueryReport(query, Status.UNCHANGED, query.text, reason)
        return QueryReport(query, Status.INVALID, query.text, str(exc))
    if not done.changed or done.text == core:
        reason = "reads no Flux metric" if done.source is None else "; ".join(done.notes)
        return QueryReport(query, Status.UNCHANGED, query.text, reason)
    return QueryReport(query, Status.MIGRATED, lead + done.text + trail, "; ".join(done.notes))


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    out: list[str] = []
    pos = 0
    for start, end, new in sorted(edits):
        if start < pos:
            raise AssertionError("overlapping query spans")  # a bug, never a silent merge
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _edits(site: _Site, new: str, level: int) -> list[tuple[int, int, str]]:
    """The edits writing ``new`` at ``site`` (and its mirrors): level 0 in its own style, 1 in
    its fallback style, 2 as a double-quoted YAML scalar (YAML's last resort, exact for any
    string in any context). A block scalar's fallbacks replace its whole node, header too."""
    edits: list[tuple[int, int, str]] = []
    for s in (site, *site.extra):
        if level == 0:
            try:
                edits.append((s.start, s.end, s.encode(new)))
                continue
            except ValueError:
                pass
        start, end = s.node_span or (s.start, s.end)
        if max(level, 1) == 1 and s.fallback is not None:
            edits.append((start, end, s.fallback(new)))
        elif s.node_span is not None or s.fallback is not None:
            edits.append((start, end, yaml_double_quoted(new)))
        else:
            edits.append((start, end, s.encode(new)))  # JSON, .promql: one exact encoding
    return edits


def migrate_text(
    text: str, rewrite: Rewrite, *, name: str = "", fmt: FileFormat | None = None
) -> FileResult:
    """Rewrite every query of ``text`` with ``rewrite``; everything else stays byte-for-byte.

    Raises FileFormatError when the text is not valid for its format."""
    fmt = fmt or detect_format(name, text)
    sites = _sites(text, fmt)
    reports = [_migrate_one(site.query, rewrite) for site in sites]
    if fmt is FileFormat.PROMQL:
        # A blank line ends a .promql expression: one inside a rewritten expression goes.
        reports = [
            replace(r, migrated="\n".join(x for x in r.migrated.split("\n") if x.strip()))
            if r.status is Status.MIGRATED
            else r
            for r in reports
        ]
    levels = [0] * len(sites)
    for _ in range(3):
        edits: list[tuple[int, int, str]] = []
        for site, report, level in zip(sites, reports, levels, strict=True):
            if report.status is Status.MIGRATED:
                edits.extend(_edits(site, report.migrated, level))
        out = _splice(text, edits)
        wrong = _verify(out, fmt, sites, reports)
        if not wrong:
            order = sorted(range(len(reports)), key=lambda i: (reports[i].line, i))
            return FileResult(fmt, out, tuple(reports[i] for i in order))
        for i in wrong:
            levels[i] += 1
    raise AssertionError(f"{name}: the rewritten file does not read back as written")


def _verify(out: str, fmt: FileFormat, sites: list[_Site], reports: list[QueryReport]) -> list[int]:
    """Indexes of the sites whose value, read back from ``out``, is not the intended one."""
    try:
        again = _sites(out, fmt)
    except FileFormatError:
        return [i for i, r in enumerate(reports) if r.status is Status.MIGRATED]
    if len(again) != len(sites):
        return [i for i, r in enumerate(reports) if r.status is Status.MIGRATED]
    wrong = []
    for i, (site, report) in enumerate(zip(again, reports, strict=True)):
        values = [site.query.text, *(e.query.text for e in site.extra)]
        if any(v != report.migrated for v in values):
            wrong.append(i)
    return wrong
