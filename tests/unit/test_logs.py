"""Log lines as Prometheus' promlog writes them: ``ts``, ``caller``, ``level``, then the
message and the fields, in logfmt or JSON."""

from __future__ import annotations

import json
import logging
import re

from gotk_relay.logs import JSONFormatter, LogfmtFormatter


def _record() -> logging.LogRecord:
    record = logging.getLogger("gotk_relay.delivery").makeRecord(
        "gotk_relay.delivery",
        logging.WARNING,
        "/src/gotk_relay/delivery/sender.py",
        42,
        "retrying %s",
        ("later",),
        None,
        extra={"destination": "mimir", "err": 'said "no"'},
    )
    record.created = 1_700_000_000.5
    return record


def test_logfmt_has_prometheus_keys_in_their_order() -> None:
    line = LogfmtFormatter().format(_record())
    assert line == (
        "ts=2023-11-14T22:13:20.500Z caller=sender.py:42 level=warn component=delivery "
        'msg="retrying later" destination=mimir err="said \\"no\\""'
    )
    assert re.match(r"^ts=\S+ caller=\S+:\d+ level=", line)


def test_json_has_the_same_fields() -> None:
    fields = json.loads(JSONFormatter().format(_record()))
    assert list(fields)[:5] == ["ts", "caller", "level", "component", "msg"]
    assert fields["caller"] == "sender.py:42" and fields["err"] == 'said "no"'


def test_a_field_named_as_a_log_record_attribute_is_written_under_its_own_name() -> None:
    # ``logging`` refuses ``extra={"filename": ...}``; Prometheus' reload line has that key.
    record = logging.getLogger("gotk_relay.cli").makeRecord(
        "gotk_relay.cli",
        logging.INFO,
        "/src/gotk_relay/cli/serve.py",
        7,
        "completed loading of configuration file",
        (),
        None,
        extra={"filename_": "/etc/relay.yml", "totalDuration": "1.250ms"},
    )
    line = LogfmtFormatter().format(record)
    assert line.endswith(
        'msg="completed loading of configuration file" filename=/etc/relay.yml '
        "totalDuration=1.250ms"
    )
    assert json.loads(JSONFormatter().format(record))["filename"] == "/etc/relay.yml"
