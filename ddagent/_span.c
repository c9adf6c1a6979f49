/* The native twin of span.PythonSpanCore: a span's fields and the methods every traced operation
 * calls (creating it, setting string tags and numeric metrics, finishing it, `with`).
 *
 * It exists for speed (callgrind, see bench/README.md): creating a span through the Python
 * __init__ costs ~9k instructions, most of it the Python call from type.__call__, the two id
 * draws from random.Random and the clock reads; here it is ~1.5k.
 *
 * It handles only the usual case of each method, exactly as PythonSpanCore does it, and hands
 * every other call to PythonSpanCore's own method (the "twin", given once by span.py): a tag whose
 * key or value is not a str, a metric that is not an int or a finite float, an explicit start or
 * finish time, an exception leaving a `with` block, a field in a state the tracer never leaves it
 * in. So what an unusual call does (its conversions, logs and errors) is written once, in Python.
 *
 * The fields are plain object members, as __slots__ would make them: the native encoder
 * (writer/_encoder.c) and Python code read them the same way for either core.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef Py_T_OBJECT_EX /* Python < 3.12 */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#if PY_VERSION_HEX < 0x030A0000 /* Python 3.9 */
static inline PyObject *
Py_NewRef(PyObject *object)
{
    Py_INCREF(object);
    return object;
}
#endif

typedef struct {
    PyObject_HEAD
    /* the wire fields, in the order of span.PythonSpanCore.__slots__ */
    PyObject *trace_id, *span_id, *parent_id, *name, *service, *resource, *span_type;
    PyObject *start_ns, *duration_ns, *error, *meta, *metrics;
    /* the tracer's bookkeeping */
    PyObject *tracer, *trace, *parent, *prev_active, *start_monotonic_ns, *finished;
} SpanObject;

#define FIELD_COUNT 18

static PyTypeObject SpanCoreType;

/* PythonSpanCore's methods, called for everything the fast paths here leave to Python. */
static struct {
    PyObject *init, *set_tag, *set_metric, *finish, *exit;
} twin;

static PyObject *str_on_span_finish, *str_finish, *zero;
static PyObject *native_finish; /* SpanCore.finish, to see whether a subclass replaced it */

/* -- ids: splitmix64, seeded by ids.py from os.urandom and again in a forked child --------- */

static uint64_t id_state;

static uint64_t
random_id(void)
{
    uint64_t z = (id_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1; /* ids are never zero */
}

static PyObject *
random_bits(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromUnsignedLongLong(random_id());
}

static PyObject *
seed(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len < 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "seed() needs at least 8 bytes");
        return NULL;
    }
    memcpy(&id_state, view.buf, 8);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* A 128-bit trace id as ddagent/ids.py lays it out: the start second, 32 zero bits, 64 random. */
static PyObject *
new_trace_id(int64_t start_ns)
{
    uint64_t low = random_id(), high = (uint64_t)(start_ns / 1000000000);
    if (high == 0) {
        return PyLong_FromUnsignedLongLong(low);
    }
    unsigned char bytes[16]; /* little-endian */
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(low >> (8 * i));
        bytes[8 + i] = 0;
    }
    for (int i = 0; i < 4; i++) {
        bytes[12 + i] = (unsigned char)(high >> (8 * i));
    }
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(bytes, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
#endif
}

/* -- clocks: CPython's own, so that time.time_ns()/monotonic_ns() read the same ----------- */

static int
now_ns(int64_t *wall, int64_t *monotonic)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t w, m;
    if (PyTime_Time(&w) < 0 || PyTime_Monotonic(&m) < 0) {
        return -1;
    }
    *wall = w;
    *monotonic = m;
#else
    *wall = _PyTime_GetSystemClock();
    *monotonic = _PyTime_GetMonotonicClock();
#endif
    return 0;
}

/* -- handing a call to the twin ------------------------------------------------------------ */

#define MAX_DELEGATED_ARGS 16

static PyObject *
missing_twin(void)
{
    PyErr_SetString(PyExc_RuntimeError, "ddagent._span: use_python_twin() was not called");
    return NULL;
}

/* twin_method(self, *args, **kwargs), from a vectorcall's arguments. */
static PyObject *
delegate(PyObject *method, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
         PyObject *kwnames)
{
    if (method == NULL) {
        return missing_twin();
    }
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    if (total >= MAX_DELEGATED_ARGS) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    PyObject *all[MAX_DELEGATED_ARGS];
    all[0] = self;
    if (total > 0) {
        memcpy(all + 1, args, total * sizeof(PyObject *));
    }
    return PyObject_Vectorcall(method, all, nargs + 1, kwnames);
}

/* -- __init__ ------------------------------------------------------------------------------ */

/* 1 for None or int 0 (a new id is drawn), 0 for another int; -1 for a value of another type,
 * whose truth Python's `or` decides (it may run the value's own code). */
static int
absent_id(PyObject *value)
{
    if (value == Py_None) {
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        return !PyObject_IsTrue(value); /* an exact int's truth runs no Python code */
    }
    return -1;
}

/* Fields are replaced (never just stored): __init__ may run again on the same span. */
#define SET_FIELD(field, value) Py_XSETREF(self->field, (value))

static int
span_init(SpanObject *self, PyObject *args, PyObject *kwargs)
{
    /* (tracer, name, service, resource, span_type, trace_id, span_id, parent_id, start) */
    PyObject *arg[9] = {NULL};
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) || nargs < 2 || nargs > 9) {
        goto python;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        arg[i] = PyTuple_GET_ITEM(args, i);
    }
    for (int i = 2; i < 9; i++) {
        if (arg[i] == NULL) {
            arg[i] = Py_None;
        }
    }
    if (arg[8] != Py_None) { /* an explicit start time */
        goto python;
    }
    /* `trace_id or <new>`, `span_id or <new>` */
    int new_trace_id_needed = absent_id(arg[5]), new_span_id_needed = absent_id(arg[6]);
    if (new_trace_id_needed < 0 || new_span_id_needed < 0) {
        goto python;
    }

    int64_t wall, monotonic;
    if (now_ns(&wall, &monotonic) < 0) {
        return -1;
    }
    PyObject *start_ns = PyLong_FromLongLong(wall);
    PyObject *start_monotonic_ns = PyLong_FromLongLong(monotonic);
    PyObject *trace_id = new_trace_id_needed ? new_trace_id(wall) : Py_NewRef(arg[5]);
    PyObject *span_id = new_span_id_needed ? PyLong_FromUnsignedLongLong(random_id())
                                           : Py_NewRef(arg[6]);
    PyObject *meta = PyDict_New();
    PyObject *metrics = PyDict_New();
    if (start_ns == NULL || start_monotonic_ns == NULL || trace_id == NULL || span_id == NULL
        || meta == NULL || metrics == NULL) {
        Py_XDECREF(start_ns);
        Py_XDECREF(start_monotonic_ns);
        Py_XDECREF(trace_id);
        Py_XDECREF(span_id);
        Py_XDECREF(meta);
        Py_XDECREF(metrics);
        return -1;
    }
    SET_FIELD(tracer, Py_NewRef(arg[0]));
    SET_FIELD(name, Py_NewRef(arg[1]));
    SET_FIELD(service, Py_NewRef(arg[2]));
    SET_FIELD(resource, Py_NewRef(arg[3] == Py_None ? arg[1] : arg[3]));
    SET_FIELD(span_type, Py_NewRef(arg[4]));
    SET_FIELD(start_ns, start_ns);
    SET_FIELD(start_monotonic_ns, start_monotonic_ns);
    SET_FIELD(trace_id, trace_id);
    SET_FIELD(span_id, span_id);
    SET_FIELD(parent_id, Py_NewRef(arg[7]));
    SET_FIELD(error, Py_NewRef(zero));
    SET_FIELD(meta, meta);
    SET_FIELD(metrics, metrics);
    SET_FIELD(duration_ns, Py_NewRef(Py_None));
    SET_FIELD(finished, Py_NewRef(Py_False));
    SET_FIELD(trace, Py_NewRef(Py_None));
    SET_FIELD(parent, Py_NewRef(Py_None));
    SET_FIELD(prev_active, Py_NewRef(Py_None));
    return 0;

python:;
    PyObject *self_and_args = PyTuple_New(nargs + 1);
    if (self_and_args == NULL) {
        return -1;
    }
    PyTuple_SET_ITEM(self_and_args, 0, Py_NewRef((PyObject *)self));
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(self_and_args, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    PyObject *result = twin.init == NULL ? missing_twin()
                                         : PyObject_Call(twin.init, self_and_args, kwargs);
    Py_DECREF(self_and_args);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* -- tags and metrics ---------------------------------------------------------------------- */

static PyObject *
span_set_tag(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* str keys only: their hash runs no Python code, so a failure (no memory) can be left to
     * the twin to meet again and log */
    if (nargs == 2 && kwnames == NULL && PyUnicode_CheckExact(args[0])
        && PyUnicode_CheckExact(args[1]) && self->meta != NULL && PyDict_CheckExact(self->meta)) {
        if (PyDict_SetItem(self->meta, args[0], args[1]) == 0) {
            Py_RETURN_NONE;
        }
        PyErr_Clear();
    }
    return delegate(twin.set_tag, (PyObject *)self, args, nargs, kwnames);
}

static PyObject *
span_set_metric(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && kwnames == NULL && self->metrics != NULL
        && PyDict_CheckExact(self->metrics)) {
        PyObject *value = args[1];
        if (PyFloat_CheckExact(value) && isfinite(PyFloat_AS_DOUBLE(value))) {
            if (PyDict_SetItem(self->metrics, args[0], value) < 0) {
                return NULL; /* as the twin: storing the metric is not guarded */
            }
            Py_RETURN_NONE;
        }
        if (PyLong_CheckExact(value)) {
            double number = PyLong_AsDouble(value);
            if (number == -1.0 && PyErr_Occurred()) {
                PyErr_Clear(); /* too large for a float: the twin logs and drops it */
            }
            else {
                PyObject *converted = PyFloat_FromDouble(number);
                if (converted == NULL) {
                    return NULL;
                }
                int stored = PyDict_SetItem(self->metrics, args[0], converted);
                Py_DECREF(converted);
                if (stored < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
        }
    }
    return delegate(twin.set_metric, (PyObject *)self, args, nargs, kwnames);
}

/* -- finishing ----------------------------------------------------------------------------- */

/* finish() without a finish time; the twin's for anything unusual. */
static PyObject *
finish_now(SpanObject *self)
{
    if (self->finished == Py_True) {
        return Py_NewRef(Py_None);
    }
    PyObject *start = self->start_monotonic_ns;
    if (self->finished != Py_False || self->tracer == NULL || self->duration_ns == NULL
        || (self->duration_ns == Py_None && (start == NULL || !PyLong_CheckExact(start)))) {
        return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL);
    }
    if (self->duration_ns == Py_None) {
        long long started = PyLong_AsLongLong(start);
        if (started == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL);
        }
        int64_t wall, monotonic;
        if (now_ns(&wall, &monotonic) < 0) {
            return NULL;
        }
        if ((started < 0 && monotonic > LLONG_MAX + started)
            || (started > 0 && monotonic < LLONG_MIN + started)) {
            return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL); /* Python's ints */
        }
        PyObject *duration = PyLong_FromLongLong(monotonic - started);
        if (duration == NULL) {
            return NULL;
        }
        SET_FIELD(duration_ns, duration);
    }
    SET_FIELD(finished, Py_NewRef(Py_True));
    if (self->tracer == Py_None) {
        Py_RETURN_NONE;
    }
    PyObject *tracer = Py_NewRef(self->tracer); /* the call may replace the field */
    PyObject *result = PyObject_CallMethodOneArg(tracer, str_on_span_finish, (PyObject *)self);
    Py_DECREF(tracer);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *
span_finish(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 0 || (nargs == 1 && args[0] == Py_None))) {
        return finish_now(self);
    }
    return delegate(twin.finish, (PyObject *)self, args, nargs, kwnames);
}

/* -- with ---------------------------------------------------------------------------------- */

static PyObject *
span_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
span_exit(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 3 || kwnames != NULL || args[0] != Py_None) {
        return delegate(twin.exit, (PyObject *)self, args, nargs, kwnames);
    }
    /* self.finish(), which a subclass (or, with a __dict__, an instance) may have replaced */
    PyObject *result;
    PyTypeObject *type = Py_TYPE(self);
    if (type->tp_dictoffset == 0 && _PyType_Lookup(type, str_finish) == native_finish) {
        result = finish_now(self);
    }
    else {
        result = PyObject_CallMethodNoArgs((PyObject *)self, str_finish);
    }
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* -- the type ------------------------------------------------------------------------------ */

/* The FIELD_COUNT fields, as an array: they are consecutive object pointers in SpanObject. */
static PyObject **
fields(SpanObject *self)
{
    return &self->trace_id;
}

static int
span_traverse(SpanObject *self, visitproc visit, void *arg)
{
    PyObject **field = fields(self);
    for (int i = 0; i < FIELD_COUNT; i++) {
        Py_VISIT(field[i]);
    }
    return 0;
}

static int
span_clear(SpanObject *self)
{
    PyObject **field = fields(self);
    for (int i = 0; i < FIELD_COUNT; i++) {
        Py_CLEAR(field[i]);
    }
    return 0;
}

static void
span_dealloc(SpanObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, span_dealloc)
    span_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

#define MEMBER(name, field) \
    {name, Py_T_OBJECT_EX, offsetof(SpanObject, field), 0, NULL}

static PyMemberDef span_members[] = {
    MEMBER("trace_id", trace_id),
    MEMBER("span_id", span_id),
    MEMBER("parent_id", parent_id),
    MEMBER("name", name),
    MEMBER("service", service),
    MEMBER("resource", resource),
    MEMBER("span_type", span_type),
    MEMBER("start_ns", start_ns),
    MEMBER("duration_ns", duration_ns),
    MEMBER("error", error),
    MEMBER("meta", meta),
    MEMBER("metrics", metrics),
    MEMBER("tracer", tracer),
    MEMBER("_trace", trace),
    MEMBER("_parent", parent),
    MEMBER("_prev_active", prev_active),
    MEMBER("_start_monotonic_ns", start_monotonic_ns),
    MEMBER("_finished", finished),
    {NULL, 0, 0, 0, NULL},
};

/* `finished`, read on every request by the web layers: a Python property costs a call (~0.7k
 * instructions, callgrind) where this getter costs a pointer read. */
static PyObject *
span_get_finished(SpanObject *self, void *closure)
{
    (void)closure;
    if (self->finished == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_finished");
        return NULL;
    }
    return Py_NewRef(self->finished);
}

static PyGetSetDef span_getset[] = {
    {"finished", (getter)span_get_finished, NULL, "Whether finish() has run.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTCALL(function) (PyCFunction)(void (*)(void))(function), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef span_methods[] = {
    {"finish", FASTCALL(span_finish), "finish(finish_time=None): as span.PythonSpanCore.finish"},
    {"set_tag", FASTCALL(span_set_tag), "set_tag(key, value): as span.PythonSpanCore.set_tag"},
    {"set_metric", FASTCALL(span_set_metric),
     "set_metric(key, value): as span.PythonSpanCore.set_metric"},
    {"__enter__", span_enter, METH_NOARGS, NULL},
    {"__exit__", FASTCALL(span_exit), NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpanCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent._span.SpanCore",
    /* The text signature lets inspect.signature() describe Span as it did a Python class. */
    .tp_doc = "SpanCore(tracer, name, service=None, resource=None, span_type=None, "
              "trace_id=None, span_id=None, parent_id=None, start=None)\n--\n\n"
              "The native twin of ddagent.span.PythonSpanCore (see ddagent/_span.c).",
    .tp_basicsize = sizeof(SpanObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)span_init,
    .tp_dealloc = (destructor)span_dealloc,
    .tp_traverse = (traverseproc)span_traverse,
    .tp_clear = (inquiry)span_clear,
    .tp_members = span_members,
    .tp_methods = span_methods,
    .tp_getset = span_getset,
};

/* -- the module ---------------------------------------------------------------------------- */

static PyObject *
use_python_twin(PyObject *module, PyObject *cls)
{
    (void)module;
    PyObject *init = PyObject_GetAttrString(cls, "__init__");
    PyObject *set_tag = PyObject_GetAttrString(cls, "set_tag");
    PyObject *set_metric = PyObject_GetAttrString(cls, "set_metric");
    PyObject *finish = PyObject_GetAttrString(cls, "finish");
    PyObject *exit = PyObject_GetAttrString(cls, "__exit__");
    if (init == NULL || set_tag == NULL || set_metric == NULL || finish == NULL || exit == NULL) {
        Py_XDECREF(init);
        Py_XDECREF(set_tag);
        Py_XDECREF(set_metric);
        Py_XDECREF(finish);
        Py_XDECREF(exit);
        return NULL;
    }
    Py_XSETREF(twin.init, init);
    Py_XSETREF(twin.set_tag, set_tag);
    Py_XSETREF(twin.set_metric, set_metric);
    Py_XSETREF(twin.finish, finish);
    Py_XSETREF(twin.exit, exit);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"use_python_twin", use_python_twin, METH_O,
     "use_python_twin(cls): the class whose methods take the calls SpanCore leaves to Python."},
    {"seed", seed, METH_O, "seed(bytes): reseed the span and trace id generator (8+ bytes)."},
    {"random_bits", random_bits, METH_NOARGS,
     "random_bits() -> int: 64 random bits from the id generator (never zero)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "ddagent._span",
    "The native twin of ddagent.span.PythonSpanCore (see ddagent/span.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__span(void)
{
    Py_BUILD_ASSERT(sizeof(SpanObject) == sizeof(PyObject) + FIELD_COUNT * sizeof(PyObject *));
    str_on_span_finish = PyUnicode_InternFromString("_on_span_finish");
    str_finish = PyUnicode_InternFromString("finish");
    zero = PyLong_FromLong(0);
    if (str_on_span_finish == NULL || str_finish == NULL || zero == NULL
        || PyType_Ready(&SpanCoreType) < 0) {
        return NULL;
    }
    native_finish = PyDict_GetItemWithError(SpanCoreType.tp_dict, str_finish); /* borrowed */
    if (native_finish == NULL) {
        return NULL;
    }
    Py_INCREF(native_finish);
    /* The fields' names where a __slots__ class keeps them, so that copy and pickle (copyreg)
     * copy a span's fields as they do a Python core's. */
    PyObject *slot_names = PyTuple_New(FIELD_COUNT);
    if (slot_names == NULL) {
        return NULL;
    }
    for (int i = 0; i < FIELD_COUNT; i++) {
        PyObject *name = PyUnicode_InternFromString(span_members[i].name);
        if (name == NULL) {
            Py_DECREF(slot_names);
            return NULL;
        }
        PyTuple_SET_ITEM(slot_names, i, name);
    }
    int added = PyDict_SetItemString(SpanCoreType.tp_dict, "__slots__", slot_names);
    Py_DECREF(slot_names);
    if (added < 0) {
        return NULL;
    }
    PyType_Modified(&SpanCoreType);
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&SpanCoreType);
    if (PyModule_AddObject(module, "SpanCore", (PyObject *)&SpanCoreType) < 0) {
        Py_DECREF(&SpanCoreType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
