"""The text format and OpenMetrics read by the relay's scraper and by a real Prometheus 2.42, on
the same bodies.

One exporter serves each case below at its own path (as ``text/plain; version=0.0.4`` or
``application/openmetrics-text; version=1.0.0``); a Prometheus agent and the relay scrape every
path as a job of its own and remote-write to one receiver each. For every job both must
append the same thing: the same samples (labels, float bits, explicit timestamps) and the same
``up``, so that a body Prometheus refuses fails the relay's scrape too, and one it reads the
relay reads alike. The scrape report's counts on a failed scrape (Prometheus reports what it had
read; the relay 0), ``scrape_series_added`` and ``scrape_duration_seconds`` are left out, as
docs/scrape.md says; so are the cases listed in ``DIFFERENT``, each with its reason there.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final

import pytest

from gotk_relay.model import Labels
from gotk_relay.wire import rw1, snappy
from tests.support import rig

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DEADLINE_S: Final = 60.0

TEXT: Final = {
    "plain": 'a 1\nb{x="y"} 2\n',
    "escapes": 'a{x="q\\"uote",y="back\\\\slash",z="nl\\nx"} 1\n',
    "other_escape": 'a{x="\\t",y="a\\\\tb"} 1\n',
    "backslash_at_end": 'a{x="a\\\\\\\\"} 1\n',
    "raw_newline_in_value": 'a{x="l1\nl2"} 1\n',
    "special_values": "a +Inf\nb -Inf\nc NaN\nd nan\ne Inf\nf inf\ng +Infinity\nh -inf\n",
    "infin": "a infin\n",
    "plus_nan": "a +NaN\n",
    "hex_value": "a 0x1F\n",
    "exponents": "a 1e3\nb 1.5E-3\nc .5\nd 5.\ne .5e1\nf +5\n",
    "underscore_value": "a 1_000\n",
    "out_of_range": "a 1e400\n",
    "non_ascii_digit": "a \u0661\n",
    "value_then_hash": "a 1#x\n",
    "timestamp": "a 1 1700000000000\n",
    "negative_timestamp": "a 1 -5\n",
    "fractional_timestamp": "a 1 1.5\n",
    "huge_timestamp": "a 1 99999999999999999999\n",
    "duplicate_label": 'a{x="1",x="2"} 1\n',
    "name_in_braces": 'a{__name__="b"} 1\n',
    "brace_first": '{__name__="a"} 1\n',
    "reserved_label": 'a{__x="1"} 1\n',
    "empty_label": 'a{x=""} 1\n',
    "trailing_comma": 'a{x="1",} 1\n',
    "labels_without_comma": 'a{x="1" y="2"} 1\n',
    "empty_braces": "a{} 1\n",
    "blanks_between_tokens": 'a { x = "1" } 1\n',
    "two_brace_groups": 'a{x="1"}{y="2"} 1\n',
    "label_without_quotes": "a{x=1} 1\n",
    "tab_separated": "a\t1\n",
    "no_value": "a\n",
    "colon_name": "a:b:c 1\n",
    "digit_first_name": "1a 1\n",
    "utf8_value": 'a{x="ÄÖ€"} 1\n',
    "exemplar_in_text": 'a 1 # {t="1"} 2\n',
    "comments": "# just a comment\n# HELP a h\n# TYPE a gauge\na 1\n#no space\nb 2\n",
    "type_after_sample": "a 1\n# TYPE a gauge\n",
    "help_escapes": "# HELP a x\\\\y\\nz\\tq\na 1\n",
    "help_without_text": "# HELP a\na 1\n",
    "type_two_blanks": "# TYPE a  gauge\na 1\n",
    "type_trailing_blank": "# TYPE a gauge \na 1\n",
    "unknown_type": "# TYPE u foo\nu 1\n",
    "untyped": "# TYPE u untyped\nu 1\n",
    "histogram": (
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
    ),
    "summary_then_other": (
        '# HELP s h\n# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 3\ns_count 2\nother 1\n'
    ),
    "counter_total": "# TYPE c counter\nc_total 5\n",
    "counter_plain": "# TYPE c counter\nc 5\n",
    "empty_body": "",
    "only_comments": "# HELP x y\n",
    "crlf": "a 1\r\nb 2\r\n",
    "cr_in_comment": "# c\r\na 1\n",
    "cr_in_label_value": 'a{x="1\r"} 1\n',
    "no_final_newline": "a 1",
    "metadata_last_without_newline": "a 1\n# TYPE a gauge",
    "blanks_at_end": "a 1  ",
    "blank_lines": "\n\na 1\n\n   \nb 2\n",
    "blanks_before_comment": "  # HELP a x\na 1\n",
    "blanks_before_sample": "a 1\n b 2\n",
    "tab_before_sample": "\ta 1\n",
    "job_and_instance_labels": 'a{job="other",instance="i"} 1\n',
    "exported_clash": 'a{job="x",exported_job="y",exported_exported_job="z",instance=""} 1\n',
    "duplicate_series": "a 1\na 2\n",
    "negative_zero": "a -0\nb -0.0\n",
}

OPENMETRICS: Final = {
    "plain": "# TYPE a gauge\na 1\n# EOF\n",
    "no_eof": "# TYPE a gauge\na 1\n",
    "eof_without_newline": "# TYPE a gauge\na 1\n# EOF",
    "data_after_eof": "# TYPE a gauge\na 1\n# EOF\nb 2\n",
    "counter": "# TYPE c counter\nc_total 5\nc_created 1700000000.5\n# EOF\n",
    "counter_without_total": "# TYPE c counter\nc 5\n# EOF\n",
    # kube-state-metrics, asked for OpenMetrics: info and counter families named as their
    # samples, a stateset, HELP before TYPE.
    "ksm_info": (
        "# HELP gotk_resource_info The current state of a Flux resource.\n"
        "# TYPE gotk_resource_info info\n"
        'gotk_resource_info{customresource_kind="Kustomization",name="a",ready="True"} 1\n'
        "# HELP kube_pod_container_status_restarts_total Restarts.\n"
        "# TYPE kube_pod_container_status_restarts_total counter\n"
        'kube_pod_container_status_restarts_total{pod="p"} 3\n'
        "# TYPE kube_node_status_condition stateset\n"
        'kube_node_status_condition{condition="Ready",status="true"} 1\n# EOF\n'
    ),
    "untyped_sample": "a 1\n# EOF\n",
    "unknown_type": "# TYPE a unknown\na 1\n# EOF\n",
    "invalid_type": "# TYPE a untyped\na 1\n# EOF\n",
    "timestamps": ("# TYPE a gauge\na 1 1700000000.123\nb 2 1700000000\nc 3 -1\nd 4 1e20\n# EOF\n"),
    "exemplar": '# TYPE c counter\nc_total 5 # {t="1"} 2 1700000000\n# EOF\n',
    "exemplar_on_a_gauge": '# TYPE g gauge\ng 5 # {t="1"} 2\n# EOF\n',
    "gaugehistogram": (
        '# TYPE g gaugehistogram\ng_bucket{le="1"} 1\ng_bucket{le="+Inf"} 2\n'
        "g_gcount 2\ng_gsum 3\n# EOF\n"
    ),
    "histogram": (
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 3\n# EOF\n'
    ),
    "histogram_without_inf": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\n# EOF\n',
    "summary": '# TYPE s summary\ns{quantile="0.5"} 1\ns_count 2\ns_sum 3\n# EOF\n',
    "unit": "# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n# EOF\n",
    "unit_not_a_suffix": "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n",
    "reserved_label": '# TYPE a gauge\na{__x="1"} 1\n# EOF\n',
    "special_values": "# TYPE a gauge\na NaN\nb +Inf\nc -Inf\n# EOF\n",
    "duplicate_label": '# TYPE a gauge\na{x="1",x="2"} 1\n# EOF\n',
    "empty_braces": "# TYPE a gauge\na{} 1\n# EOF\n",
    "family_split_in_two": (
        '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na{x="1"} 2\n# EOF\n'
    ),
    "help_escapes": '# HELP a x\\ny\\"q\n# TYPE a gauge\na 1\n# EOF\n',
    "blank_after_comma": '# TYPE a gauge\na{x="1", y="2"} 1\n# EOF\n',
    "trailing_comma": '# TYPE a gauge\na{x="1",} 1\n# EOF\n',
    "two_blanks": "# TYPE a gauge\na  1\n# EOF\n",
    "blank_line": "# TYPE a gauge\n\na 1\n# EOF\n",
    "plain_comment": "# hello\na 1\n# EOF\n",
    "help_without_text": "# HELP a\na 1\n# EOF\n",
    "crlf": "a 1\r\n# EOF\n",
    "out_of_range": "a 1e400\n# EOF\n",
}
FORMATS: Final = {
    "text": ("text/plain; version=0.0.4; charset=utf-8", TEXT),
    "openmetrics": ("application/openmetrics-text; version=1.0.0; charset=utf-8", OPENMETRICS),
}

# Cases where the relay differs on purpose → why (docs/scrape.md says each).
DIFFERENT: Final = {
    "openmetrics timestamps": (
        "samples with their own timestamps from before the start are sent; Prometheus' remote "
        "write skips what is older than its own start"
    ),
    "text duplicate_series": (
        "the relay sends a series once per scrape, its first sample, as a Prometheus server "
        "stores it; the agent's WAL sends both"
    ),
    "text negative_zero": (
        "the relay sends -0 as it is; Prometheus' protobuf leaves a zero value out, so -0 "
        "arrives as 0"
    ),
    "text timestamp": (
        "a sample with its own timestamp from before the start is sent; Prometheus' remote "
        "write skips what is older than its own start"
    ),
}
JOB_KEYS: Final[dict[str, dict[str, Any]]] = {
    "sample_limit 2": {"sample_limit": 2},
    "sample_limit 1": {"sample_limit": 1},
    "label_limit 4": {"label_limit": 4},
    "label_limit 3": {"label_limit": 3},
    "label_name_length_limit": {"label_name_length_limit": 1},
    "label_value_length_limit": {"label_value_length_limit": 1},
    "label_value_length_limit 9": {"label_value_length_limit": 9},
    "relabel drop": {
        "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "a", "action": "drop"}]
    },
    "relabel under sample_limit": {
        "sample_limit": 1,
        "metric_relabel_configs": [{"source_labels": ["x"], "regex": "y", "action": "drop"}],
    },
    "relabel rename": {
        "metric_relabel_configs": [
            {"source_labels": ["x"], "target_label": "__name__", "replacement": "c_$1"}
        ]
    },
    "relabel no name": {"metric_relabel_configs": [{"regex": "__name__", "action": "labeldrop"}]},
}
# Bodies also scraped by a job with honor_labels: true and honor_timestamps: false.
HONORED: Final = ("job_and_instance_labels", "exported_clash", "empty_label", "timestamp")
CASES: Final = [
    *(
        (f"{kind} {name}", kind, body, {})
        for kind, (_, found) in FORMATS.items()
        for name, body in found.items()
    ),
    *(
        (
            f"text {name} honored",
            "text",
            TEXT[name],
            {"honor_labels": True, "honor_timestamps": False},
        )
        for name in HONORED
    ),
    # The job's limits and metric relabeling, on one body.
    *(
        (f"text {name}", "text", 'a 1\nb{x="y",z="w"} 2\n', extra)
        for name, extra in JOB_KEYS.items()
    ),
]
REPORT_COUNTS: Final = frozenset(
    ("scrape_samples_scraped", "scrape_samples_post_metric_relabeling")
)
LEFT_OUT: Final = frozenset(("scrape_duration_seconds", "scrape_series_added"))
DOWN: Final = struct.pack("<d", 0.0).hex()
STALE: Final = struct.pack("<Q", 0x7FF0000000000002).hex()

Seen = tuple[Labels, str, int | None]  # labels without instance, value bits, explicit timestamp


class Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        _, kind, body, _ = CASES[int(self.path.rsplit("/", 1)[-1])]
        self.send_response(200)
        self.send_header("Content-Type", FORMATS[kind][0])
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """Remote write at ``/rw/<who>``: per sender and job, the samples by timestamp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: dict[str, dict[str, dict[int, set[tuple[Labels, str]]]]] = {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                who = self.path.rsplit("/", 1)[-1]
                body = self.rfile.read(int(self.headers["Content-Length"]))
                batch = rw1.decode(snappy.decompress(body, 1 << 26), validate=False)
                with receiver.lock:
                    jobs = receiver.got.setdefault(who, {})
                    for series in batch.series:
                        labels = tuple(p for p in series.labels if p[0] != "instance")
                        job = dict(labels).get("job", "")
                        for sample in series.samples:
                            bits = struct.pack("<d", sample.value).hex()
                            by_ts = jobs.setdefault(job, {})
                            by_ts.setdefault(sample.timestamp, set()).add((labels, bits))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def appended(self, who: str, job: str) -> frozenset[Seen] | None:
        """What a complete scrape of ``job`` appended: the report series of a scrape before
        the newest (which may still be arriving), one that succeeded if any did (the loaded
        exporter may time out a scrape now and then), and every sample but stale markers."""
        with self.lock:
            by_ts = {ts: set(found) for ts, found in self.got.get(who, {}).get(job, {}).items()}
        ups = {
            ts: bits
            for ts, found in by_ts.items()
            for x in found
            if _name(x) == "up"
            for bits in [x[1]]
        }
        scrapes = sorted(ups)
        if len(scrapes) < 3:
            return None
        done = scrapes[:-1]
        chosen = next((ts for ts in reversed(done) if ups[ts] != DOWN), done[-1])
        out: set[Seen] = set()
        for ts, found in by_ts.items():
            for labels, bits in found:
                name = _name((labels, bits))
                if (
                    name in LEFT_OUT
                    or bits == STALE
                    or (ups[chosen] == DOWN and name in REPORT_COUNTS)
                ):
                    continue
                if name == "up" or name in REPORT_COUNTS:
                    if ts == chosen:
                        out.add((labels, bits, None))
                elif ts in ups:
                    out.add((labels, bits, None))
                else:
                    out.add((labels, bits, ts))  # an explicit timestamp
        return frozenset(out)


def _name(found: tuple[Labels, str]) -> str:
    return dict(found[0]).get("__name__", "")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()
    with rig.serve_http(found.handler()) as url:
        yield found, url


def test_the_relay_scrapes_both_formats_as_prometheus_does(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    with contextlib.ExitStack() as stack:
        exporter = stack.enter_context(rig.serve_http(Exporter))
        target = exporter.removeprefix("http://")
        jobs = [
            {
                "job_name": f"case{i}",
                "scrape_interval": "2s",
                "scrape_timeout": "2s",
                "metrics_path": f"/m/{i}",
                "static_configs": [{"targets": [target]}],
                **CASES[i][3],
            }
            for i in range(len(CASES))
        ]
        fast = {"batch_send_deadline": "100ms", "min_backoff": "50ms", "max_backoff": "1s"}
        agent = rig.start_prometheus_agent_with(
            tmp_path,
            {
                "global": {"scrape_interval": "2s"},
                "scrape_configs": jobs,
                "remote_write": [{"url": f"{url}/rw/prometheus", "queue_config": fast}],
            },
        )
        stack.callback(agent.stop)
        relay_config = {
            "flux": {"mode": "off"},
            "federate": {"enabled": False},
            "scrape_configs": jobs,
            "remote_write": [{"url": f"{url}/rw/relay", "queue_config": fast}],
        }
        relay = rig.start_relay(tmp_path, json.dumps(relay_config))
        stack.callback(relay.stop)

        def every_job_scraped() -> bool:
            return all(
                found.appended(who, f"case{i}") is not None
                for who in ("prometheus", "relay")
                for i in range(len(CASES))
            )

        rig.eventually(every_job_scraped, deadline_s=DEADLINE_S, what="3 scrapes of every job")
        differ: list[str] = []
        same: list[str] = []
        for i, (name, _, body, _) in enumerate(CASES):
            prometheus = found.appended("prometheus", f"case{i}") or frozenset()
            relay_got = found.appended("relay", f"case{i}") or frozenset()
            if name in DIFFERENT:
                if prometheus == relay_got:  # no longer a difference: the list must say so
                    same.append(name)
            elif prometheus != relay_got:
                differ.append(
                    f"{name} {body!r}:\n  prometheus only: {sorted(prometheus - relay_got)}"
                    f"\n  relay only: {sorted(relay_got - prometheus)}"
                )
    assert not differ, "\n".join(differ)
    assert not same  # each listed difference is still one
