"""Relabel rules run by a real Prometheus and by the relay, on the same series.

A Prometheus 2.42 agent scrapes one exporter and remote-writes to one receiver per rule list:
the first with no rules (what goes into the rules), each other through its own
``write_relabel_configs``; and, with no rules, to a relay process whose destinations carry the
same lists. The rule lists are drawn at random (every action, with regexes,
separators, templates, moduli and target labels of every kind), kept when both promtool and
the relay load them (they must agree on which load). For one scrape, each receiver must hold
exactly the label sets the relay's ``RuleSet`` makes of the first receiver's series, and the
relay's destination for the same list must have been sent exactly what Prometheus sent.

Where the relay differs on purpose (README, "Relabeling") the comparison leaves it out: a series
left without ``__name__`` is dropped by the relay (Prometheus sends it, and receivers refuse it).
Where ``labelmap`` maps two labels onto one name, Prometheus 3's order (the relay's) could differ
from 2.42's; the seeds here show no such case.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final

import pytest

from gotk_relay.config import ConfigError
from gotk_relay.model import Labels
from gotk_relay.rules.relabel import ACTIONS, RelabelConfig, RuleSet, compile_rules
from gotk_relay.wire import rw1, snappy
from tests.support import rig

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LISTS: Final = 60  # rule lists drawn; those both sides load are run
RELAYED: Final = 1000  # receiver paths of the relay's destinations: /rw/1000 + i
DEADLINE_S: Final = 60.0

EXPOSITION: Final = """\
go_gc_duration_seconds{quantile="0.5"} 1
go_gc_duration_seconds{quantile="1"} 2
gotk_resource_info{a="Foo",b="bar",name="app",ready="True"} 1
gotk_resource_info{a="foo",b="foo",name="infra",ready="False"} 1
http_requests_total{a="x;y",b="",code="200",method="GET"} 5
http_requests_total{a="x",b="y",code="500",method="POST"} 6
node_cpu_seconds_total{a="ÄÖü",b="Ωmega",cpu="0",mode="idle"} 7
node_load1 0.5
process_open_fds{a="42",b="42"} 8
colon:metric:sum{a="host:9100",b="a_b_c"} 9
flux_resource_info{a="",b="b",kind="Kustomization",exported_namespace="apps"} 1
x{a="aaa",b="bbb",c="ccc",d="ddd"} 10
"""

SOURCES: Final = [
    ["__name__"],
    ["a"],
    ["b"],
    ["a", "b"],
    ["b", "a"],
    ["__name__", "a"],
    ["missing"],
    ["a", "missing", "b"],
    ["job"],
    ["instance"],
    ["code", "method"],
]
REGEXES: Final = [
    "(.*)",
    "a.*",
    "(.+)_(.+)",
    "x|y",
    "",
    "(?i)FOO.*",
    "([a-z]+);(.*)",
    "go_(.*)",
    ".*e.*",
    "(.*):(\\d+)",
    "[^;]*",
    "\\w+",
    "(.*);(.*)",
    "(?P<first>[a-z]+)(.*)",
    "Ä(.*)",
    "(f)(o)(o)",
]
NAME_REGEXES: Final = ["a", "b|c", "(a|b)", "c|d", "quantile", "b.*", "(.)", "cpu|mode"]
REPLACEMENTS: Final = [
    "$1",
    "${1}",
    "$2",
    "x",
    "",
    "${1}_${2}",
    "$1$2",
    "pre_$1",
    "$3",
    "${first}",
    "$$1",
    "${1}x",
    "$1x",
    "$0",
]
TARGETS: Final = ["a", "b", "new", "__name__", "${1}", "x_$1", "job", "c", "$2", "quantile"]
SEPARATORS: Final = [";", "", ":", "_", ";;"]


def rule(rng: random.Random) -> dict[str, Any]:
    """One rule with the fields its action uses, and now and then one it should not have."""
    action = rng.choice([*sorted(ACTIONS), "replace", "replace"])  # replace the most
    out: dict[str, Any] = {"action": action}
    if action in ("labelmap", "labeldrop", "labelkeep"):
        out["regex"] = rng.choice([*NAME_REGEXES, "(.*)", "(.+)_(.+)"])
        if action == "labelmap":
            out["replacement"] = rng.choice(["$1", "${1}_x", "new_$1", "$2", "z"])
        return out
    out["source_labels"] = rng.choice(SOURCES)
    if rng.random() < 0.3:
        out["separator"] = rng.choice(SEPARATORS)
    if action in ("replace", "keep", "drop") or rng.random() < 0.1:
        out["regex"] = rng.choice(REGEXES)
    if action == "replace":
        out["target_label"] = rng.choice(TARGETS)
        out["replacement"] = rng.choice(REPLACEMENTS)
    elif action == "hashmod":
        out["target_label"] = rng.choice(["a", "shard", "__tmp_shard"])
        out["modulus"] = rng.choice([1, 2, 3, 7, 1000, 2**32 + 5])
    elif action in ("lowercase", "uppercase", "keepequal", "dropequal"):
        out["target_label"] = rng.choice(["a", "b", "c", "new"])
    return out


def rule_lists(seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    return [[rule(rng) for _ in range(rng.randint(1, 4))] for _ in range(LISTS)]


def promtool_loads(tmp: Path, index: int, rules: list[dict[str, Any]]) -> bool:
    path = tmp / f"check-{index}.yml"
    config = {"remote_write": [{"url": "http://127.0.0.1:9/", "write_relabel_configs": rules}]}
    path.write_text(json.dumps(config))
    return rig.promtool_check_config(path)[0]


def relay_rules(rules: list[dict[str, Any]]) -> RuleSet | None:
    try:
        return compile_rules([RelabelConfig.model_validate(r) for r in rules])
    except (ConfigError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


class Receivers:
    """Remote write 1.0 at ``/rw/<i>``: per path, the label sets received at each timestamp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: dict[int, dict[int, set[Labels]]] = {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                index = int(self.path.rsplit("/", 1)[-1])
                body = self.rfile.read(int(self.headers["Content-Length"]))
                # Unchecked: Prometheus sends what its rules leave, a series without a name too.
                batch = rw1.decode(snappy.decompress(body, 1 << 26), validate=False)
                with receivers.lock:
                    by_ts = receivers.at.setdefault(index, {})
                    for series in batch.series:
                        for sample in series.samples:
                            by_ts.setdefault(sample.timestamp, set()).add(series.labels)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def series(self, index: int, ts: int) -> set[Labels]:
        with self.lock:
            return set(self.at.get(index, {}).get(ts, ()))

    def scrapes(self, index: int) -> list[int]:
        with self.lock:
            return sorted(self.at.get(index, {}))


@pytest.fixture
def receivers() -> Iterator[tuple[Receivers, str]]:
    found = Receivers()
    with rig.serve_http(found.handler()) as url:
        yield found, url


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_relabel_rules_do_what_prometheus_does_on_the_same_series(
    tmp_path: Path, receivers: tuple[Receivers, str], seed: int
) -> None:
    found, url = receivers
    drawn = rule_lists(seed)
    with ThreadPoolExecutor(4) as pool:
        prom_loads = list(pool.map(lambda x: promtool_loads(tmp_path, *x), enumerate(drawn)))
    compiled = [relay_rules(rules) for rules in drawn]
    disagree = [
        json.dumps(rules)
        for rules, loads, ours in zip(drawn, prom_loads, compiled, strict=True)
        if loads != (ours is not None)
    ]
    assert not disagree, "promtool and the relay disagree on loading:\n" + "\n".join(disagree)
    kept = [(rules, ours) for rules, ours in zip(drawn, compiled, strict=True) if ours is not None]
    assert len(kept) >= LISTS // 2
    exporter = rig.StaticExporter(EXPOSITION)
    with ExitStack() as stack:
        stack.enter_context(exporter)
        # The relay takes the agent's stream whole and sends it on to one destination per
        # list, each with the list as its write_relabel_configs: the served path (the rules
        # run on the bytes), to compare with Prometheus' own sends of the same samples.
        relay_config = {
            "flux": {"mode": "off"},
            "federate": {"enabled": False},
            "remote_write": [
                {
                    "name": f"d{i}",
                    "url": f"{url}/rw/{RELAYED + i}",
                    "write_relabel_configs": rules,
                    "queue_config": {"batch_send_deadline": "200ms", "min_backoff": "50ms"},
                }
                for i, (rules, _) in enumerate(kept, start=1)
            ],
        }
        relay = rig.start_relay(tmp_path, json.dumps(relay_config))
        stack.callback(relay.stop)
        blocks: list[dict[str, Any]] = [
            {"write_relabel_configs": []},
            *({"write_relabel_configs": rules} for rules, _ in kept),
            {"write_relabel_configs": []},
        ]
        agent = rig.start_prometheus_agent(
            tmp_path,
            [f"127.0.0.1:{exporter.port}"],
            [*(f"{url}/rw/{i}" for i in range(len(blocks) - 1)), relay.write_url],
            job_name="relabel",
            per_remote_write=blocks,
        )
        stack.callback(agent.stop)
        # A scrape every receiver has had time to get: the second the first receiver holds
        # (each queue sends within 200 ms of a scrape; the first scrape may be partial).
        rig.eventually(lambda: len(found.scrapes(0)) >= 3, deadline_s=DEADLINE_S)
        ts = found.scrapes(0)[1]
        inputs = found.series(0, ts)
        assert len(inputs) >= 12  # the exporter's series and Prometheus' own (up, scrape_*)

        def differences() -> list[str]:
            out = []
            for index, (rules, ours) in enumerate(kept, start=1):
                wanted = {r for r in map(ours.apply, inputs) if r is not None}
                got = {
                    labels
                    for labels in found.series(index, ts)
                    if any(name == "__name__" for name, _ in labels)
                }
                served = found.series(RELAYED + index, ts)
                if wanted != got or served != got:
                    out.append(
                        f"rules {json.dumps(rules)}:\n  RuleSet only: {sorted(wanted - got)}"
                        f"\n  prometheus only: {sorted(got - wanted)}"
                        f"\n  relay served only: {sorted(served - got)}"
                        f"\n  relay did not serve: {sorted(got - served)}"
                    )
            return out

        with contextlib.suppress(AssertionError):  # reported below, with every difference
            rig.eventually(lambda: not differences(), deadline_s=DEADLINE_S)
        assert not differences(), "\n".join(differences())
