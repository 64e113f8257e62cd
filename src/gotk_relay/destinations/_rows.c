/* The hot loops of the Datadog and OTLP destinations' conversion (issue 17), each with a
 * pure-Python twin that is its reference, used when this is not built or
 * GOTK_RELAY_NO_EXTENSIONS is set (tests/unit/test_rows.py runs both):
 *
 * - rows: the series of an uncompressed remote-write 1.0 WriteRequest as rows (twin and contract:
 *   destinations/rows.py). Walking every label field of every series in Python cost more than
 *   the whole conversion may; here it is one pass over the bytes, and Python sees one row per
 *   series: the label fields' bytes as they came (a memo key), the samples, and the series' own
 *   bytes when it holds anything else (histograms, exemplars, interleaved fields);
 * - labels: a row's key as its label set (rows.labels), for the memos' misses;
 * - step_fits: the rows of a step that fit in a budget of samples (rows.split_step);
 * - series_tags, counter_key: a label set's tags and counter key (names.series_tags,
 *   counters.counter_key), for the memo's misses;
 * - datadog_rows, datadog_render, datadog_commit: datadog_mapping.map_items' loop over rows,
 *   datadog.render, CounterStore.commit_rows; datadog_rows renders a step as it maps it when
 *   distinct_rows finds each of its label sets known and met once (datadog_mapping.Emit);
 * - otlp_known, otlp_plan: otlp_mapping.Mapper.feed's two loops, for a step whose label sets
 *   are all known; otlp_rows: Mapper.gauge_row and counter_row; attributes_bytes (encoder's),
 *   for the memo's misses; otlp_serialized: Output.serialized; HashedTuple, the OTLP keys'
 *   tuple that keeps its hash.
 *
 * They read and write the Python state the twins use (memos, counter and stream state) through
 * the C API, and leave to Python what they do not handle (a label set or name seen first, ...).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../_seeded_hash.h"

/* PyLong_AsLongLong by the digit loop. CPython 3.11's PyLong_AsLongLong converts an int of more
 * than one 30-bit digit (every millisecond timestamp) through _PyLong_AsByteArray, ~200
 * instructions a call; the AndOverflow variant adds up the digits. */
static inline long long
as_longlong(PyObject *number)
{
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C long long");
        return -1;
    }
    return value;
}

static PyObject *DecodeError;

static int read_varint(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out) {
    uint64_t result = 0;
    int shift = 0;
    while (*pos < end) {
        uint8_t byte = p[(*pos)++];
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = result;
            return 0;
        }
        shift += 7;
        if (shift >= 70) {
            PyErr_SetString(DecodeError, "invalid protobuf: varint too long");
            return -1;
        }
    }
    PyErr_SetString(DecodeError, "invalid protobuf: truncated");
    return -1;
}

/* One field at *pos: its number, wire type, payload start and the position after it. */
static int read_field(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end, uint64_t *number,
                      int *wire, Py_ssize_t *payload) {
    uint64_t tag, size;
    if (read_varint(p, pos, end, &tag) < 0) return -1;
    *number = tag >> 3;
    *wire = (int)(tag & 7);
    switch (*wire) {
    case 0:
        *payload = *pos;
        if (read_varint(p, pos, end, &size) < 0) return -1;
        break;
    case 1:
        *payload = *pos;
        *pos += 8;
        break;
    case 2:
        if (read_varint(p, pos, end, &size) < 0) return -1;
        if (size > (uint64_t)(end - *pos)) {
            PyErr_SetString(DecodeError, "invalid protobuf: field runs past its message");
            return -1;
        }
        *payload = *pos;
        *pos += (Py_ssize_t)size;
        break;
    case 5:
        *payload = *pos;
        *pos += 4;
        break;
    default:
        PyErr_Format(DecodeError, "invalid protobuf: wire type %d", *wire);
        return -1;
    }
    if (*pos > end) {
        PyErr_SetString(DecodeError, "invalid protobuf: field runs past its message");
        return -1;
    }
    return 0;
}

/* read_field for the usual field: a one-byte tag of a length-delimited field with a one-byte
 * length (every label of a remote-write series, and most series), inline; else read_field.
 * A walk of a step's rows made two calls per label field, most of the walk's instructions. */
static inline int read_field_fast(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end,
                                  uint64_t *number, int *wire, Py_ssize_t *payload) {
    Py_ssize_t at = *pos;
    if (end - at >= 2) {
        uint8_t tag = p[at], size = p[at + 1];
        if (tag < 0x80 && (tag & 7) == 2 && size < 0x80 && size <= end - at - 2) {
            *number = tag >> 3;
            *wire = 2;
            *payload = at + 2;
            *pos = at + 2 + size;
            return 0;
        }
    }
    return read_field(p, pos, end, number, wire, payload);
}

/* The last int made, handed again for the same value: a scrape's series share one timestamp,
 * so a request's rows share a handful of int objects instead of one each. */
typedef struct {
    int64_t value;
    PyObject *obj; /* owned; NULL before the first */
} IntCache;

static inline PyObject *cached_int(IntCache *c, int64_t value) {
    if (c->obj != NULL && c->value == value) return Py_NewRef(c->obj);
    PyObject *obj = PyLong_FromLongLong(value);
    if (obj == NULL) return NULL;
    Py_XSETREF(c->obj, Py_NewRef(obj));
    c->value = value;
    return obj;
}

static PyObject *sample_tuple(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end, IntCache *ints) {
    double value = 0.0;
    int64_t ts = 0;
    /* The usual encoding: the value, then the timestamp as a varint ending the sample. */
    if (end - pos >= 10 && p[pos] == 0x09 && p[pos + 9] == 0x10) {
        Py_ssize_t at = pos + 10;
        uint64_t raw;
        if (read_varint(p, &at, end, &raw) == 0 && at == end) {
            memcpy(&value, p + pos + 1, 8); /* little-endian hosts only, checked at import */
            ts = (int64_t)raw;
            pos = end;
        } else if (PyErr_Occurred()) {
            PyErr_Clear(); /* the generic walk below reports it */
        }
    }
    while (pos < end) {
        uint64_t number, raw;
        int wire;
        Py_ssize_t payload;
        if (read_field(p, &pos, end, &number, &wire, &payload) < 0) return NULL;
        if (number == 1 && wire == 1) {
            memcpy(&raw, p + payload, 8); /* little-endian hosts only, checked at import */
            memcpy(&value, &raw, 8);
        } else if (number == 2 && wire == 0) {
            Py_ssize_t at = payload;
            if (read_varint(p, &at, end, &raw) < 0) return NULL;
            ts = (int64_t)raw;
        }
    }
    PyObject *v = PyFloat_FromDouble(value);
    PyObject *t = cached_int(ints, ts);
    if (v == NULL || t == NULL) {
        Py_XDECREF(v);
        Py_XDECREF(t);
        return NULL;
    }
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(v);
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, v);
    PyTuple_SET_ITEM(out, 1, t);
    /* A float and an int cannot be part of a cycle: untracked, as the collector itself would
     * untrack it, so a step's thousands of samples do not trigger collections. */
    PyObject_GC_UnTrack(out);
    return out;
}

/* One TimeSeries (payload p[start:end]) as (key, samples, raw or None). */
static PyObject *series_row(const uint8_t *p, Py_ssize_t start, Py_ssize_t end, IntCache *ints) {
    Py_ssize_t pos = start, labels_start = -1, labels_end = -1;
    int other = 0, labels_done = 0;
    /* Most series hold one sample: a list is made only for a second one. */
    PyObject *first = NULL, *list = NULL;
    while (pos < end) {
        uint64_t number;
        int wire;
        Py_ssize_t field_start = pos, payload;
        if (read_field_fast(p, &pos, end, &number, &wire, &payload) < 0) goto fail;
        if (number == 1 && wire == 2) {
            if (labels_start < 0) {
                labels_start = field_start;
            } else if (labels_done) {
                other = 1; /* labels after another field: not one slice */
            }
            labels_end = pos;
        } else {
            if (labels_start >= 0) labels_done = 1;
            if (number == 2 && wire == 2) {
                PyObject *sample = sample_tuple(p, payload, pos, ints);
                if (sample == NULL) goto fail;
                if (first == NULL && list == NULL) {
                    first = sample;
                    continue;
                }
                if (list == NULL) {
                    list = PyList_New(0);
                    if (list == NULL || PyList_Append(list, first) < 0) {
                        Py_DECREF(sample);
                        goto fail;
                    }
                    Py_CLEAR(first);
                }
                int rc = PyList_Append(list, sample);
                Py_DECREF(sample);
                if (rc < 0) goto fail;
            } else {
                other = 1;
            }
        }
    }
    PyObject *samples;
    if (list != NULL) {
        samples = PyList_AsTuple(list);
        Py_CLEAR(list);
    } else {
        samples = PyTuple_New(first != NULL);
        if (samples != NULL && first != NULL) PyTuple_SET_ITEM(samples, 0, first);
        else Py_XDECREF(first);
        first = NULL;
    }
    if (samples == NULL) return NULL;
    PyObject_GC_UnTrack(samples); /* holds untracked tuples only */
    PyObject *key = labels_start < 0
                        ? PyBytes_FromStringAndSize("", 0)
                        : PyBytes_FromStringAndSize((const char *)p + labels_start,
                                                    labels_end - labels_start);
    if (key == NULL) {
        Py_DECREF(samples);
        return NULL;
    }
    PyObject *raw;
    if (other) {
        raw = PyBytes_FromStringAndSize((const char *)p + start, end - start);
        if (raw == NULL) {
            Py_DECREF(key);
            Py_DECREF(samples);
            return NULL;
        }
    } else {
        raw = Py_NewRef(Py_None);
    }
    PyObject *row = PyTuple_New(3);
    if (row == NULL) {
        Py_DECREF(key);
        Py_DECREF(raw);
        Py_DECREF(samples);
        return NULL;
    }
    PyTuple_SET_ITEM(row, 0, key);
    PyTuple_SET_ITEM(row, 1, samples);
    PyTuple_SET_ITEM(row, 2, raw);
    PyObject_GC_UnTrack(row); /* bytes, an untracked tuple, bytes or None */
    return row;
fail:
    Py_XDECREF(first);
    Py_XDECREF(list);
    return NULL;
}

/* rows(data, pos, budget) -> (rows, next): the rows of the series fields from data[pos:] on, as
 * many whole ones as fit in budget bytes (fields counted whole), and where the next starts.
 * Other top-level fields are passed over. A first series over budget: ([], pos). */
static PyObject *rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "rows(data, pos, budget)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t budget = PyLong_AsSsize_t(args[2]);
    if (budget == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = (const uint8_t *)view.buf;
    Py_ssize_t end = view.len, used = 0;
    PyObject *result = NULL;
    IntCache ints = {0, NULL};
    PyObject *out = PyList_New(0);
    if (out == NULL) goto done;
    if (pos < 0 || pos > end) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        goto fail;
    }
    while (pos < end) {
        uint64_t number;
        int wire;
        Py_ssize_t payload, next = pos;
        if (read_field(p, &next, end, &number, &wire, &payload) < 0) goto fail;
        if (number != 1 || wire != 2) { /* metadata: read elsewhere */
            pos = next;
            continue;
        }
        if (used + (next - pos) > budget) break;
        used += next - pos;
        PyObject *row = series_row(p, payload, next, &ints);
        if (row == NULL) goto fail;
        int rc = PyList_Append(out, row);
        Py_DECREF(row);
        if (rc < 0) goto fail;
        pos = next;
    }
    result = Py_BuildValue("(Nn)", out, pos);
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(ints.obj);
    PyBuffer_Release(&view);
    return result;
}

/* One string field's bytes as an interned str; NULL without an error set when they are not
 * UTF-8 (rw1.decode raises that, in labels' Python twin). */
static PyObject *interned_text(const uint8_t *p, Py_ssize_t size) {
    PyObject *text = PyUnicode_DecodeUTF8((const char *)p, size, NULL);
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
        return NULL;
    }
    PyUnicode_InternInPlace(&text);
    return text;
}

/* The (name, value) of one Label message in its canonical encoding: field 1, then field 2,
 * each once (an empty one omitted), one-byte tags, lengths of any width. 0 when read, 1 when
 * the payload is anything else (left to Python), -1 on an error. */
static int label_pair(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end, PyObject **pair) {
    Py_ssize_t spans[2][2] = {{0, 0}, {0, 0}};
    int expect = 1; /* the field number that may come next */
    while (pos < end) {
        uint8_t tag = p[pos];
        int number = tag >> 3;
        if ((tag & 7) != 2 || number < expect || number > 2) return 1;
        pos++;
        uint64_t size;
        if (read_varint(p, &pos, end, &size) < 0) {
            PyErr_Clear();
            return 1;
        }
        if (size > (uint64_t)(end - pos)) return 1;
        spans[number - 1][0] = pos;
        spans[number - 1][1] = (Py_ssize_t)size;
        pos += (Py_ssize_t)size;
        expect = number + 1;
    }
    PyObject *name = interned_text(p + spans[0][0], spans[0][1]);
    if (name == NULL) return PyErr_Occurred() ? -1 : 1;
    PyObject *value = interned_text(p + spans[1][0], spans[1][1]);
    if (value == NULL) {
        Py_DECREF(name);
        return PyErr_Occurred() ? -1 : 1;
    }
    *pair = PyTuple_Pack(2, name, value);
    Py_DECREF(name);
    Py_DECREF(value);
    return *pair == NULL ? -1 : 0;
}

/* labels(key) -> the label set a row's key encodes, as rows.labels makes it (a tuple of
 * (name, value) pairs of interned strs), or None for a key whose labels are not all in the
 * canonical encoding, or not UTF-8: rows.labels decodes those (what a memo miss costs most,
 * ~12 us a label set through rw1.decode, on every series seen first). */
static PyObject *labels(PyObject *self, PyObject *key) {
    Py_buffer view;
    if (PyObject_GetBuffer(key, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = (const uint8_t *)view.buf;
    Py_ssize_t pos = 0, end = view.len;
    PyObject *pairs = PyList_New(0), *result = NULL;
    if (pairs == NULL) goto done;
    while (pos < end) {
        uint64_t number;
        int wire;
        Py_ssize_t payload;
        if (read_field_fast(p, &pos, end, &number, &wire, &payload) < 0) {
            PyErr_Clear();
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (number != 1 || wire != 2) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *pair = NULL;
        int rc = label_pair(p, payload, pos, &pair);
        if (rc != 0) {
            if (rc > 0) result = Py_NewRef(Py_None);
            goto done;
        }
        rc = PyList_Append(pairs, pair);
        Py_DECREF(pair);
        if (rc < 0) goto done;
    }
    result = PyList_AsTuple(pairs);
done:
    Py_XDECREF(pairs);
    PyBuffer_Release(&view);
    return result;
}

/* step_fits(step, start, points) -> (index, used): from step[start] on, the rows (3-tuples)
 * whose samples all fit in ``points``, taken in order; index is the first item not taken (a
 * decoded Series, a row that does not fit, or the end) and used the samples taken. The prefix
 * rows.split_step walks in Python, for a step of a few thousand rows. */
static PyObject *step_fits(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "step_fits(step: list, start, points)");
        return NULL;
    }
    PyObject *step = args[0];
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) return NULL;
    long long points = as_longlong(args[2]);
    if (points == -1 && PyErr_Occurred()) return NULL;
    long long used = 0;
    if (index < 0) index = 0;
    for (; index < PyList_GET_SIZE(step); index++) {
        PyObject *item = PyList_GET_ITEM(step, index);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) break;
        PyObject *samples = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t count = PyObject_Length(samples);
        if (count < 0) return NULL;
        if (count > points - used) break;
        used += count;
    }
    return Py_BuildValue("(nL)", index, used);
}

/* ---- Datadog: the hot loop of datadog_mapping.map_items, for rows ---------------------------
 *
 * datadog_rows(items, start, names, by_bytes, pending, marks, out, counts, args, index) maps
 * items[start:] as map_items does, row by row, and returns the index of the first item it left
 * to Python: one that is not a row without a rest, whose label set is not in by_bytes, or whose
 * name is not in names yet. args = (oldest, newest, counters_as_count, DROP, COUNTER,
 * TYPE_COUNT, TYPE_GAUGE). counts is a list of 8 ints it adds to: stale, not finite, too new,
 * out of order, too old, counter first, invalid name, created. index: by_bytes' key_index
 * (below), looked in first, or None. */

enum { C_STALE, C_NOT_FINITE, C_TOO_NEW, C_OUT_OF_ORDER, C_TOO_OLD, C_COUNTER_FIRST, C_INVALID,
       C_CREATED, C_COUNT };

#define STALE_BITS 0x7ff0000000000002ULL

static int64_t floor_div_1000(int64_t ts) {
    int64_t q = ts / 1000;
    if (ts % 1000 != 0 && ts < 0) q -= 1;
    return q;
}

/* One counter's interval, max(1, round((ts - last) / 1000)) as Python computes it: in doubles
 * where they are exact (a difference within 2^53: the quotient is then correctly rounded, as
 * int / int is), else with Python's own numbers. */
static PyObject *interval_of(int64_t ts, int64_t last, PyObject *ts_obj, PyObject *last_obj) {
    int64_t diff;
    if (!__builtin_sub_overflow(ts, last, &diff) && diff <= (1LL << 53) && diff >= -(1LL << 53)) {
        double q = rint((double)diff / 1000.0); /* half to even, as round() */
        return PyLong_FromLongLong(q < 1.0 ? 1 : (long long)q);
    }
    PyObject *d = PyNumber_Subtract(ts_obj, last_obj);
    if (d == NULL) return NULL;
    PyObject *thousand = PyLong_FromLong(1000);
    PyObject *q = thousand == NULL ? NULL : PyNumber_TrueDivide(d, thousand);
    Py_DECREF(d);
    Py_XDECREF(thousand);
    if (q == NULL) return NULL;
    PyObject *r;
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *round_fn = builtins == NULL ? NULL : PyDict_GetItemString(builtins, "round");
    if (round_fn == NULL) {
        Py_DECREF(q);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "no round()");
        return NULL;
    }
    r = PyObject_CallOneArg(round_fn, q);
    Py_DECREF(q);
    if (r == NULL) return NULL;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    int smaller = PyObject_RichCompareBool(r, one, Py_LT);
    if (smaller < 0) {
        Py_DECREF(r);
        Py_DECREF(one);
        return NULL;
    }
    if (smaller) {
        Py_DECREF(r);
        return one;
    }
    Py_DECREF(one);
    return r;
}

/* (int, float) pairs cannot be part of a cycle: untracked at once, as the collector would at
 * its first pass, so a conversion's points and counter marks (alive until its request is sent)
 * do not count towards full collections, which walk every series' memoized state. */
static PyObject *atomic_pair(PyObject *first, PyObject *second) {
    PyObject *out = PyTuple_Pack(2, first, second);
    if (out != NULL) PyObject_GC_UnTrack(out);
    return out;
}

static PyObject *point_tuple(IntCache *seconds_cache, int64_t seconds, PyObject *value) {
    PyObject *t = cached_int(seconds_cache, seconds);
    if (t == NULL) return NULL;
    PyObject *out = atomic_pair(t, value);
    Py_DECREF(t);
    return out;
}

/* A label set's info by its encoded bytes, for datadog_rows: the memo's dict (by_bytes) hashed
 * each row's key (a new bytes object, ~300 bytes) with SipHash, the largest single cost of a
 * steady row's mapping. This index holds the same (key, info) pairs (the key objects by_bytes
 * holds, added where Python adds them) under a seeded hash of 16 bytes per multiplication; a
 * key it does not find is looked up in by_bytes as before. It is cleared with the memo (the
 * owner drops it), so it holds at most what by_bytes holds. */
typedef struct {
    uint64_t hash;
    PyObject *key; /* bytes */
    PyObject *info;
} KeySlot;

typedef struct {
    KeySlot *slots;
    Py_ssize_t cap, n; /* cap: a power of two, or 0 */
} KeyIndex;

#define KEY_INDEX_CAPSULE "gotk_relay.destinations._rows.key_index"
/* A lookup probes at most this many slots (key_index_put and key_index_grow keep every key
 * within them): which keys collide cannot be chosen from outside (the seed), and a run of
 * collisions costs at most this many probes. */
#define KEY_PROBES 32
static uint64_t key_seed;

static inline uint64_t key_hash(const uint8_t *p, Py_ssize_t n) {
    return seeded_hash(key_seed, p, n);
}

static void key_index_free(KeyIndex *x) {
    for (Py_ssize_t i = 0; i < x->cap; i++) {
        Py_XDECREF(x->slots[i].key);
        Py_XDECREF(x->slots[i].info);
    }
    PyMem_Free(x->slots);
    x->slots = NULL;
    x->cap = x->n = 0;
}

static void key_index_destroy(PyObject *capsule) {
    KeyIndex *x = PyCapsule_GetPointer(capsule, KEY_INDEX_CAPSULE);
    if (x != NULL) {
        key_index_free(x);
        PyMem_Free(x);
    }
}

static PyObject *key_index(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    KeyIndex *x = PyMem_Calloc(1, sizeof(KeyIndex));
    if (x == NULL) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(x, KEY_INDEX_CAPSULE, key_index_destroy);
    if (capsule == NULL) PyMem_Free(x);
    return capsule;
}

/* The info of key (bytes), borrowed, or NULL (no error) when the index does not hold it. */
static PyObject *key_index_get(KeyIndex *x, PyObject *key, uint64_t h) {
    if (x->cap == 0) return NULL;
    const char *p = PyBytes_AS_STRING(key);
    Py_ssize_t n = PyBytes_GET_SIZE(key), mask = x->cap - 1;
    Py_ssize_t at = (Py_ssize_t)(h & (uint64_t)mask);
    for (int probe = 0; probe < KEY_PROBES; probe++) {
        KeySlot *slot = &x->slots[at];
        if (slot->key == NULL) return NULL;
        if (slot->hash == h && PyBytes_GET_SIZE(slot->key) == n &&
            (slot->key == key || memcmp(PyBytes_AS_STRING(slot->key), p, (size_t)n) == 0))
            return slot->info;
        at = (at + 1) & mask;
    }
    return NULL;
}

/* At least twice the room (load kept at most 1/2), every entry moved, each within KEY_PROBES
 * of its hash's slot (as key_index_get looks): a table where some entry would land further is
 * doubled again, up to 64 slots an entry; past that (a broken hash) the rest are placed
 * wherever they fit, out of the lookups' reach, as before. */
static int key_index_grow(KeyIndex *x) {
    Py_ssize_t cap = x->cap ? x->cap * 2 : 1024;
    for (;;) {
        int limit = cap >= 64 * (x->n + 1) ? INT_MAX : KEY_PROBES;
        KeySlot *slots = PyMem_Calloc((size_t)cap, sizeof(KeySlot));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        int placed = 1;
        for (Py_ssize_t i = 0; i < x->cap && placed; i++) {
            KeySlot *old = &x->slots[i];
            if (old->key == NULL) continue;
            Py_ssize_t j = (Py_ssize_t)(old->hash & (uint64_t)(cap - 1));
            int probe = 0;
            while (slots[j].key != NULL && probe < limit) {
                j = (j + 1) & (cap - 1);
                probe++;
            }
            if (slots[j].key != NULL) {
                placed = 0;
            }
            else {
                slots[j] = *old;
            }
        }
        if (placed) {
            PyMem_Free(x->slots);
            x->slots = slots;
            x->cap = cap;
            return 0;
        }
        PyMem_Free(slots); /* the references were only copied: nothing to release */
        cap *= 2;
    }
}

/* key -> info, unless the key is there already. A key whose run of slots is full for
 * KEY_PROBES doubles the table (the runs shorten) rather than being left out: a key the index
 * lacks sends every step holding it to the slower path, for as long as the memo lives (with
 * 50,000 label sets one index in six lost some at half load). Past 32 slots a key it is left
 * to by_bytes: 32 seeded hashes alike in their low bits is a broken hash. */
static int key_index_put(KeyIndex *x, PyObject *key, PyObject *info, uint64_t h) {
    if ((x->n + 1) * 2 > x->cap && key_index_grow(x) < 0) return -1;
    if (key_index_get(x, key, h) != NULL) return 0;
    for (;;) {
        Py_ssize_t mask = x->cap - 1, at = (Py_ssize_t)(h & (uint64_t)mask);
        for (int probe = 0; probe < KEY_PROBES; probe++) {
            KeySlot *slot = &x->slots[at];
            if (slot->key == NULL) {
                *slot = (KeySlot){h, Py_NewRef(key), Py_NewRef(info)};
                x->n++;
                return 0;
            }
            at = (at + 1) & mask;
        }
        if (x->cap >= 32 * (x->n + 1)) return 0;
        if (key_index_grow(x) < 0) return -1;
    }
}

static KeyIndex *key_index_of(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, KEY_INDEX_CAPSULE);
}

/* key_index_add(index, key, info): what map_items adds to by_bytes, added here too. */
static PyObject *key_index_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "key_index_add(index, key: bytes, info)");
        return NULL;
    }
    KeyIndex *x = key_index_of(args[0]);
    if (x == NULL) return NULL;
    PyObject *key = args[1];
    uint64_t h = key_hash((const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    if (key_index_put(x, key, args[2], h) < 0) return NULL;
    Py_RETURN_NONE;
}

/* key_index_infos(index, items) -> list: for each item, the info the index holds for it if it
 * is a row (a 3-tuple whose first item is its key, bytes), else None: OTLP's Mapper.feed looked
 * each row's key up in its memo dict, a SipHash of ~300 bytes a row. The slots of the rows
 * ahead are fetched as datadog_rows fetches them. */
#define INFOS_AHEAD 4
static PyObject *key_index_infos(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "key_index_infos(index, items: list)");
        return NULL;
    }
    KeyIndex *x = key_index_of(args[0]);
    if (x == NULL) return NULL;
    PyObject *items = args[1];
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    uint64_t hashes[INFOS_AHEAD] = {0};
    int known[INFOS_AHEAD] = {0};
    for (Py_ssize_t j = 0; j < n + INFOS_AHEAD; j++) {
        if (j < n) { /* row j: its hash, its slot fetched */
            PyObject *item = PyList_GET_ITEM(items, j);
            PyObject *key = PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 3
                                ? PyTuple_GET_ITEM(item, 0)
                                : NULL;
            known[j % INFOS_AHEAD] = key != NULL && PyBytes_CheckExact(key) && x->cap > 0;
            if (known[j % INFOS_AHEAD]) {
                uint64_t h = key_hash((const uint8_t *)PyBytes_AS_STRING(key),
                                      PyBytes_GET_SIZE(key));
                hashes[j % INFOS_AHEAD] = h;
                __builtin_prefetch(&x->slots[h & (uint64_t)(x->cap - 1)]);
            }
        }
        Py_ssize_t i = j - INFOS_AHEAD + 1; /* row i: looked up */
        if (i < 0) continue;
        if (i >= n) break;
        PyObject *info = NULL;
        if (known[i % INFOS_AHEAD]) {
            PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
            info = key_index_get(x, key, hashes[i % INFOS_AHEAD]);
        }
        PyList_SET_ITEM(out, i, Py_NewRef(info != NULL ? info : Py_None));
    }
    return out;
}

/* key_index_size(index): the entries held (for tests). */
static PyObject *key_index_size(PyObject *self, PyObject *capsule) {
    (void)self;
    KeyIndex *x = key_index_of(capsule);
    return x == NULL ? NULL : PyLong_FromSsize_t(x->n);
}

/* What a call found in a dict keyed by a tuple of objects it reads from its rows (a name's
 * resolution, a head's JSON), by those objects' identity: a tuple made and hashed per row cost
 * more than the lookup itself. A slot holds the last key hashed to it, and references to the
 * key and what was found (released when the call ends), so nothing the call runs meanwhile can
 * make it point at something else. */
#define SEEN_SLOTS 64
typedef struct {
    PyObject *key, *key2, *value;
} Seen;

static inline Seen *seen_slot(Seen *seen, PyObject *key) {
    return &seen[((uintptr_t)key >> 4) % SEEN_SLOTS];
}

static void seen_store(Seen *slot, PyObject *key, PyObject *key2, PyObject *value) {
    Seen old = *slot;
    *slot = (Seen){Py_NewRef(key), Py_XNewRef(key2), Py_NewRef(value)};
    Py_XDECREF(old.key);
    Py_XDECREF(old.key2);
    Py_XDECREF(old.value);
}

/* dict[(key, key2)] through key's slot: borrowed; NULL, with no error set, when absent. */
static inline PyObject *seen_get(Seen *seen, PyObject *dict, PyObject *key, PyObject *key2) {
    Seen *slot = seen_slot(seen, key);
    if (slot->key == key && slot->key2 == key2) return slot->value;
    PyObject *lookup = PyTuple_Pack(2, key, key2);
    if (lookup == NULL) return NULL;
    PyObject *found = PyDict_GetItemWithError(dict, lookup);
    Py_DECREF(lookup);
    if (found != NULL) seen_store(slot, key, key2, found);
    return found;
}

static void seen_release(Seen *seen) {
    for (int k = 0; k < SEEN_SLOTS; k++) {
        Py_XDECREF(seen[k].key);
        Py_XDECREF(seen[k].key2);
        Py_XDECREF(seen[k].value);
    }
}

typedef struct {
    char *data;
    Py_ssize_t size, cap;
} Buf;

static int buf_put(Buf *b, const char *src, Py_ssize_t n) {
    if (b->size + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->size + n) cap *= 2;
        char *grown = PyMem_Realloc(b->data, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->size, src, n);
    b->size += n;
    return 0;
}

static int buf_bytes(Buf *b, PyObject *bytes) {
    return buf_put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

/* v in decimal, then suffix (n bytes). */
static int buf_int64(Buf *b, long long v, const char *suffix, Py_ssize_t n) {
    char digits[32];
    char *end = digits + 24, *at = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--at = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--at = '-';
    memcpy(end, suffix, (size_t)n);
    return buf_put(b, at, end - at + n);
}

static int buf_int(Buf *b, PyObject *number) {
    int overflow = 1;
    long long v = 0;
    if (PyLong_CheckExact(number)) {
        v = PyLong_AsLongLongAndOverflow(number, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
    }
    if (!overflow) return buf_int64(b, v, "", 0); /* str() made a str object per timestamp */
    PyObject *text = PyObject_Str(number); /* as %d formats it */
    if (text == NULL) return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    int rc = utf8 == NULL ? -1 : buf_put(b, utf8, n);
    Py_DECREF(text);
    return rc;
}


/* One point's value as datadog.render writes it: a whole number below 1e16 as "%d.0" (and -0.0
 * as "-0.0"), as orjson and json both write it, without a call or a bytes object (most points
 * are: counts, counters' increases, states); any other value by scalar (orjson.dumps). */
static int put_value(Buf *b, PyObject *number, PyObject *scalar) {
    if (PyFloat_CheckExact(number)) {
        double d = PyFloat_AS_DOUBLE(number);
        if (d > -1e16 && d < 1e16 && d == (double)(long long)d)
            return d == 0.0 && signbit(d) ? buf_put(b, "-0.0", 4)
                                          : buf_int64(b, (long long)d, ".0", 2);
    }
    PyObject *value = PyObject_CallOneArg(scalar, number);
    if (value == NULL) return -1;
    int rc = PyBytes_Check(value) ? buf_bytes(b, value) : -1;
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "datadog_render: scalar() made no bytes");
    Py_DECREF(value);
    return rc;
}

/* A row's JSON (datadog.render) in b, emptied first: its head, points, tags' JSON (tail) and
 * interval. */
static int render_row(Buf *b, PyObject *head, PyObject *points, PyObject *tail,
                      PyObject *interval, PyObject *scalar) {
    b->size = 0;
    if (buf_bytes(b, head) < 0) return -1;
    Py_ssize_t count = PyList_GET_SIZE(points);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *point = PyList_GET_ITEM(points, k);
        if (!PyTuple_CheckExact(point) || PyTuple_GET_SIZE(point) != 2) {
            PyErr_SetString(PyExc_TypeError, "datadog_render: a point is not a pair");
            return -1;
        }
        if ((k && buf_put(b, ",", 1) < 0) || buf_put(b, "{\"timestamp\":", 13) < 0 ||
            buf_int(b, PyTuple_GET_ITEM(point, 0)) < 0 || buf_put(b, ",\"value\":", 9) < 0 ||
            put_value(b, PyTuple_GET_ITEM(point, 1), scalar) < 0 || buf_put(b, "}", 1) < 0)
            return -1;
    }
    if (buf_bytes(b, tail) < 0) return -1;
    int has_interval = PyObject_IsTrue(interval);
    if (has_interval < 0) return -1;
    if (has_interval && (buf_put(b, ",\"interval\":", 12) < 0 || buf_int(b, interval) < 0))
        return -1;
    return buf_put(b, "}", 1);
}

/* Whether a piece keeps a rendered row (datadog.render_all's kept): a counter's (its state is
 * committed once the piece is accepted) or a series of several points (a 413 may split it). */
static inline int row_kept(PyObject *row) {
    return PyList_GET_ITEM(row, 7) != Py_None || PyList_GET_SIZE(PyList_GET_ITEM(row, 5)) != 1;
}

/* A bytearray resized to size, its storage at least doubled when it must grow. CPython grows a
 * bytearray by an eighth each time, so a batch's JSON (megabytes, written part by part) was
 * copied about eight times over by realloc; doubled, about once. Asking for twice the size is
 * a "major upsize" (allocated exactly); the size asked for next is a "minor downsize", which
 * keeps the storage. */
static int grow_bytearray(PyObject *array, Py_ssize_t size) {
    if (size + 1 > ((PyByteArrayObject *)array)->ob_alloc &&
        PyByteArray_Resize(array, size > PY_SSIZE_T_MAX / 2 ? size : 2 * size) < 0)
        return -1;
    return PyByteArray_Resize(array, size);
}

/* b's JSON added to out: with ends (datadog.Rendered), written to the bytearray out followed by
 * a comma, where the next part starts appended to ends as a native int64; else appended to the
 * list out as bytes. */
static int emit_part(Buf *b, PyObject *out, PyObject *ends) {
    if (ends == NULL) {
        PyObject *part = PyBytes_FromStringAndSize(b->data, b->size);
        if (part == NULL) return -1;
        int rc = PyList_Append(out, part);
        Py_DECREF(part);
        return rc;
    }
    Py_ssize_t at = PyByteArray_GET_SIZE(out), marks = PyByteArray_GET_SIZE(ends);
    if (grow_bytearray(out, at + b->size + 1) < 0 || grow_bytearray(ends, marks + 8) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(out) + at, b->data, (size_t)b->size);
    PyByteArray_AS_STRING(out)[at + b->size] = ',';
    int64_t next = (int64_t)(at + b->size + 1);
    memcpy(PyByteArray_AS_STRING(ends) + marks, &next, 8);
    return 0;
}

/* The rows ahead of the one being mapped: with 50,000 label sets, what a row reads (its index
 * slot, the key kept there, the info list and its items) is in no cache (the same conversion
 * ran ~35 % slower per sample than with 10,000). Row i + AHEAD's hash is computed and its slot
 * fetched; row i + 1's slot is read and its key and info fetched; row i finds them there. */
#define AHEAD 4

/* The key of items[j] if it is a row datadog_rows maps (else NULL). */
static inline PyObject *row_key(PyObject *items, Py_ssize_t j) {
    PyObject *item = PyList_GET_ITEM(items, j);
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) return NULL;
    PyObject *key = PyTuple_GET_ITEM(item, 0);
    return PyBytes_CheckExact(key) ? key : NULL;
}

static inline void fetch_ahead(KeyIndex *x, PyObject *items, Py_ssize_t j, uint64_t *hashes) {
    PyObject *key = row_key(items, j);
    if (key == NULL) return;
    uint64_t h = key_hash((const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    hashes[j % AHEAD] = h;
    __builtin_prefetch(&x->slots[h & (uint64_t)(x->cap - 1)]);
}

static inline void fetch_found(KeyIndex *x, uint64_t h) {
    KeySlot *slot = &x->slots[h & (uint64_t)(x->cap - 1)];
    if (slot->key == NULL || slot->hash != h) return;
    const char *bytes = (const char *)slot->key;
    __builtin_prefetch(bytes);
    __builtin_prefetch(bytes + 64);
    __builtin_prefetch(bytes + 128);
    __builtin_prefetch(bytes + 192);
    __builtin_prefetch(bytes + 256);
    __builtin_prefetch(slot->info);
    if (PyList_CheckExact(slot->info)) __builtin_prefetch(((PyListObject *)slot->info)->ob_item);
}

/* A (float, int) sample's value and timestamp: 1 when Datadog may take it, 0 when no series
 * can have it (a NaN or ±Inf, a time too far ahead; counted in tally), -1 on an error. */
static inline int sample_read(PyObject *sample, int64_t newest, long long *tally, double *value,
                              int64_t *ts) {
    *value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(sample, 0));
    *ts = as_longlong(PyTuple_GET_ITEM(sample, 1));
    if (*ts == -1 && PyErr_Occurred()) return -1;
    if (!(*value - *value == 0.0)) { /* NaN or ±Inf */
        uint64_t bits;
        memcpy(&bits, value, 8);
        tally[bits == STALE_BITS ? C_STALE : C_NOT_FINITE]++;
        return 0;
    }
    if (*ts > newest) {
        tally[C_TOO_NEW]++;
        return 0;
    }
    return 1;
}

static PyObject *datadog_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 && nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "datadog_rows takes 10 or 11 arguments");
        return NULL;
    }
    /* fused: (heads, scalar, data, ends, kept, updates, infos), for a step whose rows are all
     * known and of distinct label sets (distinct_rows, which gives their infos in order, so they
     * are not looked up again): each row is then final once mapped, and is
     * rendered at once as datadog_render would (to data and ends, a datadog.Rendered), kept
     * as render_all keeps it, or its counter state put in updates when it has no point. A
     * gauge of one sample is written without a row. */
    PyObject *fused = nargs == 11 && args[10] != Py_None ? args[10] : NULL;
    PyObject *f_heads = NULL, *f_scalar = NULL, *f_data = NULL, *f_ends = NULL;
    PyObject *f_kept = NULL, *f_updates = NULL, *f_infos = NULL;
    if (fused != NULL) {
        if (!PyTuple_CheckExact(fused) || PyTuple_GET_SIZE(fused) != 7 ||
            !PyList_CheckExact(PyTuple_GET_ITEM(fused, 6)) ||
            !PyDict_Check(PyTuple_GET_ITEM(fused, 0)) ||
            !PyByteArray_CheckExact(PyTuple_GET_ITEM(fused, 2)) ||
            !PyByteArray_CheckExact(PyTuple_GET_ITEM(fused, 3)) ||
            !PyList_Check(PyTuple_GET_ITEM(fused, 4)) || !PyDict_Check(PyTuple_GET_ITEM(fused, 5))) {
            PyErr_SetString(PyExc_TypeError, "datadog_rows: fused is (heads, scalar, data, "
                                             "ends, kept, updates, infos)");
            return NULL;
        }
        f_infos = PyTuple_GET_ITEM(fused, 6);
        f_heads = PyTuple_GET_ITEM(fused, 0);
        f_scalar = PyTuple_GET_ITEM(fused, 1);
        f_data = PyTuple_GET_ITEM(fused, 2);
        f_ends = PyTuple_GET_ITEM(fused, 3);
        f_kept = PyTuple_GET_ITEM(fused, 4);
        f_updates = PyTuple_GET_ITEM(fused, 5);
    }
    Buf b = {NULL, 0, 0};
    PyObject *owned = NULL; /* a fused row being mapped, not in out */
    KeyIndex *index = NULL;
    if (args[9] != Py_None && (index = key_index_of(args[9])) == NULL) return NULL;
    PyObject *items = args[0], *names = args[2], *by_bytes = args[3], *pending = args[4];
    PyObject *marks = args[5], *out = args[6], *counts = args[7], *params = args[8];
    if (!PyList_Check(items) || !PyDict_Check(names) || !PyDict_Check(by_bytes) ||
        !PyDict_Check(pending) || !PyDict_Check(marks) || !PyDict_Check(out) ||
        !PyList_Check(counts) || PyList_GET_SIZE(counts) != C_COUNT || !PyTuple_Check(params) ||
        PyTuple_GET_SIZE(params) != 7) {
        PyErr_SetString(PyExc_TypeError, "datadog_rows: unexpected argument types");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    int64_t oldest = as_longlong(PyTuple_GET_ITEM(params, 0));
    int64_t newest = as_longlong(PyTuple_GET_ITEM(params, 1));
    if (PyErr_Occurred()) return NULL;
    int as_count = PyObject_IsTrue(PyTuple_GET_ITEM(params, 2));
    if (as_count < 0) return NULL;
    PyObject *drop = PyTuple_GET_ITEM(params, 3), *counter = PyTuple_GET_ITEM(params, 4);
    PyObject *type_count = PyTuple_GET_ITEM(params, 5), *type_gauge = PyTuple_GET_ITEM(params, 6);
    long long tally[C_COUNT] = {0};
    Seen seen_names[SEEN_SLOTS] = {{0}};
    Seen seen_heads[SEEN_SLOTS] = {{0}};
    IntCache seconds = {0, NULL}; /* points' timestamps, in seconds */
    Py_ssize_t n = PyList_GET_SIZE(items);
    /* hashes[j % AHEAD]: row j's key hash, computed AHEAD rows before it is mapped (rows that
     * are not plain break the loop before they would be read). */
    uint64_t hashes[AHEAD] = {0};
    /* Fused, each row's info is the one distinct_rows found (f_infos[i]): not looked up again. */
    int ahead = index != NULL && index->cap > 0 && f_infos == NULL;
    if (ahead) {
        for (Py_ssize_t j = i; j < n && j < i + AHEAD; j++) fetch_ahead(index, items, j, hashes);
    }
    for (; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3 ||
            PyTuple_GET_ITEM(item, 2) != Py_None)
            break;
        PyObject *key_bytes = PyTuple_GET_ITEM(item, 0);
        if (!PyBytes_CheckExact(key_bytes)) break;
        PyObject *info = NULL;
        uint64_t hash = 0;
        if (f_infos != NULL && i < PyList_GET_SIZE(f_infos)) {
            info = PyList_GET_ITEM(f_infos, i);
        } else if (index != NULL) {
            if (ahead && index->cap > 0) {
                hash = hashes[i % AHEAD];
                if (i + AHEAD < n) fetch_ahead(index, items, i + AHEAD, hashes);
                if (i + 1 < n) fetch_found(index, hashes[(i + 1) % AHEAD]);
            } else {
                hash = key_hash((const uint8_t *)PyBytes_AS_STRING(key_bytes),
                                PyBytes_GET_SIZE(key_bytes));
            }
            info = key_index_get(index, key_bytes, hash);
        }
        if (info == NULL) {
            info = PyDict_GetItemWithError(by_bytes, key_bytes);
            if (info == NULL) {
                if (PyErr_Occurred()) goto error;
                break;
            }
            /* Known to by_bytes only (learnt without the index): learnt here. */
            if (index != NULL && key_index_put(index, key_bytes, info, hash) < 0) goto error;
        }
        if (!PyList_CheckExact(info) || PyList_GET_SIZE(info) < 7) break;
        PyObject *samples = PyTuple_GET_ITEM(item, 1);
        if (!PyTuple_CheckExact(samples)) break;
        Py_ssize_t count = PyTuple_GET_SIZE(samples);
        if (count == 0) continue;
        int plain = 1; /* every sample a (float, int): else Python maps the row */
        for (Py_ssize_t k = 0; k < count && plain; k++) {
            PyObject *sample = PyTuple_GET_ITEM(samples, k);
            plain = PyTuple_CheckExact(sample) && PyTuple_GET_SIZE(sample) == 2 &&
                    PyFloat_CheckExact(PyTuple_GET_ITEM(sample, 0)) &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(sample, 1));
        }
        if (!plain) break;
        PyObject *key = PyList_GET_ITEM(info, 6); /* counter_key(labels) */
        PyObject *resolved = seen_get(seen_names, names, PyList_GET_ITEM(info, 1), Py_None);
        if (resolved == NULL) {
            if (PyErr_Occurred()) goto error;
            break; /* the name's first series in this conversion: Python resolves it */
        }
        if (!PyTuple_CheckExact(resolved) || PyTuple_GET_SIZE(resolved) != 2) break;
        PyObject *metric = PyTuple_GET_ITEM(resolved, 0);
        PyObject *kind = PyTuple_GET_ITEM(resolved, 1);
        if (!PyUnicode_Check(metric)) break;
        if (PyUnicode_GET_LENGTH(metric) == 0) {
            tally[C_INVALID] += count;
            continue;
        }
        if (kind == drop) {
            tally[C_CREATED] += count;
            continue;
        }
        int is_count = kind == counter && as_count;
        PyObject *head = NULL, *tail = NULL;
        if (fused != NULL) {
            /* Rendered only once its head and tags' JSON are made: Python makes them for the
             * first series of each (datadog.render). */
            head = seen_get(seen_heads, f_heads, metric, is_count ? type_count : type_gauge);
            if (head == NULL) {
                if (PyErr_Occurred()) goto error;
                break;
            }
            tail = PyList_GET_ITEM(info, 4);
            if (!PyBytes_CheckExact(head) || !PyBytes_CheckExact(tail)) break;
        }
        if (fused != NULL && !is_count && count == 1) {
            /* The usual series: its JSON straight from the sample, as render writes a gauge's
             * one point (no interval), with the same checks as the loop below. */
            double value;
            int64_t ts;
            int taken = sample_read(PyTuple_GET_ITEM(samples, 0), newest, tally, &value, &ts);
            if (taken <= 0) {
                if (taken < 0) goto error;
                continue;
            }
            PyObject *value_obj = PyTuple_GET_ITEM(PyTuple_GET_ITEM(samples, 0), 0);
            if (ts < oldest) {
                tally[C_TOO_OLD]++;
                continue;
            }
            b.size = 0;
            if (buf_bytes(&b, head) < 0 || buf_put(&b, "{\"timestamp\":", 13) < 0 ||
                buf_int64(&b, floor_div_1000(ts), "", 0) < 0 || buf_put(&b, ",\"value\":", 9) < 0 ||
                put_value(&b, value_obj, f_scalar) < 0 || buf_put(&b, "}", 1) < 0 ||
                buf_bytes(&b, tail) < 0 || buf_put(&b, "}", 1) < 0 ||
                emit_part(&b, f_data, f_ends) < 0 || PyList_Append(f_kept, Py_None) < 0)
                goto error;
            continue;
        }
        PyObject *mapped = fused != NULL ? NULL : PyDict_GetItemWithError(out, key);
        if (mapped == NULL) {
            if (PyErr_Occurred()) goto error;
            /* A gauge's marks stay empty: a shared tuple, as map_items makes it. */
            PyObject *points = PyList_New(0);
            PyObject *marks_list = is_count ? PyList_New(0) : PyTuple_New(0);
            PyObject *zero = PyLong_FromLong(0);
            mapped = PyList_New(10);
            if (points == NULL || marks_list == NULL || zero == NULL || mapped == NULL) {
                Py_XDECREF(points);
                Py_XDECREF(marks_list);
                Py_XDECREF(zero);
                Py_XDECREF(mapped);
                goto error;
            }
            /* The row and its lists only ever point at what outlives them (the label set's
             * info, strings, untracked pairs), never back: they cannot be part of a cycle, so
             * the collector need not walk them. Untracked, the thousands a request's
             * conversion holds do not make full collections (which walk every memoized label
             * set) come several times a second. */
            PyObject_GC_UnTrack(points);
            if (is_count) PyObject_GC_UnTrack(marks_list);
            PyObject_GC_UnTrack(mapped);
            PyObject *fields[10] = {key, metric, is_count ? type_count : type_gauge,
                                    PyList_GET_ITEM(info, 2), PyList_GET_ITEM(info, 3),
                                    points, marks_list, Py_None, zero, info};
            for (int f = 0; f < 10; f++) {
                if (f != 5 && f != 6 && f != 8) Py_INCREF(fields[f]);
                PyList_SET_ITEM(mapped, f, fields[f]);
            }
            if (fused != NULL) {
                owned = mapped; /* rendered below, once its samples are mapped */
            } else {
                int rc = PyDict_SetItem(out, key, mapped); /* by counter_key, as map_items */
                Py_DECREF(mapped);                        /* out holds it */
                if (rc < 0) goto error;
            }
        }
        PyObject *points = PyList_GET_ITEM(mapped, 5);
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *sample = PyTuple_GET_ITEM(samples, k);
            PyObject *value_obj = PyTuple_GET_ITEM(sample, 0);
            PyObject *ts_obj = PyTuple_GET_ITEM(sample, 1);
            double value;
            int64_t ts;
            int taken = sample_read(sample, newest, tally, &value, &ts);
            if (taken < 0) goto error;
            if (!taken) continue;
            if (!is_count) {
                if (ts < oldest) {
                    tally[C_TOO_OLD]++;
                    continue;
                }
                PyObject *point = point_tuple(&seconds, floor_div_1000(ts), value_obj);
                if (point == NULL) goto error;
                int rc = PyList_Append(points, point);
                Py_DECREF(point);
                if (rc < 0) goto error;
                continue;
            }
            PyObject *last = PyDict_GetItemWithError(pending, key);
            if (last == NULL) {
                if (PyErr_Occurred()) goto error;
                last = PyDict_GetItemWithError(marks, key);
                if (last == NULL && PyErr_Occurred()) goto error;
            }
            int64_t last_ts = 0;
            double last_value = 0.0;
            if (last != NULL) {
                if (!PyTuple_Check(last) || PyTuple_GET_SIZE(last) < 2) {
                    PyErr_SetString(PyExc_TypeError, "datadog_rows: a counter mark is not a tuple");
                    goto error;
                }
                last_ts = as_longlong(PyTuple_GET_ITEM(last, 0));
                if (last_ts == -1 && PyErr_Occurred()) goto error;
                last_value = PyFloat_AsDouble(PyTuple_GET_ITEM(last, 1));
                if (last_value == -1.0 && PyErr_Occurred()) goto error;
                if (ts <= last_ts) {
                    tally[C_OUT_OF_ORDER]++;
                    continue;
                }
            }
            PyObject *interval = NULL; /* set on a counter's first point */
            if (last != NULL && PyList_GET_SIZE(points) == 0 && ts >= oldest) {
                interval = interval_of(ts, last_ts, ts_obj, PyTuple_GET_ITEM(last, 0));
                if (interval == NULL) goto error;
            }
            PyObject *mark = atomic_pair(ts_obj, value_obj);
            if (mark == NULL) {
                Py_XDECREF(interval);
                goto error;
            }
            int rc = PyDict_SetItem(pending, key, mark);
            if (rc == 0) {
                Py_INCREF(mark);
                PyList_SetItem(mapped, 7, mark); /* steals; drops the old one */
            }
            if (rc < 0) {
                Py_DECREF(mark);
                Py_XDECREF(interval);
                goto error;
            }
            if (ts < oldest) {
                Py_DECREF(mark);
                tally[C_TOO_OLD]++;
                continue;
            }
            if (last == NULL) {
                Py_DECREF(mark);
                tally[C_COUNTER_FIRST]++;
                continue;
            }
            /* An increase past the largest double is inf, which JSON cannot hold: not sent,
             * counted as not finite, its mark kept all the same (as map_items). */
            if (value >= last_value && isinf(value - last_value)) {
                Py_DECREF(mark);
                Py_XDECREF(interval);
                tally[C_NOT_FINITE]++;
                continue;
            }
            if (interval != NULL) PyList_SetItem(mapped, 8, interval); /* steals */
            PyObject *delta = value >= last_value ? PyFloat_FromDouble(value - last_value)
                                                  : Py_NewRef(value_obj);
            if (delta == NULL) {
                Py_DECREF(mark);
                goto error;
            }
            PyObject *point = point_tuple(&seconds, floor_div_1000(ts), delta);
            Py_DECREF(delta);
            if (point == NULL) {
                Py_DECREF(mark);
                goto error;
            }
            rc = PyList_Append(points, point);
            Py_DECREF(point);
            if (rc == 0) rc = PyList_Append(PyList_GET_ITEM(mapped, 6), mark);
            Py_DECREF(mark);
            if (rc < 0) goto error;
        }
        if (owned != NULL) { /* as map_items' end and render_all take it */
            int rc = 0;
            if (PyList_GET_SIZE(points) > 0) {
                rc = render_row(&b, head, points, tail, PyList_GET_ITEM(owned, 8), f_scalar);
                if (rc == 0) rc = emit_part(&b, f_data, f_ends);
                if (rc == 0) rc = PyList_Append(f_kept, row_kept(owned) ? owned : Py_None);
            } else if (PyList_GET_ITEM(owned, 7) != Py_None) {
                rc = PyDict_SetItem(f_updates, key, PyList_GET_ITEM(owned, 7));
            }
            Py_CLEAR(owned);
            if (rc < 0) goto error;
        }
    }
    seen_release(seen_names);
    seen_release(seen_heads);
    PyMem_Free(b.data);
    Py_CLEAR(seconds.obj);
    for (int c = 0; c < C_COUNT; c++) {
        if (!tally[c]) continue;
        PyObject *before = PyList_GET_ITEM(counts, c);
        long long was = as_longlong(before);
        if (was == -1 && PyErr_Occurred()) return NULL;
        PyObject *now = PyLong_FromLongLong(was + tally[c]);
        if (now == NULL) return NULL;
        PyList_SetItem(counts, c, now);
    }
    return PyLong_FromSsize_t(i);
error:
    Py_XDECREF(owned);
    seen_release(seen_names);
    seen_release(seen_heads);
    PyMem_Free(b.data);
    Py_XDECREF(seconds.obj);
    return NULL;
}

/* distinct_rows(items, index) -> list or None: when every item is a row datadog_rows maps (a
 * tuple of a bytes key, samples and None) whose key the index holds, no two of one label set
 * (one info), their infos in order, else None: a step datadog_rows may map fused, each row
 * final once mapped (map_items merges the samples of a label set met twice in a step into one
 * row). datadog_rows takes the infos from it instead of looking each row up again. */
static PyObject *distinct_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "distinct_rows(items: list, index)");
        return NULL;
    }
    if (args[1] == Py_None) Py_RETURN_NONE;
    KeyIndex *x = key_index_of(args[1]);
    if (x == NULL) return NULL;
    PyObject *items = args[0];
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (x->cap == 0) Py_RETURN_NONE;
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    PyObject **seen = PyMem_Calloc(cap, sizeof(PyObject *));
    if (seen == NULL) return PyErr_NoMemory();
    PyObject *infos = PyList_New(n);
    if (infos == NULL) {
        PyMem_Free(seen);
        return NULL;
    }
    uint64_t hashes[AHEAD] = {0};
    for (Py_ssize_t j = 0; j < n && j < AHEAD; j++) fetch_ahead(x, items, j, hashes);
    int distinct = 1;
    for (Py_ssize_t j = 0; j < n && distinct; j++) {
        PyObject *item = PyList_GET_ITEM(items, j);
        PyObject *key = row_key(items, j);
        if (key == NULL || PyTuple_GET_ITEM(item, 2) != Py_None) {
            distinct = 0;
            break;
        }
        uint64_t h = hashes[j % AHEAD];
        if (j + AHEAD < n) fetch_ahead(x, items, j + AHEAD, hashes);
        if (j + 1 < n) fetch_found(x, hashes[(j + 1) % AHEAD]);
        PyObject *info = key_index_get(x, key, h);
        if (info == NULL) {
            distinct = 0;
            break;
        }
        size_t at = ((uintptr_t)info >> 4) & (cap - 1);
        while (seen[at] != NULL && seen[at] != info) at = (at + 1) & (cap - 1);
        if (seen[at] == info) distinct = 0;
        seen[at] = info;
        PyList_SET_ITEM(infos, j, Py_NewRef(info));
    }
    PyMem_Free(seen);
    if (!distinct) {
        Py_DECREF(infos); /* its unset items are NULL, which list_dealloc passes over */
        Py_RETURN_NONE;
    }
    return infos;
}

/* datadog_commit(store, rows, now): CounterStore.commit_rows' loop. For each row (a list, as
 * datadog_rows makes it) whose final mark (row[7]) is set, store[row[0]] becomes (ts, value,
 * now), moved to the end (the dict is kept least recently committed first); a kept mark newer
 * than the row's stays, its time of commit renewed (never back in time). */
static PyObject *datadog_commit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_CheckExact(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "datadog_commit(store: dict, rows: list, now)");
        return NULL;
    }
    PyObject *store = args[0], *rows = args[1], *now = args[2];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (row == Py_None) continue; /* a series of one point, not a counter (render_all) */
        if (!PyList_Check(row) || PyList_GET_SIZE(row) < 8) {
            PyErr_SetString(PyExc_TypeError, "datadog_commit: a row is not a mapped row");
            return NULL;
        }
        PyObject *final = PyList_GET_ITEM(row, 7);
        if (final == Py_None) continue;
        if (!PyTuple_Check(final) || PyTuple_GET_SIZE(final) < 2) {
            PyErr_SetString(PyExc_TypeError, "datadog_commit: a counter mark is not a pair");
            return NULL;
        }
        PyObject *key = PyList_GET_ITEM(row, 0);
        Py_INCREF(key); /* the row may be the only holder, and the store is changed below */
        PyObject *current = PyDict_GetItemWithError(store, key);
        PyObject *source = final;
        if (current != NULL) {
            if (!PyTuple_Check(current) || PyTuple_GET_SIZE(current) < 2) {
                PyErr_SetString(PyExc_TypeError, "datadog_commit: a kept mark is not a tuple");
                Py_DECREF(key);
                return NULL;
            }
            int newer = PyObject_RichCompareBool(PyTuple_GET_ITEM(current, 0),
                                                 PyTuple_GET_ITEM(final, 0), Py_GT);
            if (newer < 0) {
                Py_DECREF(key);
                return NULL;
            }
            if (newer) source = current;
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
        PyObject *value = PyTuple_Pack(3, PyTuple_GET_ITEM(source, 0),
                                       PyTuple_GET_ITEM(source, 1), now);
        if (value == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyObject_GC_UnTrack(value); /* an int and two floats */
        int rc = current != NULL ? PyDict_DelItem(store, key) : 0;
        if (rc == 0) rc = PyDict_SetItem(store, key, value);
        Py_DECREF(value);
        Py_DECREF(key);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* datadog_render(rows, start, heads, scalar, out) appends to out the JSON of rows[start:] as
 * datadog.render makes it, and returns the index of the first row it left to Python: one whose
 * head (heads[(metric, type)]) or tags' JSON (info[4]) is not made yet, or not a plain row.
 * scalar is the function that writes one number (orjson.dumps): every value goes through it. */

/* ---- Datadog: a label set's tags and counter key, for the memo's misses ----------------- */

#define TAG_MAX 200 /* intake.MAX_TAG_LENGTH */

/* A label set's pair i as two borrowed strs; -1 with a TypeError naming `who` otherwise. */
static int str_pair(PyObject *labels, Py_ssize_t i, const char *who, PyObject **key,
                    PyObject **value) {
    PyObject *pair = PyTuple_GET_ITEM(labels, i);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
        !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
        PyErr_Format(PyExc_TypeError, "%s: labels are (str, str) pairs", who);
        return -1;
    }
    *key = PyTuple_GET_ITEM(pair, 0);
    *value = PyTuple_GET_ITEM(pair, 1);
    return 0;
}

/* key ":" value lowercased into out when both are ASCII and the result is a tag as it stands
 * (names._TAG_FAST: a letter, then up to 199 of [a-z0-9_-:./], not ending with ':'): its
 * length, else -1 (normalize_tag decides). */
static Py_ssize_t plain_tag(PyObject *key, PyObject *value, char *out) {
    if (!PyUnicode_IS_ASCII(key) || !PyUnicode_IS_ASCII(value)) return -1;
    Py_ssize_t nk = PyUnicode_GET_LENGTH(key), nv = PyUnicode_GET_LENGTH(value);
    if (nk + 1 + nv > TAG_MAX) return -1;
    memcpy(out, PyUnicode_DATA(key), (size_t)nk);
    out[nk] = ':';
    memcpy(out + nk + 1, PyUnicode_DATA(value), (size_t)nv);
    Py_ssize_t n = nk + 1 + nv;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = out[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + ('a' - 'A'));
        out[i] = c;
        int ok = (c >= 'a' && c <= 'z') ||
                 (i > 0 && ((c >= '0' && c <= '9') || c == '_' || c == '-' || c == ':' ||
                            c == '.' || c == '/'));
        if (!ok) return -1;
    }
    return out[n - 1] == ':' ? -1 : n;
}

/* series_tags(labels, host_label, static_tags, normalize_tag) -> (tags, host): names.series_tags
 * (its twin and contract), normalize_tag called only for a tag that is not one as it stands. */
static PyObject *series_tags(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "series_tags(labels, host_label, static_tags, normalize)");
        return NULL;
    }
    PyObject *labels = args[0], *host_label = args[1], *statics = args[2], *normalize = args[3];
    PyObject *tags = PyList_New(0), *seen = PySet_New(NULL), *host = NULL, *result = NULL;
    PyObject *iter = NULL;
    char buf[TAG_MAX];
    if (tags == NULL || seen == NULL) goto done;
    host = PyUnicode_FromStringAndSize("", 0);
    if (host == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *key, *value;
        if (str_pair(labels, i, "series_tags", &key, &value) < 0) goto done;
        if (PyUnicode_CompareWithASCIIString(key, "__name__") == 0) continue;
        if (host_label != Py_None) {
            int same = PyUnicode_Compare(key, host_label);
            if (same == -1 && PyErr_Occurred()) goto done;
            if (same == 0) {
                Py_SETREF(host, Py_NewRef(value));
                continue;
            }
        }
        Py_ssize_t n = plain_tag(key, value, buf);
        PyObject *tag;
        if (n >= 0) {
            tag = PyUnicode_FromStringAndSize(buf, n);
        } else {
            PyObject *joined = PyUnicode_FromFormat("%U:%U", key, value);
            if (joined == NULL) goto done;
            tag = PyObject_CallOneArg(normalize, joined);
            Py_DECREF(joined);
        }
        if (tag == NULL) goto done;
        int known = PyObject_IsTrue(tag) ? PySet_Contains(seen, tag) : 1;
        if (known < 0 || (!known && (PySet_Add(seen, tag) < 0 || PyList_Append(tags, tag) < 0))) {
            Py_DECREF(tag);
            goto done;
        }
        Py_DECREF(tag);
    }
    iter = PyObject_GetIter(statics);
    if (iter == NULL) goto done;
    PyObject *tag;
    while ((tag = PyIter_Next(iter)) != NULL) {
        int truth = PyObject_IsTrue(tag);
        int known = truth < 0 ? -1 : truth ? PySet_Contains(seen, tag) : 1;
        if (known < 0 || (!known && (PySet_Add(seen, tag) < 0 || PyList_Append(tags, tag) < 0))) {
            Py_DECREF(tag);
            goto done;
        }
        Py_DECREF(tag);
    }
    if (PyErr_Occurred()) goto done;
    result = PyTuple_Pack(2, tags, host);
done:
    Py_XDECREF(iter);
    Py_XDECREF(tags);
    Py_XDECREF(seen);
    Py_XDECREF(host);
    return result;
}

static int buf_varint(Buf *b, uint64_t v) {
    char tmp[10];
    int n = 0;
    while (v >= 0x80) {
        tmp[n++] = (char)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (char)v;
    return buf_put(b, tmp, n);
}

static int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* attributes_bytes(attributes) -> otlp_mapping.encoder.attributes_bytes: each (key, value) as
 * a NumberDataPoint.attributes field (7) holding KeyValue{key, AnyValue{string_value}}, every
 * string sent even when empty. For the memo's misses (~6 us a label set in Python). */
static PyObject *attributes_bytes(PyObject *self, PyObject *attributes) {
    if (!PyTuple_Check(attributes)) {
        PyErr_SetString(PyExc_TypeError, "attributes_bytes: a tuple of (str, str) pairs");
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attributes); i++) {
        PyObject *key_text, *value_text;
        if (str_pair(attributes, i, "attributes_bytes", &key_text, &value_text) < 0) goto done;
        Py_ssize_t nk, nv;
        const char *key = PyUnicode_AsUTF8AndSize(key_text, &nk);
        if (key == NULL) goto done;
        const char *value = PyUnicode_AsUTF8AndSize(value_text, &nv);
        if (value == NULL) goto done;
        uint64_t any = 1 + (uint64_t)varint_size((uint64_t)nv) + (uint64_t)nv;
        uint64_t kv = 1 + (uint64_t)varint_size((uint64_t)nk) + (uint64_t)nk + 1 +
                      (uint64_t)varint_size(any) + any;
        if (buf_put(&b, "\x3a", 1) < 0 || buf_varint(&b, kv) < 0 || buf_put(&b, "\x0a", 1) < 0 ||
            buf_varint(&b, (uint64_t)nk) < 0 || buf_put(&b, key, nk) < 0 ||
            buf_put(&b, "\x12", 1) < 0 || buf_varint(&b, any) < 0 || buf_put(&b, "\x0a", 1) < 0 ||
            buf_varint(&b, (uint64_t)nv) < 0 || buf_put(&b, value, nv) < 0)
            goto done;
    }
    result = PyBytes_FromStringAndSize(b.data != NULL ? b.data : "", b.size);
done:
    PyMem_Free(b.data);
    return result;
}

/* counter_key(labels) -> counters.counter_key(labels): each name and value as its length in
 * characters, ':', its UTF-8 bytes. */
static PyObject *counter_key(PyObject *self, PyObject *labels) {
    if (!PyTuple_Check(labels)) {
        PyErr_SetString(PyExc_TypeError, "counter_key(labels): a tuple of (str, str) pairs");
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *texts[2];
        if (str_pair(labels, i, "counter_key", &texts[0], &texts[1]) < 0) goto done;
        for (int j = 0; j < 2; j++) {
            PyObject *text = texts[j];
            Py_ssize_t size;
            const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
            if (utf8 == NULL) goto done;
            char head[24];
            int n = snprintf(head, sizeof head, "%zd:", PyUnicode_GET_LENGTH(text));
            if (buf_put(&b, head, n) < 0 || buf_put(&b, utf8, size) < 0) goto done;
        }
    }
    result = PyBytes_FromStringAndSize(b.data != NULL ? b.data : "", b.size);
done:
    PyMem_Free(b.data);
    return result;
}

static PyObject *datadog_render(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* ends: a bytearray; out is then one too, each part written to it followed by a comma,
     * and where the next one starts appended to ends as a native int64 (datadog.Rendered). */
    PyObject *ends = nargs == 7 ? args[6] : NULL;
    if (nargs < 5 || nargs > 7 || !PyList_Check(args[0]) || !PyDict_Check(args[2]) ||
        (ends == NULL ? !PyList_Check(args[4])
                      : !PyByteArray_CheckExact(args[4]) || !PyByteArray_CheckExact(ends)) ||
        (nargs >= 6 && args[5] != Py_None && !PyList_Check(args[5]))) {
        PyErr_SetString(PyExc_TypeError,
                        "datadog_render(rows, start, heads, scalar, out[, kept[, ends]])");
        return NULL;
    }
    PyObject *rows_list = args[0], *heads = args[2], *scalar = args[3], *out = args[4];
    /* kept: each rendered row again, or None where its JSON is all that is left of it
     * (datadog.render_all) */
    PyObject *kept = nargs >= 6 && args[5] != Py_None ? args[5] : NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Buf b = {NULL, 0, 0};
    Seen seen_heads[SEEN_SLOTS] = {{0}};
    Py_ssize_t n = PyList_GET_SIZE(rows_list);
    for (; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows_list, i);
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != 10) break;
        PyObject *info = PyList_GET_ITEM(row, 9);
        if (!PyList_CheckExact(info) || PyList_GET_SIZE(info) < 5) break;
        PyObject *tail = PyList_GET_ITEM(info, 4);
        PyObject *points = PyList_GET_ITEM(row, 5);
        PyObject *interval = PyList_GET_ITEM(row, 8);
        if (!PyBytes_CheckExact(tail) || !PyList_CheckExact(points) ||
            !PyLong_CheckExact(interval))
            break;
        PyObject *metric = PyList_GET_ITEM(row, 1), *type = PyList_GET_ITEM(row, 2);
        PyObject *head = seen_get(seen_heads, heads, metric, type);
        if (head == NULL) {
            if (PyErr_Occurred()) goto error;
            break;
        }
        if (!PyBytes_CheckExact(head)) break;
        if (render_row(&b, head, points, tail, interval, scalar) < 0 ||
            emit_part(&b, out, ends) < 0)
            goto error;
        if (kept != NULL) {
            if (PyList_Append(kept, row_kept(row) ? row : Py_None) < 0) goto error;
        }
    }
    PyMem_Free(b.data);
    seen_release(seen_heads);
    return PyLong_FromSsize_t(i);
error:
    PyMem_Free(b.data);
    seen_release(seen_heads);
    return NULL;
}

/* ---- OTLP: Mapper.gauge_row and Mapper.counter_row, compiled -------------------------------
 *
 * otlp_rows(plan, start, output, updates, streams, created, counter_state, delta) maps the
 * plan entries from start on that are rows (samples not None) with role "gauge", "updown" or
 * "counter", as those methods do (output.encoded(info, data, kind) gives a metric's list of
 * encoded points, made with the row's first point); returns (index of the first entry left to
 * Python, data points added). */

static PyObject *s_encoded, *s_attrs, *s_counter_key, *s_rest, *s_gauge, *s_updown, *s_sum;
static PyObject *s_metric_key, *s_metrics, *s_parts, *s_name, *s_shape, *s_kind_key;

/* An attribute a class keeps in a __slots__ slot (RowInfo's, _Entry's), read at the slot's
 * offset: getattr looked the name up in the type's dicts and called the member descriptor, ~5
 * of them a row, more than encoding its point. The offset is the one getattr's descriptor
 * reads, taken from the object's type and kept while the type is unchanged (its version tag);
 * any other object, or an empty slot, is read by getattr. */
typedef struct {
    PyObject **name;
    PyTypeObject *type; /* a strong reference once learnt */
    unsigned int version;
    Py_ssize_t offset;
} Slot;

static Slot sl_attrs = {&s_attrs, NULL, 0, 0}, sl_counter_key = {&s_counter_key, NULL, 0, 0},
            sl_rest = {&s_rest, NULL, 0, 0}, sl_metric_key = {&s_metric_key, NULL, 0, 0},
            sl_parts = {&s_parts, NULL, 0, 0}, sl_name = {&s_name, NULL, 0, 0},
            sl_shape = {&s_shape, NULL, 0, 0}, sl_kind_key = {&s_kind_key, NULL, 0, 0};

static PyObject *s_message, *s_head, *s_tail, *s_field;
static Slot sl_message = {&s_message, NULL, 0, 0}, sl_head = {&s_head, NULL, 0, 0},
            sl_tail = {&s_tail, NULL, 0, 0}, sl_field = {&s_field, NULL, 0, 0};

static int slot_learn(Slot *s, PyTypeObject *tp) {
    if (tp->tp_getattro != PyObject_GenericGetAttr) return 0;
    PyObject *found = _PyType_Lookup(tp, *s->name); /* borrowed; gives tp a version tag */
    if (found == NULL || !Py_IS_TYPE(found, &PyMemberDescr_Type) ||
        !(tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return 0;
    PyMemberDef *member = ((PyMemberDescrObject *)found)->d_member;
    if (member->type != T_OBJECT_EX) return 0;
    Py_XSETREF(s->type, (PyTypeObject *)Py_NewRef(tp));
    s->version = tp->tp_version_tag;
    s->offset = member->offset;
    return 1;
}

/* Whether obj's slot is at s->offset: its type is the one learnt, unchanged, or is learnt now. */
static inline int slot_ready(Slot *s, PyObject *obj) {
    PyTypeObject *tp = Py_TYPE(obj);
    return (tp == s->type && tp->tp_version_tag == s->version &&
            (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) ||
           slot_learn(s, tp);
}

/* getattr(obj, name), a new reference. */
static inline PyObject *slot_get(Slot *s, PyObject *obj) {
    if (slot_ready(s, obj)) {
        PyObject *value = *(PyObject **)((char *)obj + s->offset);
        if (value != NULL) return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, *s->name);
}

/* What otlp_rows reads of the Output (its attributes, each a new reference, or NULL): the
 * request's metrics by key, the mapper's headers, the request's tree, its temporality and the
 * _Entry class. Without metrics every row asks Output.encoded; without the rest a metric new
 * to the request is made by it. */
typedef struct {
    PyObject *metrics, *heads, *tree, *temporality, *entry_type;
} OutputRefs;

static PyObject *s_heads, *s_tree, *s_temporality, *s_entry_type, *s_ctx, *s_data;
static Slot sl_ctx = {&s_ctx, NULL, 0, 0}, sl_data = {&s_data, NULL, 0, 0};

static void output_refs_clear(OutputRefs *o) {
    Py_CLEAR(o->metrics);
    Py_CLEAR(o->heads);
    Py_CLEAR(o->tree);
    Py_CLEAR(o->temporality);
    Py_CLEAR(o->entry_type);
}

static int output_refs(PyObject *output, OutputRefs *o) {
    PyObject **refs[5] = {&o->metrics, &o->heads, &o->tree, &o->temporality, &o->entry_type};
    PyObject *names[5] = {s_metrics, s_heads, s_tree, s_temporality, s_entry_type};
    for (int k = 0; k < 5; k++) {
        *refs[k] = PyObject_GetAttr(output, names[k]);
        if (*refs[k] == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                output_refs_clear(o);
                return -1;
            }
            PyErr_Clear();
        }
    }
    if (o->metrics == NULL || !PyDict_CheckExact(o->metrics)) {
        output_refs_clear(o);
    } else if (o->heads == NULL || !PyDict_CheckExact(o->heads) || o->tree == NULL ||
               !PyDict_CheckExact(o->tree) || o->temporality == NULL || o->entry_type == NULL ||
               !PyType_Check(o->entry_type)) {
        Py_CLEAR(o->heads); /* made by Output.encoded */
    }
    return 0;
}

/* obj.<slot> = value (a new reference taken), at the slot's offset as slot_get reads it. */
static int slot_put(Slot *s, PyObject *obj, PyObject *value) {
    if (slot_ready(s, obj)) {
        Py_XSETREF(*(PyObject **)((char *)obj + s->offset), Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, *s->name, value);
}

/* A value of dict under key, made by make() and put there when it has none; borrowed. */
static PyObject *dict_child(PyObject *dict, PyObject *key, PyObject *(*make)(Py_ssize_t)) {
    PyObject *found = PyDict_GetItemWithError(dict, key);
    if (found != NULL || PyErr_Occurred()) return found;
    PyObject *made = make(0);
    if (made == NULL) return NULL;
    int rc = PyDict_SetItem(dict, key, made);
    Py_DECREF(made);
    return rc < 0 ? NULL : made;
}

static PyObject *new_dict(Py_ssize_t unused) {
    (void)unused;
    return PyDict_New();
}

/* Output._entry for a row's metric new to the request (key: its info's metric key), when
 * the mapper has its headers already: the _Entry made with them (what its __init__ sets, slot
 * by slot), kept under key and appended to its resource's scope's metrics; its points' list,
 * a new reference. NULL without an error when the headers are not made yet (Python makes
 * them). The entry and its list are untracked: they hold bytes, strings and ints, and some
 * 40,000 of them were made per second, each setting off its share of young collections. */
static PyObject *new_entry(OutputRefs *o, PyObject *info, PyObject *data, PyObject *kind,
                           PyObject *key) {
    PyObject *ctx = slot_get(&sl_ctx, info), *name = ctx ? slot_get(&sl_name, info) : NULL;
    PyObject *out = NULL, *head_key = NULL, *entry = NULL, *parts = NULL;
    if (name == NULL) goto done;
    if (!PyTuple_Check(ctx) || PyTuple_GET_SIZE(ctx) < 2) goto done; /* Python's, then */
    head_key = PyTuple_Pack(4, name, data, kind, o->temporality);
    if (head_key == NULL) goto done;
    PyObject *found = PyDict_GetItemWithError(o->heads, head_key); /* borrowed */
    if (found == NULL || !PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 3) goto done;
    PyTypeObject *type = (PyTypeObject *)o->entry_type;
    entry = type->tp_alloc(type, 0);
    parts = entry ? PyList_New(0) : NULL;
    if (parts == NULL) goto done;
    if (slot_put(&sl_head, entry, PyTuple_GET_ITEM(found, 0)) < 0 ||
        slot_put(&sl_tail, entry, PyTuple_GET_ITEM(found, 1)) < 0 ||
        slot_put(&sl_field, entry, PyTuple_GET_ITEM(found, 2)) < 0 ||
        slot_put(&sl_data, entry, data) < 0 || slot_put(&sl_message, entry, Py_None) < 0 ||
        slot_put(&sl_parts, entry, parts) < 0)
        goto done;
    if (PyObject_GC_IsTracked(entry)) PyObject_GC_UnTrack(entry);
    PyObject_GC_UnTrack(parts);
    PyObject *scopes = dict_child(o->tree, PyTuple_GET_ITEM(ctx, 0), new_dict);
    PyObject *entries = scopes ? dict_child(scopes, PyTuple_GET_ITEM(ctx, 1), PyList_New) : NULL;
    if (entries == NULL || PyDict_SetItem(o->metrics, key, entry) < 0 ||
        PyList_Append(entries, entry) < 0)
        goto done;
    out = Py_NewRef(parts);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(name);
    Py_XDECREF(head_key);
    Py_XDECREF(entry);
    Py_XDECREF(parts);
    return out;
}

/* Output.encoded(info, data, kind), a new reference: found here when the row's metric is in
 * the request already under the key its info keeps for this data (RowInfo._metric_key, in
 * Output._metrics), made here (new_entry) when it is not but its key and headers are, else by
 * calling it (which makes the metric, the headers or the key). A Python call per row cost
 * more than the point it encodes. */
static PyObject *encoded_parts(PyObject *output, OutputRefs *o, PyObject *info,
                               PyObject *data, PyObject *kind) {
    if (o->metrics != NULL) {
        PyObject *key = slot_get(&sl_metric_key, info);
        if (key == NULL) return NULL;
        PyObject *entry = NULL;
        int keyed = PyTuple_Check(key) && PyTuple_GET_SIZE(key) == 4 && PyTuple_GET_ITEM(key, 3) == data;
        if (keyed) entry = PyDict_GetItemWithError(o->metrics, key); /* borrowed */
        if (entry != NULL) {
            Py_DECREF(key);
            PyObject *parts = slot_get(&sl_parts, entry);
            if (parts == NULL || PyList_CheckExact(parts)) return parts;
            Py_DECREF(parts);
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        } else if (keyed && o->heads != NULL) {
            PyObject *parts = new_entry(o, info, data, kind, key);
            Py_DECREF(key);
            if (parts != NULL || PyErr_Occurred()) return parts;
        } else {
            Py_DECREF(key);
        }
    }
    return PyObject_CallMethodObjArgs(output, s_encoded, info, data, kind, NULL);
}

#define NS_PER_MS 1000000ULL
#define MAX_MS (UINT64_MAX / NS_PER_MS)

static int put_fixed64(Buf *b, uint8_t tag, uint64_t v) {
    char raw[9];
    raw[0] = (char)tag;
    memcpy(raw + 1, &v, 8); /* little-endian hosts only, checked at import */
    return buf_put(b, raw, 9);
}

/* _number_bytes: a framed NumberDataPoint (Gauge/Sum data_points field). */
static PyObject *number_bytes(Buf *b, PyObject *attrs, int64_t ts, int64_t start, int has_value,
                              double value) {
    if (ts < 0 || (uint64_t)ts > MAX_MS || start < 0 || (uint64_t)start > MAX_MS) {
        PyErr_SetString(PyExc_OverflowError, "otlp_rows: a time out of range");
        return NULL;
    }
    b->size = 0;
    if (buf_put(b, "\0\0\0\0\0", 5) < 0) return NULL; /* room for the frame's tag and length */
    if (start && put_fixed64(b, 0x11, (uint64_t)start * NS_PER_MS) < 0) return NULL;
    if (ts && put_fixed64(b, 0x19, (uint64_t)ts * NS_PER_MS) < 0) return NULL;
    if (has_value) {
        char raw[9];
        raw[0] = 0x21;
        memcpy(raw + 1, &value, 8);
        if (buf_put(b, raw, 9) < 0) return NULL;
    }
    if (buf_bytes(b, attrs) < 0) return NULL;
    if (!has_value && buf_put(b, "\x40\x01", 2) < 0) return NULL;
    Py_ssize_t size = b->size - 5;
    char head[6];
    int n = 0;
    head[n++] = 0x0A;
    uint64_t v = (uint64_t)size;
    do {
        uint8_t byte = v & 0x7F;
        v >>= 7;
        head[n++] = (char)(v ? byte | 0x80 : byte);
    } while (v);
    memcpy(b->data + 5 - n, head, n);
    return PyBytes_FromStringAndSize(b->data + 5 - n, size + n);
}

static PyObject *counter_state(PyObject *type, int64_t start, int64_t last, PyObject *value) {
    PyObject *a = PyLong_FromLongLong(start), *l = PyLong_FromLongLong(last);
    PyObject *items = (a && l) ? PyTuple_Pack(3, a, l, value) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(l);
    if (items == NULL) return NULL;
    PyObject *call = PyTuple_Pack(1, items); /* tuple.__new__(type, items) */
    Py_DECREF(items);
    if (call == NULL) return NULL;
    PyObject *out = PyTuple_Type.tp_new((PyTypeObject *)type, call, NULL);
    Py_DECREF(call);
    /* Two ints and a float: never part of a cycle, and kept for every stream; untracked so that
     * collections (which making thousands of them per request sets off) need not walk them. */
    if (out != NULL && PyObject_IS_GC(out)) PyObject_GC_UnTrack(out);
    return out;
}

static int get_int64(PyObject *tuple, Py_ssize_t index, int64_t *out) {
    *out = as_longlong(PyTuple_GET_ITEM(tuple, index));
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *otlp_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyList_Check(args[0]) || !PyDict_Check(args[3]) ||
        !PyDict_Check(args[4]) || !PyDict_Check(args[5]) || !PyType_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "otlp_rows: unexpected arguments");
        return NULL;
    }
    PyObject *plan = args[0], *output = args[2], *updates = args[3], *streams = args[4];
    PyObject *created = args[5], *state_type = args[6];
    int delta = PyObject_IsTrue(args[7]);
    if (delta < 0) return NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    OutputRefs refs = {NULL, NULL, NULL, NULL, NULL};
    if (output_refs(output, &refs) < 0) return NULL;
    Buf b = {NULL, 0, 0};
    long long added = 0;
    Py_ssize_t n = PyList_GET_SIZE(plan);
    for (; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(plan, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4) break;
        PyObject *info = PyTuple_GET_ITEM(entry, 0), *kind = PyTuple_GET_ITEM(entry, 1);
        PyObject *role = PyTuple_GET_ITEM(entry, 2), *samples = PyTuple_GET_ITEM(entry, 3);
        if (!PyTuple_CheckExact(samples) || !PyUnicode_Check(role)) break;
        int is_counter = PyUnicode_CompareWithASCIIString(role, "counter") == 0;
        int updown = PyUnicode_CompareWithASCIIString(role, "updown") == 0;
        if (!is_counter && !updown && PyUnicode_CompareWithASCIIString(role, "gauge") != 0) break;
        Py_ssize_t count = PyTuple_GET_SIZE(samples);
        int plain = 1;
        for (Py_ssize_t k = 0; k < count && plain; k++) {
            PyObject *sample = PyTuple_GET_ITEM(samples, k);
            plain = PyTuple_CheckExact(sample) && PyTuple_GET_SIZE(sample) == 2 &&
                    PyFloat_CheckExact(PyTuple_GET_ITEM(sample, 0)) &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(sample, 1));
        }
        if (!plain) break;
        PyObject *data = is_counter ? s_sum : (updown ? s_updown : s_gauge);
        PyObject *attrs = slot_get(&sl_attrs, info);
        if (attrs == NULL) goto error;
        if (!PyBytes_CheckExact(attrs)) {
            Py_DECREF(attrs);
            break;
        }
        PyObject *out = NULL; /* the metric's list: asked for with the row's first point */
        if (!is_counter) {
            out = encoded_parts(output, &refs, info, data, kind);
            if (out == NULL) goto error_attrs;
            if (!PyList_CheckExact(out)) {
                Py_DECREF(out);
                PyErr_SetString(PyExc_TypeError, "otlp_rows: encoded() made no list");
                goto error_attrs;
            }
            for (Py_ssize_t k = 0; k < count; k++) {
                PyObject *sample = PyTuple_GET_ITEM(samples, k);
                double value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(sample, 0));
                int64_t ts = as_longlong(PyTuple_GET_ITEM(sample, 1));
                if (ts == -1 && PyErr_Occurred()) {
                    Py_DECREF(out);
                    goto error_attrs;
                }
                uint64_t bits;
                memcpy(&bits, &value, 8);
                int stale = value != value && bits == STALE_BITS;
                PyObject *point = number_bytes(&b, attrs, ts, updown ? ts : 0, !stale, value);
                int rc = point == NULL ? -1 : PyList_Append(out, point);
                Py_XDECREF(point);
                if (rc < 0) {
                    Py_DECREF(out);
                    goto error_attrs;
                }
                added++;
            }
            Py_DECREF(out);
            Py_DECREF(attrs);
            continue;
        }
        PyObject *key_obj = slot_get(&sl_counter_key, info);
        PyObject *rest = key_obj ? slot_get(&sl_rest, info) : NULL;
        if (rest == NULL) {
            Py_XDECREF(key_obj);
            goto error_attrs;
        }
        PyObject *family = PyTuple_Check(kind) && PyTuple_GET_SIZE(kind) > 1 ? PyTuple_GET_ITEM(kind, 1) : NULL;
        int failed = 0;
        for (Py_ssize_t k = 0; k < count && !failed; k++) {
            PyObject *sample = PyTuple_GET_ITEM(samples, k);
            PyObject *value_obj = PyTuple_GET_ITEM(sample, 0);
            double value = PyFloat_AS_DOUBLE(value_obj);
            int64_t ts = as_longlong(PyTuple_GET_ITEM(sample, 1));
            if (ts == -1 && PyErr_Occurred()) {
                failed = 1;
                break;
            }
            PyObject *prev = PyDict_GetItemWithError(updates, key_obj);
            if (prev == NULL && !PyErr_Occurred()) prev = PyDict_GetItemWithError(streams, key_obj);
            if (prev == NULL && PyErr_Occurred()) {
                failed = 1;
                break;
            }
            int64_t p_start = 0, p_last = 0;
            double p_value = 0.0;
            if (prev != NULL) {
                if (!PyTuple_Check(prev) || PyTuple_GET_SIZE(prev) != 3 || get_int64(prev, 0, &p_start) < 0 ||
                    get_int64(prev, 1, &p_last) < 0) {
                    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "otlp_rows: a stream state is not a CounterState");
                    failed = 1;
                    break;
                }
                p_value = PyFloat_AsDouble(PyTuple_GET_ITEM(prev, 2));
                if (p_value == -1.0 && PyErr_Occurred()) {
                    failed = 1;
                    break;
                }
            }
            uint64_t bits;
            memcpy(&bits, &value, 8);
            int64_t start;
            int has_value = 1;
            double point = value;
            PyObject *state = NULL;
            if (value != value && bits == STALE_BITS) {
                start = prev ? (delta ? p_last : p_start) : ts;
                if (start > ts) start = ts;
                has_value = 0;
            } else {
                int64_t explicit = 0;
                if (PyDict_GET_SIZE(created) && family != NULL) {
                    PyObject *lookup = PyTuple_Pack(2, family, rest);
                    if (lookup == NULL) {
                        failed = 1;
                        break;
                    }
                    PyObject *got = PyDict_GetItemWithError(created, lookup);
                    Py_DECREF(lookup);
                    if (got == NULL && PyErr_Occurred()) {
                        failed = 1;
                        break;
                    }
                    if (got != NULL) {
                        explicit = as_longlong(got);
                        if (explicit == -1 && PyErr_Occurred()) {
                            failed = 1;
                            break;
                        }
                    }
                }
                int reset = prev != NULL && (value < p_value || (ts >= explicit && explicit > p_last));
                if (value != value) { /* not a count: pass it on, never as a baseline */
                    if (delta) continue;
                    if (explicit && explicit <= ts) start = explicit;
                    else if (prev == NULL) start = ts;
                    else start = p_start < ts ? p_start : ts;
                } else if (!delta) {
                    if (explicit && explicit <= ts) start = explicit;
                    else if (prev == NULL) start = ts;
                    else if (reset) start = p_last + 1 < ts ? p_last + 1 : ts;
                    else start = p_start < ts ? p_start : ts;
                    if (prev == NULL || ts > p_last) {
                        state = counter_state(state_type, start, ts, value_obj);
                        if (state == NULL) {
                            failed = 1;
                            break;
                        }
                    }
                } else if (prev == NULL) {
                    state = counter_state(state_type, ts, ts, value_obj); /* the baseline */
                    if (state == NULL || PyDict_SetItem(updates, key_obj, state) < 0) failed = 1;
                    Py_XDECREF(state);
                    continue;
                } else if (ts <= p_last) {
                    continue; /* a repeat or out of order */
                } else {
                    state = counter_state(state_type, p_start, ts, value_obj);
                    if (state == NULL) {
                        failed = 1;
                        break;
                    }
                    start = p_last;
                    point = reset ? value : value - p_value;
                }
            }
            if (state != NULL) {
                int rc = PyDict_SetItem(updates, key_obj, state);
                Py_DECREF(state);
                if (rc < 0) {
                    failed = 1;
                    break;
                }
            }
            if (out == NULL) {
                out = encoded_parts(output, &refs, info, data, kind);
                if (out == NULL || !PyList_CheckExact(out)) {
                    if (out != NULL) PyErr_SetString(PyExc_TypeError, "otlp_rows: encoded() made no list");
                    failed = 1;
                    break;
                }
            }
            PyObject *encoded = number_bytes(&b, attrs, ts, start, has_value, point);
            if (encoded == NULL) {
                failed = 1;
                break;
            }
            int rc = PyList_Append(out, encoded);
            Py_DECREF(encoded);
            if (rc < 0) {
                failed = 1;
                break;
            }
            added++;
        }
        Py_DECREF(key_obj);
        Py_DECREF(rest);
        Py_DECREF(attrs);
        Py_XDECREF(out);
        if (failed) goto error;
        continue;
    error_attrs:
        Py_DECREF(attrs);
        goto error;
    }
    PyMem_Free(b.data);
    output_refs_clear(&refs);
    return Py_BuildValue("(nL)", i, added);
error:
    PyMem_Free(b.data);
    output_refs_clear(&refs);
    return NULL;
}

/* otlp_known(index, items, learnt) -> (infos, known): key_index_infos(index, items), and
 * whether every item is a row of a label set the index holds. When it is, this is Mapper.feed's
 * first loop for the step: each info's shape (when not None) put in learnt in the items' order;
 * else learnt is untouched and the loop runs in Python, with these infos. */
static PyObject *otlp_known(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "otlp_known(index, items: list, learnt: dict)");
        return NULL;
    }
    PyObject *infos = key_index_infos(self, args, 2);
    if (infos == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(infos);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(infos, i) == Py_None) return Py_BuildValue("(NO)", infos, Py_False);
    }
    PyObject *learnt = args[2];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *shape = slot_get(&sl_shape, PyList_GET_ITEM(infos, i));
        if (shape == NULL) goto error;
        int rc = 0;
        if (shape != Py_None) {
            if (PyTuple_CheckExact(shape) && PyTuple_GET_SIZE(shape) == 2) {
                rc = PyDict_SetItem(learnt, PyTuple_GET_ITEM(shape, 0), PyTuple_GET_ITEM(shape, 1));
            } else {
                PyErr_SetString(PyExc_TypeError, "otlp_known: a shape is not a pair");
                rc = -1;
            }
        }
        Py_DECREF(shape);
        if (rc < 0) goto error;
    }
    return Py_BuildValue("(NO)", infos, Py_True);
error:
    Py_DECREF(infos);
    return NULL;
}

/* otlp_plan(infos, items, start, kinds, plan) -> (index, points, unmapped): Mapper.feed's
 * second loop over the rows otlp_known gave infos for, from start: a row of a nameless label
 * set counts its samples unmapped, one without samples is passed over, one whose kind and role
 * kinds holds (by its kind_key) goes to plan as (info, kind, role, samples), unless its role is
 * "created"; returns where it stopped (the first row left to Python: its kind not resolved yet,
 * or a _created series), the samples it planned and those it counted unmapped. */
static PyObject *otlp_plan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        !PyDict_CheckExact(args[3]) || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "otlp_plan(infos, items, start, kinds, plan)");
        return NULL;
    }
    PyObject *infos = args[0], *items = args[1], *kinds = args[3], *plan = args[4];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(infos);
    if (PyList_GET_SIZE(items) < n) n = PyList_GET_SIZE(items);
    long long points = 0, unmapped = 0;
    for (; i < n; i++) {
        PyObject *info = PyList_GET_ITEM(infos, i), *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) break;
        PyObject *samples = PyTuple_GET_ITEM(item, 1);
        if (!PyTuple_CheckExact(samples)) break;
        PyObject *name = slot_get(&sl_name, info);
        if (name == NULL) return NULL;
        int named = PyUnicode_CheckExact(name) ? PyUnicode_GET_LENGTH(name) > 0 : -1;
        Py_DECREF(name);
        if (named < 0) break;
        Py_ssize_t count = PyTuple_GET_SIZE(samples);
        if (!named) {
            unmapped += count;
            continue;
        }
        if (count == 0) continue;
        /* A time OTLP's nanoseconds cannot hold: the Python loop leaves that sample out. */
        int in_range = 1;
        for (Py_ssize_t k = 0; k < count && in_range; k++) {
            PyObject *sample = PyTuple_GET_ITEM(samples, k);
            if (!PyTuple_CheckExact(sample) || PyTuple_GET_SIZE(sample) != 2) {
                in_range = 0;
                break;
            }
            int overflow = 0;
            long long ts = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(sample, 1), &overflow);
            if (ts == -1 && PyErr_Occurred()) return NULL;
            in_range = !overflow && ts >= 0 && (unsigned long long)ts <= MAX_MS;
        }
        if (!in_range) break;
        PyObject *kind_key = slot_get(&sl_kind_key, info);
        if (kind_key == NULL) return NULL;
        PyObject *found = PyDict_GetItemWithError(kinds, kind_key); /* borrowed */
        Py_DECREF(kind_key);
        if (found == NULL) {
            if (PyErr_Occurred()) return NULL;
            break;
        }
        if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 2) break;
        PyObject *role = PyTuple_GET_ITEM(found, 1);
        if (!PyUnicode_CheckExact(role) || PyUnicode_CompareWithASCIIString(role, "created") == 0)
            break;
        PyObject *entry = PyTuple_Pack(4, info, PyTuple_GET_ITEM(found, 0), role, samples);
        if (entry == NULL) return NULL;
        /* Never in a cycle, and thousands of them live for a step: untracked, young
         * collections need not walk them. */
        PyObject_GC_UnTrack(entry);
        int rc = PyList_Append(plan, entry);
        Py_DECREF(entry);
        if (rc < 0) return NULL;
        points += count;
    }
    return Py_BuildValue("(nLL)", i, points, unmapped);
}

/* otlp_serialized(tree, resource_head, scope_head, written) -> bytes: Output.serialized, the
 * request as bytes: for each resource of tree (resource -> scope -> [_Entry]) a
 * resource_metrics field holding resource_head(resource), then each scope's scope_metrics
 * (scope_head(scope), then its metrics); a metric whose points are all encoded written from
 * its head, its data's key, its points and its tail (what _Entry.write joins), one with a upb
 * message as written(entry) gives it. Sizes are summed first, then every byte is written once
 * into the result: in Python, each metric cost two keys made by uvarint and a dozen list
 * operations, ~12 % of a served otlp-all. */

static inline char *put_key(char *at, int number, Py_ssize_t size) {
    *at++ = (char)(number << 3 | 2);
    uint64_t v = (uint64_t)size;
    while (v >= 0x80) {
        *at++ = (char)(v | 0x80);
        v >>= 7;
    }
    *at++ = (char)v;
    return at;
}

static inline Py_ssize_t framed(Py_ssize_t size) { return 1 + varint_size((uint64_t)size) + size; }

static inline char *put_bytes(char *at, PyObject *bytes) {
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    memcpy(at, PyBytes_AS_STRING(bytes), (size_t)n);
    return at + n;
}

/* One metric of the request, as pass one found it. */
typedef struct {
    PyObject *head, *tail, *parts; /* borrowed from the entry (it lives through both passes) */
    PyObject *written;             /* a new reference: the metric as written(entry) gave it */
    Py_ssize_t data, size;         /* its data's bytes and its Metric's (both 0 if written) */
    int field;
} Metric;

static PyObject *otlp_serialized(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "otlp_serialized(tree: dict, resource_head, scope_head, written)");
        return NULL;
    }
    PyObject *tree = args[0], *result = NULL, *heads = NULL;
    Metric *metrics = NULL;
    Py_ssize_t *frames = NULL, metrics_n = 0, frames_n = 0, pos = 0;
    PyObject *resource, *scopes, *scope, *entries;
    while (PyDict_Next(tree, &pos, &resource, &scopes)) {
        if (!PyDict_CheckExact(scopes)) goto type_error;
        Py_ssize_t inner = 0;
        frames_n += 1 + PyDict_GET_SIZE(scopes);
        while (PyDict_Next(scopes, &inner, &scope, &entries)) {
            if (!PyList_CheckExact(entries)) goto type_error;
            metrics_n += PyList_GET_SIZE(entries);
        }
    }
    /* Pass one: the heads, each metric's parts and sizes, each frame's size (a resource's,
     * then each of its scopes', in order). */
    metrics = PyMem_Calloc((size_t)metrics_n + 1, sizeof(Metric));
    frames = PyMem_Calloc((size_t)frames_n + 1, sizeof(Py_ssize_t));
    heads = PyList_New(0);
    if (metrics == NULL || frames == NULL || heads == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t m = 0, f = 0, request = 0;
    pos = 0;
    while (PyDict_Next(tree, &pos, &resource, &scopes)) {
        PyObject *head = PyObject_CallOneArg(args[1], resource);
        if (head == NULL || PyList_Append(heads, head) < 0 || !PyBytes_CheckExact(head)) {
            Py_XDECREF(head);
            goto check;
        }
        Py_DECREF(head);
        Py_ssize_t resource_at = f++, resource_size = PyBytes_GET_SIZE(head), inner = 0;
        while (PyDict_Next(scopes, &inner, &scope, &entries)) {
            PyObject *scope_head = PyObject_CallOneArg(args[2], scope);
            if (scope_head == NULL || PyList_Append(heads, scope_head) < 0 ||
                !PyBytes_CheckExact(scope_head)) {
                Py_XDECREF(scope_head);
                goto check;
            }
            Py_DECREF(scope_head);
            Py_ssize_t scope_at = f++, scope_size = PyBytes_GET_SIZE(scope_head);
            for (Py_ssize_t k = 0; k < PyList_GET_SIZE(entries); k++, m++) {
                if (m >= metrics_n) goto type_error; /* a list grew under us */
                PyObject *entry = PyList_GET_ITEM(entries, k);
                Metric *out = &metrics[m];
                PyObject *message = slot_get(&sl_message, entry);
                if (message == NULL) goto done;
                Py_DECREF(message); /* the entry holds it */
                if (message != Py_None) {
                    out->written = PyObject_CallOneArg(args[3], entry);
                    if (out->written == NULL) goto done;
                    if (!PyBytes_CheckExact(out->written)) goto type_error;
                    scope_size += PyBytes_GET_SIZE(out->written);
                    continue;
                }
                PyObject *got[4] = {slot_get(&sl_head, entry), slot_get(&sl_tail, entry),
                                    slot_get(&sl_parts, entry), slot_get(&sl_field, entry)};
                int ok = got[0] && got[1] && got[2] && got[3];
                for (int g = 0; g < 4; g++) Py_XDECREF(got[g]); /* the entry holds them */
                if (!ok) goto done;
                if (!PyBytes_CheckExact(got[0]) || !PyBytes_CheckExact(got[1]) ||
                    !PyList_CheckExact(got[2]) || !PyLong_CheckExact(got[3]))
                    goto type_error;
                long field = PyLong_AsLong(got[3]);
                if (field < 1 || field > 15) goto type_error; /* a one-byte key */
                Py_ssize_t data = PyBytes_GET_SIZE(got[1]);
                for (Py_ssize_t q = 0; q < PyList_GET_SIZE(got[2]); q++) {
                    PyObject *part = PyList_GET_ITEM(got[2], q);
                    if (!PyBytes_CheckExact(part)) goto type_error;
                    data += PyBytes_GET_SIZE(part);
                }
                *out = (Metric){got[0], got[1], got[2], NULL, data,
                                PyBytes_GET_SIZE(got[0]) + framed(data), (int)field};
                scope_size += framed(out->size);
            }
            frames[scope_at] = scope_size;
            resource_size += framed(scope_size);
        }
        frames[resource_at] = resource_size;
        request += framed(resource_size);
    }
    if (m != metrics_n) goto type_error;
    /* Pass two: every byte, in order (no Python runs between the passes). */
    result = PyBytes_FromStringAndSize(NULL, request);
    if (result == NULL) goto done;
    char *at = PyBytes_AS_STRING(result);
    Py_ssize_t h = 0;
    m = f = pos = 0;
    while (PyDict_Next(tree, &pos, &resource, &scopes)) {
        at = put_key(at, 1, frames[f++]);
        at = put_bytes(at, PyList_GET_ITEM(heads, h++));
        Py_ssize_t inner = 0;
        while (PyDict_Next(scopes, &inner, &scope, &entries)) {
            at = put_key(at, 2, frames[f++]);
            at = put_bytes(at, PyList_GET_ITEM(heads, h++));
            for (Py_ssize_t k = 0; k < PyList_GET_SIZE(entries); k++, m++) {
                Metric *metric = &metrics[m];
                if (metric->written != NULL) {
                    at = put_bytes(at, metric->written);
                    continue;
                }
                at = put_key(at, 2, metric->size);
                at = put_bytes(at, metric->head);
                at = put_key(at, metric->field, metric->data);
                for (Py_ssize_t q = 0; q < PyList_GET_SIZE(metric->parts); q++)
                    at = put_bytes(at, PyList_GET_ITEM(metric->parts, q));
                at = put_bytes(at, metric->tail);
            }
        }
    }
    if (at != PyBytes_AS_STRING(result) + request) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "otlp_serialized: sizes and bytes differ");
    }
    goto done;
check:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "otlp_serialized: a head is not bytes");
    goto done;
type_error:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "otlp_serialized: not an Output's tree");
done:
    if (metrics != NULL) {
        for (Py_ssize_t i = 0; i < metrics_n; i++) Py_XDECREF(metrics[i].written);
    }
    PyMem_Free(metrics);
    PyMem_Free(frames);
    Py_XDECREF(heads);
    return result;
}

/* ---- HashedTuple: a tuple that keeps its hash ---------------------------------------------
 *
 * otlp_mapping's keys (a label set without its name, a counter's stream key, a metric's key)
 * are tuples looked up three to five times per sample. A tuple of ~10 pairs hashes every pair
 * again each time, ~25 objects read, most out of cache for a 50,000-label-set memo; a hash kept
 * in a Python attribute cost a lookup in the instance's dict (three more objects). Made here,
 * the hash is computed once and kept in the word after the last item, which the allocation
 * holds anyway (PyType_GenericAlloc allocates one item more than asked), stored inverted so
 * that zero means "not kept". Only a subclass that adds nothing after the items (no __dict__:
 * ``__slots__ = ()``) keeps it, since a __dict__ pointer lives in that word; any other, or a
 * tuple made by tuple.__new__, hashes as a tuple. Equal to, and hashing as, the plain tuple. */
static inline int hashed_tuple_keeps(PyTypeObject *type) {
    return type->tp_basicsize == PyTuple_Type.tp_basicsize &&
           type->tp_itemsize == PyTuple_Type.tp_itemsize && type->tp_dictoffset == 0;
}

static PyObject *hashed_tuple_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *iterable = NULL;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_UnpackTuple(args, "HashedTuple", 1, 1, &iterable))
        return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_TypeError, "HashedTuple(iterable)"), NULL);
    PyObject *items = PySequence_Tuple(iterable);
    if (items == NULL) return NULL;
    Py_hash_t h = PyObject_Hash(items);
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    int keeps = hashed_tuple_keeps(type);
    PyObject *self = h == -1 ? NULL : type->tp_alloc(type, keeps ? n + 1 : n);
    if (self == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    PyTupleObject *t = (PyTupleObject *)self;
    for (Py_ssize_t i = 0; i < n; i++) t->ob_item[i] = Py_NewRef(PyTuple_GET_ITEM(items, i));
    Py_DECREF(items);
    if (keeps) {
        Py_SET_SIZE(self, n);
        t->ob_item[n] = (PyObject *)(uintptr_t)~(uint64_t)(int64_t)h;
    }
    return self;
}

static Py_hash_t hashed_tuple_hash(PyObject *self) {
    if (hashed_tuple_keeps(Py_TYPE(self))) {
        uint64_t kept = (uint64_t)(uintptr_t)((PyTupleObject *)self)->ob_item[Py_SIZE(self)];
        if (kept) return (Py_hash_t)(int64_t)~kept;
    }
    return PyTuple_Type.tp_hash(self);
}

static PyType_Slot hashed_tuple_slots[] = {
    {Py_tp_new, hashed_tuple_new},
    {Py_tp_hash, hashed_tuple_hash},
    {Py_tp_doc, "HashedTuple(iterable): a tuple whose hash is computed once and kept."},
    {0, NULL},
};

static PyType_Spec hashed_tuple_spec = {
    "gotk_relay.destinations._rows.HashedTuple", 0, 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, hashed_tuple_slots,
};

/* -- the vector registers after ISA-L ----------------------------------------------------- */

/* ISA-L's AVX2/AVX-512 code returns without VZEROUPPER: until something clears them, the
 * upper halves of the thread's vector registers stay "dirty" and every SSE instruction after
 * (cramjam's decompression, this module's loops, CPython's own) carries a false dependency on
 * them. Measured here: a 646 kB snappy decompression 163 -> 266 us for as long as they stay
 * so. destinations/deflate.py calls this after each ISA-L call. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
static int have_avx = 0;

__attribute__((target("avx"))) static void
zero_upper(void)
{
    _mm256_zeroupper();
}
#endif

/* untrack(obj): the collector stops walking obj (a container, tracked or not; anything else is
 * left alone). For memo entries that hold only strings, numbers and tuples of them, which can
 * be part of no cycle: every full collection walked each of a memo's label sets, holding the
 * event loop for tens of milliseconds (docs/performance.md, "Memos the collector skips"). */
static PyObject *untrack(PyObject *self, PyObject *obj) {
    (void)self;
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj)) PyObject_GC_UnTrack(obj);
    Py_RETURN_NONE;
}

static PyObject *
clear_upper(PyObject *self, PyObject *noargs)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_avx) {
        zero_upper();
    }
#endif
    Py_RETURN_NONE;
}

/* Whether the thread's vector registers have dirty upper halves now (XGETBV(1), XINUSE bits 2
 * and 6: YMM and ZMM upper halves of registers 0-15), None where the CPU does not say. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static int have_xinuse = 0;

__attribute__((target("xsave"))) static unsigned long long
xinuse(void)
{
    return _xgetbv(1);
}
#endif

static PyObject *
upper_dirty(PyObject *self, PyObject *noargs)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_xinuse) {
        return PyBool_FromLong((xinuse() & ((1u << 2) | (1u << 6))) != 0);
    }
#endif
    Py_RETURN_NONE;
}

static PyObject *
upper_clearing(PyObject *self, PyObject *noargs)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return PyBool_FromLong(have_avx);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"untrack", untrack, METH_O, "untrack(obj): the collector stops walking obj."},
    {"clear_upper", clear_upper, METH_NOARGS,
     "clear_upper(): VZEROUPPER where the CPU has AVX (see destinations/deflate.py)."},
    {"upper_dirty", upper_dirty, METH_NOARGS,
     "upper_dirty() -> whether the vector registers' upper halves are in use (None: unknown)."},
    {"upper_clearing", upper_clearing, METH_NOARGS,
     "upper_clearing() -> whether clear_upper clears anything on this CPU."},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(data, pos, budget) -> (rows, next): series of a WriteRequest as (key, samples, raw)."},
    {"labels", labels, METH_O,
     "labels(key) -> a row key's label set, or None where rows.labels must decode it."},
    {"series_tags", (PyCFunction)(void (*)(void))series_tags, METH_FASTCALL,
     "datadog_mapping.names.series_tags, normalize_tag called where a tag needs it."},
    {"attributes_bytes", attributes_bytes, METH_O, "otlp_mapping.encoder.attributes_bytes."},
    {"counter_key", counter_key, METH_O, "datadog_mapping.counters.counter_key(labels)."},
    {"step_fits", (PyCFunction)(void (*)(void))step_fits, METH_FASTCALL,
     "step_fits(step, start, points) -> (index, used): the rows of a step that fit."},
    {"datadog_rows", (PyCFunction)(void (*)(void))datadog_rows, METH_FASTCALL,
     "datadog_mapping.map_items' loop for rows (see datadog_mapping)."},
    {"key_index", key_index, METH_NOARGS,
     "key_index() -> a new index of label sets' infos by their bytes (see datadog_rows)."},
    {"key_index_add", (PyCFunction)(void (*)(void))key_index_add, METH_FASTCALL,
     "key_index_add(index, key, info): what map_items adds to the memo's by_bytes."},
    {"key_index_size", key_index_size, METH_O, "key_index_size(index) -> entries held."},
    {"key_index_infos", (PyCFunction)(void (*)(void))key_index_infos, METH_FASTCALL,
     "key_index_infos(index, items) -> list\n\n"
     "For each item, the info the index holds for its key if it is a row (key, samples, raw),\n"
     "else None."},
    {"distinct_rows", (PyCFunction)(void (*)(void))distinct_rows, METH_FASTCALL,
     "The infos of a step's rows when each is known and of its own label set, else None."},
    {"datadog_commit", (PyCFunction)(void (*)(void))datadog_commit, METH_FASTCALL,
     "CounterStore.commit_rows' loop (see datadog_mapping.counters)."},
    {"datadog_render", (PyCFunction)(void (*)(void))datadog_render, METH_FASTCALL,
     "datadog.render for rows whose parts are made (see datadog); with kept, each row again\n"
     "or None (datadog.render_all)."},
    {"otlp_known", (PyCFunction)(void (*)(void))otlp_known, METH_FASTCALL,
     "Mapper.feed's first loop, for a step of rows whose label sets are all known."},
    {"otlp_plan", (PyCFunction)(void (*)(void))otlp_plan, METH_FASTCALL,
     "Mapper.feed's second loop, for the rows otlp_known found."},
    {"otlp_serialized", (PyCFunction)(void (*)(void))otlp_serialized, METH_FASTCALL,
     "otlp_mapping.Output.serialized (see otlp_mapping.output)."},
    {"otlp_rows", (PyCFunction)(void (*)(void))otlp_rows, METH_FASTCALL,
     "otlp_mapping.Mapper's gauge_row and counter_row, for a plan's rows (see otlp_mapping)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rows", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rows(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_rows reads doubles as little-endian");
        return NULL;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    have_avx = __builtin_cpu_supports("avx");
    {
        unsigned int a, b, c, d;
        /* OSXSAVE, then XGETBV with ECX=1 (CPUID leaf 0xD, sub-leaf 1, EAX bit 2) */
        have_xinuse = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)) &&
                      __get_cpuid_count(0xD, 1, &a, &b, &c, &d) && (a & (1u << 2));
    }
#endif
    if (getrandom(&key_seed, sizeof key_seed, GRND_NONBLOCK) != (ssize_t)sizeof key_seed) {
        key_seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&probe; /* no entropy yet */
    }
    /* The attribute names and strings the loops look up, interned once. */
    static const struct {
        PyObject **at;
        const char *text;
    } interned[] = {
        {&s_encoded, "encoded"},
        {&s_attrs, "attrs"},
        {&s_counter_key, "counter_key"},
        {&s_rest, "rest"},
        {&s_gauge, "gauge"},
        {&s_updown, "updown"},
        {&s_sum, "sum"},
        {&s_metric_key, "_metric_key"},
        {&s_metrics, "_metrics"},
        {&s_parts, "parts"},
        {&s_name, "name"},
        {&s_shape, "shape"},
        {&s_kind_key, "kind_key"},
        {&s_message, "message"},
        {&s_head, "head"},
        {&s_tail, "tail"},
        {&s_field, "field"},
        {&s_heads, "_heads"},
        {&s_tree, "_tree"},
        {&s_temporality, "temporality"},
        {&s_entry_type, "entry_type"},
        {&s_ctx, "ctx"},
        {&s_data, "data"},
    };
    for (size_t k = 0; k < sizeof interned / sizeof interned[0]; k++) {
        *interned[k].at = PyUnicode_InternFromString(interned[k].text);
        if (*interned[k].at == NULL) return NULL;
    }
    PyObject *errors = PyImport_ImportModule("gotk_relay.wire.errors");
    if (errors == NULL) return NULL;
    DecodeError = PyObject_GetAttrString(errors, "DecodeError");
    Py_DECREF(errors);
    if (DecodeError == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *hashed = PyType_FromSpecWithBases(&hashed_tuple_spec, (PyObject *)&PyTuple_Type);
    if (hashed == NULL || PyModule_AddObject(m, "HashedTuple", hashed) < 0) {
        Py_XDECREF(hashed);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
