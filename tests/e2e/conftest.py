"""Fixtures that run real Prometheus, VictoriaMetrics, exporters, agents and relays for e2e tests.

Receivers are session-scoped: they start in well under a second but every test would otherwise
pay for another TSDB, and tests stay independent by using their own ``job`` label. Exporters,
agents and relays are per test because each test configures them differently. Every component
is stopped by a finalizer (in reverse start order, so an agent stops before the relay it writes
to); :mod:`rig` adds an ``atexit`` hook and ``PR_SET_PDEATHSIG`` behind that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support import rig

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Refuse to run e2e tests without the real binaries: a skip would hide that nothing ran."""
    if not any(E2E_DIR in Path(item.path).parents for item in items):
        return
    missing = rig.missing_binaries()
    if missing:
        raise pytest.UsageError(
            f"e2e tests need {', '.join(missing)}, not found; run `{rig.INSTALL_HINT}` "
            "(or point GOTK_E2E_<NAME>_BIN at a binary)"
        )


_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note how far each running component's log got, to report only this test's part."""
    item.stash[_LOG_OFFSETS] = {proc.pid: proc.log_size() for proc in rig.live_procs()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach what running components logged during a failing test to its report.

    When data does not arrive, the reason is usually in a log (a rejected write, a crash), and
    the per-test components are gone by the time anyone could look.
    """
    report = yield
    if report.failed:
        offsets = item.stash.get(_LOG_OFFSETS, {})
        for proc in rig.live_procs():
            tail = proc.log_tail(30, since=offsets.get(proc.pid, 0))
            if tail:
                report.sections.append((f"{proc.name} log ({proc.log_path})", tail))
    return report


@pytest.fixture(scope="session")
def e2e_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for session-scoped components' data and logs."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def prom_receiver(e2e_tmp: Path) -> Iterator[rig.Prom]:
    """A Prometheus 2.x accepting remote write 1.0, shared by the session."""
    prom = rig.start_prometheus_receiver(e2e_tmp)
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def victoria_metrics(e2e_tmp: Path) -> Iterator[rig.VM]:
    """A single-node VictoriaMetrics, shared by the session."""
    vm = rig.start_victoria_metrics(e2e_tmp)
    try:
        yield vm
    finally:
        vm.stop()


@pytest.fixture
def teardown() -> Iterator[ExitStack]:
    """Stops what a test's starter fixtures started, last started first."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def exporter(teardown: ExitStack) -> rig.StaticExporter:
    """A scrape target serving nothing until the test calls ``set_text``."""
    return teardown.enter_context(rig.StaticExporter())


@pytest.fixture
def job_name(request: pytest.FixtureRequest) -> str:
    """A ``job`` label unique to the test, so shared receivers do not mix tests' series."""
    return f"e2e_{request.node.name}".replace("[", "_").replace("]", "").replace("-", "_")


class AgentStarter(Protocol):
    """Signature of the ``start_agent`` fixture (see :func:`rig.start_prometheus_agent`)."""

    def __call__(
        self,
        scrape_targets: Sequence[str],
        remote_write_url: str | Sequence[str],
        scrape_interval: str = "1s",
        extra_remote_write: dict[str, Any] | None = None,
        *,
        job_name: str = "e2e",
        extra_scrape_config: dict[str, Any] | None = None,
    ) -> rig.PromAgent: ...


class VMAgentStarter(Protocol):
    """Signature of the ``start_vmagent`` fixture (see :func:`rig.start_vmagent`)."""

    def __call__(
        self,
        scrape_configs: Sequence[dict[str, Any]],
        remote_writes: Sequence[rig.VMAgentRemoteWrite],
        *,
        flags: Sequence[str] = (),
    ) -> rig.VMAgent: ...


class RelayStarter(Protocol):
    """Signature of the ``start_relay`` fixture (see :func:`rig.start_relay`)."""

    def __call__(self, config_yaml: str) -> rig.Relay: ...


@pytest.fixture
def start_agent(tmp_path: Path, teardown: ExitStack) -> AgentStarter:
    """Start a Prometheus agent that is stopped when the test ends."""

    def start(
        scrape_targets: Sequence[str],
        remote_write_url: str | Sequence[str],
        scrape_interval: str = "1s",
        extra_remote_write: dict[str, Any] | None = None,
        *,
        job_name: str = "e2e",
        extra_scrape_config: dict[str, Any] | None = None,
    ) -> rig.PromAgent:
        agent = rig.start_prometheus_agent(
            tmp_path,
            scrape_targets,
            remote_write_url,
            scrape_interval,
            extra_remote_write,
            job_name=job_name,
            extra_scrape_config=extra_scrape_config,
        )
        teardown.callback(agent.stop)
        return agent

    return start


@pytest.fixture
def start_vmagent(tmp_path: Path, teardown: ExitStack) -> VMAgentStarter:
    """Start a vmagent that is stopped when the test ends."""

    def start(
        scrape_configs: Sequence[dict[str, Any]],
        remote_writes: Sequence[rig.VMAgentRemoteWrite],
        *,
        flags: Sequence[str] = (),
    ) -> rig.VMAgent:
        agent = rig.start_vmagent(tmp_path, scrape_configs, remote_writes, flags=flags)
        teardown.callback(agent.stop)
        return agent

    return start


@pytest.fixture
def start_relay(tmp_path: Path, teardown: ExitStack) -> RelayStarter:
    """Start gotk-relay from ``src/`` with the given YAML; stopped when the test ends."""

    def start(config_yaml: str) -> rig.Relay:
        relay = rig.start_relay(tmp_path, config_yaml)
        teardown.callback(relay.stop)
        return relay

    return start
