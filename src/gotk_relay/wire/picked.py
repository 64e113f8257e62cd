"""Decode the series the fast path picks (``rw1_bytes.survey``), remembering label sets.

The picked series are the Flux rules' inputs and what the federate store may keep: a few per
request, or every series when a federate selector may match any metric name.

Why: the series a rule picks (``gotk_resource_info`` above all) carry the same ~14 labels every
scrape; only the sample changes. ``rw1.decode`` rebuilds and re-validates those labels each time
(upb objects, then Python tuples, then ``check_series``), which made decoding as costly as the
rest of the fast path together. Here each encoded series is cut into its label
part and its trailing samples with a few byte comparisons; the label part's bytes key a cache of
the ``Labels`` tuple that upb decoded and ``check_series`` accepted for them, and the samples are
read with ``struct``. The result is the value ``rw1.decode(rw1_bytes.rebuild(series, metadata),
limits=limits)`` returns, and every request that decoder refuses is refused by handing the whole
request to it, so errors (type, message, which series is named) are its own.

Why cutting at the samples is exact: a series is a sequence of protobuf fields, parsed front to
back. If the bytes before the trailing samples parse on their own (upb, inside a WriteRequest, as
``rw1`` parses them), that parse ends on a field boundary of the whole series, so the whole series
parses as those fields followed by the samples. The label part is only cached when it holds
labels and nothing that changes the decoded series (no sample, exemplar or histogram; unknown
fields are dropped by both), so a later series with the same label bytes decodes to the cached
labels plus its own samples. A sample is read only in its two usual encodings (value and
timestamp, or timestamp alone for a value of 0, the timestamp a varint of at most 9 bytes, so
never negative); anything else (histograms, exemplars, a timestamp of 0, a negative one, odd field
order) decodes that series through ``rw1`` as before.

Label sets not sorted by name come out sorted, as ``rw1.decode`` sorts them.

The usual series (samples in those encodings, a label part found in ``entries``) are decoded a
run at a time in C where the extension is built (``decode_known`` in ``_survey.c``, with the
same lookup as ``find``); the loop here takes each series the run stops at, and every series
without the extension.

How a label part finds its labels without keeping its bytes: a Flux label set is ~555 bytes
encoded, which as a dict key (the bytes object itself) was the largest thing the relay kept per
Flux object. The cache is keyed by the part's hash instead (an int: ``hash_part`` in C, a fast
hash of the bytes, or Python's ``hash`` without the extension), and a hit is confirmed by
``labels_equal``: the part must be exactly the encoding rw1 writes for the cached labels (each
Label field in order, name then value, an empty string omitted, shortest lengths), compared
field by field with the label strs themselves (in C, ``_survey.c``; the pure-Python twin
compares rw1's own encoding). Such a part decodes to those labels, so a hit is exact, never a
guess by hash. A part whose labels are not its own canonical encoding (fields in another order,
an empty string written out, unknown fields, padded lengths, labels sorted on the way), a part
cached as None, and a second label set whose part has a hash already taken are kept by their
bytes in a second dict (``by_bytes``), as every part was before: nothing is decoded more often
than it was.

Verdicts depend on the limits, so there is one cache per ``Limits`` value: a reload with other
limits never reuses a label set accepted under the old ones. Caches are bounded by what the
relay tracks (``bound``: the relay sets it from ``flux.max_objects`` and ``federate.max_series``,
``views.label_cache_bound``) in entries (each dict) and in key bytes (the parts kept by their
bytes), and a full one drops its oldest label sets a slice at a time, never all at once:
cleared whole, a cache a little smaller than the working set (100,000 Flux objects: ~55 MB of
label parts) missed on almost every series, and each miss also gave the Flux rules and the
federate store a new label tuple, missing their identity-keyed shortcuts. The relay is
single-threaded (asyncio); an evicted entry only costs its next decode.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from .. import caches
from ..caches import Bounded
from ..model import Batch, FamilyMetadata, Labels, Sample, Series
from . import rw1, rw1_bytes
from .errors import DecodeError
from .labels import Limits, check_series, sort_labels

# Label sets remembered per Limits value (caches.FAMILIES["picked_labels"].limit; ``bound``)
MIN_ENTRIES: Final = 65_536  # the bound's floor, whatever little the relay tracks
MIN_KEY_BYTES: Final = 32 << 20
LABEL_CACHES: Final = caches.family("picked_labels", MIN_ENTRIES)  # by the part's hash
BYTES_CACHES: Final = caches.family("picked_label_bytes", MIN_ENTRIES)  # by its bytes
_MAX_LIMITS: Final = 8  # Limits values with a cache (a reload makes a new one)
PAIRS_PER_ENTRY: Final = 4  # shared (name, value) tuples kept per label set the cache may hold

_SAMPLE_TAG: Final = 0x12  # TimeSeries.samples: field 2, LEN
_VALUE_TAG: Final = 0x09  # Sample.value: field 1, I64
_TS_TAG: Final = 0x10  # Sample.timestamp: field 2, VARINT
_MAX_VARINT: Final = 9  # bytes: 63 bits, so an int64 that cannot be negative
_DOUBLE_AT: Final = struct.Struct("<d").unpack_from
_new = tuple.__new__  # builds the NamedTuples without their keyword-handling __new__


def labels_equal_reference(key: bytes, labels: Labels) -> bool:
    """Whether ``key`` is exactly the encoding rw1 writes for ``labels`` (``labels_equal``)."""
    try:
        return rw1._encode_labels_reference(labels) == key
    except UnicodeEncodeError:  # a lone surrogate: no bytes are its encoding
        return False


def find_reference(
    entries: dict[int, Labels], data: bytes, end: int, hasher: Callable[[bytes], int] = hash
) -> Labels | None:
    """The labels ``entries`` holds under the hash of the label part ``data[:end]`` when that
    part is exactly their encoding, else None: the cache's lookup (``LabelCache.find``; the
    compiled one makes no bytes object for the part)."""
    key = data[:end]
    labels = entries.get(hasher(key))
    return labels if labels is not None and labels_equal(key, labels) else None


# The one switch between the compiled twins (``_survey.c``) and these; tests call both. The
# compiled lookup hashes with its own function (``hash_part``), the reference with ``hash``.
labels_equal: Final[Callable[[bytes, Labels], bool]] = (
    labels_equal_reference
    if rw1_bytes.labels_equal_compiled is None
    else rw1_bytes.labels_equal_compiled
)
_find: Final[Callable[[dict[int, Labels], bytes, int], Labels | None]] = (
    find_reference if rw1_bytes.find_compiled is None else rw1_bytes.find_compiled
)
_hash: Final[Callable[[bytes], int]] = (
    hash if rw1_bytes.hash_part_compiled is None else rw1_bytes.hash_part_compiled
)
# The usual series a run at a time in C (``decode_known``: the loop below, for the series it
# takes), where the cache's lookup is the compiled one; None: the loop takes every series.
_known: Final = rw1_bytes.decode_known_compiled


class _Budget:
    """Bytes of label encodings every cache may hold (``bound``); one object, so a reload's
    new bound reaches the caches already made."""

    __slots__ = ("key_bytes",)

    def __init__(self) -> None:
        self.key_bytes = MIN_KEY_BYTES


BUDGET: Final = _Budget()


def bound(entries: int, key_bytes: int) -> None:
    """Bound every label cache, the ones made already included: at most ``entries`` label sets
    in each of its two dicts, and ``key_bytes`` bytes of the parts kept by their bytes (raised
    to ``MIN_ENTRIES`` and ``MIN_KEY_BYTES``). A lower bound takes effect at the next miss,
    oldest entries first."""
    entries = max(MIN_ENTRIES, entries)
    BUDGET.key_bytes = max(MIN_KEY_BYTES, key_bytes)
    for family in (LABEL_CACHES, BYTES_CACHES):
        family.limit = entries
        for cache in family.live():
            cache.limit = entries


class LabelCache:
    """Label encodings met under one ``Limits`` value: their accepted labels, found by the
    part's hash when the part is their canonical encoding (``entries``), else by its bytes
    (``by_bytes``), where a part that holds more than labels maps to None (so it is not parsed
    alone again on every request). ``hasher``: the hash of a part (by default the compiled
    lookup's own, or ``hash``; a test gives one that collides)."""

    __slots__ = (
        "bounded",
        "by_bytes",
        "entries",
        "find",
        "hasher",
        "key_bytes",
        "known",
        "names",
        "pairs",
        "raw",
    )

    def __init__(self, hasher: Callable[[bytes], int] | None = None) -> None:
        self.hasher = _hash if hasher is None else hasher
        # find(entries, data, end): what ``entries`` holds for ``data[:end]``, or None
        self.find: Callable[[dict[int, Labels], bytes, int], Labels | None] = (
            _find if hasher is None else partial(find_reference, hasher=hasher)
        )
        # The compiled run of usual series, which looks parts up as ``_find`` does.
        self.known = _known if hasher is None and _find is not find_reference else None
        self.bounded: Bounded[int, Labels] = LABEL_CACHES.new()
        self.entries = self.bounded.entries
        self.raw: Bounded[bytes, Labels | None] = BYTES_CACHES.new()
        self.by_bytes = self.raw.entries
        # One tuple per distinct (name, value): most pairs repeat across series (scrape labels),
        # so sharing them keeps a full cache to roughly one tuple per label of its own. Bounded
        # too, oldest first: a pair dropped here stays in the label sets that hold it, unshared.
        self.pairs: dict[tuple[str, str], tuple[str, str]] = {}
        # One str per label name in the pairs: a pair of its own (an object's name, revision)
        # otherwise brought a name str of its own too, ~56 bytes. Bounded as the pairs are.
        self.names: dict[str, str] = {}
        self.key_bytes = 0  # of the parts in by_bytes

    def store(self, key: bytes, labels: Labels | None) -> Labels | None:
        """Remember what the part ``key`` decodes to (found in neither dict); the labels to use."""
        if labels is not None:
            labels = self._share(labels)
            hashed = self.hasher(key)
            entries = self.entries
            if hashed not in entries and labels_equal(key, labels):
                bounded = self.bounded
                if len(entries) >= bounded.limit:
                    bounded.make_room()
                entries[hashed] = labels
                return labels
        budget = BUDGET.key_bytes
        if len(key) > budget:
            return labels  # larger than the whole budget: decoded each time, never cached
        raw = self.raw
        by_bytes = self.by_bytes
        if len(by_bytes) >= raw.limit:
            self.key_bytes -= sum(map(len, raw.make_room()))
        while by_bytes and self.key_bytes + len(key) > budget:
            # The oldest slice of the entries, as make_room drops them, until the key fits.
            dropped = caches.evict_oldest(by_bytes, max(1, raw.limit // caches.SLICE))
            self.key_bytes -= sum(map(len, dropped))
        by_bytes[key] = labels
        self.key_bytes += len(key)
        return labels

    def _share(self, labels: Labels) -> Labels:
        """``labels`` made of the pairs and names already held (see ``pairs``)."""
        pairs = self.pairs
        names = self.names
        limit = PAIRS_PER_ENTRY * self.bounded.limit
        if len(pairs) >= limit:
            caches.evict_oldest(pairs, max(1, len(pairs) // caches.SLICE))
        if len(names) >= limit:
            caches.evict_oldest(names, max(1, len(names) // caches.SLICE))
        shared: list[tuple[str, str]] = []
        for pair in labels:
            found = pairs.get(pair)
            if found is None:
                name = names.setdefault(pair[0], pair[0])
                found = pair if name is pair[0] else (name, pair[1])
                pairs[found] = found
            shared.append(found)
        return tuple(shared)


_UNSEEN: Final[Labels] = (("", ""),)  # a sentinel no cached label set is identical to
_PLACEHOLDER: Final = Series(())  # stands for a series decoded later, on the general path
_caches: dict[Limits, LabelCache] = {}


def decode(
    series: Sequence[bytes],
    metadata: Sequence[bytes],
    limits: Limits,
    cache: LabelCache | None = None,
) -> Batch:
    """``rw1.decode(rw1_bytes.rebuild(series, metadata), limits=limits)``, cheaper for known labels.

    ``series`` and ``metadata`` are encoded TimeSeries and MetricMetadata messages, as
    ``rw1_bytes.split`` gives them. Raises what ``rw1.decode`` raises for that request.
    ``cache``: the one to use instead of this module's for ``limits`` (every call that passes
    it must pass the same ``limits``).
    """
    if len(series) > limits.max_series:
        return _exact(series, metadata, limits)  # which error comes first is rw1's to say
    if cache is None:
        cache = _caches.get(limits)
        if cache is None:
            if len(_caches) >= _MAX_LIMITS:
                _caches.clear()
            cache = _caches[limits] = LabelCache()
    entries = cache.entries
    by_bytes = cache.by_bytes
    find = cache.find
    seen: dict[bytes, Sample] = {}  # a request's samples mostly share one timestamp and value
    last_field: bytes | None = None  # the sample field that ended the previous series
    last_sample: tuple[Sample, ...] = ()
    out: list[Series] = []
    slow: list[int] = []
    known = cache.known if series.__class__ is list else None
    index, size = 0, len(series)
    while index < size:
        if known is not None:
            index = known(series, index, entries, out, Series, Sample)  # type: ignore[arg-type]
            if index >= size:
                break
        data = series[index]
        index += 1
        if last_field is not None and data.endswith(last_field):
            # Read from the end, the same bytes give the same field.
            start = len(data) - len(last_field)
            samples = last_sample
            if start >= 2 and (data[start - 2] >= 0x80 or data[start - 2] == _TS_TAG):
                more = _trailing_samples(data, start, seen)  # maybe another sample before it
                if more is not None:
                    start, earlier, _ = more
                    samples = earlier + samples
        else:
            cut = _trailing_samples(data, len(data), seen)
            if cut is None:
                slow.append(len(out))
                out.append(_PLACEHOLDER)
                continue
            start, samples, last = cut
            last_field, last_sample = data[last:], samples[-1:]
        labels = find(entries, data, start)
        if labels is None:
            key = data[:start]
            labels = by_bytes.get(key, _UNSEEN)
            if labels is _UNSEEN:
                labels = _learn(key, cache, limits)
        if labels is None:
            slow.append(len(out))
            out.append(_PLACEHOLDER)
        else:
            out.append(_new(Series, (labels, samples, (), (), None, 0)))
    if slow:
        try:
            # Checked as rw1 checks a request: the survey that picked them may have checked the
            # framing only (receiver.validation: framing), and a field of the wrong wire type
            # would otherwise pass as an unknown field.
            decoded = rw1.decode(rw1_bytes.rebuild([series[i] for i in slow])).series
            for index, item in zip(slow, decoded, strict=True):
                check_series(item.labels, limits)
                ordered = sort_labels(item.labels)
                out[index] = item if ordered is item.labels else item._replace(labels=ordered)
        except DecodeError:
            return _exact(series, metadata, limits)
    families: tuple[FamilyMetadata, ...] = ()
    if metadata:
        try:
            families = rw1.decode(rw1_bytes.rebuild((), metadata), validate=False).metadata
        except DecodeError:
            return _exact(series, metadata, limits)
    return Batch(tuple(out), families)


def _exact(series: Sequence[bytes], metadata: Sequence[bytes], limits: Limits) -> Batch:
    return rw1.decode(rw1_bytes.rebuild(series, metadata), limits=limits)


def _learn(key: bytes, cache: LabelCache, limits: Limits) -> Labels | None:
    """The labels of a label part seen for the first time, if it may be cached.

    None when the part does not parse alone, holds more than labels, or its labels are refused
    under ``limits``: the series then takes the general path, which reports any error exactly.
    Only a refusal is not remembered, as it fails the request anyway.
    """
    try:
        # Checked (see the general path in decode): once per label part, then cached.
        (alone,) = rw1.decode(rw1_bytes.rebuild((key,))).series
    except DecodeError:
        return cache.store(key, None)
    if alone.samples or alone.histograms or alone.exemplars:
        return cache.store(key, None)
    try:
        check_series(alone.labels, limits)
    except DecodeError:
        return None
    return cache.store(key, sort_labels(alone.labels))


def _trailing_samples(
    data: bytes, end: int, seen: dict[bytes, Sample]
) -> tuple[int, tuple[Sample, ...], int] | None:
    """The samples ending an encoded series at ``end``: where they start, the samples, and
    where the last one starts. None when ``data[:end]`` does not end in a sample.

    Only samples in their usual encodings are taken, read from the end: ``12 L 09 <double> 10
    <varint>`` or ``12 L 10 <varint>`` (value 0 omitted, as proto3 does). Each is a complete
    field whose length byte covers exactly its content, so read forwards from where the first
    one starts they are the same fields. ``seen`` maps sample fields already read to their
    Sample.
    """
    found: list[Sample] = []
    last = end
    while end >= 4:
        final = end - 1
        if data[final] >= 0x80:
            break
        pos = final - 1
        floor = final - _MAX_VARINT  # where the tag is when the varint has the most bytes allowed
        while pos > floor and pos >= 0 and data[pos] >= 0x80:
            pos -= 1
        if pos < 0 or data[pos] != _TS_TAG:
            break  # also when the varint is longer than _MAX_VARINT bytes
        width = final - pos  # varint bytes
        if (
            pos >= 11
            and data[pos - 9] == _VALUE_TAG
            and data[pos - 10] == 10 + width
            and data[pos - 11] == _SAMPLE_TAG
        ):
            start = pos - 11
        elif pos >= 2 and data[pos - 1] == 1 + width and data[pos - 2] == _SAMPLE_TAG:
            start = pos - 2
        else:
            break
        field = data[start:end]
        sample = seen.get(field)
        if sample is None:
            timestamp = 0
            for shift, byte in enumerate(data[pos + 1 : end]):
                timestamp |= (byte & 0x7F) << (7 * shift)
            value = _DOUBLE_AT(data, pos - 8)[0] if start == pos - 11 else 0.0
            sample = seen[field] = _new(Sample, (value, timestamp, 0))
        found.append(sample)
        if len(found) == 1:
            last = start
        end = start
    if not found:
        return None
    found.reverse()
    return end, tuple(found), last
