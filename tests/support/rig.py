"""End-to-end test rig: run the real components of a remote-write pipeline on 127.0.0.1.

The relay only earns trust if real Prometheus and VictoriaMetrics accept what it forwards, so
this module starts the genuine Debian binaries (``prometheus`` as remote-write receiver and as
scraping agent, ``victoria-metrics`` single node, ``vmagent`` as a second kind of sender), a
scrape target whose exposition the test controls (:class:`StaticExporter`) and the relay itself,
and talks to them over their HTTP APIs.

Ground rules, all enforced here so that tests cannot forget them:

* Everything listens on ``127.0.0.1`` on a port from :func:`free_port`.
* Every wait is a poll of a condition with a deadline (:func:`eventually`, :func:`wait_http`);
  nothing sleeps "long enough".
* No child outlives the test session: :class:`Proc` is stopped by the fixtures' finalizers, by an
  ``atexit`` hook as a second line, and by the kernel (``PR_SET_PDEATHSIG``) if pytest itself is
  killed.
* Configuration files are written as JSON, which every YAML parser reads too, so the rig needs
  no YAML library.

Only the standard library is used, so the rig runs before the relay's dependencies exist.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"

#: Debian package that ships each binary the rig needs, for the "please install" message.
REQUIRED_BINARIES: Mapping[str, str] = {
    "prometheus": "prometheus",
    "victoria-metrics": "victoria-metrics",
    "vmagent": "victoria-metrics",
}
INSTALL_HINT = "apt-get install prometheus victoria-metrics"

#: Series Prometheus synthesises for each scrape rather than reading them from the target.
SYNTHETIC_SCRAPE_SERIES = re.compile(r"up|scrape_.*")

T = TypeVar("T")
LabelKey = tuple[tuple[str, str], ...]
"""A series identity: its labels (``__name__`` included) as a sorted tuple, hashable."""


class RigError(RuntimeError):
    """A component of the rig could not be started or answered unexpectedly."""


# --------------------------------------------------------------------------------------------
# Binaries, ports, polling


def binary_path(name: str) -> str | None:
    """Where ``name`` is installed, or None.

    ``GOTK_E2E_<NAME>_BIN`` (``-`` becomes ``_``, upper case) overrides the lookup, so a
    developer can point the rig at another build without touching the tests.
    """
    override = os.environ.get(f"GOTK_E2E_{name.upper().replace('-', '_')}_BIN")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    return found


def missing_binaries() -> list[str]:
    """Required binaries that cannot be found; empty when the rig can run."""
    return [name for name in REQUIRED_BINARIES if binary_path(name) is None]


def require_binary(name: str) -> str:
    """The path of ``name``, or a :class:`RigError` saying how to install it."""
    path = binary_path(name)
    if path is None:
        raise RigError(f"{name!r} not found: run `{INSTALL_HINT}`")
    return path


def promtool_check_config(path: Path) -> tuple[bool, str]:
    """``promtool check config`` (Prometheus 2.42) on ``path``: whether it takes the file, and
    what it printed."""
    done = subprocess.run(
        [require_binary("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


#: Where the kernel says its ephemeral range starts when /proc cannot be read (Linux default).
_EPHEMERAL_LOW_DEFAULT = 32768
#: The lowest port handed out: clear of the well-known and most registered service ports.
_PORT_FLOOR = 10000
_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_LOW_DEFAULT


def _bindable(port: int) -> bool:
    # No SO_REUSEADDR: a port with a connection still in TIME_WAIT counts as taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a component to listen on, never the same twice per process.

    Not ``bind(0)``: that draws from the kernel's ephemeral range, which is also where every
    outgoing connection gets its local port. Between the probe and the component's own bind,
    a client connection elsewhere in the test (a load generator, a relay's sender) could take
    the port, and the component then fails with "address already in use" (seen in CI). Ports
    below the ephemeral range are only ever taken by an explicit bind. The walk starts at an
    offset derived from the process id, so concurrent test processes take different ports.
    """
    low = _PORT_FLOOR
    high = max(_ephemeral_low(), low + 1000)  # exclusive; a tiny or odd range still leaves room
    span = high - low
    with _ports_lock:
        start = (os.getpid() * 7919 + len(_ports_handed_out)) % span
        for step in range(span):
            port = low + (start + step) % span
            if port not in _ports_handed_out and _bindable(port):
                _ports_handed_out.add(port)
                return port
    raise RigError(f"no free TCP port on {HOST} in [{low}, {high})")


def eventually(
    predicate: Callable[[], T],
    deadline_s: float,
    interval_s: float = 0.2,
    *,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Used for every assertion about data that travels asynchronously (scrape, queue, relay,
    storage). An exception from ``predicate`` counts as "not yet" so that a receiver that is
    still starting or an assertion inside the predicate does not end the wait early; on timeout
    an :class:`AssertionError` reports the last value (or exception) observed, which is what
    tells apart "never arrived" from "arrived wrong".
    """
    deadline = time.monotonic() + deadline_s
    last: object = "<predicate never evaluated>"
    while True:
        try:
            value = predicate()
        except Exception as exc:  # reported on timeout, see docstring
            last = exc
        else:
            if value:
                return value
            last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen = f"{type(last).__name__}: {last}" if isinstance(last, Exception) else repr(last)
            raise AssertionError(f"{what} not met within {deadline_s:g}s; last observed: {seen}")
        time.sleep(min(interval_s, remaining))


def http_request(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange; returns ``(status, headers, body)`` for any status, raises on I/O error.

    A proxy from the environment must never see test traffic, so proxies are disabled.
    """
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get_text(url: str, *, timeout_s: float = 10.0) -> str:
    """GET ``url`` and return the body as text; anything but 200 is a :class:`RigError`."""
    status, _, body = http_request(url, timeout_s=timeout_s)
    if status != 200:
        raise RigError(f"GET {url} -> {status}: {body[:500]!r}")
    return body.decode()


def wait_http(
    url: str,
    deadline_s: float,
    *,
    proc: Proc | None = None,
    interval_s: float = 0.1,
) -> None:
    """Poll ``url`` until it answers 200, at most ``deadline_s`` seconds.

    Passing the ``proc`` that should serve it turns a crash into an immediate error carrying
    the process log, instead of a timeout that hides why.
    """
    deadline = time.monotonic() + deadline_s
    last = "no attempt"
    while True:
        if proc is not None and not proc.alive:
            raise RigError(
                f"{proc.name} exited with {proc.returncode} before {url} was ready; "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            status, _, body = http_request(url, timeout_s=2.0)
        except OSError as exc:
            last = repr(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        if time.monotonic() >= deadline:
            tail = f"\nlog {proc.log_path}:\n{proc.log_tail()}" if proc is not None else ""
            raise RigError(f"{url} not ready within {deadline_s:g}s (last: {last}){tail}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------------------------
# Processes


_LIVE: dict[int, Proc] = {}
_LIVE_LOCK = threading.Lock()

# Runs in the child between fork and exec of the real binary: ask the kernel to SIGKILL the
# child when its parent dies, so even a SIGKILLed pytest leaves nothing behind. Done in a fresh
# interpreter rather than via ``preexec_fn``, which is unsafe in a threaded parent (the exporter
# threads). PR_SET_PDEATHSIG is 1; the getppid check closes the race with an already dead parent.
_PDEATHSIG_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (default: ours) with 127.0.0.1 exempt from any proxy a developer has configured,
    so that a component honouring proxy variables still talks to its neighbours directly."""
    result = dict(os.environ if env is None else env)
    for key in ("NO_PROXY", "no_proxy"):
        result[key] = ",".join(p for p in (f"{HOST},localhost", result.get(key, "")) if p)
    return result


class Proc:
    """A child process whose output goes to ``<log_dir>/<name>.log``.

    :meth:`stop` sends SIGTERM to the recorded PID, waits up to ``timeout_s`` seconds and then
    sends SIGKILL, so a component that hangs on shutdown cannot hang the suite. On Linux the
    child also dies with the thread that started it (``PR_SET_PDEATHSIG``); start processes from
    the main thread, as pytest fixtures do.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        executable = shutil.which(self.argv[0]) or self.argv[0]
        launch = self.argv
        if sys.platform == "linux":
            launch = [sys.executable, "-c", _PDEATHSIG_LAUNCHER, str(os.getpid()), executable]
            launch += self.argv[1:]
        with open(self.log_path, "ab") as log:
            # The command line heads the log, on one line even if an argument has newlines.
            command = shlex.join(self.argv).replace("\n", "\\n")
            log.write(f"# {command}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                launch,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(env),
                cwd=cwd,
            )
        self.pid: int = self._popen.pid
        with _LIVE_LOCK:
            _LIVE[self.pid] = self

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while running."""
        return self._popen.poll()

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._popen.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit status.

        Idempotent: stopping a process that already exited just returns its status.
        """
        try:
            if self._popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                try:
                    return self._popen.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                    return self._popen.wait(timeout=10.0)
            return self._popen.returncode
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(self.pid, None)

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40, *, since: int = 0) -> str:
        """The last ``lines`` lines of the log (from byte ``since`` on), for error messages."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_size(self) -> int:
        """Bytes logged so far; pass to :meth:`log_tail` to see only what came after."""
        return self.log_path.stat().st_size

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.returncode}"
        return f"<Proc {self.name} pid={self.pid} {state}>"


def live_procs() -> list[Proc]:
    """Processes started by the rig and not yet stopped (for failure reports)."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


@atexit.register
def _stop_leftovers() -> None:
    """Second line of defence after the fixtures' finalizers: stop whatever is still running."""
    with _LIVE_LOCK:
        leftovers = list(_LIVE.values())
    for proc in leftovers:
        proc.stop(timeout_s=5.0)


def _component_dir(tmp: Path, kind: str) -> Path:
    """A fresh directory under ``tmp`` for one component's data, config and log."""
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp))


# --------------------------------------------------------------------------------------------
# Prometheus HTTP API (spoken by Prometheus and VictoriaMetrics alike)


def _time_param(value: float | str | None) -> str | None:
    return None if value is None else str(value)


@dataclass
class _Service:
    """A running component: its process, port and base URL."""

    proc: Proc
    port: int
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        self.proc.stop()

    def metrics_text(self) -> str:
        """The component's own ``/metrics`` page."""
        return http_get_text(f"{self.base_url}/metrics")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class _PromAPI(_Service):
    """Client for the query API shared by Prometheus and VictoriaMetrics."""

    @property
    def write_url(self) -> str:
        """Remote-write endpoint (protobuf + snappy)."""
        return f"{self.base_url}/api/v1/write"

    def api(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; an error status is a :class:`RigError`."""
        url = f"{self.base_url}/api/v1/{path}?{urllib.parse.urlencode(list(params))}"
        status, _, body = http_request(url)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise RigError(f"GET {url} -> {status}: not JSON: {body[:300]!r}") from exc
        if status != 200 or doc.get("status") != "success":
            raise RigError(f"GET {url} -> {status}: {doc}")
        return doc["data"]

    def query(self, promql: str, time: float | str | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (``[{"metric": {...}, "value": [t, v]}]``)."""
        params = [("query", promql)]
        if (t := _time_param(time)) is not None:
            params.append(("time", t))
        data = self.api("query", params)
        if data["resultType"] != "vector":
            raise RigError(f"{promql!r} returned a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, promql: str, start: float | str, end: float | str, step: float | str
    ) -> list[dict[str, Any]]:
        """Range query; returns the result matrix (``[{"metric": {...}, "values": [...]}]``)."""
        params = [("query", promql), ("start", str(start)), ("end", str(end)), ("step", str(step))]
        data = self.api("query_range", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(
        self,
        match: str | Sequence[str],
        start: float | str | None = None,
        end: float | str | None = None,
    ) -> list[dict[str, str]]:
        """Label sets of the series matching the selector(s), as ``/api/v1/series`` lists them."""
        matches = [match] if isinstance(match, str) else list(match)
        params = [("match[]", m) for m in matches]
        if (s := _time_param(start)) is not None:
            params.append(("start", s))
        if (e := _time_param(end)) is not None:
            params.append(("end", e))
        result: list[dict[str, str]] = self.api("series", params)
        return result

    def samples(self, promql: str) -> dict[LabelKey, float]:
        """Instant query reduced to ``{labels: value}``; the form tests compare against."""
        return vector_to_samples(self.query(promql))


@dataclass
class Prom(_PromAPI):
    """A Prometheus server with the remote-write receiver enabled."""


@dataclass
class PromAgent(_Service):
    """A Prometheus in agent mode: scrapes targets and remote-writes, stores nothing queryable."""

    config_path: Path

    def remote_write_counters(self) -> dict[str, float]:
        """``prometheus_remote_storage_*_total`` counters summed over queues, for diagnostics."""
        totals: dict[str, float] = {}
        for sample in parse_exposition(self.metrics_text()):
            if sample.name.startswith("prometheus_remote_storage_") and sample.name.endswith(
                "_total"
            ):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals


@dataclass
class VM(_PromAPI):
    """A single-node VictoriaMetrics."""

    def flush(self) -> None:
        """Make buffered rows searchable now (``/internal/force_flush``) instead of within ~1 s."""
        status, _, body = http_request(f"{self.base_url}/internal/force_flush")
        if status != 200:
            raise RigError(f"force_flush -> {status}: {body[:200]!r}")

    def query(self, promql: str, time: float | str | None = None) -> list[dict[str, Any]]:
        """Instant query after a :meth:`flush`, so that just-written samples are included."""
        self.flush()
        return super().query(promql, time)

    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw stored samples via ``/api/v1/export`` (JSON lines), bypassing query evaluation."""
        self.flush()
        url = f"{self.base_url}/api/v1/export?{urllib.parse.urlencode({'match[]': match})}"
        status, _, body = http_request(url)
        if status != 200:
            raise RigError(f"GET {url} -> {status}: {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def vector_to_samples(result: Iterable[Mapping[str, Any]]) -> dict[LabelKey, float]:
    """Turn an instant-query vector into ``{sorted labels: value}``.

    Both servers print values as strings in Go's shortest round-trip form (``"+Inf"``,
    ``"NaN"``, ``"1e-09"``), so ``float()`` recovers the stored float64 exactly.
    """
    samples: dict[LabelKey, float] = {}
    for item in result:
        samples[label_key(item["metric"])] = float(item["value"][1])
    return samples


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """Hashable identity of a label set."""
    return tuple(sorted(labels.items()))


#: How far a finite value read back from VictoriaMetrics 1.79 may be from what was written.
#:
#: VM does not store float64: ``lib/decimal.FromFloat`` turns each value into an int64 mantissa
#: times a power of ten, multiplying a non-integral value by 100 until its fractional part is
#: below 1e-12 of its integer part (1e-15 above 1e6) and truncating the rest. Measured with this
#: rig: 0, ±Inf, integers below 2**55 and values with at most 12 significant digits between
#: about 1e-300 and 1e300 (1e-9, 2.5e-9, 1e300, 0.001, -3.5, 6.02214076e23) come back bit-exact;
#: 1/3 comes back as 0.333333333333, pi as 3.141592653589, 0.1 + 0.2 as 0.3 (all within 1e-12
#: relative); values under about 1e-307 (subnormals) come back as 0. The remaining error after
#: the decimal conversion is a few float64 roundings, hence twice 1e-12. Ordinary NaN samples
#: are dropped on ingestion; the stale-marker NaN is kept (``/api/v1/export`` shows ``null``).
VM_REL_TOL = 2e-12


def vm_keeps_exactly(value: float) -> bool:
    """Whether VictoriaMetrics 1.79 returns ``value`` bit-exact (see :data:`VM_REL_TOL`).

    True for 0, ±Inf, integers below 2**55, and values between 1e-300 and 1e300 whose shortest
    decimal form has at most 12 significant digits. Conservative: some other values survive too.
    """
    if value == 0.0 or math.isinf(value):
        return True
    if math.isnan(value):
        return False
    if value.is_integer() and abs(value) < 2**55:
        return True
    if not 1e-300 <= abs(value) <= 1e300:
        return False
    digits = repr(abs(value)).split("e")[0].replace(".", "").strip("0")
    return len(digits) <= 12


def diff_vm_exact(
    actual: Mapping[LabelKey, float], expected: Mapping[LabelKey, float]
) -> list[str]:
    """Differences on the series whose value VictoriaMetrics must keep bit-exact."""
    exact = {k: v for k, v in expected.items() if vm_keeps_exactly(v)}
    return diff_samples({k: v for k, v in actual.items() if k in exact}, exact)


def same_value(actual: float, expected: float, rel_tol: float = 0.0) -> bool:
    """Float equality for stored samples: NaN equals NaN, infinities and zero must match exactly,
    other values exactly or (``rel_tol`` > 0) within that relative tolerance."""
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    if actual == expected:
        return True
    if rel_tol == 0.0 or math.isinf(expected) or expected == 0.0:
        return False
    return math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=0.0)


def diff_samples(
    actual: Mapping[LabelKey, float],
    expected: Mapping[LabelKey, float],
    *,
    rel_tol: float = 0.0,
) -> list[str]:
    """Human-readable differences between two ``{labels: value}`` maps; empty if they agree."""
    problems: list[str] = []
    for key, want in expected.items():
        if key not in actual:
            problems.append(f"missing {format_key(key)} (want {want!r})")
        elif not same_value(actual[key], want, rel_tol):
            problems.append(f"{format_key(key)} = {actual[key]!r}, want {want!r}")
    problems.extend(
        f"unexpected {format_key(k)} = {actual[k]!r}" for k in actual if k not in expected
    )
    return problems


def format_key(key: LabelKey) -> str:
    """A label set as a PromQL-style selector, for messages."""
    labels = dict(key)
    name = labels.pop("__name__", "")
    return name + "{" + ",".join(f"{k}={v!r}" for k, v in labels.items()) + "}"


# --------------------------------------------------------------------------------------------
# Starting components


def start_prometheus_receiver(tmp: Path, *, ready_deadline_s: float = 30.0) -> Prom:
    """Start a Prometheus that only receives remote write (no scrape jobs) and wait until ready.

    Retention is 1h because a test run is shorter; the lookback delta stays at its 5m default so
    that only a stale marker, not the passage of time, can make a series vanish from an instant
    query.
    """
    workdir = _component_dir(tmp, "prom-receiver")
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "15s"}}, indent=2))
    argv = [
        require_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--web.enable-remote-write-receiver",
        "--storage.tsdb.retention.time=1h",
        "--log.level=info",
    ]
    proc = Proc(f"prom-receiver-{port}", argv, workdir)
    prom = Prom(proc, port)
    _await_ready(prom, "/-/ready", ready_deadline_s)
    return prom


def agent_config(
    scrape_targets: Sequence[str],
    remote_write_urls: Sequence[str],
    *,
    job_name: str,
    scrape_interval: str,
    extra_remote_write: Mapping[str, Any] | None = None,
    extra_scrape_config: Mapping[str, Any] | None = None,
    per_remote_write: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The agent's configuration as a dict (see :func:`start_prometheus_agent`)."""
    remote_write: list[dict[str, Any]] = []
    for index, url in enumerate(remote_write_urls):
        block: dict[str, Any] = {
            "name": f"rw{index}",
            "url": url,
            "remote_timeout": "5s",
            # Small batches sent at least every 200ms with quick retries: samples reach the
            # destination about one scrape interval after they are scraped.
            "queue_config": {
                "capacity": 2500,
                "max_samples_per_send": 500,
                "batch_send_deadline": "200ms",
                "min_backoff": "50ms",
                "max_backoff": "1s",
            },
            "metadata_config": {"send": True, "send_interval": "1m"},
        }
        for key, value in (extra_remote_write or {}).items():
            if isinstance(value, Mapping) and isinstance(block.get(key), dict):
                block[key] = {**block[key], **value}
            else:
                block[key] = value
        if per_remote_write is not None:
            block.update(per_remote_write[index])
        remote_write.append(block)
    return {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job_name,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(scrape_targets)}],
                **(extra_scrape_config or {}),
            }
        ],
        "remote_write": remote_write,
    }


def start_prometheus_agent(
    tmp: Path,
    scrape_targets: Sequence[str],
    remote_write_url: str | Sequence[str],
    scrape_interval: str = "1s",
    extra_remote_write: Mapping[str, Any] | None = None,
    *,
    job_name: str = "e2e",
    extra_scrape_config: Mapping[str, Any] | None = None,
    per_remote_write: Sequence[Mapping[str, Any]] | None = None,
    ready_deadline_s: float = 30.0,
) -> PromAgent:
    """Start ``prometheus --enable-feature=agent`` scraping ``scrape_targets`` (``host:port``).

    One remote_write block is generated per URL in ``remote_write_url``; ``extra_remote_write``
    is merged into each block (nested dicts such as ``queue_config`` key by key), e.g.
    ``{"headers": {...}}``; ``extra_scrape_config`` is added to the scrape job (e.g.
    ``{"metric_relabel_configs": [...]}``); ``per_remote_write[i]`` is set on the i-th block
    (its own ``write_relabel_configs``). Metadata sending keeps Prometheus' defaults (on, every minute), so a
    destination also sees metadata-only requests like in production.
    """
    urls = [remote_write_url] if isinstance(remote_write_url, str) else list(remote_write_url)
    config = agent_config(
        scrape_targets,
        urls,
        job_name=job_name,
        scrape_interval=scrape_interval,
        extra_remote_write=extra_remote_write,
        extra_scrape_config=extra_scrape_config,
        per_remote_write=per_remote_write,
    )
    return start_prometheus_agent_with(tmp, config, ready_deadline_s=ready_deadline_s)


def start_prometheus_agent_with(
    tmp: Path, config: Mapping[str, Any], *, ready_deadline_s: float = 30.0
) -> PromAgent:
    """Start ``prometheus --enable-feature=agent`` on ``config`` (a prometheus.yml as a dict)."""
    workdir = _component_dir(tmp, "prom-agent")
    port = free_port()
    config_path = workdir / "agent.yml"
    config_path.write_text(json.dumps(config, indent=2))
    argv = [
        require_binary("prometheus"),
        "--enable-feature=agent",
        f"--config.file={config_path}",
        f"--storage.agent.path={workdir / 'wal'}",
        f"--web.listen-address={HOST}:{port}",
        "--log.level=info",
    ]
    proc = Proc(f"prom-agent-{port}", argv, workdir)
    agent = PromAgent(proc, port, config_path)
    _await_ready(agent, "/-/ready", ready_deadline_s)
    return agent


def start_victoria_metrics(tmp: Path, *, ready_deadline_s: float = 30.0) -> VM:
    """Start a single-node VictoriaMetrics whose queries see samples as soon as they are written.

    Freshness flags (VM 1.79): ``-search.latencyOffset=0s`` stops hiding the newest 30 s of
    points, ``-search.disableCache`` stops the rollup cache from serving results computed before
    a write. Rows are still buffered in memory for about a second before they are searchable;
    :meth:`VM.flush` (``/internal/force_flush``) ends that wait, and :meth:`VM.query` calls it.
    """
    workdir = _component_dir(tmp, "victoria-metrics")
    port = free_port()
    argv = [
        require_binary("victoria-metrics"),
        f"-storageDataPath={workdir / 'data'}",
        f"-httpListenAddr={HOST}:{port}",
        "-search.latencyOffset=0s",
        "-search.disableCache",
        "-retentionPeriod=1d",
        "-loggerLevel=INFO",
    ]
    proc = Proc(f"victoria-metrics-{port}", argv, workdir)
    vm = VM(proc, port)
    _await_ready(vm, "/health", ready_deadline_s)
    return vm


@dataclass
class VMAgent(_Service):
    """A vmagent: scrapes targets and remote-writes; stores nothing queryable."""

    config_path: Path

    def rejected_blocks(self) -> list[str]:
        """vmagent's log lines for blocks the remote storage refused and vmagent dropped.

        vmagent 1.79 drops a block answered 400 or 409 without retrying and logs the answer's
        body (at most one such line per 5 s); other errors are retried.
        """
        return [line for line in self.proc.log_text().splitlines() if _VMAGENT_DROP in line]

    def counter(self, name: str) -> float:
        """A counter of vmagent's own ``/metrics`` summed over its labels (0 if absent)."""
        return sum(s.value for s in parse_exposition(self.metrics_text()) if s.name == name)


_VMAGENT_DROP = "was rejected (skipping the block)"


@dataclass(frozen=True)
class VMAgentRemoteWrite:
    """One ``-remoteWrite.url`` of a vmagent, with its ``-remoteWrite.urlRelabelConfig``."""

    url: str
    relabel_configs: Sequence[Mapping[str, Any]] = ()


def start_vmagent(
    tmp: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    remote_writes: Sequence[VMAgentRemoteWrite],
    *,
    flags: Sequence[str] = (),
    ready_deadline_s: float = 30.0,
) -> VMAgent:
    """Start vmagent scraping ``scrape_configs`` (prometheus.yml syntax) and writing to each of
    ``remote_writes`` (each URL gets every sample that its relabel configs keep).

    Blocks are flushed every 200 ms rather than every second, so samples cross within about a
    scrape interval; the on-disk queue lives in the component's directory.
    """
    if not remote_writes:
        raise ValueError("vmagent needs at least one remote write URL")
    workdir = _component_dir(tmp, "vmagent")
    port = free_port()
    config_path = workdir / "scrape.yml"
    config_path.write_text(json.dumps({"scrape_configs": list(scrape_configs)}, indent=2))
    argv = [
        require_binary("vmagent"),
        f"-promscrape.config={config_path}",
        f"-remoteWrite.tmpDataPath={workdir / 'queue'}",
        f"-httpListenAddr={HOST}:{port}",
        "-remoteWrite.flushInterval=200ms",
        "-loggerLevel=INFO",
    ]
    for index, target in enumerate(remote_writes):
        relabel_path = workdir / f"url-relabel-{index}.yml"
        relabel_path.write_text(json.dumps(list(target.relabel_configs), indent=2))
        argv += [f"-remoteWrite.url={target.url}", f"-remoteWrite.urlRelabelConfig={relabel_path}"]
    argv += flags
    proc = Proc(f"vmagent-{port}", argv, workdir)
    agent = VMAgent(proc, port, config_path)
    _await_ready(agent, "/health", ready_deadline_s)
    return agent


@dataclass
class Relay(_Service):
    """A running gotk-relay."""

    config_path: Path

    @property
    def write_url(self) -> str:
        """Where agents remote-write to."""
        return f"{self.base_url}/api/v1/write"

    def federate(self, match: str | Sequence[str]) -> str:
        """The ``/federate`` exposition for the given ``match[]`` selector(s)."""
        matches = [match] if isinstance(match, str) else list(match)
        query = urllib.parse.urlencode([("match[]", m) for m in matches])
        return http_get_text(f"{self.base_url}/federate?{query}")

    def metric_samples(self, name: str) -> list[ExpositionSample]:
        """Samples of metric ``name`` on the relay's own ``/metrics``."""
        return [s for s in parse_exposition(self.metrics_text()) if s.name == name]


def relay_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment plus ``src/`` on PYTHONPATH, until the package is installed in the venv."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_relay(
    tmp: Path,
    config_yaml: str,
    *,
    env: Mapping[str, str] | None = None,
    ready_deadline_s: float = 30.0,
    shutdown_timeout_s: float = 5.0,
) -> Relay:
    """Write ``config_yaml`` to a file, run ``python -m gotk_relay serve`` on it, wait for ready.

    ``shutdown_timeout_s`` is its ``--shutdown-timeout``: below :meth:`Proc.stop`'s 10 s, so a
    relay whose destination is down at the end of a test drains, gives up and exits by itself
    instead of holding the test for the stop's whole wait and a SIGKILL."""
    workdir = _component_dir(tmp, "relay")
    port = free_port()
    config_path = workdir / "relay.yml"
    config_path.write_text(config_yaml)
    argv = [
        sys.executable,
        "-m",
        "gotk_relay",
        "serve",
        "--config",
        str(config_path),
        "--listen-address",
        f"{HOST}:{port}",
        "--shutdown-timeout",
        f"{shutdown_timeout_s:g}",
    ]
    proc = Proc(f"relay-{port}", argv, workdir, env=relay_env(env), cwd=REPO_ROOT)
    relay = Relay(proc, port, config_path)
    _await_ready(relay, "/-/ready", ready_deadline_s)
    return relay


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server on a free port answering with ``handler``; yields its base URL."""
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _await_ready(service: _Service, path: str, deadline_s: float) -> None:
    """Wait for ``path`` to answer 200; stop the process if it never does, so it cannot leak."""
    try:
        wait_http(f"{service.base_url}{path}", deadline_s, proc=service.proc)
    except BaseException:
        service.proc.stop()
        raise


# --------------------------------------------------------------------------------------------
# A scrape target


class StaticExporter:
    """An HTTP server on 127.0.0.1 serving ``/metrics`` with text the test sets at any time.

    Prometheus scrapes it like any exporter. :attr:`scrapes` counts served scrapes so a test can
    wait for "the next scrape after I changed the text" by polling rather than sleeping.
    """

    TEXT = "text/plain; version=0.0.4; charset=utf-8"
    OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    def __init__(self, text: str = "", content_type: str = TEXT) -> None:
        self._text = text.encode()
        self._lock = threading.Lock()
        self._scrapes = 0
        self.content_type = content_type  # what the body is served as
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urllib.parse.urlsplit(self.path).path != "/metrics":
                    self.send_error(404)
                    return
                body = exporter._serve()
                self.send_response(200)
                self.send_header("Content-Type", exporter.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape per second is noise in test output

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"static-exporter-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _serve(self) -> bytes:
        with self._lock:
            self._scrapes += 1
            return self._text

    @property
    def target(self) -> str:
        """``host:port`` as it goes in ``static_configs`` and in the ``instance`` label."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """Full URL of the metrics page."""
        return f"http://{self.target}/metrics"

    @property
    def scrapes(self) -> int:
        """How many times ``/metrics`` has been served."""
        with self._lock:
            return self._scrapes

    def set_text(self, text: str) -> None:
        """Replace the exposition served from the next scrape on."""
        self.set_body(text.encode())

    def set_body(self, body: bytes) -> None:
        """Like :meth:`set_text` for bytes that need not be UTF-8 (a hostile exposition)."""
        with self._lock:
            self._text = body

    def wait_for_scrapes(self, count: int, deadline_s: float) -> None:
        """Wait until ``count`` more scrapes than now have been served."""
        target = self.scrapes + count
        eventually(lambda: self.scrapes >= target, deadline_s, 0.05, what=f"{count} scrapes")

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Exposition text: build what the exporter serves, parse what components expose


@dataclass(frozen=True)
class ExpositionSample:
    """One sample line of the Prometheus text format."""

    name: str
    labels: Mapping[str, str]
    value: float

    def key(self) -> LabelKey:
        """Identity including ``__name__``, as query APIs report it."""
        return label_key({"__name__": self.name, **self.labels})


@dataclass(frozen=True)
class Family:
    """A metric family to expose: ``# HELP``/``# TYPE`` plus its sample lines."""

    name: str
    type: str
    help: str
    samples: Sequence[ExpositionSample]


def format_value(value: float) -> str:
    """A float as the text format spells it; finite values in shortest round-trip form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_exposition(families: Iterable[Family]) -> str:
    """Prometheus text format (0.0.4) for ``families``, without timestamps (so staleness works)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            selector = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{selector} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


def expected_series(
    families: Iterable[Family], *, job: str, instance: str
) -> dict[LabelKey, float]:
    """What a receiver should hold once Prometheus scraped ``families`` with these target labels."""
    expected: dict[LabelKey, float] = {}
    for family in families:
        for sample in family.samples:
            labels = {"__name__": sample.name, **sample.labels, "job": job, "instance": instance}
            expected[label_key(labels)] = sample.value
    return expected


_SAMPLE_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_exposition(text: str) -> list[ExpositionSample]:
    """Sample lines of a text-format page (comments skipped); enough for the relay's /metrics."""
    samples: list[ExpositionSample] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line.strip())
        if match is None:
            raise ValueError(f"unparseable exposition line: {line!r}")
        labels: dict[str, str] = {}
        raw = match["labels"] or ""
        pos = 0
        while pos < len(raw):
            pair = _LABEL_PAIR.match(raw, pos)
            if pair is None or pair.end() == pos:
                raise ValueError(f"unparseable labels in line: {line!r}")
            labels[pair[1]] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], pair[2])
            pos = pair.end()
        samples.append(ExpositionSample(match["name"], labels, float(match["value"])))
    return samples


# --------------------------------------------------------------------------------------------
# Reference data and checks shared by the rig's own tests and the relay's e2e tests


def reference_families() -> list[Family]:
    """About twenty series of the shapes a relay must carry unchanged.

    Gauges with no labels, one label and many (escaped quotes, backslash, newline, non-ASCII),
    a counter, a classic histogram and a summary; values at the edges of float64 handling: 0,
    negative, tiny, huge, ±Inf, a NaN that is *not* a stale marker, 2**53, and values with more
    significant digits than VictoriaMetrics keeps (see :data:`VM_REL_TOL`).
    """

    def s(name: str, value: float, /, **labels: str) -> ExpositionSample:
        return ExpositionSample(name, labels, value)

    hist = "e2e_request_duration_seconds"
    summ = "e2e_rpc_duration_seconds"
    return [
        Family(
            "e2e_temperature_celsius",
            "gauge",
            "Gauge with one label; positive, negative and zero values.",
            [
                s("e2e_temperature_celsius", 21.5, sensor="a"),
                s("e2e_temperature_celsius", -40.0, sensor="b"),
                s("e2e_temperature_celsius", 0.0, sensor="c"),
            ],
        ),
        Family("e2e_tiny", "gauge", "Gauge without labels, tiny value.", [s("e2e_tiny", 1e-9)]),
        Family(
            "e2e_huge",
            "gauge",
            "Huge magnitudes.",
            [s("e2e_huge", 1e300, sign="pos"), s("e2e_huge", -1e300, sign="neg")],
        ),
        Family(
            "e2e_limit",
            "gauge",
            "Infinities and a plain NaN (not a stale marker).",
            [
                s("e2e_limit", math.inf, kind="pos_inf"),
                s("e2e_limit", -math.inf, kind="neg_inf"),
                s("e2e_limit", math.nan, kind="nan"),
            ],
        ),
        Family(
            "e2e_precise",
            "gauge",
            "Values needing all 17 significant digits.",
            [
                s("e2e_precise", 1 / 3, which="third"),
                s("e2e_precise", math.pi, which="pi"),
                s("e2e_precise", 0.1 + 0.2, which="point3"),
                s("e2e_precise", float(2**53), which="2pow53"),
            ],
        ),
        Family(
            "e2e_labels",
            "gauge",
            "Label values that need escaping or are not ASCII.",
            [
                s(
                    "e2e_labels",
                    1.0,
                    quoted='say "hi"',
                    backslash="C:\\path\\x",
                    newline="two\nlines",
                    unicode="ünïcødé ✓ 指标",
                    space=" ",
                    a_long_label_name_with_digits_0123456789="v",
                )
            ],
        ),
        Family(
            "e2e_requests_total",
            "counter",
            "Counter with two labels.",
            [
                s("e2e_requests_total", 1027.0, code="200", method="GET"),
                s("e2e_requests_total", 3.0, code="500", method="POST"),
            ],
        ),
        Family(
            hist,
            "histogram",
            "Classic histogram.",
            [
                s(f"{hist}_bucket", 1.0, le="0.005"),
                s(f"{hist}_bucket", 5.0, le="0.1"),
                s(f"{hist}_bucket", 9.0, le="1"),
                s(f"{hist}_bucket", 10.0, le="+Inf"),
                s(f"{hist}_sum", 3.75),
                s(f"{hist}_count", 10.0),
            ],
        ),
        Family(
            summ,
            "summary",
            "Summary with quantiles.",
            [
                s(summ, 0.012, quantile="0.5"),
                s(summ, 0.25, quantile="0.99"),
                s(f"{summ}_sum", 17.5),
                s(f"{summ}_count", 420.0),
            ],
        ),
    ]


def stale_scenario_families() -> tuple[Family, Family]:
    """Two gauges: the first stays exposed, the second is removed to provoke a stale marker."""
    keep = Family(
        "e2e_stays",
        "gauge",
        "Exposed throughout.",
        [ExpositionSample("e2e_stays", {"kind": "steady"}, 7.0)],
    )
    gone = Family(
        "e2e_vanishes",
        "gauge",
        "Removed from the exposition mid-test.",
        [
            ExpositionSample("e2e_vanishes", {"kind": "a"}, 1.0),
            ExpositionSample("e2e_vanishes", {"kind": "b"}, -2.5),
        ],
    )
    return keep, gone


def scraped_selector(job: str) -> str:
    """PromQL selecting what the target exposed under ``job``, without Prometheus' own
    per-scrape series (``up``, ``scrape_*``), which the test does not control."""
    return f'{{job="{job}",__name__!~"{SYNTHETIC_SCRAPE_SERIES.pattern}"}}'


def without_nan(expected: Mapping[LabelKey, float]) -> dict[LabelKey, float]:
    """``expected`` as VictoriaMetrics holds it: it drops ordinary NaN samples on ingestion."""
    return {k: v for k, v in expected.items() if not math.isnan(v)}


def await_samples(
    api: _PromAPI,
    selector: str,
    expected: Mapping[LabelKey, float],
    *,
    rel_tol: float = 0.0,
    deadline_s: float = 30.0,
) -> dict[LabelKey, float]:
    """Wait until an instant query for ``selector`` returns exactly ``expected``.

    Exactly: the same series, every label as scraped, no extra series, and equal values (within
    ``rel_tol`` for finite values). On timeout the assertion lists what still differs.
    """

    if not expected:
        raise ValueError("expected is empty: waiting for nothing proves nothing")

    def check() -> dict[LabelKey, float]:
        actual = api.samples(selector)
        problems = diff_samples(actual, expected, rel_tol=rel_tol)
        assert not problems, problems
        return actual  # non-empty, hence truthy, since it equals expected

    name = type(api).__name__
    return eventually(check, deadline_s, what=f"{name} holds {len(expected)} series of {selector}")


def await_stale(prom: Prom, selector: str, *, deadline_s: float = 30.0) -> None:
    """Wait until ``selector`` is gone from Prometheus' instant query at "now".

    The receiver keeps the default 5m lookback, so within the deadline only a stored stale
    marker can empty the result; an ordinary NaN in its place would be returned as ``NaN``.
    """

    def check() -> bool:
        result = prom.query(selector)
        assert result == [], [(item["metric"], item["value"][1]) for item in result]
        return True

    eventually(check, deadline_s, what=f"{selector} stale in Prom")


def await_vm_stale_marker(vm: VM, selector: str, *, deadline_s: float = 30.0) -> None:
    """Wait until VictoriaMetrics' newest raw sample of every ``selector`` series is a stale marker.

    VM's export prints the stale-marker NaN as ``null`` and drops ordinary NaN on ingestion,
    so a ``null`` proves the exact stale bits arrived. (VM's instant query is not proof: it
    also ends a series a few intervals after its last sample, marker or not.)
    """

    def check() -> bool:
        rows = vm.export(selector)
        assert rows, f"no series for {selector}"
        last = [row["values"][-1] for row in rows]
        assert all(v is None for v in last), f"newest values {last}"
        return True

    eventually(check, deadline_s, what=f"stale marker for {selector} in VM")
