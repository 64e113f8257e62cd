"""Remote write 2.0 (``io.prometheus.write.v2.Request``) to and from the internal model.

Symbols are resolved on decode (every ref is range-checked: a bad ref is a 400, not an
IndexError) and rebuilt on encode with ``symbols[0] == ""`` as the spec requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError as ProtoDecodeError

from .. import native
from ..model import (
    Batch,
    Exemplar,
    FamilyMetadata,
    Labels,
    Metadata,
    MetricType,
    Protocol,
    Sample,
    Series,
    with_series_families,
)
from . import rw1
from . import validate as strict
from . import write_v2_pb2 as pb
from .errors import DecodeError, TooLargeError
from .labels import (
    NO_LIMITS,
    Limits,
    check_points,
    check_series,
    check_series_count,
    describe,
    is_sorted,
)
from .rw1 import Decoded, fill_histogram, histogram_from_proto

CONTENT_TYPE = f"application/x-protobuf;proto={Protocol.V2}"
VERSION = "2.0.0"


_native: Any = native.load(f"{__package__}._v2")
NATIVE = _native is not None


def from_v1_compiled(raw: bytes) -> bytes:
    """An uncompressed v1 WriteRequest (one the relay accepted) as an uncompressed v2 Request.

    The bytes of ``from_v1_reference(raw)``, made by one walk over the v1 bytes in C
    (``_v2.c``); a request it does not model (broken protobuf, a string that is not UTF-8, a
    histogram mixing int and float counts) goes to the reference, which raises or converts as
    it does. Only where the extension is built.
    """
    converted = from_v1_walk(raw)
    if converted is not None:
        return converted
    return from_v1_reference(raw)


def from_v1_walk(raw: bytes) -> bytes | None:
    """The compiled walk alone: None for a request it does not model."""
    converted: bytes | None = _native.from_v1(raw)
    return converted


def from_v1_reference(raw: bytes) -> bytes:
    """The conversion through the model: v1 family metadata becomes per-series metadata."""
    return encode(rw1.decode(raw, validate=False))


# The one switch between the two; tests run both by name.
from_v1 = from_v1_compiled if NATIVE else from_v1_reference


class Converted(NamedTuple):
    """A 2.0 request as 1.0 (``to_v1``): the 1.0 bytes, what it holds (for 2.0's written
    headers), and its labels' bytes once resolved."""

    v1: bytes
    samples: int
    histograms: int
    exemplars: int
    expanded: int


def to_v1_compiled(raw: bytes, max_expanded: int) -> Converted | None:
    """An uncompressed 2.0 Request as the 1.0 WriteRequest the fast path takes, with its counts
    and its labels' bytes once resolved (as ``decode_counted`` counts ``expanded``); None for a
    request 1.0 cannot carry as the decoded path does (start or created timestamps), one the
    decoded path refuses for what only 2.0 forbids (a series of samples and histograms), one
    whose labels once resolved exceed ``max_expanded`` bytes (the walk stops there: the decoded
    path answers 413), or one the walk does not model: the caller decodes it instead. Not a
    check: the survey checks the 1.0 bytes, and a refusal is worded by ``decode_counted``. One
    walk in C (``_v2.c``); only where the extension is built."""
    found = _native.to_v1(raw, max_expanded)
    if found is None:
        return None
    v1, samples, expanded, histograms, exemplars = found
    return Converted(v1, samples, histograms, exemplars, expanded)


def to_v1_reference(raw: bytes, max_expanded: int) -> Converted | None:
    """``to_v1_compiled``'s answer through the model: decoded (unchecked), then encoded as 1.0
    (the series' metadata as family entries, ``model.with_series_families``)."""
    try:
        decoded = decode_counted(raw, validate=False)
    except DecodeError:
        return None
    if decoded.expanded > max_expanded:
        return None
    batch = decoded.batch
    for series in batch.series:
        if (
            (series.samples and series.histograms)
            or series.created_timestamp
            or any(sample.start_timestamp for sample in series.samples)
            or any(hist.start_timestamp for hist in series.histograms)
        ):
            return None
    return Converted(
        rw1.encode(batch),
        batch.sample_count,
        batch.histogram_count,
        batch.exemplar_count,
        decoded.expanded,
    )


# The one switch: without the extension a 2.0 request takes the decoded path (in a thread when
# large), where the reference would decode it on the loop and then scan it again.
to_v1 = to_v1_compiled if NATIVE else None


def decode(data: bytes, *, validate: bool = True, limits: Limits = NO_LIMITS) -> Batch:
    """Parse an uncompressed v2 Request: ``decode_counted(...).batch``."""
    return decode_counted(data, validate=validate, limits=limits).batch


def decode_counted(data: bytes, *, validate: bool = True, limits: Limits = NO_LIMITS) -> Decoded:
    """Parse an uncompressed v2 Request, checked as strictly as ``rw1.decode_counted``.

    With ``validate``: the protobuf encoding (``validate.check_v2``), every symbol reference,
    the label rules and limits per series in request order; a label set not sorted by name is
    sorted (counted in ``Decoded.sorted``). ``limits`` apply even when ``validate`` is false.
    """
    if validate:
        strict.check_v2(data)
    request = pb.Request()
    try:
        request.ParseFromString(data)
    except ProtoDecodeError as exc:
        raise DecodeError(f"invalid protobuf io.prometheus.write.v2.Request: {exc}") from exc
    check_series_count(len(request.timeseries), limits)
    if limits.max_samples < len(data) // 2:  # a point takes 2 bytes at least
        check_points(sum(len(ts.samples) + len(ts.histograms) for ts in request.timeseries), limits)
    symbols = tuple(request.symbols)
    if symbols and symbols[0] != "":
        raise DecodeError("symbols[0] must be the empty string")
    # What each reference costs once resolved, as a 1.0 Label field holds it: the string, its
    # tag and length, and (counted here, one byte a reference) the Label's own tag and length.
    cost = [len(text.encode()) + 3 for text in symbols]
    expanded = 0
    series: list[Series] = []
    sorted_count = 0
    for index, ts in enumerate(request.timeseries):
        labels = _resolve_pairs(symbols, ts.labels_refs, f"timeseries[{index}].labels_refs")
        expanded += sum(map(cost.__getitem__, ts.labels_refs))  # in range: resolved above
        if expanded > limits.max_expanded_bytes:
            raise TooLargeError(
                f"request expands to over {limits.max_expanded_bytes} bytes of labels once "
                f"its symbols are resolved (at timeseries[{index}]), over "
                "receiver.max_decompressed_bytes"
            )
        if validate or limits.bounds_labels:
            try:
                check_series(labels, limits, validate=validate)
            except DecodeError as exc:
                raise type(exc)(f"{exc} (timeseries[{index}])") from None
        if validate:
            if ts.samples and ts.histograms:
                raise DecodeError(
                    f"series {describe(labels)} carries both samples and histograms "
                    f"(timeseries[{index}])"
                )
            if not ts.samples and not ts.histograms and not ts.exemplars:
                # As Prometheus since 3.8 (#17250): a 2.0 series is its samples or histograms;
                # metadata alone is refused. Exemplars alone are taken, as 1.0 takes them:
                # Prometheus' own 2.0 sender (3.x, send_exemplars) sends each exemplar as a
                # series of its own, and refusing one would refuse its whole batch of samples.
                raise DecodeError(
                    "TimeSeries must contain at least one sample or histogram for series "
                    f"{describe(labels)} (timeseries[{index}])"
                )
            for number, hist in enumerate(ts.histograms):
                problem = strict.histogram_problem(hist)
                if problem is not None:
                    raise DecodeError(
                        f"invalid native histogram in series {describe(labels)} "
                        f"(timeseries[{index}]): histograms[{number}]: {problem}"
                    )
            if not is_sorted(labels):
                labels = tuple(sorted(labels))
                sorted_count += 1
        metadata = None
        if ts.HasField("metadata"):
            meta = ts.metadata
            metadata = Metadata(
                _metric_type(meta.type),
                _symbol(symbols, meta.help_ref, f"timeseries[{index}].metadata.help_ref"),
                _symbol(symbols, meta.unit_ref, f"timeseries[{index}].metadata.unit_ref"),
            )
        exemplars = tuple(
            Exemplar(
                _resolve_pairs(
                    symbols, ex.labels_refs, f"timeseries[{index}].exemplars.labels_refs"
                ),
                ex.value,
                ex.timestamp,
            )
            for ex in ts.exemplars
        )
        for ex in ts.exemplars:  # in range: resolved above
            expanded += sum(map(cost.__getitem__, ex.labels_refs))
        if expanded > limits.max_expanded_bytes:
            raise TooLargeError(
                f"request expands to over {limits.max_expanded_bytes} bytes of labels once "
                f"its symbols are resolved (at timeseries[{index}]), over "
                "receiver.max_decompressed_bytes"
            )
        series.append(
            Series(
                labels=labels,
                samples=tuple(Sample(s.value, s.timestamp, s.start_timestamp) for s in ts.samples),
                histograms=tuple(histogram_from_proto(h) for h in ts.histograms),
                exemplars=exemplars,
                metadata=metadata,
                created_timestamp=ts.created_timestamp,
            )
        )
    # The series' own metadata also as their families' entries: what 1.0 destinations (and the
    # Datadog and OTLP conversions, which read 1.0) carry of a 2.0 sender's metadata.
    return Decoded(with_series_families(Batch(tuple(series), ())), sorted_count, expanded)


def encode(batch: Batch) -> bytes:
    """Serialize to a v2 Request.

    Series without metadata of their own take it from the batch's family metadata (what a v1
    sender sent), matched on the metric name or its family (``_bucket``, ``_total``, …). A
    series with neither samples nor histograms is left out (2.0 has no such series).
    """
    table: dict[str, int] = {"": 0}
    symbols: list[str] = [""]

    def ref(text: str) -> int:
        found = table.get(text)
        if found is None:
            found = table[text] = len(symbols)
            symbols.append(text)
        return found

    def refs(labels: Labels) -> list[int]:
        out: list[int] = []
        for name, value in labels:
            out.append(ref(name))
            out.append(ref(value))
        return out

    families = {m.family: m for m in batch.metadata}
    request = pb.Request()
    add = request.timeseries.add
    for series in batch.series:
        if not series.samples and not series.histograms:
            # A 1.0 series may come with no samples (Prometheus' 1.0 handler takes it and writes
            # nothing); a 2.0 receiver refuses the whole request for it (Prometheus 3.8+), so
            # it is left out: it holds no data a 2.0 series could carry.
            continue
        ts = add()
        ts.labels_refs.extend(refs(series.labels))
        ts.samples.extend(
            pb.Sample(value=s.value, timestamp=s.timestamp, start_timestamp=s.start_timestamp)
            for s in series.samples
        )
        for hist in series.histograms:
            fill_histogram(ts.histograms.add(), hist)
        for ex in series.exemplars:
            ts.exemplars.add(labels_refs=refs(ex.labels), value=ex.value, timestamp=ex.timestamp)
        meta = series.metadata or _family_metadata(families, series.name)
        if meta is not None:
            ts.metadata.type = int(meta.type)
            ts.metadata.help_ref = ref(meta.help)
            ts.metadata.unit_ref = ref(meta.unit)
        if series.created_timestamp:
            ts.created_timestamp = series.created_timestamp
    request.symbols.extend(symbols)
    return bytes(request.SerializeToString())


_FAMILY_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info", "_gcount", "_gsum")


def _family_metadata(families: Mapping[str, FamilyMetadata], name: str) -> Metadata | None:
    if not families:
        return None
    found = families.get(name)
    if found is None:
        for suffix in _FAMILY_SUFFIXES:
            if name.endswith(suffix):
                found = families.get(name[: -len(suffix)])
                if found is not None:
                    break
    if found is None:
        return None
    return Metadata(found.type, found.help, found.unit)


def _metric_type(value: int) -> MetricType:
    try:
        return MetricType(value)
    except ValueError:
        return MetricType.UNKNOWN


def _symbol(symbols: tuple[str, ...], ref: int, where: str) -> str:
    if ref >= len(symbols):
        raise DecodeError(f"{where}: symbol ref {ref} out of range ({len(symbols)} symbols)")
    return symbols[ref]


def _resolve_pairs(symbols: tuple[str, ...], refs: object, where: str) -> Labels:
    items = list(refs)  # type: ignore[call-overload]
    if len(items) % 2:
        raise DecodeError(f"{where}: odd number of label refs ({len(items)})")
    count = len(symbols)
    for ref in items:
        if ref >= count:
            raise DecodeError(f"{where}: symbol ref {ref} out of range ({count} symbols)")
    return tuple((symbols[items[i]], symbols[items[i + 1]]) for i in range(0, len(items), 2))
