"""A scripted OTLP/HTTP receiver on 127.0.0.1 that decodes what it is sent with
opentelemetry-proto, as a collector would (test_otlp, test_bounded_conversion)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Got:
    at: float
    headers: dict[str, str]
    request: ExportMetricsServiceRequest
    status: int

    def metrics(self) -> dict[str, pb.Metric]:
        return {
            m.name: m
            for rm in self.request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


class OTLPReceiver:
    """Answers each POST /v1/metrics with the next scripted Answer (then ``default``)."""

    def __init__(self, script: list[Answer] | None = None, default: Answer | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Answer()
        self.requests: list[Got] = []
        self.server: TestServer | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])

    async def handle(self, request: web.Request) -> web.Response:
        # aiohttp's server inflates a ``Content-Encoding: gzip`` body itself; gunzip here only
        # what it left compressed, so the test does not depend on that.
        raw = await request.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        decoded = ExportMetricsServiceRequest.FromString(raw)
        answer = self.script.pop(0) if self.script else self.default
        loop = asyncio.get_running_loop()
        self.requests.append(Got(loop.time(), dict(request.headers), decoded, answer.status))
        headers = {"Content-Type": "application/x-protobuf", **answer.headers}
        return web.Response(status=answer.status, headers=headers, body=answer.body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def delivered(self) -> list[Got]:
        return [r for r in self.requests if 200 <= r.status < 300]


@asynccontextmanager
async def otlp_receiver(receiver: OTLPReceiver) -> AsyncIterator[OTLPReceiver]:
    app = web.Application()
    app.router.add_post("/v1/metrics", receiver.handle)
    receiver.server = TestServer(app, host="127.0.0.1", port=receiver.port)
    await receiver.server.start_server()
    try:
        yield receiver
    finally:
        await receiver.server.close()
