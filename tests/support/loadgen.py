"""Load generator: realistic remote-write 1.0 traffic, pre-encoded, pushed over raw HTTP/1.1.

Why it is built this way
------------------------
The loader shares one core with the sink while the system under test has the other, so every
microsecond it spends is a microsecond the measurement could be wrong by. Hence:

* **Series are generated and protobuf-encoded once.** Each batch is stored as the byte chunks
  *between* its samples' timestamps. All samples of a round share one timestamp (as all series of
  one scrape do), so a round's request body is ``timestamp_varint.join(chunks)`` (one C-level
  copy) followed by one snappy compression. Timestamps advance by ``ts_step_ms`` per round, so
  every sample the systems see is new (no receiver or rule can treat a resend as a duplicate).
  Millisecond timestamps of this century are 6-byte varints, so the chunks never change.
* **Raw asyncio HTTP/1.1** with keep-alive instead of an HTTP client library: one ``write`` and
  one header parse per request.
* **One ordered stream per connection**: batch ``i`` always goes over connection
  ``i % connections``, and a connection sends its next batch only after the previous one was
  answered. Every series lives in exactly one batch, so each series' samples arrive in timestamp
  order, as Prometheus' per-series sharding guarantees (the relay's Flux rules drop samples that
  go back in time, and the expected output counts rely on none being dropped).
* **429 and 5xx are retried like Prometheus does**: the same batch again on the same connection
  after ``Retry-After`` if the answer had one, else after an exponential backoff from 30 ms to
  5 s; other 4xx are dropped. Retries and statuses are counted, never hidden.

The generated traffic mixes node-exporter-like and kube-state-metrics-like series (8–12 labels
each, scrape labels included) with a configurable fraction of Flux ``gotk_resource_info`` series
in the shape kube-state-metrics' custom-resource-state config gives them after a Prometheus scrape
(see ``/work/shared/reference/flux-metrics.md``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import cramjam

from tests.support.snappy_holes import snappy_with_holes

Labels = tuple[tuple[str, str], ...]

#: Content headers of a remote write 1.0 request.
WRITE_HEADERS: Final = (
    "Content-Encoding: snappy\r\n"
    "Content-Type: application/x-protobuf\r\n"
    "X-Prometheus-Remote-Write-Version: 0.1.0\r\n"
    "User-Agent: gotk-relay-bench/1\r\n"
)
MIN_BACKOFF: Final = 0.03  # Prometheus' queue_config.min_backoff
MAX_BACKOFF: Final = 5.0  # Prometheus' queue_config.max_backoff
REQUEST_TIMEOUT: Final = 30.0  # Prometheus' remote_timeout
_TS_VARINT_LEN: Final = 6
_MIN_TS: Final = 1 << 35  # smallest ms timestamp whose varint is 6 bytes (1971)
_MAX_TS: Final = (1 << 42) - 1  # largest (2109)


# --------------------------------------------------------------------------------------------
# What a workload is


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Everything that determines a workload's bytes; the sink rebuilds the same one from it."""

    name: str
    series: int = 50_000
    batch_size: int = 2000
    flux_fraction: float = 0.001
    seed: int = 1
    ts_base_ms: int = 1_764_000_000_000
    ts_step_ms: int = 1
    # >= 1: every series gets a `cluster` label, and the series are `replicas` copies of
    # series // replicas base series that differ only in it (many clusters behind one relay).
    replicas: int = 0

    def __post_init__(self) -> None:
        if self.series < 1 or self.batch_size < 1:
            raise ValueError("series and batch_size must be positive")
        if not 0.0 <= self.flux_fraction <= 1.0:
            raise ValueError("flux_fraction must be within [0, 1]")
        last = self.ts_base_ms + self.ts_step_ms * 10_000_000
        if not _MIN_TS <= self.ts_base_ms <= last <= _MAX_TS:
            raise ValueError("timestamps must stay 6-byte varints (years 1971-2109)")
        if not 0 <= self.replicas <= 999 or self.series < max(1, self.replicas):
            raise ValueError("replicas must be within [0, 999] and at most the series count")
        if self.replicas > 1 and self.flux_fraction > 0:
            raise ValueError("replicas are for pass-through workloads (flux_fraction 0)")

    @property
    def flux_series(self) -> int:
        """How many of the series are Flux objects (at least one when the fraction is > 0)."""
        if self.flux_fraction <= 0:
            return 0
        return max(1, round(self.series * self.flux_fraction))

    def timestamp(self, round_: int) -> int:
        return self.ts_base_ms + round_ * self.ts_step_ms

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "series": self.series,
            "batch_size": self.batch_size,
            "flux_fraction": self.flux_fraction,
            "seed": self.seed,
            "ts_base_ms": self.ts_base_ms,
            "ts_step_ms": self.ts_step_ms,
            "replicas": self.replicas,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> WorkloadSpec:
        return cls(
            name=str(data["name"]),
            series=int(str(data["series"])),
            batch_size=int(str(data["batch_size"])),
            flux_fraction=float(str(data["flux_fraction"])),
            seed=int(str(data["seed"])),
            ts_base_ms=int(str(data["ts_base_ms"])),
            ts_step_ms=int(str(data["ts_step_ms"])),
            replicas=int(str(data.get("replicas", 0))),
        )


class GenSeries(NamedTuple):
    labels: Labels  # sorted by name, __name__ included
    value: float
    flux: bool


# --------------------------------------------------------------------------------------------
# Series generation: deterministic for a given spec


@dataclass(frozen=True, slots=True)
class FluxKindInfo:
    """A Flux kind as kube-state-metrics labels it (from the reference table, not the relay's)."""

    kind: str
    group: str
    version: str
    extras: tuple[str, ...]
    has_ready: bool = True


FLUX_KINDS: Final[tuple[FluxKindInfo, ...]] = (
    FluxKindInfo("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", ("revision", "source_name")),
    FluxKindInfo(
        "HelmRelease",
        "helm.toolkit.fluxcd.io",
        "v2",
        ("chart_app_version", "chart_name", "chart_source_name", "revision"),
    ),
    FluxKindInfo("GitRepository", "source.toolkit.fluxcd.io", "v1", ("revision", "url")),
    FluxKindInfo("HelmRepository", "source.toolkit.fluxcd.io", "v1", ("revision", "url")),
    FluxKindInfo(
        "HelmChart", "source.toolkit.fluxcd.io", "v1", ("chart_name", "chart_version", "revision")
    ),
    FluxKindInfo("OCIRepository", "source.toolkit.fluxcd.io", "v1", ("revision", "url")),
    # Bucket's `endpoint` collides with the ServiceMonitor's: Prometheus renames KSM's.
    FluxKindInfo(
        "Bucket", "source.toolkit.fluxcd.io", "v1", ("bucket_name", "exported_endpoint", "revision")
    ),
    FluxKindInfo("ImagePolicy", "image.toolkit.fluxcd.io", "v1", ("source_name",)),
    FluxKindInfo("Alert", "notification.toolkit.fluxcd.io", "v1beta3", (), has_ready=False),
    FluxKindInfo("Provider", "notification.toolkit.fluxcd.io", "v1beta3", (), has_ready=False),
)
# Kustomizations and HelmReleases dominate real clusters.
_KIND_WEIGHTS: Final = (30, 30, 8, 6, 6, 4, 2, 6, 4, 4)
#: The kube-state-metrics scrape labels (kube-prometheus-stack ServiceMonitor, honor_labels).
KSM_SCRAPE: Final = (
    ("container", "kube-state-metrics"),
    ("endpoint", "http"),
    ("instance", "10.0.3.4:8080"),
    ("job", "kube-state-metrics"),
    ("service", "kube-prometheus-stack-kube-state-metrics"),
)
KSM_POD: Final = "kube-prometheus-stack-kube-state-metrics-5c8d7b9f6-x2q4z"
KSM_NAMESPACE: Final = "monitoring"

_NODE_FAMILIES: Final = (
    ("node_cpu_seconds_total", 16 * 8),  # cpu × mode
    ("node_filesystem_avail_bytes", 12),
    ("node_filesystem_size_bytes", 12),
    ("node_network_receive_bytes_total", 10),
    ("node_network_transmit_bytes_total", 10),
    ("node_disk_io_time_seconds_total", 8),
    ("node_memory_MemAvailable_bytes", 1),
    ("node_load1", 1),
)
_CPU_MODES: Final = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
_POD_FAMILIES: Final = (
    "kube_pod_info",
    "kube_pod_status_phase",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_resource_requests",
    "kube_pod_container_resource_limits",
    "kube_pod_container_status_ready",
    "kube_pod_owner",
    "kube_pod_start_time",
)
_NAMESPACES: Final = tuple(f"team-{n:02d}" for n in range(40))


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _node_series(rng: random.Random, node: int) -> Iterator[tuple[dict[str, str], float]]:
    """One node's node-exporter series: 8 common labels plus 1–3 of the family's own."""
    ip = f"10.{node // 65536 % 256}.{node // 256 % 256}.{node % 256}"
    common = {
        "container": "node-exporter",
        "endpoint": "http-metrics",
        "instance": f"{ip}:9100",
        "job": "node-exporter",
        "namespace": KSM_NAMESPACE,
        "pod": f"node-exporter-{_hex(rng, 5)}",
        "service": "kube-prometheus-stack-prometheus-node-exporter",
    }
    for family, count in _NODE_FAMILIES:
        for i in range(count):
            labels = {"__name__": family, **common}
            if family == "node_cpu_seconds_total":
                labels["cpu"] = str(i // 8)
                labels["mode"] = _CPU_MODES[i % 8]
            elif family.startswith("node_filesystem"):
                labels["device"] = f"/dev/nvme{i // 4}n1p{i % 4}"
                labels["fstype"] = "ext4" if i % 3 else "xfs"
                labels["mountpoint"] = f"/var/lib/vol{i}"
            elif family.startswith(("node_network", "node_disk")):
                labels["device"] = f"eth{i}" if family.startswith("node_network") else f"nvme{i}n1"
            value = rng.uniform(0, 1e12) if family.endswith("_total") else rng.uniform(0, 1e10)
            yield labels, value


def _pod_series(rng: random.Random, pod: int) -> Iterator[tuple[dict[str, str], float]]:
    """One pod's kube-state-metrics series: scrape labels, namespace/pod/uid, and their own."""
    namespace = _NAMESPACES[pod % len(_NAMESPACES)]
    name = f"app-{pod // 7:05d}-{_hex(rng, 9)}-{_hex(rng, 5)}"
    uid = f"{_hex(rng, 8)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 4)}-{_hex(rng, 12)}"
    common = {**dict(KSM_SCRAPE), "namespace": namespace, "pod": name, "uid": uid}
    for family in _POD_FAMILIES:
        labels = {"__name__": family, **common}
        if family == "kube_pod_status_phase":
            labels["phase"] = "Running"
        elif family.startswith("kube_pod_container"):
            labels["container"] = "app"
            if "resource" in family:
                labels["resource"] = "cpu" if pod % 2 else "memory"
                labels["unit"] = "core" if pod % 2 else "byte"
        elif family == "kube_pod_owner":
            labels["owner_kind"] = "ReplicaSet"
            labels["owner_name"] = name.rsplit("-", 1)[0]
        elif family == "kube_pod_info":
            labels["node"] = f"ip-10-0-{pod % 200}-{pod % 251}.ec2.internal"
            labels["host_ip"] = f"10.0.{pod % 200}.{pod % 251}"
        yield labels, float(rng.randrange(0, 100)) if family != "kube_pod_start_time" else 1.7e9


def flux_labels(rng: random.Random, index: int) -> dict[str, str]:
    """A ``gotk_resource_info`` series as Prometheus stores it after scraping KSM.

    Every index is a distinct Flux object (its own name), so each yields its own legacy series.
    Ready is mostly True, sometimes False or Unknown; ``suspended`` is sometimes missing (an
    object that never set ``spec.suspend``), as KSM omits labels whose field is absent.
    """
    (kind,) = rng.choices(FLUX_KINDS, weights=_KIND_WEIGHTS)
    namespace = _NAMESPACES[index % len(_NAMESPACES)]
    labels = {
        "__name__": "gotk_resource_info",
        **dict(KSM_SCRAPE),
        "namespace": KSM_NAMESPACE,
        "pod": KSM_POD,
        "customresource_group": kind.group,
        "customresource_kind": kind.kind,
        "customresource_version": kind.version,
        "exported_namespace": namespace,
        "name": f"{kind.kind.lower()}-{index:06d}",
    }
    if kind.has_ready:
        labels["ready"] = rng.choices(("True", "False", "Unknown"), weights=(90, 8, 2))[0]
    suspended = rng.choices(("false", "true", ""), weights=(80, 10, 10))[0]
    if suspended:
        labels["suspended"] = suspended
    for extra in kind.extras:
        if extra == "url":
            labels[extra] = f"https://github.com/example/repo-{index % 97}"
        elif extra == "exported_endpoint":
            labels[extra] = "minio.minio.svc:9000"
        elif extra in ("revision", "chart_version", "chart_app_version"):
            labels[extra] = f"{index % 7}.{index % 13}.{index % 5}"
        else:
            labels[extra] = f"{extra.replace('_', '-')}-{index % 31}"
    return labels


def replica_label(replica: int) -> tuple[str, str]:
    return ("cluster", f"c{replica:03d}")


def generate(spec: WorkloadSpec) -> list[list[GenSeries]]:
    """The workload's batches: ``spec.series`` distinct series, Flux ones spread evenly.

    Remote write shards series by hash, so Flux series are scattered over all requests rather
    than bunched: they are shuffled in with the others, deterministically for ``spec.seed``.
    With ``spec.replicas`` > 1 only the first replica's batches are returned (see
    :class:`Workload`).
    """
    rng = random.Random(spec.seed)
    n_flux = spec.flux_series
    n_plain = spec.series // max(1, spec.replicas) - n_flux
    extra = dict([replica_label(0)]) if spec.replicas else {}
    plain: list[GenSeries] = []
    unit = 0
    while len(plain) < n_plain:
        # A cluster is mostly pods; one node per ~25 pods.
        source = _node_series(rng, unit) if unit % 26 == 0 else _pod_series(rng, unit)
        for labels, value in source:
            plain.append(GenSeries(tuple(sorted({**labels, **extra}.items())), value, False))
            if len(plain) == n_plain:
                break
        unit += 1
    flux = [GenSeries(tuple(sorted(flux_labels(rng, i).items())), 1.0, True) for i in range(n_flux)]
    everything = plain + flux
    rng.shuffle(everything)
    size = spec.batch_size
    return [everything[i : i + size] for i in range(0, len(everything), size)]


# --------------------------------------------------------------------------------------------
# Encoding


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def ts_varint(timestamp_ms: int) -> bytes:
    """The 6-byte varint every round's timestamp is written as (checked, never assumed)."""
    encoded = _varint(timestamp_ms)
    if len(encoded) != _TS_VARINT_LEN:
        raise ValueError(f"timestamp {timestamp_ms} is not a 6-byte varint")
    return encoded


_DOUBLE: Final = struct.Struct("<d")
# A Sample message: value (field 1, fixed64) then timestamp (field 2, varint); always 16 bytes.
_SAMPLE_HEAD: Final = b"\x12\x10\x09"


class PreparedBatch(NamedTuple):
    """One request's bytes between timestamps, and what it holds."""

    chunks: tuple[bytes, ...]  # len == samples + 1; join them with the round's timestamp
    samples: int
    flux: int  # how many of the samples are gotk_resource_info ones
    raw_size: int
    compressed: tuple[bytes, ...] = ()  # the same, snappy-compressed (see snappy_with_holes)


def encode_batch(
    series: Sequence[GenSeries], label_cache: dict[tuple[str, str], bytes]
) -> PreparedBatch:
    """Hand-written WriteRequest encoding split at the timestamps (see the module docstring).

    Equivalent to ``gotk_relay.wire.rw1.encode`` (checked by :func:`check_encoding`), but it
    knows where each timestamp goes. Label fields are cached: most label pairs repeat.
    """
    chunks: list[bytes] = []
    pending = bytearray()
    flux = 0
    for item in series:
        parts = []
        for pair in item.labels:
            encoded = label_cache.get(pair)
            if encoded is None:
                name, value = pair[0].encode(), pair[1].encode()
                inner = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(len(value)) + value
                encoded = label_cache[pair] = b"\x0a" + _varint(len(inner)) + inner
            parts.append(encoded)
        labels = b"".join(parts)
        sample = _SAMPLE_HEAD + _DOUBLE.pack(item.value) + b"\x10"
        body_len = len(labels) + len(sample) + _TS_VARINT_LEN
        pending += b"\x0a" + _varint(body_len) + labels + sample
        chunks.append(bytes(pending))
        pending.clear()
        flux += item.flux
    chunks.append(b"")
    raw_size = sum(map(len, chunks)) + _TS_VARINT_LEN * len(series)
    return PreparedBatch(tuple(chunks), len(series), flux, raw_size)


class Workload:
    """A spec's batches, encoded once; :meth:`body` makes a round's request body."""

    def __init__(
        self, spec: WorkloadSpec, *, keep_series: bool = False, precompress: bool = True
    ) -> None:
        """Generate and encode; ``precompress`` also builds the snappy-with-holes chunks.

        Without ``precompress`` every request is compressed when sent (~0.9 ms per 2000
        samples here): fine against a slow receiver, too slow to saturate a fast one.
        """
        self.spec = spec
        if spec.replicas > 1 and (keep_series or precompress):
            raise ValueError("a replicated workload is neither kept nor precompressed")
        generated = generate(spec)
        cache: dict[tuple[str, str], bytes] = {}
        batches = [encode_batch(b, cache) for b in generated]
        if spec.replicas > 1:
            batches += _replicate(batches, spec.replicas, cache)
        if precompress:
            batches = [_with_compressed(b, spec) for b in batches]
        self.batches: tuple[PreparedBatch, ...] = tuple(batches)
        self.series: list[list[GenSeries]] | None = generated if keep_series else None
        self.samples_per_round = sum(b.samples for b in self.batches)
        self.flux_per_round = sum(b.flux for b in self.batches)

    def raw(self, index: int, round_: int) -> bytes:
        return ts_varint(self.spec.timestamp(round_)).join(self.batches[index].chunks)

    def body(self, index: int, round_: int) -> bytes:
        batch = self.batches[index]
        if batch.compressed:
            return ts_varint(self.spec.timestamp(round_)).join(batch.compressed)
        return bytes(cramjam.snappy.compress_raw(self.raw(index, round_)))

    @property
    def mean_body_bytes(self) -> float:
        """Average compressed request size (of round 0), for the report."""
        return sum(len(self.body(i, 0)) for i in range(len(self.batches))) / len(self.batches)


def _replicate(
    base: list[PreparedBatch], replicas: int, cache: dict[tuple[str, str], bytes]
) -> list[PreparedBatch]:
    """Replicas 1.. of the base batches: the same bytes with another `cluster` value.

    The value has a fixed width, so no length prefix changes, and the encoded label field
    (name included) occurs once per series: a byte replace is exact.
    """
    first = cache[replica_label(0)]
    out = []
    for replica in range(1, replicas):
        field = cache.setdefault(replica_label(replica), first[:-3] + f"{replica:03d}".encode())
        for batch in base:
            chunks = tuple(chunk.replace(first, field) for chunk in batch.chunks)
            out.append(batch._replace(chunks=chunks))
    return out


def _with_compressed(batch: PreparedBatch, spec: WorkloadSpec) -> PreparedBatch:
    """Add the compressed chunks, checked by decompressing two different rounds."""
    placeholder = ts_varint(spec.timestamp(0))
    holes = []
    offset = 0
    for chunk in batch.chunks[:-1]:
        offset += len(chunk)
        holes.append(offset)
        offset += _TS_VARINT_LEN
    compressed = snappy_with_holes(placeholder.join(batch.chunks), holes, _TS_VARINT_LEN)
    for round_ in (1, 1_000_003):
        ts = ts_varint(spec.timestamp(round_))
        if bytes(cramjam.snappy.decompress_raw(ts.join(compressed))) != ts.join(batch.chunks):
            raise AssertionError("snappy_with_holes made a block that decompresses wrongly")
    return batch._replace(compressed=compressed)


def check_encoding(workload: Workload) -> None:
    """Decode the first batch with the relay's own codec and compare: the hand encoder is right.

    Imported lazily so the loader itself needs nothing from the relay.
    """
    from gotk_relay.model import Batch, Sample, Series
    from gotk_relay.wire import rw1

    series = generate(workload.spec)[0]
    expected = Batch(
        tuple(Series(s.labels, (Sample(s.value, workload.spec.timestamp(3)),)) for s in series)
    )
    decoded = rw1.decode(workload.raw(0, 3))
    if decoded != expected:
        raise AssertionError("hand-encoded WriteRequest differs from the model it encodes")


# --------------------------------------------------------------------------------------------
# HTTP/1.1 over raw asyncio streams


class HTTPError(Exception):
    """The server answered something this minimal client cannot read."""


class Response(NamedTuple):
    status: int
    retry_after: float | None


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects lazily after any failure."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{WRITE_HEADERS}Content-Length: "
        ).encode()

    async def post(self, body: bytes) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HTTPError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        await self._skip_body(headers, status)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        retry_after = None
        if "retry-after" in headers:
            with contextlib.suppress(ValueError):
                retry_after = float(headers["retry-after"])
        return Response(status, retry_after)

    async def _skip_body(self, headers: dict[str, str], status: int) -> None:
        assert self._reader is not None
        if status in (204, 304) or 100 <= status < 200:
            return
        if "content-length" in headers:
            await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            for _ in range(100_000):  # bounded: a chunked error body is a few chunks
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self._reader.readexactly(size + 2)
                if size == 0:
                    return
            raise HTTPError("endless chunked body")
        else:
            raise HTTPError("response without a length")

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


# --------------------------------------------------------------------------------------------
# Load phases


@dataclass(slots=True)
class PhaseResult:
    """What the loader saw during one phase (counts of samples, not requests, unless named)."""

    duration: float = 0.0  # first send to last answer
    requests: int = 0  # HTTP attempts that got an answer
    accepted_requests: int = 0
    accepted_samples: int = 0
    accepted_flux: int = 0  # accepted gotk_resource_info samples
    dropped_samples: int = 0  # answered 4xx (not 429): Prometheus drops them too
    abandoned_samples: int = 0  # still being retried when the phase ended
    retries: int = 0
    transport_errors: int = 0
    late_sends: int = 0  # fixed-rate mode: sent more than one interval after their slot
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    # Which (batch index, round) were acked: the sink's full check needs them.
    acked: list[tuple[int, int]] = field(default_factory=list)

    def absorb(self, other: PhaseResult) -> None:
        """Add a later run's counts to these, as if both had been one phase of their summed
        durations (the benchmark's latency phase is made of slices, see ``bench/phases.py``)."""
        self.duration += other.duration
        self.requests += other.requests
        self.accepted_requests += other.accepted_requests
        self.accepted_samples += other.accepted_samples
        self.accepted_flux += other.accepted_flux
        self.dropped_samples += other.dropped_samples
        self.abandoned_samples += other.abandoned_samples
        self.retries += other.retries
        self.transport_errors += other.transport_errors
        self.late_sends += other.late_sends
        self.statuses.update(other.statuses)
        self.latencies.extend(other.latencies)
        self.acked.extend(other.acked)

    @property
    def accepted_per_second(self) -> float:
        return self.accepted_samples / self.duration if self.duration > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds over answered attempts (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
        return ordered[rank]

    def summary(self) -> dict[str, object]:
        return {
            "duration_s": round(self.duration, 3),
            "requests": self.requests,
            "accepted_requests": self.accepted_requests,
            "accepted_samples": self.accepted_samples,
            "accepted_flux_samples": self.accepted_flux,
            "accepted_per_s": round(self.accepted_per_second, 1),
            "dropped_samples": self.dropped_samples,
            "abandoned_samples": self.abandoned_samples,
            "retries": self.retries,
            "transport_errors": self.transport_errors,
            "late_sends": self.late_sends,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_p50_ms": round(self.percentile(0.50) * 1000, 3),
            "latency_p99_ms": round(self.percentile(0.99) * 1000, 3),
            "latency_max_ms": round(max(self.latencies, default=float("nan")) * 1000, 3),
        }


class Loader:
    """Pushes a workload to one URL; keeps its round counters across phases.

    Rounds continue where the previous phase stopped, so a later phase never resends an old
    timestamp for a series.
    """

    def __init__(self, workload: Workload, host: str, port: int, connections: int = 4) -> None:
        if connections < 1:
            raise ValueError("connections must be positive")
        self.workload = workload
        self.connections = [
            Connection(host, port, "/api/v1/write")
            for _ in range(min(connections, len(workload.batches)))
        ]
        # Next round for each batch index.
        self._round = [0] * len(workload.batches)
        self.record_acked = False

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()

    async def run(
        self, duration: float, rate: float | None = None, rounds: int | None = None
    ) -> PhaseResult:
        """Push for ``duration`` seconds: as fast as answers come, or at ``rate`` samples/s.

        With ``rounds``, stop earlier once every batch was sent that many more times (the
        deadline still bounds it).

        At a fixed rate the schedule is open-loop per connection (slot k of connection c is at
        ``start + (k * connections + c) * interval``); a connection that falls behind sends at
        once and counts a late send. No new request starts after the deadline; requests in
        flight then are awaited (up to the request timeout), so every acked batch is counted.
        """
        result = PhaseResult()
        n = len(self.connections)
        interval = None
        if rate is not None:
            if rate <= 0:
                raise ValueError("rate must be positive")
            interval = self.workload.spec.batch_size / rate
        start = time.perf_counter()
        deadline = start + duration
        tasks = [
            asyncio.create_task(self._worker(c, n, deadline, start, interval, rounds, result))
            for c in range(n)
        ]
        await asyncio.gather(*tasks)
        result.duration = time.perf_counter() - start
        return result

    async def _worker(
        self,
        c: int,
        n: int,
        deadline: float,
        start: float,
        interval: float | None,
        rounds: int | None,
        result: PhaseResult,
    ) -> None:
        conn = self.connections[c]
        mine = range(c, len(self.workload.batches), n)
        slot = 0
        for _ in range(rounds if rounds is not None else 10_000_000):  # the deadline ends it
            for index in mine:
                now = time.perf_counter()
                if now >= deadline:
                    return
                if interval is not None:
                    due = start + (slot * n + c) * interval
                    slot += 1
                    if due > now:
                        if due >= deadline:
                            return
                        await asyncio.sleep(due - now)
                    elif now - due > interval:
                        result.late_sends += 1
                await self._send(conn, index, deadline, result)

    async def _send(
        self, conn: Connection, index: int, deadline: float, result: PhaseResult
    ) -> None:
        """Send one batch until it is acked, dropped, or the phase ends while backing off."""
        batch = self.workload.batches[index]
        round_ = self._round[index]
        self._round[index] += 1  # a round is used once, acked or not: timestamps never repeat
        body = self.workload.body(index, round_)
        backoff = MIN_BACKOFF
        for _attempt in range(1000):
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    response = await conn.post(body)
            except (
                OSError,
                TimeoutError,
                ValueError,
                HTTPError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ):
                result.transport_errors += 1
                await conn.close()
                response = None
            if response is not None:
                result.requests += 1
                result.latencies.append(time.perf_counter() - t0)
                result.statuses[response.status] += 1
                if 200 <= response.status < 300:
                    result.accepted_requests += 1
                    result.accepted_samples += batch.samples
                    result.accepted_flux += batch.flux
                    if self.record_acked:
                        result.acked.append((index, round_))
                    return
                if response.status != 429 and response.status < 500:
                    result.dropped_samples += batch.samples
                    return
            delay = backoff
            if response is not None and response.retry_after is not None:
                delay = min(max(response.retry_after, 0.0), MAX_BACKOFF)
            backoff = min(backoff * 2, MAX_BACKOFF)
            if time.perf_counter() + delay >= deadline:
                result.abandoned_samples += batch.samples
                return
            result.retries += 1
            await asyncio.sleep(delay)
        result.abandoned_samples += batch.samples


# --------------------------------------------------------------------------------------------
# Command line: push a workload at a URL by hand


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="push remote-write load at a receiver")
    parser.add_argument("--target", default="127.0.0.1:9201", help="HOST:PORT of the receiver")
    parser.add_argument("--series", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--flux-fraction", type=float, default=0.001)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="samples/s; default: max")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    spec = WorkloadSpec(
        "cli", args.series, args.batch_size, args.flux_fraction, ts_base_ms=int(time.time() * 1000)
    )
    workload = Workload(spec)
    check_encoding(workload)

    async def go() -> PhaseResult:
        loader = Loader(workload, host, int(port), args.connections)
        try:
            return await loader.run(args.duration, args.rate)
        finally:
            await loader.close()

    print(json.dumps(asyncio.run(go()).summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
