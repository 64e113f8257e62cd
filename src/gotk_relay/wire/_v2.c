/* Remote write 1.0 WriteRequest bytes to remote write 2.0 Request bytes (wire.rw2.from_v1).
 *
 * Why in C: a remote write 2.0 destination gets every request converted, and decoding it into
 * the Python model and encoding that again makes objects per label and sample, where this
 * walk copies bytes (bench/v2conv.py; figures: docs/performance.md). This walks the v1 bytes
 * once and writes exactly what ``rw2.encode(rw1.decode(raw, validate=False))`` writes (same
 * symbol order, same fields, same bytes):
 *  - symbols: "" first, then each string in the order the reference first refers to it: per
 *    series its label names and values, then its exemplars' labels, then its metadata's help
 *    and unit; interned in a hash table of (pointer, length) into the input, so no string is
 *    copied until the output is written;
 *  - per series: labels_refs packed, samples, histograms and exemplars re-encoded field by
 *    field as upb encodes them (proto3: a zero scalar is omitted, a oneof member is not; every
 *    repeated scalar packed), and metadata: v1 metadata is per metric family, so a series takes
 *    the entry of its __name__, or of its family with the suffix removed (_bucket, _total, ...),
 *    the last entry winning for a family named twice.
 *
 * The input is a request the relay already accepted. Anything outside what this models (a
 * protobuf error, a declared field with another wire type, a group, a string that is not UTF-8,
 * a histogram whose count and zero_count oneofs disagree in a way only Python's int()/float()
 * define, a series with neither samples nor histograms, which 2.0 cannot carry) makes it return
 * None, and the caller runs the Python reference, which raises or converts as it does. Every read is bounds-checked; memory is the output, a symbol table, a
 * table of labels (with a copy of each distinct Label's bytes) and a few scratch arrays, all
 * linear in the input. The GIL is released during the walk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../_seeded_hash.h"

typedef const unsigned char *Bytes;

/* Outcome of a step: go on, give the request to the reference, or out of memory. */
enum { OK = 0, FALLBACK = 1, NOMEM = 2 };

/* -- input: protobuf primitives --------------------------------------------------------- */

/* A varint of up to 10 bytes; bits past 64 are dropped, as Go and upb do. */
static inline int
rd_varint(Bytes d, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out)
{
    Py_ssize_t p = *pos;
    if (p < end && d[p] < 0x80) {
        *out = d[p];
        *pos = p + 1;
        return 1;
    }
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

typedef struct {
    uint32_t field;
    int wire;
    uint64_t value;         /* wire 0: the varint; wire 1: the 8 bytes, little-endian */
    Py_ssize_t start, end;  /* wire 2: the payload */
} Field;

/* The next field of [*pos, end). Keys and lengths of at most 5 bytes (upb's limit), field
 * number > 0, wire types 0, 1, 2, 5; 0 for anything else or a value past end. */
static inline int
next_field(Bytes d, Py_ssize_t *pos, Py_ssize_t end, Field *f)
{
    uint64_t key;
    Py_ssize_t start = *pos;
    if (!rd_varint(d, pos, end, &key) || *pos - start > 5 || key > 0xFFFFFFFFu) {
        return 0;
    }
    f->field = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->field == 0) {
        return 0;
    }
    switch (f->wire) {
    case 0:
        return rd_varint(d, pos, end, &f->value);
    case 1:
        if (end - *pos < 8) {
            return 0;
        }
        memcpy(&f->value, d + *pos, 8);  /* the relay builds for little-endian hosts only */
        *pos += 8;
        return 1;
    case 2: {
        uint64_t length;
        start = *pos;
        if (!rd_varint(d, pos, end, &length) || *pos - start > 5 || length > 0x7FFFFFFFu
            || (uint64_t)(end - *pos) < length) {
            return 0;
        }
        f->start = *pos;
        f->end = *pos + (Py_ssize_t)length;
        *pos = f->end;
        return 1;
    }
    case 5:
        if (end - *pos < 4) {
            return 0;
        }
        *pos += 4;
        return 1;
    default:
        return 0;
    }
}

/* Valid UTF-8 as upb checks it: no overlongs, no surrogates, nothing above U+10FFFF. */
static int
utf8_ok(Bytes s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (!(word & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int extra;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            extra = 1;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0) {
                lo = 0xA0;
            }
            else if (c == 0xED) {
                hi = 0x9F;
            }
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0) {
                lo = 0x90;
            }
            else if (c == 0xF4) {
                hi = 0x8F;
            }
        }
        else {
            return 0;
        }
        if (n - i <= extra) {
            return 0;
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            return 0;
        }
        for (int k = 2; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
        }
        i += extra + 1;
    }
    return 1;
}

/* -- output buffer ---------------------------------------------------------------------- */

typedef struct {
    unsigned char *d;
    size_t len, cap;
} Buf;

static int
buf_grow(Buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < need) {
        if (cap > ((size_t)PY_SSIZE_T_MAX) / 2) {
            return 0;
        }
        cap *= 2;
    }
    unsigned char *d = realloc(b->d, cap);
    if (d == NULL) {
        return 0;
    }
    b->d = d;
    b->cap = cap;
    return 1;
}

#define RESERVE(b, n)                                                  \
    do {                                                               \
        if ((b)->cap - (b)->len < (size_t)(n) && !buf_grow((b), (n))) { \
            return NOMEM;                                              \
        }                                                              \
    } while (0)

static inline int
varint_size(uint64_t v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Needs 10 bytes reserved. */
static inline void
put_varint(Buf *b, uint64_t v)
{
    unsigned char *p = b->d + b->len;
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    b->len = (size_t)(p - b->d);
}

static inline void
put_byte(Buf *b, unsigned char c)
{
    b->d[b->len++] = c;
}

static inline void
put_fixed64(Buf *b, uint64_t v)
{
    memcpy(b->d + b->len, &v, 8);
    b->len += 8;
}

/* A nested message's length is known only once it is written: one byte is kept for it (most
 * messages here are under 128 bytes) and the body moved up when its length needs more. */
static inline int
open_message(Buf *b, unsigned char tag, size_t *at)
{
    RESERVE(b, 2);
    put_byte(b, tag);
    *at = b->len;
    b->len++;
    return OK;
}

static inline int
close_message(Buf *b, size_t at)
{
    size_t body = b->len - at - 1;
    if (body < 0x80) {
        b->d[at] = (unsigned char)body;
        return OK;
    }
    int extra = varint_size(body) - 1;
    RESERVE(b, (size_t)extra);
    memmove(b->d + at + 1 + extra, b->d + at + 1, body);
    size_t end = b->len + (size_t)extra;
    b->len = at;
    put_varint(b, body);
    b->len = end;
    return OK;
}

/* -- the symbol table ------------------------------------------------------------------- */

typedef struct {
    Bytes p;
    uint32_t n;
    uint32_t hash;
} Sym;

typedef struct {
    Sym *syms;
    uint32_t count, cap;
    uint32_t *slots; /* symbol index + 1; 0 is empty */
    uint32_t mask;
    size_t bytes; /* encoded size of the symbols field so far */
} Table;

static inline uint64_t
rd64(Bytes p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t
rd32(Bytes p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* memcmp(a, b, n) == 0 inlined: the strings compared here are mostly under 64 bytes. */
static inline int
same(Bytes a, Bytes b, size_t n)
{
    if (n >= 8) {
        size_t i = 0;
        for (; n - i > 8; i += 8) {
            if (rd64(a + i) != rd64(b + i)) {
                return 0;
            }
        }
        return rd64(a + n - 8) == rd64(b + n - 8);
    }
    if (n >= 4) {
        return rd32(a) == rd32(b) && rd32(a + n - 4) == rd32(b + n - 4);
    }
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return 0;
        }
    }
    return 1;
}

/* The tables' hash: seeded at import (wyhash's construction, _seeded_hash.h), over every byte.
 * A request's strings are anyone's input, and probing has no bound here: with a fixed hash, or
 * one of a Label's first and last 16 bytes only (as until 2026-12-07), values alike at both
 * ends made every lookup walk one slot chain (20,000 such series, 1.7 MB: 707 ms against
 * 4 ms), and strings colliding in a fixed hash's low bits can be found offline. A Label of
 * up to 32 bytes is hashed whole without a loop (hash_label). */
static uint64_t v2_seed;

static inline uint32_t
hash_bytes(Bytes p, size_t n)
{
    uint64_t h = seeded_hash(v2_seed, p, (Py_ssize_t)n);
    return (uint32_t)(h ^ (h >> 32));
}

/* A Label's hash: up to 32 bytes (most Labels) without a loop, as two overlapping halves of
 * 16 bytes and the length; longer ones through hash_bytes, every byte counted. */
static inline uint32_t
hash_label(Bytes p, size_t n)
{
    if (n > 32) {
        return hash_bytes(p, n);
    }
    uint64_t a, b, x = 0, y = 0;
    if (n >= 8) {
        a = rd64(p);
        b = rd64(p + n - 8);
        if (n > 16) {
            x = rd64(p + 8);
            y = rd64(p + n - 16);
        }
    }
    else if (n >= 4) {
        a = rd32(p);
        b = rd32(p + n - 4);
    }
    else {
        a = n ? ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1] : 0;
        b = 0;
    }
    uint64_t h = sh_fold_mul(a ^ 0xa0761d6478bd642full ^ n, b ^ v2_seed)
                 ^ sh_fold_mul(x ^ 0x8ebc6af09c88c6e3ull ^ v2_seed, y ^ 0x589965cc75374cc3ull);
    return (uint32_t)(h ^ (h >> 32));
}

/* same() for a Label: its first and last 16 bytes first, the middle only when they match. */
static inline int
same_label(Bytes a, Bytes b, size_t n)
{
    if (n >= 16) {
        uint64_t diff = (rd64(a) ^ rd64(b)) | (rd64(a + 8) ^ rd64(b + 8))
                        | (rd64(a + n - 16) ^ rd64(b + n - 16)) | (rd64(a + n - 8) ^ rd64(b + n - 8));
        return diff == 0 && (n <= 32 || same(a + 16, b + 16, n - 32));
    }
    return same(a, b, n);
}

/* ``expected``: a power of two, the distinct strings the request likely holds */
static int
table_init(Table *t, uint32_t expected)
{
    t->cap = expected;
    t->syms = malloc(sizeof(Sym) * t->cap);
    t->mask = expected * 2 - 1;
    t->slots = calloc(t->mask + 1, sizeof(uint32_t));
    if (t->syms == NULL || t->slots == NULL) {
        return 0;
    }
    t->syms[0] = (Sym){(Bytes) "", 0, hash_bytes((Bytes) "", 0)};
    t->slots[t->syms[0].hash & t->mask] = 1;
    t->count = 1;
    t->bytes = 2;
    return 1;
}

static void
table_free(Table *t)
{
    free(t->syms);
    free(t->slots);
}

/* The table is kept at most half full. */
static int
table_grow(Table *t)
{
    if (t->count >= t->cap) {
        if (t->cap > 0x3FFFFFFF) {
            return 0;
        }
        Sym *syms = realloc(t->syms, sizeof(Sym) * t->cap * 2);
        if (syms == NULL) {
            return 0;
        }
        t->syms = syms;
        t->cap *= 2;
    }
    if ((size_t)t->count * 2 > t->mask) {
        uint32_t mask = t->mask * 2 + 1;
        uint32_t *slots = calloc((size_t)mask + 1, sizeof(uint32_t));
        if (slots == NULL) {
            return 0;
        }
        for (uint32_t i = 0; i < t->count; i++) {
            uint32_t s = t->syms[i].hash & mask;
            while (slots[s]) {
                s = (s + 1) & mask;
            }
            slots[s] = i + 1;
        }
        free(t->slots);
        t->slots = slots;
        t->mask = mask;
    }
    return 1;
}

/* The symbol index of [p, p + n), added if new (a new string is checked for UTF-8 then). */
static inline int
intern(Table *t, Bytes p, Py_ssize_t n, uint32_t *ref)
{
    if (n == 0) {
        *ref = 0;
        return OK;
    }
    uint32_t h = hash_bytes(p, (size_t)n);
    uint32_t s = h & t->mask;
    for (;;) {
        uint32_t at = t->slots[s];
        if (at == 0) {
            break;
        }
        const Sym *sym = &t->syms[at - 1];
        if (sym->hash == h && sym->n == (uint32_t)n && same(sym->p, p, (size_t)n)) {
            *ref = at - 1;
            return OK;
        }
        s = (s + 1) & t->mask;
    }
    if (!utf8_ok(p, n)) {
        return FALLBACK;
    }
    if (t->count >= t->cap || (size_t)(t->count + 1) * 2 > t->mask) {
        if (!table_grow(t)) {
            return NOMEM;
        }
        s = h & t->mask;
        while (t->slots[s]) {
            s = (s + 1) & t->mask;
        }
    }
    t->syms[t->count] = (Sym){p, (uint32_t)n, h};
    t->slots[s] = t->count + 1;
    t->bytes += 1 + (size_t)varint_size((uint64_t)n) + (size_t)n;
    *ref = t->count++;
    return OK;
}

/* -- v1 metadata: per metric family --------------------------------------------------- */

typedef struct {
    Bytes family, help, unit;
    Py_ssize_t family_n, help_n, unit_n;
    uint32_t type; /* already mapped as rw1/rw2 do: an unknown type is 0 */
    uint32_t hash;
} Family;

typedef struct {
    Family *items;
    uint32_t count, cap;
    uint32_t *slots;
    uint32_t mask;
} Families;

static void
families_free(Families *f)
{
    free(f->items);
    free(f->slots);
}

static int
families_add(Families *f, const Family *item)
{
    if (f->slots == NULL || (size_t)(f->count + 1) * 2 > f->mask) {
        uint32_t mask = f->slots == NULL ? 63 : f->mask * 2 + 1;
        uint32_t *slots = calloc((size_t)mask + 1, sizeof(uint32_t));
        if (slots == NULL) {
            return NOMEM;
        }
        for (uint32_t i = 0; i < f->count; i++) {
            uint32_t s = f->items[i].hash & mask;
            while (slots[s]) {
                s = (s + 1) & mask;
            }
            slots[s] = i + 1;
        }
        free(f->slots);
        f->slots = slots;
        f->mask = mask;
    }
    uint32_t s = item->hash & f->mask;
    for (;;) {
        uint32_t at = f->slots[s];
        if (at == 0) {
            break;
        }
        Family *old = &f->items[at - 1];
        if (old->hash == item->hash && old->family_n == item->family_n
            && memcmp(old->family, item->family, (size_t)item->family_n) == 0) {
            *old = *item; /* {m.family: m for m in metadata}: the last one wins */
            return OK;
        }
        s = (s + 1) & f->mask;
    }
    if (f->count >= f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 16;
        Family *items = realloc(f->items, sizeof(Family) * cap);
        if (items == NULL) {
            return NOMEM;
        }
        f->items = items;
        f->cap = cap;
    }
    f->items[f->count] = *item;
    f->slots[s] = ++f->count;
    return OK;
}

static const Family *
families_get(const Families *f, Bytes p, Py_ssize_t n)
{
    uint32_t h = hash_bytes(p, (size_t)n);
    uint32_t s = h & f->mask;
    for (;;) {
        uint32_t at = f->slots[s];
        if (at == 0) {
            return NULL;
        }
        const Family *item = &f->items[at - 1];
        if (item->hash == h && item->family_n == n && same(item->family, p, (size_t)n)) {
            return item;
        }
        s = (s + 1) & f->mask;
    }
}

static const char *const SUFFIXES[] = {"_bucket", "_count", "_sum",  "_total",
                                       "_created", "_info", "_gcount", "_gsum"};

/* rw2._family_metadata: the metric name's own entry, else its family's by the first suffix. */
static const Family *
families_find(const Families *f, Bytes name, Py_ssize_t n)
{
    const Family *found = families_get(f, name, n);
    for (size_t i = 0; found == NULL && i < sizeof(SUFFIXES) / sizeof(SUFFIXES[0]); i++) {
        Py_ssize_t k = (Py_ssize_t)strlen(SUFFIXES[i]);
        if (n >= k && memcmp(name + n - k, SUFFIXES[i], (size_t)k) == 0) {
            found = families_get(f, name, n - k);
        }
    }
    return found;
}

/* A string field occurrence: upb checks each one, also one a later occurrence overrides. */
static inline int
string_field(Bytes d, const Field *f, Bytes *p, Py_ssize_t *n)
{
    if (f->wire != 2) {
        return 0;
    }
    if (*p != NULL && !utf8_ok(*p, *n)) {
        return 0;
    }
    *p = d + f->start;
    *n = f->end - f->start;
    return 1;
}

static int
parse_metadata(Bytes d, Py_ssize_t pos, Py_ssize_t end, Families *families)
{
    Family item = {NULL, NULL, NULL, 0, 0, 0, 0, 0};
    uint64_t type = 0;
    Field f;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        switch (f.field) {
        case 1:
            if (f.wire != 0) {
                return FALLBACK;
            }
            type = f.value;
            break;
        case 2:
            if (!string_field(d, &f, &item.family, &item.family_n)) {
                return FALLBACK;
            }
            break;
        case 4:
            if (!string_field(d, &f, &item.help, &item.help_n)) {
                return FALLBACK;
            }
            break;
        case 5:
            if (!string_field(d, &f, &item.unit, &item.unit_n)) {
                return FALLBACK;
            }
            break;
        default:
            break; /* an unknown field: upb drops it */
        }
    }
    if ((item.family && !utf8_ok(item.family, item.family_n))
        || (item.help && !utf8_ok(item.help, item.help_n))
        || (item.unit && !utf8_ok(item.unit, item.unit_n))) {
        return FALLBACK;
    }
    if (item.family == NULL) {
        item.family = (Bytes) "";
    }
    /* An open enum read as int32; MetricType() of anything else is UNKNOWN. */
    int32_t t = (int32_t)(uint32_t)type;
    item.type = (t >= 0 && t <= 7) ? (uint32_t)t : 0;
    item.hash = hash_bytes(item.family, (size_t)item.family_n);
    return families_add(families, &item);
}

/* -- the conversion --------------------------------------------------------------------- */

/* Labels by their whole encoding: the same Label bytes are the same name and value refs, so a
 * label seen before in the request costs one lookup and no parse. Each key is copied into one
 * arena, and each slot holds its key's hash, so a lookup reads a few cache lines, not the
 * request's bytes of wherever the label was first seen. */
typedef struct {
    uint32_t n, name, value;
    size_t offset; /* in arena */
} Pair;

typedef struct {
    Pair *items;
    uint32_t count, cap;
    uint64_t *slots; /* hash << 32 | (item index + 1); 0 is empty */
    uint32_t mask;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    uint32_t expected; /* a power of two: the distinct labels the request likely holds */
} Pairs;

/* The previous series' labels by position: consecutive series of one family share most of
 * their labels at the same positions, found by one comparison without hashing. */
#define RECENT 64
typedef struct {
    Bytes p;
    uint32_t n, name, value;
} Recent;

typedef struct {
    Bytes d;
    Table table;
    Families families;
    Pairs pairs;
    Recent recent[RECENT];
    uint32_t name_ref; /* the symbol of "__name__", UINT32_MAX until it has one */
    Buf out;           /* the timeseries fields */
    uint32_t *refs;    /* scratch: an exemplar's labels_refs */
    size_t refs_cap;
} Conv;

static void
pairs_free(Pairs *t)
{
    free(t->items);
    free(t->slots);
    free(t->arena);
}

static int
pairs_add(Pairs *t, Bytes p, uint32_t n, uint32_t hash, uint32_t name, uint32_t value)
{
    if (t->count >= t->cap) {
        if (t->cap > 0x3FFFFFFF) {
            return NOMEM;
        }
        uint32_t cap = t->cap ? t->cap * 2 : t->expected;
        Pair *items = realloc(t->items, sizeof(Pair) * cap);
        if (items == NULL) {
            return NOMEM;
        }
        t->items = items;
        t->cap = cap;
    }
    if (t->arena_cap - t->arena_len < n) {
        size_t cap = t->arena_cap ? t->arena_cap : 65536;
        while (cap - t->arena_len < n) {
            cap *= 2;
        }
        unsigned char *arena = realloc(t->arena, cap);
        if (arena == NULL) {
            return NOMEM;
        }
        t->arena = arena;
        t->arena_cap = cap;
    }
    if (t->slots == NULL || (size_t)(t->count + 1) * 2 > t->mask) {
        uint32_t mask = t->slots == NULL ? t->expected * 2 - 1 : t->mask * 2 + 1;
        uint64_t *slots = calloc((size_t)mask + 1, sizeof(uint64_t));
        if (slots == NULL) {
            return NOMEM;
        }
        for (uint32_t i = 0; i < t->mask + 1 && t->slots != NULL; i++) {
            uint64_t slot = t->slots[i];
            if (slot) {
                uint32_t at = (uint32_t)(slot >> 32) & mask;
                while (slots[at]) {
                    at = (at + 1) & mask;
                }
                slots[at] = slot;
            }
        }
        free(t->slots);
        t->slots = slots;
        t->mask = mask;
    }
    uint32_t at = hash & t->mask;
    while (t->slots[at]) {
        at = (at + 1) & t->mask;
    }
    if (n) {
        memcpy(t->arena + t->arena_len, p, n);
    }
    t->items[t->count] = (Pair){n, name, value, t->arena_len};
    t->arena_len += n;
    t->slots[at] = (uint64_t)hash << 32 | ++t->count;
    return OK;
}

/* A Label's name and value (the last occurrence of each), interned. */
static int
parse_label(Conv *c, Py_ssize_t pos, Py_ssize_t end, uint32_t *name_ref, uint32_t *value_ref)
{
    Bytes d = c->d, name = NULL, value = NULL;
    Py_ssize_t name_n = 0, value_n = 0;
    /* The common encoding, 0a LN name 12 LV value with one-byte lengths, read directly. */
    if (end - pos >= 4 && d[pos] == 0x0A && d[pos + 1] < 0x80 && pos + 2 + d[pos + 1] + 2 <= end
        && d[pos + 2 + d[pos + 1]] == 0x12 && d[pos + 3 + d[pos + 1]] < 0x80
        && pos + 4 + d[pos + 1] + d[pos + 3 + d[pos + 1]] == end) {
        name = d + pos + 2;
        name_n = d[pos + 1];
        value = name + name_n + 2;
        value_n = d[pos + 3 + d[pos + 1]];
    }
    else {
        Field f;
        while (pos < end) {
            if (!next_field(d, &pos, end, &f)) {
                return FALLBACK;
            }
            if (f.field == 1) {
                if (!string_field(d, &f, &name, &name_n)) {
                    return FALLBACK;
                }
            }
            else if (f.field == 2) {
                if (!string_field(d, &f, &value, &value_n)) {
                    return FALLBACK;
                }
            }
        }
    }
    int rc = intern(&c->table, name, name_n, name_ref);
    if (rc != OK) {
        return rc;
    }
    if (name_n == 8 && memcmp(name, "__name__", 8) == 0) {
        c->name_ref = *name_ref;
    }
    return intern(&c->table, value, value_n, value_ref);
}

/* The refs of the Label encoded in [pos, end). */
static inline int
label(Conv *c, Py_ssize_t pos, Py_ssize_t end, uint32_t *name_ref, uint32_t *value_ref)
{
    Pairs *t = &c->pairs;
    Bytes p = c->d + pos;
    uint32_t n = (uint32_t)(end - pos);
    uint32_t h = hash_label(p, n);
    if (t->slots != NULL) {
        uint64_t want = (uint64_t)h << 32;
        uint32_t s = h & t->mask;
        for (;;) {
            uint64_t slot = t->slots[s];
            if (slot == 0) {
                break;
            }
            if ((slot & 0xFFFFFFFF00000000ull) == want) {
                const Pair *item = &t->items[(uint32_t)slot - 1];
                if (item->n == n && same_label(t->arena + item->offset, p, n)) {
                    *name_ref = item->name;
                    *value_ref = item->value;
                    return OK;
                }
            }
            s = (s + 1) & t->mask;
        }
    }
    int rc = parse_label(c, pos, end, name_ref, value_ref);
    if (rc != OK) {
        return rc;
    }
    return pairs_add(t, p, n, h, *name_ref, *value_ref);
}

static inline int
push_ref(Conv *c, size_t *count, uint32_t ref)
{
    if (*count >= c->refs_cap) {
        size_t cap = c->refs_cap ? c->refs_cap * 2 : 256;
        uint32_t *refs = realloc(c->refs, sizeof(uint32_t) * cap);
        if (refs == NULL) {
            return NOMEM;
        }
        c->refs = refs;
        c->refs_cap = cap;
    }
    c->refs[(*count)++] = ref;
    return OK;
}

/* labels_refs (field 1 of both TimeSeries and Exemplar), packed; absent when empty. */
static int
put_refs(Conv *c, size_t count)
{
    if (count == 0) {
        return OK;
    }
    size_t size = 0;
    for (size_t i = 0; i < count; i++) {
        size += (size_t)varint_size(c->refs[i]);
    }
    RESERVE(&c->out, 11 + size);
    put_byte(&c->out, 0x0A);
    put_varint(&c->out, size);
    unsigned char *p = c->out.d + c->out.len;
    for (size_t i = 0; i < count; i++) {
        uint32_t v = c->refs[i];
        while (v >= 0x80) {
            *p++ = (unsigned char)(v | 0x80);
            v >>= 7;
        }
        *p++ = (unsigned char)v;
    }
    c->out.len = (size_t)(p - c->out.d);
    return OK;
}

/* A Sample's value (field 1, I64) and timestamp (field 2, VARINT), the last occurrence of each
 * winning; 0 for a field of the wrong wire type. ``v2``: field 3 is 2.0's start_timestamp,
 * which only 0 may be (1.0 has no place for it); in 1.0 it is an unknown field, skipped. */
static int
read_sample(Bytes d, Py_ssize_t pos, Py_ssize_t end, int v2, uint64_t *value, uint64_t *ts)
{
    Field f;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return 0;
        }
        if (f.field == 1) {
            if (f.wire != 1) {
                return 0;
            }
            *value = f.value;
        }
        else if (f.field == 2) {
            if (f.wire != 0) {
                return 0;
            }
            *ts = f.value;
        }
        else if (f.field == 3 && v2 && (f.wire != 0 || f.value)) {
            return 0;
        }
    }
    return 1;
}

/* 12 L [09 value] [10 timestamp], as upb writes a Sample: a double is omitted when all its bits
 * are zero (+0.0), a timestamp when 0. */
static int
write_sample(Buf *b, uint64_t value, uint64_t ts)
{
    RESERVE(b, 2 + 9 + 11);
    put_byte(b, 0x12);
    put_byte(b, (unsigned char)((value ? 9 : 0) + (ts ? 1 + varint_size(ts) : 0)));
    if (value) {
        put_byte(b, 0x09);
        put_fixed64(b, value);
    }
    if (ts) {
        put_byte(b, 0x10);
        put_varint(b, ts);
    }
    return OK;
}

static int
sample(Conv *c, Py_ssize_t pos, Py_ssize_t end)
{
    Bytes d = c->d;
    uint64_t value = 0, timestamp = 0;
    /* The usual sample, 09 value 10 timestamp with both non-zero and a minimal varint, is
     * encoded in v2 exactly as in v1: its body is copied as it came. */
    if (end - pos >= 11 && end - pos <= 20 && d[pos] == 0x09 && d[pos + 9] == 0x10
        && rd64(d + pos + 1) != 0 && d[end - 1] != 0 && d[end - 1] < 0x80
        && (end - pos < 20 || d[end - 1] == 1)) {
        Py_ssize_t at = pos + 10;
        while (at < end - 1 && d[at] >= 0x80) {
            at++;
        }
        if (at == end - 1) {
            Buf *b = &c->out;
            RESERVE(b, 22);
            put_byte(b, 0x12);
            put_byte(b, (unsigned char)(end - pos));
            memcpy(b->d + b->len, d + pos, (size_t)(end - pos));
            b->len += (size_t)(end - pos);
            return OK;
        }
    }
    if (!read_sample(d, pos, end, 0, &value, &timestamp)) {
        return FALLBACK;
    }
    return write_sample(&c->out, value, timestamp);
}

/* A repeated varint field (packed or not, in any number of occurrences), written packed. */
static int
repeated_varints(Bytes d, Buf *out, Py_ssize_t start, Py_ssize_t end, uint32_t field, unsigned char tag)
{
    size_t size = 0;
    Field f;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (size == 0) {
                return OK;
            }
            RESERVE(out, 11 + size);
            put_byte(out, tag);
            put_varint(out, size);
        }
        Py_ssize_t pos = start;
        while (pos < end) {
            if (!next_field(d, &pos, end, &f)) {
                return FALLBACK;
            }
            if (f.field != field) {
                continue;
            }
            if (f.wire == 0) {
                if (pass == 0) {
                    size += (size_t)varint_size(f.value);
                }
                else {
                    put_varint(out, f.value);
                }
            }
            else if (f.wire == 2) {
                Py_ssize_t at = f.start;
                uint64_t v;
                while (at < f.end) {
                    if (!rd_varint(d, &at, f.end, &v)) {
                        return FALLBACK;
                    }
                    if (pass == 0) {
                        size += (size_t)varint_size(v);
                    }
                    else {
                        put_varint(out, v);
                    }
                }
            }
            else {
                return FALLBACK;
            }
        }
    }
    return OK;
}

/* A repeated double field (packed or not, in any number of occurrences), written packed. */
static int
repeated_doubles(Bytes d, Buf *out, Py_ssize_t start, Py_ssize_t end, uint32_t field, const char *tag,
                 int tag_n)
{
    size_t size = 0;
    Field f;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (size == 0) {
                return OK;
            }
            RESERVE(out, 12 + size);
            memcpy(out->d + out->len, tag, (size_t)tag_n);
            out->len += (size_t)tag_n;
            put_varint(out, size);
        }
        Py_ssize_t pos = start;
        while (pos < end) {
            if (!next_field(d, &pos, end, &f)) {
                return FALLBACK;
            }
            if (f.field != field) {
                continue;
            }
            if (f.wire == 1) {
                if (pass == 0) {
                    size += 8;
                }
                else {
                    put_fixed64(out, f.value);
                }
            }
            else if (f.wire == 2) {
                size_t n = (size_t)(f.end - f.start);
                if (n % 8) {
                    return FALLBACK;
                }
                if (pass == 0) {
                    size += n;
                }
                else {
                    memcpy(out->d + out->len, d + f.start, n);
                    out->len += n;
                }
            }
            else {
                return FALLBACK;
            }
        }
    }
    return OK;
}

/* Every BucketSpan of one field, re-encoded: sint32 offset and uint32 length, zero omitted. */
static int
spans(Bytes d, Buf *out, Py_ssize_t pos, Py_ssize_t end, uint32_t field, unsigned char tag)
{
    Field f, g;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        if (f.field != field) {
            continue;
        }
        if (f.wire != 2) {
            return FALLBACK;
        }
        uint32_t offset = 0, length = 0; /* 32-bit fields keep a varint's low 32 bits */
        Py_ssize_t at = f.start;
        while (at < f.end) {
            if (!next_field(d, &at, f.end, &g)) {
                return FALLBACK;
            }
            if (g.field == 1 || g.field == 2) {
                if (g.wire != 0) {
                    return FALLBACK;
                }
                *(g.field == 1 ? &offset : &length) = (uint32_t)g.value;
            }
        }
        Buf *b = out;
        RESERVE(b, 2 + 12);
        put_byte(b, tag);
        put_byte(b, (unsigned char)((offset ? 1 + varint_size(offset) : 0)
                                    + (length ? 1 + varint_size(length) : 0)));
        if (offset) {
            put_byte(b, 0x08);
            put_varint(b, offset);
        }
        if (length) {
            put_byte(b, 0x10);
            put_varint(b, length);
        }
    }
    return OK;
}

/* A v1 Histogram as rw1.histogram_from_proto then rw1.fill_histogram make it (both messages
 * number fields 1-16 alike), as field ``tag`` of a TimeSeries: 0x1A in 2.0, 0x22 in 1.0. ``v2``:
 * the input is a 2.0 Histogram, whose field 17, start_timestamp, only 0 may be (1.0 has no place
 * for it); in 1.0 it is an unknown field, dropped. */
static int
histogram(Bytes d, Buf *out, Py_ssize_t start, Py_ssize_t end, unsigned char tag, int v2)
{
    /* kinds: 0 unset, 1 the int member, 2 the double member (the last occurrence wins) */
    int count_kind = 0, zero_kind = 0;
    uint64_t count = 0, zero = 0, sum = 0, schema = 0, threshold = 0, hint = 0, timestamp = 0;
    int has_repeated = 0;
    Field f;
    Py_ssize_t pos = start;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        int want; /* the wire type the field is declared with; -1: packed or not */
        switch (f.field) {
        case 1: case 4: case 6: case 14: case 15:
            want = 0;
            break;
        case 2: case 3: case 5: case 7:
            want = 1;
            break;
        case 8: case 11:
            want = 2;
            break;
        case 9: case 12:
            want = f.wire == 2 ? 2 : 0;
            break;
        case 10: case 13: case 16:
            want = f.wire == 2 ? 2 : 1;
            break;
        case 17:
            if (!v2) {
                continue;
            }
            if (f.wire != 0 || f.value) {
                return FALLBACK;
            }
            continue;
        default:
            continue; /* unknown: upb drops it */
        }
        if (f.wire != want) {
            return FALLBACK;
        }
        switch (f.field) {
        case 1: case 2:
            count_kind = (int)f.field;
            count = f.value;
            break;
        case 3:
            sum = f.value;
            break;
        case 4:
            schema = (uint32_t)f.value;
            break;
        case 5:
            threshold = f.value;
            break;
        case 6: case 7:
            zero_kind = (int)f.field - 5;
            zero = f.value;
            break;
        case 14:
            hint = f.value;
            break;
        case 15:
            timestamp = f.value;
            break;
        default:
            has_repeated = 1;
            break;
        }
    }
    int is_float = count_kind == 2;
    if (is_float && zero_kind != 2) {
        double as_double = (double)(zero_kind == 1 ? zero : 0); /* float(int), exact rounding */
        memcpy(&zero, &as_double, 8);
    }
    else if (!is_float && zero_kind == 2) {
        return FALLBACK; /* int() of a double: only Python says what (or raises) */
    }
    if (!is_float) {
        count = count_kind == 1 ? count : 0;
    }
    /* An open enum keeps int32 bits; int32 is written sign-extended to 64. */
    hint = (uint64_t)(int64_t)(int32_t)(uint32_t)hint;

    Buf *b = out;
    size_t at;
    int rc = open_message(b, tag, &at);
    if (rc != OK) {
        return rc;
    }
    RESERVE(b, 4 * 9 + 2 * 11 + 6);
    /* The oneof members are written even when zero: fill_histogram always sets one. */
    if (is_float) {
        put_byte(b, 0x11);
        put_fixed64(b, count);
    }
    else {
        put_byte(b, 0x08);
        put_varint(b, count);
    }
    if (sum) {
        put_byte(b, 0x19);
        put_fixed64(b, sum);
    }
    if (schema) {
        put_byte(b, 0x20);
        put_varint(b, schema);
    }
    if (threshold) {
        put_byte(b, 0x29);
        put_fixed64(b, threshold);
    }
    if (is_float) {
        put_byte(b, 0x39);
        put_fixed64(b, zero);
    }
    else {
        put_byte(b, 0x30);
        put_varint(b, zero_kind == 1 ? zero : 0);
    }
    if (has_repeated) {
        if ((rc = spans(d, out, start, end, 8, 0x42)) != OK
            || (rc = repeated_varints(d, out, start, end, 9, 0x4A)) != OK
            || (rc = repeated_doubles(d, out, start, end, 10, "\x52", 1)) != OK
            || (rc = spans(d, out, start, end, 11, 0x5A)) != OK
            || (rc = repeated_varints(d, out, start, end, 12, 0x62)) != OK
            || (rc = repeated_doubles(d, out, start, end, 13, "\x6A", 1)) != OK) {
            return rc;
        }
    }
    RESERVE(b, 2 * 11);
    if (hint) {
        put_byte(b, 0x70);
        put_varint(b, hint);
    }
    if (timestamp) {
        put_byte(b, 0x78);
        put_varint(b, timestamp);
    }
    if (has_repeated && (rc = repeated_doubles(d, out, start, end, 16, "\x82\x01", 2)) != OK) {
        return rc;
    }
    return close_message(b, at);
}

static int
exemplar(Conv *c, Py_ssize_t pos, Py_ssize_t end)
{
    Bytes d = c->d;
    uint64_t value = 0, timestamp = 0;
    size_t count = 0;
    Field f;
    int rc;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        switch (f.field) {
        case 1:
            if (f.wire != 2) {
                return FALLBACK;
            }
            {
                uint32_t name, value;
                if ((rc = label(c, f.start, f.end, &name, &value)) != OK
                    || (rc = push_ref(c, &count, name)) != OK
                    || (rc = push_ref(c, &count, value)) != OK) {
                    return rc;
                }
            }
            break;
        case 2:
            if (f.wire != 1) {
                return FALLBACK;
            }
            value = f.value;
            break;
        case 3:
            if (f.wire != 0) {
                return FALLBACK;
            }
            timestamp = f.value;
            break;
        default:
            break;
        }
    }
    Buf *b = &c->out;
    size_t at;
    if ((rc = open_message(b, 0x22, &at)) != OK || (rc = put_refs(c, count)) != OK) {
        return rc;
    }
    RESERVE(b, 9 + 11);
    if (value) {
        put_byte(b, 0x11);
        put_fixed64(b, value);
    }
    if (timestamp) {
        put_byte(b, 0x18);
        put_varint(b, timestamp);
    }
    return close_message(b, at);
}

/* v1 TimeSeries fields: labels 1, samples 2, exemplars 3, histograms 4. v2 writes labels_refs
 * 1, samples 2, histograms 3, exemplars 4, metadata 5; symbols are taken in that order too. */
static int
series(Conv *c, Py_ssize_t start, Py_ssize_t end)
{
    Bytes d = c->d;
    Bytes name = NULL;
    Py_ssize_t name_n = 0;
    uint32_t labels = 0;
    Py_ssize_t first[5] = {-1, -1, -1, -1, -1}; /* where field 2, 3, 4 first occur */
    Field f;
    int rc;
    Buf *b = &c->out;
    size_t at, refs_at;
    /* labels_refs are written as the labels are read: one byte kept for their length */
    if ((rc = open_message(b, 0x2A, &at)) != OK || (rc = open_message(b, 0x0A, &refs_at)) != OK) {
        return rc;
    }
    /* labels_refs take at most 5 times the labels' bytes: 2 varints of <= 5 bytes per Label,
     * which takes 2 bytes at least */
    RESERVE(b, 5 * (size_t)(end - start) + 16);
    Py_ssize_t pos = start;
    while (pos < end) {
        Py_ssize_t label_at;
        if (d[pos] == 0x0A && end - pos >= 2 && d[pos + 1] < 0x80 && end - pos - 2 >= d[pos + 1]) {
            label_at = pos + 2; /* a Label under 128 bytes: read here, not by next_field */
            pos = label_at + d[pos + 1];
        }
        else {
            Py_ssize_t field_at = pos;
            if (!next_field(d, &pos, end, &f)) {
                return FALLBACK;
            }
            if (f.field > 4) {
                continue; /* unknown: upb drops it */
            }
            if (f.wire != 2) {
                return FALLBACK;
            }
            if (f.field != 1) {
                if (first[f.field] < 0) {
                    first[f.field] = field_at;
                }
                continue;
            }
            label_at = f.start;
        }
        uint32_t name_ref, value_ref;
        Bytes p = d + label_at;
        uint32_t n = (uint32_t)(pos - label_at);
        Recent *recent = labels < RECENT ? &c->recent[labels] : NULL;
        if (recent != NULL && recent->n == n && recent->p != NULL && same_label(recent->p, p, n)) {
            name_ref = recent->name;
            value_ref = recent->value;
        }
        else {
            if ((rc = label(c, label_at, pos, &name_ref, &value_ref)) != OK) {
                return rc;
            }
            if (recent != NULL) {
                *recent = (Recent){p, n, name_ref, value_ref};
            }
        }
        labels++;
        if (name == NULL && name_ref == c->name_ref) { /* Series.name: the first __name__ */
            name = c->table.syms[value_ref].p;
            name_n = c->table.syms[value_ref].n;
        }
        if ((name_ref | value_ref) < 0x80) {
            b->d[b->len] = (unsigned char)name_ref;
            b->d[b->len + 1] = (unsigned char)value_ref;
            b->len += 2;
        }
        else {
            put_varint(b, name_ref);
            put_varint(b, value_ref);
        }
    }
    if (labels) {
        if ((rc = close_message(b, refs_at)) != OK) {
            return rc;
        }
    }
    else {
        b->len = refs_at - 1; /* no labels: no field */
    }
    if (first[2] < 0 && first[4] < 0) {
        return FALLBACK; /* no samples, no histograms: the reference leaves the series out */
    }
    static const int order[3] = {2, 4, 3}; /* samples, histograms, exemplars */
    for (int k = 0; k < 3; k++) {
        int field = order[k];
        if (first[field] < 0) {
            continue;
        }
        pos = first[field];
        while (pos < end) {
            if (d[pos] == 0x12 && field == 2 && end - pos >= 2 && d[pos + 1] < 0x80
                && end - pos - 2 >= d[pos + 1]) {
                /* a Sample under 128 bytes: read here, not by next_field */
                Py_ssize_t body = pos + 2;
                pos = body + d[pos + 1];
                if ((rc = sample(c, body, pos)) != OK) {
                    return rc;
                }
                continue;
            }
            if (!next_field(d, &pos, end, &f)) {
                return FALLBACK;
            }
            if (f.field != (uint32_t)field) {
                continue;
            }
            rc = field == 2   ? sample(c, f.start, f.end)
                 : field == 4 ? histogram(c->d, &c->out, f.start, f.end, 0x1A, 0)
                              : exemplar(c, f.start, f.end);
            if (rc != OK) {
                return rc;
            }
        }
    }
    if (c->families.count) {
        const Family *family =
            families_find(&c->families, name != NULL ? name : (Bytes) "", name_n);
        if (family != NULL) {
            uint32_t help, unit;
            if ((rc = intern(&c->table, family->help, family->help_n, &help)) != OK
                || (rc = intern(&c->table, family->unit, family->unit_n, &unit)) != OK) {
                return rc;
            }
            RESERVE(b, 2 + 18);
            put_byte(b, 0x2A);
            put_byte(b, (unsigned char)((family->type ? 2 : 0) + (help ? 1 + varint_size(help) : 0)
                                        + (unit ? 1 + varint_size(unit) : 0)));
            if (family->type) {
                put_byte(b, 0x08);
                put_byte(b, (unsigned char)family->type);
            }
            if (help) {
                put_byte(b, 0x18);
                put_varint(b, help);
            }
            if (unit) {
                put_byte(b, 0x20);
                put_varint(b, unit);
            }
        }
    }
    return close_message(b, at);
}

/* Every top-level field: metadata first (a series needs its family's), then the series. */
static int
convert(Conv *c, Py_ssize_t size)
{
    Bytes d = c->d;
    Field f;
    int rc;
    int series_seen = 0;
    Py_ssize_t pos = 0;
    while (pos < size) {
        if (!next_field(d, &pos, size, &f)) {
            return FALLBACK;
        }
        if (f.field == 1 || f.field == 3) {
            if (f.wire != 2) {
                return FALLBACK;
            }
            if (f.field == 3 && (rc = parse_metadata(d, f.start, f.end, &c->families)) != OK) {
                return rc;
            }
            series_seen |= f.field == 1;
        }
    }
    if (!series_seen) {
        return OK;
    }
    pos = 0;
    while (pos < size) {
        next_field(d, &pos, size, &f); /* the walk above checked every key */
        if (f.field == 1 && (rc = series(c, f.start, f.end)) != OK) {
            return rc;
        }
    }
    return OK;
}

static PyObject *
from_v1(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Conv c;
    memset(&c, 0, sizeof(c));
    c.d = view.buf;
    c.name_ref = UINT32_MAX;
    /* the series part is mostly under a quarter of the v1 bytes (strings become refs) */
    c.out.cap = (size_t)view.len / 4 + 4096;
    c.out.d = malloc(c.out.cap);
    int rc;
    /* Tables sized for what a request of this size mostly holds (Prometheus' requests: one
     * distinct label or string per ~250 bytes), so that they rarely grow. */
    uint32_t expected = 512;
    while (expected < (1u << 16) && (Py_ssize_t)expected * 256 < view.len) {
        expected *= 2;
    }
    c.pairs.expected = expected;
    if (c.out.d == NULL || !table_init(&c.table, expected)) {
        rc = NOMEM;
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        rc = convert(&c, view.len);
        Py_END_ALLOW_THREADS
    }
    PyObject *result = NULL;
    if (rc == OK) {
        /* symbols (field 4) come before timeseries (field 5), as upb writes them */
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(c.table.bytes + c.out.len));
        if (result != NULL) {
            unsigned char *p = (unsigned char *)PyBytes_AS_STRING(result);
            for (uint32_t i = 0; i < c.table.count; i++) {
                const Sym *sym = &c.table.syms[i];
                *p++ = 0x22;
                uint64_t n = sym->n;
                while (n >= 0x80) {
                    *p++ = (unsigned char)(n | 0x80);
                    n >>= 7;
                }
                *p++ = (unsigned char)n;
                memcpy(p, sym->p, sym->n);
                p += sym->n;
            }
            if (c.out.len) {
                memcpy(p, c.out.d, c.out.len);
            }
        }
    }
    else if (rc == FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    else {
        PyErr_NoMemory();
    }
    table_free(&c.table);
    families_free(&c.families);
    pairs_free(&c.pairs);
    free(c.out.d);
    free(c.refs);
    PyBuffer_Release(&view);
    return result;
}

/* -- remote write 2.0 to 1.0 (rw2.to_v1) ------------------------------------------------ */

/* A received 2.0 Request as the 1.0 WriteRequest the relay's fast path takes: each series' labels
 * resolved into Label fields, its samples, exemplars (their labels resolved too) and native
 * histograms re-encoded as rw1.encode writes them, and the series' own metadata as family
 * entries after the series (model.with_series_families: a family's first entry wins, one of
 * unknown type without help or unit is left out). Nothing is validated here beyond the framing
 * and what only 2.0 forbids (samples and histograms in one series, or neither): the survey
 * checks the 1.0 bytes as strictly as any 1.0 request, and a request it refuses goes to
 * rw2.decode, which words the refusal in 2.0's terms. Anything 1.0 cannot carry as the decoded
 * path does (start or created timestamps, a reference out of range, symbols[0] not empty, a
 * field of the wrong wire type) returns None: the caller decodes the request instead. */

typedef struct {
    Bytes p;
    Py_ssize_t n;
} Str;

typedef struct {
    Str *items;
    size_t count, cap;
} Strs;

static int
strs_push(Strs *s, Bytes p, Py_ssize_t n)
{
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        Str *items = realloc(s->items, cap * sizeof(Str));
        if (items == NULL) {
            return NOMEM;
        }
        s->items = items;
        s->cap = cap;
    }
    s->items[s->count++] = (Str){p, n};
    return OK;
}

/* model.family_name: a histogram's, gauge histogram's or summary's series under the family. */
static Py_ssize_t
family_length(Bytes name, Py_ssize_t n, uint32_t type)
{
    static const char *const histogram[] = {"_bucket", "_sum", "_count"};
    static const char *const gaugehistogram[] = {"_bucket", "_gsum", "_gcount"};
    static const char *const summary[] = {"_sum", "_count"};
    const char *const *suffixes = NULL;
    size_t count = 0;
    if (type == 3) {
        suffixes = histogram;
        count = 3;
    }
    else if (type == 4) {
        suffixes = gaugehistogram;
        count = 3;
    }
    else if (type == 5) {
        suffixes = summary;
        count = 2;
    }
    for (size_t i = 0; i < count; i++) {
        Py_ssize_t k = (Py_ssize_t)strlen(suffixes[i]);
        if (n >= k && memcmp(name + n - k, suffixes[i], (size_t)k) == 0) {
            return n - k;
        }
    }
    return n;
}

static inline void
put_string_field(Buf *b, unsigned char tag, Str s)
{
    if (s.n) { /* proto3: an empty string is left out */
        put_byte(b, tag);
        put_varint(b, (uint64_t)s.n);
        memcpy(b->d + b->len, s.p, (size_t)s.n);
        b->len += (size_t)s.n;
    }
}

typedef struct {
    Strs symbols;
    Buf out;
    Families families;
    uint32_t *refs;
    size_t refs_cap;
    long long samples, histograms, exemplars;
    long long expanded;
    long long max_expanded; /* beyond it: FALLBACK before more is written (the decoded path 413s) */
} ToV1;

static int
v1_sample(ToV1 *t, Bytes d, Py_ssize_t pos, Py_ssize_t end)
{
    uint64_t value = 0, ts = 0;
    if (!read_sample(d, pos, end, 1, &value, &ts)) {
        return FALLBACK; /* also a start timestamp: 1.0 has no place for it */
    }
    t->samples++;
    return write_sample(&t->out, value, ts);
}

/* One labels_refs entry kept (a reference beyond 32 bits: FALLBACK). */
static int
refs_push(ToV1 *t, size_t *count, uint64_t ref)
{
    if (ref > 0xFFFFFFFFu) {
        return FALLBACK;
    }
    if (*count == t->refs_cap) {
        size_t cap = t->refs_cap ? t->refs_cap * 2 : 64;
        uint32_t *refs = realloc(t->refs, cap * sizeof(uint32_t));
        if (refs == NULL) {
            return NOMEM;
        }
        t->refs = refs;
        t->refs_cap = cap;
    }
    t->refs[(*count)++] = (uint32_t)ref;
    return OK;
}

/* The Label fields of the ``count`` references in ``t->refs``, in range already. */
static int
put_labels(ToV1 *t, size_t count)
{
    for (size_t i = 0; i < count; i += 2) {
        Str n = t->symbols.items[t->refs[i]], v = t->symbols.items[t->refs[i + 1]];
        size_t body = (n.n ? 1 + (size_t)varint_size((uint64_t)n.n) + (size_t)n.n : 0) +
                      (v.n ? 1 + (size_t)varint_size((uint64_t)v.n) + (size_t)v.n : 0);
        RESERVE(&t->out, body + 12);
        put_byte(&t->out, 0x0A);
        put_varint(&t->out, body);
        put_string_field(&t->out, 0x0A, n);
        put_string_field(&t->out, 0x12, v);
    }
    return OK;
}

/* The Label fields of the ``count`` references in ``t->refs`` (each in range, its cost counted
 * in ``t->expanded`` as rw2.decode_counted counts it). */
static int
v1_labels(ToV1 *t, size_t count)
{
    size_t nsym = t->symbols.count;
    for (size_t i = 0; i < count; i++) {
        if (t->refs[i] >= nsym) {
            return FALLBACK;
        }
        t->expanded += t->symbols.items[t->refs[i]].n + 3;
    }
    if (t->expanded > t->max_expanded) {
        return FALLBACK;
    }
    return put_labels(t, count);
}

/* An Exemplar in 1.0 (TimeSeries field 3): its labels_refs resolved into Label fields, then
 * its value and timestamp, a zero omitted, as rw1.encode writes it. */
static int
v1_exemplar(ToV1 *t, Bytes d, Py_ssize_t pos, Py_ssize_t end)
{
    uint64_t value = 0, timestamp = 0;
    size_t nrefs = 0;
    Field f;
    int rc;
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        if (f.field == 1) {
            if (f.wire == 0) {
                if ((rc = refs_push(t, &nrefs, f.value)) != OK) {
                    return rc;
                }
            }
            else if (f.wire == 2) {
                Py_ssize_t p = f.start;
                uint64_t ref;
                while (p < f.end) {
                    if (!rd_varint(d, &p, f.end, &ref)) {
                        return FALLBACK;
                    }
                    if ((rc = refs_push(t, &nrefs, ref)) != OK) {
                        return rc;
                    }
                }
            }
            else {
                return FALLBACK;
            }
        }
        else if (f.field == 2) {
            if (f.wire != 1) {
                return FALLBACK;
            }
            value = f.value;
        }
        else if (f.field == 3) {
            if (f.wire != 0) {
                return FALLBACK;
            }
            timestamp = f.value;
        }
    }
    if (nrefs % 2) {
        return FALLBACK;
    }
    size_t at;
    if ((rc = open_message(&t->out, 0x1A, &at)) != OK) {
        return rc;
    }
    if ((rc = v1_labels(t, nrefs)) != OK) {
        return rc;
    }
    RESERVE(&t->out, 9 + 11);
    if (value) {
        put_byte(&t->out, 0x11);
        put_fixed64(&t->out, value);
    }
    if (timestamp) {
        put_byte(&t->out, 0x18);
        put_varint(&t->out, timestamp);
    }
    t->exemplars++;
    return close_message(&t->out, at);
}

static int
v1_series(ToV1 *t, Bytes d, Py_ssize_t start, Py_ssize_t end)
{
    size_t nrefs = 0;
    unsigned kinds = 0; /* 1 << field of the samples (2), histograms (3), exemplars (4) seen */
    int has_meta = 0;
    uint64_t meta_type = 0, help_ref = 0, unit_ref = 0;
    Field f;
    Py_ssize_t pos = start;
    /* First the labels and the metadata, which may come after the samples. */
    while (pos < end) {
        if (!next_field(d, &pos, end, &f)) {
            return FALLBACK;
        }
        switch (f.field) {
        case 1: /* labels_refs: packed, or one varint per field */
            if (f.wire == 0) {
                int rc = refs_push(t, &nrefs, f.value);
                if (rc != OK) {
                    return rc;
                }
            }
            else if (f.wire == 2) {
                Py_ssize_t p = f.start;
                while (p < f.end) {
                    uint64_t ref;
                    if (!rd_varint(d, &p, f.end, &ref)) {
                        return FALLBACK;
                    }
                    int rc = refs_push(t, &nrefs, ref);
                    if (rc != OK) {
                        return rc;
                    }
                }
            }
            else {
                return FALLBACK;
            }
            break;
        case 2: /* samples, histograms, exemplars: written below, in order */
        case 3:
        case 4:
            if (f.wire != 2) {
                return FALLBACK;
            }
            kinds |= 1u << f.field;
            break;
        case 5: { /* metadata */
            if (f.wire != 2) {
                return FALLBACK;
            }
            has_meta = 1;
            Field m;
            Py_ssize_t mp = f.start;
            while (mp < f.end) {
                if (!next_field(d, &mp, f.end, &m)) {
                    return FALLBACK;
                }
                if (m.field == 1 || m.field == 3 || m.field == 4) {
                    if (m.wire != 0) {
                        return FALLBACK;
                    }
                    if (m.field == 1) {
                        meta_type = m.value;
                    }
                    else if (m.field == 3) {
                        help_ref = m.value;
                    }
                    else {
                        unit_ref = m.value;
                    }
                }
            }
            break;
        }
        case 6: /* created_timestamp */
            if (f.wire != 0) {
                return FALLBACK;
            }
            if (f.value) {
                return FALLBACK;
            }
            break;
        default:
            break; /* an unknown field: skipped, as upb does */
        }
    }
    size_t nsym = t->symbols.count;
    if (nrefs % 2) {
        return FALLBACK;
    }
    Str name = {(Bytes) "", 0};
    int named = 0;
    for (size_t i = 0; i < nrefs; i++) {
        if (t->refs[i] >= nsym) {
            return FALLBACK;
        }
    }
    for (size_t i = 0; i < nrefs; i++) { /* every reference in range */
        t->expanded += t->symbols.items[t->refs[i]].n + 3;
        if (t->expanded > t->max_expanded) {
            return FALLBACK; /* a long symbol every series refers to: bounded before written */
        }
        if (i % 2 == 0) {
            Str n = t->symbols.items[t->refs[i]];
            if (n.n == 8 && memcmp(n.p, "__name__", 8) == 0) {
                name = t->symbols.items[t->refs[i + 1]];
                named = 1;
            }
        }
    }
    if (has_meta && (help_ref >= nsym || unit_ref >= nsym)) {
        return FALLBACK;
    }
    if ((kinds & (1u << 2)) && (kinds & (1u << 3))) {
        return FALLBACK; /* samples and histograms: rw2.decode refuses it */
    }
    if (!(kinds & (1u << 2 | 1u << 3 | 1u << 4))) {
        return FALLBACK; /* metadata alone: rw2.decode refuses it (exemplars alone are taken) */
    }
    /* The series: its labels, then its samples, exemplars and histograms, each as they come
     * (1.0's field order: exemplars 3, histograms 4). */
    size_t at;
    int rc = open_message(&t->out, 0x0A, &at);
    if (rc != OK) {
        return rc;
    }
    if ((rc = put_labels(t, nrefs)) != OK) {
        return rc;
    }
    static const uint32_t order[3] = {2, 4, 3}; /* samples, exemplars, histograms (2.0's) */
    for (int k = 0; k < 3; k++) {
        uint32_t field = order[k];
        if (!(kinds & (1u << field))) {
            continue;
        }
        pos = start;
        while (pos < end) {
            next_field(d, &pos, end, &f); /* read once above: it parses */
            if (f.field != field) {
                continue;
            }
            rc = field == 2   ? v1_sample(t, d, f.start, f.end)
                 : field == 4 ? v1_exemplar(t, d, f.start, f.end)
                              : histogram(d, &t->out, f.start, f.end, 0x22, 1);
            if (rc != OK) {
                return rc;
            }
            if (field == 3) {
                t->histograms++;
            }
        }
    }
    if ((rc = close_message(&t->out, at)) != OK) {
        return rc;
    }
    /* Its metadata as its family's entry, the first one kept. */
    if (has_meta) {
        uint32_t type = meta_type <= 7 ? (uint32_t)meta_type : 0; /* rw2: unknown → UNKNOWN */
        Str help = t->symbols.items[help_ref], unit = t->symbols.items[unit_ref];
        if (type || help.n || unit.n) {
            Py_ssize_t n = family_length(name.p, name.n, type);
            if (!named) {
                n = 0;
            }
            if (t->families.count == 0 || families_get(&t->families, name.p, n) == NULL) {
                Family item = {name.p, help.p, unit.p, n, help.n, unit.n, type,
                               hash_bytes(name.p, (size_t)n)};
                if ((rc = families_add(&t->families, &item)) != OK) {
                    return rc;
                }
            }
        }
    }
    return OK;
}

static int
to_v1_walk(ToV1 *t, Bytes d, Py_ssize_t size)
{
    Field f;
    Py_ssize_t pos = 0;
    int rc;
    while (pos < size) {
        if (!next_field(d, &pos, size, &f)) {
            return FALLBACK;
        }
        if (f.field == 4) {
            if (f.wire != 2 || !utf8_ok(d + f.start, f.end - f.start)) {
                return FALLBACK; /* upb refuses a string that is not UTF-8 */
            }
            if ((rc = strs_push(&t->symbols, d + f.start, f.end - f.start)) != OK) {
                return rc;
            }
        }
        else if (f.field == 5 && f.wire != 2) {
            return FALLBACK;
        }
    }
    if (t->symbols.count && t->symbols.items[0].n != 0) {
        return FALLBACK; /* rw2.decode refuses it */
    }
    pos = 0;
    while (pos < size) {
        next_field(d, &pos, size, &f);
        if (f.field == 5 && (rc = v1_series(t, d, f.start, f.end)) != OK) {
            return rc;
        }
    }
    for (uint32_t i = 0; i < t->families.count; i++) {
        const Family *m = &t->families.items[i];
        Str family = {m->family, m->family_n}, help = {m->help, m->help_n},
            unit = {m->unit, m->unit_n};
        size_t body = (m->type ? 2 : 0) + (family.n ? 1 + varint_size((uint64_t)family.n) + (size_t)family.n : 0) +
                      (help.n ? 1 + varint_size((uint64_t)help.n) + (size_t)help.n : 0) +
                      (unit.n ? 1 + varint_size((uint64_t)unit.n) + (size_t)unit.n : 0);
        RESERVE(&t->out, body + 12);
        put_byte(&t->out, 0x1A);
        put_varint(&t->out, body);
        if (m->type) {
            put_byte(&t->out, 0x08);
            put_byte(&t->out, (unsigned char)m->type);
        }
        put_string_field(&t->out, 0x12, family);
        put_string_field(&t->out, 0x22, help);
        put_string_field(&t->out, 0x2A, unit);
    }
    return OK;
}

static PyObject *
to_v1(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    long long max_expanded;
    if (!PyArg_ParseTuple(args, "y*L", &view, &max_expanded)) {
        return NULL;
    }
    ToV1 t;
    memset(&t, 0, sizeof t);
    t.max_expanded = max_expanded;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = to_v1_walk(&t, (Bytes)view.buf, view.len);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (rc == OK) {
        result = Py_BuildValue("(y#LLLL)", t.out.d ? (const char *)t.out.d : "",
                               (Py_ssize_t)t.out.len, t.samples, t.expanded, t.histograms,
                               t.exemplars);
    }
    else if (rc == FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    else {
        PyErr_NoMemory();
    }
    free(t.symbols.items);
    free(t.out.d);
    families_free(&t.families);
    free(t.refs);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
hash_label_py(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "hash_label(label: bytes)");
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        hash_label((Bytes)PyBytes_AS_STRING(arg), (size_t)PyBytes_GET_SIZE(arg)));
}

static PyMethodDef methods[] = {
    {"hash_label", hash_label_py, METH_O,
     "hash_label(label) -> int: the labels table's hash of an encoded Label (for tests)."},
    {"to_v1", to_v1, METH_VARARGS,
     "to_v1(raw, max_expanded) -> (bytes, samples, expanded) | None\n\n"
     "raw: an uncompressed remote-write 2.0 Request. The remote-write 1.0 WriteRequest the\n"
     "relay's fast path takes for it (labels resolved, samples re-encoded, the series'\n"
     "metadata as family entries), its sample count and its labels' bytes once resolved as\n"
     "rw2.decode counts them; None for a request 1.0 cannot carry as the decoded path does\n"
     "or whose labels once resolved exceed max_expanded bytes (nothing more is written)."},
    {"from_v1", from_v1, METH_O,
     "from_v1(raw) -> bytes | None\n\n"
     "raw: an uncompressed remote-write 1.0 WriteRequest. The remote-write 2.0 Request that\n"
     "rw2.encode(rw1.decode(raw, validate=False)) makes, byte for byte; None for a request\n"
     "this does not model (the caller then runs that reference)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "gotk_relay.wire._v2",
    "Remote write 1.0 bytes to remote write 2.0 bytes (see rw2.from_v1).", 0, methods, slots,
};

PyMODINIT_FUNC
PyInit__v2(void)
{
    if (v2_seed == 0 && getrandom(&v2_seed, sizeof v2_seed, GRND_NONBLOCK) != (ssize_t)sizeof v2_seed) {
        v2_seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&v2_seed; /* no entropy yet */
    }
    return PyModuleDef_Init(&definition);
}
