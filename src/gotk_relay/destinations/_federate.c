/* The federate store's ordering and text heads (gotk_relay.destinations.federate), compiled.
 *
 * Why in C: the first /federate after N new series puts them in label order and makes their
 * text heads. In Python that is tuple comparisons through the generic rich compare and an
 * f-string per label (about 6 us a series at 500,000 of them, issue 22); here a comparison
 * skips the labels two sets share by identity and compares the others' code points at once.
 *
 * Every function does a bounded amount of work per call (the caller chooses the size), so the
 * event loop that calls them is never held long. No Python code runs inside a call (only
 * PyUnicode_Compare and allocations), so the lists read cannot change under it.
 *
 * The order is Python's for the label tuples: pair by pair, name then value, by code point,
 * a set that is a prefix of another first (the pure-Python twins in federate.py are the
 * reference, tests/unit/test_federate_native.py compares them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* A label set: a tuple of (name, value) tuples of str, checked by labels_ok before use. */
static int
labels_ok(PyObject *labels)
{
    if (!PyTuple_CheckExact(labels)) {
        PyErr_SetString(PyExc_TypeError, "labels must be a tuple of (str, str) tuples");
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(labels);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(labels, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "labels must be a tuple of (str, str) tuples");
            return 0;
        }
    }
    return 1;
}

static int
str_cmp(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 0;
    }
    /* Both compact ASCII (the usual label): bytes compare as code points do. */
    if (PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b)) {
        Py_ssize_t la = PyUnicode_GET_LENGTH(a), lb = PyUnicode_GET_LENGTH(b);
        int c = memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(la < lb ? la : lb));
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        return la < lb ? -1 : (la > lb ? 1 : 0);
    }
    return PyUnicode_Compare(a, b); /* never fails on two str */
}

/* <0, 0, >0 as Python's a < b, a == b, a > b for two checked label sets. */
static int
labels_cmp(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 0;
    }
    Py_ssize_t na = PyTuple_GET_SIZE(a), nb = PyTuple_GET_SIZE(b);
    Py_ssize_t n = na < nb ? na : nb;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pa = PyTuple_GET_ITEM(a, i), *pb = PyTuple_GET_ITEM(b, i);
        if (pa == pb) {
            continue;
        }
        int c = str_cmp(PyTuple_GET_ITEM(pa, 0), PyTuple_GET_ITEM(pb, 0));
        if (c == 0) {
            c = str_cmp(PyTuple_GET_ITEM(pa, 1), PyTuple_GET_ITEM(pb, 1));
        }
        if (c != 0) {
            return c;
        }
    }
    return na < nb ? -1 : (na > nb ? 1 : 0);
}

/* A stored series' entry (federate.py): value, timestamp, stored, line, fresh, labels.
 *
 * Why a type of its own: the store keeps one per series (five per Flux object, 500,000 at
 * issue 22's scale). As a list that is a 56-byte object plus a 48-byte item array; here it is
 * one 80-byte block with the six fields inline. Python reads and writes it as a sequence
 * (entry[VALUE] = ...), exactly as its pure-Python twin, a list (federate._PyEntry). */
enum { VALUE, TIMESTAMP, STORED, LINE, FRESH, LABELS, FIELDS };

typedef struct {
    PyObject_HEAD
    PyObject *f[FIELDS];
} Entry;

static PyTypeObject EntryType;

#define IS_ENTRY(o) Py_IS_TYPE((o), &EntryType)
#define FIELD(o, k) (((Entry *)(o))->f[(k)])

/* Replace field k of an entry (held), releasing the old value after the entry is whole. */
static void
set_field(PyObject *entry, int k, PyObject *value)
{
    PyObject *old = FIELD(entry, k);
    FIELD(entry, k) = Py_NewRef(value);
    Py_XDECREF(old);
}

static PyObject *
Entry_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Entry() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != FIELDS) {
        PyErr_SetString(PyExc_TypeError,
                        "an entry must be six fields: value, timestamp, stored, line, fresh, labels");
        return NULL;
    }
    Entry *e = (Entry *)type->tp_alloc(type, 0);
    if (e == NULL) {
        return NULL;
    }
    for (int k = 0; k < FIELDS; k++) {
        e->f[k] = Py_NewRef(PyTuple_GET_ITEM(args, k));
    }
    return (PyObject *)e;
}

static int
Entry_traverse(Entry *e, visitproc visit, void *arg)
{
    for (int k = 0; k < FIELDS; k++) {
        Py_VISIT(e->f[k]);
    }
    return 0;
}

static int
Entry_clear(Entry *e)
{
    for (int k = 0; k < FIELDS; k++) {
        Py_CLEAR(e->f[k]);
    }
    return 0;
}

static void
Entry_dealloc(Entry *e)
{
    PyObject_GC_UnTrack(e);
    Entry_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static Py_ssize_t
Entry_length(PyObject *e)
{
    return FIELDS;
}

static PyObject *
Entry_item(PyObject *e, Py_ssize_t k)
{
    if (k < 0 || k >= FIELDS) {
        PyErr_SetString(PyExc_IndexError, "entry index out of range");
        return NULL;
    }
    PyObject *value = FIELD(e, k);
    if (value == NULL) { /* cleared by the collector */
        PyErr_SetString(PyExc_ValueError, "a cleared entry");
        return NULL;
    }
    return Py_NewRef(value);
}

static int
Entry_ass_item(PyObject *e, Py_ssize_t k, PyObject *value)
{
    if (k < 0 || k >= FIELDS) {
        PyErr_SetString(PyExc_IndexError, "entry index out of range");
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "an entry's fields cannot be deleted");
        return -1;
    }
    set_field(e, (int)k, value);
    return 0;
}

static PyObject *
Entry_repr(PyObject *e)
{
    for (int k = 0; k < FIELDS; k++) {
        if (FIELD(e, k) == NULL) {
            return PyUnicode_FromString("Entry(<cleared>)");
        }
    }
    return PyUnicode_FromFormat("Entry(%R, %R, %R, %R, %R, %R)", FIELD(e, 0), FIELD(e, 1),
                                FIELD(e, 2), FIELD(e, 3), FIELD(e, 4), FIELD(e, 5));
}

static PySequenceMethods Entry_as_sequence = {
    .sq_length = Entry_length,
    .sq_item = Entry_item,
    .sq_ass_item = Entry_ass_item,
};

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gotk_relay.destinations._federate.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Entry(value, timestamp, stored, line, fresh, labels): a stored series' fields,\n"
              "read and written as a sequence (entry[0] = value).",
    .tp_new = Entry_new,
    .tp_dealloc = (destructor)Entry_dealloc,
    .tp_traverse = (traverseproc)Entry_traverse,
    .tp_clear = (inquiry)Entry_clear,
    .tp_repr = Entry_repr,
    .tp_as_sequence = &Entry_as_sequence,
    .tp_hash = PyObject_HashNotImplemented,
};

/* entry[at] when entry is an Entry holding a checked label set there, else NULL (TypeError). */
static PyObject *
labels_of(PyObject *entry, Py_ssize_t at)
{
    if (!IS_ENTRY(entry) || at < 0 || at >= FIELDS || FIELD(entry, at) == NULL) {
        PyErr_SetString(PyExc_TypeError, "an entry must be an Entry holding labels at `at`");
        return NULL;
    }
    PyObject *labels = FIELD(entry, at);
    return labels_ok(labels) ? labels : NULL;
}

typedef struct {
    PyObject *labels;
    PyObject *entry;
} Item;

static PyObject *
sort_entries(PyObject *self, PyObject *args)
{
    PyObject *entries;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &entries, &at)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(entries);
    if (n < 2) {
        Py_RETURN_NONE;
    }
    Item *items = PyMem_New(Item, (size_t)n * 2);
    if (items == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        PyObject *labels = labels_of(entry, at);
        if (labels == NULL) {
            PyMem_Free(items);
            return NULL;
        }
        items[i].labels = labels;
        items[i].entry = entry;
    }
    /* Bottom-up merge sort (stable): insertion-sorted runs of 16, then merged by pairs. */
    Item *from = items, *to = items + n;
    for (Py_ssize_t lo = 0; lo < n; lo += 16) {
        Py_ssize_t hi = lo + 16 < n ? lo + 16 : n;
        for (Py_ssize_t i = lo + 1; i < hi; i++) {
            Item x = from[i];
            Py_ssize_t j = i;
            while (j > lo && labels_cmp(from[j - 1].labels, x.labels) > 0) {
                from[j] = from[j - 1];
                j--;
            }
            from[j] = x;
        }
    }
    for (Py_ssize_t width = 16; width < n; width *= 2) {
        for (Py_ssize_t lo = 0; lo < n; lo += 2 * width) {
            Py_ssize_t mid = lo + width < n ? lo + width : n;
            Py_ssize_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            Py_ssize_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                to[k++] = labels_cmp(from[j].labels, from[i].labels) < 0 ? from[j++] : from[i++];
            }
            while (i < mid) {
                to[k++] = from[i++];
            }
            while (j < hi) {
                to[k++] = from[j++];
            }
        }
        Item *swap = from;
        from = to;
        to = swap;
    }
    /* A permutation of the list's own items: no reference changes hands. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(entries, i, from[i].entry);
    }
    PyMem_Free(items);
    Py_RETURN_NONE;
}

/* Whether an entry is kept by a merge: entry[alive] is True (alive < 0: every entry). */
static int
kept(PyObject *entry, Py_ssize_t alive)
{
    return alive < 0 || FIELD(entry, alive) == Py_True;
}

/* A run's head in the merge's heap: its next entry's labels, and the run's index (the
 * earlier run first on equal labels). */
typedef struct {
    PyObject *labels;
    Py_ssize_t run;
} Head;

static int
head_less(const Head *x, const Head *y)
{
    int c = labels_cmp(x->labels, y->labels);
    return c < 0 || (c == 0 && x->run < y->run);
}

static void
sift_down(Head *heap, Py_ssize_t n, Py_ssize_t k)
{
    Head x = heap[k];
    for (;;) {
        Py_ssize_t child = 2 * k + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && head_less(&heap[child + 1], &heap[child])) {
            child++;
        }
        if (!head_less(&heap[child], &x)) {
            break;
        }
        heap[k] = heap[child];
        k = child;
    }
    heap[k] = x;
}

/* The runs' next entries (runs[r][positions[r]:]) merged onto out, `limit` taken at most.
 * One pass over the entries whatever the number of runs: the heads compared again and again
 * stay in the cache, where merging by pairs reads every entry's labels once per level. */
static PyObject *
merge_runs(PyObject *self, PyObject *args)
{
    PyObject *out, *runs, *positions;
    Py_ssize_t at, alive, limit;
    if (!PyArg_ParseTuple(args, "O!O!O!nnn", &PyList_Type, &out, &PyList_Type, &runs,
                          &PyList_Type, &positions, &at, &alive, &limit)) {
        return NULL;
    }
    Py_ssize_t k = PyList_GET_SIZE(runs);
    if (PyList_GET_SIZE(positions) != k) {
        PyErr_SetString(PyExc_ValueError, "one position per run");
        return NULL;
    }
    if (at < 0 || at >= FIELDS || (alive >= 0 && alive >= at)) {
        PyErr_SetString(PyExc_ValueError, "at is a field, and alive comes before it");
        return NULL;
    }
    Py_ssize_t *pos = PyMem_New(Py_ssize_t, (size_t)k + 1);
    Head *heap = PyMem_New(Head, (size_t)k + 1);
    PyObject *result = NULL;
    if (pos == NULL || heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t r = 0; r < k; r++) {
        PyObject *run = PyList_GET_ITEM(runs, r);
        if (!PyList_Check(run)) {
            PyErr_SetString(PyExc_TypeError, "runs must be lists");
            goto done;
        }
        pos[r] = PyLong_AsSsize_t(PyList_GET_ITEM(positions, r));
        if (pos[r] == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (pos[r] < 0 || pos[r] > PyList_GET_SIZE(run)) {
            PyErr_SetString(PyExc_ValueError, "a position is outside its run");
            goto done;
        }
        if (pos[r] < PyList_GET_SIZE(run)) {
            PyObject *labels = labels_of(PyList_GET_ITEM(run, pos[r]), at);
            if (labels == NULL) {
                goto done;
            }
            heap[n].labels = labels;
            heap[n].run = r;
            n++;
        }
    }
    for (Py_ssize_t i = n / 2 - 1; i >= 0; i--) {
        sift_down(heap, n, i);
    }
    for (Py_ssize_t taken = 0; taken < limit && n > 0; taken++) {
        Py_ssize_t r = heap[0].run;
        PyObject *run = PyList_GET_ITEM(runs, r);
        PyObject *entry = PyList_GET_ITEM(run, pos[r]);
        pos[r]++;
        if (kept(entry, alive) && PyList_Append(out, entry) < 0) {
            goto done;
        }
        /* PyList_Append runs no Python code: the runs are as they were. */
        if (pos[r] < PyList_GET_SIZE(run)) {
            PyObject *labels = labels_of(PyList_GET_ITEM(run, pos[r]), at);
            if (labels == NULL) {
                goto done;
            }
            heap[0].labels = labels;
        }
        else {
            heap[0] = heap[--n];
        }
        sift_down(heap, n, 0);
    }
    for (Py_ssize_t r = 0; r < k; r++) {
        PyObject *value = PyLong_FromSsize_t(pos[r]);
        if (value == NULL) {
            goto done;
        }
        PyList_SetItem(positions, r, value); /* steals value */
    }
    result = PyBool_FromLong(n > 0);
done:
    PyMem_Free(pos);
    PyMem_Free(heap);
    return result;
}

/* Escaped label value bytes: \ to \\, newline to \n, " to \". */
static int
put_escaped(char **w, const char *s, Py_ssize_t n)
{
    char *p = *w;
    for (Py_ssize_t k = 0; k < n; k++) {
        char c = s[k];
        if (c == '\\' || c == '"') {
            *p++ = '\\';
            *p++ = c;
        }
        else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        }
        else {
            *p++ = c;
        }
    }
    *w = p;
    return 0;
}

/* The text head of a checked label set (its name and the labels but __name__, escaped) with
 * `tail` after it, as bytes. */
static PyObject *
head_with(PyObject *labels, const char *tail, Py_ssize_t tail_len)
{
    Py_ssize_t n = PyTuple_GET_SIZE(labels);
    const char *name = "";
    Py_ssize_t name_len = 0;
    Py_ssize_t size = 2 + tail_len, pairs = 0;
    /* First pass: UTF-8 of every part (an ASCII str's own bytes) and the worst-case size. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(labels, i);
        Py_ssize_t kl, vl;
        const char *k = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &kl);
        const char *v = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vl);
        if (k == NULL || v == NULL) {
            return NULL;
        }
        if (kl == 8 && memcmp(k, "__name__", 8) == 0) {
            if (i == 0) {
                name = v;
                name_len = vl;
            }
            continue;
        }
        size += kl + 2 * vl + 4;
        pairs++;
    }
    size += name_len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        return NULL;
    }
    char *start = PyBytes_AS_STRING(out), *w = start;
    memcpy(w, name, (size_t)name_len);
    w += name_len;
    if (pairs) {
        *w++ = '{';
        int first = 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *pair = PyTuple_GET_ITEM(labels, i);
            Py_ssize_t kl, vl;
            /* Made by the first pass: cannot fail now. */
            const char *k = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &kl);
            const char *v = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vl);
            if (kl == 8 && memcmp(k, "__name__", 8) == 0) {
                continue;
            }
            if (!first) {
                *w++ = ',';
            }
            first = 0;
            memcpy(w, k, (size_t)kl);
            w += kl;
            *w++ = '=';
            *w++ = '"';
            put_escaped(&w, v, vl);
            *w++ = '"';
        }
        *w++ = '}';
    }
    memcpy(w, tail, (size_t)tail_len);
    w += tail_len;
    if (_PyBytes_Resize(&out, w - start) < 0) {
        return NULL;
    }
    return out;
}

static PyObject *
sample_head(PyObject *self, PyObject *labels)
{
    if (!labels_ok(labels)) {
        return NULL;
    }
    return head_with(labels, "", 0);
}

/* Make an entry's line again for its sample: here when the value is 1.0 or 0.0 (a Flux
 * output's, which need no Go float formatting) and the timestamp an int, else by `refresh`
 * (federate._refresh, the reference). 0, or -1 with an exception. */
static int
renew(PyObject *entry, PyObject *refresh)
{
    PyObject *value = FIELD(entry, VALUE);
    PyObject *ts = FIELD(entry, TIMESTAMP);
    PyObject *line = FIELD(entry, LINE);
    if (value == NULL || ts == NULL || line == NULL || FIELD(entry, LABELS) == NULL) {
        PyErr_SetString(PyExc_TypeError, "a cleared entry");
        return -1;
    }
    const char *shown = NULL;
    if (PyFloat_CheckExact(value)) {
        double v = PyFloat_AS_DOUBLE(value);
        if (v == 1.0) {
            shown = " 1.0 ";
        }
        else if (v == 0.0 && !signbit(v)) {
            shown = " 0.0 ";
        }
    }
    long long t = 0;
    int overflow = 1;
    if (PyLong_CheckExact(ts)) {
        t = PyLong_AsLongLongAndOverflow(ts, &overflow);
        if (t == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (shown == NULL || overflow || !(line == Py_None || PyBytes_CheckExact(line))) {
        PyObject *done = PyObject_CallOneArg(refresh, entry);
        Py_XDECREF(done);
        return done == NULL ? -1 : 0;
    }
    char tail[48];
    int tail_len = PyOS_snprintf(tail, sizeof tail, "%s%lld\n", shown, t);
    PyObject *made;
    if (line == Py_None) {
        PyObject *labels = FIELD(entry, LABELS);
        if (!labels_ok(labels)) {
            return -1;
        }
        made = head_with(labels, tail, tail_len);
    }
    else {
        /* The kept line's head: up to its last two spaces (" value timestamp\n"). */
        const char *b = PyBytes_AS_STRING(line);
        Py_ssize_t end = PyBytes_GET_SIZE(line), spaces = 0;
        while (end > 0 && spaces < 2) {
            if (b[--end] == ' ') {
                spaces++;
            }
        }
        if (spaces < 2) {
            PyErr_SetString(PyExc_ValueError, "a kept line without a value and a timestamp");
            return -1;
        }
        made = PyBytes_FromStringAndSize(NULL, end + tail_len);
        if (made != NULL) {
            memcpy(PyBytes_AS_STRING(made), b, (size_t)end);
            memcpy(PyBytes_AS_STRING(made) + end, tail, (size_t)tail_len);
        }
    }
    if (made == NULL) {
        return -1;
    }
    set_field(entry, LINE, made); /* the old line (bytes) has no finalizer */
    Py_DECREF(made);
    set_field(entry, FRESH, Py_True);
    return 0;
}

/* a < b for two timestamps: ints compared as C integers when they fit, anything else (the
 * refused entry's inf) as Python compares it. -1 on an error. A sample at the timestamp an
 * entry holds is not taken: the first one stays, as Prometheus keeps the first of a series'
 * samples at one timestamp (it refuses the others). */
static int
earlier(PyObject *a, PyObject *b)
{
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b)) {
        int oa, ob;
        long long x = PyLong_AsLongLongAndOverflow(a, &oa);
        long long y = PyLong_AsLongLongAndOverflow(b, &ob);
        if (!oa && !ob) {
            return x < y;
        }
    }
    return PyObject_RichCompareBool(a, b, Py_LT);
}

static PyObject *
lines_of(PyObject *self, PyObject *args)
{
    PyObject *entries, *refresh, *oldest = Py_None;
    if (!PyArg_ParseTuple(args, "O!O|O", &PyList_Type, &entries, &refresh, &oldest)) {
        return NULL;
    }
    if (oldest == Py_None) {
        oldest = NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    /* refresh runs Python code: sizes are read again after it, and the entry held. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!IS_ENTRY(entry) || FIELD(entry, STORED) == NULL) {
            PyErr_SetString(PyExc_TypeError, "an entry must be an Entry");
            goto error;
        }
        if (FIELD(entry, STORED) != Py_True) {
            continue;
        }
        int old = oldest == NULL ? 0 : earlier(FIELD(entry, TIMESTAMP), oldest);
        if (old < 0) {
            goto error;
        }
        if (old) {
            continue; /* out of the lookback window: kept, not written */
        }
        Py_INCREF(entry);
        if (FIELD(entry, FRESH) != Py_True && renew(entry, refresh) < 0) {
            Py_DECREF(entry);
            goto error;
        }
        PyObject *line = FIELD(entry, LINE);
        int failed = line == NULL || PyList_Append(out, line) < 0;
        Py_DECREF(entry);
        if (failed) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a cleared entry");
            }
            goto error;
        }
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static PyObject *
index_entries(PyObject *self, PyObject *args)
{
    PyObject *entries, *label, *index;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O!nnUO!", &PyList_Type, &entries, &start, &stop, &label,
                          &PyDict_Type, &index)) {
        return NULL;
    }
    if (start < 0) {
        start = 0;
    }
    for (Py_ssize_t i = start; i < stop && i < PyList_GET_SIZE(entries); i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!IS_ENTRY(entry) || FIELD(entry, STORED) == NULL) {
            PyErr_SetString(PyExc_TypeError, "an entry must be an Entry");
            return NULL;
        }
        if (FIELD(entry, STORED) != Py_True) {
            continue;
        }
        PyObject *labels = FIELD(entry, LABELS);
        if (labels == NULL || !labels_ok(labels)) {
            return NULL;
        }
        /* The last value of the label (as selectors.value_of reads it), when not empty. */
        PyObject *value = NULL;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(labels); k++) {
            PyObject *pair = PyTuple_GET_ITEM(labels, k);
            if (str_cmp(PyTuple_GET_ITEM(pair, 0), label) == 0) {
                value = PyTuple_GET_ITEM(pair, 1);
            }
        }
        if (value == NULL || PyUnicode_GET_LENGTH(value) == 0) {
            continue;
        }
        /* A new list may start a garbage collection (whose finalizers run Python code): what
         * is used across it is held. */
        Py_INCREF(entry);
        Py_INCREF(value);
        /* A value's one entry, or a list of its entries (federate._Index: a list is a list of
         * entries, an entry is never a list). */
        int failed = 0;
        PyObject *posting = PyDict_GetItemWithError(index, value);
        if (posting == NULL) {
            failed = PyErr_Occurred() != NULL || PyDict_SetItem(index, value, entry) < 0;
        }
        else if (PyList_CheckExact(posting)) {
            Py_INCREF(posting);
            failed = PyList_Append(posting, entry) < 0;
            Py_DECREF(posting);
        }
        else if (!IS_ENTRY(posting)) {
            PyErr_SetString(PyExc_TypeError, "an index maps values to entries or lists of them");
            failed = 1;
        }
        else {
            Py_INCREF(posting); /* held before the new list, given to it after */
            PyObject *both = PyList_New(2);
            if (both == NULL) {
                Py_DECREF(posting);
                failed = 1;
            }
            else {
                PyList_SET_ITEM(both, 0, posting);
                Py_INCREF(entry);
                PyList_SET_ITEM(both, 1, entry);
                failed = PyDict_SetItem(index, value, both) < 0;
                Py_DECREF(both);
            }
        }
        Py_DECREF(value);
        Py_DECREF(entry);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* stamp(entries, values, timestamp): federate.update_outputs' loop over a group it knows,
 * entries and values pairwise. Why in C: in the Flux steady state it runs for every output of
 * every object, every scrape (bench.inprocess flux-heavy: ~6 % of a request in Python). */
static PyObject *
stamp_entries(PyObject *self, PyObject *args)
{
    PyObject *entries, *values, *timestamp;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &entries, &PyTuple_Type, &values,
                          &timestamp)) {
        return NULL;
    }
    if (PyList_GET_SIZE(entries) != PyTuple_GET_SIZE(values)) {
        PyErr_SetString(PyExc_ValueError, "stamp: as many values as entries are needed");
        return NULL;
    }
    /* A comparison may run Python code (a timestamp that is not an int): sizes are read again
     * and the entry held across it. Replaced fields are floats, ints and bools (no finalizer). */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries) && i < PyTuple_GET_SIZE(values); i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!IS_ENTRY(entry) || FIELD(entry, TIMESTAMP) == NULL) {
            PyErr_SetString(PyExc_TypeError, "an entry must be an Entry");
            return NULL;
        }
        Py_INCREF(entry);
        int due = earlier(FIELD(entry, TIMESTAMP), timestamp);
        if (due > 0) {
            set_field(entry, VALUE, PyTuple_GET_ITEM(values, i));
            set_field(entry, TIMESTAMP, timestamp);
            set_field(entry, FRESH, Py_False);
        }
        Py_DECREF(entry);
        if (due < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* update_known(series, start, get) -> int: FederateStore.update's loop from series[start] on,
 * for as long as each series is the usual one: no sample (nothing to do), or one sample of a
 * float that is not NaN at an int timestamp, no metadata, and ``get(labels)`` (the store's
 * identity map) gives an Entry that holds this very labels tuple and is stored. Such an entry
 * takes the sample if it is newer than the one held. Returns the index of the first series it leaves to the
 * Python loop (len(series) when none): a new or refused series, a stale marker, several
 * samples, metadata to apply. Why in C: the Flux inputs come every scrape (bench.inprocess
 * flux-heavy: ~5 % of a request in Python). */
static PyObject *
update_known(PyObject *self, PyObject *args)
{
    PyObject *series, *get;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nO", &PyTuple_Type, &series, &i, &get)) {
        return NULL;
    }
    if (i < 0) {
        i = 0;
    }
    /* ``series`` (a tuple, held by the caller) and its items cannot change under get(). */
    for (; i < PyTuple_GET_SIZE(series); i++) {
        PyObject *one = PyTuple_GET_ITEM(series, i);
        if (!PyTuple_Check(one) || PyTuple_GET_SIZE(one) < 5) {
            break;
        }
        PyObject *labels = PyTuple_GET_ITEM(one, 0), *samples = PyTuple_GET_ITEM(one, 1);
        if (!PyTuple_Check(samples)) {
            break;
        }
        if (PyTuple_GET_SIZE(samples) == 0) {
            continue;
        }
        if (PyTuple_GET_SIZE(samples) != 1 || PyTuple_GET_ITEM(one, 4) != Py_None) {
            break;
        }
        PyObject *sample = PyTuple_GET_ITEM(samples, 0);
        if (!PyTuple_Check(sample) || PyTuple_GET_SIZE(sample) != 3) {
            break;
        }
        PyObject *value = PyTuple_GET_ITEM(sample, 0), *ts = PyTuple_GET_ITEM(sample, 1);
        if (!PyFloat_CheckExact(value) || isnan(PyFloat_AS_DOUBLE(value)) ||
            !PyLong_CheckExact(ts)) {
            break;
        }
        PyObject *entry = PyObject_CallOneArg(get, labels);
        if (entry == NULL) {
            return NULL;
        }
        if (!IS_ENTRY(entry) || FIELD(entry, LABELS) != labels || FIELD(entry, STORED) != Py_True) {
            Py_DECREF(entry);
            break;
        }
        int due = earlier(FIELD(entry, TIMESTAMP), ts);
        if (due > 0) {
            set_field(entry, VALUE, value);
            set_field(entry, TIMESTAMP, ts);
            set_field(entry, FRESH, Py_False);
        }
        Py_DECREF(entry);
        if (due < 0) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"sort", sort_entries, METH_VARARGS,
     "sort(entries, at) -> None\n\nSort the list of entries (Entry) in place by entry[at], a label\n"
     "set, in Python's order for label tuples (stable). O(n log n) work in one call."},
    {"merge", merge_runs, METH_VARARGS,
     "merge(out, runs, positions, at, alive, limit) -> bool\n\nMerge the runs (lists of entries,\n"
     "each sorted by entry[at]) from their positions onto out (the earlier run's first on\n"
     "equal labels), taking `limit` entries at most; those whose entry[alive] is not True are\n"
     "dropped (alive < 0: none is). positions is updated; True while entries are left."},
    {"lines", lines_of, METH_VARARGS,
     "lines(entries, refresh, oldest=None) -> list[bytes]\n\nThe kept lines of the stored entries\n"
     "(those timestamped at oldest or later, when given), each made again first when its\n"
     "sample changed (here for the values 1.0 and 0.0, by refresh(entry) for the others)."},
    {"index", index_entries, METH_VARARGS,
     "index(entries, start, stop, label, index) -> None\n\nAdd entries[start:stop] that are\n"
     "stored to index (a dict: the label's value, when not empty, to its one entry or a list of\n"
     "two or more)."},
    {"stamp", stamp_entries, METH_VARARGS,
     "stamp(entries, values, timestamp) -> None\n\nEach entry whose timestamp is before\n"
     "`timestamp` takes the value at its place in `values` and that timestamp, and is no longer\n"
     "fresh (federate.update_outputs for a group it knows)."},
    {"update_known", update_known, METH_VARARGS,
     "update_known(series, start, get) -> int\n\nFederateStore.update's loop from series[start]\n"
     "for the usual series (one float sample, no metadata, a stored entry for its very labels\n"
     "tuple by get(labels)); the index of the first one left to Python."},
    {"sample_head", sample_head, METH_O,
     "sample_head(labels) -> bytes\n\ntext.sample_head(text.series_name(labels), labels), UTF-8."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    if (PyType_Ready(&EntryType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Entry", (PyObject *)&EntryType);
}

/* A static type (Entry): one interpreter's, so no per-interpreter GIL slot. */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "gotk_relay.destinations._federate",
    "The federate store's label order and text heads (see destinations.federate).", 0, methods,
    slots,
};

PyMODINIT_FUNC
PyInit__federate(void)
{
    return PyModuleDef_Init(&definition);
}
