/* The Flux rules' steady shortcut (rewriter.FluxRewriter.steady), its two loops compiled.
 *
 * In a quiet cluster every request brings each Flux object's one gotk_resource_info series
 * with a newer timestamp; the shortcut checks that every routed series is such a scrape and
 * then updates each object's state and joins its outputs' pieces. Written in Python, those
 * two loops read and write some 25 slots per object: a fifth of what a flux-heavy request
 * cost in process. Here they read the slots at their offsets (learnt once from the classes'
 * member descriptors, by ``setup``) and do exactly what the Python loops do, in the same
 * order; anything they do not model (a type that is not the expected one, a timestamp that
 * is not an int, a value that is not a float) returns None before any state changes, and the
 * caller takes the general path, as the Python loop's own refusals do.
 *
 * The Python loops (``FluxRewriter._steady_pick`` and ``_steady_apply``) are the reference;
 * tests/unit/test_flux_steady.py runs the relay with either and requires the same queues,
 * store and state as the general path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <structmember.h>

#define NEVER INT64_MIN

static PyTypeObject *RouteType, *InfoType, *InputType;

/* Slot offsets. Route: */
static Py_ssize_t r_forward, r_input, r_labels, r_obj, r_ready, r_suspended, r_values;
/* InfoObject (and FluxObject's, inherited): */
static Py_ssize_t o_gone, o_deadline, o_out_last, o_newest_value_ts, o_state_ts, o_encoded_for,
    o_pieces, o_last_seen, o_ready, o_suspended, o_values, o_interval, o_open, o_outputs;
/* Input: */
static Py_ssize_t i_dropped, i_value_ts, i_stale_ts;

static PyObject *name_key; /* "__name__" */

static inline PyObject *get(PyObject *o, Py_ssize_t off) { return *(PyObject **)((char *)o + off); }

/* Set a slot; the value it replaces is an int, a str, a bool or a tuple of them. */
static inline void put(PyObject *o, Py_ssize_t off, PyObject *value) {
    PyObject **at = (PyObject **)((char *)o + off);
    PyObject *old = *at;
    Py_INCREF(value);
    *at = value;
    Py_XDECREF(old);
}

static int learn(PyTypeObject *type, const char *name, Py_ssize_t *out) {
    PyObject *found = PyObject_GetAttrString((PyObject *)type, name);
    if (found == NULL)
        return -1;
    int ok = Py_IS_TYPE(found, &PyMemberDescr_Type);
    if (ok) {
        PyMemberDef *member = ((PyMemberDescrObject *)found)->d_member;
        ok = member->type == T_OBJECT_EX && !(member->flags & READONLY);
        *out = member->offset;
    }
    Py_DECREF(found);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable slot", type->tp_name, name);
        return -1;
    }
    return 0;
}

static PyObject *setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "setup(Route, InfoObject, Input)");
        return NULL;
    }
    PyTypeObject *route = (PyTypeObject *)args[0], *info = (PyTypeObject *)args[1],
                 *input = (PyTypeObject *)args[2];
    if (learn(route, "forward", &r_forward) || learn(route, "input", &r_input) ||
        learn(route, "labels", &r_labels) || learn(route, "obj", &r_obj) ||
        learn(route, "ready", &r_ready) || learn(route, "suspended", &r_suspended) ||
        learn(route, "values", &r_values) || learn(info, "gone", &o_gone) ||
        learn(info, "deadline", &o_deadline) || learn(info, "out_last", &o_out_last) ||
        learn(info, "newest_value_ts", &o_newest_value_ts) ||
        learn(info, "state_ts", &o_state_ts) || learn(info, "encoded_for", &o_encoded_for) ||
        learn(info, "pieces", &o_pieces) || learn(info, "last_seen", &o_last_seen) ||
        learn(info, "ready", &o_ready) || learn(info, "suspended", &o_suspended) ||
        learn(info, "values", &o_values) || learn(info, "interval", &o_interval) ||
        learn(info, "open", &o_open) || learn(info, "outputs", &o_outputs) ||
        learn(input, "dropped", &i_dropped) || learn(input, "value_ts", &i_value_ts) ||
        learn(input, "stale_ts", &i_stale_ts))
        return NULL;
    Py_INCREF(route);
    Py_INCREF(info);
    Py_INCREF(input);
    Py_XSETREF(RouteType, route);
    Py_XSETREF(InfoType, info);
    Py_XSETREF(InputType, input);
    Py_RETURN_NONE;
}

/* An exact int in int64's range (0 with *ok cleared otherwise: the caller declines). */
static inline int64_t as_i64(PyObject *v, int *ok) {
    if (v == NULL || !PyLong_CheckExact(v)) {
        *ok = 0;
        return 0;
    }
    int overflow = 0;
    long long out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    return (int64_t)out;
}

/* A slot that is set and true (bool, or anything Python calls true); -1 on error. */
static inline int truthy(PyObject *v) {
    if (v == Py_True)
        return 1;
    if (v == Py_False || v == NULL)
        return 0;
    return PyObject_IsTrue(v);
}

/* Distinct objects: pointers in an open-addressed table of 2^bits slots. */
typedef struct {
    PyObject **slots;
    size_t mask;
} Seen;

static int seen_add(Seen *s, PyObject *key) { /* 1 added, 0 there already */
    size_t i = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull >> 20;
    for (;; i++) {
        PyObject **at = &s->slots[i & s->mask];
        if (*at == NULL) {
            *at = key;
            return 1;
        }
        if (*at == key)
            return 0;
    }
}

/* steady(series, get, names, label_value, prefixes, encoder, begin, join, changed, chunk):
 *   what FluxRewriter.steady's two loops do. None: declined (nothing changed, or ``begin``
 *   declined); else (groups, chunks, blocks, outputs, ts): the objects' outputs and values,
 *   the full chunks joined, the pieces not joined yet, the outputs written, and their
 *   timestamp (None: no object picked). */
static PyObject *steady(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 || RouteType == NULL) {
        PyErr_SetString(PyExc_TypeError, "steady: 10 arguments, after setup()");
        return NULL;
    }
    PyObject *series = args[0], *lookup = args[1], *names = args[2], *label_value = args[3],
             *prefixes = args[4], *encoder = args[5], *begin = args[6], *join = args[7],
             *changed = args[8];
    Py_ssize_t chunk = PyLong_AsSsize_t(args[9]);
    if (chunk == -1 && PyErr_Occurred())
        return NULL;
    /* A tuple (the batch's own): the callbacks below cannot change it under the loop. */
    PyObject *fast = PySequence_Tuple(series);
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fast);
    PyObject **items = &PyTuple_GET_ITEM(fast, 0);
    PyObject *result = NULL, *picked = PyList_New(0), *ts_obj = NULL, *route = NULL;
    PyObject *groups = NULL, *chunks = NULL, *blocks = NULL, *clock = NULL, *gap_obj = NULL;
    Seen seen = {NULL, 0};
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap <<= 1;
    seen.slots = PyMem_Calloc(cap, sizeof(PyObject *));
    seen.mask = cap - 1;
    if (picked == NULL || seen.slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t ts = 0;
    Py_ssize_t outputs = 0;
    int ok = 1;
    /* The first loop: every routed series a quiet scrape of its object, or None. */
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = items[k];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3)
            goto decline;
        PyObject *labels = PyTuple_GET_ITEM(item, 0);
        Py_XSETREF(route, PyObject_Vectorcall(lookup, &labels, 1, NULL));
        if (route == NULL)
            goto done;
        if (route == Py_None || Py_TYPE(route) != RouteType || get(route, r_labels) != labels) {
            PyObject *name = NULL;
            if (PyTuple_Check(labels) && PyTuple_GET_SIZE(labels) > 0) {
                PyObject *first = PyTuple_GET_ITEM(labels, 0);
                if (PyTuple_Check(first) && PyTuple_GET_SIZE(first) == 2) {
                    PyObject *key = PyTuple_GET_ITEM(first, 0);
                    int eq = key == name_key ? 1 : PyObject_RichCompareBool(key, name_key, Py_EQ);
                    if (eq < 0)
                        goto done;
                    if (eq) {
                        name = PyTuple_GET_ITEM(first, 1);
                        Py_INCREF(name);
                    }
                }
            }
            if (name == NULL) {
                PyObject *call[2] = {labels, name_key};
                name = PyObject_Vectorcall(label_value, call, 2, NULL);
                if (name == NULL)
                    goto done;
            }
            int found = PySequence_Contains(names, name);
            Py_DECREF(name);
            if (found < 0)
                goto done;
            if (found)
                goto decline; /* unrouted yet, or not a Flux object: rewrite() decides */
            continue;
        }
        PyObject *obj = get(route, r_obj), *entry = get(route, r_input);
        PyObject *samples = PyTuple_GET_ITEM(item, 1), *histograms = PyTuple_GET_ITEM(item, 2);
        int forward = truthy(get(route, r_forward));
        if (forward < 0)
            goto done;
        if (!forward || obj == NULL || Py_TYPE(obj) != InfoType)
            goto decline;
        int gone = truthy(get(obj, o_gone));
        if (gone < 0)
            goto done;
        if (gone || get(obj, o_deadline) != Py_None || entry == NULL || entry == Py_None ||
            Py_TYPE(entry) != InputType)
            goto decline;
        int dropped = truthy(get(entry, i_dropped));
        if (dropped < 0)
            goto done;
        if (dropped || !PyTuple_Check(samples) || PyTuple_GET_SIZE(samples) != 1 ||
            !PyTuple_Check(histograms) || PyTuple_GET_SIZE(histograms) != 0)
            goto decline;
        PyObject *sample = PyTuple_GET_ITEM(samples, 0);
        if (!PyTuple_Check(sample) || PyTuple_GET_SIZE(sample) != 3)
            goto decline;
        PyObject *value = PyTuple_GET_ITEM(sample, 0), *sample_ts_obj = PyTuple_GET_ITEM(sample, 1);
        if (!PyFloat_CheckExact(value))
            goto decline;
        int64_t sample_ts = as_i64(sample_ts_obj, &ok);
        if (!ok)
            goto decline;
        if (ts_obj == NULL) {
            ts_obj = sample_ts_obj;
            Py_INCREF(ts_obj);
            ts = sample_ts;
        }
        if (sample_ts != ts || isnan(PyFloat_AS_DOUBLE(value)))
            goto decline; /* NaN: a stale marker, or a value rewrite() must weigh */
        int64_t out_last = as_i64(get(obj, o_out_last), &ok),
                newest = as_i64(get(obj, o_newest_value_ts), &ok),
                state_ts = as_i64(get(obj, o_state_ts), &ok),
                value_ts = as_i64(get(entry, i_value_ts), &ok),
                stale_ts = as_i64(get(entry, i_stale_ts), &ok);
        if (!ok || sample_ts <= out_last || sample_ts <= newest || sample_ts <= state_ts ||
            sample_ts <= value_ts || sample_ts <= stale_ts)
            goto decline;
        PyObject *values = get(route, r_values);
        if (values == NULL || !PyTuple_Check(values) || get(route, r_ready) == NULL ||
            get(route, r_suspended) == NULL || get(obj, o_outputs) == NULL)
            goto decline;
        if (get(obj, o_encoded_for) != values) {
            PyObject *call[3] = {obj, values, encoder};
            PyObject *parts = PyObject_Vectorcall(prefixes, call, 3, NULL);
            if (parts == NULL)
                goto done;
            int none = parts == Py_None;
            Py_DECREF(parts);
            if (none)
                goto decline;
        }
        PyObject *pieces = get(obj, o_pieces);
        if (get(obj, o_encoded_for) != values || pieces == NULL || !PyTuple_Check(pieces))
            goto decline;
        if (!seen_add(&seen, obj))
            goto decline; /* two series of one object */
        outputs += PyTuple_GET_SIZE(values);
        if (PyList_Append(picked, route) < 0)
            goto done;
    }
    {
        PyObject *call[2] = {ts_obj != NULL ? ts_obj : Py_None, NULL};
        call[1] = PyLong_FromSsize_t(outputs);
        if (call[1] == NULL)
            goto done;
        clock = PyObject_Vectorcall(begin, call, 2, NULL);
        Py_DECREF(call[1]);
        if (clock == NULL)
            goto done;
        if (clock == Py_None)
            goto decline; /* ``begin`` declined: nothing changed yet */
    }
    /* From here on the state changes, as rewrite() would change it (the second loop). */
    Py_ssize_t count = PyList_GET_SIZE(picked);
    groups = PyList_New(count);
    chunks = PyList_New(0);
    blocks = PyList_New(0);
    if (groups == NULL || chunks == NULL || blocks == NULL)
        goto done;
    int64_t gap_from = NEVER;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *next = PyList_GET_ITEM(picked, k);
        PyObject *obj = get(next, r_obj), *entry = get(next, r_input);
        put(obj, o_last_seen, clock);
        put(obj, o_state_ts, ts_obj);
        put(obj, o_ready, get(next, r_ready));
        put(obj, o_suspended, get(next, r_suspended));
        put(obj, o_values, get(next, r_values));
        int64_t previous = as_i64(get(obj, o_newest_value_ts), &ok);
        if (previous != NEVER) {
            if (previous != gap_from || gap_obj == NULL) {
                gap_from = previous;
                Py_XDECREF(gap_obj);
                gap_obj = PyLong_FromLongLong((long long)(ts - previous));
                if (gap_obj == NULL)
                    goto done;
            }
            put(obj, o_interval, gap_obj); /* objects scraped together share one int */
        }
        put(entry, i_value_ts, ts_obj);
        put(obj, o_newest_value_ts, ts_obj);
        put(obj, o_out_last, ts_obj);
        put(obj, o_open, Py_True);
        PyObject *group = PyTuple_Pack(2, get(obj, o_outputs), get(obj, o_values));
        if (group == NULL)
            goto done;
        PyList_SET_ITEM(groups, k, group);
        PyObject *pieces = get(obj, o_pieces);
        for (Py_ssize_t p = 0; p < PyTuple_GET_SIZE(pieces); p++)
            if (PyList_Append(blocks, PyTuple_GET_ITEM(pieces, p)) < 0)
                goto done;
        if (PyList_GET_SIZE(blocks) >= chunk) {
            PyObject *joined = PyObject_Vectorcall(join, &blocks, 1, NULL);
            if (joined == NULL)
                goto done;
            int failed = PyList_Append(chunks, joined);
            Py_DECREF(joined);
            if (failed || PyList_SetSlice(blocks, 0, PyList_GET_SIZE(blocks), NULL) < 0)
                goto done;
        }
    }
    if (changed != Py_None) {
        for (Py_ssize_t k = 0; k < count; k++)
            if (PyDict_SetItem(changed, get(PyList_GET_ITEM(picked, k), r_obj), Py_None) < 0)
                goto done;
    }
    result = Py_BuildValue("(OOOnO)", groups, chunks, blocks, outputs, ts_obj ? ts_obj : Py_None);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(seen.slots);
    Py_XDECREF(route);
    Py_XDECREF(picked);
    Py_XDECREF(ts_obj);
    Py_XDECREF(groups);
    Py_XDECREF(chunks);
    Py_XDECREF(blocks);
    Py_XDECREF(clock);
    Py_XDECREF(gap_obj);
    Py_DECREF(fast);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(Route, InfoObject, Input): learn their slots' offsets"},
    {"steady", (PyCFunction)(void (*)(void))steady, METH_FASTCALL,
     "FluxRewriter.steady's two loops (see the module's docstring)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_steady", NULL, -1, methods};

PyMODINIT_FUNC PyInit__steady(void) {
    name_key = PyUnicode_InternFromString("__name__");
    if (name_key == NULL)
        return NULL;
    return PyModule_Create(&module);
}
