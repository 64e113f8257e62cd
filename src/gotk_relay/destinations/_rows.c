/* The series of an uncompressed remote-write 1.0 WriteRequest as rows, for the Datadog and OTLP
 * destinations' conversion (destinations/rows.py holds the pure-Python twin and the contract).
 *
 * Why in C: walking every label field of every series in Python costs more than the whole
 * conversion may (issue 17); here it is one pass over the bytes, and Python sees one row per
 * series: the label fields' bytes as they came (a memo key), the samples, and the series'
 * own bytes when it holds anything else (histograms, exemplars, interleaved fields).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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

static PyObject *sample_tuple(const uint8_t *p, Py_ssize_t pos, Py_ssize_t end) {
    double value = 0.0;
    int64_t ts = 0;
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
    PyObject *t = PyLong_FromLongLong(ts);
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
static PyObject *series_row(const uint8_t *p, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t pos = start, labels_start = -1, labels_end = -1;
    int other = 0, labels_done = 0;
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    while (pos < end) {
        uint64_t number;
        int wire;
        Py_ssize_t field_start = pos, payload;
        if (read_field(p, &pos, end, &number, &wire, &payload) < 0) goto fail;
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
                PyObject *sample = sample_tuple(p, payload, pos);
                if (sample == NULL) goto fail;
                int rc = PyList_Append(list, sample);
                Py_DECREF(sample);
                if (rc < 0) goto fail;
            } else {
                other = 1;
            }
        }
    }
    PyObject *samples = PyList_AsTuple(list);
    Py_CLEAR(list);
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
        PyObject *row = series_row(p, payload, next);
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
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(data, pos, budget) -> (rows, next): series of a WriteRequest as (key, samples, raw)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rows", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rows(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_rows reads doubles as little-endian");
        return NULL;
    }
    PyObject *errors = PyImport_ImportModule("gotk_relay.wire.errors");
    if (errors == NULL) return NULL;
    DecodeError = PyObject_GetAttrString(errors, "DecodeError");
    Py_DECREF(errors);
    if (DecodeError == NULL) return NULL;
    return PyModule_Create(&module);
}
