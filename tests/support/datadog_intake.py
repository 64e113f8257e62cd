"""A test double of Datadog's metrics intake, ``POST /api/v2/series``, on 127.0.0.1.

It behaves as the reference (shared/reference/vendors.md, Datadog) describes the real one:
``DD-API-KEY`` checked (403), gzip/deflate bodies, 413 over 512000 bytes compressed or 5242880
bytes uncompressed, 400 for a payload the official models reject, 202 ``{"errors":[]}``.

Every payload is validated with ``datadog-api-client``'s own models. Deserialising does not
raise on bad data: it returns objects flagged ``_unparsed`` (or ``UnparsedObject``s), and it
accepts unknown keys and ``null`` values silently. So the double checks, besides the models'
verdict, that no object in the tree is unparsed, that every object's keys are known to its
model's ``attribute_map``, that values are finite numbers and timestamps integers, and that
names and tags already follow Datadog's normalisation (what the intake would otherwise rewrite
behind the user's back). Anything wrong is recorded in ``problems``; tests assert it is empty.

Answers can be scripted for the next requests (429 with Retry-After, 5xx, 400, 403, 413), and
``refuse`` makes it answer 400 to every request holding a series it matches (a series Datadog
keeps refusing); series accepted with a 2xx are kept in ``series``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from datadog_api_client import Configuration
from datadog_api_client.model_utils import (
    OpenApiModel,
    UnparsedObject,
    validate_and_convert_types,
)
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

from tests.support.rig import free_port

MAX_COMPRESSED = 512_000
MAX_UNCOMPRESSED = 5_242_880
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,199}$")
_TAG_CHARS = re.compile(r"^[\w\-:./]+$")


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"errors":["scripted"]}'


@dataclass
class Request:
    status: int
    compressed_bytes: int
    uncompressed_bytes: int
    series: int
    points: int
    encoding: str
    at: float  # time.monotonic() on arrival


def _unparsed(node: Any, path: str, problems: list[str]) -> None:
    """Every object flagged ``_unparsed`` or left an ``UnparsedObject``, recursively."""
    if isinstance(node, UnparsedObject):
        problems.append(f"{path}: unparsed object {node!r:.200}")
        return
    if isinstance(node, OpenApiModel):
        if node._unparsed:
            problems.append(f"{path}: {type(node).__name__} is _unparsed")
        for key in getattr(node, "attribute_map", {}):
            value = node.get(key)
            if value is not None:
                _unparsed(value, f"{path}.{key}", problems)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _unparsed(item, f"{path}[{index}]", problems)


def _keys(obj: Any, model: type[OpenApiModel], path: str, problems: list[str]) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{path}: not an object")
        return
    unknown = set(obj) - set(model.attribute_map)
    if unknown:
        problems.append(f"{path}: keys {sorted(unknown)} unknown to {model.__name__}")


def validate_payload(payload: Any, now: float | None = None) -> list[str]:
    """What is wrong with a decoded ``/api/v2/series`` JSON body ([] when nothing)."""
    problems: list[str] = []
    if not isinstance(payload, dict) or set(payload) != {"series"}:
        return [f"payload: expected exactly {{'series': [...]}}, got {str(payload)[:200]}"]
    try:
        model = validate_and_convert_types(  # type: ignore[no-untyped-call]
            payload,
            (MetricPayload,),
            ["payload"],
            True,
            True,
            configuration=Configuration(),  # type: ignore[no-untyped-call]
        )
    except Exception as exc:  # the models raise for missing required keys
        return [f"payload: rejected by MetricPayload: {exc}"]
    _unparsed(model, "payload", problems)
    series_list = payload["series"]
    if not isinstance(series_list, list) or not series_list:
        return [*problems, "payload.series: not a non-empty list"]
    now = time.time() if now is None else now
    for i, series in enumerate(series_list):
        where = f"series[{i}]"
        _keys(series, MetricSeries, where, problems)
        if not isinstance(series, dict):
            continue
        metric = series.get("metric")
        if not isinstance(metric, str) or not _NAME.match(metric):
            problems.append(f"{where}.metric: {metric!r} breaks Datadog's name rules")
        if "type" in series and series["type"] not in (0, 1, 2, 3):  # absent: 0
            problems.append(f"{where}.type: {series.get('type')!r}")
        interval = series.get("interval")
        if interval is not None and (type(interval) is not int or interval <= 0):
            problems.append(f"{where}.interval: {interval!r}")
        for tag in series.get("tags", []):
            if not (
                isinstance(tag, str)
                and 0 < len(tag) <= 200
                and tag[0].isalpha()
                and tag == tag.lower()
                and not tag.endswith(":")
                and _TAG_CHARS.match(tag)
            ):
                problems.append(f"{where}.tags: {tag!r} breaks Datadog's tag rules")
        for j, resource in enumerate(series.get("resources", [])):
            _keys(resource, MetricResource, f"{where}.resources[{j}]", problems)
            if not isinstance(resource, dict) or not isinstance(resource.get("name"), str):
                problems.append(f"{where}.resources[{j}]: no name")
        points = series.get("points")
        if not isinstance(points, list) or not points:
            problems.append(f"{where}.points: empty")
            continue
        for j, point in enumerate(points):
            _keys(point, MetricPoint, f"{where}.points[{j}]", problems)
            if not isinstance(point, dict):
                continue
            ts, value = point.get("timestamp"), point.get("value")
            if type(ts) is not int:
                problems.append(f"{where}.points[{j}].timestamp: {ts!r} is not an integer")
            if type(value) not in (int, float) or not math.isfinite(float(value)):  # type: ignore[arg-type]
                problems.append(f"{where}.points[{j}].value: {value!r} is not a finite number")
    return problems


class DatadogIntake:
    """The double (see the module docstring). ``api_key`` is the one key it accepts."""

    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.port = free_port()
        self.server: TestServer | None = None
        self.script: list[Answer] = []
        self.requests: list[Request] = []
        self.series: list[dict[str, Any]] = []  # accepted, in arrival order
        self.problems: list[str] = []
        self.out_of_window: list[tuple[str, int]] = []  # (metric, ts) the real intake drops
        # Seconds each answer waits after the body is read (the real intake's round trip).
        self.latency = 0.0
        # A request holding a series (its decoded JSON) this matches is answered 400, once the
        # scripted answers are given.
        self.refuse: Callable[[dict[str, Any]], bool] | None = None

    def answer_next(
        self,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: str = '{"errors":["scripted"]}',
    ) -> None:
        """Answer the next ``times`` requests (after the ones already scripted) with ``status``."""
        self.script.extend(Answer(status, dict(headers or {}), body) for _ in range(times))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/series"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.latency:
            await asyncio.sleep(self.latency)
        encoding = request.headers.get("Content-Encoding", "")
        record = Request(0, len(raw), 0, 0, 0, encoding, time.monotonic())
        self.requests.append(record)

        def answer(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
            record.status = status
            return web.Response(
                status=status, text=body, headers=headers, content_type="application/json"
            )

        if request.headers.get("DD-API-KEY") != self.api_key:
            return answer(403, '{"errors":["Forbidden"]}')
        if len(raw) > MAX_COMPRESSED:
            self.problems.append(f"request of {len(raw)} compressed bytes")
            return answer(413, '{"errors":["Payload too large"]}')
        try:
            body = self._decompress(raw, encoding)
        except ValueError as exc:
            self.problems.append(str(exc))
            return answer(413 if "limit" in str(exc) else 400, json.dumps({"errors": [str(exc)]}))
        record.uncompressed_bytes = len(body)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            self.problems.append(f"invalid JSON: {exc}")
            return answer(400, '{"errors":["invalid JSON"]}')
        if request.headers.get("Content-Type") != "application/json":
            self.problems.append(f"Content-Type {request.headers.get('Content-Type')!r}")
        found = validate_payload(payload)
        self.problems.extend(found)
        series = payload.get("series", []) if isinstance(payload, dict) else []
        record.series = len(series)
        record.points = sum(len(s.get("points", [])) for s in series if isinstance(s, dict))
        if self.script and not 200 <= self.script[0].status < 300:
            scripted = self.script.pop(0)
            return answer(scripted.status, scripted.body, scripted.headers)
        if self.script:  # a scripted 2xx: behave as usual (an episode's "first one passes")
            self.script.pop(0)
        if found:
            return answer(400, json.dumps({"errors": found[:5]}))
        refuse = self.refuse
        matched = [s for s in series if refuse(s)] if refuse is not None else []
        if matched:
            return answer(400, json.dumps({"errors": [f"refused {matched[0]['metric']}"]}))
        now = time.time()
        for s in series:
            for p in s["points"]:
                if not now - 3600 <= p["timestamp"] <= now + 600:
                    self.out_of_window.append((s["metric"], p["timestamp"]))
        self.series.extend(series)
        return answer(202, '{"errors":[]}')

    @staticmethod
    def _decompress(raw: bytes, encoding: str) -> bytes:
        if encoding == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            inflater = zlib.decompressobj()
        elif encoding in ("", "identity"):
            body = raw
            inflater = None
        else:
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
        if inflater is not None:
            try:
                body = inflater.decompress(raw, MAX_UNCOMPRESSED + 1)
            except zlib.error as exc:
                raise ValueError(f"corrupt {encoding} body: {exc}") from exc
        if len(body) > MAX_UNCOMPRESSED:
            raise ValueError(f"uncompressed body over the limit of {MAX_UNCOMPRESSED} bytes")
        return body

    def points(self, metric: str) -> list[tuple[tuple[str, ...], int, float, int]]:
        """Accepted points of ``metric``: (sorted tags, timestamp, value, type), in order."""
        return [
            (tuple(sorted(s.get("tags", []))), p["timestamp"], p["value"], s.get("type", 0))
            for s in self.series
            if s["metric"] == metric
            for p in s["points"]
        ]

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v2/series", self.handle)
        # auto_decompress off: the limits apply to the bytes on the wire, checked here.
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server(auto_decompress=False)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def __aenter__(self) -> DatadogIntake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
