"""A real load balancer in front of relay replicas: Debian's ``haproxy``, round robin.

Used by the scale-out end-to-end test (tests/e2e/test_scale_out_e2e.py) and the replicas
benchmark (bench/replicas.py). HAProxy balances every HTTP request on its own (not
connections), checks each server's ``/-/ready`` every ``inter``, takes a server out after one
failed check and back after one good one, and re-dispatches a request whose connection to a
server failed to another server (a request a server took and then lost is answered 502: the
sender retries it). A server may be listed before it runs: it is down until its check passes.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import rig

INSTALL_HINT = "apt-get install haproxy"


def haproxy_path() -> str | None:
    """Where ``haproxy`` is installed (``GOTK_E2E_HAPROXY_BIN`` overrides), or None."""
    return rig.binary_path("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")


def haproxy_config(
    port: int,
    servers: Sequence[int],
    *,
    check_interval_ms: int = 200,
    server_timeout_s: float = 60.0,
) -> str:
    """HAProxy's configuration: ``port`` balanced round robin over ``servers`` (ports)."""
    lines = [
        "global",
        "  maxconn 4096",
        "defaults",
        "  mode http",
        "  timeout connect 1s",
        "  timeout client 60s",
        f"  timeout server {int(server_timeout_s * 1000)}ms",
        "  timeout http-keep-alive 60s",
        "  retries 3",
        "  option redispatch 1",
        "frontend relays",
        f"  bind {rig.HOST}:{port}",
        "  default_backend replicas",
        "backend replicas",
        "  balance roundrobin",
        "  option httpchk GET /-/ready",
        f"  default-server inter {check_interval_ms}ms fastinter {check_interval_ms}ms "
        f"downinter {check_interval_ms}ms fall 1 rise 1",
    ]
    lines += [f"  server r{i} {rig.HOST}:{p} check" for i, p in enumerate(servers)]
    return "\n".join(lines) + "\n"


@dataclass
class Balancer(rig._Service):
    """A running HAProxy."""

    config_path: Path

    @property
    def write_url(self) -> str:
        return f"{self.base_url}/api/v1/write"


def start_haproxy(
    tmp: Path,
    servers: Sequence[int],
    *,
    ready_deadline_s: float = 30.0,
    check_interval_ms: int = 200,
) -> Balancer:
    """Start HAProxy in the foreground over ``servers``; ready once a server answers
    ``/-/ready`` through it."""
    binary = haproxy_path()
    if binary is None:
        raise rig.RigError(f"'haproxy' not found: run `{INSTALL_HINT}`")
    workdir = rig._component_dir(tmp, "haproxy")
    port = rig.free_port()
    config_path = workdir / "haproxy.cfg"
    config_path.write_text(haproxy_config(port, servers, check_interval_ms=check_interval_ms))
    proc = rig.Proc(f"haproxy-{port}", [binary, "-db", "-f", str(config_path)], workdir)
    balancer = Balancer(proc, port, config_path)
    rig._await_ready(balancer, "/-/ready", ready_deadline_s)
    return balancer
