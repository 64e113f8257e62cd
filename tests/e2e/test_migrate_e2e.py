"""``gotk-relay migrate``, proven on real Prometheus: a migrated query returns what the original did.

Three scenarios, one per source of Flux object state, each its own Prometheus 2.42 fed by its
own gotk-relay (``flux: {mode: both, keep_source: true, stale_grace: 0s}``), so that each store
holds one set of objects in two or three shapes:

* ``ksm``: kube-state-metrics' ``gotk_resource_info`` as Prometheus stores it after a scrape
  (Flux's custom-resource-state labels plus the scrape's ``job``/``instance``/``pod`` and
  ``namespace="monitoring"``); the relay adds the legacy gauges;
* ``operator``: the Flux Operator's ``flux_resource_info`` (scrape labels in ``flux-system``); the
  relay adds the legacy gauges and ``gotk_resource_info``;
* ``legacy``: the controllers' ``gotk_reconcile_condition`` ×3 and ``gotk_suspend_status`` in the
  stored shape (``job`` = the owning controller, ``exported_namespace`` = the object's); the relay
  adds ``gotk_resource_info``.

The test pushes twelve "scrapes" 15 s apart, ending about a minute ago, straight to the relay with
remote write 1.0: each request holds every live series at the scrape's timestamp and a stale
marker for every series the previous scrape had and this one does not, as Prometheus writes
them. Through the life objects of six kinds are created at different scrapes, Ready flips
True → False → Unknown → True, a Kustomization is suspended and resumed, a GitRepository is
deleted, two Kustomizations share a name in two namespaces, and a HelmRelease's revision changes
while it stays Ready.

Then every corpus entry (``tests/fixtures/migrate/corpus.yml``) is migrated to every other shape
and the original (on its shape) and the migration (on the target) are evaluated in every
scenario whose store has both, at instants on and between the scrapes and as one range query
over the life, and compared after the documented label mapping
(``tests/support/migrate_compare.py``). Entries the tool must refuse must be refused with their
reason.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
import yaml

from gotk_relay.migrate import NotMigratable, Shape, migrate_expr, migrate_template_query
from gotk_relay.model import STALE_NAN, Batch, Sample, Series, labels_from
from gotk_relay.wire import rw1, snappy
from tests.support import rig
from tests.support.migrate_compare import (
    NamespaceMap,
    Result,
    compare,
    from_prometheus,
    label_value_result,
    substitute_grafana,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "migrate" / "corpus.yml"
SCRAPE_S = 15
SCRAPES = 12
END_AGO_S = 60
"""The last scrape is this long before the test starts: Prometheus takes samples up to an hour
old, and an instant query a little after the last scrape still sees its full state."""
DEADLINE_S = 30.0
CONTROLLER_NAMESPACE = "flux-system"

# --------------------------------------------------------------------------------------------
# The objects and their life


class State(NamedTuple):
    """An object's state at one scrape."""

    ready: str | None  # the Ready condition's status; None: no Ready condition yet
    suspended: bool | None  # spec.suspend; None: unset (kube-state-metrics then omits the label)
    revision: str


@dataclass(frozen=True)
class Kind:
    name: str
    group: str
    version: str
    controller: str
    has_ready: bool = True  # kube-state-metrics' Flux config reads no Ready for Alert/Provider


KINDS = {
    k.name: k
    for k in (
        Kind("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "kustomize-controller"),
        Kind("HelmRelease", "helm.toolkit.fluxcd.io", "v2", "helm-controller"),
        Kind("GitRepository", "source.toolkit.fluxcd.io", "v1", "source-controller"),
        Kind("HelmRepository", "source.toolkit.fluxcd.io", "v1", "source-controller"),
        Kind(
            "Alert", "notification.toolkit.fluxcd.io", "v1beta3", "notification-controller", False
        ),
        Kind(
            "Provider",
            "notification.toolkit.fluxcd.io",
            "v1beta3",
            "notification-controller",
            False,
        ),
    )
}


def life(
    *,
    created: int = 0,
    deleted: int | None = None,
    ready: Mapping[int, str | None] | None = None,
    suspended: Mapping[int, bool | None] | None = None,
    revision: Mapping[int, str] | None = None,
) -> tuple[State | None, ...]:
    """Per scrape: None before creation and after deletion, else the state, each field changing
    at the scrapes its map names and keeping its value until the next change."""
    changes_ready = dict(ready or {created: "True"})
    changes_suspended = dict(suspended or {created: None})
    changes_revision = dict(revision or {created: "v1"})
    states: list[State | None] = []
    current = State(None, None, "")
    for k in range(SCRAPES):
        current = State(
            changes_ready.get(k, current.ready),
            changes_suspended.get(k, current.suspended),
            changes_revision.get(k, current.revision),
        )
        alive = k >= created and (deleted is None or k < deleted)
        states.append(current if alive else None)
    return tuple(states)


@dataclass(frozen=True)
class Obj:
    kind: str
    namespace: str
    name: str
    states: tuple[State | None, ...]
    extra: Mapping[str, str] = field(default_factory=dict)  # kube-state-metrics' per-kind labels

    @property
    def uid(self) -> str:
        return f"{zlib.crc32(f'{self.kind}/{self.namespace}/{self.name}'.encode()):08x}-4c1e-9d2a"


GIT = "main@sha1:"
OBJECTS = (
    Obj(
        "Kustomization",
        "flux-system",
        "flux-system",
        life(
            ready={0: "True", 3: "False", 5: "Unknown", 7: "True"},
            revision={0: GIT + "1a2b3c", 7: GIT + "4d5e6f"},
        ),
        {"source_name": "flux-system"},
    ),
    Obj(
        "Kustomization",
        "apps",
        "podinfo",
        life(suspended={0: None, 4: True, 8: False}, revision={0: GIT + "1a2b3c"}),
        {"source_name": "podinfo"},
    ),
    Obj(  # the same kind and name as the one above, in another namespace
        "Kustomization",
        "staging",
        "podinfo",
        life(created=2, ready={2: "Unknown", 3: "True", 6: "False", 10: "True"}),
        {"source_name": "podinfo"},
    ),
    Obj(  # a new chart version while Ready stays True
        "HelmRelease",
        "nextcloud",
        "nextcloud-redis",
        life(created=1, revision={1: "19.6.4", 6: "19.6.5"}),
        {"chart_name": "redis", "chart_source_name": "bitnami", "chart_app_version": "7.2.5"},
    ),
    Obj(
        "HelmRelease",
        "observability",
        "kube-prometheus-stack",
        life(ready={0: "False", 5: "True"}, suspended={0: None, 9: True}, revision={0: "65.1.0"}),
        {"chart_name": "kube-prometheus-stack", "chart_source_name": "prometheus-community"},
    ),
    Obj(
        "GitRepository",
        "flux-system",
        "flux-system",
        life(revision={0: GIT + "1a2b3c", 7: GIT + "4d5e6f"}),
        {"url": "ssh://git@github.com/acme/fleet"},
    ),
    Obj(  # deleted at scrape 8
        "GitRepository",
        "apps",
        "podinfo",
        life(deleted=8, ready={0: "True", 5: "False", 7: "True"}, revision={0: GIT + "9f8e7d"}),
        {"url": "https://github.com/stefanprodan/podinfo"},
    ),
    Obj(  # no Ready condition at its first scrape
        "HelmRepository",
        "flux-system",
        "bitnami",
        life(created=3, ready={3: None, 4: "True"}, revision={3: "sha256:77aa"}),
        {"url": "https://charts.bitnami.com/bitnami"},
    ),
    Obj(
        "Alert",
        "flux-system",
        "slack",
        life(created=1, ready={1: "True"}, suspended={1: None, 5: True, 7: False}),
    ),
    Obj("Provider", "flux-system", "slack", life(created=1)),
)

# Namespaces of kube_namespace_labels (a non-Flux series the corpus joins with) and their teams.
TEAMS = {
    "flux-system": "platform",
    "apps": "web",
    "staging": "web",
    "nextcloud": "files",
    "observability": "platform",
}

# --------------------------------------------------------------------------------------------
# The three sources' series


LabelSet = tuple[tuple[str, str], ...]
Shot = dict[LabelSet, float]  # one scrape: every live series and its value


def ksm_series(obj: Obj, state: State) -> Shot:
    kind = KINDS[obj.kind]
    labels = {
        "__name__": "gotk_resource_info",
        "customresource_group": kind.group,
        "customresource_kind": kind.name,
        "customresource_version": kind.version,
        "exported_namespace": obj.namespace,
        "name": obj.name,
        "revision": state.revision if kind.has_ready else "",  # Alert/Provider: no extra labels
        **obj.extra,
        "job": "kube-state-metrics",
        "instance": "10.42.0.17:8080",
        "pod": "kube-state-metrics-7c9d6f5b8-x4kzq",
        "namespace": "monitoring",
    }
    if kind.has_ready and state.ready is not None:
        labels["ready"] = state.ready
    if state.suspended is not None:
        labels["suspended"] = str(state.suspended).lower()
    return {labels_from(labels): 1.0}


REASONS = {"True": "ReconciliationSucceeded", "False": "ReconciliationFailed"}


def operator_series(obj: Obj, state: State) -> Shot:
    ready = state.ready or "Unknown"
    if not KINDS[obj.kind].has_ready:
        ready = "True"  # the operator reports Alert and Provider always Ready
    labels = {
        "__name__": "flux_resource_info",
        "kind": obj.kind,
        "exported_namespace": obj.namespace,
        "name": obj.name,
        "ready": ready,
        "suspended": str(bool(state.suspended)),
        "uid": obj.uid,
        "reason": REASONS.get(ready, "Progressing"),
        "revision": state.revision,
        "url": obj.extra.get("url", ""),
        "source_name": obj.extra.get("source_name", ""),
        "job": "flux-operator",
        "instance": "10.42.0.9:8080",
        "pod": "flux-operator-5f7d9c8b6-qm2lp",
        "namespace": "flux-system",
    }
    return {labels_from(labels): 1.0}


def legacy_series(obj: Obj, state: State) -> Shot:
    kind = KINDS[obj.kind]
    # Without a Ready condition the controllers recorded Unknown; the relay writes no `ready`
    # for Alert and Provider (as kube-state-metrics), which reads as Unknown too.
    ready = (state.ready if kind.has_ready else None) or "Unknown"
    base = {
        "kind": obj.kind,
        "name": obj.name,
        "exported_namespace": obj.namespace,
        "namespace": CONTROLLER_NAMESPACE,
        "job": kind.controller,
        "instance": f"10.42.1.{len(kind.controller)}:8080",
        "pod": f"{kind.controller}-6b7f9c-abcde",
    }
    shot: Shot = {}
    for status in ("True", "False", "Unknown"):
        labels = {**base, "__name__": "gotk_reconcile_condition", "type": "Ready", "status": status}
        shot[labels_from(labels)] = 1.0 if status == ready else 0.0
    shot[labels_from({**base, "__name__": "gotk_suspend_status"})] = float(bool(state.suspended))
    return shot


def legacy_series_before_2_1(obj: Obj, state: State) -> Shot:
    """As ``legacy_series``, with the fourth series Flux before 2.1 had: Deleted, 0 while the
    object lives (a deleted object's series end here, as since 2.1 and as gotk-relay's
    ``emit_deleted`` leaves them once stale)."""
    shot = legacy_series(obj, state)
    for labels in list(shot):
        found = dict(labels)
        if found.get("status") == "True":
            shot[labels_from({**found, "status": "Deleted"})] = 0.0
    return shot


def common_series(source_job: str, source_namespace: str) -> Shot:
    """Non-Flux series every scenario has: Prometheus' own ``up``, the source's ``up``, and
    kube-state-metrics' ``kube_namespace_labels``."""
    shot: Shot = {
        labels_from({"__name__": "up", "job": "prometheus", "instance": "localhost:9090"}): 1.0,
        labels_from(
            {
                "__name__": "up",
                "job": source_job,
                "instance": "10.42.0.2:8080",
                "namespace": source_namespace,
            }
        ): 1.0,
    }
    for namespace, team in TEAMS.items():
        labels = {
            "__name__": "kube_namespace_labels",
            "namespace": namespace,
            "label_team": team,
            "job": "kube-state-metrics",
            "instance": "10.42.0.17:8080",
        }
        shot[labels_from(labels)] = 1.0
    return shot


@dataclass(frozen=True)
class Scenario:
    id: str
    shapes: frozenset[Shape]  # what the store holds once the relay has written its outputs
    render: Callable[[Obj, State], Shot]
    source: tuple[str, str]  # the scraped source's job and namespace
    namespaces: NamespaceMap  # the `namespace` values that name the same exposer across shapes
    # The legacy series include status="Deleted" (Flux before 2.1): only the corpus entries
    # marked ``before_2_1`` are compared here, and only here.
    deleted_series: bool = False

    def shot(self, k: int) -> Shot:
        shot = common_series(*self.source)
        for obj in OBJECTS:
            state = obj.states[k]
            if state is not None:
                shot.update(self.render(obj, state))
        return shot


SCENARIOS = (
    # The relay writes the legacy series with controller_namespace; KSM's keep its namespace.
    Scenario(
        "ksm",
        frozenset({Shape.LEGACY, Shape.RESOURCE_INFO}),
        ksm_series,
        ("kube-state-metrics", "monitoring"),
        {"monitoring": CONTROLLER_NAMESPACE},
    ),
    Scenario(
        "operator",
        frozenset(Shape),
        operator_series,
        ("flux-operator", "flux-system"),
        {},
    ),
    # gotk_resource_info written from the legacy series keeps the controllers' `namespace`.
    Scenario(
        "legacy",
        frozenset({Shape.LEGACY, Shape.RESOURCE_INFO}),
        legacy_series,
        ("source-controller", "flux-system"),
        {CONTROLLER_NAMESPACE: None},
    ),
    Scenario(
        "legacy-before-2.1",
        frozenset({Shape.LEGACY, Shape.RESOURCE_INFO}),
        legacy_series_before_2_1,
        ("source-controller", "flux-system"),
        {CONTROLLER_NAMESPACE: None},
        deleted_series=True,
    ),
)


def fits(entry: Entry, scenario: Scenario) -> bool:
    """Whether ``entry`` is run in ``scenario``'s store: a query written for Flux before 2.1
    (reading its Deleted series) only where they are, every other only where they are not."""
    return entry.before_2_1 == scenario.deleted_series


def live_at_end(shape: Shape, deleted_series: bool = False) -> int:
    """How many series of ``shape``'s metrics the store holds after the last scrape."""
    alive = sum(1 for obj in OBJECTS if obj.states[-1] is not None)
    return alive * (4 + deleted_series) if shape is Shape.LEGACY else alive


# --------------------------------------------------------------------------------------------
# Pushing the life and querying the store


def write_request(shot: Shot, stale: Sequence[LabelSet], ts_ms: int) -> bytes:
    series = [Series(labels, (Sample(value, ts_ms),)) for labels, value in shot.items()]
    series += [Series(labels, (Sample(STALE_NAN, ts_ms),)) for labels in stale]
    return snappy.compress(rw1.encode(Batch(tuple(series))))


class Store:
    """One scenario's Prometheus, filled, and the instants its queries are evaluated at."""

    def __init__(self, scenario: Scenario, prom: rig.Prom, start_s: float) -> None:
        self.scenario = scenario
        self.prom = prom
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment sees test traffic
        self.scrapes = [start_s + SCRAPE_S * k for k in range(SCRAPES)]
        s = self.scrapes
        # On scrapes where something changes (Ready flips at 3, 5, 6; deletion at 8) and between.
        self.instants = [s[0] + 1, s[2] + 7.5, s[3], s[5] + 7.5, s[6], s[8], s[8] + 7.5, s[-1] + 40]
        self.range = (s[0], s[-1] + 45)
        # Template queries read the series of a time range, as Grafana does for the dashboard's.
        self.windows = [(s[0], s[-1]), (s[0], s[2]), (s[9], s[-1])]

    def api(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        response = self.session.get(
            f"{self.prom.base_url}/api/v1/{path}", params=params, timeout=10
        )
        doc = response.json()
        if response.status_code != 200 or doc.get("status") != "success":
            raise rig.RigError(f"{path} {params}: {response.status_code} {doc}")
        return doc["data"]

    def instant(self, promql: str, at: float) -> Result:
        return from_prometheus(self.api("query", [("query", promql), ("time", f"{at:.3f}")]))

    def range_query(self, promql: str) -> Result:
        start, end = self.range
        params = [("query", promql), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        return from_prometheus(self.api("query_range", [*params, ("step", str(SCRAPE_S))]))

    def label_values(self, label: str, match: str | None, window: tuple[float, float]) -> Result:
        params = [("start", f"{window[0]:.3f}"), ("end", f"{window[1]:.3f}")]
        if match is not None:
            params.append(("match[]", match))
        return label_value_result(self.api(f"label/{label}/values", params), label)

    def evaluate(self, entry_kind: str, text: str) -> dict[str, Result]:
        """``text`` evaluated at every point the comparison uses, by point name."""
        text = substitute_grafana(text)
        if entry_kind == "template":
            values = LABEL_VALUES.fullmatch(text.strip())
            if values is not None:
                match, label = values["match"], values["label"]
                return {
                    f"values[{a - self.scrapes[0]:g}s..{b - self.scrapes[0]:g}s]": self.label_values(
                        label, match, (a, b)
                    )
                    for a, b in self.windows
                }
            result = QUERY_RESULT.fullmatch(text.strip())
            if result is not None:
                text = result["expr"]
            return {self.at(t): self.instant(text, t) for t in self.instants}
        points = {self.at(t): self.instant(text, t) for t in self.instants}
        points["range"] = self.range_query(text)
        return points

    def at(self, t: float) -> str:
        return f"t0+{t - self.scrapes[0]:g}s"


LABEL_VALUES = re.compile(
    r"label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>[A-Za-z_]\w*)\s*\)"
)
QUERY_RESULT = re.compile(r"query_result\((?P<expr>.*)\)", re.DOTALL)


def push_life(relay: rig.Relay, scenario: Scenario, scrapes: Sequence[float]) -> None:
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    previous: Shot = {}
    with requests.Session() as session:
        session.trust_env = False
        for k, at in enumerate(scrapes):
            shot = scenario.shot(k)
            stale = [labels for labels in previous if labels not in shot]
            body = write_request(shot, stale, int(at * 1000))
            response = session.post(relay.write_url, data=body, headers=headers, timeout=10)
            assert response.status_code == 204, (k, response.status_code, response.text)
            previous = shot


def holds_last_scrape(store: Store) -> bool:
    """Whether every shape's metrics hold exactly the last scrape's live series, all at its
    timestamp (earlier ends' stale markers included: a missing one would leave a series in)."""
    last = store.scrapes[-1]
    for shape in store.scenario.shapes:
        metric = {
            Shape.LEGACY: '{__name__=~"gotk_reconcile_condition|gotk_suspend_status"}',
            Shape.RESOURCE_INFO: "gotk_resource_info",
            Shape.FLUX_RESOURCE_INFO: "flux_resource_info",
        }[shape]
        stamps = store.instant(f"timestamp({metric})", last + 1)
        values = [value for _, _, value in stamps.points]
        assert len(values) == live_at_end(shape, store.scenario.deleted_series), (
            shape,
            len(values),
        )
        assert set(values) == {last}, (shape, sorted(set(values)))
    return True


def relay_config(prom: rig.Prom) -> str:
    return f"""\
flux:
  mode: both
  keep_source: true
  stale_grace: 0s
  controller_namespace: {CONTROLLER_NAMESPACE}
remote_write:
  - name: prom
    url: {prom.write_url}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 1s}}
"""


@pytest.fixture(scope="module", params=SCENARIOS, ids=[s.id for s in SCENARIOS])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    scenario: Scenario = request.param
    tmp = tmp_path_factory.mktemp(f"migrate-{scenario.id}")
    prom = rig.start_prometheus_receiver(tmp)
    try:
        relay = rig.start_relay(tmp, relay_config(prom))
        try:
            start = int(time.time()) - END_AGO_S - SCRAPE_S * (SCRAPES - 1)
            filled = Store(scenario, prom, float(start))
            push_life(relay, scenario, filled.scrapes)
            rig.eventually(
                lambda: holds_last_scrape(filled),
                DEADLINE_S,
                0.1,
                what=f"{scenario.id} store filled",
            )
            yield filled
            filled.session.close()
        finally:
            relay.stop()
    finally:
        prom.stop()


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Entry:
    id: str
    source: Shape
    query: str
    origin: str
    kind: str
    not_migratable: str | Mapping[str, str] | None
    before_2_1: bool = False  # reads the Deleted series of Flux before 2.1

    def refusal(self, to: Shape) -> str | None:
        """The substring the reason for refusing to migrate to ``to`` must hold, if it must."""
        if isinstance(self.not_migratable, Mapping):
            return self.not_migratable.get(to.value)
        return self.not_migratable

    @property
    def targets(self) -> list[Shape]:
        return [shape for shape in Shape if shape is not self.source]


def load_corpus() -> list[Entry]:
    raw = yaml.safe_load(CORPUS.read_text())
    entries = []
    for item in raw:
        unknown = set(item) - {
            "id",
            "from",
            "query",
            "origin",
            "kind",
            "not_migratable",
            "before_2_1",
        }
        assert not unknown, (item.get("id"), unknown)
        assert item["kind"] in ("expr", "template"), item["id"]
        entries.append(
            Entry(
                item["id"],
                Shape(item["from"]),
                item["query"],
                item["origin"],
                item["kind"],
                item.get("not_migratable"),
                bool(item.get("before_2_1", False)),
            )
        )
    return entries


ENTRIES = load_corpus()


def migrate(entry: Entry, to: Shape) -> str:
    """The migrated text; raises NotMigratable as the tool does."""
    run = migrate_template_query if entry.kind == "template" else migrate_expr
    return run(entry.query, to, source=entry.source).text


def test_the_corpus_is_what_the_issue_asks_for() -> None:
    ids = [entry.id for entry in ENTRIES]
    assert len(ids) == len(set(ids)), "duplicate ids"
    written = [entry for entry in ENTRIES if entry.origin.startswith("written")]
    assert len(written) >= 30
    for shape in Shape:
        assert any(entry.source is shape for entry in ENTRIES), shape
    assert any("Deleted" in str(entry.not_migratable) for entry in ENTRIES)


def test_every_entry_migrates_or_is_refused_for_its_reason() -> None:
    problems: list[str] = []
    for entry in ENTRIES:
        for to in entry.targets:
            expected = entry.refusal(to)
            try:
                text = migrate(entry, to)
            except NotMigratable as exc:
                if expected is None:
                    problems.append(f"{entry.id} -> {to}: refused: {exc.reason}")
                elif expected not in exc.reason:
                    problems.append(f"{entry.id} -> {to}: reason {exc.reason!r} lacks {expected!r}")
            except ValueError as exc:
                problems.append(f"{entry.id} -> {to}: {type(exc).__name__}: {exc}")
            else:
                if expected is not None:
                    problems.append(
                        f"{entry.id} -> {to}: migrated to {text!r}, must be refused ({expected})"
                    )
    assert not problems, "\n".join(problems)


def test_corpus_queries_return_data_on_their_own_shape(store: Store) -> None:
    """Each query runs on its own shape in this store, and returns something somewhere in the
    life (a query returning nothing everywhere would prove nothing); refused ones need only run."""
    problems: list[str] = []
    for entry in ENTRIES:
        if entry.source not in store.scenario.shapes or not fits(entry, store.scenario):
            continue
        try:
            results = store.evaluate(entry.kind, entry.query)
        except rig.RigError as exc:
            problems.append(f"{entry.id}: {exc}")
            continue
        if entry.not_migratable is None and not any(r.points for r in results.values()):
            problems.append(f"{entry.id}: no data at any instant: {entry.query}")
    assert not problems, "\n".join(problems)


#: Prometheus' counters of samples it refused; in 2.42 they appear once incremented.
REFUSALS = (
    "prometheus_tsdb_out_of_order_samples_total",
    "prometheus_tsdb_out_of_bound_samples_total",
    "prometheus_tsdb_too_old_samples_total",
)


def test_the_store_refused_nothing(store: Store) -> None:
    """Every sample the relay wrote was stored: the comparison sees the whole life."""
    samples = rig.parse_exposition(store.prom.metrics_text())
    refused = {s.name: s.value for s in samples if s.name in REFUSALS and s.value}
    assert not refused, refused
    writes = [s for s in samples if s.name == "prometheus_http_requests_total"]
    failed = [
        s
        for s in writes
        if s.labels.get("handler") == "/api/v1/write" and s.labels.get("code") != "204"
    ]
    assert not [(s.labels, s.value) for s in failed if s.value], failed


class Mismatch(NamedTuple):
    id: str
    target: str
    point: str
    only_original: Sequence[str]
    only_migrated: Sequence[str]


def test_migrated_queries_return_what_the_originals_did(store: Store) -> None:
    mismatches: list[Mismatch] = []
    errors: list[str] = []
    compared = 0
    for entry in ENTRIES:
        if entry.source not in store.scenario.shapes or not fits(entry, store.scenario):
            continue
        original: dict[str, Result] | None = None
        for to in entry.targets:
            if to not in store.scenario.shapes:
                continue
            try:
                text = migrate(entry, to)
            except ValueError:  # NotMigratable included: judged by the test above
                continue
            if original is None:
                original = store.evaluate(entry.kind, entry.query)
            try:
                migrated = store.evaluate(entry.kind, text)
            except rig.RigError as exc:
                errors.append(f"{entry.id} -> {to}: {text!r}: {exc}")
                continue
            compared += 1
            for point, result in original.items():
                diff = compare(result, migrated[point], store.scenario.namespaces)
                if diff:
                    mismatches.append(
                        Mismatch(
                            entry.id, f"{to}: {text}", point, diff.only_original, diff.only_migrated
                        )
                    )
    assert not errors and not mismatches, report(store.scenario.id, errors, mismatches)
    assert compared, "no entry migrated to a shape this store holds: nothing was compared"


def report(scenario: str, errors: Sequence[str], mismatches: Sequence[Mismatch]) -> str:
    """The mismatches as a table: one row per (id, target, scenario, instant), then what only
    the original and only the migrated query returned there (mapped labels, a few each)."""
    lines = [f"scenario {scenario}: {len(errors)} errors, {len(mismatches)} mismatches", *errors]
    lines.append("id | target: migrated query | scenario | instant")
    for m in mismatches:
        lines.append(f"{m.id} | {m.target} | {scenario} | {m.point}")
        lines.extend(f"    only in original: {line}" for line in m.only_original[:6])
        lines.extend(f"    only in migrated: {line}" for line in m.only_migrated[:6])
    return "\n".join(lines)


# Queries equal by hand on the three shapes: they check the rig itself (the lifecycle, the
# relay's outputs, the label mapping) independently of the tool under test.
HAND_MIGRATED: Sequence[tuple[str, str, Mapping[Shape, str]]] = (
    (
        "objects",
        "expr",
        {
            Shape.LEGACY: 'count(gotk_reconcile_condition{type="Ready",status="True"})',
            Shape.RESOURCE_INFO: "count(gotk_resource_info)",
            Shape.FLUX_RESOURCE_INFO: "count(flux_resource_info)",
        },
    ),
    (
        "failing",
        "expr",
        {
            Shape.LEGACY: 'gotk_reconcile_condition{type="Ready",status="False"} == 1',
            Shape.RESOURCE_INFO: 'gotk_resource_info{ready="False"}',
            Shape.FLUX_RESOURCE_INFO: 'flux_resource_info{ready="False"}',
        },
    ),
    (
        "unknown",
        "expr",
        {
            Shape.LEGACY: 'gotk_reconcile_condition{status="Unknown"} == 1',
            Shape.RESOURCE_INFO: 'gotk_resource_info{ready=~"Unknown|"}',
            Shape.FLUX_RESOURCE_INFO: 'flux_resource_info{ready="Unknown"}',
        },
    ),
    (
        "suspended",
        "expr",
        {
            Shape.LEGACY: "max by (exported_namespace, name, kind) (gotk_suspend_status) == 1",
            Shape.RESOURCE_INFO: 'max by (exported_namespace, name, customresource_kind) (gotk_resource_info{suspended="true"})',
            Shape.FLUX_RESOURCE_INFO: 'max by (exported_namespace, name, kind) (flux_resource_info{suspended="True"})',
        },
    ),
    (
        "failing-by-namespace-or-zero",
        "expr",
        {
            Shape.LEGACY: 'sum by (exported_namespace) (gotk_reconcile_condition{status="False"})',
            Shape.RESOURCE_INFO: 'count by (exported_namespace) (gotk_resource_info{ready="False"}) or (0 * count by (exported_namespace) (gotk_resource_info))',
            Shape.FLUX_RESOURCE_INFO: 'count by (exported_namespace) (flux_resource_info{ready="False"}) or (0 * count by (exported_namespace) (flux_resource_info))',
        },
    ),
    # Exact counterparts of corpus entries the rewrite refuses today (see the report of
    # test_every_entry_migrates_or_is_refused_for_its_reason): legacy-failing-scaled ...
    (
        "failed-in-window-by-kind",
        "expr",
        {
            Shape.LEGACY: 'max by (kind) (max_over_time(gotk_reconcile_condition{status="False"}[5m]))',
            Shape.RESOURCE_INFO: 'max by (customresource_kind) (max_over_time(gotk_resource_info{ready="False"}[5m])) or max by (customresource_kind) (max_over_time(gotk_resource_info[5m])) * 0',
            Shape.FLUX_RESOURCE_INFO: 'max by (kind) (max_over_time(flux_resource_info{ready="False"}[5m])) or max by (kind) (max_over_time(flux_resource_info[5m])) * 0',
        },
    ),
    # ... and operator-ready-states to legacy (kube-state-metrics has no `ready` where the
    # operator says Unknown, so it has no counterpart there).
    (
        "ready-states",
        "expr",
        {
            Shape.LEGACY: 'count by (status) (gotk_reconcile_condition{kind=~"Kustomization|HelmRelease|GitRepository|HelmRepository"} == 1)',
            Shape.FLUX_RESOURCE_INFO: 'count by (ready) (flux_resource_info{kind=~"Kustomization|HelmRelease|GitRepository|HelmRepository"})',
        },
    ),
    (
        "namespaces",
        "template",
        {
            Shape.LEGACY: "label_values(gotk_reconcile_condition, exported_namespace)",
            Shape.RESOURCE_INFO: "label_values(gotk_resource_info, exported_namespace)",
            Shape.FLUX_RESOURCE_INFO: "label_values(flux_resource_info, exported_namespace)",
        },
    ),
)


def test_the_rig_agrees_with_hand_migrated_queries(store: Store) -> None:
    mismatches: list[Mismatch] = []
    for name, kind, texts in HAND_MIGRATED:
        shapes = [shape for shape in Shape if shape in store.scenario.shapes and shape in texts]
        if len(shapes) < 2:
            continue
        first = store.evaluate(kind, texts[shapes[0]])
        assert any(result.points for result in first.values()), name
        for other in shapes[1:]:
            second = store.evaluate(kind, texts[other])
            for point, result in first.items():
                diff = compare(result, second[point], store.scenario.namespaces)
                if diff:
                    target = f"{shapes[0]} vs {other}"
                    mismatches.append(
                        Mismatch(name, target, point, diff.only_original, diff.only_migrated)
                    )
    assert not mismatches, report(store.scenario.id, [], mismatches)
