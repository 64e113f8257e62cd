/* Snappy block compression through Google's libsnappy (C++), loaded at import.
 *
 * Why: every routed view of a request (a rule, a shard, a tenant, remote write 2.0) is
 * compressed again before it is queued, and that compression was the largest single cost of
 * those configurations (docs/performance.md). libsnappy 1.1.9 compresses a 646 kB remote-write
 * request in ~240 us where cramjam (the `snap` crate) takes ~315 us; both write valid blocks of
 * the input, not always the same bytes (each chooses its own copies). The
 * library is found with dlopen, so building needs no snappy headers and a machine without
 * libsnappy still installs: the import then fails and wire/snappy.py takes cramjam (its twin).
 *
 * Both compress each 64 KiB fragment of the input on its own, which delivery/entry.py's
 * compress_chunks relies on (tests/unit/test_snappy_compress.py checks it for this one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>

typedef int (*compress_fn)(const char *input, size_t input_length, char *compressed,
                           size_t *compressed_length);
typedef size_t (*max_length_fn)(size_t source_length);

static compress_fn snappy_compress_c = NULL;
static max_length_fn snappy_max_length_c = NULL;

/* Inputs at least this long are compressed with the GIL released (~25 us and up). */
#define NOGIL_BYTES 65536

static PyObject *
compress(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    size_t room = snappy_max_length_c((size_t)view.len);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)room);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    size_t written = room;
    int status;
    if (view.len >= NOGIL_BYTES) {
        /* The buffer stays exported and ``out`` is ours alone until it is returned. */
        Py_BEGIN_ALLOW_THREADS
        status = snappy_compress_c(view.buf, (size_t)view.len, PyBytes_AS_STRING(out), &written);
        Py_END_ALLOW_THREADS
    }
    else {
        status = snappy_compress_c(view.buf, (size_t)view.len, PyBytes_AS_STRING(out), &written);
    }
    PyBuffer_Release(&view);
    if (status != 0 || written > room) { /* SNAPPY_OK is 0; only a too-small buffer fails */
        Py_DECREF(out);
        PyErr_Format(PyExc_RuntimeError, "libsnappy: snappy_compress failed (status %d)", status);
        return NULL;
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)written) < 0) {
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"compress", compress, METH_O,
     "compress(data) -> bytes: ``data`` (any buffer) as one snappy block, by libsnappy."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    if (snappy_compress_c != NULL) {
        return 0;
    }
    /* The runtime library's soname (Debian: libsnappy1v5); no -dev package is needed. */
    void *lib = dlopen("libsnappy.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "libsnappy.so.1 not loadable: %s", dlerror());
        return -1;
    }
    compress_fn c = (compress_fn)dlsym(lib, "snappy_compress");
    max_length_fn m = (max_length_fn)dlsym(lib, "snappy_max_compressed_length");
    if (c == NULL || m == NULL) {
        dlclose(lib);
        PyErr_SetString(PyExc_ImportError, "libsnappy.so.1 lacks its C interface (snappy-c.h)");
        return -1;
    }
    snappy_compress_c = c; /* the library stays loaded for the life of the process */
    snappy_max_length_c = m;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_snappy", "Snappy block compression through libsnappy.", 0, methods,
    slots,
};

PyMODINIT_FUNC
PyInit__snappy(void)
{
    return PyModuleDef_Init(&moduledef);
}
