"""The status page in a real browser: a relay process, real writes, headless Chromium.

A relay started as in production (``python -m gotk_relay serve``) forwards to a real
VictoriaMetrics (``vm``) and to a port where nothing listens (``down``). The test writes a few
Flux objects as kube-state-metrics reports them and one request the relay refuses, then opens
``/`` in Debian's ``chromium`` (``--headless --dump-dom``): the DOM the browser built must hold
both destinations with their states, every object row and the refusal. A screenshot is saved in
the test's tmp dir (its path is printed) for a human to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from gotk_relay.model import Batch, Series
from gotk_relay.wire import rw1, snappy
from tests.support import rig
from tests.support.status_page import Parsed, ksm, parse, series

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM_TIMEOUT_S = 90.0


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("this test opens the page in Debian's chromium: apt-get install chromium")
    return found


def browse(url: str, tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless on ``url`` with ``flags``; its own profile under ``tmp``."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *flags,
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def helm_release(name: str, namespace: str, now: int) -> Series:
    return series(
        "gotk_resource_info",
        1.0,
        now,
        customresource_group="helm.toolkit.fluxcd.io",
        customresource_kind="HelmRelease",
        customresource_version="v2",
        exported_namespace=namespace,
        name=name,
        ready="True",
        suspended="true",
        namespace="monitoring",
        job="kube-state-metrics",
    )


def write(relay: rig.Relay, batch: Batch, encoding: str = "snappy") -> int:
    status, _, _ = rig.http_request(
        relay.write_url,
        method="POST",
        data=snappy.compress(rw1.encode(batch)),
        headers={
            "Content-Type": rw1.CONTENT_TYPE,
            "Content-Encoding": encoding,
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
    )
    return status


def objects(parsed: Parsed) -> list[list[str]]:
    return [parsed.cells[i : i + 6] for i in range(len(parsed.cells))]


def test_status_page_in_headless_chromium(
    tmp_path: Path, teardown: ExitStack, victoria_metrics: rig.VM
) -> None:
    down = rig.free_port()
    # Its queue for `down` never drains: a short --shutdown-timeout ends the relay at once when
    # the test is over, instead of after the e2e default's 5 s of retries nobody waits for.
    relay = rig.start_relay(
        tmp_path,
        f"""
flux: {{mode: legacy}}
remote_write:
  - name: vm
    url: {victoria_metrics.write_url}
  - name: down
    url: http://127.0.0.1:{down}/api/v1/write
    queue_config: {{min_backoff: 50ms, max_backoff: 200ms}}
""",
        shutdown_timeout_s=0.5,
    )
    teardown.callback(relay.stop)
    now = int(time.time() * 1000)
    flux = Batch(
        (
            ksm("apps", "team-a", ready="False", ts=now),
            ksm("infra", "team-b", ready="True", ts=now),
            helm_release("podinfo", "team-a", now),
        )
    )
    assert write(relay, flux) == 204
    assert write(relay, flux, encoding="gzip") == 415  # refused: shown with its reason
    rig.eventually(
        lambda: (
            "destination down: failing"
            in rig.http_request(relay.base_url + "/", headers={"Accept": "text/plain"})[2].decode()
        ),
        30.0,
        what="the unreachable destination shown failing",
    )

    dom = browse(relay.base_url + "/", tmp_path, "--dump-dom").stdout
    parsed = parse(dom)
    states = {
        attrs["data-destination"]: index
        for index, (tag, attrs) in enumerate(parsed.tags)
        if tag == "tr" and attrs.get("data-destination")
    }
    assert set(states) == {"vm", "down"}, dom[:2000]
    rows = objects(parsed)
    assert ["HelmRelease", "team-a", "podinfo", "True", "true", "ksm"] in rows
    assert ["Kustomization", "team-a", "apps", "False", "false", "ksm"] in rows
    assert ["Kustomization", "team-b", "infra", "True", "false", "ksm"] in rows
    assert parsed.object_rows == 3
    cells = parsed.cells
    assert any(c.startswith("failing") for c in cells), cells[:12]
    assert any(c.startswith("healthy") for c in cells), cells[:12]
    assert any(c == "unsupported_encoding" for c in cells)
    assert "connect_error" in dom  # the unreachable one's last error

    filtered = parse(browse(relay.base_url + "/?ready=False", tmp_path, "--dump-dom").stdout)
    assert filtered.object_rows == 1

    screenshot = tmp_path / "status-page.png"
    browse(relay.base_url + "/", tmp_path, f"--screenshot={screenshot}", "--window-size=1400,1600")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000
    print(f"status page screenshot: {screenshot}")
