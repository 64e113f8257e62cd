"""The processes of a benchmark run: starting, pinning and stopping each system and sink, and
reading what they cost from ``/proc`` (CPU time, core busy time, steal, RSS).

Every child is pinned before it execs (Go sizes its runtime from the affinity mask it starts
with) and dies with this process (``PR_SET_PDEATHSIG``), so an interrupted run leaves nothing
behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

import gotk_relay
from bench import expect, variants
from bench.results import Machine
from bench.settings import Settings

REPO: Final = Path(__file__).resolve().parents[1]
HOST: Final = "127.0.0.1"
SUT_CORE: Final = 0
LOAD_CORE: Final = 1
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

# Runs a child with PR_SET_PDEATHSIG (it dies with this process) pinned to one core, then execs
# it: the affinity is set before the program starts, so Go's runtime sizes itself for one CPU.
_LAUNCHER: Final = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(70)\n"
    "if sys.argv[2] != '-':\n"
    "    os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(',')})\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


_ports_taken: set[int] = set()


def free_port() -> int:
    """A port below the kernel's ephemeral range, new to this run.

    ``bind(0)`` would draw from the ephemeral range, where the loader's and the systems'
    outgoing connections take their local ports: one of them could take the port before the
    component binds it, and the component would fail to start. The walk starts at an offset
    spread by the process id (as ``tests/support/rig.free_port``), so that benchmark runs
    started together (the smoke tests on several pytest workers) probe different ports.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low, span = 10000, max(ephemeral - 10000, 1000)
    for step in range(span):
        port = low + (os.getpid() * 7919 + len(_ports_taken) + step) % span
        if port in _ports_taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _ports_taken.add(port)
        return port
    raise RuntimeError(f"no free TCP port on {HOST} below {ephemeral}")


Cores = int | tuple[int, ...] | None  # where a process may run; None: anywhere


class Proc:
    """A child process with its log file; stopped by :meth:`stop` or with this process."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        core: Cores,
        workdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        executable = shutil.which(argv[0]) or argv[0]
        launch = [sys.executable, "-c", _LAUNCHER, str(os.getpid())]
        if core is None:
            affinity = "-"
        else:
            affinity = ",".join(str(c) for c in (core if isinstance(core, tuple) else (core,)))
        launch += [affinity, executable, *argv[1:]]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                launch,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a system may fork helpers; their CPU counts too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1000:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants, in seconds."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def core_busy_seconds(core: int) -> float:
    """Time core ``core`` spent on anything but idle/iowait, from ``/proc/stat``.

    Minus the system's own CPU time this is what *other* processes took from its core: the
    machine is shared, and a row measured while something else ran there says so.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                ticks = [int(x) for x in line.split()[1:]]
                return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK
    return 0.0


def steal_seconds() -> float:
    """Time the hypervisor gave every core of this machine to other guests (``/proc/stat``).

    On a virtual machine a vCPU that is not scheduled stalls whatever ran on it, the system or
    the loader, for 10 ms or more: the latency phase reports it beside its p99.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                return int(line.split()[8]) / CLK_TCK
    return 0.0


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_kib(pid: int) -> dict[int, int]:
    """``VmHWM`` of ``pid`` and each of its descendants, by pid."""
    peaks = {}
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[p] = int(line.split()[1])
    return peaks


def reset_peak_rss(pid: int) -> bool:
    """Reset the ``VmHWM`` of ``pid`` and its descendants to their current RSS (``clear_refs``
    value 5, Linux 4.0+); False when the kernel refused it for any of them."""
    done = True
    for p in _tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            done = False
    return done


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmHWM, VmRSS) summed over the process tree."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


@dataclass
class System:
    """A started system under test: its process, its port and the path that answers 200 once
    it is ready."""

    name: str
    proc: Proc
    port: int
    ready_path: str
    cores: tuple[int, ...] = (SUT_CORE,)  # whose busy time is compared with the system's CPU


def system_cores(name: str, settings: Settings) -> tuple[int, ...] | None:
    """Where a system runs: gotk-relay on ``--relay-cores`` if given, else SUT_CORE."""
    if not settings.pinned:
        return None
    if name == "gotk-relay" and settings.relay_cores:
        return settings.relay_cores
    return (SUT_CORE,)


def relay_config(
    sink_port: int, validation: str = "", workers: int = 1, variant: str = "plain"
) -> dict[str, Any]:
    """The relay's embedded default config, plus the variant's destinations at the sink (plain:
    one remote_write; see :func:`variants.relay_config`).

    ``validation`` overrides ``receiver.validation`` (the default ``full`` checks every series in
    the compiled scanner; ``framing`` is the opt-out that checks framing only, see
    docs/performance.md).
    """
    text = (importlib.resources.files("gotk_relay") / "default.yml").read_text()
    config = yaml.safe_load(text) or {}
    config = variants.relay_config(variant, config, f"http://{HOST}:{sink_port}")
    receiver = dict(config.get("receiver") or {})
    if validation:
        receiver["validation"] = validation
    if workers != 1:  # receiver.workers: the core plus workers-1 ingest workers (SO_REUSEPORT)
        receiver["workers"] = workers
    if receiver:
        config["receiver"] = receiver
    return dict(config)


def start_system(
    name: str,
    sink_port: int,
    workdir: Path,
    core: tuple[int, ...] | None,
    validation: str = "",
    workers: int = 1,
    variant: str = "plain",
) -> System:
    """Start ``name`` (gotk-relay with :func:`relay_config`, or vmagent with the variant's
    flags) forwarding to the sink at ``sink_port``, pinned to ``core``."""
    port = free_port()
    sink_url = f"http://{HOST}:{sink_port}/api/v1/write"
    cores = core or (SUT_CORE,)
    if name == "gotk-relay":
        config = workdir / "relay.yml"
        config.write_text(
            json.dumps(relay_config(sink_port, validation, workers, variant), indent=2)
        )
        argv = [sys.executable, "-m", "gotk_relay", "serve", "--config", str(config)]
        argv += ["--listen-address", f"{HOST}:{port}", "--log.level", "warn"]
        # The workers are children of the relay: they inherit its affinity, and _tree counts
        # their CPU time and memory with the relay's.
        return System(name, Proc(name, argv, core, workdir), port, "/-/ready", cores)
    data = workdir / f"{name}-data"
    data.mkdir()
    argv = ["vmagent", f"-remoteWrite.url={sink_url}", f"-httpListenAddr={HOST}:{port}"]
    argv += [f"-remoteWrite.tmpDataPath={data}", "-loggerLevel=WARN"]
    if name == "vmagent-relabel":
        relabel = workdir / "relabel.yml"
        relabel.write_text(expect.VMAGENT_RELABEL)
        argv.append(f"-remoteWrite.relabelConfig={relabel}")
    for flag, (file_name, content) in variants.vmagent_files(variant).items():
        path = workdir / file_name
        path.write_text(content)
        argv.append(f"{flag}={path}")
    argv += variants.vmagent_flags(variant)
    return System(name, Proc(name, argv, core, workdir), port, "/health", cores)


def start_sink(
    workdir: Path, full: bool, core: int | None, name: str = "sink", count_first: bool = False
) -> tuple[Proc, int]:
    """``bench.sink`` (``--full``: it keeps every sample for ``/verify``; ``count_first``: it
    answers a write only once counted, as the latency floor's bare receiver), and its port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port)]
    if full:
        argv.append("--full")
    if count_first:
        argv.append("--count-first")
    # The sink is a module of the bench package: importable with the repository's root.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return Proc(name, argv, core, workdir, {**os.environ, "PYTHONPATH": path}), port


async def wait_ready(
    session: aiohttp.ClientSession, proc: Proc, url: str, timeout: float = 60.0
) -> None:
    """Until ``url`` answers 200; fails with the log's tail if ``proc`` exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready after {timeout:g}s:\n{proc.log_tail()}")


def ensure_vmagent() -> str | None:
    """vmagent's path; installs Debian's victoria-metrics package if missing and root."""
    path = shutil.which("vmagent")
    if path is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return path
    print("vmagent missing: apt-get install -y victoria-metrics", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "victoria-metrics"]
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False, timeout=600)
        subprocess.run(install, env=env, check=False, timeout=600)
    return shutil.which("vmagent")


def machine_info() -> Machine:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return Machine(
        cpu_model=model,
        cores=os.cpu_count(),
        memory_bytes=mem,
        kernel=platform.release(),
        python=platform.python_version(),
        load_average_before=os.getloadavg(),
        sut_core=SUT_CORE,
        loader_core=LOAD_CORE,
    )


def versions(vmagent: str | None) -> dict[str, str]:
    """The versions of the systems compared (vmagent's from its Debian package)."""

    out = {"gotk_relay": gotk_relay.__version__, "vmagent": "missing"}
    if vmagent:
        query = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        out["vmagent"] = query.stdout.strip() or vmagent
    return out
