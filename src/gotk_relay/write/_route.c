/* Routing a remote-write 1.0 request on its bytes: relabel rules, shards and tenants.
 *
 * The relay's per-destination work (write_relabel_configs, global relabel_configs, the shard a
 * series goes to, the tenant it belongs to) used to decode every series into Python objects and
 * encode it again, an object per label and sample where this copies bytes (figures:
 * docs/performance.md). Here each series is walked once: its label spans are read in place,
 * the rules run over a small builder that mirrors labels.Builder (routing.py's reference,
 * rules/relabel.py), and the series is copied as it came when nothing changed it,
 * or re-encoded with its new labels and its other fields (samples, exemplars, histograms)
 * copied as they came.
 *
 * Every string function a rule needs (a regex match, a replacement, hashmod's md5, Go's case
 * mappings) is called back in Python, through a memo per rule (a hash table kept here, in a
 * capsule the router holds): label values and names repeat from series to series and from
 * request to request, so a steady stream costs one lookup by the value's bytes per rule per
 * series, with no Python object made (a dict keyed by bytes cost a bytes object and its
 * SipHash per lookup: a third of a drop-by-name walk). The memo holds the returned objects,
 * and the builder points into them, so a memo is only ever cleared between calls.
 *
 * The input has been validated (wire/_survey.c): the walk only needs framing checks, and it
 * refuses (ValueError) whatever it cannot frame.
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

enum {
    K_REPLACE = 0,
    K_KEEP = 1,
    K_DROP = 2,
    K_KEEPEQUAL = 3,
    K_DROPEQUAL = 4,
    K_HASHMOD = 5,
    K_LABELMAP = 6,
    K_LABELDROP = 7,
    K_LABELKEEP = 8,
    K_LOWERCASE = 9,
    K_UPPERCASE = 10,
};

#define MEMO_MAX 16384 /* entries a rule's memo keeps between calls (cleared when over) */

/* -- protobuf ------------------------------------------------------------------------------ */

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

static inline int
rd_len(Bytes d, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out)
{
    uint64_t value;
    if (!rd_varint(d, pos, end, &value) || value > (uint64_t)(end - *pos)) {
        return 0;
    }
    *out = (Py_ssize_t)value;
    return 1;
}

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
    case 2:
        if (!rd_len(d, pos, end, &length)) {
            return 0;
        }
        *pos += length;
        return 1;
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

/* -- growable output buffers --------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    long long points;
    long long newest;
    Py_ssize_t series;
    /* Compressed as it fills (route's ``compress``): the snappy elements of the fragments
     * taken off the front of ``data``, and how many bytes they held. */
    unsigned char *z;
    Py_ssize_t zlen, zcap, base;
} Buf;

static int
buf_grow(Buf *b, Py_ssize_t more)
{
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) {
        cap *= 2;
    }
    unsigned char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->data = data;
    b->cap = cap;
    return 1;
}

/* Room for ``more`` bytes: the check inline, the growth not. */
static inline int
buf_reserve(Buf *b, Py_ssize_t more)
{
    return b->len + more <= b->cap || buf_grow(b, more);
}

/* Snappy compresses each 64 KiB fragment of its input on its own (libsnappy and cramjam, as
 * delivery/entry.py's compress_chunks relies on): an output compressed a fragment at a time,
 * while the fragment is still in cache, is the block compress() makes of the whole. */
#define FRAGMENT 65536

/* ``n`` bytes at ``p`` compressed by ``compress`` (a snappy block), its elements appended to
 * b->z (its length preamble left out). */
static int
buf_compress(Buf *b, const unsigned char *p, Py_ssize_t n, PyObject *compress)
{
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (view == NULL) {
        return 0;
    }
    PyObject *block = PyObject_CallOneArg(compress, view);
    Py_DECREF(view);
    if (block == NULL) {
        return 0;
    }
    if (!PyBytes_Check(block)) {
        Py_DECREF(block);
        PyErr_SetString(PyExc_TypeError, "compress must return bytes");
        return 0;
    }
    Bytes c = (Bytes)PyBytes_AS_STRING(block);
    Py_ssize_t cl = PyBytes_GET_SIZE(block), at = 0;
    while (at < cl && (c[at] & 0x80)) {
        at++;
    }
    at++; /* past the length preamble */
    if (at > cl) {
        Py_DECREF(block);
        PyErr_SetString(PyExc_ValueError, "compress returned a broken block");
        return 0;
    }
    if (b->zlen + (cl - at) > b->zcap) {
        Py_ssize_t cap = b->zcap ? b->zcap : 16384;
        while (cap < b->zlen + (cl - at)) {
            cap *= 2;
        }
        unsigned char *z = PyMem_Realloc(b->z, (size_t)cap);
        if (z == NULL) {
            Py_DECREF(block);
            PyErr_NoMemory();
            return 0;
        }
        b->z = z;
        b->zcap = cap;
    }
    memcpy(b->z + b->zlen, c + at, (size_t)(cl - at));
    b->zlen += cl - at;
    Py_DECREF(block);
    return 1;
}

/* Every whole fragment at the front of ``data`` compressed and taken off. */
static int
buf_stream(Buf *b, PyObject *compress)
{
    Py_ssize_t at = 0;
    while (b->len - at >= FRAGMENT) {
        if (!buf_compress(b, b->data + at, FRAGMENT, compress)) {
            return 0;
        }
        at += FRAGMENT;
    }
    if (at) {
        memmove(b->data, b->data + at, (size_t)(b->len - at));
        b->len -= at;
        b->base += at;
    }
    return 1;
}

/* The whole output as one snappy block: its total length, then every fragment's elements. */
static PyObject *
buf_block(Buf *b, PyObject *compress)
{
    if (!buf_stream(b, compress) || (b->len && !buf_compress(b, b->data, b->len, compress))) {
        return NULL;
    }
    uint64_t total = (uint64_t)(b->base + b->len);
    unsigned char preamble[10];
    int n = 0;
    while (total >= 0x80) {
        preamble[n++] = (unsigned char)(total | 0x80);
        total >>= 7;
    }
    preamble[n++] = (unsigned char)total;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + b->zlen);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), preamble, (size_t)n);
        if (b->zlen) {
            memcpy(PyBytes_AS_STRING(out) + n, b->z, (size_t)b->zlen);
        }
    }
    return out;
}

static inline __attribute__((always_inline)) void
put_varint(Buf *b, uint64_t v)
{
    while (v >= 0x80) {
        b->data[b->len++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (unsigned char)v;
}

static inline __attribute__((always_inline)) void
put(Buf *b, const void *src, Py_ssize_t n)
{
    if (n <= 0) {
        return;
    }
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
}

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

/* The encoded size of a Label message (proto3: empty strings are left out). */
static Py_ssize_t
label_size_of(Py_ssize_t nl, Py_ssize_t vl)
{
    return (nl ? 1 + varint_size((uint64_t)nl) + nl : 0) + (vl ? 1 + varint_size((uint64_t)vl) + vl : 0);
}

/* -- the label builder (labels.Builder, as rules/relabel.py's _Builder) --------------------- */

typedef struct {
    const char *n;
    Py_ssize_t nl;
    const char *v;
    Py_ssize_t vl;
    Py_ssize_t rs, re; /* a received label's record (key to end) in the request; else 0, 0 */
} Lab;

/* A label copied field by field: a struct assignment of this size compiles to ``rep movs``
 * here, whose start-up cost is most of a snapshot's time. */
static inline void
lab_copy(Lab *dst, const Lab *src)
{
    dst->n = src->n;
    dst->nl = src->nl;
    dst->v = src->v;
    dst->vl = src->vl;
    dst->rs = src->rs;
    dst->re = src->re;
}

typedef struct {
    Lab *base;
    char *deleted; /* per base label */
    Py_ssize_t nbase;
    Lab *add; /* in insertion order, names unique */
    Py_ssize_t nadd, capadd;
    int any_deleted;
} Builder;

static inline int
same(const char *a, Py_ssize_t al, const char *b, Py_ssize_t bl)
{
    /* Most names differ in length or in their first byte: no call for those. */
    return al == bl && (al == 0 || (a[0] == b[0] && memcmp(a, b, (size_t)al) == 0));
}

static void
bld_get(Builder *lb, const char *n, Py_ssize_t nl, const char **v, Py_ssize_t *vl)
{
    for (Py_ssize_t i = 0; i < lb->nadd; i++) {
        if (same(lb->add[i].n, lb->add[i].nl, n, nl)) {
            *v = lb->add[i].v;
            *vl = lb->add[i].vl;
            return;
        }
    }
    for (Py_ssize_t i = 0; i < lb->nbase; i++) {
        if (same(lb->base[i].n, lb->base[i].nl, n, nl)) {
            if (lb->deleted[i]) {
                break;
            }
            *v = lb->base[i].v;
            *vl = lb->base[i].vl;
            return;
        }
    }
    *v = "";
    *vl = 0;
}

static void
bld_delete(Builder *lb, const char *n, Py_ssize_t nl)
{
    for (Py_ssize_t i = 0; i < lb->nadd; i++) {
        if (same(lb->add[i].n, lb->add[i].nl, n, nl)) {
            memmove(&lb->add[i], &lb->add[i + 1], (size_t)(lb->nadd - i - 1) * sizeof(Lab));
            lb->nadd--;
            break;
        }
    }
    for (Py_ssize_t i = 0; i < lb->nbase; i++) {
        if (same(lb->base[i].n, lb->base[i].nl, n, nl)) {
            if (!lb->deleted[i]) {
                lb->deleted[i] = 1;
            }
            break;
        }
    }
    /* A name deleted that the base lacks changes nothing visible, but Python's _Builder
     * then differs from its base: the label set is re-sorted (it already is), and counted as
     * changed. Mirror that so "unchanged" means the same thing on both sides. */
    lb->any_deleted = 1;
}

static int
bld_set(Builder *lb, const char *n, Py_ssize_t nl, const char *v, Py_ssize_t vl)
{
    if (vl == 0) {
        bld_delete(lb, n, nl);
        return 1;
    }
    for (Py_ssize_t i = 0; i < lb->nadd; i++) {
        if (same(lb->add[i].n, lb->add[i].nl, n, nl)) {
            lb->add[i].v = v;
            lb->add[i].vl = vl;
            return 1;
        }
    }
    if (lb->nadd == lb->capadd) {
        Py_ssize_t cap = lb->capadd ? lb->capadd * 2 : 8;
        Lab *add = PyMem_Realloc(lb->add, (size_t)cap * sizeof(Lab));
        if (add == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        lb->add = add;
        lb->capadd = cap;
    }
    lb->add[lb->nadd++] = (Lab){n, nl, v, vl, 0, 0};
    return 1;
}

/* The snapshot: base labels neither deleted nor overridden, then the additions in order. */
static Py_ssize_t
bld_snapshot(Builder *lb, Lab *out)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < lb->nbase; i++) {
        if (lb->deleted[i]) {
            continue;
        }
        int overridden = 0;
        for (Py_ssize_t j = 0; j < lb->nadd; j++) {
            if (same(lb->add[j].n, lb->add[j].nl, lb->base[i].n, lb->base[i].nl)) {
                overridden = 1;
                break;
            }
        }
        if (!overridden) {
            lab_copy(&out[k++], &lb->base[i]);
        }
    }
    for (Py_ssize_t j = 0; j < lb->nadd; j++) {
        lab_copy(&out[k++], &lb->add[j]);
    }
    return k;
}

static inline Py_ssize_t
label_size(const Lab *l)
{
    return label_size_of(l->nl, l->vl);
}

/* Two names in Go's string order (bytes, then length). */
static inline int
name_cmp(const Lab *x, const Lab *y)
{
    if (x->nl && y->nl && x->n[0] != y->n[0]) {
        return (unsigned char)x->n[0] < (unsigned char)y->n[0] ? -1 : 1;
    }
    Py_ssize_t n = x->nl < y->nl ? x->nl : y->nl;
    int c = n > 0 ? memcmp(x->n, y->n, (size_t)n) : 0;
    if (c) {
        return c;
    }
    return x->nl < y->nl ? -1 : (x->nl > y->nl);
}

/* Labels by name, then value (a label set's order; qsort's comparator). */
static int
lab_cmp(const void *a, const void *b)
{
    const Lab *x = a, *y = b;
    int c = name_cmp(x, y);
    if (c) {
        return c;
    }
    Py_ssize_t n = x->vl < y->vl ? x->vl : y->vl;
    c = n > 0 ? memcmp(x->v, y->v, (size_t)n) : 0;
    if (c) {
        return c;
    }
    return x->vl < y->vl ? -1 : (x->vl > y->vl);
}

#define MERGED_ADDS 8

/* The snapshot sorted by name. The base labels came sorted (the survey sorts them), so only
 * the additions, usually one or two, are put in place: merged into the base as it is copied
 * when the base is known sorted with unique names (strict validation), by insertion after a
 * check otherwise. Names are unique in a snapshot, so the order by name is the order. */
static Py_ssize_t
sorted_snapshot(Builder *lb, Lab *out, int presorted)
{
    if (presorted && lb->nadd <= MERGED_ADDS) {
        Lab adds[MERGED_ADDS];
        Py_ssize_t nadd = lb->nadd, k = 0, j = 0;
        for (Py_ssize_t i = 0; i < nadd; i++) {
            Lab item;
            lab_copy(&item, &lb->add[i]);
            Py_ssize_t at = i;
            while (at > 0 && name_cmp(&adds[at - 1], &item) > 0) {
                lab_copy(&adds[at], &adds[at - 1]);
                at--;
            }
            lab_copy(&adds[at], &item);
        }
        for (Py_ssize_t i = 0; i < lb->nbase; i++) {
            if (lb->deleted[i]) {
                continue;
            }
            int c = 1;
            while (j < nadd && (c = name_cmp(&adds[j], &lb->base[i])) < 0) {
                lab_copy(&out[k++], &adds[j++]);
            }
            if (j < nadd && c == 0) { /* overridden by the rules */
                lab_copy(&out[k++], &adds[j++]);
                continue;
            }
            lab_copy(&out[k++], &lb->base[i]);
        }
        while (j < nadd) {
            lab_copy(&out[k++], &adds[j++]);
        }
        return k;
    }
    Py_ssize_t n = bld_snapshot(lb, out);
    Py_ssize_t kept = n - lb->nadd; /* out[0:kept]: base labels, in order */
    int base_sorted = 1;
    Py_ssize_t check = presorted ? 0 : kept; /* known sorted (strict validation): no check */
    for (Py_ssize_t i = 1; i < check && base_sorted; i++) {
        base_sorted = lab_cmp(&out[i - 1], &out[i]) < 0;
    }
    if (!base_sorted) {
        qsort(out, (size_t)n, sizeof(Lab), lab_cmp);
        return n;
    }
    for (Py_ssize_t i = kept; i < n; i++) {
        Lab item;
        lab_copy(&item, &out[i]);
        Py_ssize_t j = i;
        while (j > 0 && lab_cmp(&out[j - 1], &item) > 0) {
            lab_copy(&out[j], &out[j - 1]);
            j--;
        }
        lab_copy(&out[j], &item);
    }
    return n;
}

/* -- rules --------------------------------------------------------------------------------- */

/* -- memos: the string functions' results by the bytes they were called with ----------- */

typedef struct {
    uint64_t hash;
    char *key; /* a copy (PyMem), NULL in an empty slot */
    Py_ssize_t keyl;
    PyObject *value; /* owned */
} Slot;

typedef struct {
    Slot *slots;
    Py_ssize_t cap, n; /* cap: a power of two, or 0 */
} Memo;

#define MEMO_CAPSULE "gotk_relay.write._route.memo"
/* A lookup probes at most this many slots (memo_get and memo_grow keep every value within
 * them); 0, set by tests, memoizes nothing. */
static int memo_probes = 32;

/* Seeded at import: which values collide cannot be chosen from outside (a request's labels are
 * anyone's input), and a run of collisions ends at memo_probes anyway. */
static uint64_t memo_seed;

static inline uint64_t
memo_hash(const char *key, Py_ssize_t n)
{
    return seeded_hash(memo_seed, (const unsigned char *)key, n);
}

static void
memo_clear(Memo *m)
{
    for (Py_ssize_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key != NULL) {
            PyMem_Free(m->slots[i].key);
            Py_DECREF(m->slots[i].value);
            m->slots[i].key = NULL;
        }
    }
    m->n = 0;
}

static void
memo_destroy(PyObject *capsule)
{
    Memo *m = PyCapsule_GetPointer(capsule, MEMO_CAPSULE);
    if (m != NULL) {
        memo_clear(m);
        PyMem_Free(m->slots);
        PyMem_Free(m);
    }
}

static PyObject *
memo_new(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Memo *m = PyMem_Calloc(1, sizeof(Memo));
    if (m == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *capsule = PyCapsule_New(m, MEMO_CAPSULE, memo_destroy);
    if (capsule == NULL) {
        PyMem_Free(m);
    }
    return capsule;
}

static PyObject *
set_memo_probes(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    memo_probes = n < 0 ? 0 : (int)n;
    Py_RETURN_NONE;
}

static PyObject *
memo_size(PyObject *self, PyObject *capsule)
{
    (void)self;
    Memo *m = PyCapsule_GetPointer(capsule, MEMO_CAPSULE);
    return m == NULL ? NULL : PyLong_FromSsize_t(m->n);
}

/* At least twice the room (load kept at most 1/2), every entry within memo_probes of its
 * hash's slot (as memo_get looks): a table where some entry would land further is doubled
 * again, up to 64 slots an entry; past that (a broken hash) the rest are placed wherever they
 * fit, out of the lookups' reach. Entries keep their objects, so the builder's pointers into
 * them stay valid. */
static int
memo_grow(Memo *m)
{
    Py_ssize_t cap = m->cap ? m->cap * 2 : 64;
    for (;;) {
        int limit = cap >= 64 * (m->n + 1) ? INT_MAX : memo_probes;
        Slot *slots = PyMem_Calloc((size_t)cap, sizeof(Slot));
        if (slots == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        int placed = 1;
        for (Py_ssize_t i = 0; i < m->cap && placed; i++) {
            Slot *old = &m->slots[i];
            if (old->key == NULL) {
                continue;
            }
            Py_ssize_t j = (Py_ssize_t)(old->hash & (uint64_t)(cap - 1));
            for (int probe = 0; slots[j].key != NULL && probe < limit; probe++) {
                j = (j + 1) & (cap - 1);
            }
            if (slots[j].key != NULL) {
                placed = 0;
            }
            else {
                slots[j] = *old;
            }
        }
        if (placed) {
            PyMem_Free(m->slots);
            m->slots = slots;
            m->cap = cap;
            return 1;
        }
        PyMem_Free(slots); /* the slots were only copied: nothing to release */
        cap *= 2;
    }
}

typedef struct {
    int kind;
    PyObject *sources; /* tuple of bytes */
    const char *sep;
    Py_ssize_t sepl;
    const char *target;
    Py_ssize_t targetl;
    Memo *memo;
    PyObject *fn;      /* callable(bytes) -> the memo's value */
    PyObject **spill;  /* values found uncached this call, kept alive until it ends (a list) */
    PyObject *literal; /* keep/drop: (exact values, prefixes) the regex is, or NULL */
} Rule;

/* Whether ``v`` is one of the literal form's values or starts with one of its prefixes:
 * what the anchored regex ``a|b.*|...`` answers (routing.literal_form). */
static inline int
literal_match(PyObject *literal, const char *v, Py_ssize_t vl)
{
    PyObject *exact = PyTuple_GET_ITEM(literal, 0), *prefixes = PyTuple_GET_ITEM(literal, 1);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(exact); i++) {
        PyObject *e = PyTuple_GET_ITEM(exact, i);
        if (PyBytes_GET_SIZE(e) == vl && memcmp(PyBytes_AS_STRING(e), v, (size_t)vl) == 0) {
            return 1;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        PyObject *p = PyTuple_GET_ITEM(prefixes, i);
        if (PyBytes_GET_SIZE(p) <= vl &&
            memcmp(PyBytes_AS_STRING(p), v, (size_t)PyBytes_GET_SIZE(p)) == 0) {
            return 1;
        }
    }
    return 0;
}

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Scratch;

/* The memo's value for ``key`` (borrowed, alive until the call ends), computing and storing
 * it on a miss. */
static PyObject *
memo_get(Rule *r, const char *key, Py_ssize_t keyl)
{
    Memo *m = r->memo;
    uint64_t h = memo_hash(key, keyl);
    Py_ssize_t i = 0, probes = 0;
    if (m->cap) {
        i = (Py_ssize_t)(h & (uint64_t)(m->cap - 1));
        for (; probes < memo_probes; probes++) {
            Slot *sl = &m->slots[i];
            if (sl->key == NULL) {
                break;
            }
            if (sl->hash == h && sl->keyl == keyl && memcmp(sl->key, key, (size_t)keyl) == 0) {
                return sl->value;
            }
            i = (i + 1) & (m->cap - 1);
        }
    }
    PyObject *k = PyBytes_FromStringAndSize(key, keyl);
    if (k == NULL) {
        return NULL;
    }
    PyObject *value = PyObject_CallOneArg(r->fn, k);
    Py_DECREF(k);
    if (value == NULL) {
        return NULL;
    }
    /* A value whose run of slots is full for memo_probes doubles the table (the runs
     * shorten) rather than being left out: one left out was computed again at every lookup
     * (with 60,000 values one request in two left some out at half load). Past 32 slots an
     * entry it stays out: 32 seeded hashes alike in their low bits is a broken hash. */
    if (memo_probes > 0 && 2 * (m->n + 1) > m->cap && !memo_grow(m)) {
        Py_DECREF(value);
        return NULL;
    }
    probes = memo_probes;
    while (memo_probes > 0) {
        i = (Py_ssize_t)(h & (uint64_t)(m->cap - 1));
        for (probes = 0; probes < memo_probes && m->slots[i].key != NULL; probes++) {
            i = (i + 1) & (m->cap - 1);
        }
        if (probes < memo_probes || m->cap >= 32 * (m->n + 1)) {
            break;
        }
        if (!memo_grow(m)) {
            Py_DECREF(value);
            return NULL;
        }
    }
    if (probes >= memo_probes) {
        /* No slot near (or memo_probes is 0): kept for this call only. */
        if (*r->spill == NULL && (*r->spill = PyList_New(0)) == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        int failed = PyList_Append(*r->spill, value);
        Py_DECREF(value);
        return failed ? NULL : value;
    }
    char *copy = PyMem_Malloc((size_t)(keyl ? keyl : 1));
    if (copy == NULL) {
        Py_DECREF(value);
        return PyErr_NoMemory();
    }
    memcpy(copy, key, (size_t)keyl);
    m->slots[i] = (Slot){h, copy, keyl, value}; /* the memo owns the value */
    m->n++;
    return value;
}

/* The rule's source value: the source labels' values joined by its separator. */
static int
source_value(Rule *r, Builder *lb, Scratch *s, const char **out, Py_ssize_t *outl)
{
    Py_ssize_t n = PyTuple_GET_SIZE(r->sources);
    if (n == 1) {
        PyObject *name = PyTuple_GET_ITEM(r->sources, 0);
        bld_get(lb, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), out, outl);
        return 1;
    }
    s->len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(r->sources, i);
        const char *v;
        Py_ssize_t vl;
        bld_get(lb, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), &v, &vl);
        Py_ssize_t need = s->len + vl + (i ? r->sepl : 0);
        if (need > s->cap) {
            Py_ssize_t cap = s->cap ? s->cap : 256;
            while (cap < need) {
                cap *= 2;
            }
            char *data = PyMem_Realloc(s->data, (size_t)cap);
            if (data == NULL) {
                PyErr_NoMemory();
                return 0;
            }
            s->data = data;
            s->cap = cap;
        }
        if (i && r->sepl) {
            memcpy(s->data + s->len, r->sep, (size_t)r->sepl);
            s->len += r->sepl;
        }
        if (vl) {
            memcpy(s->data + s->len, v, (size_t)vl);
            s->len += vl;
        }
    }
    *out = s->data ? s->data : "";
    *outl = s->len;
    return 1;
}

/* One rule; 1 keeps the series, 0 drops it, -1 is an error. ``snap`` holds room for every
 * label the builder can have. */
static int
run_rule(Rule *r, Builder *lb, Scratch *s, Lab *snap)
{
    const char *v;
    Py_ssize_t vl;
    PyObject *res;
    switch (r->kind) {
    case K_KEEP:
    case K_DROP:
        if (!source_value(r, lb, s, &v, &vl)) {
            return -1;
        }
        if (r->literal != NULL) {
            return literal_match(r->literal, v, vl) == (r->kind == K_KEEP);
        }
        if ((res = memo_get(r, v, vl)) == NULL) {
            return -1;
        }
        return (res == Py_True) == (r->kind == K_KEEP);
    case K_KEEPEQUAL:
    case K_DROPEQUAL: {
        if (!source_value(r, lb, s, &v, &vl)) {
            return -1;
        }
        const char *t;
        Py_ssize_t tl;
        bld_get(lb, r->target, r->targetl, &t, &tl);
        return same(t, tl, v, vl) == (r->kind == K_KEEPEQUAL);
    }
    case K_REPLACE:
        if (!source_value(r, lb, s, &v, &vl) || (res = memo_get(r, v, vl)) == NULL) {
            return -1;
        }
        if (res != Py_None) { /* (target, value) */
            PyObject *t = PyTuple_GET_ITEM(res, 0), *nv = PyTuple_GET_ITEM(res, 1);
            if (!bld_set(lb, PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t), PyBytes_AS_STRING(nv),
                         PyBytes_GET_SIZE(nv))) {
                return -1;
            }
        }
        return 1;
    case K_HASHMOD:
    case K_LOWERCASE:
    case K_UPPERCASE:
        if (!source_value(r, lb, s, &v, &vl) || (res = memo_get(r, v, vl)) == NULL) {
            return -1;
        }
        if (!bld_set(lb, r->target, r->targetl, PyBytes_AS_STRING(res), PyBytes_GET_SIZE(res))) {
            return -1;
        }
        return 1;
    case K_LABELMAP: {
        Py_ssize_t n = bld_snapshot(lb, snap);
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((res = memo_get(r, snap[i].n, snap[i].nl)) == NULL) {
                return -1;
            }
            if (res != Py_None &&
                !bld_set(lb, PyBytes_AS_STRING(res), PyBytes_GET_SIZE(res), snap[i].v,
                         snap[i].vl)) {
                return -1;
            }
        }
        return 1;
    }
    case K_LABELDROP:
    case K_LABELKEEP: {
        Py_ssize_t n = bld_snapshot(lb, snap);
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((res = memo_get(r, snap[i].n, snap[i].nl)) == NULL) {
                return -1;
            }
            if ((res == Py_True) != (r->kind == K_LABELKEEP)) {
                bld_delete(lb, snap[i].n, snap[i].nl);
            }
        }
        return 1;
    }
    default:
        PyErr_SetString(PyExc_ValueError, "unknown rule kind");
        return -1;
    }
}

/* -- shard key: zlib's CRC-32, as delivery/queue.py's shard_key ---------------------------- */

/* Slicing-by-8: eight table lookups per 8 bytes instead of one per byte (label sets are
 * hundreds of bytes, hashed once per series per sharded destination). */
static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc_table[t - 1][i];
            crc_table[t][i] = crc_table[0][prev & 0xFF] ^ (prev >> 8);
        }
    }
}

/* The table walk on a CRC register (no pre- or post-inversion). */
static inline uint32_t
crc32_tables(uint32_t crc, const unsigned char *b, Py_ssize_t n)
{
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24);
        uint32_t hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                      (uint32_t)b[7] << 24;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
              crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        b += 8;
        n -= 8;
    }
    while (n-- > 0) {
        crc = crc_table[0][(crc ^ *b++) & 0xFF] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CLMUL_CODE 1

/* Carry-less multiplication folds 64 bytes at a time (Intel's "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ", with the reflected constants of zlib's polynomial as
 * Linux's crc32-pclmul uses them): several times the tables' speed on a label set of a few
 * hundred bytes. ``n`` is a multiple of 16, at least 64; ``crc`` a register as above. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc32_clmul(uint32_t crc, const unsigned char *b, Py_ssize_t n)
{
    const __m128i r2r1 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
    const __m128i r4r3 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    const __m128i r5 = _mm_set_epi64x(0, 0x163cd6124LL);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    const __m128i poly = _mm_set_epi64x(0x1F7011641LL, 0x1DB710641LL);
    __m128i x1 = _mm_loadu_si128((const __m128i *)b);
    __m128i x2 = _mm_loadu_si128((const __m128i *)(b + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(b + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(b + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    b += 64;
    n -= 64;
    while (n >= 64) {
        __m128i h1 = _mm_clmulepi64_si128(x1, r2r1, 0x11);
        __m128i h2 = _mm_clmulepi64_si128(x2, r2r1, 0x11);
        __m128i h3 = _mm_clmulepi64_si128(x3, r2r1, 0x11);
        __m128i h4 = _mm_clmulepi64_si128(x4, r2r1, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, r2r1, 0x00), h1),
                           _mm_loadu_si128((const __m128i *)b));
        x2 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x2, r2r1, 0x00), h2),
                           _mm_loadu_si128((const __m128i *)(b + 16)));
        x3 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x3, r2r1, 0x00), h3),
                           _mm_loadu_si128((const __m128i *)(b + 32)));
        x4 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x4, r2r1, 0x00), h4),
                           _mm_loadu_si128((const __m128i *)(b + 48)));
        b += 64;
        n -= 64;
    }
    /* Four lanes into one. */
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, r4r3, 0x00),
                                     _mm_clmulepi64_si128(x1, r4r3, 0x11)),
                       x2);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, r4r3, 0x00),
                                     _mm_clmulepi64_si128(x1, r4r3, 0x11)),
                       x3);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, r4r3, 0x00),
                                     _mm_clmulepi64_si128(x1, r4r3, 0x11)),
                       x4);
    while (n >= 16) {
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, r4r3, 0x00),
                                         _mm_clmulepi64_si128(x1, r4r3, 0x11)),
                           _mm_loadu_si128((const __m128i *)b));
        b += 16;
        n -= 16;
    }
    /* 128 bits to 64, then 64 to 32 (Barrett). */
    __m128i t = _mm_clmulepi64_si128(r4r3, x1, 0x01);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), t);
    __m128i x2b = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, mask32);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(x1, r5, 0x00), x2b);
    __m128i keep = x1;
    x1 = _mm_and_si128(x1, mask32);
    x1 = _mm_clmulepi64_si128(x1, poly, 0x10);
    x1 = _mm_and_si128(x1, mask32);
    x1 = _mm_clmulepi64_si128(x1, poly, 0x00);
    x1 = _mm_xor_si128(x1, keep);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

static int have_clmul = 0;

/* zlib's crc32(): ``crc`` is a previous result (0 to start). */
static inline uint32_t
crc32_update(uint32_t crc, const char *p, Py_ssize_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    crc = ~crc;
#ifdef HAVE_CLMUL_CODE
    if (have_clmul && n >= 64) {
        Py_ssize_t bulk = n & ~(Py_ssize_t)15;
        crc = crc32_clmul(crc, b, bulk);
        b += bulk;
        n -= bulk;
    }
#endif
    return ~crc32_tables(crc, b, n);
}

/* ``n`` bytes copied without a call for the short strings label names and values mostly are
 * (fixed-size copies compile to moves; the two may overlap). */
static inline void
copy_short(char *dst, const char *src, Py_ssize_t n)
{
    if (n >= 8 && n <= 16) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    }
    else if (n >= 4 && n < 8) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    }
    else if (n > 0 && n < 4) {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
    else if (n > 16) {
        memcpy(dst, src, (size_t)n);
    }
}

static uint32_t
shard_key(const Lab *labels, Py_ssize_t n)
{
    /* CRC-32 streams: crc32(value, crc32(name, crc)) is the CRC of name and value one after
     * the other, so the pairs are gathered and hashed in one pass (short strings one by one
     * would spend their time in the byte-at-a-time tail). */
    static const char *parts[] = {"_bucket", "_count", "_sum"};
    static const Py_ssize_t part_lengths[] = {7, 6, 4};
    char stack[4096];
    Py_ssize_t used = 0;
    uint32_t crc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Lab *l = &labels[i];
        if (same(l->n, l->nl, "le", 2) || same(l->n, l->nl, "quantile", 8)) {
            continue;
        }
        Py_ssize_t vl = l->vl;
        if (same(l->n, l->nl, "__name__", 8)) {
            for (int k = 0; k < 3; k++) {
                Py_ssize_t pl = part_lengths[k];
                if (vl >= pl && memcmp(l->v + vl - pl, parts[k], (size_t)pl) == 0) {
                    vl -= pl;
                    break;
                }
            }
        }
        if (used + l->nl + vl > (Py_ssize_t)sizeof(stack)) {
            crc = crc32_update(crc, stack, used);
            used = 0;
            if (l->nl + vl > (Py_ssize_t)sizeof(stack)) {
                crc = crc32_update(crc32_update(crc, l->n, l->nl), l->v, vl);
                continue;
            }
        }
        copy_short(stack + used, l->n, l->nl);
        used += l->nl;
        copy_short(stack + used, l->v, vl);
        used += vl;
    }
    return crc32_update(crc, stack, used);
}

static void
frame_error_set(void)
{
    PyErr_SetString(PyExc_ValueError, "the request cannot be framed");
}

/* -- groups: one output per (tenant, shard) ------------------------------------------------ */

typedef struct {
    PyObject *tenant; /* bytes (b"" without tenant routing) */
    Buf *shards;
} Group;

typedef struct {
    Group *items;
    Py_ssize_t n, cap;
    Py_ssize_t nshards;
    PyObject *index; /* tenant bytes -> position, with tenant routing */
} Groups;

static Group *
group_for(Groups *g, const char *t, Py_ssize_t tl)
{
    PyObject *key = PyBytes_FromStringAndSize(t, tl);
    if (key == NULL) {
        return NULL;
    }
    PyObject *pos = PyDict_GetItemWithError(g->index, key);
    if (pos != NULL) {
        Py_DECREF(key);
        return &g->items[PyLong_AsSsize_t(pos)];
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    if (g->n == g->cap) {
        Py_ssize_t cap = g->cap ? g->cap * 2 : 4;
        Group *items = PyMem_Realloc(g->items, (size_t)cap * sizeof(Group));
        if (items == NULL) {
            Py_DECREF(key);
            PyErr_NoMemory();
            return NULL;
        }
        g->items = items;
        g->cap = cap;
    }
    Buf *shards = PyMem_Calloc((size_t)g->nshards, sizeof(Buf));
    PyObject *at = PyLong_FromSsize_t(g->n);
    if (shards == NULL || at == NULL || PyDict_SetItem(g->index, key, at) < 0) {
        PyMem_Free(shards);
        Py_XDECREF(at);
        Py_DECREF(key);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return NULL;
    }
    Py_DECREF(at);
    for (Py_ssize_t i = 0; i < g->nshards; i++) {
        shards[i].newest = 0;
    }
    g->items[g->n] = (Group){key, shards};
    return &g->items[g->n++];
}

static void
groups_free(Groups *g)
{
    for (Py_ssize_t i = 0; i < g->n; i++) {
        for (Py_ssize_t k = 0; k < g->nshards; k++) {
            PyMem_Free(g->items[i].shards[k].data);
            PyMem_Free(g->items[i].shards[k].z);
        }
        PyMem_Free(g->items[i].shards);
        Py_DECREF(g->items[i].tenant);
    }
    PyMem_Free(g->items);
    Py_XDECREF(g->index);
}

/* -- one series ---------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t start, end;
} Span;

/* One more span at the end of a growable array. */
static int
spans_add(Span **spans, Py_ssize_t *n, Py_ssize_t *cap, Py_ssize_t start, Py_ssize_t end)
{
    if (*n == *cap) {
        Py_ssize_t more = *cap ? *cap * 2 : 8;
        Span *grown = PyMem_Realloc(*spans, (size_t)more * sizeof(Span));
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        *spans = grown;
        *cap = more;
    }
    (*spans)[(*n)++] = (Span){start, end};
    return 1;
}

typedef struct {
    Lab *base;
    char *deleted;
    Lab *snap;
    Py_ssize_t cap;     /* of base, deleted */
    Py_ssize_t snapcap; /* of snap */
    Span *rest;     /* the series' other fields, in order */
    Py_ssize_t nrest, caprest;
} Work;

static int
work_labels_grow(Work *w, Py_ssize_t n)
{
    Py_ssize_t cap = w->cap ? w->cap : 32;
    while (cap < n) {
        cap *= 2;
    }
    Lab *base = PyMem_Realloc(w->base, (size_t)cap * sizeof(Lab));
    if (base) {
        w->base = base;
    }
    char *deleted = PyMem_Realloc(w->deleted, (size_t)cap);
    if (deleted) {
        w->deleted = deleted;
    }
    if (!base || !deleted) {
        PyErr_NoMemory();
        return 0;
    }
    w->cap = cap;
    return 1;
}

/* Room for ``n`` labels; the check inline, the growth (rare) not. */
static inline int
work_labels(Work *w, Py_ssize_t n)
{
    return n <= w->cap || work_labels_grow(w, n);
}

static int
work_snap_grow(Work *w, Py_ssize_t n)
{
    Py_ssize_t cap = w->snapcap ? w->snapcap : 32;
    while (cap < n) {
        cap *= 2;
    }
    Lab *snap = PyMem_Realloc(w->snap, (size_t)cap * sizeof(Lab));
    if (snap == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    w->snap = snap;
    w->snapcap = cap;
    return 1;
}

static inline int
work_snap(Work *w, Py_ssize_t n)
{
    return n <= w->snapcap || work_snap_grow(w, n);
}

static int
work_rest(Work *w, Py_ssize_t start, Py_ssize_t end)
{
    if (w->nrest && w->rest[w->nrest - 1].end == start) {
        w->rest[w->nrest - 1].end = end;
        return 1;
    }
    if (w->nrest == w->caprest) {
        Py_ssize_t cap = w->caprest ? w->caprest * 2 : 8;
        Span *rest = PyMem_Realloc(w->rest, (size_t)cap * sizeof(Span));
        if (rest == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        w->rest = rest;
        w->caprest = cap;
    }
    w->rest[w->nrest++] = (Span){start, end};
    return 1;
}

/* The fields of a series other than its labels, as spans, in order (for re-encoding it). */
static int
collect_rest(Work *w, Bytes d, Py_ssize_t pos, Py_ssize_t end)
{
    w->nrest = 0;
    while (pos < end) {
        Py_ssize_t start = pos;
        uint64_t key;
        if (!rd_varint(d, &pos, end, &key) || !skip(d, &pos, end, (int)(key & 7))) {
            frame_error_set();
            return 0;
        }
        if (!((key >> 3) == 1 && (key & 7) == 2) && !work_rest(w, start, pos)) {
            return 0;
        }
    }
    return 1;
}

/* The timestamp (field ``field``) of an encoded Sample or Histogram; 0 when absent. */
static long long
timestamp_of(Bytes d, Py_ssize_t pos, Py_ssize_t end, uint32_t field)
{
    long long ts = 0;
    if (field == 2 && end - pos >= 11 && d[pos] == 0x09 && d[pos + 9] == 0x10) {
        /* The usual Sample: its value, then its timestamp up to the end. */
        Py_ssize_t p = pos + 10;
        uint64_t v;
        if (rd_varint(d, &p, end, &v) && p == end) {
            return (long long)v;
        }
    }
    while (pos < end) {
        uint64_t key, v;
        if (!rd_varint(d, &pos, end, &key)) {
            return ts;
        }
        if ((uint32_t)(key >> 3) == field && (key & 7) == 0) {
            if (!rd_varint(d, &pos, end, &v)) {
                return ts;
            }
            ts = (long long)v;
        }
        else if (!skip(d, &pos, end, (int)(key & 7))) {
            return ts;
        }
    }
    return ts;
}

/* The timestamp of the last histogram of the series record at [start, end); 0 without one. */
static long long
last_histogram_ts(Bytes d, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t p = start, len, at = -1, at_len = 0;
    uint64_t key;
    if (!rd_varint(d, &p, end, &key) || !rd_len(d, &p, end, &len)) {
        return 0;
    }
    while (p < end) {
        if (!rd_varint(d, &p, end, &key)) {
            return 0;
        }
        if ((key & 7) == 2) {
            if (!rd_len(d, &p, end, &len)) {
                return 0;
            }
            if ((key >> 3) == 4) {
                at = p;
                at_len = len;
            }
            p += len;
        }
        else if (!skip(d, &p, end, (int)(key & 7))) {
            return 0;
        }
    }
    return at >= 0 ? timestamp_of(d, at, at + at_len, 15) : 0;
}

/* The survey's series table (wire/_survey.c): records of REC_FIELDS native uint32s. */
enum { REC_START, REC_END, REC_NAME, REC_NAME_LEN, REC_POINTS, REC_FLAGS, REC_TS_LOW,
       REC_TS_HIGH, REC_FIELDS };
#define TABLE_EMPTY 1
#define TABLE_HISTOGRAMS 2
#define TABLE_METADATA 4

/* Whether ``table`` describes ``size`` bytes of request in order with names inside their
 * series, and no series has an empty label value (which a rule would take out). */
static int
table_usable(const Py_buffer *table, Py_ssize_t size)
{
    if (table->len == 0 || table->len % (REC_FIELDS * (Py_ssize_t)sizeof(uint32_t)) != 0) {
        return 0;
    }
    Py_ssize_t n = table->len / (REC_FIELDS * (Py_ssize_t)sizeof(uint32_t)), previous = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t r[REC_FIELDS];
        memcpy(r, (const char *)table->buf + i * sizeof r, sizeof r);
        if (r[REC_START] < previous || r[REC_END] <= r[REC_START] || r[REC_END] > size ||
            (r[REC_FLAGS] & TABLE_EMPTY) ||
            (!(r[REC_FLAGS] & TABLE_METADATA) &&
             (r[REC_NAME] < r[REC_START] || (uint64_t)r[REC_NAME] + r[REC_NAME_LEN] > r[REC_END]))) {
            return 0;
        }
        previous = r[REC_END];
    }
    return 1;
}

static PyObject *
frame_error(void)
{
    PyErr_SetString(PyExc_ValueError, "the request cannot be framed");
    return NULL;
}

/* route(raw, rules, shards, tenant, default, keep_label) ->
 *     None when nothing changes (no rule changed or dropped a series, one shard, no tenant),
 *     else (groups, dropped_points, orphaned_points); groups: [(tenant, shard, body, points,
 *     newest_ms, series)] in (tenant, shard) order, empty ones left out. */
static PyObject *
route(PyObject *self, PyObject *args)
{
    Py_buffer raw;
    PyObject *rules_obj, *tenant_label, *tenant_default;
    Py_ssize_t nshards;
    int keep_label, presorted = 0;
    long long total = -1;
    Py_buffer table = {0};
    PyObject *compress = Py_None;
    if (!PyArg_ParseTuple(args, "y*O!nOOp|pLy*O", &raw, &PyTuple_Type, &rules_obj, &nshards,
                          &tenant_label, &tenant_default, &keep_label, &presorted, &total,
                          &table, &compress)) {
        return NULL;
    }
    if (compress == Py_None) {
        compress = NULL;
    }
    Bytes d = raw.buf;
    Py_ssize_t size = raw.len;
    PyObject *result = NULL;
    Py_ssize_t nrules = PyTuple_GET_SIZE(rules_obj);
    Rule *rules = PyMem_Calloc((size_t)(nrules ? nrules : 1), sizeof(Rule));
    Groups groups = {NULL, 0, 0, nshards < 1 ? 1 : nshards, PyDict_New()};
    Work w = {0};
    Builder lb = {0};
    Scratch s = {0};
    Span *meta = NULL;
    Py_ssize_t nmeta = 0, capmeta = 0;
    long long dropped = 0, orphaned = 0;
    PyObject *spill = NULL; /* see Rule.spill */
    int changed = 0;
    int tenants = tenant_label != Py_None;
    Group *single = NULL;
    Group *last_group = NULL;
    if (rules == NULL || groups.index == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nrules; i++) {
        PyObject *t = PyTuple_GET_ITEM(rules_obj, i);
        PyObject *sources, *sep, *target, *capsule, *fn, *literal = Py_None;
        if (!PyArg_ParseTuple(t, "iO!SSOO|O", &rules[i].kind, &PyTuple_Type, &sources, &sep,
                              &target, &capsule, &fn, &literal)) {
            goto done;
        }
        if (literal != Py_None) {
            int ok = PyTuple_Check(literal) && PyTuple_GET_SIZE(literal) == 2;
            for (int part = 0; ok && part < 2; part++) {
                PyObject *items = PyTuple_GET_ITEM(literal, part);
                ok = PyTuple_Check(items);
                for (Py_ssize_t k = 0; ok && k < PyTuple_GET_SIZE(items); k++) {
                    ok = PyBytes_Check(PyTuple_GET_ITEM(items, k));
                }
            }
            if (!ok) {
                PyErr_SetString(PyExc_TypeError, "a literal form is (exact, prefixes) of bytes");
                goto done;
            }
        }
        Memo *memo = PyCapsule_GetPointer(capsule, MEMO_CAPSULE);
        if (memo == NULL) {
            goto done;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(sources); k++) {
            if (!PyBytes_Check(PyTuple_GET_ITEM(sources, k))) {
                PyErr_SetString(PyExc_TypeError, "source labels must be bytes");
                goto done;
            }
        }
        if (memo->n > MEMO_MAX) {
            memo_clear(memo); /* bounded: a high-cardinality value costs misses, not memory */
        }
        rules[i] = (Rule){rules[i].kind,          sources, PyBytes_AS_STRING(sep),
                          PyBytes_GET_SIZE(sep),  PyBytes_AS_STRING(target),
                          PyBytes_GET_SIZE(target), memo, fn, &spill,
                          literal == Py_None ? NULL : literal};
    }
    /* Rules that only keep or drop by metric name need no other label: one is read. */
    int name_only = nrules > 0 && nshards <= 1 && !tenants;
    for (Py_ssize_t i = 0; i < nrules && name_only; i++) {
        PyObject *sources = rules[i].sources;
        name_only = (rules[i].kind == K_KEEP || rules[i].kind == K_DROP) &&
                    PyTuple_GET_SIZE(sources) == 1 &&
                    same(PyBytes_AS_STRING(PyTuple_GET_ITEM(sources, 0)),
                         PyBytes_GET_SIZE(PyTuple_GET_ITEM(sources, 0)), "__name__", 8);
    }
    /* With the request's points known, a series those rules drop is left as soon as its name
     * is read: what was dropped is what came less what was kept (a Datadog view keeping
     * gotk_.* reads one label of each other series, not all of them and their samples). */
    int early = name_only && total >= 0;
    if (tenants && (!PyBytes_Check(tenant_label) || !PyBytes_Check(tenant_default))) {
        PyErr_SetString(PyExc_TypeError, "the tenant label and default must be bytes");
        goto done;
    }
    if (!tenants) {
        single = group_for(&groups, "", 0);
        if (single == NULL) {
            goto done;
        }
    }

    /* With the survey's series table (rules on the name alone, strict input, the points
     * known): each series judged by the name the table points at, the kept ones copied in
     * runs of adjacent series, no label read (a Datadog view keeping gotk_.* of a request
     * then costs a memo lookup per series). */
    int tabled = early && presorted && table.buf != NULL && table_usable(&table, size);
    if (tabled) {
        Buf *out = &single->shards[0];
        Py_ssize_t n = table.len / (REC_FIELDS * (Py_ssize_t)sizeof(uint32_t));
        Py_ssize_t run_start = 0, run_end = 0;
        if (!work_labels(&w, 1) || !buf_reserve(out, 0)) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t r[REC_FIELDS];
            memcpy(r, (const char *)table.buf + i * sizeof r, sizeof r);
            if (r[REC_FLAGS] & TABLE_METADATA) {
                if (!spans_add(&meta, &nmeta, &capmeta, r[REC_START], r[REC_END])) {
                    goto done;
                }
                continue;
            }
            /* Each rule's memo by the name itself (what run_rule would look up). */
            int kept = r[REC_NAME_LEN] > 0;
            for (Py_ssize_t k = 0; k < nrules && kept; k++) {
                const char *name = (const char *)d + r[REC_NAME];
                if (rules[k].literal != NULL) {
                    kept = literal_match(rules[k].literal, name, r[REC_NAME_LEN]) ==
                           (rules[k].kind == K_KEEP);
                    continue;
                }
                PyObject *res = memo_get(&rules[k], name, r[REC_NAME_LEN]);
                if (res == NULL) {
                    goto done;
                }
                kept = (res == Py_True) == (rules[k].kind == K_KEEP);
            }
            if (!kept) {
                changed = 1;
                continue;
            }
            if (r[REC_START] != run_end) {
                if (!buf_reserve(out, run_end - run_start)) {
                    goto done;
                }
                put(out, d + run_start, run_end - run_start);
                run_start = r[REC_START];
                /* Compressed as it fills once a series was dropped (else it is not needed). */
                if (compress && changed && out->len >= FRAGMENT && !buf_stream(out, compress)) {
                    goto done;
                }
            }
            run_end = r[REC_END];
            long long newest =
                (long long)((uint64_t)r[REC_TS_LOW] | ((uint64_t)r[REC_TS_HIGH] << 32));
            if (r[REC_FLAGS] & TABLE_HISTOGRAMS) {
                long long ts = last_histogram_ts(d, r[REC_START], r[REC_END]);
                newest = ts > newest ? ts : newest;
            }
            out->points += r[REC_POINTS];
            out->series++;
            if (newest > out->newest) {
                out->newest = newest;
            }
        }
        if (!buf_reserve(out, run_end - run_start)) {
            goto done;
        }
        put(out, d + run_start, run_end - run_start);
    }

    Py_ssize_t pos = tabled ? size : 0;
    while (pos < size) {
        uint64_t key;
        Py_ssize_t record = pos; /* where the record's key starts */
        if (!rd_varint(d, &pos, size, &key)) {
            frame_error();
            goto done;
        }
        uint32_t field = (uint32_t)(key >> 3);
        int wire = (int)(key & 7);
        if (wire != 2 || (field != 1 && field != 3)) {
            /* An unknown field: left out of what is re-encoded, as a decode would; kept when
             * the request is forwarded unchanged. */
            if (!skip(d, &pos, size, wire)) {
                frame_error();
                goto done;
            }
            continue;
        }
        Py_ssize_t len;
        if (!rd_len(d, &pos, size, &len)) {
            frame_error();
            goto done;
        }
        Py_ssize_t body = pos, end = pos + len;
        pos = end;
        if (field == 3) {
            if (!spans_add(&meta, &nmeta, &capmeta, record, end)) {
                goto done;
            }
            continue;
        }
        /* A TimeSeries: its labels into the builder (only __name__ when the rules read
         * nothing else and nothing else needs labels); its points counted, the last sample
         * and histogram kept for the newest timestamp. */
        Py_ssize_t nlab = 0;
        long long points = 0;
        Py_ssize_t last_sample = -1, last_sample_len = 0, last_hist = -1, last_hist_len = 0;
        int named = 0;
        /* Reading only __name__ holds while every other label is seen to have a value (an
         * empty one is deleted by the builder, which changes the series): else read all. */
        int only_name = name_only;
        int dropped_early = 0;
        int kept_early; /* the rules kept it by its name: not run again */
        /* The series' other fields (samples, exemplars, histograms, unknown ones): usually
         * one span after the labels, from rest_at to the end; else (a label after one of
         * them) gathered again by collect_rest. */
        Py_ssize_t rest_at;
        int interleaved;
        int empty; /* some label's value is empty (the builder takes it out) */
    walk_series:;
        kept_early = 0;
        rest_at = -1;
        interleaved = 0;
        empty = 0;
        Py_ssize_t p = body;
        while (p < end) {
            Py_ssize_t fstart = p;
            uint64_t fkey;
            if (p < end && d[p] < 0x80) {
                fkey = d[p++];
            }
            else if (!rd_varint(d, &p, end, &fkey)) {
                frame_error();
                goto done;
            }
            uint32_t f = (uint32_t)(fkey >> 3);
            int fw = (int)(fkey & 7);
            if (fw == 2 && f >= 1 && f <= 4) {
                Py_ssize_t ll;
                if (p < end && d[p] < 0x80 && (Py_ssize_t)d[p] < end - p) {
                    ll = d[p++];
                }
                else if (!rd_len(d, &p, end, &ll)) {
                    frame_error();
                    goto done;
                }
                Py_ssize_t q = p, lend = p + ll;
                p = lend;
                if (f != 1) {
                    rest_at = rest_at < 0 ? fstart : rest_at;
                }
                else if (rest_at >= 0) {
                    interleaved = 1;
                }
                if (f == 2) {
                    points++;
                    last_sample = q;
                    last_sample_len = ll;
                    continue;
                }
                if (f == 4) {
                    points++;
                    last_hist = q;
                    last_hist_len = ll;
                    continue;
                }
                if (f == 3) {
                    continue; /* an exemplar */
                }
                if (only_name && named) {
                    /* A label the rules do not read: only its value's presence matters. */
                    if (ll >= 2 && d[q] == 0x0a && d[q + 1] < 0x80 && q + 4 + d[q + 1] <= lend &&
                        d[q + 2 + d[q + 1]] == 0x12 && d[q + 3 + d[q + 1]] > 0) {
                        continue;
                    }
                    only_name = 0;
                    nlab = points = named = 0;
                    last_sample = last_hist = -1;
                    goto walk_series;
                }
                if (!work_labels(&w, nlab + 1)) {
                    goto done;
                }
                Lab lab = {"", 0, "", 0, fstart, lend};
                /* The usual encoding first: name then value, one-byte lengths. */
                if (ll >= 4 && d[q] == 0x0a && d[q + 1] < 0x80 && q + 2 + d[q + 1] + 2 <= lend &&
                    d[q + 2 + d[q + 1]] == 0x12 && d[q + 3 + d[q + 1]] < 0x80 &&
                    q + 4 + d[q + 1] + d[q + 3 + d[q + 1]] == lend) {
                    lab.n = (const char *)d + q + 2;
                    lab.nl = d[q + 1];
                    lab.v = (const char *)d + q + 4 + lab.nl;
                    lab.vl = d[q + 3 + lab.nl];
                }
                else {
                    while (q < lend) {
                        uint64_t lkey;
                        if (!rd_varint(d, &q, lend, &lkey)) {
                            frame_error();
                            goto done;
                        }
                        if ((lkey >> 3) <= 2 && (lkey & 7) == 2) {
                            Py_ssize_t sl;
                            if (!rd_len(d, &q, lend, &sl)) {
                                frame_error();
                                goto done;
                            }
                            if ((lkey >> 3) == 1) {
                                lab.n = (const char *)d + q;
                                lab.nl = sl;
                            }
                            else {
                                lab.v = (const char *)d + q;
                                lab.vl = sl;
                            }
                            q += sl;
                        }
                        else if (!skip(d, &q, lend, (int)(lkey & 7))) {
                            frame_error();
                            goto done;
                        }
                    }
                }
                if (only_name) {
                    if (lab.vl == 0) { /* see above */
                        only_name = 0;
                        nlab = points = named = 0;
                        last_sample = last_hist = -1;
                        goto walk_series;
                    }
                    if (!same(lab.n, lab.nl, "__name__", 8)) {
                        continue;
                    }
                    named = 1;
                    if (early) {
                        /* The rules on the name alone (keep or drop, which read nothing else;
                         * the name is not empty here). */
                        lab_copy(&w.base[nlab], &lab);
                        w.deleted[nlab] = 0;
                        lb.base = w.base + nlab;
                        lb.deleted = w.deleted + nlab;
                        lb.nbase = 1;
                        lb.nadd = 0;
                        lb.any_deleted = 0;
                        int kept = 1;
                        for (Py_ssize_t i = 0; i < nrules && kept == 1; i++) {
                            kept = run_rule(&rules[i], &lb, &s, w.snap);
                        }
                        if (kept < 0) {
                            goto done;
                        }
                        if (!kept) {
                            dropped_early = 1;
                            break;
                        }
                        kept_early = 1;
                    }
                }
                lab_copy(&w.base[nlab], &lab);
                w.deleted[nlab] = lab.vl == 0; /* an empty value is an absent label */
                empty |= lab.vl == 0;
                nlab++;
                continue;
            }
            rest_at = rest_at < 0 ? fstart : rest_at;
            if (!skip(d, &p, end, fw)) {
                frame_error();
                goto done;
            }
        }
        if (dropped_early) {
            changed = 1;
            continue;
        }
        long long newest = 0;
        if (last_sample >= 0) {
            long long ts = timestamp_of(d, last_sample, last_sample + last_sample_len, 2);
            newest = ts > newest ? ts : newest;
        }
        if (last_hist >= 0) {
            long long ts = timestamp_of(d, last_hist, last_hist + last_hist_len, 15);
            newest = ts > newest ? ts : newest;
        }
        /* The rules. */
        lb.base = w.base;
        lb.deleted = w.deleted;
        lb.nbase = nlab;
        lb.nadd = 0;
        lb.any_deleted = empty;
        int keep = 1;
        if (nrules && !kept_early) {
            /* Room for a snapshot: every base label plus every addition the rules can make. */
            for (Py_ssize_t i = 0; i < nrules && keep == 1; i++) {
                if (!work_snap(&w, nlab + lb.nadd + 1)) {
                    goto done;
                }
                keep = run_rule(&rules[i], &lb, &s, w.snap);
                if (keep < 0) {
                    goto done;
                }
            }
            if (keep) {
                const char *nv;
                Py_ssize_t nvl;
                bld_get(&lb, "__name__", 8, &nv, &nvl);
                keep = nvl > 0;
            }
        }
        if (!keep) {
            if (!early) {
                dropped += points;
            }
            changed = 1;
            continue;
        }
        /* Without rules nothing is relabeled (an empty value stays as it came, as the
         * reference leaves a series no rule ran on). */
        int relabeled = nrules > 0 && (lb.nadd > 0 || lb.any_deleted);
        /* The final labels, sorted (they are, as they came, when nothing changed them). */
        Lab *final = w.base;
        Py_ssize_t nfinal = nlab;
        if (relabeled) {
            if (!work_snap(&w, nlab + lb.nadd + 1)) {
                goto done;
            }
            nfinal = sorted_snapshot(&lb, w.snap, presorted);
            final = w.snap;
            /* Rules that set what was there already change nothing (only worth a look when
             * as many labels are left as came). */
            Py_ssize_t k = 0, i = nfinal == nlab ? 0 : nlab + 1;
            for (; i < nlab; i++) {
                if (k >= nfinal || !same(w.base[i].n, w.base[i].nl, final[k].n, final[k].nl) ||
                    !same(w.base[i].v, w.base[i].vl, final[k].v, final[k].vl)) {
                    break;
                }
                k++;
            }
            if (i == nlab && k == nfinal) {
                relabeled = 0;
                final = w.base;
                nfinal = nlab;
            }
        }
        changed |= relabeled;
        Group *group = single;
        int strip = 0;
        Py_ssize_t tenant_at = -1; /* the tenant label's place in ``final`` */
        if (tenants) {
            const char *tv = NULL;
            Py_ssize_t tvl = 0;
            for (Py_ssize_t i = 0; i < nfinal; i++) {
                if (same(final[i].n, final[i].nl, PyBytes_AS_STRING(tenant_label),
                         PyBytes_GET_SIZE(tenant_label))) {
                    tv = final[i].v;
                    tvl = final[i].vl;
                    strip = !keep_label;
                    tenant_at = i;
                    break;
                }
            }
            if (tvl == 0) {
                tv = PyBytes_AS_STRING(tenant_default);
                tvl = PyBytes_GET_SIZE(tenant_default);
            }
            if (tvl == 0) {
                orphaned += points;
                changed = 1;
                continue;
            }
            /* Series of one tenant tend to come together: the last one found is tried first. */
            if (last_group != NULL && same(tv, tvl, PyBytes_AS_STRING(last_group->tenant),
                                           PyBytes_GET_SIZE(last_group->tenant))) {
                group = last_group;
            }
            else {
                group = group_for(&groups, tv, tvl);
                if (group == NULL) {
                    goto done;
                }
                last_group = group;
            }
        }
        /* A series no rule changed loses only its tenant label's record: copied around it. */
        Py_ssize_t cut_start = 0, cut_end = 0;
        if (strip && final == w.base && groups.nshards <= 1) {
            /* Nothing else reads the labels: only the record to leave out is needed. */
            cut_start = final[tenant_at].rs;
            cut_end = final[tenant_at].re;
        }
        else if (strip) {
            Py_ssize_t k = 0;
            int as_received = final == w.base;
            if (as_received && !work_snap(&w, nlab + 1)) {
                goto done;
            }
            for (Py_ssize_t i = 0; i < nfinal; i++) {
                if (!same(final[i].n, final[i].nl, PyBytes_AS_STRING(tenant_label),
                          PyBytes_GET_SIZE(tenant_label))) {
                    lab_copy(&w.snap[k++], &final[i]);
                }
                else if (as_received) {
                    cut_start = final[i].rs;
                    cut_end = final[i].re;
                }
            }
            final = w.snap;
            nfinal = k;
            relabeled = !as_received;
        }
        Buf *out = &group->shards[0];
        if (groups.nshards > 1) {
            out = &group->shards[shard_key(final, nfinal) % (uint32_t)groups.nshards];
        }
        if (relabeled) {
            if (interleaved) {
                if (!collect_rest(&w, d, body, end)) {
                    goto done;
                }
            }
            else {
                w.nrest = 0;
                if (rest_at >= 0 && !work_rest(&w, rest_at, end)) {
                    goto done;
                }
            }
            /* A label that came in the request is copied as it came (its record); only the
             * rules' additions are encoded. */
            Py_ssize_t inner = 0;
            for (Py_ssize_t i = 0; i < nfinal; i++) {
                const Lab *l = &final[i];
                inner += l->re > l->rs ? l->re - l->rs
                                       : 1 + varint_size((uint64_t)label_size(l)) + label_size(l);
            }
            for (Py_ssize_t i = 0; i < w.nrest; i++) {
                inner += w.rest[i].end - w.rest[i].start;
            }
            if (!buf_reserve(out, inner + 11)) {
                goto done;
            }
            out->data[out->len++] = 0x0a;
            put_varint(out, (uint64_t)inner);
            Py_ssize_t run_start = 0, run_end = 0; /* adjacent records, copied at once */
            for (Py_ssize_t i = 0; i < nfinal; i++) {
                const Lab *l = &final[i];
                if (l->re > l->rs) {
                    if (l->rs != run_end) {
                        put(out, d + run_start, run_end - run_start);
                        run_start = l->rs;
                    }
                    run_end = l->re;
                    continue;
                }
                put(out, d + run_start, run_end - run_start);
                run_start = run_end = 0;
                out->data[out->len++] = 0x0a;
                put_varint(out, (uint64_t)label_size(l));
                if (l->nl) { /* proto3 leaves empty strings out */
                    out->data[out->len++] = 0x0a;
                    put_varint(out, (uint64_t)l->nl);
                    put(out, l->n, l->nl);
                }
                if (l->vl) {
                    out->data[out->len++] = 0x12;
                    put_varint(out, (uint64_t)l->vl);
                    put(out, l->v, l->vl);
                }
            }
            put(out, d + run_start, run_end - run_start);
            for (Py_ssize_t i = 0; i < w.nrest; i++) {
                put(out, d + w.rest[i].start, w.rest[i].end - w.rest[i].start);
            }
        }
        else if (cut_end > cut_start) {
            Py_ssize_t inner = (end - body) - (cut_end - cut_start);
            if (!buf_reserve(out, inner + 11)) {
                goto done;
            }
            out->data[out->len++] = 0x0a;
            put_varint(out, (uint64_t)inner);
            put(out, d + body, cut_start - body);
            put(out, d + cut_end, end - cut_end);
        }
        else {
            /* As it came: the key, the length and the body. */
            if (!buf_reserve(out, end - record)) {
                goto done;
            }
            put(out, d + record, end - record);
        }
        out->points += points;
        out->series++;
        if (newest > out->newest) {
            out->newest = newest;
        }
        /* Compressed as it fills where the request is not forwarded as it came. */
        if (compress && out->len >= FRAGMENT && (changed || tenants || nshards > 1) &&
            !buf_stream(out, compress)) {
            goto done;
        }
    }
    if (early) {
        long long kept = single->shards[0].points;
        dropped = total > kept ? total - kept : 0;
    }
    if (nshards <= 1 && !tenants && !changed) {
        result = Py_NewRef(Py_None); /* forwarded as it came */
        goto done;
    }
    /* Metadata go to shard 0 of every group. */
    for (Py_ssize_t gi = 0; gi < groups.n; gi++) {
        Buf *b = &groups.items[gi].shards[0];
        for (Py_ssize_t i = 0; i < nmeta; i++) {
            if (!buf_reserve(b, meta[i].end - meta[i].start)) {
                goto done;
            }
            put(b, d + meta[i].start, meta[i].end - meta[i].start);
        }
    }
    /* The groups in (tenant, shard) order. */
    PyObject *order = PyDict_Keys(groups.index);
    if (order == NULL || PyList_Sort(order) < 0) {
        Py_XDECREF(order);
        goto done;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        Py_DECREF(order);
        goto done;
    }
    for (Py_ssize_t oi = 0; oi < PyList_GET_SIZE(order); oi++) {
        PyObject *tenant = PyList_GET_ITEM(order, oi);
        Group *g = &groups.items[PyLong_AsSsize_t(PyDict_GetItem(groups.index, tenant))];
        for (Py_ssize_t k = 0; k < groups.nshards; k++) {
            Buf *b = &g->shards[k];
            if (b->len == 0 && b->base == 0) {
                continue;
            }
            PyObject *body = compress ? buf_block(b, compress)
                                      : PyBytes_FromStringAndSize((const char *)b->data, b->len);
            if (body == NULL) {
                Py_DECREF(list);
                Py_DECREF(order);
                goto done;
            }
            PyObject *item = Py_BuildValue("(OnNLLn)", tenant, k, body, b->points, b->newest,
                                           b->series);
            if (item == NULL || PyList_Append(list, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                Py_DECREF(order);
                goto done;
            }
            Py_DECREF(item);
        }
    }
    Py_DECREF(order);
    result = Py_BuildValue("(NLL)", list, dropped, orphaned);
done:
    groups_free(&groups);
    PyMem_Free(rules);
    PyMem_Free(w.base);
    PyMem_Free(w.deleted);
    PyMem_Free(w.snap);
    PyMem_Free(w.rest);
    PyMem_Free(lb.add);
    PyMem_Free(s.data);
    PyMem_Free(meta);
    Py_XDECREF(spill);
    if (table.buf != NULL) {
        PyBuffer_Release(&table);
    }
    PyBuffer_Release(&raw);
    return result;
}

static PyObject *
crc32_py(PyObject *self, PyObject *args)
{
    Py_buffer data;
    unsigned int crc = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*|I", &data, &crc)) {
        return NULL;
    }
    uint32_t out = crc32_update(crc, data.buf, data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(out);
}

static PyMethodDef methods[] = {
    {"crc32", crc32_py, METH_VARARGS,
     "crc32(data, crc=0) -> int: zlib.crc32, as the shard key computes it (for tests)."},
    {"memo", memo_new, METH_NOARGS, "memo() -> an empty memo for one rule of route()."},
    {"memo_size", memo_size, METH_O, "memo_size(memo) -> int: the entries it holds (for tests)."},
    {"set_memo_probes", set_memo_probes, METH_O,
     "set_memo_probes(n): slots a lookup tries before it goes uncached (32; for tests)."},
    {"route", route, METH_VARARGS,
     "route(raw, rules, shards, tenant_label, tenant_default, keep_label, presorted=False,\n"
     "      points=-1, table=b\"\", compress=None)\n"
     "    -> None | ([(tenant, shard, body, points, newest_ms, series)], dropped, orphaned)\n\n"
     "raw: a validated, uncompressed remote-write 1.0 WriteRequest; rules: tuples (kind,\n"
     "sources, separator, target, memo (from memo()), fn[, literal form]) made by routing.py;\n"
     "tenant_label: bytes or None; points: raw's samples + histograms (-1: not known, every series is counted);\n"
     "table: the survey's series table of raw (wire/_survey.c), for rules on the name alone;\n"
     "compress: a snappy compressor: each body is then its block, compressed 64 KiB at a time."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    (void)module;
    crc_init();
    if (memo_seed == 0 && getrandom(&memo_seed, sizeof memo_seed, GRND_NONBLOCK) !=
                              (ssize_t)sizeof memo_seed) {
        memo_seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&memo_seed;
    }
#ifdef HAVE_CLMUL_CODE
    __builtin_cpu_init();
    have_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1") &&
                 !getenv("GOTK_RELAY_NO_CLMUL");
#endif
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "gotk_relay.write._route",
    "Relabel rules, shards and tenants applied to a remote-write request's bytes (routing.py).",
    0, methods, slots,
};

PyMODINIT_FUNC
PyInit__route(void)
{
    return PyModuleDef_Init(&definition);
}
