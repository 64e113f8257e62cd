/* One strict pass over a remote-write 1.0 request (gotk_relay.wire.rw1_bytes.survey): it decides
 * whether the request is valid, counts its series and points, finds the series a rule reads by
 * metric name and sorts label sets that came unsorted.
 *
 * Why in C: the relay forwards a request as the bytes that came, so every check a receiver
 * makes has to happen here, on every request, at the speed of a memory scan. The same answers
 * from protobuf (upb) and Python cost Python work per label (figures: docs/performance.md).
 *
 * What "valid" means (the Python reference, wire/validate.py, raises the worded error for each):
 *  - protobuf at every level of proto/remote.proto, with Go (gogo) semantics as Prometheus 3
 *    and Mimir decode it: fields in any order, varints of up to 10 bytes (keys and lengths up to
 *    5, as upb reads them: keys of at most 32 bits, lengths under 2 GiB), unknown field numbers skipped for wire types 0, 1, 2 and 5; a known field number
 *    with another wire type is invalid (repeated scalars may be packed or not); groups (3, 4),
 *    wire types 6 and 7 and field number 0 are invalid; every length within its parent, packed
 *    fixed64 lengths a multiple of 8; a Label's repeated name/value keeps the last occurrence;
 *  - strict mode: every proto3 string (label names and values, exemplar labels, metadata) valid
 *    UTF-8; per series, label names non-empty and unique, __name__ present and non-empty, the
 *    label count and name/value lengths within the limits; each native histogram valid as
 *    Prometheus' Validate judges it (rd_histogram: schema, spans, bucket counts, count,
 *    custom bounds);
 *  - series and points (samples + histograms) within the request limits.
 * A label set not sorted by name is valid: its series is rewritten in a copy of the request
 * with its Label fields first, in name order (each field's bytes as they came), then the
 * series' other fields in the order they came, so its length and every other byte stay.
 * Non-strict mode (receiver.validation: framing) checks framing and the counts only.
 *
 * Work is linear in the input and bounded by the schema's fixed depth (no recursion); memory is
 * one label table per call, the outputs, and a copy of the request only when a set is sorted.
 *
 * Also here, as they read the same encoding: the lookup of the picked-series decoder's label
 * cache (wire/picked.py): hash_part, labels_equal and find, which tell whether a label part is
 * exactly the encoding of a cached label set by comparing its bytes with the labels' strs; and
 * decode_known, which decodes the usual picked series (cached labels, usual samples) a run at
 * a time; and encode_labels, which writes that encoding (rw1's encoders' label sets).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef const unsigned char *Bytes;

/* -- protobuf primitives --------------------------------------------------------------- */

static inline int
rd_varint(Bytes d, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out)
{
    Py_ssize_t p = *pos;
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) {
            return 0;
        }
        unsigned char byte = d[p++];
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *pos = p;
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* A field key: at most 5 bytes and 32 bits, field number > 0, wire type 0, 1, 2 or 5. */
static inline int
rd_key(Bytes d, Py_ssize_t *pos, Py_ssize_t end, uint32_t *field, int *wire)
{
    uint64_t key;
    if (*pos < end && d[*pos] < 0x80) {
        key = d[(*pos)++];
    }
    else {
        Py_ssize_t start = *pos;
        if (!rd_varint(d, pos, end, &key) || *pos - start > 5 || key > 0xFFFFFFFFu) {
            return 0;
        }
    }
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    return *field != 0 && (*wire == 0 || *wire == 1 || *wire == 2 || *wire == 5);
}

/* A length that fits within [pos, end): *pos moves past the length varint. At most 5 bytes and
 * under 2 GiB, as upb (Python's protobuf) requires of a length; gogo would take 10 bytes, but no
 * encoder pads a length that far, and what is forwarded must decode everywhere. */
static inline int
rd_len(Bytes d, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out)
{
    uint64_t value;
    if (*pos < end && d[*pos] < 0x80) {
        value = d[(*pos)++];
    }
    else {
        Py_ssize_t start = *pos;
        if (!rd_varint(d, pos, end, &value) || *pos - start > 5 || value > 0x7FFFFFFFu) {
            return 0;
        }
    }
    if (value > (uint64_t)(end - *pos)) {
        return 0;
    }
    *out = (Py_ssize_t)value;
    return 1;
}

/* Skip the value of a field of wire type ``wire`` (0, 1, 2 or 5). */
static inline int
skip(Bytes d, Py_ssize_t *pos, Py_ssize_t end, int wire)
{
    uint64_t ignored;
    Py_ssize_t length;
    switch (wire) {
    case 0:
        return rd_varint(d, pos, end, &ignored);
    case 1:
        if (end - *pos < 8) {
            return 0;
        }
        *pos += 8;
        return 1;
    case 5:
        if (end - *pos < 4) {
            return 0;
        }
        *pos += 4;
        return 1;
    case 2:
        if (!rd_len(d, pos, end, &length)) {
            return 0;
        }
        *pos += length;
        return 1;
    default:
        return 0;
    }
}

/* A repeated varint field: one unpacked value or a packed run of whole varints. */
static inline int
rd_varints(Bytes d, Py_ssize_t *pos, Py_ssize_t end, int wire)
{
    uint64_t ignored;
    Py_ssize_t length;
    if (wire == 0) {
        return rd_varint(d, pos, end, &ignored);
    }
    if (wire != 2 || !rd_len(d, pos, end, &length)) {
        return 0;
    }
    Py_ssize_t stop = *pos + length;
    while (*pos < stop) {
        if (!rd_varint(d, pos, stop, &ignored)) {
            return 0;
        }
    }
    return 1;
}

/* A repeated double field: one fixed64 or a packed run of them. */
static inline int
rd_doubles(Bytes d, Py_ssize_t *pos, Py_ssize_t end, int wire)
{
    Py_ssize_t length;
    if (wire == 1) {
        return skip(d, pos, end, 1);
    }
    if (wire != 2 || !rd_len(d, pos, end, &length) || length % 8 != 0) {
        return 0;
    }
    *pos += length;
    return 1;
}

/* -- UTF-8 --------------------------------------------------------------------------------- */

/* Valid UTF-8 as Python, Go and upb define it: no overlong forms, surrogates or values over
 * U+10FFFF. ASCII, nearly every label, is checked 8 bytes at a time. */
static int
utf8_ok(Bytes s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if ((word & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t more;
        unsigned char low = 0x80, high = 0xBF; /* range of the first continuation byte */
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0) {
                low = 0xA0;
            }
            else if (c == 0xED) {
                high = 0x9F;
            }
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0) {
                low = 0x90;
            }
            else if (c == 0xF4) {
                high = 0x8F;
            }
        }
        else {
            return 0;
        }
        if (n - i <= more || s[i + 1] < low || s[i + 1] > high) {
            return 0;
        }
        for (Py_ssize_t k = 2; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
        }
        i += more + 1;
    }
    return 1;
}

/* Whether s[0:n] is all ASCII: the bytes OR-ed together 16 (SSE2) or 8 at a time, one test. */
static inline int
ascii_only(Bytes s, Py_ssize_t n)
{
    uint64_t seen = 0;
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    __m128i wide = _mm_setzero_si128();
    for (; n - i >= 16; i += 16) {
        wide = _mm_or_si128(wide, _mm_loadu_si128((const __m128i *)(s + i)));
    }
    if (_mm_movemask_epi8(wide) != 0) {
        return 0;
    }
#endif
    for (; n - i >= 8; i += 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        seen |= word;
    }
    for (; i < n; i++) {
        seen |= s[i];
    }
    return (seen & 0x8080808080808080ull) == 0;
}

/* -- messages ------------------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t at, end;     /* the whole Label field: key, length, message */
    Py_ssize_t name, name_len, value, value_len;
} Label;

typedef struct {
    Bytes d;
    int strict;
    Py_ssize_t max_series, max_points, max_labels, max_name, max_value;
    Py_ssize_t points;
    Label *labels; /* an unsorted series' labels, to sort */
    Py_ssize_t capacity;
} Walk;

/* A Label message in [pos, end): the last name and value (offsets into d). 2 (with ``defer``):
 * in the canonical shape, its UTF-8 left to the caller (check_labels). */
static int
rd_label(const Walk *w, Py_ssize_t pos, Py_ssize_t end, Label *label, int defer)
{
    Bytes d = w->d;
    /* The shape every encoder writes: 0a n name 12 v value, lengths under 128. Its tag and
     * length bytes are ASCII, so one ASCII test of the whole message checks both strings. */
    if (end - pos >= 4 && d[pos] == 0x0A && d[pos + 1] < 0x80) {
        Py_ssize_t at = pos + 2 + d[pos + 1];
        if (end - at >= 2 && d[at] == 0x12 && d[at + 1] < 0x80 && at + 2 + d[at + 1] == end &&
            (!w->strict || defer || ascii_only(d + pos, end - pos))) {
            label->name = pos + 2;
            label->name_len = d[pos + 1];
            label->value = at + 2;
            label->value_len = d[at + 1];
            return defer ? 2 : 1;
        }
    }
    label->name = label->value = pos;
    label->name_len = label->value_len = 0;
    while (pos < end) {
        uint32_t field;
        int wire;
        if (!rd_key(d, &pos, end, &field, &wire)) {
            return 0;
        }
        if (field == 1 || field == 2) {
            Py_ssize_t length;
            if (wire != 2 || !rd_len(d, &pos, end, &length)) {
                return 0;
            }
            if (w->strict && !utf8_ok(d + pos, length)) {
                return 0;
            }
            if (field == 1) {
                label->name = pos;
                label->name_len = length;
            }
            else {
                label->value = pos;
                label->value_len = length;
            }
            pos += length;
        }
        else if (!skip(d, &pos, end, wire)) {
            return 0;
        }
    }
    return 1;
}

/* A Sample message; ``*ts``: its timestamp (the last one given, 0 when none is). */
static int
rd_sample(const Walk *w, Py_ssize_t pos, Py_ssize_t end, uint64_t *ts)
{
    /* The shape every encoder writes: 09 <value> 10 <timestamp varint>, nothing after it. */
    if (end - pos >= 11 && w->d[pos] == 0x09 && w->d[pos + 9] == 0x10) {
        Py_ssize_t at = pos + 10;
        if (rd_varint(w->d, &at, end, ts) && at == end) {
            return 1;
        }
    }
    *ts = 0;
    while (pos < end) {
        uint32_t field;
        int wire;
        if (!rd_key(w->d, &pos, end, &field, &wire)) {
            return 0;
        }
        if ((field == 1 && wire != 1) || (field == 2 && wire != 0)) {
            return 0;
        }
        if (field == 2) {
            Py_ssize_t at = pos;
            if (!rd_varint(w->d, &at, end, ts)) {
                return 0;
            }
        }
        if (!skip(w->d, &pos, end, wire)) {
            return 0;
        }
    }
    return 1;
}

static int
rd_exemplar(const Walk *w, Py_ssize_t pos, Py_ssize_t end)
{
    while (pos < end) {
        uint32_t field;
        int wire;
        if (!rd_key(w->d, &pos, end, &field, &wire)) {
            return 0;
        }
        if (field == 1) {
            Py_ssize_t length;
            Label label;
            if (wire != 2 || !rd_len(w->d, &pos, end, &length) ||
                !rd_label(w, pos, pos + length, &label, 0)) {
                return 0;
            }
            pos += length;
            continue;
        }
        if ((field == 2 && wire != 1) || (field == 3 && wire != 0)) {
            return 0;
        }
        if (!skip(w->d, &pos, end, wire)) {
            return 0;
        }
    }
    return 1;
}

/* A BucketSpan: its offset (sint32) and length (uint32), each the last one written, truncated
 * to 32 bits as upb and Go read them. */
static int
rd_span(const Walk *w, Py_ssize_t pos, Py_ssize_t end, int32_t *offset, uint32_t *length)
{
    *offset = 0;
    *length = 0;
    while (pos < end) {
        uint32_t field;
        int wire;
        uint64_t value;
        if (!rd_key(w->d, &pos, end, &field, &wire)) {
            return 0;
        }
        if (field == 1 || field == 2) {
            if (wire != 0 || !rd_varint(w->d, &pos, end, &value)) {
                return 0;
            }
            uint32_t v = (uint32_t)value;
            if (field == 1) {
                *offset = (int32_t)((v >> 1) ^ (0u - (v & 1u))); /* zigzag */
            }
            else {
                *length = v;
            }
        }
        else if (!skip(w->d, &pos, end, wire)) {
            return 0;
        }
    }
    return 1;
}

/* A native histogram. Strict: valid as Prometheus' Validate (model/histogram, v3.9) judges it
 * after the remote-write handler has read it (gogo: a oneof's last member wins, repeated
 * fields packed or not, sint32 truncated to 32 bits). The schema is exponential (-4 to 8; 9 to
 * 52 too, which the handler reduces to 8 before validating) or -53 (custom buckets). Exponential:
 * each side's spans cover exactly its buckets (the deltas of an integer histogram, the counts
 * of a float one: the count oneof says which), no span but the first at a negative offset, no
 * custom bounds. Custom buckets: bounds strictly increasing, not NaN, the last not +Inf; the
 * positive spans at offsets >= 0, covering its buckets and within the bounds; no zero bucket,
 * no zero threshold, no negative side. Every bucket count >= 0 (an integer histogram's deltas
 * added up with int64 wrap-around); a float histogram's count >= 0, its zero count too; an
 * integer histogram's count equal to its buckets' and zero bucket's (uint64 sums), or, if its
 * sum is NaN, not below them. A span's length is what a consumer expands (OTLP's dense
 * buckets): it may not claim more than the request holds. */
typedef struct {
    int64_t spans;          /* spans read */
    uint64_t spanned;       /* their lengths added */
    int later_negative;     /* a span but the first has a negative offset */
    int first_negative;     /* the first has */
    uint64_t extent;        /* lengths + offsets (offsets >= 0): the custom bounds needed */
    int64_t deltas;         /* deltas read */
    uint64_t last;          /* the running bucket count from the deltas (int64 bits) */
    uint64_t total;         /* the deltas' bucket counts added (uint64 wrap-around) */
    int deltas_negative;    /* a running count went below zero */
    int64_t counts;         /* float counts read */
    int counts_negative;    /* a float count below zero */
} Side;

static inline void
side_delta(Side *s, uint64_t zigzag)
{
    uint64_t delta = (zigzag >> 1) ^ (0u - (zigzag & 1u));
    s->last += delta; /* Go's int64 addition wraps */
    if ((int64_t)s->last < 0) {
        s->deltas_negative = 1;
    }
    s->total += s->last;
    s->deltas++;
}

static inline double
le_double(Bytes p)
{
    uint64_t bits = 0;
    for (int i = 7; i >= 0; i--) {
        bits = bits << 8 | p[i];
    }
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline void
side_count(Side *s, double value)
{
    s->counts_negative |= value < 0; /* NaN is not */
    s->counts++;
}

/* Not inlined: histograms are rare, and inlined here this body slowed the series loop every
 * request runs (bench.inprocess flux-heavy: 3 %, no histogram in it). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int
rd_histogram(const Walk *w, Py_ssize_t pos, Py_ssize_t end)
{
    Bytes d = w->d;
    Side sides[2]; /* [negative, positive] */
    memset(sides, 0, sizeof sides);
    int is_float = 0, zero_is_float = 0;
    int32_t schema = 0;
    uint64_t count_int = 0, zero_int = 0;
    double count_float = 0, zero_float = 0, zero_threshold = 0, sum = 0;
    int64_t bounds = 0;
    int bounds_bad = 0; /* NaN, or not above the one before */
    double bound = 0;
    while (pos < end) {
        uint32_t field;
        int wire;
        Py_ssize_t length;
        uint64_t value;
        if (!rd_key(d, &pos, end, &field, &wire)) {
            return 0;
        }
        Side *side = &sides[field >= 11]; /* 8-10 negative, 11-13 positive */
        switch (field) {
        case 1: case 4: case 6: case 14: case 15: /* (u)int64, sint32, enum */
            if (wire != 0 || !rd_varint(d, &pos, end, &value)) {
                return 0;
            }
            if (field == 1) { /* count_int: the oneof's last member */
                is_float = 0;
                count_int = value;
            }
            else if (field == 4) {
                uint32_t v = (uint32_t)value;
                schema = (int32_t)((v >> 1) ^ (0u - (v & 1u)));
            }
            else if (field == 6) {
                zero_is_float = 0;
                zero_int = value;
            }
            break;
        case 2: case 3: case 5: case 7: /* double */
            if (wire != 1 || end - pos < 8) {
                return 0;
            }
            {
                double v = le_double(d + pos);
                pos += 8;
                if (field == 2) { /* count_float */
                    is_float = 1;
                    count_float = v;
                }
                else if (field == 3) {
                    sum = v;
                }
                else if (field == 5) {
                    zero_threshold = v;
                }
                else {
                    zero_is_float = 1;
                    zero_float = v;
                }
            }
            break;
        case 8: case 11: { /* BucketSpan */
            int32_t offset;
            uint32_t span_length;
            if (wire != 2 || !rd_len(d, &pos, end, &length) ||
                !rd_span(w, pos, pos + length, &offset, &span_length)) {
                return 0;
            }
            if (offset < 0) {
                if (side->spans > 0) {
                    side->later_negative = 1;
                }
                else {
                    side->first_negative = 1;
                }
            }
            else {
                side->extent += (uint64_t)offset;
            }
            side->extent += span_length;
            side->spans++;
            side->spanned += span_length;
            pos += length;
            break;
        }
        case 9: case 12: /* repeated sint64: deltas */
            if (wire == 2) {
                if (!rd_len(d, &pos, end, &length)) {
                    return 0;
                }
                Py_ssize_t stop = pos + length;
                while (pos < stop) {
                    if (!rd_varint(d, &pos, stop, &value)) {
                        return 0;
                    }
                    side_delta(side, value);
                }
            }
            else if (wire != 0 || !rd_varint(d, &pos, end, &value)) {
                return 0;
            }
            else {
                side_delta(side, value);
            }
            break;
        case 10: case 13: case 16: /* repeated double: counts, custom_values */
        {
            Py_ssize_t stop;
            if (wire == 2) {
                if (!rd_len(d, &pos, end, &length) || length % 8 != 0) {
                    return 0;
                }
                stop = pos + length;
            }
            else if (wire != 1 || end - pos < 8) {
                return 0;
            }
            else {
                stop = pos + 8;
            }
            for (; pos < stop; pos += 8) {
                double v = le_double(d + pos);
                if (field != 16) {
                    side_count(side, v);
                }
                else {
                    bounds_bad |= v != v || (bounds > 0 && !(v > bound));
                    bound = v;
                    bounds++;
                }
            }
            break;
        }
        default:
            if (!skip(d, &pos, end, wire)) {
                return 0;
            }
        }
    }
    if (!w->strict) {
        return 1;
    }
    const Side *neg = &sides[0], *pos_side = &sides[1];
    int64_t neg_buckets = is_float ? neg->counts : neg->deltas;
    int64_t pos_buckets = is_float ? pos_side->counts : pos_side->deltas;
    if (schema == -53) {
        if (bounds_bad || (bounds > 0 && isinf(bound) && bound > 0) ||
            pos_side->first_negative || pos_side->later_negative ||
            pos_side->spanned != (uint64_t)pos_buckets ||
            (uint64_t)bounds + 1 < pos_side->extent || neg->spans > 0 || neg_buckets > 0 ||
            zero_threshold != 0) {
            return 0;
        }
        if (is_float ? (zero_is_float && zero_float != 0) : (!zero_is_float && zero_int != 0)) {
            return 0;
        }
    }
    else if (schema >= -4 && schema <= 52) {
        for (int s = 0; s < 2; s++) {
            if (sides[s].later_negative ||
                sides[s].spanned != (uint64_t)(s ? pos_buckets : neg_buckets)) {
                return 0;
            }
        }
        if (bounds > 0 || (is_float ? neg->counts_negative : neg->deltas_negative)) {
            return 0;
        }
        if (is_float && zero_is_float && zero_float < 0) {
            return 0;
        }
    }
    else {
        return 0;
    }
    if (is_float) {
        return !(count_float < 0) && !pos_side->counts_negative;
    }
    if (pos_side->deltas_negative) {
        return 0;
    }
    uint64_t found = neg->total + pos_side->total + (zero_is_float ? 0 : zero_int);
    return isnan(sum) ? found <= count_int : found == count_int;
}

static int
rd_metadata(const Walk *w, Py_ssize_t pos, Py_ssize_t end)
{
    Bytes d = w->d;
    while (pos < end) {
        uint32_t field;
        int wire;
        if (!rd_key(d, &pos, end, &field, &wire)) {
            return 0;
        }
        if (field == 2 || field == 4 || field == 5) {
            Py_ssize_t length;
            if (wire != 2 || !rd_len(d, &pos, end, &length)) {
                return 0;
            }
            if (w->strict && !utf8_ok(d + pos, length)) {
                return 0;
            }
            pos += length;
            continue;
        }
        if (field == 1 && wire != 0) {
            return 0;
        }
        if (!skip(d, &pos, end, wire)) {
            return 0;
        }
    }
    return 1;
}

/* -- a series -------------------------------------------------------------------------- */

/* Byte order, as Go compares strings. A loop for short names (they differ early, where memcmp
 * costs more), memcmp for long ones (names of a KiB alike but for their end cost a KiB loop). */
static inline int
bytes_cmp(Bytes x, Py_ssize_t x_len, Bytes y, Py_ssize_t y_len)
{
    Py_ssize_t n = x_len < y_len ? x_len : y_len;
    if (n >= 32) {
        int c = memcmp(x, y, (size_t)n);
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        return (x_len > y_len) - (x_len < y_len);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return (x_len > y_len) - (x_len < y_len);
}

static inline int
name_cmp(Bytes d, const Label *a, const Label *b)
{
    return bytes_cmp(d + a->name, a->name_len, d + b->name, b->name_len);
}

/* Insertion sort by name: label sets are small and nearly sorted when they are not sorted
 * (one attribute out of place), where this is linear; no comparator context needed. */
static void
insertion_sort(Bytes d, Label *labels, Py_ssize_t count)
{
    for (Py_ssize_t i = 1; i < count; i++) {
        Label item = labels[i];
        Py_ssize_t j = i;
        while (j > 0 && name_cmp(d, &labels[j - 1], &item) > 0) {
            labels[j] = labels[j - 1];
            j--;
        }
        labels[j] = item;
    }
}

#define SORT_RUN 8

/* By name, in O(n log n) whatever the order (a series may hold max_labels_per_series labels
 * in reverse: insertion alone was quadratic there, 40 times the sorted walk on a request of
 * such series): runs of SORT_RUN by insertion, then merged pairwise through ``scratch``
 * (``count`` Labels). */
static void
sort_labels(Bytes d, Label *labels, Label *scratch, Py_ssize_t count)
{
    for (Py_ssize_t lo = 0; lo < count; lo += SORT_RUN) {
        insertion_sort(d, labels + lo, count - lo < SORT_RUN ? count - lo : SORT_RUN);
    }
    Label *from = labels, *to = scratch;
    for (Py_ssize_t width = SORT_RUN; width < count; width *= 2) {
        for (Py_ssize_t lo = 0; lo < count; lo += 2 * width) {
            Py_ssize_t mid = lo + width < count ? lo + width : count;
            Py_ssize_t hi = lo + 2 * width < count ? lo + 2 * width : count;
            Py_ssize_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                to[k++] = name_cmp(d, &from[j], &from[i]) < 0 ? from[j++] : from[i++];
            }
            while (i < mid) {
                to[k++] = from[i++];
            }
            while (j < hi) {
                to[k++] = from[j++];
            }
        }
        Label *swap = from;
        from = to;
        to = swap;
    }
    if (from != labels) {
        memcpy(labels, from, (size_t)count * sizeof(Label));
    }
}

static const char NAME[] = "__name__";

static inline int
is_name(Bytes d, Py_ssize_t at, Py_ssize_t length)
{
    uint64_t word, name;
    if (length != 8) {
        return 0;
    }
    memcpy(&word, d + at, 8);
    memcpy(&name, NAME, 8);
    return word == name;
}

typedef struct {
    int found;          /* a __name__ label was read */
    Py_ssize_t at, len; /* its value */
    int unsorted;       /* strict: labels were not in name order */
    Py_ssize_t count;   /* strict: labels read */
    /* For the series table (survey's ``index``): */
    int empty;          /* a label with an empty value */
    int histograms;     /* histograms read */
    Py_ssize_t points;  /* samples + histograms */
    uint64_t sample_ts; /* the last sample's timestamp (0 without one) */
} SeriesInfo;

/* UTF-8 of a run [at, end) of Label fields rd_label read in the canonical shape (deferred):
 * one ASCII test for the whole run, as Prometheus writes them one after the other; each string
 * on its own only when that fails (non-ASCII text, or a field length over 127). */
static int
check_labels(Bytes d, Py_ssize_t at, Py_ssize_t end)
{
    if (end <= at || ascii_only(d + at, end - at)) {
        return 1;
    }
    while (at < end) {
        uint32_t field = 0;
        int wire = 0;
        Py_ssize_t length = 0;
        rd_key(d, &at, end, &field, &wire);
        rd_len(d, &at, end, &length);
        Py_ssize_t name_len = d[at + 1], value_at = at + 2 + name_len;
        if (!utf8_ok(d + at + 2, name_len) || !utf8_ok(d + value_at + 2, d[value_at + 1])) {
            return 0;
        }
        at += length;
    }
    return 1;
}

/* The labels of the series at [pos, end), read before, into w->labels (grown as needed). */
static int
collect_labels(Walk *w, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t count)
{
    if (count > w->capacity) {
        /* twice: the second half is sort_labels' scratch */
        Label *bigger = PyMem_Realloc(w->labels, 2 * (size_t)count * sizeof(Label));
        if (bigger == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->labels = bigger;
        w->capacity = count;
    }
    Py_ssize_t n = 0;
    while (pos < end) {
        uint32_t field = 0;
        int wire = 0;
        Py_ssize_t at = pos;
        rd_key(w->d, &pos, end, &field, &wire);
        skip(w->d, &pos, end, wire);
        if (field == 1) {
            Label *label = &w->labels[n++];
            Py_ssize_t inner = at, length = 0;
            /* step over the key (it may be padded) and the length again */
            rd_key(w->d, &inner, end, &field, &wire);
            rd_len(w->d, &inner, end, &length);
            rd_label(w, inner, inner + length, label, 1);
            label->at = at;
            label->end = pos;
        }
    }
    return 1;
}

/* The series message at [pos, end). Labels are compared with the one before as they come, so
 * a sorted set (nearly all) is checked without being stored; an unsorted one is collected and
 * sorted afterwards. */
static int
rd_series(Walk *w, Py_ssize_t pos, Py_ssize_t end, SeriesInfo *info)
{
    Bytes d = w->d;
    Py_ssize_t start = pos;
    Py_ssize_t previous = 0, previous_len = -1; /* the name of the label before */
    Py_ssize_t run = 0, run_end = -1;             /* canonical labels whose UTF-8 is unchecked */
    info->found = info->unsorted = 0;
    info->count = 0;
    info->at = info->len = 0;
    info->empty = info->histograms = 0;
    info->points = 0;
    info->sample_ts = 0;
    while (pos < end) {
        uint32_t field;
        int wire;
        Py_ssize_t at = pos, length;
        if (!rd_key(d, &pos, end, &field, &wire)) {
            return 0;
        }
        if (field < 1 || field > 4) {
            if (!skip(d, &pos, end, wire)) {
                return 0;
            }
            continue;
        }
        if (wire != 2 || !rd_len(d, &pos, end, &length)) {
            return 0;
        }
        Py_ssize_t stop = pos + length;
        if (field == 1) {
            Label label;
            int read;
            /* rd_label's first case, inlined: the shape of nearly every label */
            Py_ssize_t value_at = length >= 4 ? pos + 2 + d[pos + 1] : stop;
            if (length >= 4 && d[pos] == 0x0A && d[pos + 1] < 0x80 && stop - value_at >= 2 &&
                d[value_at] == 0x12 && d[value_at + 1] < 0x80 &&
                value_at + 2 + d[value_at + 1] == stop) {
                label.name = pos + 2;
                label.name_len = d[pos + 1];
                label.value = value_at + 2;
                label.value_len = d[value_at + 1];
                read = w->strict ? 2 : 1;
            }
            else if (!(read = rd_label(w, pos, stop, &label, w->strict))) {
                return 0;
            }
            info->empty |= label.value_len == 0;
            if (read == 2) { /* extend the run, or check it and start another */
                if (at != run_end) {
                    if (!check_labels(d, run, run_end)) {
                        return 0;
                    }
                    run = at;
                }
                run_end = stop;
            }
            if (w->strict) {
                if (++info->count > w->max_labels || label.name_len == 0 ||
                    label.name_len > w->max_name || label.value_len > w->max_value) {
                    return 0;
                }
                if (previous_len >= 0) {
                    int order = bytes_cmp(d + previous, previous_len, d + label.name,
                                          label.name_len);
                    if (order == 0) {
                        return 0; /* a name twice */
                    }
                    info->unsorted |= order > 0;
                }
                previous = label.name;
                previous_len = label.name_len;
                if (is_name(d, label.name, label.name_len)) {
                    info->found = 1;
                    info->at = label.value;
                    info->len = label.value_len;
                }
            }
            else if (!info->found && is_name(d, label.name, label.name_len)) {
                /* framing: the first __name__ label read names the series */
                info->found = 1;
                info->at = label.value;
                info->len = label.value_len;
            }
        }
        else if (field == 2 || field == 4) {
            info->points++;
            info->histograms += field == 4;
            if (++w->points > w->max_points ||
                !(field == 2 ? rd_sample(w, pos, stop, &info->sample_ts)
                             : rd_histogram(w, pos, stop))) {
                return 0;
            }
        }
        else if (!rd_exemplar(w, pos, stop)) {
            return 0;
        }
        pos = stop;
    }
    if (!w->strict) {
        return 1;
    }
    if (!check_labels(d, run, run_end)) {
        return 0;
    }
    if (info->unsorted) { /* names twice may be apart until sorted */
        if (collect_labels(w, start, end, info->count) < 0) {
            return -1;
        }
        sort_labels(d, w->labels, w->labels + w->capacity, info->count);
        for (Py_ssize_t i = 1; i < info->count; i++) {
            if (name_cmp(d, &w->labels[i - 1], &w->labels[i]) == 0) {
                return 0;
            }
        }
    }
    return info->found && info->len > 0;
}

/* Write the series at [pos, end) of d to out[pos, end): its labels (w->labels, sorted), then
 * its other fields in the order they came. The series was read whole before. */
static void
write_sorted(const Walk *w, Py_ssize_t pos, Py_ssize_t end, const SeriesInfo *info,
             unsigned char *out)
{
    Bytes d = w->d;
    unsigned char *dst = out + pos;
    for (Py_ssize_t i = 0; i < info->count; i++) {
        const Label *label = &w->labels[i];
        memcpy(dst, d + label->at, (size_t)(label->end - label->at));
        dst += label->end - label->at;
    }
    while (pos < end) {
        uint32_t field = 0;
        int wire = 0;
        Py_ssize_t at = pos;
        rd_key(d, &pos, end, &field, &wire);
        skip(d, &pos, end, wire);
        if (field != 1) {
            memcpy(dst, d + at, (size_t)(pos - at));
            dst += pos - at;
        }
    }
}

static int
wanted(Bytes name, Py_ssize_t size, PyObject *names, PyObject *prefixes)
{
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(names, i);
        if (PyBytes_GET_SIZE(item) == size && memcmp(PyBytes_AS_STRING(item), name, size) == 0) {
            return 1;
        }
    }
    count = PyTuple_GET_SIZE(prefixes);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(prefixes, i);
        Py_ssize_t length = PyBytes_GET_SIZE(item);
        if (length <= size && memcmp(PyBytes_AS_STRING(item), name, length) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
append_bytes(PyObject *list, const unsigned char *at, Py_ssize_t length)
{
    PyObject *item = PyBytes_FromStringAndSize((const char *)at, length);
    if (item == NULL) {
        return -1;
    }
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/* -- labels_equal: is a label part the canonical encoding of a label set? ----------------- */

/* A length as an encoder writes it: the shortest varint (no trailing 0x80 00 padding), at most
 * 5 bytes, within [pos, end). */
static inline int
rd_min_len(Bytes d, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out)
{
    Py_ssize_t start = *pos;
    if (!rd_len(d, pos, end, out)) {
        return 0;
    }
    return *pos - start == 1 || d[*pos - 1] != 0;
}

/* 1 when ``text`` (a str) encodes to exactly the UTF-8 bytes [at, at + length), 0 when not or
 * when it cannot be encoded (a lone surrogate), -1 with an exception set on failure. A compact
 * ASCII str is compared with its own data; any other is encoded into a temporary bytes object
 * (never cached in the str: that would cost memory per label kept). */
static int
str_equals(PyObject *text, Bytes at, Py_ssize_t length)
{
    if (!PyUnicode_Check(text)) {
        return 0;
    }
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        return PyUnicode_GET_LENGTH(text) == length &&
               memcmp(PyUnicode_DATA(text), at, (size_t)length) == 0;
    }
    if (PyUnicode_GET_LENGTH(text) > length) { /* every code point takes 1 to 4 bytes */
        return 0;
    }
    PyObject *encoded = PyUnicode_AsUTF8String(text);
    if (encoded == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int same = PyBytes_GET_SIZE(encoded) == length &&
               memcmp(PyBytes_AS_STRING(encoded), at, (size_t)length) == 0;
    Py_DECREF(encoded);
    return same;
}

/* One string field of a Label, tag ``tag``: absent when ``text`` is empty (proto3), else the
 * tag, the shortest length and the bytes. 1 when [*pos, end) starts with it (*pos moves past
 * it), 0 when not, -1 on failure. */
static int
string_field(Bytes d, Py_ssize_t *pos, Py_ssize_t end, unsigned char tag, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        return 0;
    }
    if (PyUnicode_GET_LENGTH(text) == 0) {
        return 1; /* an empty string is omitted; whatever follows is checked by the caller */
    }
    Py_ssize_t length;
    if (*pos >= end || d[*pos] != tag) {
        return 0;
    }
    (*pos)++;
    if (!rd_min_len(d, pos, end, &length)) {
        return 0;
    }
    int same = str_equals(text, d + *pos, length);
    *pos += length;
    return same;
}

/* memcmp(a, b, n) == 0 for the short strings labels are, without a library call: 8 bytes at a
 * time, the last 8 (or 4) overlapping the ones before. */
static inline int
same_bytes(const unsigned char *a, const unsigned char *b, Py_ssize_t n)
{
    uint64_t x, y;
    uint32_t u, v;
    if (n >= 8) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) {
                return 0;
            }
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v) {
            return 0;
        }
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return 0;
        }
    }
    return 1;
}

/* 1 when [d, d + end) is rw1's encoding of ``labels`` (a tuple), 0 when not, -1 on failure. */
static int
labels_match(Bytes d, Py_ssize_t end, PyObject *labels)
{
    Py_ssize_t pos = 0;
    Py_ssize_t count = PyTuple_GET_SIZE(labels);
#if defined(__GNUC__)
    /* A fleet's label sets are cold when their object comes round again, and the pairs and
     * strs of an object's own labels lie wherever they were made: ask for them all first, so
     * their cache misses overlap instead of following one another (100,000 objects, 5 % Flux:
     * ~4 % of the write path's CPU; no difference when they are hot). */
    for (Py_ssize_t i = 0; i < count; i++) {
        __builtin_prefetch(PyTuple_GET_ITEM(labels, i));
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyTuple_GET_ITEM(labels, i);
        if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
            __builtin_prefetch(PyTuple_GET_ITEM(pair, 0));
            __builtin_prefetch(PyTuple_GET_ITEM(pair, 1));
        }
    }
#endif
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyTuple_GET_ITEM(labels, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            return 0;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (PyUnicode_CheckExact(name) && PyUnicode_CheckExact(value) &&
            PyUnicode_IS_COMPACT_ASCII(name) && PyUnicode_IS_COMPACT_ASCII(value)) {
            /* The usual label, as rw1 writes it directly: both present, every length one byte:
             * 0a <n + v + 4> 0a <n> name 12 <v> value. */
            Py_ssize_t n = PyUnicode_GET_LENGTH(name), v = PyUnicode_GET_LENGTH(value);
            if (n && v && n + v < 124) {
                if (end - pos < n + v + 6 || d[pos] != 0x0A || d[pos + 1] != n + v + 4 ||
                    d[pos + 2] != 0x0A || d[pos + 3] != n || d[pos + 4 + n] != 0x12 ||
                    d[pos + 5 + n] != v || !same_bytes(d + pos + 4, PyUnicode_DATA(name), n) ||
                    !same_bytes(d + pos + 6 + n, PyUnicode_DATA(value), v)) {
                    return 0;
                }
                pos += n + v + 6;
                continue;
            }
        }
        Py_ssize_t length;
        if (pos >= end || d[pos] != 0x0A) {
            return 0;
        }
        pos++;
        if (!rd_min_len(d, &pos, end, &length)) {
            return 0;
        }
        Py_ssize_t stop = pos + length;
        for (int f = 0; f < 2; f++) {
            int same = string_field(d, &pos, stop, f ? 0x12 : 0x0A, f ? value : name);
            if (same <= 0) {
                return same;
            }
        }
        if (pos != stop) { /* another field, a repeated one, or the fields in the other order */
            return 0;
        }
    }
    return pos == end;
}

/* -- rw1's label encoding, written (the encoding labels_match reads) --------------------- */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    unsigned char stack[1024];
} Out;

static int
out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap) {
        return 1;
    }
    Py_ssize_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more;
    unsigned char *grown = PyMem_Malloc((size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    memcpy(grown, o->data, (size_t)o->len);
    if (o->data != o->stack) {
        PyMem_Free(o->data);
    }
    o->data = grown;
    o->cap = cap;
    return 1;
}

static inline int
varint_len(Py_ssize_t n)
{
    int k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

static inline void
out_varint(Out *o, Py_ssize_t n)
{
    while (n >= 0x80) {
        o->data[o->len++] = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    o->data[o->len++] = (unsigned char)n;
}

/* A str's UTF-8 bytes: its own for a compact ASCII str, else a new bytes object in *hold
 * (released by the caller), so no UTF-8 copy is cached on the str for the life of the label.
 * NULL with an exception set for what str.encode() refuses (a lone surrogate) or a non-str. */
static const char *
utf8_of(PyObject *text, Py_ssize_t *size, PyObject **hold)
{
    *hold = NULL;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "encode_labels: label names and values are str");
        return NULL;
    }
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        *size = PyUnicode_GET_LENGTH(text);
        return (const char *)PyUnicode_DATA(text);
    }
    *hold = PyUnicode_AsUTF8String(text);
    if (*hold == NULL) {
        return NULL;
    }
    *size = PyBytes_GET_SIZE(*hold);
    return PyBytes_AS_STRING(*hold);
}

/* encode_labels(labels) -> bytes: one Label field per (name, value) pair, in order, name then
 * value, an empty string omitted (proto3), every length its shortest varint: rw1's
 * _encode_labels_reference, the bytes labels_match accepts. */
static PyObject *
encode_labels(PyObject *module, PyObject *labels)
{
    if (!PyTuple_Check(labels)) {
        PyErr_SetString(PyExc_TypeError, "encode_labels(labels: tuple)");
        return NULL;
    }
    Out o;
    o.data = o.stack;
    o.len = 0;
    o.cap = (Py_ssize_t)sizeof(o.stack);
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *pair = PyTuple_GET_ITEM(labels, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "encode_labels: each label is a (name, value) tuple");
            goto done;
        }
        PyObject *hold_name, *hold_value;
        Py_ssize_t n, v;
        const char *name = utf8_of(PyTuple_GET_ITEM(pair, 0), &n, &hold_name);
        if (name == NULL) {
            goto done;
        }
        const char *value = utf8_of(PyTuple_GET_ITEM(pair, 1), &v, &hold_value);
        if (value == NULL) {
            Py_XDECREF(hold_name);
            goto done;
        }
        int ok;
        if (n && v && n + v < 124) {
            /* The usual label, every length one byte: 0a <n + v + 4> 0a <n> name 12 <v> value. */
            ok = out_reserve(&o, n + v + 6);
            if (ok) {
                unsigned char *w = o.data + o.len;
                w[0] = 0x0A;
                w[1] = (unsigned char)(n + v + 4);
                w[2] = 0x0A;
                w[3] = (unsigned char)n;
                memcpy(w + 4, name, (size_t)n);
                w[4 + n] = 0x12;
                w[5 + n] = (unsigned char)v;
                memcpy(w + 6 + n, value, (size_t)v);
                o.len += n + v + 6;
            }
        }
        else {
            Py_ssize_t inner = (n ? 1 + varint_len(n) + n : 0) + (v ? 1 + varint_len(v) + v : 0);
            ok = out_reserve(&o, 1 + varint_len(inner) + inner);
            if (ok) {
                o.data[o.len++] = 0x0A;
                out_varint(&o, inner);
                if (n) {
                    o.data[o.len++] = 0x0A;
                    out_varint(&o, n);
                    memcpy(o.data + o.len, name, (size_t)n);
                    o.len += n;
                }
                if (v) {
                    o.data[o.len++] = 0x12;
                    out_varint(&o, v);
                    memcpy(o.data + o.len, value, (size_t)v);
                    o.len += v;
                }
            }
        }
        Py_XDECREF(hold_name);
        Py_XDECREF(hold_value);
        if (!ok) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize((const char *)o.data, o.len);
done:
    if (o.data != o.stack) {
        PyMem_Free(o.data);
    }
    return result;
}

static PyObject *
labels_equal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "labels_equal(key: bytes, labels: tuple)");
        return NULL;
    }
    int same = labels_match((Bytes)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), args[1]);
    return same < 0 ? NULL : PyBool_FromLong(same);
}

/* The label cache's hash of a label part (hash_part, find): four independent multiply-rotate
 * lanes over 32 bytes at a time, then a final mix. Why not Python's hash of the bytes (SipHash):
 * that walks a ~560-byte Flux part at about a byte a cycle, this in about a quarter of it, and a
 * hash here only points at labels that are then compared byte for byte, so its quality decides
 * only how often two parts share one (the second is kept by its bytes). Seeded per process from
 * Python's own randomized hash, and 60 bits, so the key is a two-digit int (32 bytes, not 48). */
#define LANE_K1 0x9E3779B97F4A7C15ULL
#define LANE_K2 0xC2B2AE3D27D4EB4FULL

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
lane(uint64_t h, uint64_t word)
{
    return rotl64(h ^ (word * LANE_K2), 31) * LANE_K1;
}

static uint64_t part_seed;
static int part_seeded;

static Py_hash_t
part_hash(Bytes p, Py_ssize_t n)
{
    if (!part_seeded) {
#if PY_VERSION_HEX >= 0x030E0000
        part_seed = (uint64_t)Py_HashBuffer("gotk_relay.wire.picked", 22);
#else
        part_seed = (uint64_t)_Py_HashBytes("gotk_relay.wire.picked", 22);
#endif
        part_seeded = 1;
    }
    uint64_t a = part_seed, b = part_seed ^ LANE_K1, c = part_seed ^ LANE_K2, d = ~part_seed;
    uint64_t w0, w1, w2, w3;
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        memcpy(&w2, p + i + 16, 8);
        memcpy(&w3, p + i + 24, 8);
        a = lane(a, w0);
        b = lane(b, w1);
        c = lane(c, w2);
        d = lane(d, w3);
    }
    uint64_t h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18);
    h ^= (uint64_t)n * LANE_K1;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w0, p + i, 8);
        h = lane(h, w0);
    }
    if (i < n) {
        w0 = 0;
        memcpy(&w0, p + i, (size_t)(n - i));
        h = lane(h, w0);
    }
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return (Py_hash_t)(h >> 4);
}

static PyObject *
hash_part(PyObject *module, PyObject *key)
{
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "hash_part(key: bytes)");
        return NULL;
    }
    return PyLong_FromSsize_t(part_hash((Bytes)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)));
}

/* find(entries, data, end): the labels ``entries`` holds under hash_part(data[:end]) when those
 * bytes are their encoding, else None: the label cache's lookup (wire/picked.py), one call per
 * series, with no bytes object made for the label part on a hit. */
static PyObject *
find_labels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t end;
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "find(entries: dict, data: bytes, end: int)");
        return NULL;
    }
    end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (end < 0 || end > PyBytes_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_ValueError, "find: end outside data");
        return NULL;
    }
    PyObject *number = PyLong_FromSsize_t(part_hash((Bytes)PyBytes_AS_STRING(args[1]), end));
    if (number == NULL) {
        return NULL;
    }
    PyObject *labels = PyDict_GetItemWithError(args[0], number);
    Py_DECREF(number);
    if (labels == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (!PyTuple_Check(labels)) {
        Py_RETURN_NONE;
    }
    Py_INCREF(labels);
    int same = labels_match((Bytes)PyBytes_AS_STRING(args[1]), end, labels);
    if (same > 0) {
        return labels;
    }
    Py_DECREF(labels);
    if (same < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- the picked series in their usual shape (wire/picked.py's decode) ---------------------- */

#define SAMPLE_TAG 0x12 /* TimeSeries.samples: field 2, LEN */
#define VALUE_TAG 0x09  /* Sample.value: field 1, I64 */
#define TS_TAG 0x10     /* Sample.timestamp: field 2, VARINT */
#define MAX_TS_VARINT 9 /* bytes: 63 bits, so an int64 that cannot be negative */
#define MAX_TRAILING 64 /* samples read from one series' end here; more: picked.py's loop */

/* One sample field read from the end of a series (picked._trailing_samples' reading). */
typedef struct {
    Py_ssize_t start;   /* where its field starts */
    int valued;         /* 12 L 09 <double> 10 <varint>, else 12 L 10 <varint> (value 0) */
    Py_ssize_t ts_at;   /* its timestamp varint */
    Py_ssize_t ts_end;
} Trailing;

/* The sample fields that end ``d[:end]``, last first, as picked._trailing_samples reads them:
 * how many (0: none, or more than MAX_TRAILING, which the Python loop reads instead). */
static int
trailing_samples(Bytes d, Py_ssize_t end, Trailing *found)
{
    int n = 0;
    while (end >= 4) {
        Py_ssize_t final = end - 1;
        if (d[final] >= 0x80) {
            break;
        }
        Py_ssize_t pos = final - 1;
        Py_ssize_t floor = final - MAX_TS_VARINT;
        while (pos > floor && pos >= 0 && d[pos] >= 0x80) {
            pos--;
        }
        if (pos < 0 || d[pos] != TS_TAG) {
            break;
        }
        Py_ssize_t width = final - pos;
        Py_ssize_t start;
        int valued;
        if (pos >= 11 && d[pos - 9] == VALUE_TAG && d[pos - 10] == 10 + width &&
            d[pos - 11] == SAMPLE_TAG) {
            start = pos - 11;
            valued = 1;
        }
        else if (pos >= 2 && d[pos - 1] == 1 + width && d[pos - 2] == SAMPLE_TAG) {
            start = pos - 2;
            valued = 0;
        }
        else {
            break;
        }
        if (n == MAX_TRAILING) {
            return 0;
        }
        found[n++] = (Trailing){start, valued, pos + 1, end};
        end = start;
    }
    return n;
}

/* A NamedTuple (a tuple subclass without fields of its own) of ``n`` items, stolen; NULL on
 * failure (the items released). tuple.__new__(type, items) without the intermediate tuple. */
static PyObject *
named(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyObject *out = type->tp_alloc(type, n);
    if (out == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_XDECREF(items[i]);
        }
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(out, i, items[i]);
    }
    return out;
}

static PyObject *
sample_of(Bytes d, const Trailing *t, PyTypeObject *sample_type, PyObject *zero)
{
    uint64_t ts = 0;
    for (Py_ssize_t i = t->ts_at, shift = 0; i < t->ts_end; i++, shift += 7) {
        ts |= (uint64_t)(d[i] & 0x7F) << shift;
    }
    double value = 0.0;
    if (t->valued) {
        memcpy(&value, d + t->ts_at - 9, 8); /* little-endian, as struct "<d" reads it */
    }
    PyObject *items[3] = {PyFloat_FromDouble(value), PyLong_FromUnsignedLongLong(ts),
                          Py_NewRef(zero)};
    if (items[0] == NULL || items[1] == NULL) {
        Py_XDECREF(items[0]);
        Py_XDECREF(items[1]);
        Py_DECREF(items[2]);
        return NULL;
    }
    return named(sample_type, 3, items);
}

/* decode_known(series, index, entries, out, series_type, sample_type) -> int
 *
 * picked.decode's usual series, from ``index`` on: each whose samples end it in their usual
 * encodings and whose label part is a cached label set's exact encoding (``find``) is appended
 * to ``out`` as series_type(labels, samples, (), (), None, 0); the index of the first other
 * series (or len(series)) is returned, for the Python loop to take. A series that ends in the
 * same sample bytes as the one before shares its samples tuple. */
static PyObject *
decode_known(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_Check(args[0]) || !PyLong_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyList_Check(args[3]) || !PyType_Check(args[4]) ||
        !PyType_Check(args[5]) ||
        !PyType_IsSubtype((PyTypeObject *)args[4], &PyTuple_Type) ||
        !PyType_IsSubtype((PyTypeObject *)args[5], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_known(series: list, index: int, entries: dict, out: list, "
                        "series_type, sample_type)");
        return NULL;
    }
    PyObject *series = args[0], *entries = args[2], *out = args[3];
    PyTypeObject *series_type = (PyTypeObject *)args[4], *sample_type = (PyTypeObject *)args[5];
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    PyObject *empty = PyTuple_New(0);
    Trailing found[MAX_TRAILING];
    /* The previous series' trailing sample bytes and the samples tuple read from them. */
    PyObject *last_data = NULL, *last_samples = NULL;
    Py_ssize_t last_start = 0, last_len = 0;
    PyObject *result = NULL;
    if (zero == NULL || empty == NULL) {
        goto done;
    }
    for (; index < PyList_GET_SIZE(series); index++) {
        PyObject *item = PyList_GET_ITEM(series, index);
        if (!PyBytes_Check(item)) {
            break;
        }
        Bytes d = (Bytes)PyBytes_AS_STRING(item);
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        int n = trailing_samples(d, size, found);
        if (n == 0) {
            break;
        }
        Py_ssize_t start = found[n - 1].start;
        PyObject *number = PyLong_FromSsize_t(part_hash(d, start));
        if (number == NULL) {
            goto done;
        }
        PyObject *labels = PyDict_GetItemWithError(entries, number);
        Py_DECREF(number);
        if (labels == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            break;
        }
        if (!PyTuple_Check(labels)) {
            break;
        }
        int same = labels_match(d, start, labels);
        if (same < 0) {
            goto done;
        }
        if (!same) {
            break;
        }
        PyObject *samples;
        if (last_samples != NULL && size - start == last_len &&
            memcmp(d + start, PyBytes_AS_STRING(last_data) + last_start, (size_t)last_len) == 0) {
            samples = Py_NewRef(last_samples);
        }
        else {
            samples = PyTuple_New(n);
            if (samples == NULL) {
                goto done;
            }
            for (int k = 0; k < n; k++) { /* read last first: the tuple in order */
                PyObject *sample = sample_of(d, &found[k], sample_type, zero);
                if (sample == NULL) {
                    Py_DECREF(samples);
                    goto done;
                }
                PyTuple_SET_ITEM(samples, n - 1 - k, sample);
            }
            Py_XSETREF(last_samples, Py_NewRef(samples));
            Py_XSETREF(last_data, Py_NewRef(item));
            last_start = start;
            last_len = size - start;
        }
        PyObject *fields[6] = {Py_NewRef(labels), samples,  Py_NewRef(empty),
                               Py_NewRef(empty),  Py_NewRef(Py_None), Py_NewRef(zero)};
        PyObject *one = named(series_type, 6, fields);
        if (one == NULL) {
            goto done;
        }
        int appended = PyList_Append(out, one);
        Py_DECREF(one);
        if (appended < 0) {
            goto done;
        }
    }
    result = PyLong_FromSsize_t(index);
done:
    Py_XDECREF(last_samples);
    Py_XDECREF(last_data);
    Py_XDECREF(zero);
    Py_XDECREF(empty);
    return result;
}

/* -- the series table ---------------------------------------------------------------------- */

/* One record per TimeSeries and MetricMetadata field, in request order, as write/_route.c reads
 * them (routing.Router, rules that keep or drop by name): native uint32s. */
enum {
    REC_START,    /* the field's key */
    REC_END,      /* the end of its message */
    REC_NAME,     /* __name__'s value */
    REC_NAME_LEN, /* its length (0: none) */
    REC_POINTS,   /* samples + histograms */
    REC_FLAGS,    /* TABLE_EMPTY | TABLE_HISTOGRAMS | TABLE_METADATA */
    REC_TS_LOW,   /* the last sample's timestamp, as the uint64 of its varint */
    REC_TS_HIGH,
    REC_FIELDS
};
#define TABLE_EMPTY 1      /* a label has an empty value (a rule would take it out) */
#define TABLE_HISTOGRAMS 2 /* the series has histograms (their timestamps are not here) */
#define TABLE_METADATA 4   /* a MetricMetadata field, not a series */

typedef struct {
    uint32_t *data;
    Py_ssize_t n, cap; /* records */
} Table;

static int
table_add(Table *t, Py_ssize_t start, Py_ssize_t end, const SeriesInfo *info, uint32_t flags)
{
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 256;
        uint32_t *data = PyMem_Realloc(t->data, (size_t)cap * REC_FIELDS * sizeof(uint32_t));
        if (data == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        t->data = data;
        t->cap = cap;
    }
    uint32_t *r = t->data + REC_FIELDS * t->n++;
    r[REC_START] = (uint32_t)start;
    r[REC_END] = (uint32_t)end;
    r[REC_NAME] = info && info->found ? (uint32_t)info->at : 0;
    r[REC_NAME_LEN] = info && info->found ? (uint32_t)info->len : 0;
    r[REC_POINTS] = info ? (uint32_t)info->points : 0;
    r[REC_FLAGS] = flags | (info && info->empty ? TABLE_EMPTY : 0) |
                   (info && info->histograms ? TABLE_HISTOGRAMS : 0);
    r[REC_TS_LOW] = info ? (uint32_t)info->sample_ts : 0;
    r[REC_TS_HIGH] = info ? (uint32_t)(info->sample_ts >> 32) : 0;
    return 1;
}

/* -- the module function ----------------------------------------------------------------- */

static PyObject *
survey(PyObject *module, PyObject *args)
{
    PyObject *raw, *names, *prefixes;
    Py_ssize_t max_series, max_points, max_labels, max_name, max_value;
    int strict, want_table = 0;
    if (!PyArg_ParseTuple(args, "SO!O!nnnnnp|p:survey", &raw, &PyTuple_Type, &names,
                          &PyTuple_Type, &prefixes, &max_series, &max_points, &max_labels,
                          &max_name, &max_value, &strict, &want_table)) {
        return NULL;
    }
    for (int t = 0; t < 2; t++) {
        PyObject *tuple = t ? prefixes : names;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
            if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, i))) {
                PyErr_SetString(PyExc_TypeError, "survey: names and prefixes must be bytes");
                return NULL;
            }
        }
    }
    Walk w = {
        .d = (Bytes)PyBytes_AS_STRING(raw),
        .strict = strict,
        .max_series = max_series,
        .max_points = max_points,
        .max_labels = max_labels,
        .max_name = max_name,
        .max_value = max_value,
        .points = 0,
        .capacity = 64,
    };
    PyObject *result = NULL, *picked = NULL, *metadata = NULL, *out = NULL, *table_bytes = NULL;
    Table table = {NULL, 0, 0};
    /* Offsets are uint32s: a larger request (beyond every size limit) gets no table. */
    want_table = want_table && PyBytes_GET_SIZE(raw) <= (Py_ssize_t)UINT32_MAX;
    w.labels = PyMem_Malloc(2 * (size_t)w.capacity * sizeof(Label)); /* and sort scratch */
    picked = PyList_New(0);
    metadata = PyList_New(0);
    if (w.labels == NULL || picked == NULL || metadata == NULL) {
        if (w.labels == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    Bytes d = w.d;
    Py_ssize_t end = PyBytes_GET_SIZE(raw), pos = 0, series = 0, sorted = 0;
    /* The series being read when the walk refuses the request, -1 outside one: the reference
     * words the refusal from it instead of walking every series before it in Python. */
    Py_ssize_t bad = -1;
    while (pos < end) {
        uint32_t field = 0;
        int wire = 0;
        Py_ssize_t length, record = pos;
        if (!rd_key(d, &pos, end, &field, &wire)) {
            goto invalid;
        }
        if (field != 1 && field != 3) {
            if (!skip(d, &pos, end, wire)) { /* field 2 is reserved: unknown to every reader */
                goto invalid;
            }
            continue;
        }
        if (wire != 2 || !rd_len(d, &pos, end, &length)) {
            goto invalid;
        }
        if (field == 3) {
            if (!rd_metadata(&w, pos, pos + length) || append_bytes(metadata, d + pos, length) < 0) {
                if (PyErr_Occurred()) {
                    goto done;
                }
                goto invalid;
            }
            if (want_table && !table_add(&table, record, pos + length, NULL, TABLE_METADATA)) {
                goto done;
            }
            pos += length;
            continue;
        }
        if (++series > w.max_series) {
            goto invalid;
        }
        SeriesInfo info;
        bad = series - 1;
        int read = rd_series(&w, pos, pos + length, &info);
        if (read < 0) {
            goto done;
        }
        if (read == 0) {
            goto invalid;
        }
        bad = -1;
        const unsigned char *source = d;
        if (info.unsorted) {
            if (out == NULL) {
                out = PyBytes_FromStringAndSize((const char *)d, end);
                if (out == NULL) {
                    goto done;
                }
            }
            write_sorted(&w, pos, pos + length, &info, (unsigned char *)PyBytes_AS_STRING(out));
            source = (const unsigned char *)PyBytes_AS_STRING(out);
            sorted++;
        }
        if (info.found && wanted(d + info.at, info.len, names, prefixes) &&
            append_bytes(picked, source + pos, length) < 0) {
            goto done;
        }
        if (want_table && !table_add(&table, record, pos + length, &info, 0)) {
            goto done;
        }
        pos += length;
    }
    /* A sorted series' __name__ moved: no table then (routing walks the request instead). */
    table_bytes = PyBytes_FromStringAndSize(
        want_table && sorted == 0 ? (const char *)table.data : NULL,
        want_table && sorted == 0 ? table.n * REC_FIELDS * (Py_ssize_t)sizeof(uint32_t) : 0);
    if (table_bytes == NULL) {
        goto done;
    }
    result = Py_BuildValue("nnOOOnO", series, w.points, picked, metadata, out ? out : raw, sorted,
                           table_bytes);
    goto done;
invalid:
    result = PyLong_FromSsize_t(bad);
done:
    PyMem_Free(w.labels);
    PyMem_Free(table.data);
    Py_XDECREF(picked);
    Py_XDECREF(metadata);
    Py_XDECREF(out);
    Py_XDECREF(table_bytes);
    return result;
}

/* The writable buffer fill_bytes hands out: a new bytes object's storage, its exports
 * counted, closed to new ones once the fill returned. */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;
    Py_ssize_t exports;
    int closed;
} Storage;

static int
Storage_getbuffer(Storage *s, Py_buffer *view, int flags)
{
    if (s->closed) {
        PyErr_SetString(PyExc_BufferError, "fill_bytes: the fill has returned");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)s, s->data, s->size, 0, flags) < 0) {
        return -1;
    }
    s->exports++;
    return 0;
}

static void
Storage_releasebuffer(Storage *s, Py_buffer *view)
{
    s->exports--;
}

static PyBufferProcs Storage_as_buffer = {
    (getbufferproc)Storage_getbuffer,
    (releasebufferproc)Storage_releasebuffer,
};

static PyTypeObject StorageType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gotk_relay.wire._survey.Storage",
    .tp_basicsize = sizeof(Storage),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The storage of a bytes object being filled (fill_bytes).",
    .tp_as_buffer = &Storage_as_buffer,
};

/* fill_bytes(size, fill, source) -> bytes: a new bytes object of `size` bytes that
 * fill(source, storage) writes through the buffer protocol (storage: a writable buffer over
 * the new object's bytes).
 *
 * Why: the snappy decompressor (cramjam) writes into a buffer it is given, but a Python bytes
 * object never offers a writable one, so a request's decompressed bytes were copied once more
 * (~650 kB a request, ~2 % of its CPU). Here the bytes is written before anything else can see
 * it, as CPython's own constructors do. fill must return `size` (the bytes it wrote), else the
 * object is dropped with a ValueError; and it must keep no view of the storage: one left after
 * it returned is a BufferError, and the object is then neither handed out nor freed. */
static PyObject *
fill_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fill_bytes(size, fill, source)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        return NULL;
    }
    Storage *storage = PyObject_New(Storage, &StorageType);
    if (storage == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    storage->data = PyBytes_AS_STRING(out);
    storage->size = size;
    storage->exports = 0;
    storage->closed = 0;
    PyObject *written = PyObject_CallFunctionObjArgs(args[1], args[2], storage, NULL);
    storage->closed = 1;
    int kept = storage->exports != 0;
    Py_DECREF(storage); /* a view still held keeps it alive */
    if (kept) {
        Py_XDECREF(written);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_BufferError, "fill_bytes: the fill kept a view of the storage");
        }
        return NULL; /* out is leaked: the view may still write to it */
    }
    if (written == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    Py_ssize_t n = PyLong_Check(written) ? PyLong_AsSsize_t(written) : -1;
    Py_DECREF(written);
    if (n != size) {
        Py_DECREF(out);
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "fill wrote %zd bytes of %zd", n, size);
        }
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"survey", survey, METH_VARARGS,
     "survey(raw, names, prefixes, max_series, max_points, max_labels, max_name_length,\n"
     "       max_value_length, strict, table=False)\n"
     "    -> (series, points, picked, metadata, raw, sorted, table) | int\n\n"
     "raw: an uncompressed remote-write 1.0 WriteRequest (bytes); names, prefixes: tuples of\n"
     "bytes. An int when the request is invalid or over a limit: the index of the series the\n"
     "walk refused it in, -1 outside a series (wire.validate says why). table: with table=True\n"
     "and no series sorted, one record of 8 native uint32s per series and metadata field (see\n"
     "REC_* in _survey.c), else b\"\"."},
    {"labels_equal", (PyCFunction)(void (*)(void))labels_equal, METH_FASTCALL,
     "labels_equal(key, labels) -> bool\n\n"
     "Whether key (bytes) is exactly the encoding rw1 writes for labels (a tuple of (name,\n"
     "value) strs): one Label field each, in order, name then value, an empty string omitted,\n"
     "every length its shortest varint. Any other encoding of the same labels is False."},
    {"find", (PyCFunction)(void (*)(void))find_labels, METH_FASTCALL,
     "find(entries, data, end) -> labels | None\n\n"
     "entries.get(hash_part(data[:end])) when data[:end] is its labels' encoding\n"
     "(labels_equal), else None; the slice is never made."},
    {"fill_bytes", (PyCFunction)(void (*)(void))fill_bytes, METH_FASTCALL,
     "fill_bytes(size, fill, source) -> bytes\n\n"
     "A new bytes object of size bytes, written by fill(source, storage) (storage: a writable\n"
     "buffer over it, no view of which may outlive the call); fill must return size."},
    {"decode_known", (PyCFunction)(void (*)(void))decode_known, METH_FASTCALL,
     "decode_known(series, index, entries, out, series_type, sample_type) -> int\n\n"
     "wire.picked.decode's usual series from index on, appended to out; the index of the\n"
     "first series it leaves to the Python loop (or len(series))."},
    {"encode_labels", encode_labels, METH_O,
     "encode_labels(labels) -> bytes\n\n"
     "rw1's encoding of a label set (a tuple of (name, value) strs): the bytes labels_equal\n"
     "accepts. UnicodeEncodeError for a str that is not UTF-8 encodable, TypeError for a\n"
     "label that is not a pair of strs."},
    {"hash_part", hash_part, METH_O,
     "hash_part(key) -> int\n\n"
     "The label cache's hash of a label part (bytes): 60 bits, seeded per process."},
    {NULL, NULL, 0, NULL},
};

/* A static type (Storage): one interpreter's, so no per-interpreter GIL slot. */
static PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "gotk_relay.wire._survey",
    "A one-pass strict survey of a remote-write request (see rw1_bytes.survey), and the label\n"
    "cache's lookup of wire.picked (find, labels_equal, hash_part).",
    0, methods, slots,
};

PyMODINIT_FUNC
PyInit__survey(void)
{
    if (PyType_Ready(&StorageType) < 0) {
        return NULL;
    }
    return PyModuleDef_Init(&definition);
}
