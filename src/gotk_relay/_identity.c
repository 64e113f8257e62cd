/* identity.IdentityMap compiled: a map keyed by an object's identity, 16 bytes a slot.
 *
 * Why: the Flux rules and the federate store find what they know about a label set by the id
 * of its tuple (a decoder that caches label sets hands the same tuple every scrape), without
 * hashing its pairs. As a dict keyed by id(), each entry also costs a 32-byte int and a
 * 24-byte entry plus its index: ~85 bytes, seven times per Flux object. Here a slot is the key
 * pointer and the value, in one open-addressed table kept at most 2/3 full.
 *
 * Keys are borrowed: the caller keeps each key alive while it is in the map (in practice the
 * value holds it), so an address is never reused while its entry is here. Values are owned
 * (and visited by the garbage collector). Linear probing, deletion by backward shift (no
 * tombstones), Fibonacci hashing of the address.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject *key; /* borrowed; NULL: empty */
    PyObject *value;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t used;
    int shift; /* 64 - log2(capacity) */
} IdentityMap;

#define MIN_BITS 3

static inline size_t capacity_of(const IdentityMap *m) { return (size_t)1 << (64 - m->shift); }

static inline size_t home(const IdentityMap *m, const PyObject *key) {
    /* Objects are 16-byte aligned: the low bits say nothing. */
    return (size_t)(((uint64_t)(uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ULL >> m->shift);
}

/* KeyError(key) as a dict raises it: the key wrapped, so a tuple key is not taken for args. */
static void key_error(PyObject *key) {
    PyObject *wrapped = PyTuple_Pack(1, key);
    if (wrapped != NULL) {
        PyErr_SetObject(PyExc_KeyError, wrapped);
        Py_DECREF(wrapped);
    }
}

static int alloc_table(IdentityMap *m, int bits) {
    Slot *slots = PyMem_Calloc((size_t)1 << bits, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    m->slots = slots;
    m->shift = 64 - bits;
    m->used = 0;
    return 0;
}

/* The slot holding key, or the empty slot where it would go. */
static inline Slot *find(const IdentityMap *m, const PyObject *key) {
    size_t mask = capacity_of(m) - 1;
    size_t i = home(m, key);
    for (;;) {
        Slot *slot = &m->slots[i];
        if (slot->key == key || slot->key == NULL) {
            return slot;
        }
        i = (i + 1) & mask;
    }
}

static int grow(IdentityMap *m) {
    Slot *old = m->slots;
    size_t old_capacity = capacity_of(m);
    Py_ssize_t used = m->used;
    if (alloc_table(m, 64 - m->shift + 1) < 0) {
        return -1;
    }
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].key != NULL) {
            *find(m, old[i].key) = old[i];
        }
    }
    m->used = used;
    PyMem_Free(old);
    return 0;
}

/* Empty the slot at index i, moving later entries of its probe run back (no tombstones). */
static void remove_at(IdentityMap *m, size_t i) {
    size_t mask = capacity_of(m) - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        PyObject *key = m->slots[j].key;
        if (key == NULL) {
            break;
        }
        size_t k = home(m, key);
        /* The entry at j stays if its home lies cyclically in (i, j]. */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].value = NULL;
    m->used--;
}

/* Drop every entry; the values are released after the table is consistent again. */
static int reset(IdentityMap *m) {
    Slot *old = m->slots;
    size_t old_capacity = old == NULL ? 0 : capacity_of(m);
    if (alloc_table(m, MIN_BITS) < 0) {
        return -1;
    }
    for (size_t i = 0; i < old_capacity; i++) {
        Py_XDECREF(old[i].value);
    }
    PyMem_Free(old);
    return 0;
}

static PyObject *IdentityMap_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "IdentityMap() takes no arguments");
        return NULL;
    }
    IdentityMap *m = (IdentityMap *)type->tp_alloc(type, 0);
    if (m == NULL) {
        return NULL;
    }
    if (alloc_table(m, MIN_BITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

static int IdentityMap_traverse(IdentityMap *m, visitproc visit, void *arg) {
    if (m->slots != NULL) {
        size_t capacity = capacity_of(m);
        for (size_t i = 0; i < capacity; i++) {
            Py_VISIT(m->slots[i].value);
        }
    }
    return 0;
}

static int IdentityMap_clear(IdentityMap *m) {
    Slot *old = m->slots;
    size_t old_capacity = old == NULL ? 0 : capacity_of(m);
    m->slots = NULL;
    m->used = 0;
    for (size_t i = 0; i < old_capacity; i++) {
        Py_XDECREF(old[i].value);
    }
    PyMem_Free(old);
    return 0;
}

static void IdentityMap_dealloc(IdentityMap *m) {
    PyObject_GC_UnTrack(m);
    IdentityMap_clear(m);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int ensure_table(IdentityMap *m) {
    /* After the collector cleared it (tp_clear), a map is empty and still usable. */
    return m->slots == NULL ? alloc_table(m, MIN_BITS) : 0;
}

static Py_ssize_t IdentityMap_len(IdentityMap *m) { return m->used; }

static PyObject *IdentityMap_subscript(IdentityMap *m, PyObject *key) {
    if (m->slots != NULL) {
        Slot *slot = find(m, key);
        if (slot->key != NULL) {
            return Py_NewRef(slot->value);
        }
    }
    key_error(key);
    return NULL;
}

static int set_item(IdentityMap *m, PyObject *key, PyObject *value) {
    if (ensure_table(m) < 0) {
        return -1;
    }
    Slot *slot = find(m, key);
    if (slot->key != NULL) {
        PyObject *old = slot->value;
        slot->value = Py_NewRef(value);
        Py_DECREF(old);
        return 0;
    }
    if ((size_t)(m->used + 1) * 3 > capacity_of(m) * 2) {
        if (grow(m) < 0) {
            return -1;
        }
        slot = find(m, key);
    }
    slot->key = key;
    slot->value = Py_NewRef(value);
    m->used++;
    return 0;
}

static int IdentityMap_ass_subscript(IdentityMap *m, PyObject *key, PyObject *value) {
    if (value != NULL) {
        return set_item(m, key, value);
    }
    Slot *slot = m->slots == NULL ? NULL : find(m, key);
    if (slot == NULL || slot->key == NULL) {
        key_error(key);
        return -1;
    }
    PyObject *old = slot->value;
    remove_at(m, (size_t)(slot - m->slots));
    Py_DECREF(old);
    return 0;
}

static int IdentityMap_contains(IdentityMap *m, PyObject *key) {
    return m->slots != NULL && find(m, key)->key != NULL;
}

static PyObject *IdentityMap_get(IdentityMap *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key[, default])");
        return NULL;
    }
    if (m->slots != NULL) {
        Slot *slot = find(m, args[0]);
        if (slot->key != NULL) {
            return Py_NewRef(slot->value);
        }
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *IdentityMap_pop(IdentityMap *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(key[, default])");
        return NULL;
    }
    Slot *slot = m->slots == NULL ? NULL : find(m, args[0]);
    if (slot == NULL || slot->key == NULL) {
        if (nargs == 2) {
            return Py_NewRef(args[1]);
        }
        key_error(args[0]);
        return NULL;
    }
    PyObject *value = slot->value; /* the map's reference passes to the caller */
    remove_at(m, (size_t)(slot - m->slots));
    return value;
}

static PyObject *IdentityMap_clear_method(IdentityMap *m, PyObject *Py_UNUSED(ignored)) {
    if (reset(m) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *IdentityMap_values(IdentityMap *m, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(m->used);
    if (out == NULL || m->slots == NULL) {
        return out;
    }
    size_t capacity = capacity_of(m);
    Py_ssize_t n = 0;
    for (size_t i = 0; i < capacity; i++) {
        if (m->slots[i].key != NULL) {
            PyList_SET_ITEM(out, n++, Py_NewRef(m->slots[i].value));
        }
    }
    return out;
}

static PyObject *IdentityMap_sizeof(IdentityMap *m, PyObject *Py_UNUSED(ignored)) {
    size_t size = Py_TYPE(m)->tp_basicsize;
    if (m->slots != NULL) {
        size += capacity_of(m) * sizeof(Slot);
    }
    return PyLong_FromSize_t(size);
}

static PyMethodDef IdentityMap_methods[] = {
    {"get", (PyCFunction)(void (*)(void))IdentityMap_get, METH_FASTCALL,
     "get(key[, default]): the value stored for this very object, or default"},
    {"pop", (PyCFunction)(void (*)(void))IdentityMap_pop, METH_FASTCALL,
     "pop(key[, default]): remove and return the value for this very object"},
    {"clear", (PyCFunction)IdentityMap_clear_method, METH_NOARGS, "remove every entry"},
    {"values", (PyCFunction)IdentityMap_values, METH_NOARGS, "the values, as a list"},
    {"__sizeof__", (PyCFunction)IdentityMap_sizeof, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods IdentityMap_as_mapping = {
    (lenfunc)IdentityMap_len,
    (binaryfunc)IdentityMap_subscript,
    (objobjargproc)IdentityMap_ass_subscript,
};

static PySequenceMethods IdentityMap_as_sequence = {
    .sq_contains = (objobjproc)IdentityMap_contains,
};

static PyTypeObject IdentityMapType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gotk_relay._identity.IdentityMap",
    .tp_basicsize = sizeof(IdentityMap),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A map keyed by an object's identity; the caller keeps each key alive.",
    .tp_new = IdentityMap_new,
    .tp_dealloc = (destructor)IdentityMap_dealloc,
    .tp_traverse = (traverseproc)IdentityMap_traverse,
    .tp_clear = (inquiry)IdentityMap_clear,
    .tp_methods = IdentityMap_methods,
    .tp_as_mapping = &IdentityMap_as_mapping,
    .tp_as_sequence = &IdentityMap_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_identity",
    "identity.IdentityMap compiled (see identity.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__identity(void) {
    if (PyType_Ready(&IdentityMapType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "IdentityMap", (PyObject *)&IdentityMapType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
