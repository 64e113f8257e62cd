"""``round_robin_dns`` (a remote_write key of Prometheus 3): each new connection goes to one of
the host's addresses, chosen at random, as Prometheus dials; without it, to the first address
that answers.

A real relay process runs in a mount namespace of its own (``unshare``), where ``/etc/hosts``
names ``rr.test`` at 127.0.0.1 and 127.0.0.2; a receiver listens on the same port of each
address and closes every connection after its answer, so that each send dials anew.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.test_connections import served
from tests.support.harness import gauge_batch, rw_body
from tests.support.rig import free_port, require_binary

pytestmark = pytest.mark.slow  # starts a relay process
ADDRESSES = ("127.0.0.1", "127.0.0.2")
SENDS = 24  # all to one address by chance: 2 in 2**24


async def _receivers(port: int, hits: list[str]) -> list[web.AppRunner]:
    runners = []
    for address in ADDRESSES:

        async def write(request: web.Request, address: str = address) -> web.Response:
            await request.read()
            hits.append(address)
            return web.Response(status=204, headers={"Connection": "close"})

        app = web.Application()
        app.router.add_post("/api/v1/write", write)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, port).start()
        runners.append(runner)
    return runners


def _own_hosts(tmp_path: Path) -> list[str]:
    """The relay's command prefix: a mount namespace with ``rr.test`` at both addresses."""
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{address} rr.test\n" for address in ADDRESSES))
    # As root, a mount namespace; otherwise in a user namespace of our own as its root.
    flags = ["--mount"] if os.geteuid() == 0 else ["--mount", "--map-root-user"]
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return [require_binary("unshare"), *flags, "sh", "-c", script, str(hosts)]


@pytest.mark.parametrize("round_robin", [True, False])
async def test_each_connection_goes_to_an_address_of_the_host(
    tmp_path: Path, round_robin: bool
) -> None:
    port = free_port()
    hits: list[str] = []
    runners = await _receivers(port, hits)
    destination = {
        "name": "rr",
        "url": f"http://rr.test:{port}/api/v1/write",
        "round_robin_dns": round_robin,
        "queue_config": {"batch_send_deadline": "10ms", "min_backoff": "10ms"},
    }
    config = {"flux": {"mode": "off"}, "remote_write": [destination]}
    try:
        async with (
            served(tmp_path, config, prefix=_own_hosts(tmp_path)) as relay,
            aiohttp.ClientSession() as session,
        ):
            for i in range(SENDS):
                body, headers = rw_body(gauge_batch([f"m{i}"], 1000 + i))
                url = relay.base + "/api/v1/write"
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 204, await response.text()
                async with asyncio.timeout(10):  # one send per write, each on a new connection
                    while len(hits) < i + 1:
                        await asyncio.sleep(0.01)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert len(hits) == SENDS
    if round_robin:
        assert set(hits) == set(ADDRESSES), hits
    else:  # Go's dialer, and aiohttp's: the first address, which answers
        assert set(hits) == {ADDRESSES[0]}, hits
