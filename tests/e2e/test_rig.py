"""The rig on its own, without the relay: the control group for ``test_relay_e2e``.

Each relay e2e test has a twin here in which the Prometheus agent writes straight to the
receivers. When a relay test fails and its twin passes, the fault is in the relay; when both
fail, it is in the rig or the environment. The twins also pin down what the receivers do with
edge-case values (VictoriaMetrics' decimal storage, NaN, stale markers), so that the relay tests
can assert exactly that and no more.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import rig

from .conftest import AgentStarter

DEADLINE_S = 45.0
"""Per wait. A new agent's first scrape alone takes ~5 s (Prometheus 2.42 applies discovered
targets on a fixed 5 s tick), then about 1 s to reach the receivers."""


# --------------------------------------------------------------------------------------------
# The pieces


def test_free_port_can_be_bound() -> None:
    """The port is on 127.0.0.1 and free, so a component can listen on it."""
    port = rig.free_port()
    with socket.socket() as sock:
        sock.bind((rig.HOST, port))


def test_free_ports_are_distinct_and_outside_the_range_of_outgoing_connections() -> None:
    """Two components started together never get the same port, and no client connection can
    take a port between the probe and the component's bind: the kernel draws outgoing local
    ports from the ephemeral range only (a CI run once lost a relay to exactly that race)."""
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [rig.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= port < low for port in ports)
    with socket.create_server((rig.HOST, 0)) as server:
        client = socket.create_connection(server.getsockname())
        with client:
            assert client.getsockname()[1] >= low  # what the ports above stay clear of


def test_eventually_returns_value_or_reports_last_observation() -> None:
    """Polling ends at the first truthy value; a timeout names the last value seen."""
    calls = iter(range(100))
    assert rig.eventually(lambda: next(calls) >= 2 and "done", 5.0, 0.01) == "done"

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"never not met within 0.3s; last observed: 0"):
        rig.eventually(lambda: 0, 0.3, 0.05, what="never")
    assert time.monotonic() - started < 2.0

    def failing() -> bool:
        raise AssertionError("still wrong")

    with pytest.raises(AssertionError, match="AssertionError: still wrong"):
        rig.eventually(failing, 0.2, 0.05)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, waiting to be reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_proc_logs_and_escalates_to_sigkill(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is SIGKILLed after the grace period, found by its PID."""
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(60)\n"
    )
    with rig.Proc("stubborn", [sys.executable, "-c", code], tmp_path) as proc:
        # The first log line is the command, which contains the marker too.
        rig.eventually(lambda: proc.log_text().count("ignoring SIGTERM") == 2, 10.0, 0.05)
        assert proc in rig.live_procs()
        started = time.monotonic()
        assert proc.stop(timeout_s=0.5) == -signal.SIGKILL
        assert 0.5 <= time.monotonic() - started < 5.0
    assert not _running(proc.pid)
    assert proc not in rig.live_procs()
    assert proc.log_text().splitlines()[0].startswith(f"# {sys.executable} -c 'import signal")


def test_children_die_with_the_test_process(tmp_path: Path) -> None:
    """If pytest itself is SIGKILLed, the kernel kills what the rig started (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.support import rig\n"
        "p = rig.Proc('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'],"
        f" Path({str(tmp_path)!r}))\n"
        f"Path({str(pid_file)!r}).write_text(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    # -c puts the working directory on the path: the repository's root, for tests.support.
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=rig.REPO_ROOT)
    grandchild = 0
    try:
        rig.eventually(pid_file.exists, 10.0, 0.05, what="sleeper started")
        grandchild = int(pid_file.read_text())
        assert _running(grandchild)
        parent.kill()
        parent.wait(timeout=10)
        rig.eventually(lambda: not _running(grandchild), 10.0, 0.05, what="sleeper gone")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if grandchild and _running(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_static_exporter_serves_replaced_text() -> None:
    """The exporter serves whatever was set last and counts scrapes."""
    with rig.StaticExporter("a 1\n") as exporter:
        assert rig.http_get_text(exporter.url) == "a 1\n"
        exporter.set_text("b 2\n")
        assert rig.http_get_text(exporter.url) == "b 2\n"
        assert exporter.scrapes == 2
        status, _, _ = rig.http_request(f"http://{exporter.target}/other")
        assert status == 404


def test_exposition_round_trip() -> None:
    """Rendering and parsing agree, escapes and special floats included."""
    families = rig.reference_families()
    parsed = rig.parse_exposition(rig.render_exposition(families))
    want = [sample for family in families for sample in family.samples]
    assert [(p.name, dict(p.labels)) for p in parsed] == [(w.name, dict(w.labels)) for w in want]
    for got, expected in zip(parsed, want, strict=True):
        assert rig.same_value(got.value, expected.value), (got, expected)
        assert math.copysign(1, got.value) == math.copysign(1, expected.value)


def test_vm_exactness_rule() -> None:
    """The rule the VM checks rely on, on values whose fate was measured against VM 1.79."""
    for exact in (0.0, 21.5, -40.0, 1e-9, 2.5e-9, 1e300, -1e300, 0.001, 6.02214076e23, 2.0**53):
        assert rig.vm_keeps_exactly(exact), exact
    for rounded in (1 / 3, math.pi, 0.1 + 0.2, 123456789.12345679, 5e-324):
        assert not rig.vm_keeps_exactly(rounded), rounded


# --------------------------------------------------------------------------------------------
# Real components, agent writing straight to the receivers


def test_agent_writes_same_samples_to_prometheus_and_vm(
    prom_receiver: rig.Prom,
    victoria_metrics: rig.VM,
    exporter: rig.StaticExporter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """Every reference series arrives in both receivers with all scraped labels and its value.

    Prometheus must hold every float64 bit-exact (NaN included); VictoriaMetrics drops NaN,
    keeps :func:`rig.vm_keeps_exactly` values exact and the rest within :data:`rig.VM_REL_TOL`.
    """
    families = rig.reference_families()
    exporter.set_text(rig.render_exposition(families))
    start_agent(
        [exporter.target],
        [prom_receiver.write_url, victoria_metrics.write_url],
        job_name=job_name,
    )
    expected = rig.expected_series(families, job=job_name, instance=exporter.target)
    selector = rig.scraped_selector(job_name)

    rig.await_samples(prom_receiver, selector, expected, deadline_s=DEADLINE_S)
    in_vm = rig.await_samples(
        victoria_metrics,
        selector,
        rig.without_nan(expected),
        rel_tol=rig.VM_REL_TOL,
        deadline_s=DEADLINE_S,
    )
    assert rig.diff_vm_exact(in_vm, expected) == []
    # The rounding really happens, so the tolerance is needed and not hiding anything else.
    third = next(k for k in expected if ("which", "third") in k)
    assert in_vm[third] != expected[third]


def test_stale_marker_reaches_receivers(
    prom_receiver: rig.Prom,
    victoria_metrics: rig.VM,
    exporter: rig.StaticExporter,
    start_agent: AgentStarter,
    job_name: str,
) -> None:
    """A series that vanishes from the target is ended by a stale marker in both receivers."""
    keep, gone = rig.stale_scenario_families()
    exporter.set_text(rig.render_exposition([keep, gone]))
    start_agent(
        [exporter.target],
        [prom_receiver.write_url, victoria_metrics.write_url],
        job_name=job_name,
    )
    selector = rig.scraped_selector(job_name)
    both = rig.expected_series([keep, gone], job=job_name, instance=exporter.target)
    rig.await_samples(prom_receiver, selector, both, deadline_s=DEADLINE_S)
    rig.await_samples(victoria_metrics, selector, both, deadline_s=DEADLINE_S)

    exporter.set_text(rig.render_exposition([keep]))
    gone_selector = f'{gone.name}{{job="{job_name}"}}'
    rig.await_stale(prom_receiver, gone_selector, deadline_s=DEADLINE_S)
    rig.await_vm_stale_marker(victoria_metrics, gone_selector, deadline_s=DEADLINE_S)
    only_keep = rig.expected_series([keep], job=job_name, instance=exporter.target)
    assert rig.diff_samples(prom_receiver.samples(selector), only_keep) == []
